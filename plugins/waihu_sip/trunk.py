"""``SipTrunk``: the ``type = "sip"`` trunk provider — places calls over one SIP/UDP socket.

``run`` binds the signalling socket and serves it until cancelled; ``dial``
places a call and returns the answered ``SipCallLeg``. Requests from the far
end are answered here: in-dialog ones by their leg, OPTIONS with 200, a
request for a dialog we do not know with 481, a method we do not implement
with 501, and a new INVITE (inbound calls are not taken in this release) with
480.

Error handling: a bad target, an unusable answer or a final non-2xx is a
``CallFailed``; no response at all from the proxy, no free RTP port or a
trunk that is not running is a ``TrunkError``. One call's trouble never stops
the trunk: its background work catches and logs its own errors. When the
trunk stops, every live call gets a BYE (best effort, one datagram each).

Not for: message parsing (``message``), the INVITE state machine
(``outgoing``) or the answered call (``leg``).
"""

from __future__ import annotations

import random
import socket
from typing import ClassVar

import trio

from waihu.api import CallFailed, Codec, ProgressCallback, Provider, ProviderContext, TrunkError
from waihu_sip import target as target_syntax
from waihu_sip.address import NameAddress, SipUri, format_host_port
from waihu_sip.config import SipTrunkConfig
from waihu_sip.dialog import Dialog
from waihu_sip.identity import ALLOWED_METHODS, LocalIdentity
from waihu_sip.leg import SessionState, SipCallLeg
from waihu_sip.media_socket import open_media_socket
from waihu_sip.message import SipRequest, SipResponse, make_response
from waihu_sip.outgoing import OutgoingCall
from waihu_sip.transport import Address, SipTransport, new_token

__all__ = ["SipTrunk"]

UNSPECIFIED_IPV4 = "0.0.0.0"
SHUTDOWN_BYE_GRACE = 1.0  # seconds to spend sending BYEs when the trunk stops
SESSION_ID_MAX = 2**62  # o= session ids: random, well inside what peers parse as integers
VISUAL_SEPARATORS = str.maketrans("", "", " -().")  # RFC 3966 §5.1.1, dropped from numbers
# RFC 3261 §25.1 user characters we accept as typed; '#' is allowed and sent escaped (%23)
_USER_CHARS = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+*#%-_.!~'&=$,?/"
)


