"""The SIP signalling transport of one trunk: UDP, TCP or TLS; send, receive and route messages.

A trunk has one ``SipTransport``. On a ``udp`` trunk it is a UDP socket (and,
with ``tcp_fallback``, a TCP listener on the same port); on a ``tcp`` or
``tls`` trunk a TCP listener plus the connections it opens or accepts.

Which way a message goes:
- on a TCP/TLS trunk everything goes over a connection to its destination;
  one connection per destination, opened on first use and reused for every
  request after it (opened again when it was closed);
- on a UDP trunk a request larger than ``UDP_SIZE_LIMIT`` bytes goes over TCP
  to the same address when ``tcp_fallback`` is on (RFC 3261 §18.1.1), its top
  Via saying TCP; later requests to that address use the open connection too,
  so the ACK, CANCEL and BYE of that call reach a far end that only speaks TCP;
- a response goes back the way its request came (§18.2.2): over UDP to the
  source address (RFC 3581 symmetric response routing, applied to everyone:
  it is what works through NAT), or on the connection the request arrived on
  — when that has closed, a new one to the source address and the Via's port.

Receiving, per datagram or connection:
- the ``admit`` hook (the trunk's source guard) is asked about the source
  address before anything is parsed: per UDP datagram, and once per connection
  the far end opens. "drop" discards silently (closes such a connection);
  "reject" answers requests 403 Forbidden (never an ACK) and drops responses;
- on a stream, messages are framed by Content-Length (``stream``); a framing
  error closes that connection, and so does ``INBOUND_IDLE_TIMEOUT`` of
  silence on a connection the far end opened (at most ``MAX_CONNECTIONS``
  connections are open at once, so a flood of them is bounded). A CRLFCRLF
  keep-alive is answered with CRLF (RFC 5626 §3.5.1); on UDP a keep-alive
  datagram is ignored;
- a response goes to the client transaction registered for its top Via branch
  and CSeq method — after a check that the top Via's sent-by is ours (§18.1.2;
  others are dropped with a warning); a response nobody waits for is checked
  against the ACKs we remember (a retransmitted final answer to one of our
  INVITEs is ACKed again, §13.2.2.4, §17.1.1.3) and otherwise dropped;
- a request gets ``received=`` on its top Via when the Via host is not the
  source address, and ``rport=`` filled in when the sender asked for it
  (§18.2.1, RFC 3581 §4), so every response copies where it really came from;
  a request that repeats one we already answered (same branch, sent-by and
  method) gets the cached answer again, so every request handler is
  idempotent for free; anything else, and every ACK, goes to the handler.

The debug dump of every message sent and received hides the digest
``response=`` and any other credentials in Authorization headers.

Error handling: a message that does not parse, a Via that is not ours, a
framing error or a failed handshake from a peer is logged at warning (at
most ``WARNING_BURST`` of a kind per ``WARNING_INTERVAL``, the rest at debug,
so a flood cannot flood the log), naming the sender and the problem; nothing a peer
sends ends the receive loops. A UDP send error is logged, as loss would be.
A connection that cannot be opened (refused, timed out, certificate not
trusted) raises ``ConnectionFailed`` from ``send``/``send_bytes``: a
``TrunkError`` (so a dial fails with it) that is also an ``OSError`` (so
callers that treat sending as I/O catch it).

Not for: transaction state machines (``transaction``, ``outgoing``), dialogs,
DNS SRV/NAPTR (RFC 3263) or WebSocket.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import trio

from waihu.api import TrunkError
from waihu_sip.errors import SipParseError
from waihu_sip.message import (
    BRANCH_MAGIC,
    Headers,
    SipRequest,
    SipResponse,
    Via,
    is_keepalive,
    make_response,
    parse_message,
    split_list_value,
)
from waihu_sip.stream import (
    KEEPALIVE_PONG,
    FramingError,
    StreamConnection,
    TlsSettings,
    describe_tls_error,
)
from waihu_sip.timers import TIMER_D, TIMER_H, TIMER_J

__all__ = [
    "REDACTED",
    "Address",
    "Admission",
    "AdmitHook",
    "ConnectionFailed",
    "ResponseInbox",
    "SipTransport",
    "TransportProtocol",
    "new_branch",
    "new_token",
    "redact",
]

Address = tuple[str, int]  # resolved IPv4 address and port
RequestHandler = Callable[[SipRequest, Address], Awaitable[None]]
# what the trunk's guard says of a source address, asked before anything is parsed
Admission = Literal["accept", "drop", "reject"]
AdmitHook = Callable[[Address], Admission]
TransportProtocol = Literal["udp", "tcp", "tls"]

MAX_DATAGRAM = 65535  # largest UDP payload; SIP over UDP stays far below
RESPONSE_QUEUE = 16  # responses buffered per client transaction before dropping
MAX_ANSWERED = 16384  # final responses kept for retransmitted requests (Timers H/J)
PURGE_INTERVAL = 5.0  # seconds between sweeps of expired cache entries
TOKEN_BYTES = 8  # 64 random bits for tags and branches
# RFC 3261 §18.1.1: a request over 1300 bytes (path MTU unknown) goes congestion-controlled
UDP_SIZE_LIMIT = 1300
CONNECT_TIMEOUT = 10.0  # seconds to open a TCP connection and finish a TLS handshake
# a connection the far end opened and then left silent this long is closed (a proxy
# that wants it kept sends RFC 5626 keep-alives, typically every 30–120 s)
INBOUND_IDLE_TIMEOUT = 600.0
MAX_CONNECTIONS = 1024  # open TCP/TLS connections, ours and the far ends', before refusing more
ACCEPT_ERROR_PAUSE = 0.1  # seconds to wait after accept() failed (out of file descriptors)
WARNING_INTERVAL = 10.0  # seconds: at most WARNING_BURST warnings of one kind in one
WARNING_BURST = 10  # … the rest go to debug, so a flood cannot flood the log
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}  # RFC 3261 §19.1.2 (sent-by)

# Authorization / Proxy-Authorization values: everything after the scheme is a credential
_CREDENTIAL_LINE = re.compile(r"(?im)^((?:proxy-)?authorization[ \t]*:[ \t]*)(\S+)([^\r\n]*)")
_DIGEST_RESPONSE = re.compile(r'(?i)(\bresponse[ \t]*=[ \t]*)("[^"]*"|[^,\s]*)')
REDACTED = "…"


class ConnectionFailed(TrunkError, OSError):
    """A TCP or TLS connection could not be opened or used: refused, timed out, closed, or
    the far end's certificate is not trusted (the message names the verification problem)."""


