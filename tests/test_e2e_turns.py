"""End to end: turn-taking as the callee hears it, on the wire, with a real waihud.

Each test starts the scripted callee (``waihu.testing.callee``: sipp answers, a trio RTP
endpoint in this process plays the callee's side and logs every packet), starts ``waihud``
with a trunk pointing at it, places a ``demo-ko`` call and checks both what the daemon
filed (turns, ``interrupted``) and what crossed the wire (the robot's talkspurts: was a
line played to its end?). The speech is recognised by the real Korean vosk model.
Deadlines are generous and nothing asserts on wall-clock figures: the reaction to a real
interruption is measured and printed, not asserted.

The demo greeting is 6.4 s long (6.16 s of it voiced); with no answer the robot says it
again (the re-prompt, 4.3 s voiced) and then its goodbye.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from waihu.testing.callee import (
    CalleeLine,
    CalleeScript,
    Echo,
    Sound,
    after_robot_starts,
    after_robot_stops,
    callee_peer,
    voiced_span,
)
from waihu.testing.daemon import REPO, running_waihud, write_config
from waihu.testing.speech import read_wav_pcm, speech_pcm

pytestmark = pytest.mark.e2e

CALL_TIMEOUT = 120.0
PROMPTS = REPO / "etc" / "waihu" / "scripts" / "prompts" / "demo-ko"
# A line counts as played to its end when its talkspurt on the wire lasts this close to the
# recording's voiced length (packets at the edges may fall either side of the threshold).
END_SLACK_S = 0.1
# Talkspurts here are split at 1.5 s of quiet: a line paused by the barge-in judge and then
# resumed is still one line; the robot's next line comes after a longer silence.
LINE_GAP_MS = 1500


def voiced_length(name: str) -> float:
    """Seconds from the first to the last voiced frame of a demo-ko prompt recording."""
    span = voiced_span(read_wav_pcm(PROMPTS / f"{name}.wav"))
    assert span is not None
    return (span[1] - span[0]) / 1000


async def call(tmp_path: Path, script: CalleeScript) -> tuple[dict, CalleeLine]:
    """One demo-ko call to a scripted callee; the filed record and the callee's wire log."""
    with trio.fail_after(CALL_TIMEOUT + 60):
        async with callee_peer(script, tmp_path, timeout=CALL_TIMEOUT) as (peer, callee):
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as daemon:
                reply = await daemon.request("call", target="1001", script="demo-ko")
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                result = await peer.wait()
                assert await daemon.stop() == 0, daemon.log_text()[-3000:]
            result.check()
    assert callee.line is not None
    return record, callee.line


def robot_lines(record: dict) -> list[tuple[str, bool]]:
    return [(t["node"], t["interrupted"]) for t in record["turns"] if t["speaker"] == "robot"]


async def test_the_robots_own_echo_never_cuts_its_greeting_or_reprompt(tmp_path: Path) -> None:
    """The line returns the robot's voice at −20 dB after 60 ms and nothing else."""
    record, line = await call(tmp_path, CalleeScript(echo=Echo(gain_db=-20, delay_ms=60)))
    assert robot_lines(record) == [
        ("greeting", False),
        ("greeting", False),
        ("bye_silence", False),
    ]
    assert [t for t in record["turns"] if t["speaker"] == "callee"] == []
    assert record["grade"] == "D" and record["hangup_by"] == "robot"
    # on the wire: the greeting and the re-prompt each played to their end
    greeting, reprompt, *_ = line.robot_spurts(LINE_GAP_MS)
    assert greeting[1] - greeting[0] >= voiced_length("greeting") - END_SLACK_S
    assert reprompt[1] - reprompt[0] >= voiced_length("greeting-again") - END_SLACK_S


async def test_a_backchannel_mid_greeting_does_not_cut_it(tmp_path: Path) -> None:
    """The callee says "네" 2 s into the greeting, as a listener does; the greeting is heard
    to its end (paused and resumed at most), it is not filed as cut, and the 네 routes
    nothing (the robot does not take it for the answer to its question). Said 1.5-2 s in,
    this 네 (the prompts' own synthetic voice) once passed for an echo of the greeting, and
    the echo guard put the greeting's words into what was heard ("네 없어요")."""
    ne = Sound("ne", speech_pcm("네"), after_robot_starts(2000))
    record, line = await call(tmp_path, CalleeScript(sounds=[ne], noise_dbfs=-65))
    assert line.sound_span("ne") is not None
    lines = robot_lines(record)
    assert lines[0] == ("greeting", False)
    assert "bye_interested" not in [node for node, _ in lines]
    greeting = line.robot_spurts(LINE_GAP_MS)[0]
    assert greeting[1] - greeting[0] >= voiced_length("greeting") - END_SLACK_S


async def test_a_real_interruption_cuts_the_greeting(tmp_path: Path) -> None:
    """The callee asks the price 1.5 s into the greeting: the line is cut (filed and on the
    wire) and the robot answers the question. The reaction is printed, not asserted."""
    question = Sound("price", speech_pcm("가격이 얼마 예요"), after_robot_starts(1500))
    record, line = await call(tmp_path, CalleeScript(sounds=[question], noise_dbfs=-65))
    first = next(t for t in record["turns"] if t["speaker"] == "robot")
    assert (first["node"], first["interrupted"]) == ("greeting", True)
    reaction = line.reaction("price", quiet_ms=300)
    assert reaction is not None
    greeting = line.robot_spurts(300)[0]
    assert greeting[1] - greeting[0] < voiced_length("greeting") - 1.0  # cut, not finished
    callee_texts = [t["text"] for t in record["turns"] if t["speaker"] == "callee"]
    assert any("얼마" in text for text in callee_texts), callee_texts
    v2v = line.voice_to_voice("price")
    print(f"barge-in reaction {reaction * 1000:.0f} ms; voice-to-voice {v2v}")


async def test_wire_log_sees_the_robot_talk_and_the_callee_answer(tmp_path: Path) -> None:
    """The plain case through the harness: the callee says 네 when the greeting has ended;
    the robot's answer is on the wire after it (voice-to-voice measured, not asserted)."""
    ne = Sound("ne", speech_pcm("네"), after_robot_stops(300))
    record, line = await call(tmp_path, CalleeScript(sounds=[ne]))
    assert robot_lines(record)[:2] == [("greeting", False), ("bye_interested", False)]
    assert line.robot_onsets and line.robot_onsets[0] < line.sound_span("ne")[0]
    v2v = line.voice_to_voice("ne")
    assert v2v is not None and v2v > 0
    print(f"voice-to-voice {v2v * 1000:.0f} ms")
