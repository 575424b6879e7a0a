"""RFC 4028 session timers, sans-IO: what to put in requests and answers, and when to act.

A session timer keeps an answered call from living forever when one side
vanishes without a BYE: one side (the *refresher*) re-INVITEs or UPDATEs the
dialog every half interval; the other hangs up (BYE) when no refresh came by
``expiry − min(32, interval/3)`` (§10). This module holds the rules only:

- ``invite_headers``: ``Supported: timer``, ``Session-Expires`` and
  ``Min-SE`` for our initial INVITE (§7.1);
- ``from_answer``: what the 2xx to a request *we* sent says (§7.2): the
  interval and whether we refresh;
- ``answer_request``: what to do with a request the far end sent (§9): the
  ``Session-Expires``/``Require`` headers for our 2xx and the agreed timer,
  or a 422 with our ``Min-SE`` when its interval is too small;
- ``SessionTimer``: given the agreement and the time it was made, the next
  deadline and what is due then (``"refresh"`` or ``"bye"``).

The ``refresher`` parameter names a *role in the transaction that carried
it* (``uac`` = whoever sent that request); here it is turned once into
"us" or "them" so the leg never has to remember who sent what.

What it is not: sending, clocks or tasks (the leg runs the timer on trio's
clock and sends the refresh), or proxy behaviour (§8).

Error handling: a ``Session-Expires`` or ``Min-SE`` value that does not parse
raises ``SessionTimerError`` naming the header and the value; the leg
answers such a request 400.
"""

from __future__ import annotations

from typing import Literal

import attrs

from waihu_sip.address import parse_params
from waihu_sip.errors import SipParseError
from waihu_sip.message import Headers

__all__ = [
    "ABSOLUTE_MIN_SE",
    "DEFAULT_MIN_SE",
    "DEFAULT_SESSION_EXPIRES",
    "Agreement",
    "Reject",
    "SessionTimer",
    "SessionTimerError",
    "answer_request",
    "from_answer",
    "invite_headers",
    "parse_min_se",
    "parse_session_expires",
]

DEFAULT_SESSION_EXPIRES = 1800  # seconds; §4 recommends 1800 (30 minutes)
DEFAULT_MIN_SE = 90  # seconds; §5: the smallest interval a UA may insist on
ABSOLUTE_MIN_SE = 1  # our config floor, below RFC 4028's 90: only test labs go that low
BYE_MARGIN_MAX = 32.0  # §10: BYE this long before expiry at most…
BYE_MARGIN_FRACTION = 1 / 3  # …or a third of the interval, whichever is less
TIMER_OPTION = "timer"  # the option tag in Supported/Require (§3)
_DIGITS = frozenset("0123456789")  # ASCII only: str.isdigit() also accepts "²" and "١٢"

Role = Literal["uac", "uas"]
Due = Literal["refresh", "bye"]


class SessionTimerError(SipParseError):
    """A Session-Expires or Min-SE header that does not parse."""


@attrs.frozen
class SessionExpires:
    """A parsed ``Session-Expires: delta-seconds[;refresher=uac|uas]`` value."""

    interval: int
    refresher: Role | None = None

    def __str__(self) -> str:
        return (
            f"{self.interval};refresher={self.refresher}" if self.refresher else str(self.interval)
        )


@attrs.frozen
class Agreement:
    """A session timer in force: its interval in seconds and whether we are the refresher."""

    interval: int
    we_refresh: bool


@attrs.frozen
class Reject:
    """Answer the request 422 Session Interval Too Small with this ``Min-SE``."""

    min_se: int


@attrs.frozen
class Accept:
    """Answer the request 2xx with ``headers``; ``agreement`` is the timer then in force
    (None: no session timer from now on)."""

    headers: list[tuple[str, str]]
    agreement: Agreement | None


def _seconds(name: str, text: str) -> int:
    text = text.strip()
    if not text or not set(text) <= _DIGITS or len(text) > 10:
        raise SessionTimerError(f"{name}: {text!r} is not a number of seconds")
    return int(text)


def parse_session_expires(value: str) -> SessionExpires:
    """Parse a Session-Expires value; raises ``SessionTimerError`` naming what is wrong."""
    number, _, param_text = value.partition(";")
    interval = _seconds("Session-Expires", number)
    if interval == 0:
        raise SessionTimerError("Session-Expires: 0 is not a session interval")
    try:
        params = parse_params(param_text)
    except SipParseError as exc:
        raise SessionTimerError(f"Session-Expires: {exc}") from None
    refresher = (params.get("refresher") or "").lower() or None
    if refresher not in (None, "uac", "uas"):
        raise SessionTimerError(f"Session-Expires: refresher must be uac or uas, not {refresher!r}")
    return SessionExpires(interval, refresher)  # type: ignore[arg-type]


