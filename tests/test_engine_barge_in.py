"""The dialogue engine after barge-in: backchannels, cut lines, false-interruption recovery.

The engine runs on trio's mock clock and speaks through ``LineSpeaker``, which
plays each line for a set time and lets the test cut it as the media does (the
line ends interrupted after some ms of it; ``PromptDone(interrupted=True)``
follows). The classifier is the real keyword plugin; scripts are real TOML
files loaded by ``load_script``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import numpy as np
import pytest
import trio
import trio.testing

from waihu.api import ProviderContext, Turn
from waihu.dialog.engine import (
    BACKCHANNEL_INTENT,
    DialogueEngine,
    Ending,
    PromptDone,
    SpeechBegan,
    Step,
    Utterance,
)
from waihu.dialog.library import LoadedScript
from waihu.dialog.script import Script, ScriptError, Variant, load_script
from waihu.media.prompt_player import PromptPlayer
from waihu.voice import VoiceSpeaker

LINE_SECONDS = 3.0  # every line lasts this long unless cut

SCRIPT = """
[script]
name = "bargein"
language = "ko"
start = "offer"
silence_timeout = 5.0
{script_extra}

[intents.affirm]
keywords = ["네", "좋아요"]

[intents.deny]
keywords = ["아니요", "필요 없어요"]

[nodes.offer]
say = [{{ text = "새 보험 상품을 소개해 드려도 될까요?" }}]
on = {{ affirm = "bye", deny = "bye", default = "bye" }}
{node_extra}

