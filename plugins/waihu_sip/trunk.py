"""``SipTrunk``: the ``type = "sip"`` trunk provider — places calls over SIP (UDP, TCP or TLS).

``run`` binds the signalling socket and serves it until cancelled, probing
the proxy with OPTIONS (``health``) and, with ``register``, keeping a
registration (``registration``; removed with Expires: 0 when the trunk
stops); ``status`` says how the trunk is doing, ``registration`` how its
registration is; with ``outbound_proxy``, every out-of-dialog request goes
there first with a pre-loaded ``;lr`` Route;
``dial`` places a call and returns the answered ``SipCallLeg``. Requests from
the far end are answered here: in-dialog ones by their leg, OPTIONS with 200, a
request for a dialog we do not know with 481, a method we do not implement
with 501. A new INVITE is an inbound call: for one of the trunk's ``numbers``,
with an offer we can answer, it gets 100 Trying and 180 Ringing and is handed
to the core (``ProviderContext.incoming``) as a ``SipIncomingCall``
(``incoming``), which answers or rejects it; a number not listed gets 404, an
offer without a codec of ours 488 (an INVITE without SDP gets our offer in
the 200, RFC 3261 §13.2.1), and every INVITE 480 when the trunk lists
no numbers or the core takes no inbound calls.

Only the proxy's addresses and ``allow_from`` may talk to the port at all:
the transport asks the trunk's guard (``guard.SipGuard``) about every
datagram before parsing it, which also limits each source to ``flood_rate``;
``security_counts`` says what it refused.

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

import ipaddress
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
    WaihuError,
)
from waihu_sip import target as target_syntax
from waihu_sip.address import NameAddress, SipUri, format_host_port, split_host_port
from waihu_sip.config import SipTrunkConfig
from waihu_sip.dialog import Dialog
from waihu_sip.errors import SipParseError
from waihu_sip.guard import GuardCounts, SipGuard, parse_allow_entry
from waihu_sip.health import (
    Backoff,
    Change,
    ProbeResult,
    TrunkHealth,
    options_request,
    probe_forever,
)
from waihu_sip.identity import ALLOWED_METHODS, LocalIdentity
from waihu_sip.incoming import SipIncomingCall, read_offer
from waihu_sip.leg import SessionState, SipCallLeg
from waihu_sip.media_socket import MediaSocket, open_media_socket
from waihu_sip.message import SipRequest, SipResponse, make_response
from waihu_sip.outgoing import OutgoingCall
from waihu_sip.registration import (
    Outcome,
    Refused,
    RegisterClient,
    Registered,
    keep_registered,
)
from waihu_sip.session_timer import invite_headers
from waihu_sip.stream import TlsSettings, TlsSetupError, tls_contexts
from waihu_sip.transaction import send_non_invite
from waihu_sip.transport import Address, Admission, SipTransport, new_token

__all__ = ["SipTrunk"]

UNSPECIFIED_IPV4 = "0.0.0.0"
DEFAULT_SIP_PORT = 5060
CLOCK_FORMAT = "%H:%M:%S"  # "registered until 14:02:11" in a trunk's detail
SHUTDOWN_BYE_GRACE = 1.0  # seconds to spend sending BYEs when the trunk stops
ALLOW_REFRESH = 300.0  # seconds between re-resolutions of the host names allowed to send SIP
# the first re-resolution, soon after start-up: it adds the proxy's other addresses (start-up
# kept only the one the proxy was resolved to)
ALLOW_FIRST_REFRESH = 10.0
# the trunk's own peers by config key: always allowed (registrar/outbound_proxy come with
# registration support; a key this config does not have is skipped)
PEER_KEYS = ("proxy", "registrar", "outbound_proxy")
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
        self._unregistered = trio.Event()  # set once the registration task has finished
        self._incoming: dict[str, SipIncomingCall] = {}  # inbound INVITEs not yet ACKed/over
        self._calls: set[OutgoingCall] = set()  # attempts not yet over (ringing or lingering)
        self._health = TrunkHealth(
            probing=config.probe_interval > 0,
            failures=config.probe_failures,
            now=time.time(),
            registering=config.register,
        )
        networks = [parse_allow_entry(entry) for entry in config.allow_from]
        self._guard = SipGuard(
            networks=[n for n in networks if n is not None],
            unknown_sources="reject" if config.unknown_sources == "reject" else "drop",
            flood_rate=config.flood_rate,
            flood_burst=config.flood_burst,
            log=self.log,
        )
        self._allowed_names: dict[str, frozenset[str]] = {}  # host name → its last addresses

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
                if self.config.register:
                    nursery.start_soon(self._keep_registered)
                nursery.start_soon(self._refresh_allowed_forever)
                if not started:
                    task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_CANCEL_GRACE):
                        await self._stop_calls()
                        if self.config.register:
                            await self._unregistered.wait()  # its Expires: 0 answered, or given up
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
        host, port = cfg.outbound_host_port or cfg.proxy_host_port  # the first hop
        tls: TlsSettings | None = None
        if cfg.transport == "tls":
            try:
                tls = await trio.to_thread.run_sync(_tls_settings, cfg)
            except TlsSetupError as exc:
                return str(exc)
        transport = SipTransport(
            host=cfg.local_host,
            port=cfg.local_port,
            log=self.log,
            protocol=cfg.transport,  # type: ignore[arg-type]  # validated by the config
            tcp_fallback=cfg.tcp_fallback,
            tls=tls,
            admit=self._admit,
        )
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
        await self._resolve_allowed(known={host: proxy[0]})
        self._transport = transport
        self.local_address = transport.local_address
        advertised = cfg.public_host or cfg.local_host
        if advertised == UNSPECIFIED_IPV4:
            advertised = _route_source(proxy)
        self._identity = LocalIdentity(
            host=advertised,
            port=self.local_address[1],
            user=cfg.contact_user or cfg.from_user,
            user_agent=cfg.user_agent,
            transport=transport.name,
        )
        transport.sent_by = (advertised, self.local_address[1])
        return None

    # ─────────────── who may send SIP ───────────────

    def _admit(self, source: Address) -> Admission:
        return self._guard.admit(source, trio.current_time())

    def allowed(self, ip: str) -> bool:
        """Whether ``ip`` may send SIP to this trunk now (allow_from and the proxy)."""
        return self._guard.is_allowed(ip)

    def security_counts(self) -> GuardCounts:
        """What the guard did with datagrams so far: accepted, dropped or rejected as unknown,
        dropped over the flood limit (totals since the trunk was built)."""
        return self._guard.counts

    def _peer_hosts(self) -> list[str]:
        """Host names or addresses of the trunk's own peers (proxy, registrar, outbound proxy)."""
        hosts: list[str] = []
        for key in PEER_KEYS:
            value = getattr(self.config, key, None)
            if isinstance(value, str) and value:
                hosts.append(split_host_port(value)[0])
        return hosts

    def _allowed_hosts(self) -> list[str]:
        """Host names and addresses whose resolved addresses are allowed: the trunk's peers and
        the ``allow_from`` entries that are not networks."""
        hosts = self._peer_hosts()
        hosts.extend(e for e in self.config.allow_from if parse_allow_entry(e) is None)
        return hosts

    async def _resolve_allowed(self, known: dict[str, str] | None = None) -> None:
        """Resolve every allowed host name (all its addresses) and hand them to the guard.

        ``known`` maps names just resolved (the proxy, at start-up) to their address, which
        is used as it is until the next re-resolution. A name that does not resolve now
        keeps the addresses it had (logged).
        """
        for host in self._allowed_hosts():
            if known and host in known:
                self._allowed_names[host] = frozenset([known[host]])
                continue
            try:
                infos = await trio.socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)
            except OSError as exc:
                if host not in self._allowed_names:
                    self.log.warning("allowed host %s does not resolve (%s)", host, _why(exc))
                continue
            self._allowed_names[host] = frozenset(str(info[4][0]) for info in infos)
        peer_hosts = self._peer_hosts()
        self._guard.set_resolved(
            (a for addresses in self._allowed_names.values() for a in addresses),
            peers=(a for h in peer_hosts for a in self._allowed_names.get(h, ())),
        )

    async def _refresh_allowed_forever(self) -> None:
        await trio.sleep(ALLOW_FIRST_REFRESH)
        while True:
            await self._resolve_allowed()
            await trio.sleep(ALLOW_REFRESH)

    # ─────────────── health ───────────────

    def status(self) -> TrunkStatus:
        """How the trunk is doing now: ``starting``, ``up`` (no probing), ``reachable`` (the
        proxy answered OPTIONS), ``failing`` or ``down``, with since when and why."""
        return self._health.status()

    @classmethod
    def check(cls, config: SipTrunkConfig, *, section: str) -> list[ConfigProblem]:
        """What would keep this trunk from working, found without starting it.

        A proxy (or outbound proxy, when set: it is the first hop) or a
        registrar that does not resolve now is a warning (the trunk starts
        ``down``, or registering fails, and retries); a ``local_host`` or
        ``rtp_host`` that is no address of this machine is an error (nothing could ever be bound
        there). Resolves a host name and binds a throw-away socket to port 0:
        call it from a worker thread.
        """
        problems: list[ConfigProblem] = []
        first_hop = "outbound_proxy" if config.outbound_proxy else "proxy"
        hosts = [(first_hop, (config.outbound_host_port or config.proxy_host_port))]
        if config.register and not config.outbound_proxy:
            hosts.append(("registrar", config.registrar_host_port))
        for key, (host, port) in hosts:
            try:
                socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
            except OSError as exc:
                consequence = (
                    "the trunk will start down and retry"
                    if key == first_hop
                    else "registering will fail and retry"
                )
                problems.append(
                    ConfigProblem(
                        f"{section}.{key}",
                        f"{host} does not resolve ({_why(exc)}); {consequence}",
                        warning=True,
                    )
                )
        if config.transport == "tls":
            try:
                _tls_settings(config)
            except TlsSetupError as exc:
                problems.append(ConfigProblem(f"{section}.{exc.key}", str(exc).split(": ", 1)[1]))
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
        first_host, first_port = self._first_hop()
        try:
            destination = await transport.resolve(first_host, first_port)
        except OSError as exc:
            return ProbeResult.unanswered(f"proxy {first_host} does not resolve ({_why(exc)})")
        target = SipUri(host=host, port=None if port == DEFAULT_SIP_PORT else port)
        request = options_request(identity, target, self._from_address(None))
        self._add_route(request)
        sent_at = trio.current_time()
        try:
            response = await send_non_invite(transport, request, destination)
        except OSError as exc:  # a TCP/TLS connection that cannot be opened
            return ProbeResult.unanswered(str(exc))
        if response is None:
            return ProbeResult.unanswered(f"no answer from {format_host_port(*destination)}")
        return ProbeResult.answered(response.status, response.reason, trio.current_time() - sent_at)

    def _first_hop(self) -> tuple[str, int]:
        """Where out-of-dialog requests go first: the outbound proxy, else the proxy."""
        return self.config.outbound_host_port or self.config.proxy_host_port

    def _preloaded_route(self) -> str | None:
        """The Route an out-of-dialog request carries to the outbound proxy (RFC 3261 §8.1.2)."""
        outbound = self.config.outbound_host_port
        if outbound is None:
            return None
        host, port = outbound
        return f"<sip:{format_host_port(host, None if port == DEFAULT_SIP_PORT else port)};lr>"

    def _add_route(self, request: SipRequest) -> None:
        """Add the pre-loaded Route, when there is an outbound proxy (no other Route is set)."""
        route = self._preloaded_route()
        if route is not None:
            request.headers.add("Route", route)

    def _probe_done(self, result: ProbeResult) -> None:
        self._note(self._health.probe_done(time.time(), result))

    def _note(self, change: Change | None) -> None:
        """Log a change of state, once: a warning when it got worse."""
        if change is None:
            return
        level = logging.WARNING if change.worse else logging.INFO
        self.log.log(level, "trunk %s: %s", self.context.name, change)

    # ─────────────── registration ───────────────

    def registration(self) -> dict[str, object] | None:
        """The registration as ``waihuctl trunks`` shows it, or None when not registering:
        ``aor``, ``registrar``, ``state`` (``registering``, ``registered``, ``failing``),
        ``at`` (the registrar's last word, seconds since the epoch), ``expires_at``
        (while registered) and ``detail``."""
        if not self.config.register:
            return None
        last = self._health.registration
        state = "registering" if last is None else ("registered" if last.ok else "failing")
        return {
            "aor": str(self._aor()),
            "registrar": self.config.registrar or self.config.proxy,
            "state": state,
            "at": None if last is None else last.at,
            "expires_at": None if last is None else last.until,
            "detail": "" if last is None else last.detail,
        }

    def _aor(self) -> SipUri:
        """Our address of record, ``sip:username@domain`` (§10.2)."""
        user = self.config.username or self.config.from_user
        return SipUri(host=self._domain_host(), user=user)

    def _domain_host(self) -> str:
        return self.config.domain or self.config.registrar_host_port[0]

    async def _keep_registered(self) -> None:
        identity = self._identity
        assert identity is not None
        cfg = self.config
        host, port = cfg.registrar_host_port
        client = RegisterClient(
            aor=self._aor(),
            registrar=SipUri(host=host, port=None if port == DEFAULT_SIP_PORT else port),
            contact_user=identity.user,
            expires=cfg.register_expires,
            username=cfg.auth_username or cfg.username,
            password=cfg.password,
            route=self._preloaded_route(),
        )
        backoff = Backoff()
        try:
            await self._register_until_cancelled(client, identity, backoff)
        finally:
            self._unregistered.set()  # run's shutdown keeps receiving until then

    async def _register_until_cancelled(
        self, client: RegisterClient, identity: LocalIdentity, backoff: Backoff
    ) -> None:
        while True:
            try:
                # on cancellation it unregisters, shielded and bounded; the trunk's receive
                # loop runs through the shutdown grace and hears the answer
                await keep_registered(
                    client, identity, self._send_register, self._registration_outcome
                )
                return  # (it runs until cancelled)
            except Exception:
                # a bug in registering must not take the trunk and its calls down with it
                delay = backoff.next()
                self.log.exception(
                    "trunk %s: registration stopped by an error; again in %g s",
                    self.context.name,
                    delay,
                )
                self._note(self._health.registration_failed(time.time(), "internal error"))
                await trio.sleep(delay)

    async def _send_register(self, request: SipRequest) -> SipResponse | None:
        """One REGISTER transaction to the outbound proxy or the registrar (resolved afresh)."""
        transport = self._transport
        if transport is None:
            return None
        host, port = self.config.outbound_host_port or self.config.registrar_host_port
        try:
            destination = await transport.resolve(host, port)
        except OSError as exc:
            self.log.warning(
                "trunk %s: registrar %s does not resolve (%s)", self.context.name, host, _why(exc)
            )
            return None
        return await send_non_invite(transport, request, destination)

    def _registration_outcome(self, outcome: Outcome, now: float) -> None:
        """Tell the trunk's health what the registrar said, and log it once per change."""
        name = self.context.name
        if isinstance(outcome, Registered):
            until = now + outcome.expires
            detail = f"as {self._aor()} until {_clock(until)} ({outcome.expires} s granted)"
            change = self._health.registered(now, until, detail)
            if change is None:
                self.log.debug("trunk %s: registration refreshed %s", name, detail)
            self._note(change)
        elif isinstance(outcome, Refused):
            detail = f"{outcome.problem} at {_clock(now)}; next try in {outcome.retry_in:g} s"
            change = self._health.registration_failed(now, detail)
            if outcome.downgrade:
                self.log.error("trunk %s: %s", name, detail)  # an attack, or a broken registrar
            elif change is None:
                self.log.warning("trunk %s: still not registered: %s", name, detail)
            self._note(change)
        else:
            self.log.debug("trunk %s: REGISTER again: %s", name, outcome.why)

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
        try:
            media, session = self._open_media()
        except OSError as exc:
            raise TrunkError(f"no RTP port on {cfg.rtp_host or cfg.local_host}: {exc}") from None
        offer = session.offer(cfg.codecs)

        def make_leg(
            dialog: Dialog, codec: Codec, dtmf: int | None, remote: Address, answer: SipResponse
        ) -> SipCallLeg:
            media.set_remote(remote)
            leg = self._answered_leg(dialog, media, codec, dtmf, session, answer=answer)
            leg.follow_answer(answer)
            return leg

        try:
            destination = await transport.resolve(*self._first_hop())
            call = OutgoingCall(
                transport=transport,
                identity=identity,
                destination=destination,
                request_uri=request_uri,
                from_=from_,
                offer=offer,
                codecs=cfg.codecs,
                credentials=self._credentials(),
                ring_timeout=ring_timeout,
                on_progress=on_progress,
                make_leg=make_leg,
                log=self.log,
                route=self._preloaded_route(),
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
        """Extra headers for every INVITE this trunk sends: the RFC 4028 session timer asked
        for (none with ``session_expires = 0``)."""
        return list(invite_headers(self.config.session_expires, self.config.min_se))

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
            self._allow_dialog_peers()

    def _allow_dialog_peers(self) -> None:
        """Let the live calls' next hops (their first route, else the far end's Contact) send
        in-dialog requests; a host name there is not resolved (list it in allow_from)."""
        hosts = set()
        for leg in self._legs.values():
            host = leg.dialog.next_hop().host
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                continue
            hosts.add(host)
        self._guard.set_dialog_peers(hosts)

    # ─────────────── requests from the far end ───────────────

    async def _on_request(self, request: SipRequest, source: Address) -> None:
        transport = self._transport
        identity = self._identity
        assert transport is not None and identity is not None
        leg = self._legs.get(request.call_id)
        if request.method == "ACK":
            incoming = self._incoming.get(request.call_id)
            if incoming is not None and incoming.handle_ack(request):
                return  # it acknowledges our final answer to an inbound INVITE
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
            incoming = self._incoming.get(request.call_id)
            if incoming is None:
                response = make_response(request, 481)  # no INVITE of that call is pending
            else:
                response = incoming.handle_cancel(request)
        elif request.to.tag is None:
            if request.method == "INVITE":
                refusal = await self._on_invite(request, source)
                if refusal is None:
                    return  # the inbound call answers for itself
                response = refusal
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

    # ─────────────── inbound calls ───────────────

    async def _on_invite(self, invite: SipRequest, source: Address) -> SipResponse | None:
        """A new INVITE: the response refusing it, or None once it is ringing and the core has
        it (or it was a retransmission, answered by its call)."""
        pending = self._incoming.get(invite.call_id)
        if pending is not None:
            if invite.top_via.branch != pending.invite.top_via.branch:
                return make_response(invite, 482)  # §8.2.2.2: the same request by another path
            again = pending.handle_invite_retransmission()
            if again is not None:
                await self._transport_or_fail().send(again, source)
            return None
        caller = invite.headers.get("From")
        number = self._called_number(invite)
        handler = self.context.incoming
        if handler is None or not self.config.numbers:
            self.log.info("refused inbound call %s from %s: not taken here", invite.call_id, caller)
            return make_response(invite, 480, to_tag=new_token())
        if number is None:
            self.log.info(
                "refused inbound call %s from %s to %s: not one of the trunk's numbers",
                invite.call_id,
                caller,
                invite.uri,
            )
            return make_response(invite, 404, to_tag=new_token())
        offer = read_offer(invite, self.config.codecs)
        if isinstance(offer, str):
            self.log.info("refused inbound call %s from %s: %s", invite.call_id, caller, offer)
            return make_response(invite, 488, to_tag=new_token())
        transport, identity = self._transport_or_fail(), self._identity
        assert identity is not None
        await transport.send(make_response(invite, 100), source)
        call = SipIncomingCall(
            invite=invite,
            source=source,
            offer=offer,
            codecs=self.config.codecs,
            number=number,
            trunk=self.context.name,
            transport=transport,
            identity=identity,
            make_media=self._open_media,
            make_leg=self._answered_leg,
            spawn=self._spawn,
            on_done=self._forget_incoming,
            log=self.log,
            session_expires=self.config.session_expires,
            min_se=self.config.min_se,
        )
        self._incoming[call.call_id] = call
        self.log.info("inbound call %s from %r to %s", call.call_id, call.caller, number)
        await call.ring()
        try:
            handler(call)
        except WaihuError as exc:  # the core takes no calls now (starting, stopping)
            self.log.warning("refused inbound call %s: %s", call.call_id, exc)
            await call.reject(480)
        except Exception:
            self.log.exception("call %s: the core could not take the inbound call", call.call_id)
            await call.reject(500)
        return None

    def _called_number(self, invite: SipRequest) -> str | None:
        """Which of the trunk's ``numbers`` the INVITE is for (the Request-URI's user, else
        To's), as the config spells it; None when it is none of them."""
        wanted = {n.translate(VISUAL_SEPARATORS): n for n in self.config.numbers}
        candidates = [invite.uri]
        if invite.headers.get("To"):
            candidates.append(str(invite.to.uri))
        for text in candidates:
            try:
                user = SipUri.parse(text).user
            except SipParseError:
                continue
            if user is not None and user.translate(VISUAL_SEPARATORS) in wanted:
                return wanted[user.translate(VISUAL_SEPARATORS)]
        return None

    def _open_media(self) -> tuple[MediaSocket, SessionState]:
        """An RTP socket and the SDP session that advertises it; OSError when none binds."""
        cfg, identity = self.config, self._identity
        assert identity is not None
        rtp_host = cfg.rtp_host or cfg.local_host
        media = open_media_socket(rtp_host, self.log, cfg.rtp_ports, rtcp=cfg.rtcp)
        sdp_host = cfg.public_host or (identity.host if rtp_host == UNSPECIFIED_IPV4 else rtp_host)
        session = SessionState(
            host=sdp_host,
            port=media.local_address[1],
            session_id=random.randrange(1, SESSION_ID_MAX),
            version=1,
        )
        return media, session

    def _answered_leg(
        self,
        dialog: Dialog,
        media: MediaSocket,
        codec: Codec,
        dtmf_payload_type: int | None,
        session: SessionState,
        answer: SipResponse | None = None,
    ) -> SipCallLeg:
        """The leg of a call being answered — by the far end (``answer``: its 2xx) or by us
        (an inbound call) — known to the trunk from now on."""
        transport, identity = self._transport_or_fail(), self._identity
        assert identity is not None
        leg = SipCallLeg(
            transport=transport,
            identity=identity,
            dialog=dialog,
            media=media,
            codec=codec,
            dtmf_payload_type=dtmf_payload_type,
            session=session,
            spawn=self._spawn,
            on_gone=self._forget,
            log=self.log,
            codecs=self.config.codecs,
            session_expires=self.config.session_expires,
            min_se=self.config.min_se,
            credentials=self._credentials(),
            answer=answer,
        )
        self._legs[dialog.call_id] = leg
        self._allow_dialog_peers()
        return leg

    def _credentials(self) -> tuple[str, str] | None:
        cfg = self.config
        return (cfg.username, cfg.password) if cfg.username and cfg.password else None

    def _forget_incoming(self, call: SipIncomingCall) -> None:
        if self._incoming.get(call.call_id) is call:
            del self._incoming[call.call_id]

    def _transport_or_fail(self) -> SipTransport:
        if self._transport is None:
            raise TrunkError("SIP trunk is not running")
        return self._transport


def _route_source(destination: Address) -> str:
    """The local address the kernel would send from toward ``destination`` (no packet sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(destination)
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def _tls_settings(cfg: SipTrunkConfig) -> TlsSettings:
    """The TLS contexts of a ``transport = "tls"`` trunk (reads files: a worker thread)."""
    return tls_contexts(
        server_name=cfg.tls_server_name or (cfg.outbound_host_port or cfg.proxy_host_port)[0],
        verify=cfg.tls_verify,
        ca_file=cfg.tls_ca,
        cert_file=cfg.tls_cert,
        key_file=cfg.tls_key,
    )


def _clock(timestamp: float) -> str:
    """A time of day for a status line (local time, to the second)."""
    return time.strftime(CLOCK_FORMAT, time.localtime(timestamp))


def _why(exc: OSError) -> str:
    """An OS or resolver error as people read it: its text without the Python wrapping."""
    return exc.strerror or str(exc) or type(exc).__name__
