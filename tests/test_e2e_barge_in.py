"""End to end: barge-in as a callee experiences it, with a real waihud and sipp callees.

sipp answers and streams espeak-ng speech (or a synthetic cough) at set times
into the robot's 6.4 s greeting; the real vosk model recognises it; what is
filed says whether the greeting was heard to its end, cut (and how much of it
was played), or paused and resumed. The robot's side of the stereo recording
shows what the callee heard. Deadlines are generous: the machine is shared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_e2e_calls import callee_turns, place, say

from waihu.testing.sipp import Play
from waihu.testing.speech import to_ulaw, write_wav_pcm

pytestmark = pytest.mark.e2e

GREETING_MS = 6400  # the demo-ko greeting, about
# sipp's plays wait one after the other: the answer comes this long after the mid-greeting
# sound (started at 2.5 s), once the greeting and the pause the sound made have ended
NEXT_AFTER_MS = 5500
RATE = 8000


def heard_s(turn: dict) -> float:
    """How long a robot line was heard: from its first packet to its last."""
    return turn["ended_at"] - turn["started_at"]


def cough_ulaw(tmp_path: Path) -> Path:
    """A 300 ms cough: a broadband burst with a decaying envelope, as μ-law for sipp."""
    n = round(0.3 * RATE)
    envelope = np.exp(-np.arange(n) / (0.3 * n)) * np.minimum(1.0, np.arange(n) / 40)
    burst = 9000 * envelope * np.random.default_rng(7).normal(0, 1, n)
    pcm = burst.clip(-32768, 32767).astype(np.int16)
    wav = write_wav_pcm(tmp_path / "cough.wav", pcm)
    return to_ulaw(wav, tmp_path / "cough.ul")


async def test_a_real_interruption_cuts_the_greeting_and_files_how_much_was_played(
    tmp_path: Path,
) -> None:
    words = say(tmp_path, "잠깐만요 저 지금 운전 중이에요")
    record, _ = await place(
        tmp_path, "answer.xml", plays=[Play(2000, words)], keys={"bye_wait_ms": "60000"}
    )
    greeting, *_ = record["turns"]
    assert (greeting["node"], greeting["speaker"], greeting["interrupted"]) == (
        "greeting",
        "robot",
        True,
    )
    # cut soon after the callee began at 2 s: their voice paused it, their words cut it
    assert 2.0 < heard_s(greeting) < 3.5
    if greeting["played_ms"] is not None:  # (filed where the store keeps it)
        assert 2000 <= greeting["played_ms"] <= 3500
    assert not any(intent == "backchannel" for _, intent in callee_turns(record))


async def test_a_backchannel_mid_greeting_lets_it_play_to_its_end(tmp_path: Path) -> None:
    plays = [
        Play(2500, say(tmp_path, "네")),
        Play(NEXT_AFTER_MS, say(tmp_path, "아니요")),
    ]
    record, _ = await place(tmp_path, "answer.xml", plays=plays)
    greeting, *_ = record["turns"]
    assert (greeting["node"], greeting["interrupted"]) == ("greeting", False)
    assert callee_turns(record) == [("네", "backchannel"), ("아니요", "deny")]
    assert record["grade"] == "C"  # the "네" answered nothing: the "아니요" did
    # heard to its end: the whole greeting, plus the pause the "네" made
    assert heard_s(greeting) >= GREETING_MS / 1000


async def test_a_cough_mid_greeting_does_not_cut_it(tmp_path: Path) -> None:
    plays = [Play(2500, cough_ulaw(tmp_path)), Play(NEXT_AFTER_MS, say(tmp_path, "네"))]
    record, _ = await place(tmp_path, "answer.xml", plays=plays)
    greeting, *_ = record["turns"]
    assert (greeting["node"], greeting["interrupted"]) == ("greeting", False)
    assert callee_turns(record) == [("네", "affirm")]
    assert record["grade"] == "A"
    assert heard_s(greeting) >= GREETING_MS / 1000
