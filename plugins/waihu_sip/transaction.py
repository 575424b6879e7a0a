"""SIP transactions (RFC 3261 §17, RFC 6026) as sans-IO state machines, and their trio drivers.

The four machines — ``InviteClientTransaction``, ``NonInviteClientTransaction``,
``InviteServerTransaction``, ``NonInviteServerTransaction`` — do no I/O and
read no clock. Each takes events (``start``/``send_response``, ``receive`` of a
message, ``timer_fired(now)``) and returns a list of actions for its driver:

- ``Transmit(data)``: send these bytes to the transaction's peer;
- ``Deliver(message)``: pass a response (client) or an ACK (INVITE server) up
  to the transaction user;
- ``TimedOut(timer)``: the transaction gave up (Timer B/F: no answer; Timer H:
  our final answer was never ACKed; Timer L: our 2xx was never ACKed);
- ``Terminated()``: the machine is done; drop it.

``next_deadline`` is when ``timer_fired`` must next be called (``math.inf``
when no timer runs). A machine built with ``reliable=True`` (TCP/TLS) never
retransmits and has Timers D, I, J and K at zero (RFC 3261 Table 4). The INVITE
server follows RFC 6026: after a 2xx it enters Accepted and retransmits the 2xx
on T1 doubling to T2 until an ACK arrives (the TU's job in RFC 3261 §13.3.1.4,
done here for it), absorbing retransmitted INVITEs.

Drivers: ``send_non_invite(transport, request, destination)`` runs one
non-INVITE client transaction (BYE, CANCEL, OPTIONS, REGISTER, INFO, REFER,
PRACK) and returns the final response or None;
``send_non_invite_authenticated`` does the same and answers 401/407 with
digest credentials, one new request per round; ``InviteClient`` runs an
INVITE client transaction for ``OutgoingCall``.

Error handling: a message that does not belong to the transaction (another
method, a request where a response is due) is ignored by the machine; events
after termination return no actions. The drivers raise ``ValueError`` for a
request without a Via branch (a programming error) and report a transaction
timeout as None (``send_non_invite``) or ``InviteTimeout`` (``InviteClient``).

What it is not: matching messages to transactions (``transport`` routes by
branch and method), dialogs (``dialog``), the TU's decisions (``outgoing``,
``leg``) or sockets.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Sequence

import attrs
import trio

from waihu_sip.dialog import MAX_FORWARDS
from waihu_sip.digest import CHALLENGE_HEADERS, DigestSession
from waihu_sip.message import Headers, SipRequest, SipResponse
from waihu_sip.timers import TimerSet
from waihu_sip.transport import Address, ResponseInbox, SipTransport

__all__ = [
    "Action",
    "Deliver",
    "InviteClient",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "InviteTimeout",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "State",
    "Terminated",
    "TimedOut",
    "Transmit",
    "ack_for_non_2xx",
    "send_non_invite",
    "send_non_invite_authenticated",
]


# ─────────────── actions ───────────────


@attrs.frozen
class Transmit:
    """Send ``data`` to the transaction's peer (a request, a retransmission, an ACK, a response)."""

    data: bytes


@attrs.frozen
class Deliver:
    """Pass ``message`` up to the transaction user: a response (client side) or an ACK of our
    2xx (INVITE server, Accepted state)."""

    message: SipRequest | SipResponse


@attrs.frozen
class TimedOut:
    """The transaction gave up; ``timer`` names which one fired ("B", "F", "H" or "L")."""

    timer: str


@attrs.frozen
class Terminated:
    """The machine reached Terminated: the driver may forget it."""


Action = Transmit | Deliver | TimedOut | Terminated


class State(enum.Enum):
    """Transaction states of RFC 3261 §17 (ACCEPTED from RFC 6026)."""

    IDLE = "idle"  # built, nothing sent/received yet
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# ─────────────── shared timer bookkeeping ───────────────