class SipTrunk(Provider):
    """A SIP trunk over UDP: dial numbers or SIP URIs through the configured proxy.

    After ``run`` has started, ``local_address`` is the bound (host, port) of
    the signalling socket.
    """

    type_name: ClassVar[str] = "sip"
    Config: ClassVar[type] = SipTrunkConfig

    def __init__(self, config: SipTrunkConfig, context: ProviderContext) -> None:
        super().__init__(config, context)
        self.config: SipTrunkConfig = config
        self.log = context.log
        self.local_address: Address | None = None
        self._transport: SipTransport | None = None
        self._identity: LocalIdentity | None = None
        self._nursery: trio.Nursery | None = None
        self._legs: dict[str, SipCallLeg] = {}

    # ─────────────── lifetime ───────────────

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the signalling socket, serve it, and call ``task_status.started()``; run until
        cancelled. Raises ``TrunkError`` when the socket cannot be bound."""
        cfg = self.config
        transport = SipTransport(host=cfg.local_host, port=cfg.local_port, log=self.log)
        try:
            await transport.open()
            proxy = await transport.resolve(*cfg.proxy_host_port)
        except OSError as exc:
            transport.close()
            raise TrunkError(
                f"cannot start SIP trunk on {cfg.local_host}:{cfg.local_port} "
                f"(proxy {cfg.proxy}): {exc}"
            ) from None
        self._transport = transport
        self.local_address = transport.local_address
        advertised = cfg.public_host or cfg.local_host
        if advertised == UNSPECIFIED_IPV4:
            advertised = _route_source(proxy)
        self._identity = LocalIdentity(
            host=advertised,
            port=self.local_address[1],
            user=cfg.from_user,
            user_agent=cfg.user_agent,
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(transport.serve, self._on_request)
                self.log.info(
                    "SIP trunk on %s:%d (advertised %s), proxy %s",
                    *self.local_address,
                    self._identity.hostport,
                    cfg.proxy,
                )
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_BYE_GRACE):
                for leg in list(self._legs.values()):
                    await leg.release()
            transport.close()
            self._transport = None

    # ─────────────── placing calls ───────────────

    async def dial(
        self,
        target: str,
        *,
        caller_id: str | None = None,
        ring_timeout: float = 60.0,
        on_progress: ProgressCallback | None = None,
    ) -> SipCallLeg:
        """Call ``target`` — a number/user (``"1001"``, sent as ``sip:1001@domain``) or a SIP URI
        — through the proxy and return the answered leg.

        ``caller_id`` becomes the user part of From (else ``from_user``).
        Raises ``CallFailed`` for a final non-2xx, a bad target (484) or no
        answer within ``ring_timeout`` seconds (408, the attempt is CANCELled);
        ``TrunkError`` when the proxy does not respond at all or the trunk is
        not running. Cancelling the caller abandons the attempt cleanly.
        """
        if not ring_timeout > 0:
            raise ValueError(f"ring_timeout must be positive, not {ring_timeout}")
        nursery, transport, identity = self._nursery, self._transport, self._identity
        if nursery is None or transport is None or identity is None:
            raise TrunkError("SIP trunk is not running")
        request_uri = self.target_uri(target)
        from_ = self._from_address(caller_id)
        cfg = self.config
        rtp_host = cfg.rtp_host or cfg.local_host
        try:
            media = open_media_socket(rtp_host, self.log, cfg.rtp_ports)
        except OSError as exc:
            raise TrunkError(f"no RTP port on {rtp_host}: {exc}") from None
        sdp_host = cfg.public_host or (identity.host if rtp_host == UNSPECIFIED_IPV4 else rtp_host)
        session = SessionState(
            host=sdp_host,
            port=media.local_address[1],
            session_id=random.randrange(1, SESSION_ID_MAX),
            version=1,
        )
        offer = session.offer(cfg.codecs)
        credentials = (cfg.username, cfg.password) if cfg.username and cfg.password else None

        def make_leg(dialog: Dialog, codec: Codec, dtmf: int | None, remote: Address) -> SipCallLeg:
            media.set_remote(remote)
            leg = SipCallLeg(
                transport=transport,
                identity=identity,
                dialog=dialog,
                media=media,
                codec=codec,
                dtmf_payload_type=dtmf,
                session=session,
                spawn=self._spawn,
                on_gone=self._forget,
                log=self.log,
            )
            self._legs[dialog.call_id] = leg
            return leg

        try:
            destination = await transport.resolve(*cfg.proxy_host_port)
            call = OutgoingCall(
                transport=transport,
                identity=identity,
                destination=destination,
                request_uri=request_uri,
                from_=from_,
                offer=offer,
                codecs=cfg.codecs,
                credentials=credentials,
                ring_timeout=ring_timeout,
                on_progress=on_progress,
                make_leg=make_leg,
                log=self.log,
            )
        except OSError as exc:
            media.close()
            raise TrunkError(f"cannot resolve proxy {cfg.proxy}: {exc}") from None
        self.log.info("call %s: dialling %s", call.call_id, request_uri)
        try:
            nursery.start_soon(call.run)
            await call.done.wait()
            leg = call.claim()
        except BaseException:
            # failed or cancelled: the call's background work finishes any CANCEL or BYE
            call.abandon(self._spawn)
            media.close()
            raise
        return leg

    def check_target(self, target: str) -> str:
        """``target`` as it will be dialled (a number or a SIP URI), or ``BadTarget``.

        What is accepted, and how it is written, is ``waihu_sip.target``'s: the
        core calls this before it issues a call id; ``dial`` applies the same
        check through ``target_uri``.
        """
        return target_syntax.check_target(target)

    def target_uri(self, target: str) -> SipUri:
        """The Request-URI for ``target``; raises ``CallFailed(484)`` when it is not dialable,
        caused by the ``BadTarget`` that says why."""
        try:
            return target_syntax.request_uri(self.check_target(target), self._domain())
        except target_syntax.BadTarget as exc:
            self.log.warning("cannot dial %r: %s", target, exc)
            raise CallFailed(484, "Address Incomplete") from exc

    def _domain(self) -> str:
        if self.config.domain:
            return self.config.domain
        host, port = self.config.proxy_host_port
        return format_host_port(host, None if port == 5060 else port)

    def _from_address(self, caller_id: str | None) -> NameAddress:
        user = (caller_id or self.config.from_user).translate(VISUAL_SEPARATORS)
        if not user or not set(user) <= _USER_CHARS:
            # our own configuration, not the callee's number, is at fault
            raise TrunkError(f"caller ID {caller_id!r} cannot be written in a SIP From")
        host = self.config.domain or self.config.proxy_host_port[0]
        return NameAddress(uri=SipUri(host=host, user=user), display=self.config.display_name)

    def _spawn(self, fn: object) -> None:
        if self._nursery is None:
            raise RuntimeError("trunk is not running")
        self._nursery.start_soon(fn)  # type: ignore[arg-type]

    def _forget(self, leg: SipCallLeg) -> None:
        if self._legs.get(leg.call_id) is leg:
            del self._legs[leg.call_id]

    # ─────────────── requests from the far end ───────────────

    async def _on_request(self, request: SipRequest, source: Address) -> None:
        transport = self._transport
        identity = self._identity
        assert transport is not None and identity is not None
        leg = self._legs.get(request.call_id)
        if request.method == "ACK":
            if leg is not None and leg.dialog.matches(request):
                leg.handle_ack(request)
            return  # an ACK is never answered
        response: SipResponse
        if request.method not in ALLOWED_METHODS:
            response = make_response(request, 501, extra=[("Allow", identity.allow)])
        elif request.method == "OPTIONS" and request.to.tag is None:
            response = make_response(
                request,
                200,
                to_tag=new_token(),
                extra=[("Allow", identity.allow), ("Accept", "application/sdp")],
            )
        elif request.method == "CANCEL":
            response = make_response(request, 481)  # we never have an INVITE pending to cancel
        elif request.to.tag is None:
            if request.method == "INVITE":
                self.log.info(
                    "refused inbound call %s from %s", request.call_id, request.headers.get("From")
                )
                response = make_response(request, 480, to_tag=new_token())
            else:
                response = make_response(request, 481, to_tag=new_token())
        elif leg is None or not leg.dialog.matches(request):
            self.log.info(
                "%s for unknown dialog %s from %s:%d", request.method, request.call_id, *source
            )
            response = make_response(request, 481)
        else:
            response = await leg.handle_request(request, source)
        response.headers.add("Server", identity.user_agent)
        await transport.respond(request, response, source)


def _route_source(destination: Address) -> str:
    """The local address the kernel would send from toward ``destination`` (no packet sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(destination)
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
