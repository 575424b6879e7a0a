"""End to end: who answered, with a real waihud calling sipp over loopback.

- a carrier announcement in 183 early media, then 480: filed with the
  announcement's outcome and evidence, not as a plain no-answer; the same
  announcement followed by an answer (200): the robot hangs up at once;
- a voicemail box (its greeting, then a beep) after the answer: filed
  ``voicemail``, ungraded; the robot never answered the greeting with a script
  line and hung up — or, with the ``message`` action, said its message after
  the beep (it is in the recording there);
- a person saying 여보세요: a normal graded conversation, ``answered_by`` person.

The callee's audio is espeak-ng Korean (``ko+f3``), recognised by the real
Korean vosk model. That small model hears few of the announcement phrases
espeak-ng says (free speech not at all; with the phrase lists as its grammar
"없는 번호입니다" reliably, "전원이 꺼져 있습니다" not — it comes back as 결번),
so the early-media test plays the no-such-number announcement; the
switched-off and Mandarin phrases are tested as text (tests/test_who_answered*.py).
Deadlines are generous: the machine is shared.
"""

from __future__ import annotations

import sqlite3
import wave
from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import Play, sipp_peer
from waihu.testing.speech import CALL_RATE, speech_pcm, to_ulaw, write_wav_pcm

pytestmark = pytest.mark.e2e

CALL_TIMEOUT = 120.0
BEEP_HZ = 1000.0  # a voicemail box's beep: one pure tone, not the carriers' 450 Hz
BEEP_S = 0.5
ANSWER_TO_GREETING_MS = 300  # the box starts its greeting this soon after the answer


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(CALL_RATE * seconds), np.int16)


def _beep() -> np.ndarray:
    t = np.arange(int(CALL_RATE * BEEP_S)) / CALL_RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * BEEP_HZ * t)).astype(np.int16)


def ulaw(tmp_path: Path, name: str, pcm: np.ndarray) -> Path:
    """Raw μ-law of ``pcm`` for sipp to stream."""
    return to_ulaw(write_wav_pcm(tmp_path / f"{name}.wav", pcm), tmp_path / f"{name}.ul")


def voicemail_greeting() -> np.ndarray:
    """A voicemail box: its short greeting, a beep, then quiet (it records)."""
    return np.concatenate([speech_pcm("음성 사서함입니다"), _silence(0.3), _beep(), _silence(6.0)])


def stored(database: Path, call_id: str) -> sqlite3.Row:
    db = sqlite3.connect(database)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("select * from calls where id = ?", (call_id,)).fetchone()
    finally:
        db.close()


async def place(
    tmp_path: Path,
    scenario: str,
    *,
    plays: tuple[Play, ...] = (),
    keys: dict[str, str] | None = None,
    extra: str = "",
    tts: bool = False,
) -> tuple[dict, sqlite3.Row, str]:
    """One call to a fresh sipp from a fresh waihud: the filed record, its SQLite row, and
    the daemon's log."""
    with trio.fail_after(CALL_TIMEOUT + 60):
        async with sipp_peer(
            scenario, tmp_path, plays=plays, keys=keys, timeout=CALL_TIMEOUT
        ) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport, extra=extra, tts=tts)
            async with running_waihud(config) as daemon:
                reply = await daemon.request("call", target="1001", script="demo-ko")
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                result = await peer.wait()
                assert await daemon.stop() == 0, daemon.log_text()[-3000:]
                log = daemon.log_text()
            result.check()
    return record, stored(daemon.database, record["id"]), log


def callee_turns(record: dict) -> list[dict]:
    return [t for t in record["turns"] if t["speaker"] == "callee"]


def robot_nodes(record: dict) -> list[str]:
    return [t["node"] for t in record["turns"] if t["speaker"] == "robot"]


async def test_an_announcement_in_early_media_then_480_files_the_announcement(
    tmp_path: Path,
) -> None:
    said = speech_pcm("없는 번호입니다")
    announcement = np.concatenate([_silence(0.3), said, _silence(0.5), said, _silence(0.5)])
    audio = ulaw(tmp_path, "announcement", announcement)
    early_ms = int(announcement.size * 1000 / CALL_RATE) + 300
    keys = {"audio": str(audio.resolve()), "early_ms": str(early_ms)}
    record, row, _log = await place(tmp_path, "early_media.xml", keys=keys)
    assert (record["status"], record["sip_status"]) == ("failed", 480)
    # not what 480 means (no_answer): what the carrier said
    assert record["outcome"] == "invalid_number"
    assert record["answered_by"] == "announcement"
    assert record["answered_by_evidence"] == "early media: said '없는 번호'"
    assert (row["outcome"], row["answered_by"], row["answered_by_evidence"]) == (
        "invalid_number", "announcement", "early media: said '없는 번호'",
    )  # fmt: skip
    assert record["grade"] is None


