"""Recordings people can reach: file modes on disk, and ``waihuctl call fetch``/``call play``.

A real waihud places a real call to sipp (answered; the callee says "네")
and another to a second sipp that answers busy; the recording of the first
is then copied with the real ``waihuctl`` over the control socket and
compared byte for byte with the file the daemon wrote. The daemon runs under
umask 077, stricter than the unit's ``UMask=0027``, so the modes seen are the
ones the recorder sets, not what a umask happens to leave.

``call play`` needs a sound card, which the test machine lacks: the player
it finds is a small script named ``aplay`` on a ``PATH`` of the test's own,
which keeps a copy of what it was given; that is the one stand-in here. As
root, the test cannot show a non-root operator reading a file of mode 0640
in the daemon's group; it checks the modes that make that so.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.control.protocol import RECORDING_CHUNK_BYTES
from waihu.media.recorder import StereoRecorder
from waihu.testing.daemon import DaemonUnderTest, running_waihud, write_config
from waihu.testing.sipp import Play, sipp_peer
from waihu.testing.speech import synthesize, to_ulaw

pytestmark = pytest.mark.e2e

AFTER_GREETING_MS = 7500  # the demo greeting lasts about 6.4 s
CALL_TIMEOUT = 120.0
STRICT_UMASK = 0o077
LAYOUT = "stereo: left = callee, right = robot"
EXIT_FAILED = 1


def waihuctl(daemon: DaemonUnderTest, *args: str, cwd: Path, env: dict[str, str] | None = None):
    """The real waihuctl against the daemon; stdout as bytes (a recording may come on it)."""
    return subprocess.run(
        [sys.executable, "-m", "waihu.control.client", "--socket", str(daemon.socket), *args],
        capture_output=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def run_calls(tmp_path: Path, check: object) -> None:
    """One answered call and one busy call; then ``check(daemon, answered, busy)``."""
    speech = synthesize("네")
    yes = to_ulaw(speech, tmp_path / f"{speech.stem}.ul")
    async with (
        sipp_peer(
            "answer.xml", tmp_path / "answer", plays=[Play(AFTER_GREETING_MS, yes)], timeout=300
        ) as answering,
        sipp_peer("busy.xml", tmp_path / "busy", timeout=300) as busy_peer,
    ):
        config = write_config(
            tmp_path / "waihud",
            proxy={"loopback": answering.hostport, "busy": busy_peer.hostport},
        )
        previous = os.umask(STRICT_UMASK)  # inherited by the daemon started here
        try:
            async with running_waihud(config) as daemon:
                placed = await daemon.request("call", target="1001", script="demo-ko")
                refused = await daemon.request(
                    "call", target="1002", script="demo-ko", trunk="busy"
                )
                # while it goes on, a short id finds the live call; its file comes at its end
                live_id = placed["call_id"]
                early = await trio.to_thread.run_sync(
                    lambda: waihuctl(daemon, "call", "fetch", live_id[:-2], cwd=tmp_path)
                )
                assert (early.returncode, early.stderr.decode()) == (
                    EXIT_FAILED,
                    f"waihuctl: call {live_id} is still going on; its recording is written "
                    "at its end\n",
                )
                answered = await daemon.wait_call(placed["call_id"], timeout=CALL_TIMEOUT)
                busy = await daemon.wait_call(refused["call_id"], timeout=CALL_TIMEOUT)
                await trio.to_thread.run_sync(check, daemon, answered, busy)
        finally:
            os.umask(previous)


def check_modes(recording: Path, state: Path) -> None:
    assert mode(recording) == 0o640, oct(mode(recording))  # the waihu group reads it
    assert mode(recording.parent) == 0o750  # the day folder
    assert mode(recording.parent.parent) == 0o750  # the recordings folder
    assert recording.parent.parent == state / "recordings"


def check_fetch(daemon: DaemonUnderTest, record: dict, out: Path) -> None:
    recording = Path(record["recording"])
    on_disk = recording.read_bytes()
    call_id = record["id"]
    short = call_id[:-2]  # unique: the busy call's id differs in its random end

    # default name: ID.wav here, the whole id although a prefix was given
    fetched = waihuctl(daemon, "call", "fetch", short, cwd=out)
    assert fetched.returncode == 0, fetched.stderr
    copy = out / f"{call_id}.wav"
    assert copy.read_bytes() == on_disk
    assert fetched.stdout.decode() == (
        f"call {call_id}: recording written to {call_id}.wav ({len(on_disk)} bytes, "
        f"SHA-256 checked); {LAYOUT}\n"
    )
    assert [p.name for p in out.iterdir()] == [copy.name]  # no temporary file left

    # an existing file is kept unless --force
    copy.write_bytes(b"mine")
    again = waihuctl(daemon, "call", "fetch", short, cwd=out)
    assert again.returncode == EXIT_FAILED
    assert again.stderr.decode() == (
        f"waihuctl: {call_id}.wav exists; give --force to overwrite it, or -o another file\n"
    )
    assert copy.read_bytes() == b"mine"
    named = waihuctl(daemon, "call", "fetch", short, "-o", "mine.wav", cwd=out)
    assert named.returncode == 0 and (out / "mine.wav").read_bytes() == on_disk
    refused = waihuctl(daemon, "call", "fetch", short, "-o", "mine.wav", cwd=out)
    assert refused.returncode == EXIT_FAILED and b"mine.wav exists" in refused.stderr
    forced = waihuctl(daemon, "call", "fetch", short, "--force", cwd=out)
    assert forced.returncode == 0 and copy.read_bytes() == on_disk

    nowhere = waihuctl(daemon, "call", "fetch", short, "-o", "no/such/x.wav", cwd=out)
    assert (nowhere.returncode, nowhere.stderr.decode()) == (
        EXIT_FAILED,
        "waihuctl: cannot write in no/such/: No such file or directory\n",
    )

    # to standard output, the report on stderr
    piped = waihuctl(daemon, "call", "fetch", short, "-o", "-", cwd=out)
    assert piped.returncode == 0 and piped.stdout == on_disk
    assert piped.stderr.decode().endswith(
        f"standard output ({len(on_disk)} bytes, SHA-256 checked); {LAYOUT}\n"
    )

    as_json = waihuctl(daemon, "--json", "call", "fetch", call_id, "-o", "j.wav", cwd=out)
    assert json.loads(as_json.stdout) == {
        "call_id": call_id,
        "file": "j.wav",
        "size": len(on_disk),
        "sha256": hashlib.sha256(on_disk).hexdigest(),
        "channels": {"left": "callee", "right": "robot"},
    }


def check_chunks(daemon: DaemonUnderTest, record: dict, out: Path) -> None:
    """A recording longer than one reply's chunk comes whole, in order."""
    recording = Path(record["recording"])
    long = os.urandom(2 * RECORDING_CHUNK_BYTES + 12345)  # three chunks, the last short
    recording.write_bytes(long)
    fetched = waihuctl(daemon, "call", "fetch", record["id"], "-o", "long.wav", cwd=out)
    assert fetched.returncode == 0, fetched.stderr
    assert (out / "long.wav").read_bytes() == long


