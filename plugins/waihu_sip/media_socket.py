"""The RTP (and RTCP) sockets of one call: an even UDP port and the odd one above it.

Sending never blocks (the one media clock of the daemon drives every call's
outgoing audio): a datagram the kernel will not take at once is dropped and
counted.

Receiving lets through only the far end's stream (``RtpFilter``, sans-IO):

- packets must come from the negotiated address and port. During a short
  latching window at the start (the first ``LATCH_PACKETS`` packets or
  ``LATCH_SECONDS``, whichever ends first) the stream may move to another
  port of the SDP host — NATs and some gateways send from a port other than
  the one in their SDP (symmetric RTP, common practice rather than an RFC) —
  but only once ``MIN_SEQUENTIAL`` packets from there carry one SSRC and
  consecutive sequence numbers. After the window, packets from any other
  address or port are dropped: the RTP-bleed attack (Asterisk AST-2017-005,
  RTP sprayed at the port from elsewhere to take the stream over) gets
  nothing, and our RTP keeps going to the real peer;
- the SSRC is locked on the first packet accepted; a new SSRC from the locked
  source is taken only after ``MIN_SEQUENTIAL`` consecutive packets (RFC 3550
  A.1 probation), as when a PBX switches what it streams to us;
- payload types not negotiated (the call's audio PT and telephone-event PT)
  are dropped.
Each kind of drop is counted in ``drops`` and logged once per call.

RTCP (RFC 3550 §6) runs on the odd port when enabled: ``run_rtcp`` sends our
reports every ~5 s and reads the far end's (``rtcp.RtcpSession`` keeps the
figures); ``close`` sends a last report with BYE. RTCP packets are accepted
from the far end's media host only. The far end's RTCP port is its RTP port
+ 1 (we read no ``a=rtcp:`` attribute; we never need to send one either,
since ours is always RTP + 1).

Error handling: send errors are counted (and the first logged), receive
errors logged at debug and skipped; a closed socket ends ``receive`` with
``trio.ClosedResourceError`` and ``run_rtcp`` quietly.

Not for: RTP packet parsing beyond the header fields the filter needs, or
pacing (the core's media layer).
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Collection

import attrs
import trio

from waihu.api import MediaQuality
from waihu_sip.rtcp import REPORT_INTERVAL, RtcpSession
from waihu_sip.transport import Address

__all__ = [
    "LATCH_PACKETS",
    "LATCH_SECONDS",
    "MIN_SEQUENTIAL",
    "MediaSocket",
    "RtpFilter",
    "open_media_socket",
]

MAX_RTP_DATAGRAM = 2048  # far above a 20 ms G.711 packet (172 bytes)
EVEN_PORT_ATTEMPTS = 64  # ports tried before giving up on finding an even one with its neighbour
RTP_HEADER_SIZE = 12
RTP_VERSION = 2
LATCH_PACKETS = 10  # the latching window closes after this many accepted packets …
LATCH_SECONDS = 2.0  # … or this long after the first packet from the far end's host
MIN_SEQUENTIAL = 2  # RFC 3550 A.1: consecutive packets a new source/SSRC must show
SEQ_MOD = 1 << 16
REPORT_JITTER = 0.5  # RFC 3550 §6.3.1: each interval is drawn from [0.5, 1.5] × the nominal one
DEFAULT_CLOCK_RATE = 8000  # G.711, until the leg says

_HEADER = struct.Struct("!BBHII")


@attrs.define
class _Candidate:
    """A source or SSRC on probation: where from, which SSRC, last sequence, how many so far."""

    source: Address
    ssrc: int
    sequence: int
    count: int = 1


class RtpFilter:
    """Which received datagrams belong to the far end's stream (see the module docstring)."""

    def __init__(self) -> None:
        self.remote: Address | None = None
        self.payload_types: frozenset[int] | None = None  # None: not negotiated yet, any
        self.ssrc: int | None = None
        self.drops: Counter[str] = Counter()
        self._window_opened: float | None = None
        self._window_accepted = 0
        self._window_closed = False
        self._candidate: _Candidate | None = None

    def set_remote(self, remote: Address) -> None:
        """Expect the stream from ``remote``; a new address re-arms the latch and the SSRC."""
        if remote != self.remote:
            self.remote = remote
            self.ssrc = None
            self._candidate = None
            self._window_opened = None
            self._window_accepted = 0
            self._window_closed = False

    @property
    def latching(self) -> bool:
        """True while the stream may still move to another port of the SDP host."""
        return not self._window_closed

    def check(self, data: bytes, source: Address, now: float) -> str | None:
        """None when ``data`` from ``source`` at ``now`` belongs to the stream, else why not
        (``malformed``, ``foreign_host``, ``foreign_port``, ``payload_type``, ``probation``,
        ``ssrc``). A packet that completes a probation moves ``remote`` or ``ssrc``."""
        if len(data) < RTP_HEADER_SIZE or data[0] >> 6 != RTP_VERSION:
            return self._drop("malformed")
        remote = self.remote
        if remote is None or source[0] != remote[0]:
            return self._drop("foreign_host")
        if self._window_opened is None:
            self._window_opened = now
        elif not self._window_closed and now - self._window_opened >= LATCH_SECONDS:
            self._window_closed = True
        _, second, sequence, _, ssrc = _HEADER.unpack_from(data)
        if self.payload_types is not None and second & 0x7F not in self.payload_types:
            return self._drop("payload_type")
        if source != remote:
            if self._window_closed:
                return self._drop("foreign_port")
            if not self._on_probation(source, ssrc, sequence):
                return self._drop("probation")
            self.remote = source
            self.ssrc = ssrc
        elif self.ssrc is None:
            self.ssrc = ssrc
        elif ssrc != self.ssrc:
            if not self._on_probation(source, ssrc, sequence):
                return self._drop("ssrc")
            self.ssrc = ssrc
        else:
            self._candidate = None  # the locked stream goes on: a half-proven rival starts over
        if not self._window_closed:
            self._window_accepted += 1
            if self._window_accepted >= LATCH_PACKETS:
                self._window_closed = True
        return None

    def _on_probation(self, source: Address, ssrc: int, sequence: int) -> bool:
        """Count one more packet of a candidate; True once it has shown MIN_SEQUENTIAL."""
        candidate = self._candidate
        if (
            candidate is not None
            and candidate.source == source
            and candidate.ssrc == ssrc
            and sequence == (candidate.sequence + 1) % SEQ_MOD
        ):
            candidate.count += 1
            candidate.sequence = sequence
        else:
            candidate = self._candidate = _Candidate(source, ssrc, sequence)
        if candidate.count >= MIN_SEQUENTIAL:
            self._candidate = None
            return True
        return False

    def _drop(self, why: str) -> str:
        self.drops[why] += 1
        return why


