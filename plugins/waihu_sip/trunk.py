"""``SipTrunk``: the ``type = "sip"`` trunk provider — places calls over one SIP/UDP socket.

``run`` binds the signalling socket and serves it until cancelled, probing
the proxy with OPTIONS (``health``); ``status`` says how the trunk is doing;
``dial`` places a call and returns the answered ``SipCallLeg``. Requests from
the far end are answered here: in-dialog ones by their leg, OPTIONS with 200, a
request for a dialog we do not know with 481, a method we do not implement
with 501, and a new INVITE (inbound calls are not taken in this release) with
480.

Error handling: a bad target, an unusable answer or a final non-2xx is a
``CallFailed``; no response at all from the proxy, no free RTP port or a
trunk that is not running (or is down) is a ``TrunkError``. A proxy that
does not resolve or a socket that cannot be bound does not end ``run``: the
trunk is ``down`` and retries with backoff while the daemon carries on.
One call's trouble never stops the trunk: its background work catches and
logs its own errors. When the trunk stops, every live call gets a BYE (best
effort, one datagram each); every call still ringing is CANCELled and its
487 ACKed, within a few seconds' grace.

Not for: message parsing (``message``), the INVITE state machine
(``outgoing``) or the answered call (``leg``).
"""

from __future__ import annotations

import logging
import random
import socket
import time
from typing import ClassVar

import trio

from waihu.api import (
    CallFailed,
    Codec,
    ConfigProblem,
    EarlyMediaCallback,
    ProgressCallback,
    Provider,
    ProviderContext,
    TrunkError,
    TrunkStatus,
)
from waihu_sip import target as target_syntax
from waihu_sip.address import NameAddress, SipUri, format_host_port
from waihu_sip.config import SipTrunkConfig
from waihu_sip.dialog import Dialog
from waihu_sip.health import (
    Backoff,
    Change,
    ProbeResult,
    TrunkHealth,
    options_request,
    probe_forever,
)
from waihu_sip.identity import ALLOWED_METHODS, LocalIdentity
from waihu_sip.leg import SessionState, SipCallLeg
from waihu_sip.media_socket import open_media_socket
from waihu_sip.message import SipRequest, SipResponse, make_response
from waihu_sip.outgoing import OutgoingCall
from waihu_sip.transaction import send_non_invite
from waihu_sip.transport import Address, SipTransport, new_token

__all__ = ["SipTrunk"]

