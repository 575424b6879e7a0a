"""sipp over TCP, and a TLS front for it, as far ends in tests and benchmarks.

Usage::

    async with sipp_tcp("answer.xml", tmp_path) as callee:      # sipp -t t1
        config = SipTrunk.Config(proxy=callee.hostport, transport="tcp", ...)
        ...
        assert await callee.wait() == 0, callee.report()

- ``sipp_tcp``: sipp with ``-t t1`` (one TCP connection per peer, answered on
  the connection it came on) running a scenario from ``contrib/sipp``, like
  ``waihu.testing.sipp.sipp_peer`` (free ports, rendered scenario, logs in its
  own directory, stopped when the block ends) but waiting for its TCP port:
  sipp listens on one transport per instance. ``contact`` rewrites the
  scenario's ``Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>``
  so that in-dialog requests go elsewhere (to a TLS front).
- ``tls_front``: this machine's sipp has no TLS (``sipp -v`` lists SCTP, PCAP
  and RTPSTREAM only), so ``socat`` (Debian ``socat``) terminates TLS with a
  certificate file and relays every connection to a ``sipp_tcp``. The trunk
  talks real TLS to a real TLS server; sipp sees plain TCP.

What it is not: a TLS or SIP implementation of its own; certificates are the
caller's (tests make them with ``trustme``).
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

from waihu.testing.peer_process import HOST, free_udp_tcp_port, ports_free, running_peer
from waihu.testing.sipp import DEFAULT_KEYS, SCENARIOS, SIPP, free_media_port, render_scenario

__all__ = ["StreamPeer", "sipp_tcp", "tls_front"]

SOCAT = shutil.which("socat") or "socat"
READY_TIMEOUT = 10.0  # seconds for a peer to listen
READY_POLL = 0.02  # seconds between looks at whether it listens
STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL = 6000  # characters of each log shown in a failure report
_CONTACT = re.compile(r"Contact: <sip:callee@\[local_ip\]:\[local_port\];transport=\[transport\]>")


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
                parts.append(
                    f"──── {path.name} ────\n{path.read_text(errors='replace')[-LOG_TAIL:]}"
                )
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
    trace: bool = True,
) -> AsyncIterator[StreamPeer]:
    """sipp over TCP (``-t t1``) as a UAS running ``contrib/sipp/SCENARIO`` on a free port.

    ``contact`` (``host:port;params``) replaces where the scenario's Contact says the
    callee is: behind a TLS front, in-dialog requests must go to the front too.
    ``trace`` keeps sipp's message trace (``messages``); benchmarks turn it off.
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
        *(["-trace_msg", "-message_file", str(workdir / "messages.log")] if trace else []),
        *extra_args,
    ]  # fmt: skip
    async with running_peer(
        args, cwd=workdir, stdout=workdir / "stdout.txt", stop_grace=STOP_GRACE
    ) as process:
        peer = StreamPeer(HOST, port, workdir, process)
        await _wait_listening(peer, "sipp")
        yield peer


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
