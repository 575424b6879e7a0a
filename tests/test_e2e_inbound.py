"""End to end: people call the robot. A real waihud takes sipp's calls over loopback.

Each test starts ``waihud`` as a child process with one trunk that lists the
number 4001 and an ``[inbound]`` table giving it the demo script, then starts
sipp as the *caller* (``contrib/sipp/call_in*.xml``, a UAC sent to the trunk's
port, which the daemon's log names). The record is read back the way an
operator reads it — ``waihuctl calls`` and ``waihuctl call show`` as processes —
and from the SQLite file itself. Speech is espeak-ng streamed by sipp and
recognised by the real vosk model. Deadlines are generous: the machine is shared.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from waihu.testing.daemon import DaemonUnderTest, running_waihud, write_config
from waihu.testing.sipp import Play, SippPeer, sipp_peer
from waihu.testing.speech import synthesize, to_ulaw

pytestmark = pytest.mark.e2e

NUMBER = "4001"  # the number the trunk takes calls for
CALLER = "13900001111"  # the caller's user in contrib/sipp/call_in*.xml
AFTER_GREETING_MS = 7500  # the demo greeting lasts about 6.4 s
CALL_TIMEOUT = 120.0
UNUSED_PROXY = "127.0.0.1:9"  # nothing is dialled out in these tests
TRUNK_LINE = re.compile(r"SIP trunk on 127\.0\.0\.1:(\d+)")


def inbound_config(tmp_path: Path, *, answer_after: float = 0.0) -> Path:
    """waihud.toml: trunk ``loopback`` takes calls for NUMBER, answered with demo-ko."""
    inbound = (
        f'[inbound]\nanswer_after = {answer_after}\n[inbound.numbers]\n"{NUMBER}" = "demo-ko"\n'
    )
    return write_config(
        tmp_path / "waihud", proxy=UNUSED_PROXY, trunk={"numbers": [NUMBER]}, extra=inbound
    )


@asynccontextmanager
async def inbound_daemon(tmp_path: Path, **options: float) -> AsyncIterator[DaemonUnderTest]:
    async with running_waihud(inbound_config(tmp_path, **options)) as daemon:
        yield daemon


def trunk_port(daemon: DaemonUnderTest) -> int:
    """The port the daemon's trunk bound (it was configured as 0), from its log."""
    found = TRUNK_LINE.search(daemon.log_text())
    assert found, daemon.log_text()[-3000:]
    return int(found.group(1))


@asynccontextmanager
async def calling(
    daemon: DaemonUnderTest, tmp_path: Path, scenario: str, number: str = NUMBER, **options: object
) -> AsyncIterator[SippPeer]:
    """sipp calling ``number`` at the daemon's trunk with ``scenario`` (one call)."""
    keys = {"formats": "0 8 101", **options.pop("keys", {})}  # type: ignore[dict-item]
    async with sipp_peer(
        scenario,
        tmp_path,
        keys=keys,
        timeout=CALL_TIMEOUT,
        extra_args=[f"127.0.0.1:{trunk_port(daemon)}", "-s", number],
        **options,  # type: ignore[arg-type]
    ) as peer:
        yield peer


async def waihuctl(daemon: DaemonUnderTest, *argv: str) -> str:
    """``waihuctl --socket … ARGV`` as a process; its stdout (it must succeed)."""
    done = await trio.run_process(
        [sys.executable, "-m", "waihu.control.client", "--socket", str(daemon.socket), *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def only_call(daemon: DaemonUnderTest) -> dict:
    """The one call the daemon has filed, once it is over."""
    with trio.fail_after(CALL_TIMEOUT):
        while not (calls := await daemon.request("calls")):
            await trio.sleep(0.2)
    assert len(calls) == 1, calls
    return await daemon.wait_call(calls[0]["id"], timeout=CALL_TIMEOUT)


def stored(database: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(database)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("select * from calls").fetchall()
    finally:
        db.close()


async def test_a_caller_hears_the_script_and_the_call_is_filed_inbound(tmp_path: Path) -> None:
    yes = to_ulaw(synthesize("네"), tmp_path / "yes.ul")
    with trio.fail_after(CALL_TIMEOUT + 90):
        async with inbound_daemon(tmp_path) as daemon:
            async with calling(
                daemon, tmp_path, "call_in.xml", plays=[Play(AFTER_GREETING_MS, yes)]
            ) as peer:
                record = await only_call(daemon)
                result = await peer.wait()
            listed = await waihuctl(daemon, "calls")
            shown = await waihuctl(daemon, "call", "show", record["id"])
            assert await daemon.stop() == 0, daemon.log_text()[-3000:]
    result.check()  # 180, 200, and the robot's BYE after its closing line
    assert (record["direction"], record["number"], record["trunk"]) == (
        "inbound",
        CALLER,
        "loopback",
    )
    assert (record["status"], record["sip_status"], record["hangup_by"]) == ("ended", 200, "robot")
    robot = [t["node"] for t in record["turns"] if t["speaker"] == "robot"]
    assert robot == ["greeting", "bye_interested"]  # the script spoke, heard 네, said goodbye
    callee = [(t["text"], t["intent"]) for t in record["turns"] if t["speaker"] == "callee"]
    assert callee == [("네", "affirm")] and record["grade"] == "A"
    assert record["id"] in listed and CALLER in listed
    assert re.search(r"direction\s+inbound", shown) and "demo-ko" in shown
    (row,) = stored(daemon.database)
    assert (row["id"], row["direction"], row["number"]) == (record["id"], "inbound", CALLER)


async def test_a_number_not_configured_gets_404_and_nothing_is_filed(tmp_path: Path) -> None:
    with trio.fail_after(CALL_TIMEOUT):
        async with inbound_daemon(tmp_path) as daemon:
            async with calling(
                daemon, tmp_path, "call_in_refused.xml", number="4009", keys={"status": "404"}
            ) as peer:
                result = await peer.wait()
            assert await daemon.request("calls") == []
            assert await daemon.stop() == 0, daemon.log_text()[-3000:]
    result.check()
    assert stored(daemon.database) == []


async def test_a_caller_who_hangs_up_while_it_rings_is_filed_so(tmp_path: Path) -> None:
    with trio.fail_after(CALL_TIMEOUT):
        async with inbound_daemon(tmp_path, answer_after=20.0) as daemon:
            async with calling(
                daemon, tmp_path, "call_in_cancel.xml", keys={"cancel_after_ms": "1000"}
            ) as peer:
                record = await only_call(daemon)
                result = await peer.wait()
            assert await daemon.stop() == 0, daemon.log_text()[-3000:]
    result.check()  # 200 to the CANCEL, 487 to the INVITE, and its ACK
    assert (record["direction"], record["number"]) == ("inbound", CALLER)
    assert (record["status"], record["sip_status"], record["hangup_by"]) == (
        "failed",
        487,
        "callee",
    )
    assert record["answered_at"] is None and record["turns"] == []
    assert "hung up before it was answered" in record["error"]
    assert record["ended_at"] - record["created_at"] < 10.0  # not the 20 s it would have rung
    (row,) = stored(daemon.database)
    assert (row["status"], row["direction"]) == ("failed", "inbound")