def fake_aplay(out: Path) -> Path:
    """A folder for PATH with an ``aplay`` that keeps a copy of FILE (``aplay -q FILE``)
    and its name, as a player would read it."""
    players = out / "bin"
    players.mkdir()
    aplay = players / "aplay"
    aplay.write_text(f'#!/bin/sh\n/bin/cp "$2" {out}/played.wav\necho "$2" > {out}/played-from\n')
    aplay.chmod(0o755)
    return aplay


def check_play(daemon: DaemonUnderTest, record: dict, out: Path) -> None:
    aplay = fake_aplay(out)
    players = aplay.parent
    played = waihuctl(
        daemon, "call", "play", record["id"][:-2], cwd=out, env={"PATH": str(players)}
    )
    assert played.returncode == 0, played.stderr
    assert played.stdout.decode() == f"call {record['id']}: playing with aplay; {LAYOUT}\n"
    assert (out / "played.wav").read_bytes() == Path(record["recording"]).read_bytes()
    temporary = Path((out / "played-from").read_text().strip())
    assert not temporary.exists() and not temporary.parent.exists()  # cleaned up

    aplay.unlink()
    none = waihuctl(daemon, "call", "play", record["id"], cwd=out, env={"PATH": str(players)})
    assert (none.returncode, none.stdout) == (EXIT_FAILED, b"")
    assert none.stderr.decode() == (
        "waihuctl: no audio player found here (looked for paplay, aplay, play, ffplay); "
        f"'waihuctl call fetch {record['id']}' copies the recording to a file instead\n"
    )


def check_no_recording(daemon: DaemonUnderTest, busy: dict, out: Path) -> None:
    assert busy["recording"] is None
    players = fake_aplay(out).parent
    for command in ("fetch", "play"):
        run = waihuctl(daemon, "call", command, busy["id"], cwd=out, env={"PATH": str(players)})
        assert run.returncode == EXIT_FAILED
        assert run.stderr.decode() == (
            f"waihuctl: call {busy['id']} has no recording (it was not answered)\n"
        ), command
    assert sorted(p.name for p in out.iterdir()) == ["bin"]  # nothing fetched, nothing played


async def test_recordings_are_group_readable_and_fetched_over_the_socket(tmp_path: Path) -> None:
    def check(daemon: DaemonUnderTest, answered: dict, busy: dict) -> None:
        assert answered["status"] == "ended" and answered["recording"], answered
        check_modes(Path(answered["recording"]), daemon.directory / "state")
        for name, step in [("fetch", check_fetch), ("play", check_play)]:
            out = tmp_path / name
            out.mkdir()
            step(daemon, answered, out)
        (tmp_path / "none").mkdir()
        check_no_recording(daemon, busy, tmp_path / "none")
        (tmp_path / "chunks").mkdir()
        check_chunks(daemon, answered, tmp_path / "chunks")  # last: it replaces the file

    with trio.fail_after(CALL_TIMEOUT * 2 + 120):
        await run_calls(tmp_path, check)


async def test_the_recorder_sets_the_modes_whatever_the_umask(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.mkdir(mode=0o700)  # an administrator's folder keeps its mode
    path = kept / "recordings" / "20261125" / "20261125-150001-a1b2c3.wav"
    recorder = StereoRecorder(path, 8000)
    recorder.robot(np.ones(160, np.int16))
    recorder.callee(np.zeros(160, np.int16))
    previous = os.umask(STRICT_UMASK)
    try:
        with trio.fail_after(30):
            await recorder.save()
    finally:
        os.umask(previous)
    assert (mode(path), mode(path.parent), mode(path.parent.parent)) == (0o640, 0o750, 0o750)
    assert mode(kept) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
