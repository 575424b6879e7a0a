"""Run an external SIP peer (sipp, baresip, kamailio) as a child process in tests.

The peer harnesses (``sipp``, ``baresip``, ``kamailio``) share these pieces:

- free ports on 127.0.0.1 (UDP, or UDP and TCP at once), so tests can run
  side by side;
- ``running_peer``: start the peer under trio with its command line in
  ``command.txt`` and its output in files, and stop it when the block ends;
- ``wait_until_bound``: return once it holds its UDP port, or fail with its
  logs if it exits first or takes too long;
- ``started_peer``: start it again on fresh ports when another socket took a
  port between our choosing it and the peer binding it (a free port is only
  free when it is looked at);
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
from contextlib import AbstractAsyncContextManager, AsyncExitStack, ExitStack, asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import trio

__all__ = [
    "HOST",
    "READY_POLL",
    "BoundPeer",
    "free_udp_port",
    "free_udp_tcp_port",
    "held_by",
    "ports_free",
    "running_peer",
    "started_peer",
    "stop",
    "wait_until_bound",
]

HOST = "127.0.0.1"
READY_POLL = 0.02  # seconds between looks at whether the peer has bound its port
PORT_TRIES = 100  # free ports to try before giving up on one also free for TCP
START_TRIES = 3  # starts of a peer that lost its port to another socket before giving up
PORT_TAKEN = "Address already in use"  # strerror(EADDRINUSE), as sipp, baresip and kamailio log it

T = TypeVar("T")


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
    A port held by some other process is not the peer's: it is waited past
    (the peer will fail to bind it and exit), and named in the timeout failure.
    """
    stranger = False
    with trio.move_on_after(timeout):
        while True:
            if peer.process.poll() is not None:
                raise failure(_with_report(f"{name} exited at start-up", report()))
            if not ports_free(peer.host, [peer.port]):
                stranger = held_by(peer.process.pid, peer.host, peer.port) is False
                if not stranger:
                    return
            await trio.sleep(READY_POLL)
    hostport = f"{peer.host}:{peer.port}"
    why = f": another process holds it ({PORT_TAKEN})" if stranger else ""
    raise failure(_with_report(f"{name} did not bind {hostport} within {timeout} s{why}", report()))


def held_by(pid: int, host: str, port: int) -> bool | None:
    """Whether process ``pid`` or one of its descendants holds UDP ``host:port``.

    Read from /proc (the socket's inode in /proc/net/udp, the processes'
    open files); None where /proc cannot tell, e.g. not Linux.
    """
    try:
        table = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    wanted = {
        f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
        for address in (host, "0.0.0.0")
    }
    sockets = {f"socket:[{fields[9]}]" for fields in map(str.split, table) if fields[1] in wanted}
    for process in _descendants(pid):
        if sockets & _open_files(process):
            return True
    return False


def _open_files(pid: int) -> set[str]:
    """What the open file descriptors of ``pid`` point at; empty once it has ended."""
    opened = set()
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return opened
    for fd in descriptors:
        try:
            opened.add(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, for one)
    return opened


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name in (…) may hold spaces: the parent pid is the second field after it
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


@asynccontextmanager
async def started_peer(
    start: Callable[[], AbstractAsyncContextManager[T]], *, tries: int = START_TRIES
) -> AsyncIterator[T]:
    """Enter ``start()`` (a peer that picks its free ports and waits until bound) for the block.

    A port is free only at the moment it is looked at: another socket can take
    it before the peer binds it. When the start fails with the peer's report
    saying so (``PORT_TAKEN``), the peer is started again, with ports picked
    afresh, up to ``tries`` times in all; any other failure is raised at once.
    """
    for attempt in range(1, tries + 1):
        async with AsyncExitStack() as stack:
            try:
                peer = await stack.enter_async_context(start())
            except Exception as failure:
                if attempt < tries and PORT_TAKEN in str(failure):
                    continue
                raise
            yield peer
            return


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
