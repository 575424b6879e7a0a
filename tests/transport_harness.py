"""Far ends over TLS and TCP for the transport tests, on top of ``waihu.testing.sipp_stream``.

- ``make_certificates``: a CA and a server certificate made at test time by
  ``trustme`` (for ``tls_front`` and a trunk's ``tls_ca``).
- ``TcpPeer``: a plain TCP connection a test scripts byte by byte, for what no
  SIP peer does on demand (split a message across writes, send two in one,
  leave out Content-Length, send a keep-alive). Tests using it say so.

What it is not: a SIP implementation; the scripted peer only moves bytes.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import trio
import trustme

from waihu.testing.sipp_stream import StreamPeer, sipp_tcp, tls_front
from waihu_sip.message import SipRequest, SipResponse, parse_message
from waihu_sip.stream import StreamFramer

__all__ = ["StreamPeer", "TcpPeer", "TlsFiles", "make_certificates", "sipp_tcp", "tls_front"]


@attrs.frozen
class TlsFiles:
    """A CA and a server certificate for ``name``, written as PEM files."""

    ca: Path  # what a trunk's tls_ca points at to trust the server
    server_pem: Path  # the server's certificate chain and key, for socat


def make_certificates(directory: Path, name: str = "sip.test", *, ca_name: str = "ca") -> TlsFiles:
    """A fresh CA (``trustme``) and a certificate it issues for ``name``."""
    authority = trustme.CA()
    server = authority.issue_cert(name)
    directory.mkdir(parents=True, exist_ok=True)
    ca = directory / f"{ca_name}.pem"
    authority.cert_pem.write_to_path(str(ca))
    server_pem = directory / f"{name}-{ca_name}.pem"
    server.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    return TlsFiles(ca=ca, server_pem=server_pem)


class TcpPeer:
    """One TCP connection to the trunk that a test drives by hand (not a SIP implementation)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._framer = StreamFramer()
        self._pending: list[bytes | str] = []

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> TcpPeer:
        """Open a connection to ``address``."""
        return cls(await trio.open_tcp_stream(*address))

    @property
    def address(self) -> str:
        """Our ``host:port`` as the trunk sees it."""
        host, port = self.stream.socket.getsockname()[:2]
        return f"{host}:{port}"

    async def send(self, data: bytes) -> None:
        """Write raw bytes."""
        await self.stream.send_all(data)

    async def receive_frame(self) -> bytes | str:
        """The next whole message (bytes) or keep-alive; raises EOFError when closed."""
        while not self._pending:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the trunk closed the connection")
            self._pending.extend(self._framer.feed(data))
        return self._pending.pop(0)

    async def receive(self) -> SipRequest | SipResponse:
        """The next SIP message."""
        frame = await self.receive_frame()
        assert isinstance(frame, bytes), f"expected a message, got {frame!r}"
        return parse_message(frame)

    async def receive_raw(self) -> bytes:
        """The next bytes as they come, unframed; b"" when the trunk closed the connection."""
        return await self.stream.receive_some(65536)

    async def aclose(self) -> None:
        """Close the connection."""
        await self.stream.aclose()
