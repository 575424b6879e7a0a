"""One inbound call on a SIP trunk, ringing until the core answers or rejects it.

``SipIncomingCall`` is the ``waihu.api.IncomingCall`` the trunk hands the core
for a new INVITE to one of its numbers. It is the INVITE server transaction
(RFC 3261 §17.2.1) and the UAS side of the dialog it creates:

- the trunk has already sent 100 Trying; ``ring`` sends 180 Ringing, and a
  retransmitted INVITE is answered with the last provisional again;
- ``answer`` sends 200 OK with our SDP answer (the offer's first codec that
  the trunk's ``codecs`` lists, telephone-event echoed with the offer's
  payload type), Contact and the INVITE's Record-Route, retransmits it on T1
  doubling to T2 until the ACK comes (§13.3.1.4) and returns the leg; no
  ACK within 64·T1 is ``CallFailed(408)`` and the call is hung up with BYE.
  An INVITE without SDP (late offer, §13.2.1) gets our offer in the 200 and
  its ACK must carry the answer: one we cannot use is ``CallFailed(488)``
  and the call is hung up;
- ``reject`` sends a final non-2xx, retransmitted the same way (Timer G)
  until its ACK, which is absorbed (§17.2.1);
- a CANCEL before the final answer is answered 200, the INVITE 487, and
  ``cancelled`` is set (§9.2); after it, ``answer`` raises ``CallFailed(487)``.

The offer is read once, when the INVITE arrives (``read_offer``), so the
trunk can answer 488 itself to an offer without a codec of ours, before the
core hears of the call.

Error handling: a send that fails is logged by the transport, as UDP loss
would be, and the retransmission timer covers it; an ACK that never comes
is logged. Nothing here raises into the trunk's receive loop: the trunk
calls only the synchronous ``handle_*`` methods from it.

What it is not: deciding whether to take a call (the trunk checks the
number, the core picks the script and the line), the answered call itself
(``leg``), or the transport.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import attrs
import trio

from waihu.api import CallFailed, Codec
from waihu_sip.address import NameAddress, SipUri
from waihu_sip.dialog import Dialog
from waihu_sip.errors import SdpError, SipParseError
from waihu_sip.identity import LocalIdentity
from waihu_sip.leg import SessionState, SipCallLeg, Spawn
from waihu_sip.media_socket import MediaSocket
from waihu_sip.message import SipRequest, SipResponse, make_response
from waihu_sip.sdp import (
    KNOWN_CODECS,
    SessionDescription,
    answer_direction,
    choose_codec,
    parse_sdp,
)
from waihu_sip.session_timer import DEFAULT_MIN_SE, Reject, SessionTimerError, answer_request
from waihu_sip.timers import T1, T2, TIMER_H
from waihu_sip.transport import Address, SipTransport, new_token

__all__ = ["Offer", "SipIncomingCall", "read_offer", "usable_sdp"]

CANCELLED_STATUS = 487  # Request Terminated: the INVITE's answer once the caller cancelled
UNUSABLE_ANSWER_STATUS = 488  # what answer() raises when a late offer's answer is unusable
NO_ACK_STATUS = 408  # what answer() raises when our 200 is never ACKed
# Our dialog's first CSeq: any number works (§12.1.1); 1 keeps traces readable.
FIRST_LOCAL_CSEQ = 1

# Builds the media of an answered call: the RTP socket and the SDP session state;
# raises OSError when no RTP port can be bound.
MediaFactory = Callable[[], tuple[MediaSocket, SessionState]]


@attrs.frozen
class Offer:
    """What an INVITE's SDP offers that we can use: the codec, DTMF and where to send."""

    sdp: SessionDescription
    codec: Codec
    dtmf_payload_type: int | None

    @property
    def remote(self) -> Address:
        """The far end's RTP address as offered (IPv4 literal, checked by ``read_offer``)."""
        return self.sdp.host, self.sdp.port


def read_offer(invite: SipRequest, codecs: list[str]) -> Offer | str | None:
    """The usable offer in ``invite``; None when it has no SDP (a late offer: we offer in
    our 200); one line saying why it is unusable otherwise (answer 488)."""
    if not invite.body:
        return None
    return usable_sdp(invite.body, codecs)


def usable_sdp(body: bytes, codecs: list[str]) -> Offer | str:
    """What we can use of an SDP offer (or a late offer's answer in an ACK): the first of its
    formats among ``codecs``, its telephone-event and address; else one line saying why not."""
    if not body:
        return "there is no SDP"
    try:
        sdp = parse_sdp(body)
    except SdpError as exc:
        return f"its SDP is malformed ({exc})"
    codec = choose_codec(sdp, codecs)
    if codec is None:
        formats = list(sdp.formats)
        return f"no codec of ours ({', '.join(codecs)}) among the offered formats {formats}"
    if not _is_ipv4(sdp.host):
        return f"media address {sdp.host} is not an IPv4 address"
    return Offer(sdp=sdp, codec=codec, dtmf_payload_type=sdp.telephone_event_pt)


