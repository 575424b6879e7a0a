"""End to end: the early end of turn, heard by a real waihud from a speaking sipp callee.

A real ``waihud`` calls sipp over loopback with the demo script (demo-ko:
the greeting routes "네" to affirm, a price question to the knowledge base,
which comes first in its priority). The callee's words are made by espeak-ng
and joined here with exact pauses into one stream, so the pause the robot
hears is the one written. What each test shows is what was filed: the
callee's turns and where the robot went.

- A confident, complete "네" followed 400 ms later by more speech: the turn
  ends on the short window (250 ms), so "네" is its own turn and takes the
  affirm route. On the full window alone (700 ms) both parts were one
  utterance, "네 가격이 얼마 예요", taken for the price question.
- "가격이 … 얼마 예요" with a 500 ms pause after "가격이": the caller is
  mid-sentence, so the pause does not end the turn; one utterance is heard.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import Play, sipp_peer
from waihu.testing.speech import CALL_RATE, speech_pcm, to_ulaw, write_wav_pcm

pytestmark = pytest.mark.e2e

AFTER_GREETING_MS = 7500  # the demo greeting lasts about 6.4 s
CALL_TIMEOUT = 120.0
VOICE_LEVEL = 300  # samples above this are espeak's voice, not its faint tail


def spoken(tmp_path: Path, name: str, *parts: str | float) -> Path:
    """Raw μ-law of the texts in ``parts`` with the pauses (seconds) between them
    measured from the last voiced sample of one text to the first of the next."""
    pieces = []
    for part in parts:
        if isinstance(part, str):
            pcm = speech_pcm(part)
            voiced = np.flatnonzero(np.abs(pcm) > VOICE_LEVEL)
            pieces.append(pcm[voiced[0] : voiced[-1] + 1])
        else:
            pieces.append(np.zeros(round(part * CALL_RATE), np.int16))
    wav = write_wav_pcm(tmp_path / f"{name}.wav", np.concatenate(pieces))
    return to_ulaw(wav, tmp_path / f"{name}.ul")


async def place(tmp_path: Path, plays: list[Play]) -> dict:
    """One call to a fresh sipp callee from a fresh waihud; the filed record."""
    with trio.fail_after(CALL_TIMEOUT + 60):
        async with sipp_peer("answer.xml", tmp_path, plays=plays, timeout=CALL_TIMEOUT) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as daemon:
                reply = await daemon.request("call", target="1001", script="demo-ko")
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                result = await peer.wait()
                assert await daemon.stop() == 0, daemon.log_text()[-3000:]
            result.check()
    return record


def callee_turns(record: dict) -> list[tuple[str, str | None]]:
    return [(t["text"], t["intent"]) for t in record["turns"] if t["speaker"] == "callee"]


def robot_nodes(record: dict) -> list[str]:
    return [t["node"] for t in record["turns"] if t["speaker"] == "robot"]


async def test_a_complete_short_answer_ends_its_turn_on_the_short_window(tmp_path: Path) -> None:
    audio = spoken(tmp_path, "ne-then-more", "네", 0.4, "가격이 얼마 예요")
    record = await place(tmp_path, [Play(AFTER_GREETING_MS, audio)])
    turns = callee_turns(record)
    assert turns[0] == ("네", "affirm"), turns  # its own turn, not the start of a question
    assert robot_nodes(record)[:2] == ["greeting", "bye_interested"]
    assert record["grade"] == "A"


async def test_a_pause_mid_sentence_does_not_cut_the_utterance(tmp_path: Path) -> None:
    question = spoken(tmp_path, "price-with-pause", "가격이", 0.5, "얼마 예요")
    # the price answer (~2.8 s) and the greeting again (~6.4 s) follow the question
    no = spoken(tmp_path, "no", "아니요")
    record = await place(tmp_path, [Play(AFTER_GREETING_MS, question), Play(10500, no)])
    turns = callee_turns(record)
    assert len(turns) == 2, turns  # the question whole, then the answer to the re-ask
    # the phrase grammar may hear the onset of 가격이 as 네: the words end the same
    assert turns[0][0].endswith("가격이 얼마 예요") and turns[0][1] == "kb.price", turns
    assert turns[1] == ("아니요", "deny")
    assert robot_nodes(record) == ["greeting", "greeting", "greeting", "bye_declined"]
