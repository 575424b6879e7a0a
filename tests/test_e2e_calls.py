"""End to end: a real waihud places real calls over loopback to sipp callees.

Each test starts sipp as the callee (answering with speech made by espeak-ng,
streamed as RTP), starts ``waihud`` as a child process with a trunk pointing
at it, places the call with the control socket, waits for the call to be
filed, and checks the record — in the daemon's answer and in the SQLite file
itself — and that sipp's scenario passed (it saw the BYE it expected). The
speech is recognised by the real vosk model. Deadlines are generous: the
machine is shared.

Timing: the demo greeting lasts about 6.4 s; a callee who speaks after
``AFTER_GREETING_MS`` answers once it has finished.
"""

from __future__ import annotations

import json
import sqlite3
import wave
from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import Play, sipp_peer
from waihu.testing.speech import synthesize, to_ulaw

pytestmark = pytest.mark.e2e

AFTER_GREETING_MS = 7500
CALL_TIMEOUT = 120.0


def say(tmp_path: Path, text: str) -> Path:
    """Raw μ-law of ``text`` for sipp to stream."""
    return to_ulaw(synthesize(text), tmp_path / f"{synthesize(text).stem}.ul")


def stored(database: Path, call_id: str) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
    """The call's row and transcript rows, read straight from the SQLite file."""
    db = sqlite3.connect(database)
    db.row_factory = sqlite3.Row
    try:
        call = db.execute("select * from calls where id = ?", (call_id,)).fetchone()
        turns = db.execute(
            "select * from turns where call_id = ? order by seq", (call_id,)
        ).fetchall()
    finally:
        db.close()
    return call, turns


async def place(tmp_path: Path, scenario: str, *, plays=(), keys=None) -> tuple[dict, object]:
    """Run one call against a fresh sipp and waihud; the filed record and the daemon."""
    with trio.fail_after(CALL_TIMEOUT + 60):
        async with sipp_peer(
            scenario, tmp_path, plays=plays, keys=keys, timeout=CALL_TIMEOUT
        ) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as daemon:
                reply = await daemon.request("call", target="1001", script="demo-ko")
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                result = await peer.wait()
                assert await daemon.stop() == 0, daemon.log_text()[-3000:]
            result.check()
    return record, daemon


def callee_turns(record: dict) -> list[tuple[str, str | None]]:
    return [(t["text"], t["intent"]) for t in record["turns"] if t["speaker"] == "callee"]


async def test_affirmative_answer_takes_the_affirm_branch(tmp_path: Path) -> None:
    record, daemon = await place(
        tmp_path, "answer.xml", plays=[Play(AFTER_GREETING_MS, say(tmp_path, "네"))]
    )
    assert record["status"] == "ended", record
    assert (record["sip_status"], record["hangup_by"], record["grade"]) == (200, "robot", "A")
    assert callee_turns(record) == [("네", "affirm")]
    assert [t["node"] for t in record["turns"] if t["speaker"] == "robot"] == [
        "greeting",
        "bye_interested",
    ]
    # what the operator sees is what was filed in the SQLite file
    call, turns = stored(daemon.database, record["id"])
    assert (call["grade"], call["status"], call["hangup_by"]) == ("A", "ended", "robot")
    assert json.loads(call["tags"]) == ["interested"]
    # the call's media figures are filed with it: what we sent, what the callee played
    quality = json.loads(call["media_quality"])
    assert quality == record["media_quality"]
    assert quality["packets_sent"] > 100 and quality["packets_received"] > 10
    assert 0.0 <= quality["loss_fraction"] < 0.5 and quality["jitter_ms"] >= 0.0
    assert [(t["speaker"], t["text"], t["intent"]) for t in turns][1] == ("callee", "네", "affirm")
    # the stereo recording: callee speech on the left, the robot's prompts on the right
    with wave.open(record["recording"]) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = np.abs(frames[:, 0]).astype(float), np.abs(frames[:, 1]).astype(float)
    first_6s = slice(0, 6 * 8000)
    assert right[first_6s].mean() > 10 * max(left[first_6s].mean(), 1.0)  # greeting, robot
    assert left.max() > 1000  # the callee's "네"


async def test_knowledge_base_question_is_answered_and_the_flow_resumes(tmp_path: Path) -> None:
    # price answer (~2.8 s) and the greeting again (~6.4 s) follow the question
    plays = [
        Play(AFTER_GREETING_MS, say(tmp_path, "가격이 얼마 예요")),
        Play(11000, say(tmp_path, "아니요")),
    ]
    record, _ = await place(tmp_path, "answer.xml", plays=plays)
    assert [intent for _, intent in callee_turns(record)] == ["kb.price", "deny"]
    robot = [t["node"] for t in record["turns"] if t["speaker"] == "robot"]
    assert robot == ["greeting", "greeting", "greeting", "bye_declined"]  # ask, price, re-ask
    robot_text = [t["text"] for t in record["turns"] if t["speaker"] == "robot"]
    assert robot_text[1] == "한 달에 만 원부터 시작합니다."
    # each robot line carries the time it was really heard: the question is asked again
    # only once the 2.8 s price answer has been played
    starts = [t["started_at"] for t in record["turns"] if t["speaker"] == "robot"]
    assert starts == sorted(starts)
    assert 2.0 < starts[2] - starts[1] < 4.0
    assert (record["grade"], record["hangup_by"]) == ("C", "robot")


async def test_silence_reprompts_then_hangs_up_politely(tmp_path: Path) -> None:
    record, _ = await place(tmp_path, "answer.xml", keys={"bye_wait_ms": "60000"})
    robot = [t["node"] for t in record["turns"] if t["speaker"] == "robot"]
    assert robot == ["greeting", "greeting", "bye_silence"]
    assert callee_turns(record) == []
    assert (record["grade"], record["hangup_by"], record["status"]) == ("D", "robot", "ended")


async def test_far_end_hangs_up_mid_prompt(tmp_path: Path) -> None:
    record, _ = await place(tmp_path, "hangup_mid.xml", keys={"wait": "2000"})
    assert (record["status"], record["hangup_by"]) == ("ended", "callee")
    assert record["grade"] == "D"  # the script's default_grade: no conversation happened
    assert [t["node"] for t in record["turns"]] == ["greeting"]
    assert record["ended_at"] - record["answered_at"] < 5.0  # not the whole greeting


async def test_busy_callee_is_recorded(tmp_path: Path) -> None:
    record, daemon = await place(tmp_path, "busy.xml")
    assert (record["status"], record["sip_status"]) == ("failed", 486)
    assert record["answered_at"] is None and record["turns"] == []
    call, _ = stored(daemon.database, record["id"])
    assert (call["status"], call["sip_status"], call["sip_reason"]) == ("failed", 486, "Busy Here")


async def test_callee_barging_in_stops_the_greeting(tmp_path: Path) -> None:
    # (a bare "네" is a backchannel: it would not cut the line; see test_e2e_barge_in.py)
    words = say(tmp_path, "네 좋아요")
    record, _ = await place(tmp_path, "answer.xml", plays=[Play(2000, words)])
    greeting, *_ = record["turns"]
    assert (greeting["node"], greeting["interrupted"]) == ("greeting", True)
    assert [intent for _, intent in callee_turns(record)] == ["affirm"]
    assert record["grade"] == "A"
    # the callee did not hear the 6.4 s greeting out: it stopped soon after they spoke
    assert greeting["ended_at"] - greeting["started_at"] < 4.0
