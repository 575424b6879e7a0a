"""The daemon's life cycle with real processes: drain on SIGTERM, start-up failures,
``waihuctl watch`` following a real call, and a call cut off by ``kill -9`` reconciled at
the next start."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from waihu.control.protocol import ControlError
from waihu.daemon import HEARTBEAT_SECONDS
from waihu.testing.daemon import SCRIPTS_DIR, running_waihud, write_config
from waihu.testing.sipp import sipp_peer

pytestmark = pytest.mark.e2e


async def test_sigterm_drains_then_hangs_up_live_calls_cleanly(tmp_path: Path) -> None:
    """A live call outlasting the drain deadline is hung up with a BYE and filed; exit 0."""
    with trio.fail_after(150):
        async with sipp_peer("answer.xml", tmp_path, keys={"bye_wait_ms": "60000"}) as peer:
            config = write_config(
                tmp_path / "waihud", proxy=peer.hostport, daemon={"drain_timeout": 2.0}
            )
            async with running_waihud(config) as daemon:
                call = await daemon.request("call", target="1001", script="demo-ko")
                with trio.fail_after(30):
                    while (await daemon.request("call.show", id=call["call_id"]))[
                        "status"
                    ] != "answered":
                        await trio.sleep(0.1)
                daemon.process.send_signal(signal.SIGTERM)
                await trio.sleep(0.5)
                # draining: no new calls
                with pytest.raises(ControlError) as refused:
                    await daemon.request("call", target="1001", script="demo-ko")
                assert refused.value.code == "unavailable"
                assert await daemon.stop() == 0
            (await peer.wait()).check()  # sipp received the BYE and answered it
    log = daemon.log_text()
    assert "drain deadline: hanging up 1 call(s)" in log
    # the record was filed before the daemon exited: read it from the database directly
    import sqlite3

    db = sqlite3.connect(daemon.database)
    status, hangup_by, error = db.execute(
        "select status, hangup_by, error from calls where id = ?", (call["call_id"],)
    ).fetchone()
    assert (status, hangup_by) == ("ended", "robot")
    assert "shutting down" in error


async def test_sigterm_with_calls_ringing_cancels_each_acks_each_487_and_files_them(
    tmp_path: Path,
) -> None:
    """Three calls ringing (three sipp callees that never answer, one per trunk) when the
    drain deadline passes: each gets a CANCEL and its 487 is ACKed before waihud exits —
    each sipp passes only then — and each call is filed, interrupted by the shutdown. The
    callees answer the CANCEL at once but take 1.5 s to send the 487, as a slow carrier
    does: stopping must wait for it."""
    names = ("one", "two", "three")
    with trio.fail_after(150):
        async with contextlib.AsyncExitStack() as stack:
            peers = [
                await stack.enter_async_context(
                    sipp_peer(
                        "no_answer.xml",
                        tmp_path / name,
                        keys={"cancel_wait_ms": "60000", "terminate_delay_ms": "1500"},
                    )
                )
                for name in names
            ]
            config = write_config(
                tmp_path / "waihud",
                proxy={name: peer.hostport for name, peer in zip(names, peers, strict=True)},
                daemon={"drain_timeout": 1.0},
            )
            async with running_waihud(config) as daemon:
                ids = [
                    (await daemon.request("call", target="1001", script="demo-ko", trunk=name))[
                        "call_id"
                    ]
                    for name in names
                ]
                with trio.fail_after(30):
                    for call_id in ids:
                        while (await daemon.request("call.show", id=call_id))[
                            "status"
                        ] != "ringing":
                            await trio.sleep(0.1)
                assert await daemon.stop() == 0
            for peer in peers:
                (await peer.wait()).check()  # CANCEL came, and the ACK for the 487
    import sqlite3

    db = sqlite3.connect(daemon.database)
    rows = db.execute(
        f"select status, outcome, error from calls where id in ({','.join('?' * len(ids))})",
        ids,
    ).fetchall()
    assert len(rows) == 3
    for status, outcome, error in rows:
        assert (status, outcome) == ("failed", "interrupted")
        assert "shutting down" in error


async def test_an_operator_hangs_up_a_ringing_call_with_cancel(tmp_path: Path) -> None:
    """``call.hangup`` (``waihuctl call hangup``) on a ringing call: CANCEL, 487 ACKed,
    filed as hung up by the operator; the daemon carries on."""
    with trio.fail_after(120):
        async with sipp_peer("no_answer.xml", tmp_path, keys={"cancel_wait_ms": "60000"}) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as daemon:
                call_id = (await daemon.request("call", target="1001", script="demo-ko"))["call_id"]
                with trio.fail_after(30):
                    while (await daemon.request("call.show", id=call_id))["status"] != "ringing":
                        await trio.sleep(0.1)
                answer = await daemon.request("call.hangup", id=call_id[:8])
                assert answer == {"call_id": call_id, "was": "ringing"}
                record = await daemon.wait_call(call_id, timeout=30)
                with pytest.raises(ControlError) as over:
                    await daemon.request("call.hangup", id=call_id)
                assert over.value.code == "unavailable"
                with pytest.raises(ControlError) as no_dtmf:
                    await daemon.request("call.dtmf", id=call_id, digits="1")
                assert no_dtmf.value.code == "unavailable"
                (await peer.wait()).check()
    assert (record["status"], record["sip_status"]) == ("failed", 487)
    assert record["error"] == "hung up by the operator while it rang"


def test_config_error_at_start_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, proxy="127.0.0.1:5999", media={"vad_aggressiveness": 9})
    run = subprocess.run(
        [sys.executable, "-m", "waihu.daemon", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 78
    assert f"{config}: media.vad_aggressiveness: must be one of 0, 1, 2, 3, not 9" in run.stderr


def test_missing_speech_model_stops_start_up_naming_the_path(tmp_path: Path) -> None:
    config = write_config(tmp_path, proxy="127.0.0.1:5999", model=str(tmp_path / "no-model"))
    run = subprocess.run(
        [sys.executable, "-m", "waihu.daemon", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 78, run.stderr  # a configuration error: systemd does not retry
    assert f"asr.default.model: model directory {tmp_path / 'no-model'}" in run.stderr
    assert "Traceback" not in run.stderr


async def test_sighup_reloads_scripts_and_reports_broken_ones(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS_DIR / "prompts", scripts / "prompts")
    demo = (SCRIPTS_DIR / "demo-ko.toml").read_text(encoding="utf-8")
    (scripts / "demo-ko.toml").write_text(demo, encoding="utf-8")
    config = write_config(tmp_path / "waihud", proxy="127.0.0.1:5999", scripts_dir=scripts)
    with trio.fail_after(120):
        async with running_waihud(config) as daemon:
            assert (await daemon.request("status"))["scripts"] == ["demo-ko"]
            (scripts / "second.toml").write_text(
                demo.replace('name = "demo-ko"', 'name = "second"'), encoding="utf-8"
            )
            (scripts / "broken.toml").write_text(
                demo.replace('default = "bye_unclear"', 'default = "bye_unclaer"'),
                encoding="utf-8",
            )
            daemon.process.send_signal(signal.SIGHUP)
            while "second" not in (status := await daemon.request("status"))["scripts"]:
                await trio.sleep(0.1)
            assert status["scripts"] == ["demo-ko", "second"]
            (broken,) = status["script_errors"]
            assert (broken["file"], broken["in_use"]) == (str(scripts / "broken.toml"), None)
            (problem,) = [p for p in broken["problems"] if "bye_unclaer" in p]
            assert "nodes.ask_again.on.default: no node named 'bye_unclaer'" in problem
            # a call naming the broken script is refused with a clear error
            with pytest.raises(ControlError, match="no script named 'broken'"):
                await daemon.request("call", target="x", script="broken")
            assert await daemon.stop() == 0


async def test_watch_follows_a_busy_call_from_dialing_to_failed(tmp_path: Path) -> None:
    """``waihuctl --json watch`` (a real process) against real waihud; sipp answers 486."""
    with trio.fail_after(150):
        async with sipp_peer("busy.xml", tmp_path) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as daemon:
                watcher = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "waihu.control.client", "--socket", str(daemon.socket),
                     "--json", "watch"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )  # fmt: skip
                try:
                    assert watcher.stdout is not None and watcher.stderr is not None
                    header = b""
                    while not header.endswith(b"\n"):  # subscribed: nothing is missed now
                        header += await watcher.stderr.receive_some(4096)
                    call = await daemon.request("call", target="1001", script="demo-ko")
                    events: list[dict] = []
                    buffer = b""
                    while not events or events[-1]["event"] != "failed":
                        chunk = await watcher.stdout.receive_some(65536)
                        assert chunk, "waihuctl watch stopped"
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        events += [json.loads(line) for line in lines]
                    watcher.send_signal(signal.SIGINT)
                    assert await watcher.wait() == 130
                finally:
                    if watcher.poll() is None:
                        watcher.kill()
                        await watcher.wait()
                with pytest.raises(ControlError, match="has ended; 'call show"):
                    await daemon.request("watch", call_id=call["call_id"])
                assert await daemon.stop() == 0
            (await peer.wait()).check()
    assert header == b"waihuctl: watching all calls (0 live now); Ctrl-C to stop\n"
    assert {e["call_id"] for e in events} == {call["call_id"]}
    kinds = [e["event"] for e in events]
    assert kinds[0] == "dialing" and kinds[-1] == "failed"
    assert set(kinds[1:-1]) <= {"ringing"}  # provisional responses, if the trunk reports them
    assert events[0]["number"] == "1001" and events[0]["script"] == "demo-ko"
    assert events[-1]["sip_status"] == 486 and events[-1]["grade"] is None


async def test_locked_database_loses_no_result_and_the_daemon_carries_on(tmp_path: Path) -> None:
    """Another process holds the database locked: the result goes to the log; calls go on."""
    import json
    import sqlite3

    with trio.fail_after(150):
        async with (
            sipp_peer("busy.xml", tmp_path / "first") as first,
            sipp_peer("busy.xml", tmp_path / "second") as second,
        ):
            config = write_config(
                tmp_path / "waihud",
                proxy={"first": first.hostport, "second": second.hostport},
                storage={"busy_timeout_ms": 200},
            )
            async with running_waihud(config) as daemon:
                locker = sqlite3.connect(daemon.database, isolation_level=None)
                locker.execute("BEGIN EXCLUSIVE")
                try:
                    call = await daemon.request(
                        "call", target="1001", script="demo-ko", trunk="first"
                    )
                    unsaved_mark = f"call {call['call_id']}: unsaved record: "
                    with trio.fail_after(30):
                        while unsaved_mark not in daemon.log_text():
                            await trio.sleep(0.1)
                finally:
                    locker.execute("ROLLBACK")
                    locker.close()
                line = next(ln for ln in daemon.log_text().splitlines() if unsaved_mark in ln)
                unsaved = json.loads(line.split(unsaved_mark, 1)[1])
                assert (unsaved["id"], unsaved["status"], unsaved["sip_status"]) == (
                    call["call_id"], "failed", 486
                )  # fmt: skip
                # the daemon carries on and files the next call normally
                again = await daemon.request(
                    "call", target="1001", script="demo-ko", trunk="second"
                )
                record = await daemon.wait_call(again["call_id"])
                assert (record["status"], record["sip_status"]) == ("failed", 486)
                assert await daemon.stop() == 0
    db = sqlite3.connect(daemon.database)
    ids = {row[0] for row in db.execute("select id from calls")}
    assert again["call_id"] in ids


async def test_a_call_cut_off_by_kill_9_is_reconciled_at_the_next_start(tmp_path: Path) -> None:
    """The daemon dies mid-call; restarted on the same state, it files the call as ended,
    cut off, at its last heartbeat — no later than the kill."""
    with trio.fail_after(240):
        async with sipp_peer("answer.xml", tmp_path, keys={"bye_wait_ms": "60000"}) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as first:
                call = await first.request("call", target="1001", script="demo-ko")
                with trio.fail_after(30):
                    while (await first.request("call.show", id=call["call_id"]))[
                        "status"
                    ] != "answered":
                        await trio.sleep(0.1)
                # past a heartbeat period into the greeting (6.4 s), before the next line:
                # the last beat is then later than anything the record itself knows
                await trio.sleep(HEARTBEAT_SECONDS + 1.0)
                killed_at = time.time()
                first.process.kill()  # SIGKILL: nothing is drained, hung up or filed
                first.process.wait()
            assert first.process.returncode == -signal.SIGKILL
            async with running_waihud(config) as second:
                record = await second.request("call.show", id=call["call_id"])
                (row,) = [r for r in await second.request("calls") if r["id"] == call["call_id"]]
                assert await second.stop() == 0
    assert (record["status"], record["outcome"]) == ("ended", "answered")
    assert record["error"].startswith("interrupted: waihud stopped (last known alive ")
    assert record["answered_at"] <= record["ended_at"] <= killed_at + HEARTBEAT_SECONDS
    # ended at the daemon's last sign of life, not when the call was last heard of
    assert record["ended_at"] >= killed_at - HEARTBEAT_SECONDS - 1.0
    assert record["hangup_by"] == "robot"
    assert row["status"] == "ended"
    log = second.log_text()
    assert "reconciled 1 call(s) left unfinished when waihud stopped" in log
    assert call["call_id"] in log


def _another_group() -> str | None:
    """A group this process may give a socket to, other than its own (None if none)."""
    if os.geteuid() == 0:
        names = [g.gr_name for g in grp.getgrall() if g.gr_gid != os.getgid()]
    else:
        names = [grp.getgrgid(gid).gr_name for gid in os.getgroups() if gid != os.getgid()]
    return names[0] if names else None


async def test_the_control_socket_gets_the_configured_group(tmp_path: Path) -> None:
    group = _another_group()
    if group is None:
        pytest.skip("this user belongs to no group but its own")
    config = write_config(
        tmp_path / "waihud",
        proxy="127.0.0.1:5999",
        daemon={"control_group": group, "control_admin_group": group},
    )
    with trio.fail_after(120):
        async with running_waihud(config) as daemon:
            socket_group = grp.getgrgid(os.stat(daemon.socket).st_gid).gr_name
            assert (await daemon.request("status"))["live_calls"] == 0
            assert await daemon.stop() == 0
    assert socket_group == group