class MediaSocket:
    """The bound RTP socket (and RTCP socket, when enabled) of one call."""

    def __init__(
        self, sock: socket.socket, log: logging.Logger, rtcp_sock: socket.socket | None = None
    ) -> None:
        sock.setblocking(False)
        self._std = sock  # the stdlib object: sendto without trio, never blocking
        self._trio = trio.socket.from_stdlib_socket(sock)
        self._log = log
        self.filter = RtpFilter()
        self.closed = False
        self.sent = 0
        self.send_dropped = 0
        self._rtcp_std = rtcp_sock
        self._rtcp_trio: trio.socket.SocketType | None = None
        if rtcp_sock is not None:
            rtcp_sock.setblocking(False)
            self._rtcp_trio = trio.socket.from_stdlib_socket(rtcp_sock)
        self.rtcp = RtcpSession(clock_rate=DEFAULT_CLOCK_RATE)
        self._closing = trio.Event()  # wakes the RTCP task when the call ends

    @property
    def remote(self) -> Address | None:
        """Where the far end's stream comes from (after latching) and where ours goes."""
        return self.filter.remote

    @property
    def foreign_dropped(self) -> int:
        """Datagrams dropped for coming from the wrong host or port."""
        return self.filter.drops["foreign_host"] + self.filter.drops["foreign_port"]

    @property
    def local_address(self) -> Address:
        """The bound (host, port) of the RTP socket."""
        host, port = self._std.getsockname()[:2]
        return host, port

    @property
    def rtcp_enabled(self) -> bool:
        """True when an RTCP socket is open beside the RTP one."""
        return self._rtcp_std is not None

    def set_remote(self, remote: Address) -> None:
        """Send to ``remote`` and accept from it; a new address re-arms the latch."""
        self.filter.set_remote(remote)

    def set_payload_types(self, payload_types: Collection[int], clock_rate: int) -> None:
        """Accept only these payload types (audio and telephone-event) at this clock rate."""
        self.filter.payload_types = frozenset(payload_types)
        self.rtcp.clock_rate = self.rtcp.remote.clock_rate = clock_rate

    def send(self, datagram: bytes) -> None:
        """Send without blocking; dropped when closed, unaddressed or the socket is full."""
        remote = self.filter.remote
        if self.closed or remote is None:
            return
        try:
            self._std.sendto(datagram, remote)
            self.sent += 1
        except BlockingIOError:
            self.send_dropped += 1
            return
        except OSError as exc:
            self.send_dropped += 1
            if self.send_dropped == 1:
                self._log.warning("cannot send RTP to %s:%d: %s", *remote, exc)
            return
        if len(datagram) >= RTP_HEADER_SIZE:
            _, _, _, timestamp, ssrc = _HEADER.unpack_from(datagram)
            self.rtcp.sent(ssrc, timestamp, len(datagram) - RTP_HEADER_SIZE, trio.current_time())

    async def receive(self) -> bytes:
        """The next datagram of the far end's stream (others are dropped, see the module).

        Raises ``trio.ClosedResourceError`` once the socket is closed.
        """
        while True:
            if self.closed:
                raise trio.ClosedResourceError("media socket closed")
            try:
                data, source = await self._trio.recvfrom(MAX_RTP_DATAGRAM)
            except trio.ClosedResourceError:
                raise
            except OSError as exc:
                if self.closed or exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("media socket closed") from None
                self._log.debug("RTP receive error: %s", exc)
                continue
            source = (str(source[0]), int(source[1]))
            before = self.filter.remote
            now = trio.current_time()
            why = self.filter.check(data, source, now)
            if why is not None:
                if self.filter.drops[why] == 1:
                    self._log.warning("dropped RTP from %s:%d: %s", *source, _DROP_REASONS[why])
                continue
            if self.filter.remote != before and before is not None:
                self._log.info("RTP latched to %s:%d (SDP said %s:%d)", *source, *before)
            _, _, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
            self.rtcp.received(ssrc, sequence, timestamp, now)
            return data

    # ─────────────── RTCP ───────────────

    async def run_rtcp(self) -> None:
        """Send our reports every ~REPORT_INTERVAL s and read the far end's, until closed."""
        if self._rtcp_trio is None:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_rtcp)
            while not self.closed:
                interval = REPORT_INTERVAL * random.uniform(1 - REPORT_JITTER, 1 + REPORT_JITTER)
                with trio.move_on_after(interval):
                    await self._closing.wait()
                if self.closed:
                    break
                self._send_rtcp(self.rtcp.report(trio.current_time(), time.time()))
            nursery.cancel_scope.cancel()

    async def _read_rtcp(self) -> None:
        assert self._rtcp_trio is not None
        while not self.closed:
            try:
                data, source = await self._rtcp_trio.recvfrom(MAX_RTP_DATAGRAM)
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if self.closed or exc.errno == errno.EBADF:
                    return
                continue
            remote = self.filter.remote
            if remote is None or source[0] != remote[0]:
                continue  # RTCP only from the far end's media host
            self.rtcp.receive_rtcp(data, trio.current_time(), time.time())

    def _send_rtcp(self, data: bytes) -> None:
        remote = self.filter.remote
        if self._rtcp_std is None or remote is None:
            return
        try:
            self._rtcp_std.sendto(data, (remote[0], remote[1] + 1))
        except OSError as exc:
            self._log.debug("cannot send RTCP to %s:%d: %s", remote[0], remote[1] + 1, exc)

    def quality(self) -> MediaQuality:
        """Loss, jitter and round trip so far, as ``waihu.api.MediaQuality``."""
        session = self.rtcp
        stats = session.remote
        expected = stats.expected
        lost = max(0, stats.lost)
        rate_ms = 1000 / stats.clock_rate
        return MediaQuality(
            packets_sent=session.packets_sent,
            packets_received=stats.received,
            packets_lost=lost,
            loss_fraction=lost / expected if expected > 0 else 0.0,
            jitter_ms=stats.jitter * rate_ms,
            rtt_ms=None if session.rtt is None else session.rtt * 1000,
            remote_loss_fraction=session.remote_fraction_lost,
            remote_jitter_ms=(
                None if session.remote_jitter is None else session.remote_jitter * rate_ms
            ),
        )

    def close(self) -> None:
        """Close the sockets (after a last RTCP report with BYE); idempotent. A task waiting
        in ``receive`` gets ClosedResourceError."""
        if self.closed:
            return
        self.closed = True
        self._closing.set()
        if self._rtcp_trio is not None:
            if self.rtcp.packets_sent or self.rtcp.remote.received:
                self._send_rtcp(self.rtcp.report(trio.current_time(), time.time(), bye=True))
            self._rtcp_trio.close()
        self._trio.close()


