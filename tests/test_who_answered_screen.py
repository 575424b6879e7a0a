"""The answer screen of one call on a fake clock: recognised text, tones and the window
decide who answered, once; utterances wait for the verdict; a person is never made a
machine, whatever the tests can throw at it; early media is heard by the real recogniser.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waihu.api import ProviderContext
from waihu.testing.speech import speech_pcm
from waihu.who_answered import (
    DEFAULT_DECIDE_WITHIN,
    AnswerScreen,
    Verdict,
    hear_early,
    machine_phrases,
    outcome_of,
)
from waihu_vosk.engine import VoskEngine

RATE = 8000
FRAME = RATE // 50  # 20 ms
TIMEOUT = 30.0


def tone(hz: float, seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (level * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), np.int16)


def busy(bursts: int) -> np.ndarray:
    return np.concatenate([np.concatenate([tone(450, 0.35), quiet(0.35)])] * bursts)


def ringback() -> np.ndarray:
    return np.concatenate([tone(450, 1.0), quiet(4.0)])


class Clocked:
    """A screen fed frame by frame on a clock the test moves (20 ms a frame)."""

    def __init__(self, language: str = "zh", decide_within: float = DEFAULT_DECIDE_WITHIN):
        self.now = 0.0
        self.screen = AnswerScreen(
            language, sample_rate=RATE, decide_within=decide_within, now=lambda: self.now
        )

    def play(self, pcm: np.ndarray) -> None:
        for start in range(0, pcm.size - FRAME + 1, FRAME):
            self.now += 0.02
            self.screen.feed(pcm[start : start + FRAME])

    def wait(self, seconds: float) -> None:
        self.play(quiet(seconds))


# ───────────────────────── text ─────────────────────────


def test_a_carrier_phrase_in_a_final_decides_at_once_a_partial_decides_nothing() -> None:
    c = Clocked()
    c.wait(0.8)
    c.screen.heard("您拨打的用户已关机", final=False)  # no confidence: may be a forced phrase
    assert c.screen.verdict is None
    c.wait(0.4)
    c.screen.heard("您拨打的用户已关机", final=True, confidence=0.93)
    assert c.screen.verdict == Verdict("announcement", "switched_off", "said '已关机'")
    assert c.screen.machine and c.screen.decided.is_set() and c.screen.machine_found.is_set()
    assert c.screen.decided_at == pytest.approx(1.2)
    assert outcome_of(c.screen.verdict) == "switched_off"


def test_a_phrase_of_unsure_words_decides_nothing() -> None:
    """A phrase grammar forces what it hears onto its phrases: a machine's phrase counts only
    when every word of it is sure; a person's forced words are not."""
    c = Clocked("ko")
    unsure = (("음", 1.0, 0.0, 0.3), ("삐", 0.9, 0.3, 0.5), ("소리", 0.7, 0.5, 0.8))
    c.screen.heard("음 삐 소리", final=True, confidence=0.87, words=unsure)
    assert c.screen.verdict is None
    c.screen.heard("결번", final=True, confidence=0.4)  # no words: the mean decides
    c.screen.heard("통화중", final=True, confidence=0.6)
    assert c.screen.verdict is None
    sure = (("없는", 0.9, 0.0, 0.3), ("번호", 0.95, 0.3, 0.6))
    c.screen.heard("없는 번호", final=True, confidence=0.92, words=sure)
    assert c.screen.verdict == Verdict("announcement", "invalid_number", "said '없는 번호'")


def test_a_phrase_never_spans_an_unsure_word() -> None:
    c = Clocked("ko")
    split = (("없는", 0.95, 0.0, 0.3), ("음", 0.3, 0.3, 0.4), ("번호", 0.95, 0.4, 0.7))
    c.screen.heard("없는 음 번호", final=True, confidence=0.73, words=split)
    assert c.screen.verdict is None


def test_the_grammar_adds_machines_and_greetings_until_the_verdict() -> None:
    c = Clocked("ko")
    grammar = c.screen.grammar()
    assert "없는 번호" in grammar and "음성 사서함" in grammar and "여보세요" in grammar
    c.screen.heard("여보세요", final=True, confidence=0.9)
    assert c.screen.grammar() == []
    assert Clocked("xx").screen.grammar() == []  # a language without lists adds nothing


