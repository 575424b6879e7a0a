"""Placing one call: the INVITE client transaction over UDP and what follows it.

``OutgoingCall.run`` runs in the trunk's nursery and carries a call from the
first INVITE to a result that ``dial`` picks up:

- INVITE with our SDP offer to the proxy, retransmitted on Timer A (T1 = 0.5 s,
  doubling) until any response; Timer B (64·T1) with no response at all is a
  ``TrunkError`` (the trunk cannot be reached);
- 1xx: progress is reported (100 Trying is hop-by-hop and is not);
- 401/407: ACK, then one retry with digest credentials (CSeq + 1, new
  branch); a second challenge fails the call;
- other non-2xx finals: ACK on the INVITE's branch (RFC 3261 §17.1.1.3) and
  ``CallFailed(status, reason)``; the ACK is repeated for retransmissions;
- 2xx: the dialog is formed, the SDP answer picks the codec, the ACK goes
  to the Contact (or the first Record-Route) on a new branch and is repeated
  whenever the 2xx is; a 2xx whose SDP we cannot use is ACKed and BYEd and
  fails the call with 488.

Giving up — the ring timeout (``CallFailed(408)``) or the caller of ``dial``
being cancelled — happens in the background: CANCEL once a provisional
response came (never before, §9.1), ACK the 487, and BYE a 2xx that crossed
the CANCEL. It ends after 64·T1 at most.

Error handling: anything unexpected is logged with the Call-ID and becomes a
``TrunkError`` for ``dial``; it never escapes into the trunk's nursery.

Not for: the UDP socket (``transport``), the answered call (``leg``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import trio

from waihu.api import CallFailed, Codec, ProgressCallback, TrunkError
from waihu_sip.address import NameAddress, SipUri
from waihu_sip.dialog import MAX_FORWARDS, Dialog
from waihu_sip.digest import DigestError, authorization_value, choose_challenge
from waihu_sip.errors import SdpError, SipParseError
from waihu_sip.identity import LocalIdentity
from waihu_sip.leg import SipCallLeg
from waihu_sip.message import Headers, SipRequest, SipResponse
from waihu_sip.sdp import SessionDescription, choose_codec, parse_sdp
from waihu_sip.timers import T1, TIMER_B
from waihu_sip.transaction import send_non_invite
from waihu_sip.transport import Address, ResponseInbox, SipTransport, new_branch, new_token

__all__ = ["Answer", "OutgoingCall"]

# Builds the leg for an answered call: (dialog, codec, DTMF payload type, remote RTP address).
LegFactory = Callable[[Dialog, Codec, int | None, Address], SipCallLeg]

CHALLENGES = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}


class Answer:
    """What a 2xx gave us: the leg, ready for ``dial`` to hand out."""

    def __init__(self, leg: SipCallLeg) -> None:
        self.leg = leg


class OutgoingCall:
    """One outgoing call attempt, from INVITE to an answered leg or a failure."""

    def __init__(
        self,
        *,
        transport: SipTransport,
        identity: LocalIdentity,
        destination: Address,
        request_uri: SipUri,
        from_: NameAddress,
        offer: bytes,
        codecs: list[str],
        credentials: tuple[str, str] | None,
        ring_timeout: float,
        on_progress: ProgressCallback | None,
        make_leg: LegFactory,
        log: logging.Logger,
        route: str | None = None,
    ) -> None:
        self.call_id = new_token()
        self.done = trio.Event()
        self._transport = transport
        self._identity = identity
        self._destination = destination
        self._request_uri = request_uri
        self._from = from_.with_tag(new_token())
        self._to = NameAddress(uri=request_uri)
        self._offer = offer
        self._codecs = codecs
        self._credentials = credentials
        self._on_progress = on_progress
        self._make_leg = make_leg
        self._log = log
        self._route = route  # a pre-loaded Route to the outbound proxy (RFC 3261 §8.1.2)
        self._cseq = 0
        self._attempt_scope = trio.CancelScope(deadline=trio.current_time() + ring_timeout)
        self._result: Answer | CallFailed | TrunkError | None = None
        self._claimed = False
        # the INVITE transaction in progress
        self._invite: SipRequest | None = None
        self._invite_bytes = b""
        self._inbox: ResponseInbox | None = None
        self._heard = False  # any response to any of our INVITEs
        self._provisional = False  # a 1xx to the current INVITE: stop retransmitting, may CANCEL
        self._retransmit_at = math.inf
        self._retransmit_interval = T1
        self._timer_b = math.inf
        self._final: SipResponse | None = None  # a non-2xx final to the current INVITE
        self._leg: SipCallLeg | None = None
        self._unusable: tuple[Dialog, Address] | None = None  # answered, but we cannot talk

    # ─────────────── used by dial ───────────────

    def claim(self) -> SipCallLeg:
        """The answered leg, or raise the failure. Call once ``done`` is set."""
        result = self._result
        if isinstance(result, Answer):
            self._claimed = True
            return result.leg
        if result is None:
            raise TrunkError("call attempt ended without a result")
        raise result

    def abandon(self, spawn: Callable[..., None]) -> None:
        """The caller of ``dial`` is gone: stop ringing (CANCEL) or hang up an unclaimed answer."""
        self._attempt_scope.cancel()
        if self.done.is_set() and not self._claimed and self._leg is not None:
            try:
                spawn(self._leg.hangup)
            except RuntimeError:  # the trunk is stopping; it releases every leg itself
                pass

    # ─────────────── the attempt ───────────────

    async def run(self) -> None:
        """Place the call; sets ``done`` with a result and finishes any CANCEL/BYE after it."""
        try:
            try:
                with self._attempt_scope:
                    await self._attempt()
            except (CallFailed, TrunkError) as exc:
                self._finish(exc)
            # outside the attempt's scope: abandoning the dial must not cut these short
            if self._result is None:
                await self._give_up()
            elif self._unusable is not None:
                await self._hang_up_unusable()
        except Exception as exc:
            self._log.exception("call %s: unexpected error placing the call", self.call_id)
            self._finish(TrunkError(f"internal error: {exc!r}"))
        finally:
            if self._inbox is not None:
                self._inbox.close()
            self._finish(TrunkError("the trunk stopped while the call was being placed"))

    def _finish(self, result: Answer | CallFailed | TrunkError) -> None:
        if self._result is None:
            self._result = result
            self.done.set()

    async def _attempt(self) -> None:
        await self._send_invite(self._build_invite())
        authenticated = False
        while True:
            response = await self._next_response()
            if response.provisional:
                self._report_progress(response)
                continue
            if response.success:
                self._finish(await self._accept(response))
                return
            self._final = response
            await self._ack_failure(response)
            if response.status in CHALLENGES and not authenticated:
                authenticated = True
                await self._send_invite(self._build_invite(challenge=response))
                continue
            raise CallFailed(response.status, response.reason)

    async def _give_up(self) -> None:
        """Ring timeout or abandoned: report, then CANCEL/ACK/BYE in the background."""
        if self._final is not None:
            # the far end's final answer came just as we gave up: it decides the outcome
            self._finish(CallFailed(self._final.status, self._final.reason))
            await self._ack_failure(self._final)
            return
        if self._heard:
            self._finish(CallFailed(408, "Request Timeout"))
        else:
            self._finish(TrunkError(f"no response from {self._describe_destination()}"))
        with trio.move_on_after(TIMER_B):
            if self._leg is not None:
                if not self._claimed:
                    await self._leg.hangup()
                return
            if not self._invite_bytes:
                return  # cancelled before the INVITE went out: nothing to undo
            async with trio.open_nursery() as nursery:
                cancel_sent = False
                while True:
                    if self._provisional and not cancel_sent:
                        cancel_sent = True
                        nursery.start_soon(self._send_cancel)
                    try:
                        response = await self._next_response()
                    except TrunkError:
                        return  # never heard anything: nothing to cancel
                    if response.provisional:
                        continue
                    if response.success:
                        try:
                            answer = await self._accept(response)
                        except CallFailed:
                            await self._hang_up_unusable()
                        except TrunkError:
                            pass  # logged by _accept; nothing more can be done
                        else:
                            await answer.leg.hangup()
                    else:
                        await self._ack_failure(response)
                    break
                nursery.cancel_scope.cancel()

    # ─────────────── INVITE transaction ───────────────

    def _build_invite(self, challenge: SipResponse | None = None) -> SipRequest:
        self._cseq += 1
        branch = new_branch()
        headers = Headers(
            [
                ("Via", self._identity.via(branch)),
                ("Max-Forwards", str(MAX_FORWARDS)),
                *([("Route", self._route)] if self._route else []),
                ("From", str(self._from)),
                ("To", str(self._to)),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self._cseq} INVITE"),
                ("Contact", self._identity.contact),
                ("User-Agent", self._identity.user_agent),
                ("Allow", self._identity.allow),
                ("Content-Type", "application/sdp"),
            ]
        )
        invite = SipRequest(
            headers=headers, body=self._offer, method="INVITE", uri=str(self._request_uri)
        )
        if challenge is not None:
            name, value = self._authorization(invite, challenge)
            headers.add(name, value)
        return invite

    def _authorization(self, invite: SipRequest, challenge: SipResponse) -> tuple[str, str]:
        status = challenge.status
        if self._credentials is None:
            self._log.warning(
                "call %s: %d %s but the trunk has no username/password",
                self.call_id,
                status,
                challenge.reason,
            )
            raise CallFailed(status, challenge.reason)
        challenge_header, answer_header = CHALLENGES[status]
        try:
            chosen = choose_challenge(challenge.headers.get_all(challenge_header))
        except DigestError as exc:
            self._log.warning("call %s: cannot answer %d challenge: %s", self.call_id, status, exc)
            raise CallFailed(status, challenge.reason) from None
        username, password = self._credentials
        return answer_header, authorization_value(
            chosen,
            method="INVITE",
            uri=invite.uri,
            username=username,
            password=password,
            body=invite.body,
        )

    async def _send_invite(self, invite: SipRequest) -> None:
        if self._inbox is not None:
            self._inbox.close()
        branch = invite.top_via.branch
        assert branch is not None
        self._inbox = self._transport.open_inbox(branch, "INVITE")
        self._invite = invite
        self._invite_bytes = b""  # set once sent: a cancelled send must not be retransmitted
        self._provisional = False
        self._final = None
        now = trio.current_time()
        self._retransmit_interval = T1
        self._retransmit_at = now + T1
        self._timer_b = now + TIMER_B
        self._invite_bytes = await self._transport.send(invite, self._destination)

    async def _next_response(self) -> SipResponse:
        """The next response to the current INVITE, retransmitting it on Timer A meanwhile.

        Raises ``TrunkError`` when Timer B fires with no response at all.
        """
        assert self._inbox is not None
        while True:
            deadline = math.inf if self._provisional else min(self._retransmit_at, self._timer_b)
            with trio.move_on_at(deadline):
                response = await self._inbox.responses.receive()
                self._heard = True
                if response.provisional:
                    self._provisional = True
                return response
            now = trio.current_time()
            if now >= self._timer_b:
                raise TrunkError(
                    f"no response from {self._describe_destination()} within {TIMER_B:g} s"
                )
            await self._transport.send_bytes(self._invite_bytes, self._destination)
            self._retransmit_interval *= 2  # Timer A doubles without a cap (§17.1.1.2)
            self._retransmit_at = now + self._retransmit_interval

    def _report_progress(self, response: SipResponse) -> None:
        if response.status == 100 or self._on_progress is None:
            return
        try:
            self._on_progress(response.status, response.reason)
        except Exception:
            self._log.exception("call %s: progress callback failed", self.call_id)

    async def _ack_failure(self, response: SipResponse) -> None:
        """ACK a non-2xx final on the INVITE's branch (§17.1.1.3) and keep it for repeats."""
        ack = self._on_invite_transaction("ACK", to=response.headers.get("To") or "")
        await self._send_ack(ack, self._destination)

    def _on_invite_transaction(
        self, method: str, *, to: str | None = None, extra: list[tuple[str, str]] | None = None
    ) -> SipRequest:
        """ACK (non-2xx) or CANCEL: the INVITE's Request-URI, top Via (so its branch), From,
        Call-ID, CSeq number and Route headers; To is the INVITE's unless ``to`` is given."""
        invite = self._invite
        assert invite is not None
        if to is None:
            to = invite.headers.get("To") or ""
        headers = Headers(
            [
                ("Via", invite.headers.get_all("Via")[0]),
                ("Max-Forwards", str(MAX_FORWARDS)),
                ("From", invite.headers.get("From") or ""),
                ("To", to),
                ("Call-ID", self.call_id),
                ("CSeq", f"{invite.cseq.number} {method}"),
                *(extra or []),
            ]
        )
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        return SipRequest(headers=headers, body=b"", method=method, uri=invite.uri)

    async def _send_ack(self, ack: SipRequest, destination: Address) -> None:
        """Send an ACK and have the transport repeat it whenever the INVITE's final comes again."""
        invite = self._invite
        assert invite is not None
        data = await self._transport.send(ack, destination)
        self._transport.remember_ack(invite.top_via.branch or "", data, destination)

    # ─────────────── the answer ───────────────

    async def _accept(self, response: SipResponse) -> Answer:
        """Form the dialog from a 2xx, ACK it and build the leg; CallFailed(488) if unusable."""
        invite = self._invite
        assert invite is not None
        try:
            dialog = Dialog.from_answer(invite, response)
        except SipParseError as exc:
            self._log.warning("call %s: unusable 2xx: %s", self.call_id, exc)
            raise TrunkError(f"unusable 2xx answer: {exc}") from None
        ack = dialog.new_request(self._identity, "ACK", cseq=invite.cseq.number)
        try:
            next_hop = await self._transport.resolve(*dialog.next_hop().transport_address())
        except OSError as exc:
            self._log.warning(
                "call %s: cannot reach %s to ACK: %s", self.call_id, dialog.next_hop(), exc
            )
            raise TrunkError(f"answered, but cannot reach {dialog.next_hop()}: {exc}") from None
        await self._send_ack(ack, next_hop)

        codec, sdp, problem = self._read_answer_sdp(response)
        remote: Address | None = None
        if sdp is not None and problem is None:
            try:
                remote = await self._transport.resolve(sdp.host, sdp.port)
            except OSError as exc:
                problem = f"cannot resolve media host {sdp.host}: {exc}"
        if problem is not None or codec is None or sdp is None or remote is None:
            self._log.warning("call %s: answered but %s; hanging up", self.call_id, problem)
            self._unusable = (dialog, next_hop)
            raise CallFailed(488, "Not Acceptable Here")
        leg = self._make_leg(dialog, codec, sdp.telephone_event_pt, remote)
        self._leg = leg
        self._log.info("call %s answered: %s, media %s:%d", self.call_id, codec.name, *remote)
        return Answer(leg)

    async def _hang_up_unusable(self) -> None:
        """BYE a call that was answered with nothing we can use (run after the result)."""
        assert self._unusable is not None
        dialog, next_hop = self._unusable
        self._unusable = None
        bye = dialog.new_request(self._identity, "BYE")
        await send_non_invite(self._transport, bye, next_hop)

    def _read_answer_sdp(
        self, response: SipResponse
    ) -> tuple[Codec | None, SessionDescription | None, str | None]:
        if not response.body:
            return None, None, "the 2xx has no SDP answer"
        try:
            sdp = parse_sdp(response.body)
        except SdpError as exc:
            return None, None, f"its SDP is malformed ({exc})"
        codec = choose_codec(sdp, self._codecs)
        if codec is None:
            return None, sdp, f"no offered codec in the answer (formats {list(sdp.formats)})"
        return codec, sdp, None

    # ─────────────── giving up ───────────────

    async def _send_cancel(self) -> None:
        """CANCEL the INVITE (§9.1): same Request-URI, Call-ID, From, To, CSeq number, Via."""
        cancel = self._on_invite_transaction(
            "CANCEL", extra=[("User-Agent", self._identity.user_agent)]
        )
        response = await send_non_invite(self._transport, cancel, self._destination)
        if response is None or not response.success:
            self._log.info(
                "call %s: CANCEL got %s",
                self.call_id,
                "no answer" if response is None else response.status,
            )

    def _describe_destination(self) -> str:
        return f"{self._destination[0]}:{self._destination[1]}"
