"""Far ends over TCP and TLS for the transport tests: sipp on TCP, a TLS front for it, and a
hand-driven TCP socket.

- ``sipp_tcp``: sipp (``-t t1``: one TCP connection per peer, answered on the
  connection it came on) running a scenario from ``contrib/sipp``, like
  ``waihu.testing.sipp.sipp_peer`` but waiting for its TCP port.
- ``tls_front``: this machine's sipp has no TLS (``sipp -v`` lists SCTP, PCAP
  and RTPSTREAM only), so ``socat`` terminates TLS with a certificate made at
  test time by ``trustme`` and relays every connection to a ``sipp_tcp``. The
  trunk talks real TLS to a real TLS server; sipp sees plain TCP.
- ``TcpPeer``: a plain TCP connection a test scripts byte by byte, for what no
  SIP peer does on demand (split a message across writes, send two in one,
  leave out Content-Length, send a keep-alive). Tests using it say so.

What it is not: a SIP implementation; the scripted peer only moves bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
import trustme

from waihu.testing.peer_process import HOST, free_udp_tcp_port, ports_free, running_peer
from waihu.testing.sipp import DEFAULT_KEYS, SCENARIOS, SIPP, free_media_port, render_scenario
from waihu_sip.message import SipRequest, SipResponse, parse_message
from waihu_sip.stream import StreamFramer

SOCAT = shutil.which("socat") or "socat"
READY_TIMEOUT = 10.0  # seconds for a peer to listen
READY_POLL = 0.02
_CONTACT = re.compile(r"Contact: <sip:callee@\[local_ip\]:\[local_port\];transport=\[transport\]>")
STOP_GRACE = 2.0


@attrs.define
class StreamPeer:
    """A running far end listening on TCP: where, and its process and files."""

    host: str
    port: int
    workdir: Path
    process: trio.Process

    @property
    def hostport(self) -> str:
        """``host:port`` to set as a trunk's proxy."""
        return f"{self.host}:{self.port}"

    def messages(self) -> str:
        """sipp's message trace so far (what it sent and received)."""
        path = self.workdir / "messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait(self) -> int:
        """Wait for the process to exit; its exit code (sipp: 0 = the scenario passed)."""
        return await self.process.wait()

    def report(self) -> str:
        """Every log of the peer, for a failure message."""
        parts = []
        for path in sorted(self.workdir.iterdir()):
            if path.suffix in (".log", ".txt"):
                parts.append(f"──── {path.name} ────\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)


async def _wait_listening(peer: StreamPeer, name: str) -> None:
    with trio.move_on_after(READY_TIMEOUT):
        while True:
            if peer.process.poll() is not None:
                raise AssertionError(f"{name} exited at start-up\n{peer.report()}")
            if not ports_free(peer.host, [peer.port], socket.SOCK_STREAM):
                return
            await trio.sleep(READY_POLL)
    raise AssertionError(f"{name} did not listen on {peer.hostport}\n{peer.report()}")


@asynccontextmanager
async def sipp_tcp(
    scenario: str,
    tmp_path: Path,
    *,
    keys: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
    contact: str | None = None,
) -> AsyncIterator[StreamPeer]:
    """sipp over TCP (``-t t1``) as a UAS running ``contrib/sipp/SCENARIO`` on a free port.

    ``contact`` (``host:port;params``) replaces where the scenario's Contact says the
    callee is: behind a TLS front, in-dialog requests must go to the front too.
    """
    source = SCENARIOS / scenario
    workdir = tmp_path / f"sipp-tcp-{source.stem}-{os.getpid()}-{free_udp_tcp_port()}"
    workdir.mkdir(parents=True)
    rendered = workdir / source.name
    text = render_scenario(source.read_text(), {**DEFAULT_KEYS, **(keys or {})})
    if contact is not None:
        text = _CONTACT.sub(f"Contact: <sip:callee@{contact}>", text)
    rendered.write_text(text)
    port, control = free_udp_tcp_port(), free_udp_tcp_port()
    args = [
        SIPP, "-sf", str(rendered), "-t", "t1",
        "-i", HOST, "-p", str(port),
        "-mi", HOST, "-mp", str(free_media_port()),
        "-ci", HOST, "-cp", str(control),
        "-m", "1", "-nostdin",
        "-timeout", f"{int(timeout)}s", "-timeout_error",
        "-trace_err", "-error_file", str(workdir / "errors.log"),
        "-trace_msg", "-message_file", str(workdir / "messages.log"),
        *extra_args,
    ]  # fmt: skip
    async with running_peer(
        args, cwd=workdir, stdout=workdir / "stdout.txt", stop_grace=STOP_GRACE
    ) as process:
        peer = StreamPeer(HOST, port, workdir, process)
        await _wait_listening(peer, "sipp")
        yield peer


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


@asynccontextmanager
async def tls_front(backend: StreamPeer, certificate: Path, port: int) -> AsyncIterator[StreamPeer]:
    """socat accepting TLS with ``certificate`` on ``port`` and relaying to ``backend``
    (start ``backend`` with ``contact=f"127.0.0.1:{port};transport=tls"``)."""
    workdir = backend.workdir
    args = [
        SOCAT, "-d", "-d",
        f"OPENSSL-LISTEN:{port},bind={HOST},reuseaddr,fork,cert={certificate},verify=0",
        f"TCP:{backend.host}:{backend.port}",
    ]  # fmt: skip
    async with running_peer(
        args, cwd=workdir, stdout=workdir / "socat.txt", stop_grace=STOP_GRACE, process_group=True
    ) as process:
        peer = StreamPeer(HOST, port, workdir, process)
        await _wait_listening(peer, "socat")
        yield peer


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