async def test_an_operator_hangup_while_early_media_is_heard_keeps_the_failure(
    tmp_path: Path,
) -> None:
    """The INVITE failed (480) and the daemon is hearing its early media when the operator
    hangs the call up: it is still filed with its answer and the announcement, not as a
    call cancelled while it rang."""
    said = speech_pcm("없는 번호입니다")
    announcement = np.concatenate([_silence(0.3), *[said, _silence(0.5)] * 3])
    audio = ulaw(tmp_path, "announcement", announcement)
    early_ms = int(announcement.size * 1000 / CALL_RATE) + 300
    keys = {"audio": str(audio.resolve()), "early_ms": str(early_ms)}
    with trio.fail_after(CALL_TIMEOUT + 60):
        async with sipp_peer("early_media.xml", tmp_path, keys=keys, timeout=CALL_TIMEOUT) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as daemon:
                reply = await daemon.request("call", target="1001", script="demo-ko")
                call_id = reply["call_id"]
                while "480 Temporarily Unavailable" not in daemon.log_text():
                    await trio.sleep(0.01)
                await daemon.request("call.hangup", id=call_id)
                record = await daemon.wait_call(call_id, timeout=CALL_TIMEOUT)
                await peer.wait()
                assert await daemon.stop() == 0
                log = daemon.log_text()
    assert "hung up by root (it was ringing)" in log  # the hangup came while it was heard
    assert (record["status"], record["sip_status"]) == ("failed", 480), record
    assert (record["outcome"], record["answered_by"]) == ("invalid_number", "announcement")


async def test_a_voicemail_greeting_is_not_answered_and_the_robot_hangs_up(
    tmp_path: Path,
) -> None:
    plays = (Play(ANSWER_TO_GREETING_MS, ulaw(tmp_path, "voicemail", voicemail_greeting())),)
    record, row, log = await place(tmp_path, "answer.xml", plays=plays)
    assert record["status"] == "ended", record
    assert (record["outcome"], record["answered_by"]) == ("voicemail", "voicemail")
    assert record["answered_by_evidence"] == "a beep"
    assert (row["outcome"], row["answered_by"], row["answered_by_evidence"]) == (
        "voicemail", "voicemail", "a beep",
    )  # fmt: skip
    # the greeting never reached the dialogue: nothing of the callee's was answered
    assert callee_turns(record) == []
    assert robot_nodes(record) == ["greeting"]
    assert (record["hangup_by"], record["grade"]) == ("robot", None)
    assert "answered by voicemail (a beep)" in log


async def test_a_voicemail_whose_beep_comes_after_the_window_is_filed_voicemail(
    tmp_path: Path,
) -> None:
    """A greeting longer than the 3 s window: unsure at 3 s (the call goes on as a person),
    then the beep proves it a voicemail after all: filed so, ungraded, hung up by the robot."""
    long_greeting = np.concatenate(
        [
            speech_pcm("지금은 전화를 받을 수 없습니다"),
            _silence(0.3),
            speech_pcm("메시지를 남겨 주세요"),
            _silence(0.3),
        ]
    )
    padding = _silence(max(0.0, 4.5 - long_greeting.size / CALL_RATE))  # beep ≥ 4.8 s in
    greeting = np.concatenate([long_greeting, padding, _beep(), _silence(6.0)])
    plays = (Play(ANSWER_TO_GREETING_MS, ulaw(tmp_path, "voicemail", greeting)),)
    record, row, log = await place(tmp_path, "answer.xml", plays=plays)
    assert (record["outcome"], record["answered_by"]) == ("voicemail", "voicemail"), record
    evidence = record["answered_by_evidence"]
    assert evidence.startswith("a beep, ") and evidence.endswith(" s after the answer"), evidence
    assert float(evidence.split(", ")[1].split()[0]) > 3.0  # after the window
    assert (row["outcome"], row["answered_by"]) == ("voicemail", "voicemail")
    assert (record["hangup_by"], record["grade"]) == ("robot", None)
    assert "answered by voicemail after all" in log