_DROP_REASONS = {
    "malformed": "not an RTP packet",
    "foreign_host": "not the far end's media host",
    "foreign_port": "not the far end's media port (the stream is latched)",
    "payload_type": "payload type not negotiated",
    "probation": "another port of the far end's host, not (yet) a steady stream",
    "ssrc": "another SSRC, not (yet) a steady stream",
}


def open_media_socket(
    host: str,
    log: logging.Logger,
    port_range: tuple[int, int] | None = None,
    *,
    rtcp: bool = True,
) -> MediaSocket:
    """Bind an even UDP port on ``host`` (RFC 3550 §11), from ``port_range`` when given, and
    with ``rtcp`` the odd port above it too.

    Raises OSError when no such port (pair) could be bound.
    """
    last_error: OSError | None = None
    for _ in range(EVEN_PORT_ATTEMPTS):
        if port_range is None:
            wanted = 0
        else:
            low, high = port_range
            wanted = random.randrange((low + 1) // 2 * 2, high, 2)  # room for port + 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, wanted))
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        port = sock.getsockname()[1]
        if port % 2 != 0:
            sock.close()  # the kernel picked an odd port: try again
            continue
        if not rtcp:
            return MediaSocket(sock, log)
        rtcp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp_sock.bind((host, port + 1))
        except OSError as exc:
            rtcp_sock.close()
            sock.close()
            last_error = exc
            continue
        return MediaSocket(sock, log, rtcp_sock)
    raise OSError(f"no free even RTP port on {host}") from last_error