def test_a_short_greeting_is_a_person_once_its_utterance_ends() -> None:
    c = Clocked("ko")
    c.wait(0.5)
    c.screen.heard("여보세요", final=False)  # a partial may still grow into something else
    assert c.screen.verdict is None
    c.screen.heard("여보세요", final=True)
    assert c.screen.verdict == Verdict("person", None, "said '여보세요'")
    assert not c.screen.machine and outcome_of(c.screen.verdict) is None


def test_words_heard_across_utterances_count_together() -> None:
    c = Clocked()
    c.screen.heard("您好 请稍等 这里是机主的", final=True)  # too long for a mere greeting
    assert c.screen.verdict is None
    c.screen.heard("来电秘书", final=True)
    assert c.screen.verdict is not None and c.screen.verdict.kind == "voicemail"


def test_nothing_telling_in_the_window_is_unsure_at_its_end() -> None:
    c = Clocked()
    c.screen.heard("您好 欢迎致电平安保险 业务咨询请按一", final=True)
    c.wait(2.9)
    assert c.screen.verdict is None
    c.wait(0.2)
    assert c.screen.verdict is not None and c.screen.verdict.kind == "unsure"
    assert c.screen.decided_at == pytest.approx(3.0, abs=0.03)


def test_the_verdict_is_final() -> None:
    c = Clocked()
    c.screen.heard("喂", final=True)
    c.screen.heard("您拨打的用户已关机", final=True)
    c.play(busy(4))
    assert c.screen.verdict == Verdict("person", None, "said '喂'")


def test_an_unsure_call_that_beeps_later_is_a_machine_after_all() -> None:
    """A voicemail greeting longer than the window: unsure at 3 s, its beep at 5 s proves it
    a machine (the verdict says when); a beep after ``listen_within`` changes nothing."""
    c = Clocked()
    c.wait(3.1)
    assert c.screen.verdict is not None and c.screen.verdict.kind == "unsure"
    assert not c.screen.machine_found.is_set()
    c.screen.heard("您拨打的用户已关机", final=True, confidence=1.0)  # words: in conversation
    assert c.screen.verdict.kind == "unsure"
    c.wait(1.9)
    c.play(tone(1000, 0.5))
    c.wait(0.4)
    assert c.screen.verdict == Verdict("voicemail", None, "a beep, 5.6 s after the answer")
    assert c.screen.machine and c.screen.machine_found.is_set()
    assert c.screen.decided_at == pytest.approx(3.0, abs=0.03)
    assert c.screen.revised_at == pytest.approx(5.6, abs=0.05)

    busy_line = Clocked()  # a line the callee left gives busy: no evidence of a machine
    busy_line.wait(3.1)
    busy_line.play(busy(4))
    assert busy_line.screen.verdict is not None and busy_line.screen.verdict.kind == "unsure"

    late = Clocked()
    late.wait(8.1)
    late.play(tone(1000, 0.5))
    late.wait(0.4)
    assert late.screen.verdict is not None and late.screen.verdict.kind == "unsure"
    assert not late.screen.machine_found.is_set()


def test_the_window_is_configurable() -> None:
    c = Clocked(decide_within=1.0)
    c.wait(1.1)
    assert c.screen.verdict is not None and c.screen.verdict.kind == "unsure"


# ───────────────────────── tones ─────────────────────────


def test_a_busy_tone_after_the_answer_is_a_busy_announcement_within_the_window() -> None:
    c = Clocked()
    c.play(busy(4))
    assert c.screen.verdict == Verdict("announcement", "busy", "busy tone")
    assert c.screen.decided_at is not None and c.screen.decided_at < DEFAULT_DECIDE_WITHIN


def test_a_beep_after_a_greeting_is_voicemail() -> None:
    c = Clocked("ko")
    c.play(speech_pcm("음성 사서함입니다"))
    c.wait(0.3)
    c.play(tone(1000, 0.5))
    c.wait(0.2)  # tones are analysed 200 ms at a time
    assert c.screen.verdict == Verdict("voicemail", None, "a beep")