class _Machine:
    """Named deadlines, the state and termination, shared by the four machines."""

    def __init__(self, reliable: bool, timers: TimerSet | None) -> None:
        self.timers = timers or TimerSet(reliable=reliable)
        self.state = State.IDLE
        self._deadlines: dict[str, float] = {}

    @property
    def reliable(self) -> bool:
        """True on TCP/TLS: nothing is retransmitted."""
        return self.timers.reliable

    @property
    def next_deadline(self) -> float:
        """When ``timer_fired`` must next be called; ``math.inf`` when no timer runs."""
        return min(self._deadlines.values(), default=math.inf)

    @property
    def terminated(self) -> bool:
        """True once the machine is done."""
        return self.state is State.TERMINATED

    def _set(self, name: str, at: float) -> None:
        self._deadlines[name] = at

    def _clear(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def _terminate(self) -> list[Action]:
        self.state = State.TERMINATED
        self._deadlines.clear()
        return [Terminated()]

    def _wait_or_terminate(self, name: str, now: float, duration: float) -> list[Action]:
        """Start a wait-for-retransmissions timer (D, I, J, K); zero terminates at once."""
        if duration <= 0:
            return self._terminate()
        self._set(name, now + duration)
        return []

    def timer_fired(self, now: float) -> list[Action]:
        """Handle every timer due at ``now`` (earliest first); the actions they cause."""
        actions: list[Action] = []
        while not self.terminated:
            due = [(at, name) for name, at in self._deadlines.items() if at <= now]
            if not due:
                break
            _, name = min(due)
            del self._deadlines[name]
            actions += self._on_timer(name, now)
        return actions

    def _on_timer(self, name: str, now: float) -> list[Action]:
        raise NotImplementedError


# ─────────────── client transactions ───────────────


class InviteClientTransaction(_Machine):
    """RFC 3261 §17.1.1 with RFC 6026's Accepted state: the INVITE we send.

    ``start(now)`` sends the INVITE. Responses go up as ``Deliver``: every 1xx,
    the first non-2xx final (which the machine ACKs itself, §17.1.1.3, and
    re-ACKs on retransmission during Timer D without passing it up again),
    and every 2xx — the first and, in Accepted until Timer M, each
    retransmission or fork — because ACKing a 2xx is the TU's job (§13.2.2.4).
    Timer B in Calling (no response at all) gives ``TimedOut("B")``; once a
    provisional came, how long it may ring is the TU's decision (its ring
    timeout, then CANCEL).
    """

    def __init__(
        self, request: SipRequest, *, reliable: bool = False, timers: TimerSet | None = None
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"not an INVITE: {request.method}")
        super().__init__(reliable, timers)
        self.request = request
        self._data = request.to_bytes()
        self._interval = self.timers.t1
        self._ack: bytes | None = None
        self.final: SipResponse | None = None  # the first final response
        self.heard = False  # any response at all

    def start(self, now: float) -> list[Action]:
        """Send the INVITE; Timer A (unreliable) and Timer B start."""
        if self.state is not State.IDLE:
            return []
        self.state = State.CALLING
        if self.timers.retransmits:
            self._set("A", now + self._interval)
        self._set("B", now + self.timers.timeout)
        return [Transmit(self._data)]

    def receive(self, response: SipResponse, now: float) -> list[Action]:
        """A response matched to this transaction."""
        if not isinstance(response, SipResponse) or response.cseq.method != "INVITE":
            return []
        if self.state in (State.IDLE, State.TERMINATED):
            return []
        self.heard = True
        if self.state in (State.CALLING, State.PROCEEDING):
            if response.provisional:
                self.state = State.PROCEEDING
                # §17.1.1.2: no retransmission once a provisional came, and Timer B only
                # matters in Calling: how long to ring is the TU's ring timeout
                self._clear("A", "B")
                return [Deliver(response)]
            self.final = response
            self._clear("A", "B")
            if response.success:
                self.state = State.ACCEPTED
                self._set("M", now + self.timers.timeout)
                return [Deliver(response)]
            self.state = State.COMPLETED
            self._ack = ack_for_non_2xx(self.request, response).to_bytes()
            return [Transmit(self._ack), Deliver(response), *self._wait_d(now)]
        if self.state is State.ACCEPTED:
            if response.success:
                return [Deliver(response)]  # a retransmission or a fork: the TU ACKs it
            return []
        if self.state is State.COMPLETED:
            if response.status >= 200 and self._ack is not None:
                return [Transmit(self._ack)]  # retransmitted final: ACK again, quietly
            return []
        return []

    def _wait_d(self, now: float) -> list[Action]:
        return self._wait_or_terminate("D", now, self.timers.d)

    def _on_timer(self, name: str, now: float) -> list[Action]:
        if name == "A" and self.state is State.CALLING:
            self._interval *= 2  # Timer A doubles without a cap (§17.1.1.2)
            self._set("A", now + self._interval)
            return [Transmit(self._data)]
        if name == "B" and self.state is State.CALLING:
            return [TimedOut("B"), *self._terminate()]
        if name in ("D", "M"):
            return self._terminate()
        return []


class NonInviteClientTransaction(_Machine):
    """RFC 3261 §17.1.2: a BYE, CANCEL, OPTIONS, REGISTER, INFO, REFER or PRACK we send.

    Timer E retransmits (T1 doubling to T2; every T2 once a provisional came),
    Timer F (64·T1) without a final gives ``TimedOut("F")``. Provisional and
    the first final response go up; retransmitted finals are absorbed during
    Timer K.
    """

    def __init__(
        self, request: SipRequest, *, reliable: bool = False, timers: TimerSet | None = None
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} has no non-INVITE client transaction")
        super().__init__(reliable, timers)
        self.request = request
        self._data = request.to_bytes()
        self._interval = self.timers.t1
        self.final: SipResponse | None = None

    def start(self, now: float) -> list[Action]:
        """Send the request; Timer E (unreliable) and Timer F start."""
        if self.state is not State.IDLE:
            return []
        self.state = State.TRYING
        if self.timers.retransmits:
            self._set("E", now + self._interval)
        self._set("F", now + self.timers.timeout)
        return [Transmit(self._data)]

    def receive(self, response: SipResponse, now: float) -> list[Action]:
        """A response matched to this transaction."""
        if not isinstance(response, SipResponse) or response.cseq.method != self.request.method:
            return []
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []  # Completed absorbs retransmitted finals; Idle/Terminated ignore
        if response.provisional:
            self.state = State.PROCEEDING
            return [Deliver(response)]
        self.final = response
        self.state = State.COMPLETED
        self._clear("E", "F")
        return [Deliver(response), *self._wait_or_terminate("K", now, self.timers.k)]

    def _on_timer(self, name: str, now: float) -> list[Action]:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            if self.state is State.PROCEEDING:
                self._interval = self.timers.t2  # §17.1.2.2
            else:
                self._interval = min(self._interval * 2, self.timers.t2)
            self._set("E", now + self._interval)
            return [Transmit(self._data)]
        if name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            return [TimedOut("F"), *self._terminate()]
        if name == "K":
            return self._terminate()
        return []


# ─────────────── server transactions ───────────────


class InviteServerTransaction(_Machine):
    """RFC 3261 §17.2.1 with RFC 6026's Accepted state: an INVITE we received and answer.

    Built from the INVITE; the TU answers through ``send_response``. A
    retransmitted INVITE gets the last provisional again (Proceeding), the
    final again (Completed), or nothing (Accepted: the 2xx goes on its own
    timer). A 2xx is retransmitted on T1 doubling to T2 (unreliable) until an
    ACK comes (which goes up as ``Deliver``); Timer L (64·T1) ends Accepted,
    with ``TimedOut("L")`` if no ACK came. A 3xx–6xx is retransmitted on Timer
    G until its ACK; Timer H without one gives ``TimedOut("H")``; the ACK
    moves to Confirmed for Timer I.
    """

    def __init__(
        self, request: SipRequest, *, reliable: bool = False, timers: TimerSet | None = None
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"not an INVITE: {request.method}")
        super().__init__(reliable, timers)
        self.request = request
        self.state = State.PROCEEDING
        self._last: bytes | None = None  # the last response sent
        self._interval = self.timers.t1
        self.acked = False

    def send_response(self, response: SipResponse, now: float) -> list[Action]:
        """The TU answers: a 1xx (any number), then one final response."""
        if self.state is not State.PROCEEDING:
            return []  # a final already went out: nothing else may follow
        self._last = response.to_bytes()
        if response.provisional:
            return [Transmit(self._last)]
        self._interval = self.timers.t1
        if response.success:
            self.state = State.ACCEPTED
            if self.timers.retransmits:
                self._set("G2xx", now + self._interval)
            self._set("L", now + self.timers.timeout)
        else:
            self.state = State.COMPLETED
            if self.timers.retransmits:
                self._set("G", now + self._interval)
            self._set("H", now + self.timers.timeout)
        return [Transmit(self._last)]

    def receive(self, request: SipRequest, now: float) -> list[Action]:
        """A retransmitted INVITE, or an ACK, matched to this transaction."""
        if not isinstance(request, SipRequest):
            return []
        if request.method == "INVITE":
            if self.state in (State.PROCEEDING, State.COMPLETED) and self._last is not None:
                return [Transmit(self._last)]
            return []  # Accepted absorbs INVITE retransmissions (RFC 6026 §7.1)
        if request.method != "ACK":
            return []
        if self.state is State.ACCEPTED:
            first = not self.acked
            self.acked = True
            self._clear("G2xx")  # the 2xx reached the far end: stop retransmitting it
            return [Deliver(request)] if first else []
        if self.state is State.COMPLETED:
            self.acked = True
            self.state = State.CONFIRMED
            self._clear("G", "H")
            return self._wait_or_terminate("I", now, self.timers.i)
        return []  # Confirmed absorbs ACK retransmissions

    def _on_timer(self, name: str, now: float) -> list[Action]:
        if name in ("G", "G2xx") and self._last is not None:
            self._interval = min(self._interval * 2, self.timers.t2)
            self._set(name, now + self._interval)
            return [Transmit(self._last)]
        if name == "H":
            return [TimedOut("H"), *self._terminate()]
        if name == "L":
            return [*([] if self.acked else [TimedOut("L")]), *self._terminate()]
        if name == "I":
            return self._terminate()
        return []


class NonInviteServerTransaction(_Machine):
    """RFC 3261 §17.2.2: a non-INVITE request we received and answer.

    Built from the request (Trying). The TU answers with ``send_response``;
    a retransmitted request gets nothing in Trying, the last provisional in
    Proceeding and the final in Completed, which lasts Timer J.
    """

    def __init__(
        self, request: SipRequest, *, reliable: bool = False, timers: TimerSet | None = None
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"{request.method} has no non-INVITE server transaction")
        super().__init__(reliable, timers)
        self.request = request
        self.state = State.TRYING
        self._last: bytes | None = None

    def send_response(self, response: SipResponse, now: float) -> list[Action]:
        """The TU answers: provisional responses, then one final."""
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []
        self._last = response.to_bytes()
        if response.provisional:
            self.state = State.PROCEEDING
            return [Transmit(self._last)]
        self.state = State.COMPLETED
        return [Transmit(self._last), *self._wait_or_terminate("J", now, self.timers.j)]

    def receive(self, request: SipRequest, now: float) -> list[Action]:
        """A retransmission of the request."""
        if not isinstance(request, SipRequest) or request.method != self.request.method:
            return []
        if self.state in (State.PROCEEDING, State.COMPLETED) and self._last is not None:
            return [Transmit(self._last)]
        return []

    def _on_timer(self, name: str, now: float) -> list[Action]:
        if name == "J":
            return self._terminate()
        return []


def ack_for_non_2xx(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a 3xx–6xx answer to ``invite`` (§17.1.1.3): the INVITE's Request-URI, top
    Via (so its branch), From, Call-ID, CSeq number and Route headers, the response's To."""
    headers = Headers(
        [
            ("Via", invite.headers.get_all("Via")[0]),
            ("Max-Forwards", str(MAX_FORWARDS)),
            ("From", invite.headers.get("From") or ""),
            ("To", response.headers.get("To") or invite.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} ACK"),
        ]
    )
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    return SipRequest(headers=headers, body=b"", method="ACK", uri=invite.uri)


# ─────────────── trio drivers ───────────────


RELIABLE_VIA_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "WS", "WSS"})