class SipIncomingCall:
    """An INVITE for one of our numbers: ring, then answer or reject (``IncomingCall``)."""

    def __init__(
        self,
        *,
        invite: SipRequest,
        source: Address,
        offer: Offer | None,
        codecs: list[str],
        number: str,
        trunk: str,
        transport: SipTransport,
        identity: LocalIdentity,
        make_media: MediaFactory,
        make_leg: Callable[[Dialog, MediaSocket, Codec, int | None, SessionState], SipCallLeg],
        spawn: Spawn,
        on_done: Callable[[SipIncomingCall], None],
        log: logging.Logger,
        session_expires: int = 0,
        min_se: int = DEFAULT_MIN_SE,
    ) -> None:
        self.call_id = invite.call_id
        self.number = number
        self.caller = invite.from_.uri.user or ""
        self.trunk = trunk
        self.cancelled = trio.Event()
        self.invite = invite
        self._source = source
        self._offer = offer  # None: a late offer
        self._codecs = codecs
        self._session_expires = session_expires  # RFC 4028: 0 = no session timer
        self._min_se = min_se
        self._transport = transport
        self._identity = identity
        self._make_media = make_media
        self._make_leg = make_leg
        self._spawn = spawn
        self._on_done = on_done
        self._log = log
        self._tag = new_token()
        self._provisional: SipResponse | None = None  # the last 1xx, for retransmitted INVITEs
        self._final: SipResponse | None = None
        self._acked = trio.Event()
        self._ack: SipRequest | None = None
        self._done_called = False

    def __repr__(self) -> str:
        return f"<SipIncomingCall {self.call_id} {self.caller!r} → {self.number!r}>"

    @property
    def answered(self) -> bool:
        """True once a final answer (2xx or not) went out."""
        return self._final is not None

    # ─────────────── the core's side ───────────────

    async def ring(self) -> None:
        """Send 180 Ringing (the trunk does, once the core has the call)."""
        if self._final is None:
            self._provisional = self._response(180)
            await self._transport.send(self._provisional, self._source)

    async def answer(self) -> SipCallLeg:
        """200 OK with our SDP answer; the leg once the ACK came.

        ``CallFailed(487)`` when the caller cancelled first, ``CallFailed(408)``
        when the 200 is never ACKed (the call is then hung up), and a
        ``CallFailed(500)`` when no RTP port can be bound (the caller gets 500).
        """
        if self.cancelled.is_set() or self._final is not None:
            raise CallFailed(CANCELLED_STATUS, "Request Terminated")
        try:
            timer = answer_request(
                self.invite.headers, min_se=self._min_se, enabled=self._session_expires > 0
            )
        except SessionTimerError as exc:
            self._log.warning("call %s: bad session timer in the INVITE: %s", self.call_id, exc)
            await self.reject(400, "Bad Session-Expires")
            raise CallFailed(400, "Bad Request") from None
        if isinstance(timer, Reject):  # RFC 4028 §8.1: too short an interval for us
            await self._send_final(self._response(422, extra=[("Min-SE", str(timer.min_se))]))
            raise CallFailed(422, "Session Interval Too Small")
        try:
            media, session = self._make_media()
        except OSError as exc:
            self._log.warning("call %s: no RTP port to answer with: %s", self.call_id, exc)
            await self.reject(500, "No Media Port")
            raise CallFailed(500, "Server Internal Error") from None
        offer = self._offer
        if offer is not None:
            codec, dtmf = offer.codec, offer.dtmf_payload_type
            body = session.describe(codec, dtmf, answer_direction(offer.sdp.direction))
            media.set_remote(offer.remote)
        else:  # late offer: ours goes in the 200, the ACK answers it
            body = session.offer(self._codecs)
            codec, dtmf = KNOWN_CODECS[self._codecs[0]], None  # until the ACK says
        extra = [("Contact", self._identity.contact), ("Allow", self._identity.allow)]
        extra += [("Record-Route", v) for v in self.invite.headers.get_all("Record-Route")]
        extra += timer.headers  # Session-Expires with its refresher, Require: timer (§9)
        extra.append(("Content-Type", "application/sdp"))
        ok = self._response(200, extra=extra, body=body)
        # the leg exists before the 200 leaves: a BYE may overtake the ACK (§15)
        leg = self._make_leg(self._dialog(), media, codec, dtmf, session)
        leg.agree_session_timer(timer.agreement)
        await self._send_final(ok)
        with trio.move_on_after(TIMER_H):
            await self._wait_ack_or_end(leg)
        if not self._acked.is_set() and not leg.ended.is_set():
            self._log.warning("call %s: our 200 was never ACKed; hanging up", self.call_id)
            self._spawn(leg.hangup)  # the BYE's own transaction need not hold up the caller
            raise CallFailed(NO_ACK_STATUS, "Request Timeout")
        if offer is None and self._ack is not None:
            offer = usable_sdp(self._ack.body, self._codecs)
            if isinstance(offer, str):
                self._log.warning(
                    "call %s: the ACK's SDP answer: %s; hanging up", self.call_id, offer
                )
                self._spawn(leg.hangup)
                raise CallFailed(UNUSABLE_ANSWER_STATUS, "Not Acceptable Here")
            leg.codec, leg.dtmf_payload_type = offer.codec, offer.dtmf_payload_type
            media.set_remote(offer.remote)
        self._log.info(
            "call %s from %r answered: %s, media %s",
            self.call_id,
            self.caller,
            leg.codec.name,
            leg.remote_rtp,
        )
        return leg

    async def reject(self, status: int = 480, reason: str | None = None) -> None:
        """Refuse the call with a final non-2xx; nothing happens once it was answered."""
        if not 300 <= status <= 699:
            raise ValueError(f"a rejection is a status 300–699, not {status}")
        if self._final is not None:
            return
        self._log.info("call %s from %r: rejected %d", self.call_id, self.caller, status)
        await self._send_final(self._response(status, reason))

    # ─────────────── the trunk's side (from its receive loop) ───────────────

    def handle_invite_retransmission(self) -> SipResponse | None:
        """What to send again for a retransmitted INVITE: the last provisional, or None.

        A final answer is resent by the transport from its cache.
        """
        if self._final is None:
            return self._provisional or make_response(self.invite, 100)
        return None

    def handle_cancel(self, cancel: SipRequest) -> SipResponse:
        """The answer to a CANCEL of this INVITE (§9.2): 200, and 487 to the INVITE if it is
        still unanswered; a CANCEL for another transaction of the same Call-ID gets 481."""
        if cancel.top_via.branch != self.invite.top_via.branch:
            return make_response(cancel, 481)
        if self._final is None:
            self._log.info("call %s from %r: cancelled by the caller", self.call_id, self.caller)
            self.cancelled.set()
            terminated = self._response(CANCELLED_STATUS)
            self._final = terminated  # claimed now: answer() and reject() see it at once
            self._spawn(lambda: self._send_final(terminated, claimed=True))
        return make_response(cancel, 200, to_tag=self._tag)

    def handle_ack(self, ack: SipRequest) -> bool:
        """True when ``ack`` acknowledges our final answer (and it is absorbed here)."""
        if self._final is None or ack.cseq.number != self.invite.cseq.number:
            return False
        if ack.to.tag not in (None, self._tag):
            return False
        self._ack = ack
        self._acked.set()
        return True

    # ─────────────── helpers ───────────────

    def _response(
        self,
        status: int,
        reason: str | None = None,
        *,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SipResponse:
        tag = None if status == 100 else self._tag  # 100 is hop-by-hop and carries no tag
        response = make_response(
            self.invite, status, reason, to_tag=tag, extra=extra or (), body=body
        )
        response.headers.add("Server", self._identity.user_agent)
        return response

    def _dialog(self) -> Dialog:
        """The dialog as the UAS sees it (§12.1.1): route set in Record-Route order."""
        invite = self.invite
        target: SipUri = invite.from_.uri  # no usable Contact: the caller's address of record
        contacts = invite.headers.get_all("Contact")
        if contacts:
            try:
                target = NameAddress.parse(contacts[0]).uri
            except SipParseError:
                self._log.warning("call %s: unreadable Contact %r", self.call_id, contacts[0])
        routes = [NameAddress.parse(v) for v in invite.headers.get_all("Record-Route")]
        return Dialog(
            call_id=self.call_id,
            local=invite.to.with_tag(self._tag),
            remote=invite.from_,
            remote_target=target,
            route_set=routes,
            local_cseq=FIRST_LOCAL_CSEQ,
            remote_cseq=invite.cseq.number,
        )

    async def _send_final(self, response: SipResponse, *, claimed: bool = False) -> None:
        """Send a final answer once and retransmit it until the ACK (T1 doubling to T2, for
        64·T1): §13.3.1.4 for a 2xx, Timer G for the others."""
        if self._final is not None and not claimed:
            return
        self._final = response
        try:
            await self._transport.respond(self.invite, response, self._source)
            self._spawn(lambda: self._retransmit(response))
        except BaseException:
            self._finished()  # nothing will retransmit or wait for an ACK
            raise

    async def _retransmit(self, response: SipResponse) -> None:
        try:
            data = response.to_bytes()
            interval = T1
            with trio.move_on_after(TIMER_H) as timer_h:
                while True:
                    with trio.move_on_after(interval):
                        await self._acked.wait()
                        return
                    await self._transport.send_bytes(data, self._source)
                    interval = min(interval * 2, T2)
            if timer_h.cancelled_caught:
                self._log.warning(
                    "call %s: no ACK for our %d within %g s",
                    self.call_id,
                    response.status,
                    TIMER_H,
                )
        except Exception:
            self._log.exception("call %s: resending our %d failed", self.call_id, response.status)
        finally:
            self._finished()

    async def _wait_ack_or_end(self, leg: SipCallLeg) -> None:
        async with trio.open_nursery() as nursery:

            async def first(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, self._acked)
            nursery.start_soon(first, leg.ended)

    def _finished(self) -> None:
        """The final answer was ACKed (or never will be): the trunk forgets the transaction,
        and what follows goes to the leg."""
        if not self._done_called:
            self._done_called = True
            self._on_done(self)


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True
