"""What a dial attempt's result means: the SIP answer → campaign outcome table.

An attempt ends answered, with a final SIP status (``CallFailed.status``), or
with a trunk error (``TrunkError``: no response at all, or a transport fault).
The table below files it as one of the outcomes of ``waihu.api.OUTCOMES``
(which decide whether and when the contact is dialled again, see ``retry``)
and says whether it counts as a *trunk fault* — a sign that the trunk, not the
callee, is failing; the campaign's circuit breaker pauses the campaign after a
run of them (see ``breaker``). A status not listed is filed by its class
(``4xx``, ``5xx``, ``6xx``); anything else as ``other``.

    SIP answer   outcome          trunk fault  meaning
    -----------  ---------------  -----------  ----------------------------------------------
    answered     answered         no           the callee picked up: a conversation took place
    trunk error  failed           yes          no response at all, or a transport fault
    no status    failed           no           ended with no SIP answer (an error on our side)
    401          failed           yes          Unauthorized: the trunk refused our credentials
    403          failed           yes          Forbidden: the trunk refuses our account or caller ID
    404          invalid_number   no           Not Found: no such number
    407          failed           yes          Proxy Authentication Required: credentials refused
    408          no_answer        no           Request Timeout: it rang until our ring timeout
    410          invalid_number   no           Gone: the number is no longer in service
    480          no_answer        no           Temporarily Unavailable: switched off, out of reach
    484          invalid_number   no           Address Incomplete: too few digits
    485          invalid_number   no           Ambiguous: the number is not a single subscriber
    486          busy             no           Busy Here
    487          no_answer        no           Request Terminated: cancelled when it rang too long
    4xx          failed           no           any other 4xx: the request was refused
    500          failed           yes          Server Internal Error: the trunk or a switch failed
    502          unreachable      yes          Bad Gateway: the callee's network cannot be reached
    503          failed           yes          Service Unavailable: the trunk is overloaded or down
    504          unreachable      yes          Server Time-out: the callee's network did not answer
    5xx          failed           yes          any other 5xx: a server failed
    600          busy             no           Busy Everywhere
    603          rejected         no           Decline: the callee refused the call
    604          invalid_number   no           Does Not Exist Anywhere
    607          rejected         no           Unwanted: the callee marked the call as unwanted
    608          rejected         no           Rejected: call screening on the way refused it
    6xx          rejected         no           any other 6xx: a definitive refusal
    other        failed           no           anything else (redirects are not followed)

Choices worth knowing:

- 408 is what the SIP trunk files when a ringing call reaches the ring
  timeout, so it is a no-answer, not a trunk fault: a run of unanswered calls
  must not pause a campaign. An INVITE with no response at all is a trunk
  error.
- 410 and 604 say the number is out of service for good: never redialled.
- 502 and 504 say the callee's network could not be reached (``unreachable``,
  redialled later); 500 and 503 are what a failing trunk itself sends
  (``failed``). All four count as trunk faults: a long run of any of them
  means the route is broken whatever the reason.
- 401, 403 and 407 are about our account, not the callee: every following
  call would fail the same way, so they count as trunk faults.
- Chinese carriers often play an announcement (关机, 停机, 无法接通) as early
  media and then answer 480 or 503: when the call's screen heard what it said
  (``waihu.who_answered``), the lifecycle files that outcome (switched_off,
  invalid_number…) instead of this table's; otherwise the status decides.
  ``voicemail`` and ``switched_off`` come only from the screen, never from
  this table.

``interrupted`` (the daemon stopped mid-attempt) and ``opted_out`` (the
callee asked not to be called) are set by the scheduler, never by this table.

What it is not: the retry policy (``retry``) or the breaker's counting
(``breaker``); this module only classifies one result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from waihu.api import Outcome

__all__ = ["OUTCOME_TABLE", "StatusRule", "is_trunk_fault", "outcome_for", "render_table"]

ANSWERED = "answered"
TRUNK_ERROR = "trunk error"
NO_STATUS = "no status"
OTHER = "other"
STATUS_CLASSES = (4, 5, 6)  # 4xx client, 5xx server, 6xx global failures have a default row
COLUMN_WIDTHS = (11, 15, 11)  # SIP answer, outcome, trunk fault: the longest entry of each
MEANING_RULE_WIDTH = 46  # the rule under "meaning"


class StatusRule(NamedTuple):
    """One row of the table: the outcome, whether it is a trunk fault, and why."""

    outcome: Outcome
    trunk_fault: bool
    meaning: str


# The one table: the module docstring shows it as ``render_table()`` prints it,
# and a test holds the two together.
OUTCOME_TABLE: Mapping[int | str, StatusRule] = {
    ANSWERED: StatusRule("answered", False, "the callee picked up: a conversation took place"),
    TRUNK_ERROR: StatusRule("failed", True, "no response at all, or a transport fault"),
    NO_STATUS: StatusRule("failed", False, "ended with no SIP answer (an error on our side)"),
    401: StatusRule("failed", True, "Unauthorized: the trunk refused our credentials"),
    403: StatusRule("failed", True, "Forbidden: the trunk refuses our account or caller ID"),
    404: StatusRule("invalid_number", False, "Not Found: no such number"),
    407: StatusRule("failed", True, "Proxy Authentication Required: credentials refused"),
    408: StatusRule("no_answer", False, "Request Timeout: it rang until our ring timeout"),
    410: StatusRule("invalid_number", False, "Gone: the number is no longer in service"),
    480: StatusRule("no_answer", False, "Temporarily Unavailable: switched off, out of reach"),
    484: StatusRule("invalid_number", False, "Address Incomplete: too few digits"),
    485: StatusRule("invalid_number", False, "Ambiguous: the number is not a single subscriber"),
    486: StatusRule("busy", False, "Busy Here"),
    487: StatusRule("no_answer", False, "Request Terminated: cancelled when it rang too long"),
    "4xx": StatusRule("failed", False, "any other 4xx: the request was refused"),
    500: StatusRule("failed", True, "Server Internal Error: the trunk or a switch failed"),
    502: StatusRule("unreachable", True, "Bad Gateway: the callee's network cannot be reached"),
    503: StatusRule("failed", True, "Service Unavailable: the trunk is overloaded or down"),
    504: StatusRule("unreachable", True, "Server Time-out: the callee's network did not answer"),
    "5xx": StatusRule("failed", True, "any other 5xx: a server failed"),
    600: StatusRule("busy", False, "Busy Everywhere"),
    603: StatusRule("rejected", False, "Decline: the callee refused the call"),
    604: StatusRule("invalid_number", False, "Does Not Exist Anywhere"),
    607: StatusRule("rejected", False, "Unwanted: the callee marked the call as unwanted"),
    608: StatusRule("rejected", False, "Rejected: call screening on the way refused it"),
    "6xx": StatusRule("rejected", False, "any other 6xx: a definitive refusal"),
    OTHER: StatusRule("failed", False, "anything else (redirects are not followed)"),
}


def _rule(*, answered: bool, sip_status: int | None, trunk_error: bool) -> StatusRule:
    if answered:
        return OUTCOME_TABLE[ANSWERED]
    if trunk_error:
        return OUTCOME_TABLE[TRUNK_ERROR]
    if sip_status is None:
        return OUTCOME_TABLE[NO_STATUS]
    if sip_status in OUTCOME_TABLE:
        return OUTCOME_TABLE[sip_status]
    status_class = sip_status // 100
    if status_class in STATUS_CLASSES:
        return OUTCOME_TABLE[f"{status_class}xx"]
    return OUTCOME_TABLE[OTHER]


def outcome_for(*, answered: bool, sip_status: int | None, trunk_error: bool = False) -> Outcome:
    """The outcome of one attempt (see the table): answered wins, then a trunk error,
    then the final SIP status."""
    return _rule(answered=answered, sip_status=sip_status, trunk_error=trunk_error).outcome


def is_trunk_fault(sip_status: int | None, trunk_error: bool) -> bool:
    """Whether an unanswered attempt's result counts against the trunk (the breaker's test)."""
    return _rule(answered=False, sip_status=sip_status, trunk_error=trunk_error).trunk_fault


def render_table() -> str:
    """The table as plain text, for the module docstring and the man page."""
    header = ("SIP answer", "outcome", "trunk fault", "meaning")
    rules = tuple("-" * width for width in (*COLUMN_WIDTHS, MEANING_RULE_WIDTH))
    lines = [_row(header), _row(rules)]
    for key, rule in OUTCOME_TABLE.items():
        fault = "yes" if rule.trunk_fault else "no"
        lines.append(_row((str(key), rule.outcome, fault, rule.meaning)))
    return "\n".join(lines)


def _row(cells: tuple[str, ...]) -> str:
    """Columns padded to COLUMN_WIDTHS; the last cell (the meaning) runs free."""
    *fixed, last = cells
    padded = [cell.ljust(width) for cell, width in zip(fixed, COLUMN_WIDTHS, strict=True)]
    return "  ".join([*padded, last])
