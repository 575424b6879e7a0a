"""One answered SIP call: the ``waihu.api.CallLeg`` the core talks to.

The leg owns the call's dialog and RTP socket. It sends and receives RTP
datagrams, hangs up with BYE, and answers the far end's in-dialog requests:

- BYE (the callee hung up);
- re-INVITE and UPDATE (RFC 3264 offer/answer): hold and unhold (sendonly,
  inactive or c=0.0.0.0: we stop sending until the far end takes the call
  back), a new media address, a session refresh with or without SDP, an
  offerless re-INVITE (we offer in the 200, the answer comes in the ACK);
  491 while our own refresh is out (glare); an offer of another of the
  trunk's codecs at the same clock rate switches the call to it (the core
  follows ``codec`` from its next frame); an offer of nothing usable is 488;
- RFC 4028 session timers (``session_timer``): as refresher we UPDATE (or
  re-INVITE) at half the interval; otherwise a missing refresh ends the call
  with BYE; a too-short interval is answered 422;
- INFO carrying DTMF (``info_dtmf``): digits queued for ``receive_dtmf``;
- NOTIFY of our REFER (``refer``), and OPTIONS.

It also sends DTMF as INFO (``send_dtmf``) and transfers the call blind with
REFER (``transfer``).

Error handling: a BYE that gets no answer within 32 s, or a re-INVITE whose
200 is never ACKed, is logged; the call is over either way. Background work
(BYE and 2xx retransmission, the session timer) runs in the trunk's nursery,
so cancelling the caller of ``hangup`` does not cut a BYE short, and errors
there are logged, never raised into the trunk. A request we cannot use gets
the status that says why (400, 415, 422, 481, 488, 489, 491) and a log line;
the call goes on. A BYE answered 401/407 is sent again with the trunk's
digest credentials.

The leg tells its media socket which payload types were negotiated (only
those are received) and runs the socket's RTCP reports in the trunk's
nursery; ``media_quality`` gives their figures.

Not for: RTP packetising, codecs or pacing, RFC 4733 telephone-events (the
core's media layer), attended transfer, bridged transfer (the core).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from waihu.api import BadTarget, Codec, HangupSide, MediaQuality, TransferResult, TrunkError
from waihu_sip.address import SipUri, format_host_port
from waihu_sip.dialog import Dialog
from waihu_sip.errors import SdpError
from waihu_sip.identity import LocalIdentity
from waihu_sip.info_dtmf import (
    ACCEPTED_TYPES,
    DTMF_DIGITS,
    DTMF_RELAY,
    BadDtmfBody,
    UnsupportedInfo,
    read_digits,
    relay_body,
)
from waihu_sip.media_socket import MediaSocket
from waihu_sip.message import Headers, SipRequest, SipResponse, make_response
from waihu_sip.refer import (
    BYE_GRACE,
    NOTIFY_TIMEOUT,
    SETTLE_TIMEOUT,
    BadNotify,
    ReferWatch,
    Settled,
    outcome_of_refer_response,
    refer_headers,
)
from waihu_sip.sdp import (
    SessionDescription,
    answer_direction,
    build_offer,
    build_sdp,
    choose_codec,
    parse_sdp,
)
from waihu_sip.session_timer import (
    DEFAULT_MIN_SE,
    TIMER_OPTION,
    Agreement,
    Reject,
    SessionTimer,
    SessionTimerError,
    answer_request,
    from_answer,
    parse_min_se,
)
from waihu_sip.target import check_target, request_uri
from waihu_sip.timers import T1, TIMER_B
from waihu_sip.transaction import (
    InviteServerTransaction,
    TimedOut,
    Transmit,
    send_non_invite_authenticated,
)
from waihu_sip.transport import Address, SipTransport, new_branch

__all__ = ["SessionState", "SipCallLeg"]

Spawn = Callable[[Callable[[], Awaitable[None]]], None]
UNSPECIFIED_HOSTS = ("0.0.0.0", "::")  # RFC 2543-style hold: "send nothing"
DTMF_QUEUE = 64  # INFO digits held for receive_dtmf; more unread than this are dropped, logged
DTMF_DURATION_MS = 160  # each key press we send by INFO, and the gap before the next one
REFRESH_ATTEMPTS = 3  # a session refresh met with 422 or 491 is tried again this many times
REFRESH_FATAL = frozenset({408, 481})  # RFC 4028 §10: the session is gone, send BYE
GLARE_WAIT = (2.1, 4.0)  # RFC 3261 §14.1: seconds the Call-ID's owner waits after a 491
OFFER_RETRY_AFTER = (0, 10)  # RFC 3261 §14.2: Retry-After seconds, chosen at random


@attrs.define
class SessionState:
    """What we last told the far end in SDP, so a repeated answer keeps its version."""

    host: str  # our RTP address as advertised
    port: int
    session_id: int
    version: int
    last_body: bytes = b""

    def offer(self, codecs: list[str]) -> bytes:
        """Our first offer (the named codecs plus telephone-event), kept as the last body sent."""
        self.last_body = build_offer(
            host=self.host,
            port=self.port,
            codecs=codecs,
            session_id=self.session_id,
            version=self.version,
        )
        return self.last_body

    def describe(self, codec: Codec, dtmf_payload_type: int | None, direction: str) -> bytes:
        """An SDP body for the current session; the version goes up only when it changed."""

        def build() -> bytes:
            return build_sdp(
                host=self.host,
                port=self.port,
                codecs=[codec],
                dtmf_payload_type=dtmf_payload_type,
                session_id=self.session_id,
                version=self.version,
                direction=direction,
            )

        body = build()
        if self.last_body and body != self.last_body:
            self.version += 1
            body = build()
        self.last_body = body
        return body


class SipCallLeg:
    """An answered call on a SIP trunk (``waihu.api.CallLeg``).

    ``remote_rtp`` is the far end's media address (after symmetric-RTP
    latching, where its packets really come from).
    """

    def __init__(
        self,
        *,
        transport: SipTransport,
        identity: LocalIdentity,
        dialog: Dialog,
        media: MediaSocket,
        codec: Codec,
        dtmf_payload_type: int | None,
        session: SessionState,
        spawn: Spawn,
        on_gone: Callable[[SipCallLeg], None],
        log: logging.Logger,
        codecs: Sequence[str] = ("PCMU", "PCMA"),
        session_expires: int = 0,
        min_se: int = DEFAULT_MIN_SE,
        credentials: tuple[str, str] | None = None,
        answer: SipResponse | None = None,
    ) -> None:
        self.call_id = dialog.call_id
        self.codec = codec
        self.dtmf_payload_type = dtmf_payload_type
        self.ended = trio.Event()
        self.ended_by: HangupSide | None = None
        self.dialog = dialog
        self._transport = transport
        self._identity = identity
        self._media = media
        self._session = session
        self._spawn = spawn
        self._on_gone = on_gone
        self._log = log
        self._bye_done: trio.Event | None = None  # set once our BYE transaction is over
        self._bye_sent = False
        self._awaiting_ack: dict[int, trio.Event] = {}  # CSeq of a re-INVITE we answered 2xx
        # offer/answer: what we last said, and whether the far end takes our media now
        self._our_direction = "sendrecv"
        self._sending = True
        self._offer_pending = False  # our re-INVITE is out: a far-end offer now is glare
        self._remote_allow: frozenset[str] = frozenset()  # the far end's Allow, once seen
        self._offered_in_2xx: set[int] = set()  # CSeq of an offerless re-INVITE we offered to
        # RFC 4028 session timer: 0 = we ask for none and ignore what is offered
        self._session_expires = session_expires
        self._codecs = tuple(codecs)  # the trunk's: what a far end may switch the call to
        self._min_se = min_se
        self._session_timer: SessionTimer | None = None
        self._timer_changed = trio.Event()
        self._timer_running = False
        # DTMF received in INFO, and sent
        self._dtmf_queue, self._dtmf_received = trio.open_memory_channel[str](DTMF_QUEUE)
        self._dtmf_lock = trio.Lock()
        # blind transfer: the NOTIFYs of our latest REFER
        self._refer_watch: ReferWatch | None = None
        self._transfer_active = False
        self._request_seen = trio.Event()  # set on every far-end request: a transfer waits on it
        self._credentials = credentials  # the trunk's digest user/password: a BYE may be challenged
        self.answer = answer  # the 2xx that answered our INVITE (Session-Expires, Supported)
        self._accept_payload_types()
        if media.rtcp_enabled:
            try:
                spawn(media.run_rtcp)
            except RuntimeError:  # the trunk is stopping: the call goes without reports
                pass

    @property
    def dtmf_payload_type(self) -> int | None:
        """The telephone-event payload type both ends agreed on, or None."""
        return self._dtmf_payload_type

    @dtmf_payload_type.setter
    def dtmf_payload_type(self, value: int | None) -> None:
        # a re-INVITE may change it: the media socket must then let the new type through
        self._dtmf_payload_type = value
        if hasattr(self, "_media"):
            self._accept_payload_types()

    def _accept_payload_types(self) -> None:
        """Tell the media socket which payload types the far end may send: ours, negotiated."""
        types = [self.codec.payload_type]
        if self._dtmf_payload_type is not None:
            types.append(self._dtmf_payload_type)
        self._media.set_payload_types(types, self.codec.clock_rate)

    def media_quality(self) -> MediaQuality | None:
        """Loss, jitter and round trip of the call's media so far (RTP counts and RTCP reports;
        the round trip and remote figures stay None without RTCP from the far end)."""
        return self._media.quality()

    def __repr__(self) -> str:
        return f"<SipCallLeg {self.call_id} {self.codec.name} ended_by={self.ended_by}>"

    @property
    def remote_rtp(self) -> Address | None:
        """The far end's RTP address."""
        return self._media.remote

    @property
    def local_rtp(self) -> Address:
        """Our RTP socket's bound address."""
        return self._media.local_address

    # ─────────────── media ───────────────

    def send_media(self, datagram: bytes) -> None:
        """Send one RTP datagram to the far end without blocking (dropped if it cannot go, or
        while the far end holds the call: it said it receives nothing)."""
        if self._sending:
            self._media.send(datagram)

    async def receive_media(self) -> bytes:
        """The next RTP datagram from the far end's media host.

        Once the call has ended no datagram will come: this waits until the
        caller is cancelled (watch ``ended`` to stop).
        """
        try:
            return await self._media.receive()
        except trio.ClosedResourceError:
            await trio.sleep_forever()
            raise AssertionError("unreachable") from None

    async def send_dtmf(self, digits: str) -> None:
        """Send ``digits`` as SIP INFO, one ``application/dtmf-relay`` request per digit.

        The core calls this only when the far end negotiated no RFC 4733
        telephone-event (it sends those in RTP itself). Digits go one at a
        time, each after the previous one was answered and its key press
        would have ended. Raises ValueError for a character that is no DTMF
        key (before anything is sent), ``TrunkError`` when the call has ended,
        an INFO gets no answer or the far end refuses it (405, 415, 501…).
        """
        bad = [d for d in digits if d.upper() not in DTMF_DIGITS or len(d) != 1]
        if bad or not digits:
            raise ValueError(f"{digits!r} is not a string of DTMF digits (0-9, *, #, A-D)")
        async with self._dtmf_lock:
            for index, digit in enumerate(digits):
                if index:
                    await trio.sleep(DTMF_DURATION_MS / 1000)  # one key press after the other
                if self.ended.is_set():
                    raise TrunkError(f"call {self.call_id} has ended; DTMF {digit!r} not sent")
                body = relay_body(digit, DTMF_DURATION_MS)
                response = await self._send_in_dialog(
                    "INFO", extra=[("Content-Type", DTMF_RELAY)], body=body
                )
                if response is None:
                    raise TrunkError(f"call {self.call_id}: no answer to DTMF INFO {digit!r}")
                if not response.success:
                    raise TrunkError(
                        f"call {self.call_id}: far end refused DTMF INFO: "
                        f"{response.status} {response.reason}"
                    )

    async def receive_dtmf(self) -> str:
        """The next digit the far end signalled in SIP INFO (``waihu.api.leg_dtmf``).

        Digits that came before the call ended are still handed out; after
        that this waits until the caller is cancelled.
        """
        return await self._dtmf_received.receive()

    async def transfer(self, target: str) -> TransferResult:
        """Blind transfer with REFER (RFC 3515), followed to its outcome.

        ``target`` is a number (sent as ``sip:number@`` the domain this call
        was dialled in) or a SIP URI. The far end calls it and reports in
        NOTIFY sipfrags (``waihu_sip.refer`` reads them): on ``transferred``
        we BYE our leg unless the far end leaves within ``BYE_GRACE`` seconds;
        on ``agent_busy``, ``no_answer`` or ``failed`` (REFER refused or
        unanswered, no NOTIFY within ``NOTIFY_TIMEOUT`` s, no final status
        within ``SETTLE_TIMEOUT`` s, a bad sipfrag, the far end hanging up
        first) the call stays ours. Never raises for the far end's doing.
        """
        started = time.time()

        def result(settled: Settled) -> TransferResult:
            level = logging.INFO if settled.outcome == "transferred" else logging.WARNING
            self._log.log(
                level,
                "call %s: transfer to %s: %s, %s",
                self.call_id,
                target,
                settled.outcome,
                settled.detail,
            )
            return TransferResult(
                target=target,
                mode="refer",
                outcome=settled.outcome,
                status=settled.status,
                detail=settled.detail,
                started_at=started,
                ended_at=time.time(),
            )

        if self.ended.is_set():
            return result(Settled("failed", None, "the call had already ended"))
        if self._transfer_active:
            return result(Settled("failed", None, "another transfer is under way"))
        try:
            refer_to = self._refer_uri(target)
        except BadTarget as exc:
            return result(Settled("failed", None, f"bad target: {exc}"))
        self._transfer_active = True
        watch = self._refer_watch = ReferWatch()
        try:
            response = await self._send_in_dialog(
                "REFER", extra=refer_headers(str(refer_to), self.dialog.local)
            )
            refused = outcome_of_refer_response(
                None if response is None else response.status,
                "" if response is None else response.reason,
            )
            if refused is not None:
                return result(refused)
            settled = await self._follow_notifies(watch)
            if settled.outcome == "transferred":
                with trio.move_on_after(BYE_GRACE):
                    await self.ended.wait()
                if not self.ended.is_set():
                    await self.hangup()
            return result(settled)
        except OSError as exc:
            return result(Settled("failed", None, f"cannot send REFER: {exc}"))
        finally:
            self._transfer_active = False

    async def _follow_notifies(self, watch: ReferWatch) -> Settled:
        """Wait for the NOTIFYs of an accepted REFER until its outcome is known."""
        give_up_at = trio.current_time() + SETTLE_TIMEOUT
        while watch.settled is None:
            if self.ended.is_set():
                last = watch.last_status
                return Settled(
                    "failed",
                    last,
                    f"the far end hung up before the transfer completed "
                    f"(last status {last or 'none'})",
                )
            changed = self._request_seen = trio.Event()
            silent_until = min(trio.current_time() + NOTIFY_TIMEOUT, give_up_at)
            with trio.move_on_at(silent_until):
                await changed.wait()
                continue
            if trio.current_time() >= give_up_at:
                return Settled(
                    "failed", watch.last_status, f"no final NOTIFY within {SETTLE_TIMEOUT:g} s"
                )
            return Settled("failed", watch.last_status, f"no NOTIFY within {NOTIFY_TIMEOUT:g} s")
        return watch.settled

    def _refer_uri(self, target: str) -> SipUri:
        """``target`` as a URI: a number goes to the domain this call was dialled in."""
        domain = self.dialog.remote.uri
        return request_uri(check_target(target), format_host_port(domain.host, domain.port))

    # ─────────────── ending ───────────────

    async def hangup(self) -> None:
        """End the call with BYE and wait for the far end's answer (up to 32 s); idempotent.

        ``ended`` is set and the media released at once; the BYE transaction
        itself runs in the trunk's nursery and completes even if this caller
        is cancelled.
        """
        if self._bye_done is None:
            self._bye_done = trio.Event()
            if self.ended.is_set():
                self._bye_done.set()  # the far end hung up first: nothing to send
            else:
                self.ended_by = "robot"
                self._finish()
                try:
                    self._spawn(self._send_bye)
                except RuntimeError:  # the trunk has stopped: nothing can be sent any more
                    self._on_gone(self)
                    self._bye_done.set()
        await self._bye_done.wait()

    async def _send_bye(self) -> None:
        assert self._bye_done is not None
        try:
            destination = await self._bye_destination()
            self._bye_sent = True  # the transaction's first send happens before it can block
            response = await send_non_invite_authenticated(
                self._transport,
                lambda: self.dialog.new_request(self._identity, "BYE"),
                destination,
                self._credentials,
                self._log,
            )
            if response is None:
                self._log.warning("call %s: no answer to BYE within 32 s", self.call_id)
            elif not response.success:
                self._log.info(
                    "call %s: BYE answered %d %s", self.call_id, response.status, response.reason
                )
        except OSError as exc:
            self._log.warning("call %s: cannot send BYE: %s", self.call_id, exc)
        except Exception:
            self._log.exception("call %s: BYE failed", self.call_id)
        finally:
            self._on_gone(self)
            self._bye_done.set()

    async def _bye(self) -> tuple[SipRequest, Address]:
        destination = await self._bye_destination()
        return self.dialog.new_request(self._identity, "BYE"), destination

    async def _bye_destination(self) -> Address:
        return await self._transport.resolve(*self.dialog.next_hop().transport_address())

    def _finish(self) -> None:
        self._media.close()
        self.ended.set()

    async def release(self) -> None:
        """End the call without waiting, for a trunk that is stopping: one BYE datagram, no
        retransmission, unless the far end hung up or our BYE already went out."""
        try:
            if self.ended_by == "callee" or self._bye_sent:
                return
            self.ended_by = "robot"
            self._finish()
            self._bye_sent = True
            bye, destination = await self._bye()
            await self._transport.send(bye, destination)
        except OSError as exc:
            self._log.warning("call %s: cannot send BYE: %s", self.call_id, exc)
        finally:
            self._on_gone(self)
            if self._bye_done is None:
                self._bye_done = trio.Event()
            self._bye_done.set()

    # ─────────────── requests from the far end ───────────────

    async def handle_request(self, request: SipRequest, source: Address) -> SipResponse:
        """The answer to an in-dialog request (not ACK) from the far end."""
        if not self.dialog.accept_remote_cseq(request):
            return make_response(request, 500, "CSeq Out Of Order")
        self._request_seen.set()  # wakes a transfer waiting for a NOTIFY or the far end's BYE
        self._note_allow(request.headers)
        self.dialog.refresh_target(request)  # §12.2: a re-INVITE/UPDATE's Contact is the target
        if request.method == "BYE":
            if not self.ended.is_set():
                self._log.info("call %s: far end hung up", self.call_id)
                self.ended_by = "callee"
                self._finish()
                self._on_gone(self)
            return make_response(request, 200)
        if request.method in ("INVITE", "UPDATE"):
            return self._update_session(request, source)
        if request.method == "OPTIONS":
            return make_response(request, 200, extra=self._capabilities())
        if request.method == "INFO":
            return self._receive_info(request)
        if request.method == "NOTIFY":
            return self._receive_notify(request)
        return make_response(request, 501, extra=[("Allow", self._identity.allow)])

    def handle_ack(self, request: SipRequest) -> None:
        """An ACK for the 2xx we sent to a re-INVITE; its body may answer our offer."""
        event = self._awaiting_ack.pop(request.cseq.number, None)
        if event is not None:
            event.set()
        if request.body:
            try:
                self._apply_remote_sdp(parse_sdp(request.body))
            except SdpError as exc:
                self._log.warning("call %s: ignored bad SDP in ACK: %s", self.call_id, exc)

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", self._identity.allow),
            ("Accept", ", ".join(("application/sdp", *ACCEPTED_TYPES))),
            ("Supported", TIMER_OPTION),
        ]

    def _note_allow(self, headers: Headers) -> None:
        """Remember the far end's Allow list (a refresh uses UPDATE only when it is there)."""
        allow = headers.get_all("Allow")
        if allow:
            self._remote_allow = frozenset(method.strip().upper() for method in allow)

    def _update_session(self, request: SipRequest, source: Address) -> SipResponse:
        """re-INVITE or UPDATE: hold/unhold, a new media address, a session refresh.

        An offer is answered per RFC 3264 §6 (its direction mirrored: we stop
        sending while held); an offer without our codec but with another of the
        trunk's codecs at the same rate switches to it; nothing usable is 488. A re-INVITE
        without SDP gets our current description as an offer (the answer
        comes in the ACK), an UPDATE without SDP a plain 200. 491 while our
        own offer is out (glare, §14.1), 422 for a session interval below our
        ``min_se`` (RFC 4028 §9).
        """
        if self.ended.is_set():
            return make_response(request, 481)
        if self._offer_pending and (request.method == "INVITE" or request.body):
            return make_response(request, 491)
        if (request.method == "INVITE" or request.body) and any(
            cseq in self._awaiting_ack for cseq in self._offered_in_2xx
        ):
            # our offer in a 2xx still waits for its answer in the ACK (RFC 3261 §14.2)
            retry = str(random.randint(*OFFER_RETRY_AFTER))
            return make_response(request, 500, extra=[("Retry-After", retry)])
        try:
            decision = answer_request(
                request.headers, min_se=self._min_se, enabled=self._session_expires > 0
            )
        except SessionTimerError as exc:
            self._log.warning("call %s: %s in %s", self.call_id, exc, request.method)
            return make_response(request, 400, str(exc)[:100])
        if isinstance(decision, Reject):
            return make_response(request, 422, extra=[("Min-SE", str(decision.min_se))])
        body = b""
        if request.body:
            try:
                offer = parse_sdp(request.body)
            except SdpError as exc:
                self._log.warning("call %s: bad SDP in %s: %s", self.call_id, request.method, exc)
                return make_response(request, 488)
            switch = None if self._offers_our_codec(offer) else self._codec_to_switch_to(offer)
            if offer.port == 0 or (switch is None and not self._offers_our_codec(offer)):
                self._log.info(
                    "call %s: refused %s offering %s (the call's codec is %s)",
                    self.call_id,
                    request.method,
                    _encodings(offer),
                    self.codec.name,
                )
                return make_response(request, 488)
            if switch is not None:
                # the core follows leg.codec from its next frame (same clock rate: G.711)
                self._log.info(
                    "call %s: codec %s → %s at the far end's %s",
                    self.call_id, self.codec.name, switch.name, request.method,
                )  # fmt: skip
                self.codec = switch
            self._apply_remote_sdp(offer)
            self._our_direction = answer_direction(_effective_direction(offer))
            self.dtmf_payload_type = offer.telephone_event_pt
            body = self._describe()
        elif request.method == "INVITE":
            body = self._describe()  # an offer: the answer comes in the ACK (§14.2)
            self._offered_in_2xx = {request.cseq.number}
        self._session_agreed(decision.agreement)
        extra = [("Contact", self._identity.contact), *self._capabilities(), *decision.headers]
        if body:
            extra.append(("Content-Type", "application/sdp"))
        response = make_response(request, 200, extra=extra, body=body)
        if request.method == "INVITE":
            acked = trio.Event()
            self._awaiting_ack[request.cseq.number] = acked
            self._spawn(lambda: self._retransmit_until_ack(request, response, acked, source))
        return response

    def _describe(self) -> bytes:
        """Our current session description (its version goes up only when it changed)."""
        return self._session.describe(self.codec, self.dtmf_payload_type, self._our_direction)

    def _codec_to_switch_to(self, offer: SessionDescription) -> Codec | None:
        """Another of the trunk's codecs the offer names, at the call's clock rate, or None."""
        codec = choose_codec(offer, list(self._codecs))
        if codec is None or codec.clock_rate != self.codec.clock_rate:
            return None
        return codec

    def _offers_our_codec(self, offer: SessionDescription) -> bool:
        for pt in offer.formats:
            encoding = offer.encoding_of(pt)
            if encoding == (self.codec.name, self.codec.clock_rate):
                return True
        return False

    def _apply_remote_sdp(self, sdp: SessionDescription) -> None:
        """Follow the far end's SDP (an offer, or the answer in an ACK): where to send our
        RTP, and whether to send at all (it said it receives: sendrecv/recvonly, §6.1)."""
        self._sending = _effective_direction(sdp) in ("sendrecv", "recvonly")
        if sdp.host in UNSPECIFIED_HOSTS or sdp.port == 0:
            return  # old-style hold: keep the address, the far end simply stops listening
        try:
            ipaddress.IPv4Address(sdp.host)  # names in c= are not resolved mid-call
        except ValueError:
            self._log.warning("call %s: ignored non-IPv4 media address %s", self.call_id, sdp.host)
            return
        self._media.set_remote((sdp.host, sdp.port))

    def _receive_info(self, request: SipRequest) -> SipResponse:
        """SIP INFO: a DTMF digit is queued for ``receive_dtmf``; other bodies get 415."""
        try:
            digits = read_digits(request.headers.get("Content-Type"), request.body)
        except UnsupportedInfo as exc:
            self._log.info("call %s: %s", self.call_id, exc)
            return make_response(request, 415, extra=[("Accept", ", ".join(ACCEPTED_TYPES))])
        except BadDtmfBody as exc:
            self._log.warning("call %s: bad DTMF INFO: %s", self.call_id, exc)
            return make_response(request, 400, "Bad DTMF Body")
        for digit in digits:
            try:
                self._dtmf_queue.send_nowait(digit)
            except trio.WouldBlock:
                self._log.warning(
                    "call %s: DTMF %r dropped: %d digits wait unread",
                    self.call_id,
                    digit,
                    DTMF_QUEUE,
                )
        return make_response(request, 200)

    def _receive_notify(self, request: SipRequest) -> SipResponse:
        """A NOTIFY of our REFER's subscription (RFC 3515); 481 when we sent no REFER."""
        watch = self._refer_watch
        if watch is None:
            return make_response(request, 481, "Subscription Does Not Exist")
        try:
            status = watch.notify(request.headers, request.body)
        except BadNotify as exc:
            self._log.info("call %s: %s", self.call_id, exc)
            return make_response(request, 489, "Bad Event")
        return make_response(request, status)

    # ─────────────── requests we send in the dialog ───────────────

    async def _send_in_dialog(
        self, method: str, *, extra: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> SipResponse | None:
        """One non-INVITE request in the dialog (INFO, REFER, UPDATE); its final response, or
        None when none came within 32 s; a 401/407 is answered with the trunk's credentials.
        OSError when the next hop does not resolve."""
        destination = await self._transport.resolve(*self.dialog.next_hop().transport_address())
        # a challenged request goes again with the trunk's credentials (new branch and CSeq)
        return await send_non_invite_authenticated(
            self._transport,
            lambda: self._in_dialog_request(method, extra=extra, body=body),
            destination,
            self._credentials,
            self._log,
        )

    def _in_dialog_request(
        self, method: str, *, extra: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> SipRequest:
        headers = [
            ("User-Agent", self._identity.user_agent),
            ("Contact", self._identity.contact),
            *(extra or []),
        ]
        return self.dialog.request(
            method, via=self._identity.via(new_branch()), extra=headers, body=body
        )

    async def _send_reinvite(self, extra: list[tuple[str, str]], body: bytes) -> SipResponse | None:
        """A re-INVITE client transaction (RFC 3261 §17.1.1): retransmitted on Timer A until a
        response, the 2xx ACKed on a new branch, a non-2xx ACKed on the INVITE's. None on Timer
        B."""
        invite = self._in_dialog_request(
            "INVITE", extra=[*extra, ("Content-Type", "application/sdp")], body=body
        )
        branch = invite.top_via.branch or ""
        destination = await self._transport.resolve(*self.dialog.next_hop().transport_address())
        with self._transport.client_transaction(branch, "INVITE") as responses:
            data = await self._transport.send(invite, destination)
            give_up_at = trio.current_time() + TIMER_B
            interval, retransmit_at = T1, trio.current_time() + T1
            while True:
                response = None
                with trio.move_on_at(min(retransmit_at, give_up_at)):
                    response = await responses.receive()
                if response is None:
                    if trio.current_time() >= give_up_at:
                        return None
                    await self._transport.send_bytes(data, destination)
                    interval *= 2  # Timer A doubles without a cap
                    retransmit_at = trio.current_time() + interval
                    continue
                if response.provisional:
                    retransmit_at = math.inf  # §17.1.1.2: proceeding, no more retransmissions
                    continue
                break
        if response.success:
            ack = self.dialog.request(
                "ACK", via=self._identity.via(new_branch()), cseq=invite.cseq.number
            )
        else:  # §17.1.1.3: same branch, the response's To
            ack = self.dialog.request(
                "ACK", via=invite.headers.get_all("Via")[0], cseq=invite.cseq.number
            )
            ack.headers.set("To", response.headers.get("To") or "")
        ack_bytes = await self._transport.send(ack, destination)
        self._transport.remember_ack(branch, ack_bytes, destination)
        return response

    # ─────────────── session timer (RFC 4028) ───────────────

    def follow_answer(self, answer: SipResponse) -> None:
        """Read the 2xx that answered our INVITE: the far end's Allow and its Session-Expires.

        Called by the trunk once the leg is made. A bad Session-Expires is
        logged and ignored (no timer: the call goes on, as without one).
        """
        self._note_allow(answer.headers)
        if self._session_expires == 0:
            return
        try:
            agreement = from_answer(answer.headers)
        except SessionTimerError as exc:
            self._log.warning("call %s: no session timer: %s in the 2xx", self.call_id, exc)
            return
        self._session_agreed(agreement)

    def agree_session_timer(self, agreement: Agreement | None) -> None:
        """Start the session timer agreed while the call was set up elsewhere: for a call we
        answered, what ``session_timer.answer_request`` said about the far end's INVITE (None:
        no timer). Ignored when the trunk's ``session_expires`` is 0."""
        if self._session_expires:
            self._session_agreed(agreement)

    def _session_agreed(self, agreement: Agreement | None) -> None:
        """A session timer was agreed (or ended): (re)start it, and its task on first use."""
        if agreement is None:
            self._session_timer = None
        elif self._session_timer is None:
            self._session_timer = SessionTimer(agreement, trio.current_time())
        else:
            self._session_timer.refreshed(agreement, trio.current_time())
        if agreement is not None:
            self._log.debug(
                "call %s: session timer %d s, %s refresh",
                self.call_id,
                agreement.interval,
                "we" if agreement.we_refresh else "they",
            )
        self._timer_changed.set()
        if agreement is not None and not self._timer_running:
            self._timer_running = True
            self._spawn(self._run_session_timer)

    async def _run_session_timer(self) -> None:
        """Refresh when we are the refresher; BYE when a refresh is overdue (RFC 4028 §10)."""
        try:
            while not self.ended.is_set():
                timer = self._session_timer
                if timer is None:
                    return  # no timer any more; a new agreement starts this task again
                changed = self._timer_changed = trio.Event()
                with trio.move_on_at(timer.deadline):
                    await changed.wait()
                    continue
                if self.ended.is_set():
                    return
                due = timer.due(trio.current_time())
                if due == "refresh":
                    await self._refresh(timer)
                elif due == "bye":
                    self._log.warning(
                        "call %s: session expired (no refresh within %d s); BYE",
                        self.call_id,
                        timer.agreement.interval,
                    )
                    await self.hangup()
                    return
        except Exception:
            self._log.exception("call %s: session timer failed", self.call_id)
        finally:
            self._timer_running = False

    async def _refresh(self, timer: SessionTimer) -> None:
        """Send one session refresh: UPDATE without SDP when the far end allows it, else a
        re-INVITE with our current SDP (same version). 422 raises our Min-SE and tries again;
        408/481/no answer end the call (§10); 491 waits and tries again (§14.1)."""
        for _attempt in range(REFRESH_ATTEMPTS):
            interval = max(timer.agreement.interval, self._min_se)
            extra = [
                ("Session-Expires", f"{interval};refresher=uac"),
                ("Min-SE", str(self._min_se)),
                ("Supported", TIMER_OPTION),
                ("Allow", self._identity.allow),
            ]
            try:
                if "UPDATE" in self._remote_allow:
                    response = await self._send_in_dialog("UPDATE", extra=extra)
                else:
                    self._offer_pending = True
                    try:
                        response = await self._send_reinvite(extra, self._describe())
                    finally:
                        self._offer_pending = False
            except OSError as exc:
                self._log.warning("call %s: cannot send session refresh: %s", self.call_id, exc)
                response = None
            if self.ended.is_set():
                return
            status = None if response is None else response.status
            if response is None or status in REFRESH_FATAL:
                self._log.warning(
                    "call %s: session refresh %s; BYE",
                    self.call_id,
                    "unanswered" if response is None else status,
                )
                await self.hangup()
                return
            if response.success:
                self._apply_refresh_answer(response)
                return
            if status == 422:
                try:
                    self._min_se = max(
                        self._min_se, parse_min_se(response.headers.get("Min-SE") or "")
                    )
                except SessionTimerError as exc:
                    self._log.warning("call %s: 422 with %s", self.call_id, exc)
                    break
                continue
            if status == 491:
                await trio.sleep(random.uniform(*GLARE_WAIT))
                continue
            self._log.warning(
                "call %s: session refresh refused %d %s", self.call_id, status, response.reason
            )
            break
        timer.refresh_failed()

    def _apply_refresh_answer(self, response: SipResponse) -> None:
        if response.cseq.method == "INVITE" and response.body:
            try:
                answer = parse_sdp(response.body)
            except SdpError as exc:
                self._log.warning("call %s: bad SDP answering our refresh: %s", self.call_id, exc)
            else:
                self._apply_remote_sdp(answer)
        try:
            agreement = from_answer(response.headers)
        except SessionTimerError as exc:
            self._log.warning("call %s: %s answering our refresh", self.call_id, exc)
            agreement = None
        self._session_agreed(agreement)

    async def _retransmit_until_ack(
        self, request: SipRequest, response: SipResponse, acked: trio.Event, source: Address
    ) -> None:
        """RFC 3261 §13.3.1.4 / RFC 6026 Accepted: resend our 2xx on T1 doubling to T2 until the
        ACK (``acked``), for 64·T1 — the INVITE server transaction's timers."""
        try:
            machine = InviteServerTransaction(
                request, reliable=bool(getattr(self._transport, "reliable", False))
            )
            machine.send_response(response, trio.current_time())  # sent already by the trunk
            while not machine.terminated and not acked.is_set():
                with trio.move_on_at(machine.next_deadline):
                    await acked.wait()
                if acked.is_set():
                    return
                for action in machine.timer_fired(trio.current_time()):
                    if isinstance(action, Transmit):
                        await self._transport.send_bytes(action.data, source)
                    elif isinstance(action, TimedOut):
                        self._log.warning("call %s: re-INVITE 200 never ACKed", self.call_id)
        except Exception:
            self._log.exception("call %s: retransmitting 200 failed", self.call_id)
        finally:
            self._awaiting_ack.pop(request.cseq.number, None)


def _effective_direction(sdp: SessionDescription) -> str:
    """The direction the far end really means: c=0.0.0.0 (RFC 2543 hold) receives nothing."""
    if sdp.host in UNSPECIFIED_HOSTS:
        return {"sendrecv": "sendonly", "recvonly": "inactive"}.get(sdp.direction, sdp.direction)
    return sdp.direction


def _encodings(sdp: SessionDescription) -> str:
    names = [sdp.encoding_of(pt) for pt in sdp.formats]
    return ", ".join(f"{n[0]}/{n[1]}" for n in names if n is not None) or "no known codec"