[nodes.bye]
say = [{{ text = "감사합니다." }}]
end = true
grade = "A"
"""


def write_script(tmp_path: Path, *, script_extra: str = "", node_extra: str = "") -> Path:
    path = tmp_path / "bargein.toml"
    path.write_text(
        SCRIPT.format(script_extra=script_extra, node_extra=node_extra), encoding="utf-8"
    )
    return path


@attrs.define(eq=False)
class Line:
    """A line as the media plays it: ``played_ms`` of ``duration_ms`` heard so far."""

    text: str
    interruptible: bool
    from_ms: int
    duration_ms: int = round(LINE_SECONDS * 1000)
    done: trio.Event = attrs.Factory(trio.Event)
    interrupted: bool = False
    played_ms: int = 0
    started_at: float | None = None
    ended_at: float | None = None


class LineSpeaker:
    """Plays lines one after another on the trio clock; ``cut`` stops them as a
    confirmed barge-in does (the line playing and those queued)."""

    def __init__(self, nursery: trio.Nursery, inbox: trio.MemorySendChannel) -> None:
        self.nursery = nursery
        self.inbox = inbox
        self.lines: list[Line] = []
        self._queue: list[Line] = []
        self._current: Line | None = None
        self._started: float = 0.0
        self._wake = trio.Event()
        nursery.start_soon(self._play)

    def say(self, variant: Variant, text: str, *, interruptible: bool) -> Line:
        return self.say_from(variant, text, interruptible=interruptible, from_ms=0)

    def say_from(self, variant: Variant, text: str, *, interruptible: bool, from_ms: int) -> Line:
        line = Line(text, interruptible, from_ms, played_ms=from_ms)
        self.lines.append(line)
        self._queue.append(line)
        self._wake.set()
        return line

    async def _play(self) -> None:
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            line = self._current = self._queue.pop(0)
            line.started_at = self._started = trio.current_time()
            with trio.move_on_after((line.duration_ms - line.from_ms) / 1000):
                await line.done.wait()  # set early by ``cut``
            if not line.interrupted:
                line.played_ms = line.duration_ms
                line.ended_at = trio.current_time()
                line.done.set()
                await self.inbox.send(PromptDone())
            self._current = None

    async def cut(self) -> None:
        """Cut the line playing now and those queued (a confirmed barge-in)."""
        stopped = [line for line in [self._current, *self._queue] if line is not None]
        self._queue = []
        for line in stopped:
            line.interrupted = True
            if line is self._current:
                line.played_ms = line.from_ms + round((trio.current_time() - self._started) * 1000)
            line.ended_at = trio.current_time()
            line.done.set()
        for line in stopped:
            await self.inbox.send(PromptDone(interrupted=True, played_ms=line.played_ms))


@pytest.fixture
def classifier_for(provider_types: dict, tmp_path: Path):
    def make(script: Script):
        cls = provider_types["nlu"]["keywords"]
        context = ProviderContext(
            name="default",
            state_dir=tmp_path,
            log=logging.getLogger("t"),
            cpu_limiter=trio.CapacityLimiter(1),
        )
        classifier = cls(cls.Config(), context)
        classifier.fit(script.intents)
        return classifier

    return make


@attrs.define
class Run:
    ending: Ending | None
    turns: list[Turn]
    steps: list[Step]
    speaker: LineSpeaker
    engine: DialogueEngine


async def converse(script: Script, classifier, callee, *, recovery_ms: int = 1500) -> Run:
    """Run the engine with ``callee(speaker, send)`` acting as the callee."""
    turns: list[Turn] = []
    steps: list[Step] = []
    send, receive = trio.open_memory_channel(20)
    ending = None
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            speaker = LineSpeaker(nursery, send)
            engine = DialogueEngine(
                script,
                classifier,
                speaker,
                receive,
                on_turn=turns.append,
                on_step=steps.append,
                now=trio.current_time,
                recovery_ms=recovery_ms,
            )

            async def act() -> None:
                await callee(speaker, send)

            nursery.start_soon(act)
            ending = await engine.run()
            engine.settle_turns()
            nursery.cancel_scope.cancel()
    return Run(ending, turns, steps, speaker, engine)


def offer_text(script: Script) -> str:
    return script.nodes["offer"].say[0].text


async def test_a_backchannel_is_written_down_and_routes_nothing(
    tmp_path: Path, classifier_for, autojump_clock: trio.testing.MockClock
) -> None:
    script = load_script(write_script(tmp_path))

    async def callee(speaker: LineSpeaker, send) -> None:
        await trio.sleep(1.0)
        await send.send(SpeechBegan())
        await trio.sleep(0.5)
        await send.send(Utterance("네", 0.9, backchannel=True))  # the line went on
        await trio.sleep(3.0)
        await send.send(SpeechBegan())
        await send.send(Utterance("아니요", 0.9))

    run = await converse(script, classifier_for(script), callee)
    callee_turns = [(t.text, t.intent) for t in run.turns if t.speaker == "callee"]
    assert callee_turns == [("네", BACKCHANNEL_INTENT), ("아니요", "deny")]
    assert run.ending is not None and run.ending.node == "bye"
    assert [line.text for line in run.speaker.lines] == [offer_text(script), "감사합니다."]
    assert run.engine.facts.turns == 1  # the backchannel was no turn of the conversation


@pytest.mark.parametrize(
    ("node_extra", "script_extra", "expected"),
    [
        ("", "", "resume"),
        ('barge_in_recovery = "repeat"', "", "repeat"),
        ('barge_in_recovery = "listen"', 'barge_in_recovery = "repeat"', "listen"),
        ("", 'barge_in_recovery = "repeat"', "repeat"),
    ],
)
async def test_a_cut_followed_by_no_words_is_recovered_as_the_script_says(
    tmp_path: Path,
    classifier_for,
    autojump_clock: trio.testing.MockClock,
    node_extra: str,
    script_extra: str,
    expected: str,
) -> None:
    script = load_script(write_script(tmp_path, node_extra=node_extra, script_extra=script_extra))
    assert script.nodes["offer"].barge_in_recovery == expected

    async def callee(speaker: LineSpeaker, send) -> None:
        await trio.sleep(1.2)
        await send.send(SpeechBegan())  # a long cough: paused, then cut on its length
        await trio.sleep(0.6)
        await speaker.cut()
        await trio.sleep(0.4)
        await send.send(Utterance("", 0.0))  # no words in it
        await trio.sleep(4.0)  # within the silence window (listen) or the line (3 s)
        await send.send(SpeechBegan())
        await send.send(Utterance("네", 0.9))

    run = await converse(script, classifier_for(script), callee)
    text = offer_text(script)
    said = [(line.text, line.from_ms) for line in run.speaker.lines]
    first = run.speaker.lines[0]
    assert first.interrupted and first.played_ms == 1800
    if expected == "resume":
        assert said[:2] == [(text, 0), (text, 1800)]  # the rest, from where it was cut
    elif expected == "repeat":
        assert said[:2] == [(text, 0), (text, 0)]
    else:
        assert said[:2] == [(text, 0), ("감사합니다.", 0)]  # nothing said until "네"
    [recovery] = [s for s in run.steps if s.event == "barge_in_recovery"]
    assert recovery.chain == (f"barge_in_recovery:{expected}",)
    # the robot's turn of the cut line says how much was heard
    robot = [t for t in run.turns if t.speaker == "robot"]
    assert robot[0].interrupted and robot[0].played_ms == 1800
    assert run.engine.last_cut is not None
    assert run.engine.last_cut.played_ms == 1800
    assert run.engine.last_cut.heard_chars == round(len(text) * 1800 / 3000)


async def test_words_after_a_cut_are_a_reply_and_nothing_is_recovered(
    tmp_path: Path, classifier_for, autojump_clock: trio.testing.MockClock
) -> None:
    script = load_script(write_script(tmp_path))

    async def callee(speaker: LineSpeaker, send) -> None:
        await trio.sleep(1.0)
        await send.send(SpeechBegan())
        await trio.sleep(0.3)
        await speaker.cut()  # words cut it
        await trio.sleep(0.5)
        await send.send(Utterance("필요 없어요", 0.9))

    run = await converse(script, classifier_for(script), callee)
    assert [line.text for line in run.speaker.lines] == [offer_text(script), "감사합니다."]
    assert not [s for s in run.steps if s.event == "barge_in_recovery"]
    assert [t.intent for t in run.turns if t.speaker == "callee"] == ["deny"]


async def test_no_utterance_at_all_after_a_cut_recovers_after_recovery_ms(
    tmp_path: Path, classifier_for, autojump_clock: trio.testing.MockClock
) -> None:
    script = load_script(write_script(tmp_path))
    recovered_at: list[float] = []

    async def callee(speaker: LineSpeaker, send) -> None:
        await trio.sleep(1.0)
        await speaker.cut()  # (the utterance that cut it was never delivered)
        cut_at = trio.current_time()
        while len(speaker.lines) < 2:
            await trio.sleep(0.01)
        recovered_at.append(trio.current_time() - cut_at)
        await trio.sleep(3.0)
        await send.send(SpeechBegan())
        await send.send(Utterance("네", 0.9))

    run = await converse(script, classifier_for(script), callee, recovery_ms=900)
    assert recovered_at[0] == pytest.approx(0.9, abs=0.02)
    assert run.speaker.lines[1].from_ms == 1000


def test_a_bad_recovery_is_refused_naming_the_node(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match=r"nodes\.offer\.barge_in_recovery"):
        load_script(write_script(tmp_path, node_extra='barge_in_recovery = "again"'))
    with pytest.raises(ScriptError, match=r"script\.barge_in_recovery"):
        load_script(write_script(tmp_path, script_extra='barge_in_recovery = "later"'))


async def test_the_voice_speaker_says_the_rest_of_a_line(tmp_path: Path) -> None:
    """``VoiceSpeaker.say_from`` (what ``resume`` uses) starts the line's audio at the
    offset, in samples of the call's rate; past its end nothing is heard."""
    script = load_script(write_script(tmp_path))
    text = offer_text(script)
    audio = np.arange(16000, dtype=np.int16)  # two seconds at 8 kHz
    loaded = LoadedScript(script=script, audio={}, classifier=None, speech={text: audio})
    player = PromptPlayer(160, sample_rate=8000)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            speaker = VoiceSpeaker(player, loaded, None, nursery, sample_rate=8000)
            rest = speaker.say_from(Variant(text=text), text, interruptible=True, from_ms=1250)
            np.testing.assert_array_equal(player.next_frame(), audio[10000:10160])
            assert rest.played_ms == 1270
            past = speaker.say_from(Variant(text=text), text, interruptible=True, from_ms=5000)
            whole = speaker.say(Variant(text=text), text, interruptible=False)
            assert (past.played_ms, whole.played_ms) == (2000, 0)
            nursery.cancel_scope.cancel()
