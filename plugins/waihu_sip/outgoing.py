"""Placing one call: the transaction user of our INVITE client transactions.

``OutgoingCall.run`` runs in the trunk's nursery and carries a call from the
first INVITE to a result that ``dial`` picks up. Retransmission, ACKing a
non-2xx final and Timer B are the ``transaction.InviteClientTransaction``'s;
what this module decides:

- 1xx: progress is reported (100 Trying is hop-by-hop and is not); a 1xx
  with SDP starts **early media** (RFC 3960 practice): the answer picks the
  codec, the media socket sends to and accepts from its address, and
  ``on_early_media`` gets a ``SipEarlyMedia`` reading that socket; a
  reliable 1xx (``Require: 100rel``, RFC 3262) is PRACKed once per RSeq in
  its early dialog;
- 401/407: a new INVITE (CSeq + 1, new branch) with digest credentials, for
  as many rounds as ``DigestSession`` allows (stale nonces, a proxy's 407
  then the callee's 401), until the credentials are refused;
- other non-2xx finals: ``CallFailed(status, reason)``;
- 2xx: each To tag forms its own dialog (forking, §13.2.2.4) and is ACKed
  with the same credentials as the INVITE it answers; the first becomes the
  call; a 2xx whose SDP we cannot use (unparseable, no offered codec, a
  media host that does not resolve) is ACKed, BYEd and fails the call with
  488; every other dialog is ACKed and BYEd; a retransmitted 2xx is ACKed
  again by its own dialog's ACK until Timer M.

Giving up — the ring timeout (``CallFailed(408)``), the caller of ``dial``
being cancelled, or the trunk stopping (``stop``) — sends CANCEL once a
provisional response came (never before, §9.1), lets the transaction ACK the
487, and ACKs and BYEs a 2xx that crossed the CANCEL.

Error handling: anything unexpected is logged with the Call-ID and becomes a
``TrunkError`` for ``dial``; it never escapes into the trunk's nursery. A
callback (progress, early media) that raises is logged and the call goes on.

What it is not: the socket (``transport``), the transaction timers
(``transaction``), the answered call (``leg``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import attrs
import trio

from waihu.api import CallFailed, Codec, EarlyMediaCallback, ProgressCallback, TrunkError
from waihu_sip.address import NameAddress, SipUri
from waihu_sip.dialog import MAX_FORWARDS, Dialog
from waihu_sip.digest import CHALLENGE_HEADERS, DigestSession
from waihu_sip.identity import LocalIdentity
from waihu_sip.leg import SipCallLeg
from waihu_sip.media_socket import MediaSocket
from waihu_sip.message import Headers, SipRequest, SipResponse, split_list_value
from waihu_sip.sdp import SessionDescription, choose_codec, parse_sdp
from waihu_sip.timers import TIMER_B
from waihu_sip.transaction import (
    InviteClient,
    InviteTimeout,
    State,
    send_non_invite,
    send_non_invite_authenticated,
)
from waihu_sip.transport import Address, SipTransport, new_branch, new_token

__all__ = ["Answer", "OutgoingCall", "SipEarlyMedia"]

# Builds the leg for an answered call: (dialog, codec, DTMF payload type, remote RTP address,
# the 2xx that answered — its Session-Expires and Supported are the leg's to read).
LegFactory = Callable[[Dialog, Codec, int | None, Address, SipResponse], SipCallLeg]

AUTH_HEADERS = ("Authorization", "Proxy-Authorization")
RELIABLE_PROVISIONAL = "100rel"  # RFC 3262 option tag
STOP_GRACE = 4.0  # seconds a stopping trunk gives each ringing call to CANCEL and ACK the 487


class Answer:
    """What a 2xx gave us: the leg, ready for ``dial`` to hand out."""

    def __init__(self, leg: SipCallLeg) -> None:
        self.leg = leg


class SipEarlyMedia:
    """``waihu.api.EarlyMedia``: the far end's audio before it answers, read from the call's
    own media socket (the leg goes on with the same socket after a 2xx)."""

    def __init__(self, media: MediaSocket, codec: Codec, dtmf_payload_type: int | None) -> None:
        self.codec = codec
        self.dtmf_payload_type = dtmf_payload_type
        self.ended = trio.Event()
        self._media = media

    async def receive_media(self) -> bytes:
        """The next early RTP datagram; once ``ended`` is set, waits until cancelled (the
        answered leg reads the socket from then on)."""
        datagram: bytes | None = None
        if not self.ended.is_set():
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    nonlocal datagram
                    try:
                        datagram = await self._media.receive()
                    except trio.ClosedResourceError:
                        pass
                    nursery.cancel_scope.cancel()

                async def watch() -> None:
                    await self.ended.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(read)
                nursery.start_soon(watch)
        if datagram is None:
            await trio.sleep_forever()
            raise AssertionError("unreachable")
        return datagram


@attrs.define
class _Fork:
    """One dialog a 2xx formed: its ACK (resent when the 2xx is) and where it goes."""

    dialog: Dialog
    ack: bytes
    next_hop: Address


@attrs.define
class _EarlyDialog:
    """A dialog a tagged 1xx formed, for PRACK: its dialog and the last RSeq acknowledged."""

    dialog: Dialog
    last_rseq: int | None = None


@attrs.define
class _EarlyAnswer:
    """The SDP of a 1xx we applied: codec and media address."""

    sdp: SessionDescription
    codec: Codec
    remote: Address


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
        media: MediaSocket | None = None,
        on_early_media: EarlyMediaCallback | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
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
        self._auth = DigestSession(*credentials) if credentials is not None else None
        self._on_progress = on_progress
        self._make_leg = make_leg
        self._log = log
        self._route = route  # a pre-loaded Route to the outbound proxy (RFC 3261 §8.1.2)
        self._media = media
        self._on_early_media = on_early_media
        self._extra_headers = list(extra_headers)
        self._cseq = 0
        self._attempt_scope = trio.CancelScope(deadline=trio.current_time() + ring_timeout)
        self._result: Answer | CallFailed | TrunkError | None = None
        self._claimed = False
        self._tx: InviteClient | None = None  # the INVITE transaction in progress
        self._heard = False  # any response to any of our INVITEs
        self._forks: dict[str, _Fork] = {}  # To tag → confirmed dialog
        self._early_dialogs: dict[str, _EarlyDialog] = {}  # To tag → early dialog
        self._early_answer: _EarlyAnswer | None = None
        self._early: SipEarlyMedia | None = None
        self._leg: SipCallLeg | None = None
        self._background: trio.Nursery | None = None
        self._stopped_ringing = False  # run was cancelled mid-ring: ``stop`` finishes it
        self._run_over = trio.Event()  # ``run`` has returned (or was never started)

    # ─────────────── used by dial and the trunk ───────────────

    @property
    def ringing(self) -> bool:
        """True while our INVITE awaits its final answer (a CANCEL would apply)."""
        tx = self._tx
        return tx is not None and tx.machine.state in (State.CALLING, State.PROCEEDING)

    @property
    def needs_stop(self) -> bool:
        """True when ``run`` was cancelled while the call rang: the trunk must call ``stop``."""
        return self._stopped_ringing

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

    async def stop(self) -> None:
        """The trunk is stopping: CANCEL a ringing call, ACK its 487, BYE a 2xx that crosses.

        Called by the trunk when it is stopping, inside its shielded, bounded
        shutdown while the transport still receives; waits for the cancelled
        ``run`` to unwind first.
        """
        await self._run_over.wait()
        self._finish(TrunkError("the trunk stopped while the call was being placed"))
        try:
            if self._tx is not None and self._stopped_ringing:
                await self._cancel_and_wait(background=False)
        except Exception:
            self._log.exception("call %s: cancelling at shutdown failed", self.call_id)
        finally:
            self._close_tx()

    # ─────────────── the attempt ───────────────

    async def run(self) -> None:
        """Place the call; sets ``done`` with a result and finishes any CANCEL/ACK/BYE after it."""
        try:
            async with trio.open_nursery() as background:
                self._background = background
                try:
                    with self._attempt_scope:
                        await self._attempt()
                except (CallFailed, TrunkError) as exc:
                    self._finish(exc)
                # outside the attempt's scope: abandoning the dial must not cut these short
                if self._result is None:
                    await self._give_up()
                await self._linger()
        except Exception as exc:
            self._log.exception("call %s: unexpected error placing the call", self.call_id)
            self._finish(TrunkError(f"internal error: {exc!r}"))
        except BaseException:
            # cancelled (alone, or grouped by the background nursery): the trunk is stopping;
            # ``stop`` CANCELs what still rings, within the trunk's shutdown grace
            self._stopped_ringing = self.ringing
            self._finish(TrunkError("the trunk stopped while the call was being placed"))
            raise
        finally:
            self._background = None
            if not self._stopped_ringing:
                self._close_tx()
            self._run_over.set()
            self._finish(TrunkError("the trunk stopped while the call was being placed"))

    def _finish(self, result: Answer | CallFailed | TrunkError) -> None:
        if self._result is None:
            self._result = result
            self.done.set()
        if self._early is not None:
            self._early.ended.set()

    def _close_tx(self) -> None:
        if self._tx is not None:
            self._tx.close()

    async def _attempt(self) -> None:
        await self._start_invite(self._build_invite())
        while True:
            tx = self._tx
            assert tx is not None
            response = await self._next_response(tx)
            if response.provisional:
                await self._on_provisional(response)
                continue
            if response.success:
                await self._on_2xx(response)
                return
            if response.status in CHALLENGE_HEADERS:
                retry = self._answer_challenge(response)
                if retry is not None:
                    self._retire(tx)
                    await self._start_invite(retry)
                    continue
            raise CallFailed(response.status, response.reason)

    async def _next_response(self, tx: InviteClient) -> SipResponse:
        try:
            response = await tx.next_response()
        except InviteTimeout as exc:
            raise TrunkError(
                f"no response from {self._describe_destination()} within {TIMER_B:g} s"
            ) from exc
        except trio.EndOfChannel:
            raise TrunkError("the INVITE transaction ended without an answer") from None
        self._heard = True
        return response

    def _retire(self, tx: InviteClient) -> None:
        """An INVITE we answered a challenge for: its transaction keeps ACKing retransmitted
        401/407s until Timer D, in the background."""
        assert self._background is not None

        async def linger() -> None:
            try:
                await tx.linger()
            finally:
                tx.close()

        self._background.start_soon(linger)

    async def _give_up(self) -> None:
        """Ring timeout or abandoned: report, then CANCEL/ACK/BYE in the background."""
        tx = self._tx
        if tx is not None and tx.machine.final is not None and not tx.machine.final.success:
            # the far end's final answer came just as we gave up: it decides the outcome
            final = tx.machine.final
            self._finish(CallFailed(final.status, final.reason))
            return
        if self._heard:
            self._finish(CallFailed(408, "Request Timeout"))
        else:
            self._finish(TrunkError(f"no response from {self._describe_destination()}"))
        if tx is None or not tx.sent:
            return  # cancelled before the INVITE went out: nothing to undo
        with trio.move_on_after(TIMER_B):
            await self._cancel_and_wait(background=True)

    async def _cancel_and_wait(self, *, background: bool) -> None:
        """CANCEL once the INVITE is proceeding (§9.1), then wait for its final answer: the
        transaction ACKs a 487; a 2xx that crossed the CANCEL is ACKed and BYEd."""
        tx = self._tx
        assert tx is not None
        async with trio.open_nursery() as nursery:
            cancel_sent = False
            while True:
                if tx.machine.state is State.PROCEEDING and not cancel_sent:
                    cancel_sent = True
                    nursery.start_soon(self._send_cancel, tx.request)
                try:
                    response = await tx.next_response()
                except (InviteTimeout, trio.EndOfChannel):
                    break  # never heard anything: nothing to cancel
                if response.provisional:
                    continue
                if response.success:
                    await self._on_2xx(response, hang_up_now=not background)
                break
            nursery.cancel_scope.cancel()

    async def _linger(self) -> None:
        """After the outcome: ACK each retransmitted or forked 2xx until Timer M (and BYE new
        forks); the transaction re-ACKs a retransmitted non-2xx itself until Timer D."""
        tx = self._tx
        if tx is None or not tx.sent:
            return
        while True:
            try:
                response = await tx.next_response()
            except (InviteTimeout, trio.EndOfChannel):
                return
            if response.success:
                await self._on_2xx(response)

    # ─────────────── INVITE requests ───────────────

    def _build_invite(self, credentials: Sequence[tuple[str, str]] = ()) -> SipRequest:
        self._cseq += 1
        headers = Headers(
            [
                ("Via", self._identity.via(new_branch())),
                ("Max-Forwards", str(MAX_FORWARDS)),
                *([("Route", self._route)] if self._route else []),
                ("From", str(self._from)),
                ("To", str(self._to)),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self._cseq} INVITE"),
                ("Contact", self._identity.contact),
                ("User-Agent", self._identity.user_agent),
                ("Allow", self._identity.allow),
                ("Supported", RELIABLE_PROVISIONAL),
                *self._extra_headers,
                *credentials,
                ("Content-Type", "application/sdp"),
            ]
        )
        return SipRequest(
            headers=headers, body=self._offer, method="INVITE", uri=str(self._request_uri)
        )

    def _answer_challenge(self, challenge: SipResponse) -> SipRequest | None:
        """The INVITE that answers a 401/407, or None when we cannot or may not answer it."""
        status = challenge.status
        if self._auth is None:
            self._log.warning(
                "call %s: %d %s but the trunk has no username/password",
                self.call_id,
                status,
                challenge.reason,
            )
            return None
        challenge_header, _ = CHALLENGE_HEADERS[status]
        credentials = self._auth.respond(
            status,
            challenge.headers.get_all(challenge_header),
            method="INVITE",
            uri=str(self._request_uri),
            body=self._offer,
        )
        if credentials is None:
            self._log.warning(
                "call %s: %d %s: %s", self.call_id, status, challenge.reason, self._auth.problem
            )
            return None
        return self._build_invite(credentials)

    async def _start_invite(self, invite: SipRequest) -> None:
        tx = InviteClient(self._transport, invite, self._destination)
        self._tx = tx
        await tx.start()

    # ─────────────── provisional answers ───────────────

    async def _on_provisional(self, response: SipResponse) -> None:
        tx = self._tx
        assert tx is not None
        if response.status == 100:
            return  # hop-by-hop: no dialog, no progress to report
        early = self._early_dialog(tx.request, response)
        if self._is_reliable(response):
            rseq = _rseq(response)
            if early is None or rseq is None:
                self._log.warning(
                    "call %s: reliable %d without To tag or RSeq; not acknowledged",
                    self.call_id,
                    response.status,
                )
            elif early.last_rseq is not None and rseq <= early.last_rseq:
                return  # a retransmission: PRACKed already, and already reported
            else:
                early.last_rseq = rseq
                assert self._background is not None
                self._background.start_soon(self._send_prack, early.dialog, rseq, tx.request)
        self._report_progress(response)
        if response.body and self._early_answer is None:
            await self._start_early_media(response)

    def _early_dialog(self, invite: SipRequest, response: SipResponse) -> _EarlyDialog | None:
        tag = response.to.tag
        if tag is None:
            return None
        early = self._early_dialogs.get(tag)
        if early is None:
            try:
                early = _EarlyDialog(Dialog.from_answer(invite, response))
            except Exception as exc:
                self._log.warning("call %s: unusable %d: %s", self.call_id, response.status, exc)
                return None
            self._early_dialogs[tag] = early
        return early

    @staticmethod
    def _is_reliable(response: SipResponse) -> bool:
        required = [
            tag.strip().lower()
            for value in response.headers.get_all("Require")
            for tag in split_list_value(value)
        ]
        return RELIABLE_PROVISIONAL in required

    async def _send_prack(self, dialog: Dialog, rseq: int, invite: SipRequest) -> None:
        """RFC 3262 §7.2: PRACK in the early dialog, RAck = RSeq, the INVITE's CSeq."""
        try:
            destination = await self._transport.resolve(*dialog.next_hop().transport_address())

            def build() -> SipRequest:
                prack = dialog.new_request(self._identity, "PRACK")
                prack.headers.add("RAck", f"{rseq} {invite.cseq.number} INVITE")
                return prack

            response = await send_non_invite_authenticated(
                self._transport, build, destination, self._credentials, self._log
            )
            if response is None or not response.success:
                self._log.info(
                    "call %s: PRACK got %s",
                    self.call_id,
                    "no answer" if response is None else response.status,
                )
        except OSError as exc:
            self._log.warning("call %s: cannot send PRACK: %s", self.call_id, exc)
        except Exception:
            self._log.exception("call %s: PRACK failed", self.call_id)

    def _report_progress(self, response: SipResponse) -> None:
        if self._on_progress is None:
            return
        try:
            self._on_progress(response.status, response.reason)
        except Exception:
            self._log.exception("call %s: progress callback failed", self.call_id)

    async def _start_early_media(self, response: SipResponse) -> None:
        codec, sdp, remote, problem = await self._read_sdp(response.body)
        if problem is not None or codec is None or sdp is None or remote is None:
            self._log.info(
                "call %s: %d with SDP we cannot use (%s)", self.call_id, response.status, problem
            )
            return
        self._early_answer = _EarlyAnswer(sdp, codec, remote)
        if self._media is None:
            return
        self._media.set_remote(remote)
        self._early = SipEarlyMedia(self._media, codec, sdp.telephone_event_pt)
        self._log.info(
            "call %s: early media (%d), %s from %s:%d",
            self.call_id,
            response.status,
            codec.name,
            *remote,
        )
        if self._on_early_media is not None:
            try:
                self._on_early_media(self._early)
            except Exception:
                self._log.exception("call %s: early media callback failed", self.call_id)

    # ─────────────── 2xx answers ───────────────

    async def _on_2xx(self, response: SipResponse, *, hang_up_now: bool = False) -> None:
        """Each To tag gets its own dialog and ACK (§13.2.2.4). The first, while the attempt is
        on, becomes the call; every other one is BYEd."""
        tx = self._tx
        assert tx is not None
        tag = response.to.tag
        fork = self._forks.get(tag) if tag is not None else None
        if fork is not None:
            await self._transport.send_bytes(fork.ack, fork.next_hop)  # a retransmitted 2xx
            return
        fork = await self._confirm(tx.request, response)
        if fork is None:
            return
        if self._result is not None or self._leg is not None:
            self._log.info("call %s: hanging up extra dialog %s", self.call_id, tag)
            await self._hang_up(fork, now=hang_up_now)
            return
        try:
            self._finish(Answer(await self._build_leg(fork, response)))
        except CallFailed as exc:
            self._finish(exc)
            await self._hang_up(fork, now=hang_up_now)

    async def _confirm(self, invite: SipRequest, response: SipResponse) -> _Fork | None:
        """Form the dialog of a 2xx and ACK it; None (logged) when it cannot be."""
        try:
            dialog = Dialog.from_answer(invite, response)
        except Exception as exc:
            self._log.warning("call %s: unusable 2xx: %s", self.call_id, exc)
            self._finish(TrunkError(f"unusable 2xx answer: {exc}"))
            return None
        early = self._early_dialogs.get(dialog.remote_tag or "")
        if early is not None:
            # CSeq numbers go on from the early dialog's PRACKs
            dialog.local_cseq = max(dialog.local_cseq, early.dialog.local_cseq)
        # §22.1/§17.1.1.3 practice: the ACK carries the answered INVITE's credentials
        credentials = [
            (name, value) for name in AUTH_HEADERS for value in invite.headers.get_all(name)
        ]
        ack = dialog.request(
            "ACK",
            via=self._identity.via(new_branch()),
            cseq=invite.cseq.number,
            extra=[("User-Agent", self._identity.user_agent), *credentials],
        )
        try:
            next_hop = await self._transport.resolve(*dialog.next_hop().transport_address())
        except OSError as exc:
            self._log.warning(
                "call %s: cannot reach %s to ACK: %s", self.call_id, dialog.next_hop(), exc
            )
            self._finish(TrunkError(f"answered, but cannot reach {dialog.next_hop()}: {exc}"))
            return None
        fork = _Fork(dialog, await self._transport.send(ack, next_hop), next_hop)
        if dialog.remote_tag is not None:
            self._forks[dialog.remote_tag] = fork
        return fork

    async def _build_leg(self, fork: _Fork, response: SipResponse) -> SipCallLeg:
        """The leg for the first 2xx; CallFailed(488) when its SDP (or, with none, the early
        answer's) is unusable."""
        if response.body:
            codec, sdp, remote, problem = await self._read_sdp(response.body)
        elif self._early_answer is not None:
            early = self._early_answer
            codec, sdp, remote, problem = early.codec, early.sdp, early.remote, None
        else:
            codec, sdp, remote, problem = None, None, None, "the 2xx has no SDP answer"
        if problem is not None or codec is None or sdp is None or remote is None:
            self._log.warning("call %s: answered but %s; hanging up", self.call_id, problem)
            raise CallFailed(488, "Not Acceptable Here")
        if self._early is not None:
            self._early.ended.set()  # the leg reads the socket from now on
        leg = self._make_leg(fork.dialog, codec, sdp.telephone_event_pt, remote, response)
        self._leg = leg
        self._log.info("call %s answered: %s, media %s:%d", self.call_id, codec.name, *remote)
        return leg

    async def _hang_up(self, fork: _Fork, *, now: bool) -> None:
        """BYE a dialog we will not keep: at once (stopping) or in the background."""

        async def bye() -> None:
            try:
                await send_non_invite_authenticated(
                    self._transport,
                    lambda: fork.dialog.new_request(self._identity, "BYE"),
                    fork.next_hop,
                    self._credentials,
                    self._log,
                )
            except Exception:
                self._log.exception("call %s: BYE failed", self.call_id)

        if now or self._background is None:
            await bye()
        else:
            self._background.start_soon(bye)

    async def _read_sdp(
        self, body: bytes
    ) -> tuple[Codec | None, SessionDescription | None, Address | None, str | None]:
        """(codec, SDP, media address, None) or what makes the SDP unusable. Never raises:
        whatever a peer writes in SDP must end in 488, not an error."""
        try:
            sdp = parse_sdp(body)
        except Exception as exc:
            return None, None, None, f"its SDP is malformed ({exc})"
        try:
            codec = choose_codec(sdp, self._codecs)
        except Exception as exc:
            return None, sdp, None, f"its SDP is unusable ({exc})"
        if codec is None:
            return None, sdp, None, f"no offered codec in the answer (formats {list(sdp.formats)})"
        try:
            remote = await self._transport.resolve(sdp.host, sdp.port)
        except (OSError, ValueError, UnicodeError) as exc:
            return codec, sdp, None, f"cannot resolve media host {sdp.host}: {exc}"
        return codec, sdp, remote, None

    # ─────────────── giving up ───────────────

    async def _send_cancel(self, invite: SipRequest) -> None:
        """CANCEL the INVITE (§9.1): same Request-URI, Call-ID, From, To, CSeq number, Via,
        Route."""
        headers = Headers(
            [
                ("Via", invite.headers.get_all("Via")[0]),
                ("Max-Forwards", str(MAX_FORWARDS)),
                ("From", invite.headers.get("From") or ""),
                ("To", invite.headers.get("To") or ""),
                ("Call-ID", self.call_id),
                ("CSeq", f"{invite.cseq.number} CANCEL"),
                ("User-Agent", self._identity.user_agent),
            ]
        )
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        cancel = SipRequest(headers=headers, body=b"", method="CANCEL", uri=invite.uri)
        response = await send_non_invite(self._transport, cancel, self._destination)
        if response is None or not response.success:
            self._log.info(
                "call %s: CANCEL got %s",
                self.call_id,
                "no answer" if response is None else response.status,
            )

    def _describe_destination(self) -> str:
        return f"{self._destination[0]}:{self._destination[1]}"


def _rseq(response: SipResponse) -> int | None:
    """The RSeq of a reliable provisional (RFC 3262 §7.1: 1 to 2**31 - 1), None if unusable."""
    value = (response.headers.get("RSeq") or "").strip()
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if 0 < number < 2**31 else None
