"""The UDP signalling socket of one trunk: send messages, receive and route them.

Routing rules:
- a response goes to the client transaction registered for its top Via
  branch and CSeq method; a response nobody waits for is checked against the
  ACKs we remember (a retransmitted final answer to one of our INVITEs is
  ACKed again, RFC 3261 §13.2.2.4 and §17.1.1.3) and otherwise dropped;
- a request that repeats one we already answered (same branch, sent-by and
  method) gets the cached answer again, so every request handler is
  idempotent for free; anything else, and every ACK, goes to the request
  handler;
- before any of that, the ``admit`` hook (the trunk's guard) is asked about
  each datagram's source: "drop" discards it unread, "reject" answers a
  request 403 Forbidden (never an ACK, never a response);
- at debug level every message sent and received is logged whole, except the
  digest ``response`` of credentials headers (``log_redaction``);
- a datagram that does not parse is logged at warning, naming the sender and
  the problem, and dropped. Nothing a peer sends ends the receive loop.

Responses go back to the address the request came from (RFC 3581 symmetric
response routing, applied to everyone: it is what works through NAT).

Not for: transaction state machines (``transaction``, ``outgoing``), dialogs
or anything TCP/TLS.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import trio

from waihu_sip.errors import SipParseError
from waihu_sip.log_redaction import redact_message
from waihu_sip.message import (
    BRANCH_MAGIC,
    SipRequest,
    SipResponse,
    Via,
    is_keepalive,
    make_response,
    parse_message,
)
from waihu_sip.timers import TIMER_D, TIMER_H, TIMER_J

__all__ = ["Address", "Admission", "ResponseInbox", "SipTransport", "new_branch", "new_token"]

Address = tuple[str, int]  # resolved IPv4 address and port
RequestHandler = Callable[[SipRequest, Address], Awaitable[None]]
Admission = Literal["accept", "drop", "reject"]  # the admit hook's verdict on a datagram

MAX_DATAGRAM = 65535  # largest UDP payload; SIP over UDP stays far below
RESPONSE_QUEUE = 16  # responses buffered per client transaction before dropping
PURGE_INTERVAL = 5.0  # seconds between sweeps of expired cache entries
TOKEN_BYTES = 8  # 64 random bits for tags and branches


def new_token() -> str:
    """A random token for tags and Call-IDs."""
    return secrets.token_hex(TOKEN_BYTES)


def new_branch() -> str:
    """A fresh RFC 3261 branch parameter (magic cookie + randomness)."""
    return BRANCH_MAGIC + secrets.token_hex(TOKEN_BYTES)


class ResponseInbox:
    """Responses to one client transaction, registered with the transport until closed."""

    def __init__(
        self, responses: trio.MemoryReceiveChannel[SipResponse], close: Callable[[], None]
    ) -> None:
        self.responses = responses
        self.close = close


class SipTransport:
    """One UDP socket for SIP: sending, receiving, response routing and retransmission caches."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        log: logging.Logger,
        admit: Callable[[Address], Admission] | None = None,
    ) -> None:
        self._bind = (host, port)
        self.log = log
        self._admit = admit
        self._sock: trio.socket.SocketType | None = None
        self._waiters: dict[tuple[str, str], trio.MemorySendChannel[SipResponse]] = {}
        # server side: (branch, sent-by, method) → (response bytes, destination, expiry)
        self._answered: dict[tuple[str, str, str], tuple[bytes, Address, float]] = {}
        # client side: INVITE branch → (ACK bytes, destination, expiry)
        self._acks: dict[str, tuple[bytes, Address, float]] = {}
        self._next_purge = 0.0

    @property
    def local_address(self) -> Address:
        """The bound (host, port); only valid once ``open`` returned."""
        if self._sock is None:
            raise RuntimeError("transport is not open")
        host, port = self._sock.getsockname()[:2]
        return host, port

    async def open(self) -> None:
        """Bind the socket; raises OSError when the address is taken or not ours."""
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await sock.bind(self._bind)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def close(self) -> None:
        """Close the socket; the receive loop ends."""
        if self._sock is not None:
            self._sock.close()

    async def resolve(self, host: str, port: int) -> Address:
        """An IPv4 address for ``host`` (A record only; SRV/NAPTR lookups are not done)."""
        infos = await trio.socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"no IPv4 address for {host}")
        ip, resolved_port = infos[0][4][:2]
        return str(ip), int(resolved_port)

    async def send(self, message: SipRequest | SipResponse, destination: Address) -> bytes:
        """Serialise and send ``message``; returns the bytes sent (for retransmission)."""
        data = message.to_bytes()
        await self.send_bytes(data, destination)
        return data

    async def send_bytes(self, data: bytes, destination: Address) -> None:
        """Send one datagram; a local send error is logged, as UDP loss would be."""
        if self._sock is None:
            raise RuntimeError("transport is not open")
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "→ %s:%d\n%s", *destination, redact_message(data.decode("utf-8", "replace"))
            )
        try:
            await self._sock.sendto(data, destination)
        except OSError as exc:
            # a retransmission timer covers a lost datagram; an error here is no different
            self.log.warning("cannot send to %s:%d: %s", *destination, exc)

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
        """Send ``response`` to ``request`` and answer retransmissions of it from a cache."""
        data = await self.send(response, destination)
        if response.provisional:
            return
        key = self._request_key(request)
        if key is not None:
            keep = TIMER_H if request.method == "INVITE" else TIMER_J
            self._answered[key] = (data, destination, trio.current_time() + keep)

    # ─────────────── receiving ───────────────

    async def serve(self, on_request: RequestHandler) -> None:
        """Receive and route datagrams until cancelled or the socket is closed."""
        if self._sock is None:
            raise RuntimeError("transport is not open")
        while True:
            try:
                data, source = await self._sock.recvfrom(MAX_DATAGRAM)
            except (trio.ClosedResourceError, OSError) as exc:
                if self._sock.fileno() < 0:
                    return
                self.log.warning("receive error on SIP socket: %s", exc)
                continue
            source = (str(source[0]), int(source[1]))
            if self._admit is not None:
                verdict = self._admit(source)
                if verdict != "accept":
                    if verdict == "reject":
                        await self._reject(data, source)
                    continue
            self._purge()
            if is_keepalive(data):
                continue
            try:
                await self._route(data, source, on_request)
            except SipParseError as exc:
                self.log.warning("dropped malformed SIP message from %s:%d: %s", *source, exc)
            except Exception:
                # a bug in handling one message must not stop the trunk from hearing the rest
                self.log.exception("error handling SIP message from %s:%d", *source)

    async def _reject(self, data: bytes, source: Address) -> None:
        """403 to a request from a refused source; nothing to an ACK, a response or garbage."""
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if isinstance(message, SipRequest) and message.method != "ACK":
            await self.send(make_response(message, 403, to_tag=new_token()), source)

    async def _route(self, data: bytes, source: Address, on_request: RequestHandler) -> None:
        message = parse_message(data)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("← %s:%d\n%s", *source, redact_message(data.decode("utf-8", "replace")))
        if isinstance(message, SipResponse):
            await self._route_response(message, source)
            return
        key = self._request_key(message)
        cached = self._answered.get(key) if key is not None else None
        if cached is not None and message.method != "ACK":
            await self.send_bytes(cached[0], source)
            return
        # every ACK goes on: some peers reuse the INVITE's branch even when ACKing a 2xx
        await on_request(message, source)

    async def _route_response(self, response: SipResponse, source: Address) -> None:
        branch = response.top_via.branch
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