def _reliable(transport: SipTransport, request: SipRequest | None = None) -> bool:
    """Whether ``request`` went over a reliable transport: the trunk's own (TCP/TLS), or the
    one its top Via names once sent (a UDP trunk may send a large request by TCP)."""
    if getattr(transport, "reliable", False):
        return True
    return request is not None and request.top_via.transport.upper() in RELIABLE_VIA_TRANSPORTS


async def _send_first(
    transport: SipTransport, request: SipRequest, destination: Address
) -> SipRequest:
    """Send a request the first time through the transport, which chooses how (and may
    rewrite its top Via to say so); the machine then retransmits exactly what went."""
    await transport.send(request, destination)
    return request


async def _perform(
    transport: SipTransport, destination: Address, actions: Sequence[Action]
) -> list[SipRequest | SipResponse]:
    """Send what the machine asks to send; return what it passes up, in order."""
    delivered: list[SipRequest | SipResponse] = []
    for action in actions:
        if isinstance(action, Transmit):
            await transport.send_bytes(action.data, destination)
        elif isinstance(action, Deliver):
            delivered.append(action.message)
    return delivered


async def send_non_invite(
    transport: SipTransport,
    request: SipRequest,
    destination: Address,
    *,
    reliable: bool | None = None,
) -> SipResponse | None:
    """Run one non-INVITE client transaction; the final response, or None on Timer F.

    ``reliable`` says whether the request travels over TCP/TLS (no retransmission); left
    out, the transport's own ``reliable`` decides."""
    branch = request.top_via.branch
    if branch is None:
        raise ValueError("request has no Via branch")
    with transport.client_transaction(branch, request.method) as responses:
        await _send_first(transport, request, destination)
        if reliable is None:
            reliable = _reliable(transport, request)
        machine = NonInviteClientTransaction(request, reliable=reliable)
        machine.start(trio.current_time())  # its first Transmit is what was just sent
        while not machine.terminated:
            response = None
            with trio.move_on_at(machine.next_deadline):
                response = await responses.receive()
            now = trio.current_time()
            actions = machine.receive(response, now) if response is not None else []
            actions += machine.timer_fired(now)
            await _perform(transport, destination, actions)
            if machine.final is not None:
                return machine.final  # Timer K's absorbing is the transport's stray drop
            if any(isinstance(action, TimedOut) for action in actions):
                return None
    return machine.final