async def test_the_message_action_leaves_the_message_after_the_beep(tmp_path: Path) -> None:
    greeting = voicemail_greeting()
    plays = (Play(ANSWER_TO_GREETING_MS, ulaw(tmp_path, "voicemail", greeting)),)
    extra = "\n".join(
        [
            "[who_answered]",
            'actions = { voicemail = "message" }',
            'message_text = "안녕하세요 다시 연락드리겠습니다"',
            "message_silence = 1.0",
        ]
    )
    record, _row, _log = await place(tmp_path, "answer.xml", plays=plays, extra=extra, tts=True)
    assert (record["outcome"], record["answered_by"]) == ("voicemail", "voicemail")
    assert callee_turns(record) == []
    message = record["turns"][-1]
    assert (message["speaker"], message["node"]) == ("robot", "who_answered")
    assert message["text"] == "안녕하세요 다시 연락드리겠습니다"
    assert record["hangup_by"] == "robot"
    # the recording: the beep on the callee's side, the message on the robot's after it
    with wave.open(record["recording"]) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = frames[:, 0].astype(float), frames[:, 1].astype(float)
    frame = CALL_RATE // 50
    energy = [np.abs(left[i : i + frame]).mean() for i in range(0, left.size - frame, frame)]
    tonal = [
        i for i, start in enumerate(range(0, left.size - frame, frame))
        if energy[i] > 1000 and _is_beep(left[start : start + frame])
    ]  # fmt: skip
    assert tonal, "no beep in the recording's callee channel"
    beep_end = (tonal[-1] + 1) * frame
    after = right[beep_end:]
    assert after.size > CALL_RATE and np.abs(after).max() > 3000  # the message, said after it
    assert np.abs(right[beep_end - CALL_RATE // 2 : beep_end]).mean() < 200  # quiet till then


def _is_beep(frame: np.ndarray) -> bool:
    spectrum = np.abs(np.fft.rfft(frame * np.hanning(frame.size), 1024))
    peak_hz = np.argmax(spectrum) * CALL_RATE / 1024
    return abs(peak_hz - BEEP_HZ) < 40


async def test_a_person_saying_yeoboseyo_gets_a_graded_conversation(tmp_path: Path) -> None:
    plays = (Play(ANSWER_TO_GREETING_MS, ulaw(tmp_path, "hello", speech_pcm("여보세요"))),)
    # the demo's conversation with someone who only said hello runs to its re-prompts
    keys = {"bye_wait_ms": str(int(CALL_TIMEOUT * 1000))}
    record, row, _log = await place(tmp_path, "answer.xml", plays=plays, keys=keys)
    assert record["status"] == "ended", record
    assert (record["outcome"], record["answered_by"]) == ("answered", "person")
    assert record["answered_by_evidence"].startswith("said ")
    assert (row["answered_by"], row["outcome"]) == ("person", "answered")
    assert callee_turns(record), "the person's words reached the dialogue"
    assert record["grade"] is not None
    assert len(robot_nodes(record)) >= 2  # the robot went on talking with them


async def test_an_answered_call_whose_early_media_was_an_announcement_is_hung_up(
    tmp_path: Path,
) -> None:
    said = speech_pcm("없는 번호입니다")
    announcement = np.concatenate([_silence(0.3), said, _silence(0.5), said, _silence(0.5)])
    audio = ulaw(tmp_path, "announcement", announcement)
    early_ms = int(announcement.size * 1000 / CALL_RATE) + 300
    keys = {"audio": str(audio.resolve()), "early_ms": str(early_ms)}
    # a generous window: the early audio is decoded after the answer, on a shared machine
    extra = "[who_answered]\ndecide_within = 10.0\n"
    record, row, _log = await place(tmp_path, "early_media_answer.xml", keys=keys, extra=extra)
    assert (record["status"], record["sip_status"]) == ("ended", 200)
    assert (record["outcome"], record["answered_by"]) == ("invalid_number", "announcement")
    assert record["answered_by_evidence"] == "early media: said '없는 번호'"
    assert row["outcome"] == "invalid_number"
    assert (record["hangup_by"], record["grade"]) == ("robot", None)
    assert callee_turns(record) == [] and robot_nodes(record) == ["greeting"]
