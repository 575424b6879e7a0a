"""The RTP socket of one call: an even UDP port, non-blocking sends, filtered receives.

Sending never blocks (the one media clock of the daemon drives every call's
outgoing audio): a datagram the kernel will not take at once is dropped and
counted. Receiving accepts datagrams from the far end's media host only and
latches onto the port they actually come from (symmetric RTP), since NATs and
some gateways send from a port other than the one in their SDP.

Not for: RTP packet parsing or pacing (the core's media layer), RTCP (no
RTCP port is opened; peers cope with its absence).
"""

from __future__ import annotations

import errno
import logging
import random
import socket

import trio

from waihu_sip.transport import Address

__all__ = ["MediaSocket", "open_media_socket"]

MAX_RTP_DATAGRAM = 2048  # far above a 20 ms G.711 packet (172 bytes)
EVEN_PORT_ATTEMPTS = 64  # ports tried before giving up on finding an even one


class MediaSocket:
    """A bound RTP socket for one call."""

    def __init__(self, sock: socket.socket, log: logging.Logger) -> None:
        sock.setblocking(False)
        self._std = sock  # the stdlib object: sendto without trio, never blocking
        self._trio = trio.socket.from_stdlib_socket(sock)
        self._log = log
        self.remote: Address | None = None
        self._latched = False
        self.closed = False
        self.sent = 0
        self.send_dropped = 0
        self.foreign_dropped = 0

    @property
    def local_address(self) -> Address:
        """The bound (host, port)."""
        host, port = self._std.getsockname()[:2]
        return host, port

    def set_remote(self, remote: Address) -> None:
        """Send to ``remote`` and accept from its host; a new address re-arms the latch."""
        if remote != self.remote:
            self.remote = remote
            self._latched = False

    def send(self, datagram: bytes) -> None:
        """Send without blocking; dropped when closed, unaddressed or the socket is full."""
        if self.closed or self.remote is None:
            return
        try:
            self._std.sendto(datagram, self.remote)
            self.sent += 1
        except BlockingIOError:
            self.send_dropped += 1
        except OSError as exc:
            self.send_dropped += 1
            if self.send_dropped == 1:
                self._log.warning("cannot send RTP to %s:%d: %s", *self.remote, exc)

    async def receive(self) -> bytes:
        """The next datagram from the far end's media host.

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
            if self.remote is None or source[0] != self.remote[0]:
                self.foreign_dropped += 1
                if self.foreign_dropped == 1:
                    self._log.warning(
                        "dropped RTP from %s:%d: not the far end's media host", *source
                    )
                continue
            if source != self.remote and not self._latched:
                self._log.info("RTP latched to %s:%d (SDP said %s:%d)", *source, *self.remote)
                self.remote = source
            self._latched = True
            return data

    def close(self) -> None:
        """Close the socket; idempotent. A task waiting in ``receive`` gets ClosedResourceError."""
        if not self.closed:
            self.closed = True
            self._trio.close()


def open_media_socket(
    host: str, log: logging.Logger, port_range: tuple[int, int] | None = None
) -> MediaSocket:
    """Bind an even UDP port on ``host`` (RFC 3550 §11), from ``port_range`` when given.

    Raises OSError when no even port could be bound.
    """
    last_error: OSError | None = None
    for _ in range(EVEN_PORT_ATTEMPTS):
        if port_range is None:
            wanted = 0
        else:
            low, high = port_range
            wanted = random.randrange((low + 1) // 2 * 2, high + 1, 2)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((host, wanted))
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        if sock.getsockname()[1] % 2 == 0:
            return MediaSocket(sock, log)
        sock.close()  # the kernel picked an odd port: try again
    raise OSError(f"no free even RTP port on {host}") from last_error