def new_token() -> str:
    """A random token for tags and Call-IDs."""
    return secrets.token_hex(TOKEN_BYTES)


def new_branch() -> str:
    """A fresh RFC 3261 branch parameter (magic cookie + randomness)."""
    return BRANCH_MAGIC + secrets.token_hex(TOKEN_BYTES)


def redact(text: str) -> str:
    """``text`` (a SIP message) with the credentials of Authorization headers hidden."""

    def hide(match: re.Match[str]) -> str:
        scheme, rest = match.group(2), match.group(3)
        if scheme.lower() == "digest":
            return match.group(1) + scheme + _DIGEST_RESPONSE.sub(rf'\1"{REDACTED}"', rest)
        return f"{match.group(1)}{scheme} {REDACTED}"  # Basic and anything unknown: all of it

    return _CREDENTIAL_LINE.sub(hide, text)


class ResponseInbox:
    """Responses to one client transaction, registered with the transport until closed."""

    def __init__(
        self, responses: trio.MemoryReceiveChannel[SipResponse], close: Callable[[], None]
    ) -> None:
        self.responses = responses
        self.close = close


class SipTransport:
    """The signalling transport of one trunk: sending, receiving, response routing and
    retransmission caches, over UDP, TCP or TLS (``protocol``).

    ``tcp_fallback`` (UDP only): send requests over ``UDP_SIZE_LIMIT`` bytes by
    TCP. ``tls``: the contexts of a TLS trunk (required for ``protocol="tls"``).
    ``admit``: asked for every datagram and every connection the far end opens,
    before parsing (see the module docstring). ``sent_by``: the (host, port) our
    Via carries, set by the trunk once it knows it; responses whose top Via
    names another are dropped (None: no check).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        log: logging.Logger,
        protocol: TransportProtocol = "udp",
        tcp_fallback: bool = False,
        tls: TlsSettings | None = None,
        admit: AdmitHook | None = None,
    ) -> None:
        if protocol not in ("udp", "tcp", "tls"):
            raise ValueError(f"protocol must be udp, tcp or tls, not {protocol!r}")
        if protocol == "tls" and tls is None:
            raise ValueError("a TLS transport needs its TLS settings")
        self._bind = (host, port)
        self.log = log
        self._protocol: TransportProtocol = protocol
        self._tcp_fallback = tcp_fallback and protocol == "udp"
        self._tls = tls
        self._admit_hook = admit
        self.sent_by: tuple[str, int] | None = None
        self._sock: trio.socket.SocketType | None = None
        self._listener: trio.SocketListener | None = None
        self._connections: dict[Address, StreamConnection] = {}
        self._connect_locks: dict[Address, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        self._serve_scope = trio.CancelScope()
        self._closed = False
        self._on_request: RequestHandler | None = None
        self._waiters: dict[tuple[str, str], trio.MemorySendChannel[SipResponse]] = {}
        # server side: (branch, sent-by, method) → (response bytes, destination, expiry, stream)
        self._answered: dict[tuple[str, str, str], tuple[bytes, Address, float, bool]] = {}
        # client side: INVITE branch → (ACK bytes, destination, expiry)
        self._acks: dict[str, tuple[bytes, Address, float]] = {}
        self._next_purge = 0.0
        self._warned: dict[str, tuple[float, int]] = {}  # kind → (window end, warnings in it)
        self._suppressed: dict[str, int] = {}

    # ─────────────── what it is ───────────────

    @property
    def name(self) -> str:
        """The protocol as Via writes it: "UDP", "TCP" or "TLS"."""
        return self._protocol.upper()

    @property
    def reliable(self) -> bool:
        """True on TCP/TLS: requests are not retransmitted (RFC 3261 §17.1.1.2, §17.1.2.2)."""
        return self._protocol != "udp"

    @property
    def local_address(self) -> Address:
        """The bound (host, port); only valid once ``open`` returned."""
        if self._sock is not None:
            host, port = self._sock.getsockname()[:2]
        elif self._listener is not None:
            host, port = self._listener.socket.getsockname()[:2]
        else:
            raise RuntimeError("transport is not open")
        return host, port

    def connected(self, destination: Address) -> bool:
        """True when an open TCP/TLS connection to ``destination`` exists."""
        connection = self._connections.get(destination)
        return connection is not None and not connection.closed

    # ─────────────── lifetime ───────────────

    async def open(self) -> None:
        """Bind the socket (UDP) or listener (TCP/TLS); raises OSError when the address is
        taken or not ours. A UDP trunk with ``tcp_fallback`` also listens on TCP on the same
        port when it can (a warning when not: answers still come on our own connections)."""
        host, port = self._bind
        if self._protocol != "udp":
            self._listener = await self._listen(host, port)
            return
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await sock.bind(self._bind)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        if self._tcp_fallback:
            bound = sock.getsockname()[1]
            try:
                self._listener = await self._listen(host, bound)
            except OSError as exc:
                self.log.warning(
                    "no TCP listener on %s:%d (%s): requests over %d bytes still go over TCP",
                    host,
                    bound,
                    exc.strerror or exc,
                    UDP_SIZE_LIMIT,
                )

    @staticmethod
    async def _listen(host: str, port: int) -> trio.SocketListener:
        listeners = await trio.open_tcp_listeners(port, host=host)
        for extra in listeners[1:]:  # an IPv4 literal gives one; keep nothing we do not serve
            await extra.aclose()
        return listeners[0]

    def close(self) -> None:
        """Close every socket and connection; ``serve`` returns."""
        self._closed = True
        self._serve_scope.cancel()
        if self._sock is not None:
            self._sock.close()
        if self._listener is not None:
            self._listener.socket.close()
        for connection in list(self._connections.values()):
            connection.closed = True
            _socket_of(connection.stream).close()
        self._connections.clear()

    async def resolve(self, host: str, port: int) -> Address:
        """An IPv4 address for ``host`` (A record only; SRV/NAPTR lookups are not done)."""
        kind = socket.SOCK_DGRAM if self._protocol == "udp" else socket.SOCK_STREAM
        infos = await trio.socket.getaddrinfo(host, port, socket.AF_INET, kind)
        if not infos:
            raise OSError(f"no IPv4 address for {host}")
        ip, resolved_port = infos[0][4][:2]
        return str(ip), int(resolved_port)

    # ─────────────── sending ───────────────

    async def send(self, message: SipRequest | SipResponse, destination: Address) -> bytes:
        """Serialise and send ``message``; returns the bytes sent (for retransmission).

        A request that goes by TCP on a UDP trunk gets its top Via rewritten to
        say so, in the message itself (so a CANCEL or ACK built from it agrees).
        """
        data = message.to_bytes()
        if isinstance(message, SipRequest):
            stream = self._request_by_stream(len(data), destination)
            if stream and not self.reliable:
                _set_top_via_protocol(message, "TCP")
                data = message.to_bytes()
        else:
            stream = self.reliable
        await self._deliver(data, destination, stream=stream)
        return data

    async def send_bytes(self, data: bytes, destination: Address) -> None:
        """Send bytes made by ``send`` again (a retransmission) the way ``send`` sent them.

        A UDP send error is logged, as UDP loss would be; a connection that cannot be
        opened raises ``ConnectionFailed``.
        """
        is_request = not data.startswith(b"SIP/")
        stream = self.reliable or (is_request and self._request_by_stream(len(data), destination))
        await self._deliver(data, destination, stream=stream)

    def _request_by_stream(self, size: int, destination: Address) -> bool:
        if self.reliable:
            return True
        if not self._tcp_fallback:
            return False
        return size > UDP_SIZE_LIMIT or self.connected(destination)

    async def _deliver(self, data: bytes, destination: Address, *, stream: bool) -> None:
        self._dump("→", destination, data)
        if not stream:
            if self._sock is None:
                raise RuntimeError("transport is not open")
            try:
                await self._sock.sendto(data, destination)
            except OSError as exc:
                # a retransmission timer covers a lost datagram; an error here is no different
                self.log.warning("cannot send to %s:%d: %s", *destination, exc)
            return
        connection = await self._connection_to(destination)
        try:
            await connection.send_all(data)
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # the far end closed it since we last used it: one fresh connection, then give up
            await self._drop(connection)
        connection = await self._connection_to(destination)
        try:
            await connection.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._drop(connection)
            raise ConnectionFailed(
                f"{self.name} connection to {destination[0]}:{destination[1]} broke: "
                f"{describe_tls_error(exc)}"
            ) from None

    async def _connection_to(self, destination: Address) -> StreamConnection:
        """The open connection to ``destination``, opened now if there is none."""
        connection = self._connections.get(destination)
        if connection is not None and not connection.closed:
            return connection
        lock = self._connect_locks.setdefault(destination, trio.Lock())
        try:
            async with lock:  # two tasks sending at once open one connection, not two
                connection = self._connections.get(destination)
                if connection is not None and not connection.closed:
                    return connection
                connection = await self._connect(destination)
                self._connections[destination] = connection
                if self._nursery is not None:
                    self._nursery.start_soon(self._read, connection)
                return connection
        finally:
            if not lock.statistics().tasks_waiting:
                self._connect_locks.pop(destination, None)

    async def _connect(self, destination: Address) -> StreamConnection:
        if len(self._connections) >= MAX_CONNECTIONS:
            raise ConnectionFailed(f"{MAX_CONNECTIONS} connections open already")
        host, port = destination
        protocol = "TLS" if self._protocol == "tls" else "TCP"
        local = self._bind[0] if self._bind[0] != "0.0.0.0" else None
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                tcp = await trio.open_tcp_stream(host, port, local_address=local)
                stream = tcp
                if self._protocol == "tls":
                    assert self._tls is not None
                    stream = trio.SSLStream(
                        tcp, self._tls.client, server_hostname=self._tls.server_name
                    )
                    await stream.do_handshake()
        except trio.TooSlowError:
            problem = f"no connection within {CONNECT_TIMEOUT:g} s"
        except trio.BrokenResourceError as exc:
            problem = f"TLS handshake failed: {describe_tls_error(exc)}"
        except OSError as exc:
            problem = exc.strerror or str(exc)
        else:
            assert stream is not None
            self.log.debug("%s connection to %s:%d open", protocol, host, port)
            return StreamConnection(stream, destination, outbound=True)
        if stream is not None:
            await trio.aclose_forcefully(stream)
        self._warn(
            "connect", "cannot open %s connection to %s:%d: %s", protocol, host, port, problem
        )
        raise ConnectionFailed(f"cannot open {protocol} connection to {host}:{port}: {problem}")

    async def _drop(self, connection: StreamConnection) -> None:
        if self._connections.get(connection.remote) is connection:
            del self._connections[connection.remote]
        if not connection.closed:
            with trio.CancelScope(shield=True):
                await connection.aclose()

    # ─────────────── client transactions ───────────────

    def open_inbox(self, branch: str, method: str) -> ResponseInbox:
        """Start receiving the responses that match ``branch`` and ``method``; close when done."""
        key = (branch, method)
        if key in self._waiters:
            raise RuntimeError(f"branch {branch} {method} is already in use")
        send, receive = trio.open_memory_channel[SipResponse](RESPONSE_QUEUE)
        self._waiters[key] = send

        def close() -> None:
            if self._waiters.get(key) is send:
                del self._waiters[key]
            send.close()

        return ResponseInbox(receive, close)

    @contextmanager
    def client_transaction(
        self, branch: str, method: str
    ) -> Iterator[trio.MemoryReceiveChannel[SipResponse]]:
        """Receive the responses matching ``branch`` and ``method`` while the block runs."""
        inbox = self.open_inbox(branch, method)
        try:
            yield inbox.responses
        finally:
            inbox.close()

    def remember_ack(self, invite_branch: str, ack: bytes, destination: Address) -> None:
        """ACK retransmitted final answers to the INVITE with ``invite_branch`` for Timer D."""
        self._acks[invite_branch] = (ack, destination, trio.current_time() + TIMER_D)

    # ─────────────── server side ───────────────

    async def respond(
        self, request: SipRequest, response: SipResponse, destination: Address
    ) -> None:
        """Send ``response`` to ``request`` the way the request came (§18.2.2) and answer
        retransmissions of it from a cache."""
        via = request.top_via
        # a UDP trunk has TCP only through its fallback listener; a TCP/TLS trunk has no UDP
        stream = self.reliable or (via.transport != "UDP" and self._listener is not None)
        if stream and not self.connected(destination):
            # the connection the request came on is gone: a new one to its Via's port
            destination = (destination[0], via.port or DEFAULT_PORTS.get(via.transport, 5060))
        data = response.to_bytes()
        await self._deliver(data, destination, stream=stream)
        if response.provisional:
            return
        key = self._request_key(request)
        if key is not None:
            keep = TIMER_H if request.method == "INVITE" else TIMER_J
            self._answered[key] = (data, destination, trio.current_time() + keep, stream)
            if len(self._answered) > MAX_ANSWERED:
                # bounded memory whatever a flood gets past the guard: the oldest go first (a
                # retransmission of theirs is then handled afresh, which handlers allow)
                del self._answered[next(iter(self._answered))]

    # ─────────────── receiving ───────────────

    async def serve(self, on_request: RequestHandler) -> None:
        """Receive and route messages until cancelled or ``close`` is called."""
        if self._sock is None and self._listener is None:
            raise RuntimeError("transport is not open")
        self._on_request = on_request
        if self._closed:
            return
        # a new scope per call: a trunk serves again briefly while it unregisters on its way
        # down, after its main receive loop was cancelled
        self._serve_scope = trio.CancelScope()
        with self._serve_scope:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for connection in list(self._connections.values()):
                        nursery.start_soon(self._read, connection)
                    if self._listener is not None:
                        nursery.start_soon(self._accept, self._listener)
                    if self._sock is not None:
                        await self._receive_datagrams(self._sock)
                    else:
                        await trio.sleep_forever()
            finally:
                self._nursery = None

    async def _receive_datagrams(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, source = await sock.recvfrom(MAX_DATAGRAM)
            except (trio.ClosedResourceError, OSError) as exc:
                if sock.fileno() < 0:
                    return
                self.log.warning("receive error on SIP socket: %s", exc)
                continue
            source = (str(source[0]), int(source[1]))
            self._purge()
            admission = self._admit(source)
            if admission == "drop" or is_keepalive(data):
                continue
            await self._handle(data, source, stream=False, admission=admission)

    async def _accept(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as exc:
                self._warn("accept", "cannot accept a SIP connection: %s", exc)
                await trio.sleep(ACCEPT_ERROR_PAUSE)
                continue
            host, port = stream.socket.getpeername()[:2]
            remote = (str(host), int(port))
            admission = self._admit(remote)
            refusal = None
            if admission == "drop":
                refusal = ""
            elif len(self._connections) >= MAX_CONNECTIONS:
                refusal = f"{MAX_CONNECTIONS} connections are open already"
            elif self._protocol == "tls" and (self._tls is None or self._tls.server is None):
                refusal = "no tls_cert/tls_key to accept TLS connections with"
            if refusal is not None:
                if refusal:
                    self._warn("accept", "refused connection from %s:%d: %s", *remote, refusal)
                await trio.aclose_forcefully(stream)
                continue
            wrapped: trio.abc.Stream = stream
            if self._protocol == "tls":
                assert self._tls is not None and self._tls.server is not None
                wrapped = trio.SSLStream(stream, self._tls.server, server_side=True)
            connection = StreamConnection(wrapped, remote, outbound=False, admission=admission)
            previous = self._connections.get(remote)
            if previous is not None:
                await self._drop(previous)
            self._connections[remote] = connection
            assert self._nursery is not None
            self._nursery.start_soon(self._read, connection)

    async def _read(self, connection: StreamConnection) -> None:
        """Receive from one connection until it closes; framing errors close it."""
        remote = connection.remote
        try:
            if isinstance(connection.stream, trio.SSLStream) and not connection.outbound:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT):
                        await connection.stream.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                    timed_out = isinstance(exc, trio.TooSlowError)
                    why = "timed out" if timed_out else describe_tls_error(exc)
                    self._warn("handshake", "TLS handshake with %s:%d failed: %s", *remote, why)
                    return
            idle_limit = math.inf if connection.outbound else INBOUND_IDLE_TIMEOUT
            while True:
                data = None
                try:
                    with trio.move_on_after(idle_limit):
                        data = await connection.receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    if not connection.closed:
                        self.log.debug("connection with %s:%d broke: %s", *remote, exc)
                    return
                if data is None:
                    self.log.debug("closing connection with %s:%d: idle", *remote)
                    return
                if not data:
                    self.log.debug("connection with %s:%d closed by the far end", *remote)
                    return
                self._purge()
                try:
                    frames = list(connection.framer.feed(data))
                except FramingError as exc:
                    self._warn("framing", "closing connection with %s:%d: %s", *remote, exc)
                    return
                for frame in frames:
                    if isinstance(frame, str):  # a keep-alive ping
                        try:
                            await connection.send_all(KEEPALIVE_PONG)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return
                        continue
                    await self._handle(frame, remote, stream=True, admission=connection.admission)
        finally:
            await self._drop(connection)

    def _admit(self, source: Address) -> Admission:
        if self._admit_hook is None:
            return "accept"
        try:
            return self._admit_hook(source)
        except Exception:
            # a broken guard must not let everything in, nor stop the trunk from hearing
            self.log.exception("admission check for %s:%d failed; dropped", *source)
            return "drop"

    async def _handle(
        self, data: bytes, source: Address, *, stream: bool, admission: Admission
    ) -> None:
        try:
            if admission == "reject":
                await self._reject(data, source, stream)
            else:
                await self._route(data, source, stream)
        except SipParseError as exc:
            self._warn("malformed", "dropped malformed SIP message from %s:%d: %s", *source, exc)
            if exc.response is not None and admission == "accept":
                # a broken request that can be addressed is answered 400/505 saying why (RFC
                # 3261 §8.2, RFC 4475); a source the guard rejects never learns more than 403
                try:
                    await self._deliver(exc.response.to_bytes(), source, stream=stream)
                except ConnectionFailed as failed:
                    self.log.warning("cannot answer %s:%d: %s", *source, failed)
        except ConnectionFailed as exc:
            self.log.warning("cannot answer %s:%d: %s", *source, exc)
        except Exception:
            # a bug in handling one message must not stop the trunk from hearing the rest
            self.log.exception("error handling SIP message from %s:%d", *source)

    async def _reject(self, data: bytes, source: Address, stream: bool) -> None:
        """403 Forbidden for a request from a source the guard rejects; nothing else."""
        message = parse_message(data)
        if isinstance(message, SipResponse) or message.method == "ACK":
            self.log.debug("dropped %s from rejected source %s:%d", _describe(message), *source)
            return
        self._dump("←", source, data)
        self._warn("reject", "refused %s from %s:%d (403)", message.method, *source)
        response = make_response(message, 403, to_tag=new_token())
        await self._deliver(response.to_bytes(), source, stream=stream)

    async def _route(self, data: bytes, source: Address, stream: bool) -> None:
        message = parse_message(data)
        self._dump("←", source, data)
        if isinstance(message, SipResponse):
            await self._route_response(message, source)
            return
        _stamp_received(message, source)
        key = self._request_key(message)
        cached = self._answered.get(key) if key is not None else None
        if cached is not None and message.method != "ACK":
            await self._deliver(cached[0], source, stream=cached[3])
            return
        assert self._on_request is not None
        # every ACK goes on: some peers reuse the INVITE's branch even when ACKing a 2xx
        await self._on_request(message, source)

    async def _route_response(self, response: SipResponse, source: Address) -> None:
        via = response.top_via
        if not self._is_ours(via):
            self._warn(
                "via",
                "dropped %d %s from %s:%d: its top Via %s is not ours (RFC 3261 §18.1.2)",
                response.status,
                response.reason,
                *source,
                via,
            )
            return
        branch = via.branch
        if branch is None:
            raise SipParseError("response without a Via branch")
        waiter = self._waiters.get((branch, response.cseq.method))
        if waiter is not None:
            try:
                waiter.send_nowait(response)
            except trio.WouldBlock:
                self.log.warning("response queue full for %s; dropped %d", branch, response.status)
            return
        remembered = self._acks.get(branch)
        if remembered is not None and response.cseq.method == "INVITE" and response.status >= 200:
            await self.send_bytes(remembered[0], remembered[1])
            return
        self.log.debug("stray response %d %s from %s:%d", response.status, response.reason, *source)

    def _is_ours(self, via: Via) -> bool:
        """The sent-by of a response's top Via is what we put in our requests (§18.1.2)."""
        if self.sent_by is None:
            return True
        host, port = self.sent_by
        via_port = via.port or DEFAULT_PORTS.get(via.transport, 5060)
        return via.host.lower() == host.lower() and via_port == port

    @staticmethod
    def _request_key(request: SipRequest) -> tuple[str, str, str] | None:
        """RFC 3261 §17.2.3 matching: branch, sent-by and method (ACK matches its INVITE)."""
        via: Via = request.top_via
        if not via.branch or not via.branch.startswith(BRANCH_MAGIC):
            return None  # pre-RFC 3261 peers: no reliable key, handle every copy afresh
        method = "INVITE" if request.method == "ACK" else request.method
        return via.branch, f"{via.host}:{via.port}", method

    def _purge(self) -> None:
        now = trio.current_time()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL
        self._answered = {k: v for k, v in self._answered.items() if v[2] > now}
        self._acks = {k: v for k, v in self._acks.items() if v[2] > now}

    # ─────────────── logging ───────────────

    def _dump(self, arrow: str, address: Address, data: bytes) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            text = redact(data.decode("utf-8", "replace"))
            self.log.debug("%s %s:%d\n%s", arrow, *address, text)

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """A warning, unless ``WARNING_BURST`` of this ``kind`` went out in this
        ``WARNING_INTERVAL``: then debug, counted, and the count told with the next warning."""
        now = trio.current_time()
        window_end, count = self._warned.get(kind, (-math.inf, 0))
        if now >= window_end:
            window_end, count = now + WARNING_INTERVAL, 0
        if count < WARNING_BURST:
            self._warned[kind] = (window_end, count + 1)
            quiet = self._suppressed.pop(kind, 0)
            if quiet:
                message += f" ({quiet} more like it since the last warning, at debug)"
            self.log.warning(message, *args)
        else:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            self.log.debug(message, *args)