def parse_min_se(value: str) -> int:
    """Parse a Min-SE value (its parameters are ignored, §5)."""
    return _seconds("Min-SE", value.partition(";")[0])


def _supports_timer(headers: Headers) -> bool:
    options = headers.get_all("Supported") + headers.get_all("Require")
    return any(option.strip().lower() == TIMER_OPTION for option in options)


def invite_headers(session_expires: int, min_se: int) -> list[tuple[str, str]]:
    """The headers our initial INVITE carries (§7.1); none when ``session_expires`` is 0.

    No ``refresher`` is asked for: the answerer chooses (§7.1 lets the UAC
    leave it out), and whatever it picks we follow.
    """
    if session_expires == 0:
        return []
    return [
        ("Supported", TIMER_OPTION),
        ("Session-Expires", str(max(session_expires, min_se))),
        ("Min-SE", str(min_se)),
    ]


def from_answer(headers: Headers) -> Agreement | None:
    """The timer a 2xx to a request we sent sets up (§7.2), or None for no timer.

    A 2xx without ``Session-Expires`` means the far end does not do session
    timers: none is in force. A ``refresher`` missing from the 2xx (which
    §9 does not allow) is read as ``uac``: we refresh, which is always safe.
    """
    value = headers.get("Session-Expires")
    if value is None:
        return None
    expires = parse_session_expires(value)
    return Agreement(expires.interval, we_refresh=expires.refresher in (None, "uac"))


def answer_request(headers: Headers, *, min_se: int, enabled: bool = True) -> Accept | Reject:
    """What to answer to a session refresh (re-INVITE or UPDATE) the far end sent (§9).

    - no ``Session-Expires`` (or timers off here): 2xx without one; no timer
      from now on (the far end has stopped refreshing, §9);
    - an interval under our ``min_se``: 422 when the request says it supports
      timers, else the interval is raised to ``min_se`` (it could not act on a
      422, RFC 4028 errata 1687);
    - otherwise the request's ``refresher`` is kept; with none, the far end
      refreshes when it supports timers (``uac``), else we do (``uas``).
      ``Require: timer`` goes with ``refresher=uac`` (§9).
    """
    value = headers.get("Session-Expires")
    if value is None or not enabled:
        return Accept([], None)
    expires = parse_session_expires(value)
    supports = _supports_timer(headers)
    interval = expires.interval
    if interval < min_se:
        if supports:
            return Reject(min_se)
        interval = min_se
    refresher: Role = expires.refresher or ("uac" if supports else "uas")
    answer = [("Session-Expires", f"{interval};refresher={refresher}")]
    if refresher == "uac":
        answer.append(("Require", TIMER_OPTION))
    return Accept(answer, Agreement(interval, we_refresh=refresher == "uas"))


@attrs.define
class SessionTimer:
    """One dialog's session timer on the caller's clock (seconds, any epoch).

    ``deadline`` is when ``due`` next has something to say; ``refreshed``
    restarts it (a refresh went through either way); ``refresh_failed``
    (our refresh got a non-2xx other than 408/481, which end the call at once)
    leaves only the BYE at the old expiry.
    """

    agreement: Agreement
    started_at: float
    _failed: bool = False

    @property
    def expires_at(self) -> float:
        """When the session ends unless refreshed."""
        return self.started_at + self.agreement.interval

    @property
    def bye_at(self) -> float:
        """When the non-refresher gives up and sends BYE (§10)."""
        interval = self.agreement.interval
        return self.expires_at - min(BYE_MARGIN_MAX, interval * BYE_MARGIN_FRACTION)

    @property
    def deadline(self) -> float:
        """The next time ``due`` returns something."""
        if self.agreement.we_refresh and not self._failed:
            return self.started_at + self.agreement.interval / 2  # §10: half the interval
        return self.bye_at

    def due(self, now: float) -> Due | None:
        """What to do at ``now``: ``"refresh"``, ``"bye"`` or nothing yet."""
        if now < self.deadline:
            return None
        return "refresh" if self.agreement.we_refresh and not self._failed else "bye"

    def refreshed(self, agreement: Agreement, now: float) -> None:
        """A refresh succeeded at ``now`` with ``agreement``: the interval starts again."""
        self.agreement = agreement
        self.started_at = now
        self._failed = False

    def refresh_failed(self) -> None:
        """Our refresh was refused: stop trying, hang up at the old expiry."""
        self._failed = True