def test_ring_back_and_a_450_hz_burst_are_no_machine() -> None:
    c = Clocked()
    c.play(ringback()[: int(RATE * 2.5)])
    c.wait(1.0)
    assert c.screen.verdict is not None and c.screen.verdict.kind == "unsure"


def test_a_burst_then_a_longer_tone_is_not_busy() -> None:
    # found by the property below: a busy-length burst and gap, then a tone that was still
    # growing through busy's length, was taken for busy before it had ended
    c = Clocked()
    c.play(np.concatenate([tone(450, 0.375), _noise(0, 0.375, 3000.0), tone(450, 1.0)]))
    c.wait(1.5)
    assert c.screen.verdict is not None and c.screen.verdict.kind == "unsure"


# ───────────────────────── early media ─────────────────────────


def test_a_machine_in_early_media_decides_and_a_person_there_does_not() -> None:
    c = Clocked()
    c.screen.early(Verdict("unsure", None, "nothing telling heard"))
    assert c.screen.verdict is None
    c.screen.early(Verdict("announcement", "invalid_number", "said '空号'"))
    assert c.screen.verdict == Verdict("announcement", "invalid_number", "early media: said '空号'")


# ───────────────────────── holding utterances ─────────────────────────


async def test_an_utterance_waits_for_a_person_verdict_and_is_let_through_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    screen = AnswerScreen("zh", sample_rate=RATE)
    start = trio.current_time()
    admitted: list[bool] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def utterance() -> None:
                admitted.append(await screen.admit(object()))

            nursery.start_soon(utterance)
            await trio.sleep(1.0)
            assert admitted == []  # held
            screen.heard("喂 你好", final=True)
    assert admitted == [True]
    assert trio.current_time() - start == pytest.approx(1.0)


async def test_an_utterance_of_a_machine_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    screen = AnswerScreen("zh", sample_rate=RATE)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            result: list[bool] = []

            async def utterance() -> None:
                result.append(await screen.admit(object()))

            nursery.start_soon(utterance)
            await trio.sleep(0.5)
            screen.heard("请在提示音后留言", final=True)
    assert result == [False]
    assert not await screen.admit(object())  # and every later one


async def test_an_undecided_utterance_goes_through_at_the_end_of_the_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    screen = AnswerScreen("zh", sample_rate=RATE, decide_within=3.0)
    start = trio.current_time()
    with trio.fail_after(TIMEOUT):
        assert await screen.admit(object())
    assert trio.current_time() - start == pytest.approx(3.0)
    assert screen.verdict is not None and screen.verdict.kind == "unsure"


async def test_run_decides_at_the_end_of_the_window_with_nothing_heard(
    autojump_clock: trio.testing.MockClock,
) -> None:
    screen = AnswerScreen("zh", sample_rate=RATE, decide_within=2.0)
    with trio.fail_after(TIMEOUT):
        await screen.run()
    assert screen.verdict == Verdict("unsure", None, "nothing telling heard")
    assert screen.decided_at == pytest.approx(2.0)


# ───────────────────────── the message cue ─────────────────────────


def voicemail_screen() -> Clocked:
    c = Clocked()
    c.screen.heard("您好 我是机主的来电秘书", final=True)
    assert c.screen.verdict is not None and c.screen.verdict.kind == "voicemail"
    c.screen.listen_for_message_cue(silence=1.0)
    return c


def test_the_beep_is_the_cue_to_leave_a_message() -> None:
    c = voicemail_screen()
    c.play(speech_pcm("음성 사서함입니다"))
    assert not c.screen.cue.is_set()
    c.wait(0.2)
    c.play(tone(1000, 0.4))
    c.wait(0.2)
    assert c.screen.cue.is_set()


def test_without_a_beep_the_greeting_ending_is_the_cue() -> None:
    c = voicemail_screen()
    c.play(speech_pcm("음성 사서함입니다"))
    c.play(_noise(1, 0.3, 3000.0))  # the greeting's last sound
    c.wait(0.9)
    assert not c.screen.cue.is_set()
    c.wait(0.2)
    assert c.screen.cue.is_set()


