"""One answered SIP call: the ``waihu.api.CallLeg`` the core talks to.

The leg owns the call's dialog and RTP socket. It sends and receives RTP
datagrams, hangs up with BYE, and answers the far end's in-dialog requests:
BYE (the callee hung up), re-INVITE and UPDATE (session refreshes, hold; the
codec of the call never changes), OPTIONS.

Error handling: a BYE that gets no answer within 32 s, or a re-INVITE whose
200 is never ACKed, is logged; the call is over either way. A BYE answered
401/407 is sent again with the trunk's digest credentials. Background work
(BYE and 2xx retransmission) runs in the trunk's nursery, so cancelling the
caller of ``hangup`` does not cut a BYE short, and errors there are logged,
never raised into the trunk.

Not for: RTP packetising, codecs or pacing (the core's media layer), DTMF
sending and transfer (not in this release: they raise NotImplementedError).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from waihu.api import Codec, HangupSide
from waihu_sip.dialog import Dialog
from waihu_sip.errors import SdpError
from waihu_sip.identity import LocalIdentity
from waihu_sip.media_socket import MediaSocket
from waihu_sip.message import SipRequest, SipResponse, make_response
from waihu_sip.sdp import (
    SessionDescription,
    answer_direction,
    build_offer,
    build_sdp,
    parse_sdp,
)
from waihu_sip.transaction import (
    InviteServerTransaction,
    TimedOut,
    Transmit,
    send_non_invite_authenticated,
)
from waihu_sip.transport import Address, SipTransport

__all__ = ["SessionState", "SipCallLeg"]

Spawn = Callable[[Callable[[], Awaitable[None]]], None]
UNSPECIFIED_HOSTS = ("0.0.0.0", "::")  # RFC 2543-style hold: "send nothing"


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
        self._credentials = credentials  # the trunk's digest user/password: a BYE may be challenged
        self.answer = answer  # the 2xx that answered our INVITE (Session-Expires, Supported)

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
        """Send one RTP datagram to the far end without blocking (dropped if it cannot go)."""
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
        """Not in this release: raises NotImplementedError."""
        raise NotImplementedError("waihu_sip does not send DTMF (RFC 4733) in this release")

    async def transfer(self, target: str) -> None:
        """Not in this release: raises NotImplementedError."""
        raise NotImplementedError("waihu_sip does not transfer calls (REFER) in this release")

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
            return make_response(request, 200, extra=[("Allow", self._identity.allow)])
        return make_response(request, 501)

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

    def _update_session(self, request: SipRequest, source: Address) -> SipResponse:
        """re-INVITE or UPDATE: keep the codec, follow a new media address or direction."""
        if self.ended.is_set():
            return make_response(request, 481)
        direction = "sendrecv"
        dtmf = self.dtmf_payload_type
        if request.body:
            try:
                offer = parse_sdp(request.body)
            except SdpError as exc:
                self._log.warning("call %s: bad SDP in %s: %s", self.call_id, request.method, exc)
                return make_response(request, 488)
            if offer.port == 0 or not self._offers_our_codec(offer):
                return make_response(request, 488)
            self._apply_remote_sdp(offer)
            direction = answer_direction(offer.direction)
            dtmf = self.dtmf_payload_type = offer.telephone_event_pt
        elif request.method == "UPDATE":
            return make_response(request, 200, extra=[("Contact", self._identity.contact)])
        body = self._session.describe(self.codec, dtmf, direction)
        response = make_response(
            request,
            200,
            extra=[
                ("Contact", self._identity.contact),
                ("Allow", self._identity.allow),
                ("Content-Type", "application/sdp"),
            ],
            body=body,
        )
        if request.method == "INVITE":
            acked = trio.Event()
            self._awaiting_ack[request.cseq.number] = acked
            self._spawn(lambda: self._retransmit_until_ack(request, response, acked, source))
        return response

    def _offers_our_codec(self, offer: SessionDescription) -> bool:
        for pt in offer.formats:
            encoding = offer.encoding_of(pt)
            if encoding == (self.codec.name, self.codec.clock_rate):
                return True
        return False

    def _apply_remote_sdp(self, sdp: SessionDescription) -> None:
        if sdp.host in UNSPECIFIED_HOSTS or sdp.port == 0:
            return  # old-style hold: keep the address, the far end simply stops listening
        try:
            ipaddress.IPv4Address(sdp.host)  # names in c= are not resolved mid-call
        except ValueError:
            self._log.warning("call %s: ignored non-IPv4 media address %s", self.call_id, sdp.host)
            return
        self._media.set_remote((sdp.host, sdp.port))

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
