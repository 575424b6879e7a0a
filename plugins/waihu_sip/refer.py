"""Blind transfer with REFER (RFC 3515), sans-IO: the request's headers, and the NOTIFYs
that follow it read into an outcome.

After the far end accepts our REFER (202), it calls the target itself and
reports how that goes in NOTIFYs of the implicit ``refer`` subscription, each
carrying the status line of its call as ``message/sipfrag`` (RFC 3420):
``SIP/2.0 100 Trying``, ``SIP/2.0 180 Ringing``, then a final one. ``ReferWatch``
takes each NOTIFY and says when the transfer has settled and how:

- sipfrag 2xx → ``transferred``;
- 486 or 600 → ``agent_busy``; 408, 480 or 487 → ``no_answer``;
- any other final status, a sipfrag that does not parse, or a subscription
  that ends (``Subscription-State: terminated``) before a final status →
  ``failed``.

``outcome_of_refer_response`` maps the answer to the REFER itself (4xx/5xx/6xx
or none: ``failed``).

What it is not: sending or timing (the leg sends the REFER, answers each
NOTIFY and gives up after ``NOTIFY_TIMEOUT``), attended transfer
(``Replaces``) or bridged transfer (the core's ``waihu.transfer``).

Error handling: a NOTIFY for another event package raises ``BadNotify``
(answered 489 Bad Event); a body that is not a sipfrag settles the transfer
as ``failed`` with the reason in ``detail``, and the NOTIFY is answered 400.
"""

from __future__ import annotations

import attrs

from waihu.api import TransferOutcome
from waihu_sip.address import NameAddress, parse_params
from waihu_sip.errors import SipParseError
from waihu_sip.message import Headers

__all__ = [
    "BYE_GRACE",
    "NOTIFY_TIMEOUT",
    "BadNotify",
    "ReferWatch",
    "Settled",
    "outcome_of_refer_response",
    "outcome_of_status",
    "parse_sipfrag",
    "refer_headers",
]

SIPFRAG = "message/sipfrag"
REFER_EVENT = "refer"
NOTIFY_TIMEOUT = 32.0  # seconds without a NOTIFY before we give up (64·T1, like a transaction)
SETTLE_TIMEOUT = 180.0  # seconds after the 202 for a final status: an agent rings, then stops
BYE_GRACE = 4.0  # seconds for the far end to leave after a transfer succeeded before we BYE
BUSY = frozenset({486, 600})
NO_ANSWER = frozenset({408, 480, 487})
_DIGITS = frozenset("0123456789")


class BadNotify(ValueError):
    """A NOTIFY that is not about our REFER (wrong or missing Event)."""


@attrs.frozen
class Settled:
    """How a transfer ended: the outcome, the status that decided it and words for people."""

    outcome: TransferOutcome
    status: int | None
    detail: str


def refer_headers(refer_to: str, referred_by: NameAddress) -> list[tuple[str, str]]:
    """``Refer-To`` and ``Referred-By`` (RFC 3892) for a REFER to ``refer_to`` (a URI)."""
    return [("Refer-To", f"<{refer_to}>"), ("Referred-By", f"<{referred_by.uri}>")]


def parse_sipfrag(body: bytes) -> int:
    """The status code of a ``message/sipfrag`` status line; SipParseError if there is none."""
    first = body.decode("utf-8", "replace").lstrip("\r\n").partition("\n")[0].strip()
    version, _, rest = first.partition(" ")
    code = rest.partition(" ")[0]
    if version.upper() != "SIP/2.0" or len(code) != 3 or not set(code) <= _DIGITS:
        raise SipParseError(f"sipfrag is not a SIP status line: {first[:60]!r}")
    status = int(code)
    if not 100 <= status <= 699:
        raise SipParseError(f"sipfrag status {status} is out of range")
    return status


def outcome_of_status(status: int) -> TransferOutcome:
    """What the target's final status means for the transfer."""
    if 200 <= status < 300:
        return "transferred"
    if status in BUSY:
        return "agent_busy"
    if status in NO_ANSWER:
        return "no_answer"
    return "failed"


def outcome_of_refer_response(status: int | None, reason: str = "") -> Settled | None:
    """The transfer's end if the REFER itself was not accepted; None when it was (2xx)."""
    if status is None:
        return Settled("failed", None, "REFER unanswered")
    if 200 <= status < 300:
        return None
    return Settled("failed", status, f"REFER refused: {status} {reason}".strip())


@attrs.define
class ReferWatch:
    """Follows the NOTIFYs of one REFER until the transfer has settled."""

    last_status: int | None = None  # the latest sipfrag status, provisional or final
    settled: Settled | None = None

    def notify(self, headers: Headers, body: bytes) -> int:
        """Take one NOTIFY; returns the status to answer it with (200 or 400).

        Raises ``BadNotify`` when its Event is not ``refer`` (answer 489).
        After this, ``settled`` is set once the outcome is known.
        """
        event = (headers.get("Event") or "").partition(";")[0].strip().lower()
        if event != REFER_EVENT:
            raise BadNotify(f"NOTIFY for event {event or '(none)'!r}, not refer")
        if self.settled is not None:
            return 200  # late NOTIFYs (a repeat of the final one) change nothing
        state_text = headers.get("Subscription-State") or ""
        state = state_text.partition(";")[0].strip().lower()
        answer = 200
        media_type = (headers.get("Content-Type") or "").partition(";")[0].strip().lower()
        if body.strip():
            try:
                if media_type != SIPFRAG:
                    raise SipParseError(f"NOTIFY body is {media_type or 'untyped'}, not {SIPFRAG}")
                status = parse_sipfrag(body)
            except SipParseError as exc:
                self.settled = Settled("failed", None, f"bad NOTIFY: {exc}")
                return 400
            self.last_status = status
            if status >= 200:
                self.settled = Settled(
                    outcome_of_status(status), status, f"target answered {_status_line(body)}"
                )
        if self.settled is None and state == "terminated":
            try:
                reason = parse_params(state_text.partition(";")[2]).get("reason") or "no reason"
            except SipParseError:
                reason = "no reason"
            self.settled = Settled(
                "failed", self.last_status, f"subscription ended ({reason}) with no final status"
            )
        return answer


def _status_line(body: bytes) -> str:
    first = body.decode("utf-8", "replace").lstrip("\r\n").partition("\n")[0].strip()
    return first.partition(" ")[2]  # "486 Busy Here"