# ───────────────────────── a person is never a machine ─────────────────────────

PEOPLE_SAY = {
    "zh": [
        "喂", "喂 你好", "你好", "哪位", "谁啊", "嗯", "喂 喂", "你说", "我在开车 你说吧",
        "我是他的助理 有什么事", "你留个言吧", "我现在不方便", "什么事", "是的", "多少钱",
        "我是机主", "我就是机主本人", "喂 哪位啊 说话",
    ],
    "ko": [
        "여보세요", "네 여보세요", "누구세요", "네", "예", "말씀하세요", "지금 회의 중이에요",
        "나중에 다시 전화 주세요", "네 말씀하세요", "어디세요", "관심 없어요",
    ],
}  # fmt: skip


def _noise(seed: int, seconds: float, level: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, level, int(RATE * seconds)), -32768, 32767).astype(np.int16)


events = st.one_of(
    st.tuples(st.just("said"), st.integers(0, 100), st.booleans()),
    st.tuples(st.just("noise"), st.integers(0, 1000), st.floats(0.02, 1.0)),
    st.tuples(st.just("quiet"), st.integers(0, 0), st.floats(0.02, 2.0)),
    st.tuples(st.just("ring"), st.integers(0, 0), st.floats(0.1, 3.0)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(language=st.sampled_from(["zh", "ko"]), script=st.lists(events, max_size=12))
def test_a_person_is_never_made_a_machine(language: str, script: list[tuple]) -> None:
    c = Clocked(language)
    said = PEOPLE_SAY[language]
    for kind, number, value in script:
        if kind == "said":
            c.screen.heard(said[number % len(said)], final=bool(value))
        elif kind == "noise":
            c.play(_noise(number, value, 3000.0))
        elif kind == "quiet":
            c.wait(value)
        else:  # ring-back heard in the background: a carrier's, yet no machine answering
            c.play(ringback()[: int(RATE * value)])
    c.wait(DEFAULT_DECIDE_WITHIN)
    assert c.screen.verdict is not None  # always decided once the window is over
    assert c.screen.verdict.kind in ("person", "unsure"), (c.screen.verdict, script)
    assert c.screen.decided_at is not None and c.screen.decided_at <= DEFAULT_DECIDE_WITHIN + 0.021


# ───────────────────────── early media, heard by the real recogniser ─────────────────────────


@pytest.fixture
async def vosk(nursery: trio.Nursery, tmp_path: Path) -> VoskEngine:
    context = ProviderContext(
        name="test",
        state_dir=tmp_path,
        log=logging.getLogger("waihu.asr.test"),
        cpu_limiter=trio.CapacityLimiter(2),
    )
    engine = VoskEngine(VoskEngine.Config(), context)
    await nursery.start(engine.run)
    return engine


async def test_early_media_announcement_is_heard_by_the_calls_recogniser(
    vosk: VoskEngine,
) -> None:
    said = speech_pcm("없는 번호입니다")
    audio = np.concatenate([quiet(0.3), said, quiet(0.5), said, quiet(0.3)])
    with trio.fail_after(TIMEOUT):
        verdict = await hear_early(audio, RATE, vosk, "ko")
    assert verdict == Verdict("announcement", "invalid_number", "said '없는 번호'")


async def test_early_media_tones_decide_without_a_recogniser_and_ring_back_is_nothing(
    vosk: VoskEngine,
) -> None:
    with trio.fail_after(TIMEOUT):
        assert await hear_early(busy(4), RATE, None, "zh") == Verdict(
            "announcement", "busy", "busy tone"
        )
        ringing = await hear_early(np.concatenate([ringback(), ringback()]), RATE, vosk, "ko")
    assert ringing.kind == "unsure"


def test_early_media_is_heard_for_the_phrases_of_its_language() -> None:
    assert "없는 번호" in machine_phrases("ko") and "음성 사서함" in machine_phrases("ko")
    assert "关机" in machine_phrases("zh") and "来电秘书" in machine_phrases("zh")
    assert machine_phrases("xx") == []
