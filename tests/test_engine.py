"""The dialogue engine, driven as a text chat on trio's mock clock.

The engine is fed typed utterances (the same events the voice pipeline sends)
and speaks through ``TextSpeaker``; the classifier is the real built-in
keyword plugin, found through its entry point.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from waihu.api import ProviderContext, Turn
from waihu.dialog.chat import TextSpeaker
from waihu.dialog.engine import DialogueEngine, Ending, SpeechBegan, Utterance
from waihu.dialog.script import Script, load_script

from conftest import SCRIPTS


@pytest.fixture
def script() -> Script:
    return load_script(SCRIPTS / "demo-ko.toml")


@pytest.fixture
def classifier(provider_types: dict, script: Script, tmp_path: Path):
    cls = provider_types["nlu"]["keywords"]
    context = ProviderContext(
        name="default",
        state_dir=tmp_path,
        log=logging.getLogger("t"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    c = cls(cls.Config(), context)
    c.fit(script.intents)
    return c


async def converse(
    script: Script, classifier, replies: list[object], min_confidence: float = 0.3
) -> tuple[Ending, list[Turn], TextSpeaker]:
    """Run the engine; each reply is sent after the robot's previous line."""
    speaker = TextSpeaker()
    turns: list[Turn] = []
    send, receive = trio.open_memory_channel(10)
    engine = DialogueEngine(
        script,
        classifier,
        speaker,
        receive,
        on_turn=turns.append,
        min_confidence=min_confidence,
        now=trio.current_time,
    )

    async def callee() -> None:
        for reply in replies:
            if isinstance(reply, float):
                await trio.sleep(reply)  # stay silent this long
                continue
            await trio.sleep(0.5)
            await send.send(SpeechBegan())
            await trio.sleep(1.0)
            await send.send(reply)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(callee)
            ending = await engine.run()
            nursery.cancel_scope.cancel()
    return ending, turns, speaker


async def test_affirm_takes_the_affirm_branch(script, classifier, autojump_clock) -> None:
    ending, turns, _ = await converse(script, classifier, [Utterance("네", 0.9)])
    assert (ending.node, ending.grade, ending.reason) == ("bye_interested", "A", "end")
    assert ending.tags == ("interested",)
    assert [(t.speaker, t.node, t.intent) for t in turns] == [
        ("robot", "greeting", None),
        ("callee", "greeting", "affirm"),
        ("robot", "bye_interested", None),
    ]


async def test_kb_answer_then_the_question_again(script, classifier, autojump_clock) -> None:
    ending, turns, speaker = await converse(
        script, classifier, [Utterance("가격이 얼마 예요", 0.8), Utterance("아니요", 0.9)]
    )
    assert ending.grade == "C"
    assert [t.intent for t in turns if t.speaker == "callee"] == ["kb.price", "deny"]
    price = script.kb["kb.price"].say[0].text
    greeting = script.nodes["greeting"].say[0].text
    assert speaker.lines[:3] == [greeting, price, greeting]


async def test_kb_wins_over_affirm_by_priority(script, classifier, autojump_clock) -> None:
    # "네, 가격이 얼마 예요" matches both; the knowledge base comes first in the priority list
    _, turns, _ = await converse(
        script, classifier, [Utterance("네 가격이 얼마 예요", 0.9), Utterance("네", 0.9)]
    )
    assert [t.intent for t in turns if t.speaker == "callee"] == ["kb.price", "affirm"]


async def test_silence_reprompts_once_then_says_goodbye(script, classifier, autojump_clock) -> None:
    start = trio.current_time()
    ending, _, speaker = await converse(script, classifier, [])
    assert (ending.node, ending.grade, ending.reason) == ("bye_silence", "D", "silence")
    assert speaker.lines == [
        script.nodes["greeting"].say[0].text,
        script.nodes["greeting"].reprompt[0].text,
        script.nodes["bye_silence"].say[0].text,
    ]
    # two silence timeouts, nothing else took time
    assert trio.current_time() - start == pytest.approx(2 * script.silence_timeout)


async def test_unmatched_and_low_confidence_take_default(
    script, classifier, autojump_clock
) -> None:
    ending, turns, _ = await converse(
        script, classifier, [Utterance("날씨가 좋네요", 0.9), Utterance("네", 0.1)]
    )
    # both replies went to "default": greeting → ask_again → bye_unclear
    assert [t.intent for t in turns if t.speaker == "callee"] == ["default", "default"]
    assert (ending.node, ending.grade) == ("bye_unclear", "B")


async def test_noise_restarts_the_silence_timer(script, classifier, autojump_clock) -> None:
    # speech that recognised as nothing is noise: it neither routes nor counts as silence
    ending, turns, _ = await converse(
        script, classifier, [4.0, Utterance("", 0.0), Utterance("네", 0.9)]
    )
    assert ending.grade == "A"
    assert [t.intent for t in turns if t.speaker == "callee"] == ["affirm"]


async def test_variables_fill_text(script, classifier, autojump_clock, tmp_path) -> None:
    text = (
        (SCRIPTS / "demo-ko.toml")
        .read_text(encoding="utf-8")
        .replace("안녕하세요, 와이후", "{name} 님 안녕하세요, {unknown} 와이후", 1)
    )
    path = tmp_path / "vars.toml"
    path.write_text(text, encoding="utf-8")
    with_vars = load_script(path, check_recordings=False)
    speaker = TextSpeaker()
    _send, receive = trio.open_memory_channel(1)
    engine = DialogueEngine(
        with_vars,
        classifier,
        speaker,
        receive,
        on_turn=lambda t: None,
        variables={"name": "김민수"},
        now=trio.current_time,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    # a field the contact lacks stays as written rather than failing the call
    assert speaker.lines[0].startswith("김민수 님 안녕하세요, {unknown} 와이후")