def _stamp_received(request: SipRequest, source: Address) -> None:
    """Add ``received``/``rport`` to the top Via as RFC 3261 §18.2.1 and RFC 3581 §4 say."""
    via = request.top_via
    params = dict(via.params)
    asked_rport = "rport" in params and params["rport"] is None
    if via.host != source[0] or asked_rport:
        params["received"] = source[0]
    if asked_rport:
        params["rport"] = str(source[1])
    if params != via.params:
        _replace_top_via(request, Via(via.transport, via.host, via.port, params))


def _set_top_via_protocol(request: SipRequest, protocol: str) -> None:
    via = request.top_via
    if via.transport != protocol:
        _replace_top_via(request, Via(protocol, via.host, via.port, dict(via.params)))


def _replace_top_via(message: SipRequest, via: Via) -> None:
    fields: list[tuple[str, str]] = []
    done = False
    for name, value in message.headers:
        if name == "Via" and not done:
            rest = split_list_value(value)[1:]
            value = ", ".join([str(via), *rest])
            done = True
        fields.append((name, value))
    message.headers = Headers(fields)


def _describe(message: SipRequest | SipResponse) -> str:
    if isinstance(message, SipResponse):
        return f"response {message.status}"
    return message.method


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType:
    """The socket under a TCP or TLS stream (to close it without awaiting)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    return stream.socket
