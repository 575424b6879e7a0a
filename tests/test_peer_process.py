"""Starting the external SIP peers that tests run against (``waihu.testing.peer_process``).

A port picked as free can be taken by another socket before the peer binds
it. ``started_peer`` starts the peer again on fresh ports when its report
says so. The sipp test takes the port for real: the harness is made to pick
a port this test holds, and a real sipp fails to bind it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from waihu.testing import sipp
from waihu.testing.peer_process import PORT_TAKEN, held_by, started_peer

REAL_TIME_LIMIT = 30.0


async def test_sipp_is_started_again_when_its_port_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((sipp.HOST, 0))
        held = holder.getsockname()[1]
        free, free_media = sipp.free_udp_port, sipp.free_media_port
        state = {"media_picked": False, "handed": False}

        def pick_media(host: str = sipp.HOST) -> int:
            port = free_media(host)
            state["media_picked"] = True
            return port

        def pick(host: str = sipp.HOST) -> int:
            # the first start's first pick after its media block is its signalling port
            if state["media_picked"] and not state["handed"]:
                state["handed"] = True
                return held
            return free(host)

        monkeypatch.setattr(sipp, "free_media_port", pick_media)
        monkeypatch.setattr(sipp, "free_udp_port", pick)
        with trio.fail_after(REAL_TIME_LIMIT):
            async with sipp.sipp_peer("answer.xml", tmp_path) as peer:
                assert peer.port != held
                assert peer.process.poll() is None
    tried = sorted(tmp_path.glob("sipp-*"))
    assert len(tried) == 2  # the start that lost the port, and the one that got its own
    lost = next(path for path in tried if f"-p {held} " in (path / "command.txt").read_text())
    assert PORT_TAKEN in (lost / "stderr.txt").read_text()


class Failed(Exception):
    pass


def starts_failing_with(messages: list[str]):  # type: ignore[no-untyped-def]
    """A start that fails with each of ``messages`` in turn, then yields its attempt number."""
    attempts: list[int] = []

    @asynccontextmanager
    async def start() -> AsyncIterator[int]:
        attempts.append(len(attempts) + 1)
        if len(attempts) <= len(messages):
            raise Failed(messages[len(attempts) - 1])
        yield len(attempts)

    return start, attempts


async def test_a_peer_is_started_again_only_while_its_port_was_taken() -> None:
    start, attempts = starts_failing_with([f"x exited at start-up\n... {PORT_TAKEN}"])
    async with started_peer(start) as attempt:
        assert attempt == 2
    assert attempts == [1, 2]


async def test_any_other_start_failure_is_raised_at_once() -> None:
    start, attempts = starts_failing_with(["x did not bind 127.0.0.1:5060 within 5 s"])
    with pytest.raises(Failed, match="did not bind"):
        async with started_peer(start):
            pass
    assert attempts == [1]


async def test_a_port_taken_every_time_is_raised_after_the_last_try() -> None:
    start, attempts = starts_failing_with([PORT_TAKEN] * 5)
    with pytest.raises(Failed, match=PORT_TAKEN):
        async with started_peer(start, tries=3):
            pass
    assert attempts == [1, 2, 3]


async def test_held_by_tells_a_peers_port_from_a_strangers(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp.sipp_peer("answer.xml", tmp_path) as peer:
            pid = peer.process.pid
            assert held_by(pid, peer.host, peer.port) is True
            assert held_by(os.getpid(), peer.host, peer.port) is True  # sipp is our child
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ours:
                ours.bind((sipp.HOST, 0))
                assert held_by(pid, sipp.HOST, ours.getsockname()[1]) is False
                assert held_by(os.getpid(), sipp.HOST, ours.getsockname()[1]) is True
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as everywhere:
                everywhere.bind(("0.0.0.0", 0))  # holds the port on 127.0.0.1 too
                assert held_by(os.getpid(), sipp.HOST, everywhere.getsockname()[1]) is True
