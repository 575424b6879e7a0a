"""Run an external SIP peer (sipp, baresip, kamailio) as a child process in tests.

The peer harnesses (``sipp``, ``baresip``, ``kamailio``) share these pieces:

- free ports on 127.0.0.1 (UDP, or UDP and TCP at once), so tests can run
  side by side;
- ``running_peer``: start the peer under trio with its command line in
  ``command.txt`` and its output in files, and stop it when the block ends;
- ``wait_until_bound``: return once it holds its UDP port, or fail with its
  logs if it exits first or takes too long;
- ``stop``: SIGTERM, a grace period, then SIGKILL; to the whole process group
  for a peer that forks workers.

What it is not: a harness. Each peer's command line, config files, ports and
failure reports are its own module's business.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Protocol

import trio

__all__ = [
    "HOST",
    "READY_POLL",
    "BoundPeer",
    "free_udp_port",
    "free_udp_tcp_port",
    "ports_free",
    "running_peer",
    "stop",
    "wait_until_bound",
]

HOST = "127.0.0.1"
READY_POLL = 0.02  # seconds between looks at whether the peer has bound its port
PORT_TRIES = 100  # free ports to try before giving up on one also free for TCP


class BoundPeer(Protocol):
    """A running peer as ``wait_until_bound`` sees it: its process and the UDP port it binds."""

    host: str
    port: int
    process: trio.Process


def free_udp_port(host: str = HOST) -> int:
    """A UDP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ports_free(host: str, ports: Iterable[int], kind: int = socket.SOCK_DGRAM) -> bool:
    """True when every one of ``ports`` can be bound on ``host`` right now (``kind``:
    ``socket.SOCK_DGRAM`` for UDP, ``socket.SOCK_STREAM`` for TCP)."""
    with ExitStack() as socks:
        try:
            for port in ports:
                socks.enter_context(socket.socket(socket.AF_INET, kind)).bind((host, port))
        except OSError:
            return False
        return True


def free_udp_tcp_port(host: str = HOST) -> int:
    """A port free for both UDP and TCP on ``host`` right now (for a peer listening on both)."""
    for _ in range(PORT_TRIES):
        port = free_udp_port(host)
        if ports_free(host, [port], socket.SOCK_STREAM):
            return port
    raise OSError(f"no port free for both UDP and TCP on {host}")


@asynccontextmanager
async def running_peer(
    args: Sequence[str],
    *,
    cwd: Path,
    stdout: Path,
    stderr: Path | None = None,
    stop_grace: float,
    process_group: bool = False,
) -> AsyncIterator[trio.Process]:
    """Run ``args`` in ``cwd`` for the duration of the block; ``stop`` it when the block ends.

    The command line goes to ``cwd / "command.txt"``, the output to the file
    ``stdout`` and the errors to the file ``stderr`` (or into ``stdout`` when
    it is None); standard input is /dev/null. With ``process_group`` the peer
    leads a process group of its own and is stopped as a group.
    """
    (cwd / "command.txt").write_text(" ".join(args) + "\n")
    with ExitStack() as files:
        out = files.enter_context(stdout.open("wb"))
        err = subprocess.STDOUT if stderr is None else files.enter_context(stderr.open("wb"))
        process = await trio.lowlevel.open_process(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            start_new_session=process_group,
        )
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            await stop(process, stop_grace, process_group=process_group)


async def wait_until_bound(
    peer: BoundPeer,
    *,
    name: str,
    timeout: float,
    report: Callable[[], str],
    failure: type[Exception] = AssertionError,
) -> None:
    """Return once ``peer``'s process holds UDP ``peer.port`` on ``peer.host``.

    Raises ``failure`` ("NAME exited at start-up" or "NAME did not bind
    HOST:PORT within TIMEOUT s") followed by ``report()`` when the process
    exits first or ``timeout`` seconds pass; an empty report adds nothing.
    """
    with trio.move_on_after(timeout):
        while True:
            if peer.process.poll() is not None:
                raise failure(_with_report(f"{name} exited at start-up", report()))
            if not ports_free(peer.host, [peer.port]):
                return
            await trio.sleep(READY_POLL)
    hostport = f"{peer.host}:{peer.port}"
    raise failure(_with_report(f"{name} did not bind {hostport} within {timeout} s", report()))


def _with_report(headline: str, report: str) -> str:
    return f"{headline}\n{report}" if report else headline


async def stop(process: trio.Process, grace: float, *, process_group: bool = False) -> None:
    """Stop a peer: SIGTERM, up to ``grace`` seconds to exit, then SIGKILL.

    With ``process_group`` both signals go to the group the peer leads (see
    ``running_peer``), and the SIGKILL goes even when the leader has exited,
    for any child it left behind.
    """
    if process.poll() is not None and not process_group:
        return
    _send(process, signal.SIGTERM, process_group)
    with trio.move_on_after(grace):
        await process.wait()
    if process_group or process.poll() is None:
        _send(process, signal.SIGKILL, process_group)
        await process.wait()


def _send(process: trio.Process, signum: int, process_group: bool) -> None:
    if not process_group:
        process.send_signal(signum)
        return
    try:
        os.killpg(process.pid, signum)  # the group leader's pid is the group's id
    except ProcessLookupError:
        pass  # the whole group is gone already