async def send_non_invite_authenticated(
    transport: SipTransport,
    build: Callable[[], SipRequest],
    destination: Address,
    credentials: tuple[str, str] | None,
    log: logging.Logger | None = None,
) -> SipResponse | None:
    """``send_non_invite`` for ``build()``'s request; a 401/407 answer is met by a new request
    from ``build`` (new branch, next CSeq: RFC 3261 §22.2) with digest credentials, once per
    round, until the server accepts them or refuses them again (``DigestSession``). Without
    credentials the 401/407 is returned as it came."""
    request = build()
    session = DigestSession(*credentials) if credentials is not None else None
    while True:
        response = await send_non_invite(transport, request, destination)
        if response is None or response.status not in CHALLENGE_HEADERS or session is None:
            return response
        challenge_header, _ = CHALLENGE_HEADERS[response.status]
        headers = session.respond(
            response.status,
            response.headers.get_all(challenge_header),
            method=request.method,
            uri=request.uri,
            body=request.body,
        )
        if headers is None:
            if log is not None:
                log.warning(
                    "call %s: %s answered %d: %s",
                    request.call_id,
                    request.method,
                    response.status,
                    session.problem,
                )
            return response
        request = build()
        for name, value in headers:
            request.headers.add(name, value)


class InviteTimeout(Exception):
    """Timer B fired: no final answer to the INVITE (``heard`` says whether any response
    came)."""

    def __init__(self, heard: bool) -> None:
        super().__init__("no response to INVITE" if not heard else "no final response to INVITE")
        self.heard = heard


