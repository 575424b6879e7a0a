"""How a SIP trunk is doing: its state machine, the OPTIONS probe and the retry pacing.

Three small parts, each testable alone:

- ``TrunkHealth``, a sans-IO state machine. It is fed what happened — the
  trunk came up or could not, a probe was answered or not, a call got an
  answer from the proxy or none at all — with the wall-clock time, and keeps
  the ``TrunkStatus`` (``waihu.api``) that ``SipTrunk.status`` hands out.
  Each event returns a ``Change`` when the state changed (the trunk logs it,
  once) or None when only the detail moved on, so a trunk that stays down or
  failing does not log a line per probe. The rules are those of Kamailio's
  dispatcher and Asterisk's ``qualify``: any final response to an OPTIONS
  counts as an answer, even 404, 405 or 483 (the proxy is there and talking);
  ``probe_failures`` probes in a row without one make the trunk ``failing``,
  as do that many calls in a row that got no response at all from the proxy;
  one answered probe makes it ``reachable`` again. A trunk that registers
  (``registering``) is ``up`` ("registering") until the registrar's first
  word, then ``registered`` while its binding holds and ``failing`` with the
  registrar's last status and when it came while it does not
  (``registered``/``registration_failed``, told by ``registration``); probe
  and dial failures still make it ``failing`` first.
- ``Backoff``: the delays between attempts to bring a ``down`` trunk up,
  ``RETRY_FIRST`` (5 s) doubling to ``RETRY_MAX`` (5 min).
- ``probe_forever``, the probe's pacing loop: one probe every
  ``probe_interval`` seconds on an absolute schedule, each given
  ``PROBE_TIMEOUT`` (5 s, or the interval when that is shorter) to be
  answered. The OPTIONS goes out as an RFC 3261 §17.1.2 non-INVITE client
  transaction (``transaction.send_non_invite``: Timer E retransmissions at
  0.5, 1, 2, 4 s), but waiting out its Timer F (32 s) would report a dead
  proxy half a minute late and overlap the next probe, so the probe is
  judged unanswered after its own timeout; a response that comes later
  finds its transaction gone and is dropped as a stray. ``options_request``
  builds the probe (§11.1).

What it is not: the transport or the transaction (``transport``,
``transaction``), nor the trunk's lifetime (``trunk`` decides when to
probe, when to retry and what to log).

Error handling: nothing here raises for what the network does; a probe
that fails in any way (no answer, the proxy does not resolve, a send error)
is a ``ProbeResult`` without a status.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import attrs
import trio

from waihu.api import TrunkState, TrunkStatus
from waihu_sip.address import NameAddress, SipUri
from waihu_sip.dialog import MAX_FORWARDS
from waihu_sip.identity import LocalIdentity
from waihu_sip.message import Headers, SipRequest
from waihu_sip.transport import new_branch, new_token

__all__ = [
    "PROBE_TIMEOUT",
    "RETRY_FIRST",
    "RETRY_MAX",
    "Backoff",
    "Change",
    "ProbeResult",
    "Registration",
    "TrunkHealth",
    "options_request",
    "probe_forever",
]

PROBE_TIMEOUT = 5.0  # seconds an OPTIONS probe may take before it counts as unanswered
RETRY_FIRST = 5.0  # seconds before the first retry of a trunk that could not come up
RETRY_MAX = 300.0  # the retry delay doubles up to this (5 min)
BAD_STATES: frozenset[TrunkState] = frozenset({"failing", "down"})
MS_PER_SECOND = 1000


@attrs.frozen
class Change:
    """The trunk moved from ``old`` to ``new``; ``detail`` says why, for the log."""

    old: TrunkState
    new: TrunkState
    detail: str

    @property
    def worse(self) -> bool:
        """True when the trunk went into ``failing`` or ``down`` (logged as a warning)."""
        return self.new in BAD_STATES

    def __str__(self) -> str:
        return f"{self.old} → {self.new}" + (f": {self.detail}" if self.detail else "")


@attrs.frozen
class ProbeResult:
    """How one OPTIONS probe went: the final ``status`` and ``reason`` of the answer and its
    round trip in seconds, or no status and ``problem`` saying why there was no answer."""

    status: int | None = None
    reason: str = ""
    round_trip: float = 0.0
    problem: str = ""

    @classmethod
    def answered(cls, status: int, reason: str, round_trip: float) -> ProbeResult:
        """The proxy sent a final response."""
        return cls(status=status, reason=reason, round_trip=round_trip)

    @classmethod
    def unanswered(cls, problem: str) -> ProbeResult:
        """No final response; ``problem`` says what happened instead."""
        return cls(problem=problem)


@attrs.frozen
class Registration:
    """The last word from the registrar: ``ok`` (a binding ``until`` then) or a failure, ``at``
    that time (seconds since the epoch), with one line for people."""

    ok: bool
    at: float
    detail: str
    until: float | None = None


class TrunkHealth:
    """The state of one trunk, moved by events; see the module docstring for the rules.

    ``probing`` says whether OPTIONS probes are sent (without them a working
    trunk is ``up``, never ``reachable``); ``failures`` is how many misses in
    a row make it ``failing``. Times are seconds since the epoch.
    """

    def __init__(
        self, *, probing: bool, failures: int, now: float, registering: bool = False
    ) -> None:
        if failures < 1:
            raise ValueError(f"failures must be at least 1, not {failures}")
        self.probing = probing
        self.failures = failures
        self.registering = registering
        self._registration: Registration | None = None  # the last word from the registrar
        self._status = TrunkStatus(state="starting", since=now)
        self._problem: str | None = None  # why the trunk is down, while it is
        self._misses = 0  # probes in a row without an answer
        self._last_miss = ""
        self._dial_errors = 0  # calls in a row the proxy did not answer at all
        self._last_dial_error = ""
        self._answer: ProbeResult | None = None  # the last answered probe since coming up

    @property
    def state(self) -> TrunkState:
        """The current state."""
        return self._status.state

    @property
    def problem(self) -> str | None:
        """While ``down``: what keeps the trunk from working (``proxy X does not resolve (…)``)."""
        return self._problem

    def status(self) -> TrunkStatus:
        """The current ``TrunkStatus``."""
        return self._status

    # ─────────────── events ───────────────

    def down(self, now: float, problem: str, retry_in: float) -> Change | None:
        """The trunk cannot work (``problem``) and tries again in ``retry_in`` seconds."""
        self._problem = problem
        return self._enter(now, "down", f"{problem}; next try in {retry_in:g} s")

    def came_up(self, now: float) -> Change | None:
        """The trunk is running: socket bound, proxy resolved. Probes and calls start afresh."""
        self._problem = None
        self._misses = self._dial_errors = 0
        self._answer = None
        self._registration = None
        return self._settle(now)

    def probe_done(self, now: float, result: ProbeResult) -> Change | None:
        """One probe ended, answered (any final status) or not."""
        if self._problem is not None:
            return None  # a probe that outlived the trunk's last bring-up says nothing now
        if result.status is not None:
            self._misses = 0
            self._answer = result
        else:
            self._misses += 1
            self._last_miss = result.problem
        return self._settle(now)

    def dial_answered(self, now: float) -> Change | None:
        """A call got some response from the proxy (an answer, a busy, a 404…)."""
        if self._problem is not None:
            return None
        self._dial_errors = 0
        return self._settle(now)

    def dial_unanswered(self, now: float, problem: str) -> Change | None:
        """A call got no response at all from the proxy (``TrunkError``)."""
        if self._problem is not None:
            return None
        self._dial_errors += 1
        self._last_dial_error = problem
        return self._settle(now)

    def registered(self, now: float, until: float, detail: str) -> Change | None:
        """The registrar accepted our binding until ``until`` (seconds since the epoch)."""
        self._registration = Registration(ok=True, at=now, until=until, detail=detail)
        if self._problem is not None:
            return None
        return self._settle(now)

    def registration_failed(self, now: float, detail: str) -> Change | None:
        """The registrar refused our REGISTER, or did not answer; ``detail`` says how."""
        self._registration = Registration(ok=False, at=now, detail=detail)
        if self._problem is not None:
            return None
        return self._settle(now)

    @property
    def registration(self) -> Registration | None:
        """The last registration outcome (None: none yet, or not registering)."""
        return self._registration

    # ─────────────── the rules ───────────────

    def _settle(self, now: float) -> Change | None:
        """Enter the state the counters call for while the trunk is running."""
        if self._misses >= self.failures:
            probes = "probe" if self._misses == 1 else "probes"
            return self._enter(
                now,
                "failing",
                f"no answer to {self._misses} OPTIONS {probes} in a row (last: {self._last_miss})",
            )
        if self._dial_errors >= self.failures:
            calls = "call" if self._dial_errors == 1 else "calls"
            return self._enter(
                now,
                "failing",
                f"{self._dial_errors} {calls} in a row got no response from the proxy "
                f"(last: {self._last_dial_error})",
            )
        registration = self._registration
        if self.registering and registration is not None and not registration.ok:
            return self._enter(now, "failing", registration.detail)
        if self.registering and registration is not None:
            return self._enter(now, "registered", registration.detail)
        if self.probing and self._answer is not None:
            answer = self._answer
            return self._enter(
                now,
                "reachable",
                f"OPTIONS answered {answer.status} {answer.reason} "
                f"in {answer.round_trip * MS_PER_SECOND:.0f} ms",
            )
        if self.registering:
            return self._enter(now, "up", "registering")
        detail = "waiting for the first answer to an OPTIONS probe" if self.probing else ""
        return self._enter(now, "up", detail)

    def _enter(self, now: float, state: TrunkState, detail: str) -> Change | None:
        old = self._status
        if state == old.state:
            self._status = attrs.evolve(old, detail=detail)  # same state: it keeps its since
            return None
        self._status = TrunkStatus(state=state, since=now, detail=detail)
        return Change(old.state, state, detail)


class Backoff:
    """Delays between attempts: ``first`` seconds, doubling each time up to ``limit``."""

    def __init__(self, first: float = RETRY_FIRST, limit: float = RETRY_MAX) -> None:
        if not 0 < first <= limit:
            raise ValueError(f"need 0 < first ≤ limit, not {first} and {limit}")
        self.first = first
        self.limit = limit
        self._next = first

    def next(self) -> float:
        """The delay before the next attempt."""
        delay = self._next
        self._next = min(delay * 2, self.limit)
        return delay

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self._next = self.first


def options_request(
    identity: LocalIdentity, target: SipUri, from_: NameAddress, *, branch: str | None = None
) -> SipRequest:
    """An out-of-dialog OPTIONS to ``target`` (the proxy itself), as RFC 3261 §11.1 writes one:
    a fresh Call-ID, From tag and branch each time, no To tag, ``Accept: application/sdp``."""
    headers = Headers(
        [
            ("Via", identity.via(branch or new_branch())),
            ("Max-Forwards", str(MAX_FORWARDS)),
            ("From", str(from_.with_tag(new_token()))),
            ("To", str(NameAddress(uri=target))),
            ("Call-ID", new_token()),
            ("CSeq", "1 OPTIONS"),
            ("Contact", identity.contact),
            ("Accept", "application/sdp"),
            ("User-Agent", identity.user_agent),
        ]
    )
    return SipRequest(headers=headers, body=b"", method="OPTIONS", uri=str(target))


async def probe_forever(
    probe: Callable[[], Awaitable[ProbeResult]],
    on_result: Callable[[ProbeResult], None],
    *,
    interval: float,
    timeout: float = PROBE_TIMEOUT,
) -> None:
    """Run ``probe`` every ``interval`` seconds (trio clock, absolute schedule) until cancelled,
    handing each result to ``on_result``; a probe still running after ``timeout`` seconds
    (capped at ``interval``) is cut short and reported unanswered. The first probe goes at once.
    """
    if not interval > 0:
        raise ValueError(f"interval must be positive, not {interval}")
    limit = min(timeout, interval)
    due = trio.current_time()
    while True:
        result: ProbeResult | None = None
        with trio.move_on_after(limit):
            result = await probe()
        if result is None:
            result = ProbeResult.unanswered(f"timed out after {limit:g} s")
        on_result(result)
        # the next slot on the grid; slots already past (a suspended machine) are skipped
        now = trio.current_time()
        due += interval * max(1, math.ceil((now - due) / interval))
        await trio.sleep_until(due)