UNSPECIFIED_IPV4 = "0.0.0.0"
DEFAULT_SIP_PORT = 5060
SHUTDOWN_BYE_GRACE = 1.0  # seconds to spend sending BYEs when the trunk stops
# seconds a stopping trunk gives ringing calls to CANCEL, ACK the 487 and BYE a crossing 2xx
SHUTDOWN_CANCEL_GRACE = 4.0
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
        self._calls: set[OutgoingCall] = set()  # attempts not yet over (ringing or lingering)
        self._health = TrunkHealth(
            probing=config.probe_interval > 0, failures=config.probe_failures, now=time.time()
        )

    # ─────────────── lifetime ───────────────

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bring the trunk up (bind the signalling socket, resolve the proxy), serve it and probe
        the proxy; run until cancelled.

        ``task_status.started()`` comes once the trunk is up, or once its first
        attempt failed: a proxy that does not resolve or a socket that cannot
        be bound leaves the trunk ``down`` (``dial`` fails at once) and is
        retried after ``RETRY_FIRST`` seconds, doubling up to ``RETRY_MAX``,
        until it works. Neither stops the daemon; ``run`` does not raise for them.
        """
        backoff = Backoff()
        started = False
        try:
            while (problem := await self._bring_up()) is not None:
                delay = backoff.next()
                self._note(self._health.down(time.time(), problem, delay))
                if not started:
                    task_status.started()
                    started = True
                await trio.sleep(delay)
            transport, identity = self._transport, self._identity
            assert transport is not None and identity is not None and self.local_address
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                serving = trio.CancelScope(shield=True)  # receives through the shutdown grace
                nursery.start_soon(self._serve, transport, serving)
                self.log.info(
                    "SIP trunk on %s:%d (advertised %s), proxy %s",
                    *self.local_address,
                    identity.hostport,
                    self.config.proxy,
                )
                self._note(self._health.came_up(time.time()))
                if self.config.probe_interval:
                    nursery.start_soon(self._probe_forever)
                if not started:
                    task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_CANCEL_GRACE):
                        await self._stop_calls()
                    serving.cancel()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                with trio.move_on_after(SHUTDOWN_BYE_GRACE):
                    for leg in list(self._legs.values()):
                        await leg.release()
            if self._transport is not None:
                self._transport.close()
            self._transport = None

    async def _serve(self, transport: SipTransport, scope: trio.CancelScope) -> None:
        """The receive loop, in a shielded scope: a stopping trunk still hears the 487s and 200s
        of its CANCELs; ``run`` cancels ``scope`` once its shutdown work is done."""
        with scope:
            await transport.serve(self._on_request)

    async def _stop_calls(self) -> None:
        """CANCEL every call still ringing and wait for its 487 (ACKed) or a crossing 2xx
        (ACKed and BYEd), while the receive loop still runs."""
        calls = list(self._calls)
        self._calls.clear()
        if not calls:
            return
        self.log.info(
            "trunk %s stopping: %d call attempt(s) to finish", self.context.name, len(calls)
        )
        async with trio.open_nursery() as stopping:
            for call in calls:
                stopping.start_soon(call.stop)

    async def _bring_up(self) -> str | None:
        """Bind the socket and resolve the proxy; None when done, else what went wrong."""
        cfg = self.config
        host, port = cfg.proxy_host_port
        transport = SipTransport(host=cfg.local_host, port=cfg.local_port, log=self.log)
        try:
            await transport.open()
        except OSError as exc:
            return f"cannot bind {cfg.local_host}:{cfg.local_port} ({_why(exc)})"
        try:
            proxy = await transport.resolve(host, port)
        except OSError as exc:
            transport.close()
            return f"proxy {host} does not resolve ({_why(exc)})"
        except BaseException:
            transport.close()  # cancelled while resolving: the socket is not ours to keep
            raise
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
        return None

    # ─────────────── health ───────────────

    def status(self) -> TrunkStatus:
        """How the trunk is doing now: ``starting``, ``up`` (no probing), ``reachable`` (the
        proxy answered OPTIONS), ``failing`` or ``down``, with since when and why."""
        return self._health.status()

    @classmethod
    def check(cls, config: SipTrunkConfig, *, section: str) -> list[ConfigProblem]:
        """What would keep this trunk from working, found without starting it.

        A proxy that does not resolve now is a warning (the trunk starts
        ``down`` and retries); a ``local_host`` or ``rtp_host`` that is no
        address of this machine is an error (nothing could ever be bound
        there). Resolves a host name and binds a throw-away socket to port 0:
        call it from a worker thread.
        """
        problems: list[ConfigProblem] = []
        host, port = config.proxy_host_port
        try:
            socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            problems.append(
                ConfigProblem(
                    f"{section}.proxy",
                    f"{host} does not resolve ({_why(exc)}); the trunk will start down and retry",
                    warning=True,
                )
            )
        for key, address in (("local_host", config.local_host), ("rtp_host", config.rtp_host)):
            if address is None or address == UNSPECIFIED_IPV4:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.bind((address, 0))  # port 0: a port in use must not count against it
            except OSError as exc:
                problems.append(
                    ConfigProblem(
                        f"{section}.{key}",
                        f"{address} is not an address of this machine ({_why(exc)}): "
                        f"use one of its own addresses or {UNSPECIFIED_IPV4}",
                    )
                )
        return problems

    async def _probe_forever(self) -> None:
        interval = self.config.probe_interval
        await probe_forever(self._probe_once, self._probe_done, interval=interval)

    async def _probe_once(self) -> ProbeResult:
        """One OPTIONS to the proxy (resolved afresh, so a changed DNS record is followed)."""
        transport, identity = self._transport, self._identity
        if transport is None or identity is None:
            return ProbeResult.unanswered("the trunk is not running")
        host, port = self.config.proxy_host_port
        try:
            destination = await transport.resolve(host, port)
        except OSError as exc:
            return ProbeResult.unanswered(f"proxy {host} does not resolve ({_why(exc)})")
        target = SipUri(host=host, port=None if port == DEFAULT_SIP_PORT else port)
        request = options_request(identity, target, self._from_address(None))
        sent_at = trio.current_time()
        response = await send_non_invite(transport, request, destination)
        if response is None:
            return ProbeResult.unanswered(f"no answer from {format_host_port(*destination)}")
        return ProbeResult.answered(response.status, response.reason, trio.current_time() - sent_at)

    def _probe_done(self, result: ProbeResult) -> None:
        self._note(self._health.probe_done(time.time(), result))

    def _note(self, change: Change | None) -> None:
        """Log a change of state, once: a warning when it got worse."""
        if change is None:
            return
        level = logging.WARNING if change.worse else logging.INFO
        self.log.log(level, "trunk %s: %s", self.context.name, change)

    # ─────────────── placing calls ───────────────

    async def dial(
        self,
        target: str,
        *,
        caller_id: str | None = None,
        ring_timeout: float = 60.0,
        on_progress: ProgressCallback | None = None,
        on_early_media: EarlyMediaCallback | None = None,
    ) -> SipCallLeg:
        """Call ``target`` — a number/user (``"1001"``, sent as ``sip:1001@domain``) or a SIP URI
        — through the proxy and return the answered leg.

        ``caller_id`` becomes the user part of From (else ``from_user``).
        Raises ``CallFailed`` for a final non-2xx, a bad target (484) or no
        answer within ``ring_timeout`` seconds (408, the attempt is CANCELled);
        ``TrunkError`` when the proxy does not respond at all or the trunk is
        not running. Cancelling the caller abandons the attempt cleanly.
        ``on_early_media`` is called once when a 1xx with SDP starts early media.
        When the trunk stops while the call rings, the attempt is CANCELled and
        ``dial`` raises ``TrunkError`` ("the trunk stopped …").
        """
        if not ring_timeout > 0:
            raise ValueError(f"ring_timeout must be positive, not {ring_timeout}")
        if self._health.problem is not None:
            raise TrunkError(f"trunk {self.context.name} is down: {self._health.problem}; retrying")
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

        def make_leg(
            dialog: Dialog, codec: Codec, dtmf: int | None, remote: Address, answer: SipResponse
        ) -> SipCallLeg:
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
                credentials=credentials,
                answer=answer,
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
                media=media,
                on_early_media=on_early_media,
                extra_headers=self._invite_headers(),
            )
        except OSError as exc:
            media.close()
            error = TrunkError(f"cannot resolve proxy {cfg.proxy}: {exc}")
            self._note(self._health.dial_unanswered(time.time(), str(error)))
            raise error from None
        self.log.info("call %s: dialling %s", call.call_id, request_uri)
        try:
            self._calls.add(call)
            nursery.start_soon(self._run_call, call)
            await call.done.wait()
            leg = call.claim()
        except BaseException as exc:
            # failed or cancelled: the call's background work finishes any CANCEL or BYE
            call.abandon(self._spawn)
            media.close()
            if isinstance(exc, TrunkError):
                self._note(self._health.dial_unanswered(time.time(), str(exc)))
            elif isinstance(exc, CallFailed):
                self._note(self._health.dial_answered(time.time()))
            raise
        self._note(self._health.dial_answered(time.time()))
        return leg

    async def _run_call(self, call: OutgoingCall) -> None:
        try:
            await call.run()
        finally:
            if not call.needs_stop:
                self._calls.discard(call)  # else the stopping trunk still has to CANCEL it

    def _invite_headers(self) -> list[tuple[str, str]]:
        """Extra headers for every INVITE this trunk sends (e.g. session timers)."""
        return []

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
        return format_host_port(host, None if port == DEFAULT_SIP_PORT else port)

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


def _why(exc: OSError) -> str:
    """An OS or resolver error as people read it: its text without the Python wrapping."""
    return exc.strerror or str(exc) or type(exc).__name__