class InviteClient:
    """The trio driver of one ``InviteClientTransaction`` for ``OutgoingCall``.

    ``start`` registers for responses and sends; ``next_response`` retransmits
    on the machine's timers while it waits and returns each response the
    machine passes up (it has already ACKed a non-2xx final); ``close`` stops
    receiving. A final non-2xx's retransmissions are ACKed for as long as the
    caller keeps calling ``next_response`` (or ``linger``).
    """

    def __init__(self, transport: SipTransport, request: SipRequest, destination: Address) -> None:
        branch = request.top_via.branch
        if branch is None:
            raise ValueError("request has no Via branch")
        self.request = request
        self.destination = destination
        self.machine = InviteClientTransaction(request, reliable=_reliable(transport))
        self._started = False
        self._transport = transport
        self._branch = branch
        self._inbox: ResponseInbox | None = None
        self._pending: list[SipResponse] = []

    @property
    def sent(self) -> bool:
        """True once the INVITE went out (a CANCEL may then follow a provisional)."""
        return self._started

    async def start(self) -> None:
        """Register for the responses and send the INVITE."""
        self._inbox = self._transport.open_inbox(self._branch, "INVITE")
        self._started = True  # from here on it may have gone out: a CANCEL may be due
        await _send_first(self._transport, self.request, self.destination)
        # built again: the transport may have rewritten the top Via (a large INVITE by TCP)
        self.machine = InviteClientTransaction(
            self.request, reliable=_reliable(self._transport, self.request)
        )
        self.machine.start(trio.current_time())  # its first Transmit is what was just sent
        self._started = True

    async def next_response(self) -> SipResponse:
        """The next response the machine passes up; raises ``InviteTimeout`` on Timer B and
        ``trio.EndOfChannel`` once the transaction is over (Timer D/M) with nothing more."""
        assert self._inbox is not None, "start() first"
        while not self._pending:
            if self.machine.terminated:
                raise trio.EndOfChannel
            response = None
            with trio.move_on_at(self.machine.next_deadline):
                response = await self._inbox.responses.receive()
            now = trio.current_time()
            actions = self.machine.receive(response, now) if response is not None else []
            actions += self.machine.timer_fired(now)
            for message in await _perform(self._transport, self.destination, actions):
                assert isinstance(message, SipResponse)
                self._pending.append(message)
            if any(isinstance(action, TimedOut) for action in actions):
                raise InviteTimeout(self.machine.heard)
        return self._pending.pop(0)

    async def linger(self) -> None:
        """Keep ACKing retransmitted non-2xx finals until Timer D ends the transaction."""
        try:
            while True:
                await self.next_response()
        except (trio.EndOfChannel, InviteTimeout):
            return

    def close(self) -> None:
        """Stop receiving responses for this transaction."""
        if self._inbox is not None:
            self._inbox.close()
