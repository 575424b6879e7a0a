"""Barge-in a person would accept: the judge on its own, then CallMedia over real UDP.

The judge is driven with synthetic events (it is sans-IO). CallMedia runs on
trio's MockClock with a far end on 127.0.0.1 that sends espeak-ng speech and
synthetic coughs, and reads back what the robot sent: whether the prompt was
heard to its end, paused, or cut, and nothing queued leaked out. One far end
returns the robot's own voice as echo (−20 dB, 60 ms, through G.711).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import trio
import trio.testing
from test_media_call_media import (
    FRAME,
    PCMA,
    PCMU,
    RATE,
    SPF,
    Call,
    FarEnd,
    make_pair,
    robot_silent,
    run_call,
    silence,
    tone,
)

from waihu.media.barge_in import (
    DEFAULT_BACKCHANNELS,
    Action,
    BargeInJudge,
    BargeInSettings,
    backchannels_for,
    is_backchannel,
)
from waihu.media.call_media import (
    BargeIn,
    BargeInPaused,
    BargeInResumed,
    CallMedia,
    PromptFinished,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from waihu.media.endpointer import Endpointer, EndpointState
from waihu.media.prompt_player import PromptPlayer
from waihu.media.rtp import RtpSender
from waihu.testing.speech import speech_pcm

KO = backchannels_for("ko")

# ───────────────────────── the judge alone ─────────────────────────


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("네", "ko", True),
        ("네 네", "ko", True),
        ("네네네", "ko", True),
        ("예.", "ko", True),
        ("네 그런데", "ko", False),
        ("아니요", "ko", False),
        ("", "ko", False),
        ("嗯嗯，对", "zh", True),
        ("是的", "zh", True),
        ("好 好", "zh", True),
        ("对的", "zh", False),
        ("不是", "zh", False),
        ("嗯", "en", False),
    ],
)
def test_what_is_a_backchannel(text: str, language: str, expected: bool) -> None:
    assert is_backchannel(text, backchannels_for(language)) is expected


def test_backchannels_per_language() -> None:
    assert backchannels_for("zh-CN") == DEFAULT_BACKCHANNELS["zh"]
    assert backchannels_for("ko") == ("네", "예", "응", "음", "아", "네네")
    assert backchannels_for("ko", {"ko": ["네"]}) == ("네",)
    assert backchannels_for("zh", {"ko": ["네"]}) == DEFAULT_BACKCHANNELS["zh"]
    assert backchannels_for("en") == ()


def frames(judge: BargeInJudge, n: int, *, voiced: bool = True) -> list[Action]:
    return [judge.frame(voiced=voiced) for _ in range(n)]


def test_speech_over_a_line_pauses_then_long_speech_cuts() -> None:
    judge = BargeInJudge(BargeInSettings(confirm_ms=800, backchannels=KO))
    assert judge.speech_started(interruptible=True, voiced_ms=200) is Action.PAUSE
    assert judge.paused
    # 580 ms more of speech, with pauses between words that do not count
    assert set(frames(judge, 29) + frames(judge, 10, voiced=False)) == {Action.NONE}
    assert judge.frame(voiced=True) is Action.CUT
    assert not judge.paused
    assert frames(judge, 50) == [Action.NONE] * 50  # decided once
    assert judge.speech_ended() is Action.NONE
    assert judge.heard("", final=True) is Action.NONE
    assert judge.last_backchannel is False


def test_pause_waits_for_its_own_duration() -> None:
    judge = BargeInJudge(BargeInSettings(pause_ms=300))
    assert judge.speech_started(interruptible=True, voiced_ms=200) is Action.NONE
    assert frames(judge, 4) == [Action.NONE] * 4
    assert judge.frame(voiced=True) is Action.PAUSE


def test_words_in_a_partial_wait_for_the_final_which_cuts() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    assert judge.speech_started(interruptible=True, voiced_ms=200) is Action.PAUSE
    assert judge.heard("네", final=False) is Action.NONE
    assert judge.heard("네 잠깐", final=False) is Action.NONE  # no confidence: not yet
    assert frames(judge, 5) == [Action.NONE] * 5
    # the latest partial is not backchannels only: the silence after it does not resume
    assert frames(judge, 30, voiced=False) == [Action.NONE] * 30
    assert judge.paused
    assert judge.speech_ended() is Action.NONE
    assert judge.heard("네 잠깐만요", final=True) is Action.CUT  # the final decides
    assert not judge.paused
    assert judge.last_backchannel is False


def test_a_word_forced_onto_a_backchannel_does_not_cut() -> None:
    """The phrase grammar heard "네" as "네 없어요": the forced word is unsure."""
    judge = BargeInJudge(BargeInSettings(word_confidence=0.85, backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    assert judge.heard("네 없어요", final=False) is Action.NONE
    frames(judge, 10)
    assert judge.speech_ended() is Action.NONE
    forced = (("네", 1.0, 0.1, 0.4), ("없어요", 0.74, 0.4, 0.6))
    assert judge.heard("네 없어요", final=True, words=forced) is Action.RESUME
    assert judge.last_backchannel is True


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [(0.74, Action.RESUME), (0.849, Action.RESUME), (0.85, Action.CUT), (0.95, Action.CUT)],
)
def test_a_final_word_counts_from_the_confidence_threshold(
    confidence: float, expected: Action
) -> None:
    judge = BargeInJudge(BargeInSettings(word_confidence=0.85, backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()
    words = (("네", 1.0, 0.1, 0.4), ("없어요", confidence, 0.4, 0.6))
    assert judge.heard("네 없어요", final=True, words=words) is expected
    assert judge.last_backchannel is (expected is Action.RESUME)


def test_the_confidence_threshold_is_a_setting() -> None:
    judge = BargeInJudge(BargeInSettings(word_confidence=0.7, backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()
    words = (("네", 1.0, 0.1, 0.4), ("없어요", 0.74, 0.4, 0.6))
    assert judge.heard("네 없어요", final=True, words=words) is Action.CUT


def test_backchannel_words_count_however_unsure() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200, line_left_ms=800)
    judge.speech_ended()
    # "네" as the question ends is its answer, even said unclearly
    assert judge.heard("네", final=True, words=(("네", 0.6, 0.1, 0.4),)) is Action.CUT


def test_a_final_of_unsure_words_only_resumes_as_a_cough_does() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()
    assert judge.heard("얼마", final=True, words=(("얼마", 0.6, 0.1, 0.4),)) is Action.RESUME


def test_a_final_without_word_confidences_counts_every_word() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()
    assert judge.heard("네 없어요", final=True, words=()) is Action.CUT


def test_long_speech_with_words_in_its_partials_cuts_on_the_confirmation() -> None:
    judge = BargeInJudge(BargeInSettings(confirm_ms=800, backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    assert judge.heard("가격이", final=False) is Action.NONE
    assert frames(judge, 29) == [Action.NONE] * 29
    assert judge.frame(voiced=True) is Action.CUT  # 800 ms voiced


def test_words_in_a_partial_as_the_line_ends_cut_at_once() -> None:
    judge = BargeInJudge(BargeInSettings(answer_tail_ms=1000, backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200, line_left_ms=900)
    assert judge.heard("얼마", final=False) is Action.CUT  # the callee answers the question


def test_after_words_in_a_partial_the_wait_for_the_final_is_still_bounded() -> None:
    judge = BargeInJudge(BargeInSettings(final_wait_ms=1000, backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.heard("잠깐", final=False)
    judge.speech_ended()
    assert frames(judge, 49, voiced=False) == [Action.NONE] * 49
    assert judge.frame(voiced=False) is Action.RESUME  # no final came: the line goes on


def test_a_backchannel_resumes_the_line_on_its_final_words() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    assert judge.speech_started(interruptible=True, voiced_ms=200) is Action.PAUSE
    frames(judge, 5)
    assert judge.speech_ended() is Action.NONE  # the words decide: still paused
    assert judge.paused
    assert frames(judge, 10, voiced=False) == [Action.NONE] * 10
    assert judge.heard("네", final=True) is Action.RESUME
    assert judge.last_backchannel is True
    # the next utterance, over no line, is no backchannel whatever it says
    assert judge.speech_started(interruptible=False, voiced_ms=200) is Action.NONE
    judge.speech_ended()
    assert judge.heard("네", final=True) is Action.NONE
    assert judge.last_backchannel is False


def test_silence_after_backchannel_words_resumes_without_waiting_for_the_end() -> None:
    judge = BargeInJudge(BargeInSettings(resume_silence_ms=300, backchannels=KO))
    assert judge.speech_started(interruptible=True, voiced_ms=200) is Action.PAUSE
    assert judge.heard("네", final=False) is Action.NONE
    assert frames(judge, 14, voiced=False) == [Action.NONE] * 14
    assert judge.frame(voiced=False) is Action.RESUME  # 300 ms after the "네"
    assert judge.speech_ended() is Action.NONE
    assert judge.heard("네", final=True) is Action.NONE
    assert judge.last_backchannel is True


def test_speaking_on_after_an_early_resume_pauses_again_and_words_cut() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.heard("네", final=False)
    assert Action.RESUME in frames(judge, 15, voiced=False)
    assert judge.frame(voiced=True) is Action.PAUSE  # "네… 그런데"
    assert judge.heard("네 그런데", final=False) is Action.NONE
    frames(judge, 5)
    judge.speech_ended()
    assert judge.heard("네 그런데", final=True) is Action.CUT


def test_an_early_resume_whose_final_adds_only_an_unsure_word_was_a_backchannel() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.heard("네", final=False)
    assert Action.RESUME in frames(judge, 15, voiced=False)
    judge.speech_ended()
    forced = (("네", 1.0, 0.1, 0.4), ("없어요", 0.74, 0.4, 0.6))
    assert judge.heard("네 없어요", final=True, words=forced) is Action.NONE
    assert judge.last_backchannel is True


def test_an_early_resume_whose_final_has_words_was_a_reply() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.heard("네", final=False)
    frames(judge, 15, voiced=False)
    judge.speech_ended()
    assert judge.heard("네 얼마예요", final=True) is Action.NONE
    assert judge.last_backchannel is False


def test_silence_after_no_words_waits_for_the_final() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    assert frames(judge, 30, voiced=False) == [Action.NONE] * 30  # a cough? a word unheard?


def test_backchannel_words_as_the_line_ends_are_an_answer() -> None:
    judge = BargeInJudge(BargeInSettings(answer_tail_ms=1000, backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200, line_left_ms=1000)
    assert judge.heard("네", final=False) is Action.CUT  # "…될까요?" "네"
    judge.speech_ended()
    judge.heard("네", final=True)
    assert judge.last_backchannel is False  # it reaches the dialogue as a reply
    judge.speech_started(interruptible=True, voiced_ms=200, line_left_ms=1020)
    assert judge.heard("네", final=False) is Action.NONE  # mid-line: a backchannel
    judge.speech_ended()
    assert judge.heard("", final=True) is Action.RESUME


def test_a_cough_resumes_and_a_short_no_cuts() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()
    assert judge.heard("", final=True) is Action.RESUME  # no words at all
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()
    assert judge.heard("아니요", final=True) is Action.CUT
    assert judge.last_backchannel is False


def test_duration_only_resumes_when_the_speech_ends() -> None:
    judge = BargeInJudge(BargeInSettings(words=False, backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    assert judge.heard("잠깐만요", final=False) is Action.NONE  # words do not count
    assert judge.speech_ended() is Action.RESUME
    assert judge.heard("잠깐만요", final=True) is Action.NONE
    assert judge.last_backchannel is True


def test_the_wait_for_final_words_is_bounded() -> None:
    judge = BargeInJudge(BargeInSettings(final_wait_ms=1000, backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()
    assert frames(judge, 49, voiced=False) == [Action.NONE] * 49
    assert judge.frame(voiced=False) is Action.RESUME
    # words arriving late were a reply after all: not a backchannel
    assert judge.heard("얼마예요", final=True) is Action.NONE
    assert judge.last_backchannel is False


def test_each_utterance_is_judged_on_its_own() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()  # A ended, its final not yet heard
    assert judge.speech_started(interruptible=False, voiced_ms=200) is Action.NONE  # B
    assert judge.heard("네", final=True) is Action.NONE  # A: B still holds the line
    assert judge.paused
    judge.speech_ended()
    assert judge.heard("음", final=True) is Action.RESUME  # B
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()
    judge.speech_started(interruptible=False, voiced_ms=200)
    assert judge.heard("그게 아니라", final=False) is Action.NONE  # A's partial: not yet
    assert judge.heard("그게 아니라", final=True) is Action.CUT  # A's final cuts for all
    assert not judge.paused
    judge.speech_ended()
    assert judge.heard("음", final=True) is Action.NONE  # B: decided with A


def test_a_line_held_by_two_utterances_waits_for_both_finals() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()  # A
    judge.speech_started(interruptible=False, voiced_ms=200)
    judge.speech_ended()  # B, while A's words are still being decoded
    assert judge.heard("네", final=True) is Action.NONE  # A: B's words may still cut
    assert judge.paused
    assert judge.heard("응", final=True) is Action.RESUME


def test_speech_over_no_line_and_a_line_stopped_elsewhere() -> None:
    judge = BargeInJudge(BargeInSettings(backchannels=KO))
    assert judge.speech_started(interruptible=False, voiced_ms=200) is Action.NONE
    assert frames(judge, 100) == [Action.NONE] * 100
    assert judge.heard("그만하세요", final=False) is Action.NONE
    judge.speech_ended()
    judge.heard("그만하세요", final=True)
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.line_ended()  # the call stopped the line (who answered: a machine)
    assert not judge.paused
    assert frames(judge, 100) == [Action.NONE] * 100
    assert judge.heard("그만하세요", final=False) is Action.NONE


def test_confirm_as_short_as_the_start_cuts_without_pausing() -> None:
    judge = BargeInJudge(BargeInSettings(words=False, confirm_ms=200))
    assert judge.speech_started(interruptible=True, voiced_ms=200) is Action.CUT


# ── the onset pause: before the endpointer confirms speech ──


def onsets(judge: BargeInJudge, counts: list[int], *, interruptible: bool = True) -> list[Action]:
    """Feed the judge the endpointer's voiced count of successive ticks while it is not in
    speech (``Endpointer.starting_voiced_ms``: 0 when quiet)."""
    return [judge.onset(voiced_ms=ms, interruptible=interruptible) for ms in counts]


def test_an_onset_pauses_the_line_before_the_speech_is_confirmed() -> None:
    judge = BargeInJudge(BargeInSettings(pause_ms=120, confirm_ms=800, backchannels=KO))
    assert onsets(judge, [20, 40, 60, 80, 100, 100]) == [Action.NONE] * 6
    assert not judge.paused
    assert judge.onset(voiced_ms=120, interruptible=True) is Action.PAUSE
    assert judge.paused
    assert onsets(judge, [140, 160, 180]) == [Action.NONE] * 3  # held, once
    # the endpointer confirms: the line is paused already (not interruptible any more)
    assert judge.speech_started(interruptible=False, voiced_ms=200) is Action.NONE
    assert judge.paused
    # ...and the speech is judged as any: long speech cuts at confirm_ms
    assert frames(judge, 29) == [Action.NONE] * 29
    assert judge.frame(voiced=True) is Action.CUT
    assert not judge.paused


def test_a_sound_dying_before_the_confirmation_resumes_the_line() -> None:
    judge = BargeInJudge(BargeInSettings(pause_ms=120, backchannels=KO))
    assert onsets(judge, [40, 80, 120]) == [Action.NONE, Action.NONE, Action.PAUSE]
    # a click, a short cough: the count stays, then the endpointer is quiet again
    assert onsets(judge, [140, 140, 140]) == [Action.NONE] * 3
    assert judge.paused
    assert judge.onset(voiced_ms=0, interruptible=False) is Action.RESUME
    assert not judge.paused
    assert judge.onset(voiced_ms=0, interruptible=True) is Action.NONE  # resumed once
    # the next voice pauses as before, and its speech is judged as before
    assert judge.speech_started(interruptible=True, voiced_ms=200) is Action.PAUSE
    judge.speech_ended()
    assert judge.heard("네", final=True) is Action.RESUME
    assert judge.last_backchannel is True


def test_a_confirmed_onset_resumes_on_a_backchannel_and_cuts_on_an_answer() -> None:
    judge = BargeInJudge(BargeInSettings(pause_ms=120, answer_tail_ms=1000, backchannels=KO))
    onsets(judge, [60, 120])
    judge.speech_started(interruptible=False, voiced_ms=200, line_left_ms=3000)
    frames(judge, 5)
    assert judge.onset(voiced_ms=0, interruptible=False) is Action.NONE  # quiet after the end
    judge.speech_ended()
    assert judge.onset(voiced_ms=0, interruptible=False) is Action.NONE  # the words decide
    assert judge.paused
    assert judge.heard("네", final=True) is Action.RESUME
    # the same "네" as the question ends: what the robot had left came along with the onset
    onsets(judge, [60, 120])
    judge.speech_started(interruptible=False, voiced_ms=200, line_left_ms=900)
    assert judge.heard("네", final=False) is Action.CUT


def test_an_onset_never_pauses_a_line_that_is_not_interruptible_nor_resumes_another_hold() -> None:
    judge = BargeInJudge(BargeInSettings(pause_ms=120, backchannels=KO))
    assert onsets(judge, [60, 120, 160, 0], interruptible=False) == [Action.NONE] * 4
    assert not judge.paused
    # a line held for an utterance whose words are not in yet: a new sound changes nothing
    judge.speech_started(interruptible=True, voiced_ms=200)
    judge.speech_ended()
    assert onsets(judge, [60, 120, 160, 0]) == [Action.NONE] * 4
    assert judge.paused
    assert judge.heard("", final=True) is Action.RESUME


def test_an_onset_the_endpointer_never_confirms_lets_the_line_go_on_after_the_hold() -> None:
    judge = BargeInJudge(BargeInSettings(pause_ms=120, onset_hold_ms=600, backchannels=KO))
    assert judge.onset(voiced_ms=120, interruptible=True) is Action.PAUSE
    # scattered noise keeps the endpointer counting without confirming
    assert onsets(judge, [140] * 29) == [Action.NONE] * 29
    assert judge.onset(voiced_ms=140, interruptible=False) is Action.RESUME  # 600 ms held
    # the same noise does not pause the line again (it would stutter) until it is quiet...
    assert onsets(judge, [160] * 20) == [Action.NONE] * 20
    assert not judge.paused
    assert judge.onset(voiced_ms=0, interruptible=True) is Action.NONE
    # ...or confirmed: speech then pauses as it always did
    onsets(judge, [120])
    assert judge.paused
    judge.line_ended()  # the call stopped the line meanwhile: nothing is held
    assert not judge.paused
    assert judge.onset(voiced_ms=0, interruptible=False) is Action.NONE


# ───────────────────────── the prompt player ─────────────────────────


def test_the_player_pauses_resumes_and_plays_from_an_offset() -> None:
    player = PromptPlayer(SPF, sample_rate=RATE)
    audio = np.arange(1, 8001, dtype=np.int16)  # one second
    line = player.play(audio, label="offer", offset=4000)
    np.testing.assert_array_equal(player.next_frame(), audio[4000:4160])
    assert player.pause() and player.paused
    assert not player.next_frame().any()  # silence while held; nothing advances
    assert line.played_ms == 520
    player.resume()
    np.testing.assert_array_equal(player.next_frame(), audio[4160:4320])
    assert line.duration_ms == 1000
    with pytest.raises(ValueError, match="outside"):
        player.play(audio, offset=8001)


def test_a_disclosure_is_never_paused_and_a_stop_unpauses() -> None:
    player = PromptPlayer(SPF, sample_rate=RATE)
    audio = np.ones(1600, np.int16)
    player.play(audio, interruptible=False, label="legal")
    assert not player.pause()
    assert player.next_frame().any()
    held = PromptPlayer(SPF, sample_rate=RATE)
    held.play(audio, label="offer")
    assert held.pause()
    assert held.stop(keep_uninterruptible=True) == 1
    assert not held.paused  # a line queued next plays at once
    held.play(audio, label="next")
    assert held.next_frame().any()


# ───────────────────────── CallMedia over UDP ─────────────────────────


def cough(seconds: float = 0.35, seed: int = 3) -> np.ndarray:
    """A cough: a broadband burst with a fast attack and a decaying envelope."""
    n = round(seconds * RATE)
    rng = np.random.default_rng(seed)
    envelope = np.exp(-np.arange(n) / (0.3 * n)) * np.minimum(1.0, np.arange(n) / 40)
    return (9000 * envelope * rng.normal(0, 1, n)).clip(-32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def ne() -> np.ndarray:
    return speech_pcm("네", voice="ko+f3")


@pytest.fixture(scope="module")
def sentence() -> np.ndarray:
    return speech_pcm("잠깐만요 저 지금 운전 중이라서 나중에 전화 주세요", voice="ko+f3")


@pytest.fixture(scope="module")
def greeting() -> np.ndarray:
    text = "안녕하세요 와이후 상담센터입니다 고객님께 새로운 요금제를 안내해 드리려고 합니다"
    return speech_pcm(text, voice="ko+f3")


Words = tuple[tuple[str, float, float, float], ...]


def listener(
    media: CallMedia, *, partial: str | None = None, final: str | None = None, words: Words = ()
) -> Callable[[Call], object]:
    """An event reader standing in for voice.Listener: tells the media what the
    recogniser heard (``partial`` on the start, ``final`` with its ``words`` on the end)."""

    async def collect(call: Call) -> None:
        async for event in media.events:
            call.events.append((trio.current_time(), event))
            if isinstance(event, SpeechStarted) and partial is not None:
                media.heard(partial, final=False)
            elif isinstance(event, SpeechEnded) and final is not None:
                await trio.sleep(0.1)  # the final decode
                media.heard(final, final=True, words=words)
                call.events.append((trio.current_time(), Backchannel(media.backchannel)))

    return collect


class Backchannel:
    """A marker in the event log: what ``media.backchannel`` said after the final."""

    def __init__(self, value: bool) -> None:
        self.value = value


async def talk(
    media: CallMedia,
    far: FarEnd,
    callee: np.ndarray,
    *,
    partial: str | None = None,
    final: str | None = None,
    words: Words = (),
    after: float = 1.0,
) -> Call:
    async def scenario(call: Call) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener(media, partial=partial, final=final, words=words), call)
            await far.play(callee, call.start + FRAME / 2)
            while media.player.playing:
                await trio.sleep(FRAME)
            await trio.sleep(after)
            nursery.cancel_scope.cancel()

    return await run_call(media, far, scenario, collect=False)  # ``listener`` reads instead


def kinds(call: Call) -> list[type]:
    return [type(e) for _, e in call.events if not isinstance(e, (SpeechAudio, Backchannel))]


def voiced_packets(far: FarEnd) -> int:
    return sum(not robot_silent(far, p) for _, p in far.received)


async def test_a_backchannel_pauses_the_line_which_then_goes_on_to_its_end(
    autojump_clock: trio.testing.MockClock, ne: np.ndarray
) -> None:
    callee = np.concatenate((silence(0.8), ne, silence(2.0)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=BargeInSettings(backchannels=KO))
        prompt = media.player.play(tone(4.0), label="greeting")
        call = await talk(media, far, callee, final="네")

    assert kinds(call) == [
        BargeInPaused,
        SpeechStarted,
        SpeechEnded,
        BargeInResumed,
        PromptFinished,
    ]
    [(_, marker)] = [(t, e) for t, e in call.events if isinstance(e, Backchannel)]
    assert marker.value is True
    assert not prompt.interrupted
    assert voiced_packets(far) == 200  # every frame of the 4 s line was heard
    assert (media.stats.barge_in_pauses, media.stats.barge_in_resumes) == (1, 1)
    assert media.stats.barge_ins == 0
    # the reaction the callee hears: the robot falls silent soon after their onset
    onset = call.start + FRAME / 2 + 0.8 + np.flatnonzero(np.abs(ne) > 300)[0] / RATE
    first_silent = next(t for t, p in far.received if t > onset and robot_silent(far, p))
    assert first_silent - onset <= 0.25 + 1e-6


async def test_a_backchannel_heard_as_it_is_said_makes_only_a_short_pause(
    autojump_clock: trio.testing.MockClock, ne: np.ndarray
) -> None:
    callee = np.concatenate((silence(0.8), ne, silence(2.0)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=BargeInSettings(backchannels=KO))
        prompt = media.player.play(tone(4.0), label="greeting")
        call = await talk(media, far, callee, partial="네", final="네")

    # resumed on the silence after the word, before the endpointer even ended it
    assert kinds(call) == [
        BargeInPaused,
        SpeechStarted,
        BargeInResumed,
        SpeechEnded,
        PromptFinished,
    ]
    [(paused_at, _)] = [(t, e) for t, e in call.events if isinstance(e, BargeInPaused)]
    [(resumed_at, _)] = [(t, e) for t, e in call.events if isinstance(e, BargeInResumed)]
    assert resumed_at - paused_at < 0.7
    [(_, marker)] = [(t, e) for t, e in call.events if isinstance(e, Backchannel)]
    assert marker.value is True
    assert not prompt.interrupted and voiced_packets(far) == 200


async def test_words_cut_the_line_and_the_lines_queued_behind_it_but_not_a_disclosure(
    autojump_clock: trio.testing.MockClock, sentence: np.ndarray
) -> None:
    callee = np.concatenate((silence(0.8), sentence, silence(1.5)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMA)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=BargeInSettings(backchannels=KO))
        first = media.player.play(tone(3.0), label="offer")
        queued = media.player.play(tone(2.0, 660.0), label="more")
        disclosure = media.player.play(tone(1.0, 880.0), interruptible=False, label="legal")
        call = await talk(media, far, callee, partial="잠깐만요")

    assert kinds(call)[:6] == [
        BargeInPaused,
        SpeechStarted,
        BargeIn,
        PromptFinished,
        PromptFinished,
        PromptFinished,
    ]
    finished = [e for _, e in call.events if isinstance(e, PromptFinished)]
    assert [(f.label, f.interrupted) for f in finished] == [
        ("offer", True),
        ("more", True),
        ("legal", False),
    ]
    assert first.interrupted and queued.interrupted and not disclosure.interrupted
    assert finished[1].played_ms == 0
    [(paused_at, _)] = [(t, e) for t, e in call.events if isinstance(e, BargeInPaused)]
    [(cut_at, _)] = [(t, e) for t, e in call.events if isinstance(e, BargeIn)]
    # the partial's words, with the start, held the line paused; 800 ms voiced cut it
    assert 0.6 - 1e-6 <= cut_at - paused_at <= 1.5
    # nothing of the cut lines leaked: the offer up to the pause, then the disclosure whole
    assert voiced_packets(far) == finished[0].played_ms // 20 + 50
    assert media.stats.barge_ins == 1 and media.stats.barge_in_resumes == 0


async def test_a_backchannel_heard_with_a_forced_unsure_word_lets_the_line_go_on(
    autojump_clock: trio.testing.MockClock, ne: np.ndarray
) -> None:
    """The phrase grammar hears "네" as "네 없어요", the second word 0.74 sure."""
    callee = np.concatenate((silence(0.8), ne, silence(2.0)))
    forced = (("네", 1.0, 0.1, 0.4), ("없어요", 0.74, 0.4, 0.6))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=BargeInSettings(backchannels=KO))
        prompt = media.player.play(tone(4.0), label="greeting")
        call = await talk(media, far, callee, partial="네 없어요", final="네 없어요", words=forced)

    assert kinds(call) == [
        BargeInPaused,
        SpeechStarted,
        SpeechEnded,
        BargeInResumed,
        PromptFinished,
    ]
    [(_, marker)] = [(t, e) for t, e in call.events if isinstance(e, Backchannel)]
    assert marker.value is True
    assert not prompt.interrupted and voiced_packets(far) == 200
    assert media.stats.barge_ins == 0


async def test_a_short_no_cuts_the_line_on_its_final_words(
    autojump_clock: trio.testing.MockClock,
) -> None:
    no = speech_pcm("아니요", voice="ko+f3")  # 0.5 s voiced: shorter than the confirmation
    callee = np.concatenate((silence(0.8), no, silence(2.0)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=BargeInSettings(backchannels=KO))
        first = media.player.play(tone(4.0), label="greeting")
        queued = media.player.play(tone(2.0, 660.0), label="more")
        call = await talk(
            media, far, callee, partial="아니요", final="아니요", words=(("아니요", 1.0, 0.1, 0.6),)
        )

    assert kinds(call)[:5] == [
        BargeInPaused,
        SpeechStarted,
        SpeechEnded,
        BargeIn,
        PromptFinished,
    ]
    assert first.interrupted and queued.interrupted
    [(_, marker)] = [(t, e) for t, e in call.events if isinstance(e, Backchannel)]
    assert marker.value is False  # a reply: it reaches the dialogue as one
    # held paused until the final, then cut: the line did not go on in between
    finished = [e for _, e in call.events if isinstance(e, PromptFinished)]
    assert voiced_packets(far) == finished[0].played_ms // 20
    assert media.stats.barge_ins == 1 and media.stats.barge_in_resumes == 0


async def test_long_speech_without_words_cuts_after_the_confirmation(
    autojump_clock: trio.testing.MockClock, sentence: np.ndarray
) -> None:
    callee = np.concatenate((silence(0.8), sentence, silence(1.5)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        settings = BargeInSettings(confirm_ms=800, backchannels=KO)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=settings)
        prompt = media.player.play(tone(5.0), label="offer")
        call = await talk(media, far, callee)  # the recogniser says nothing

    assert kinds(call)[:4] == [BargeInPaused, SpeechStarted, BargeIn, PromptFinished]
    [(paused_at, _)] = [(t, e) for t, e in call.events if isinstance(e, BargeInPaused)]
    [(cut_at, _)] = [(t, e) for t, e in call.events if isinstance(e, BargeIn)]
    assert 0.6 - 1e-6 <= cut_at - paused_at <= 1.5  # 800 ms voiced from the onset
    assert prompt.interrupted
    # paused, then cut: the line did not go on between the two
    [(_, finished)] = [(t, e) for t, e in call.events if isinstance(e, PromptFinished)]
    assert voiced_packets(far) == finished.played_ms // 20


async def test_a_cough_does_not_cut_the_line(autojump_clock: trio.testing.MockClock) -> None:
    callee = np.concatenate((silence(1.0), cough(0.4), silence(2.0)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=BargeInSettings(backchannels=KO))
        prompt = media.player.play(tone(4.0), label="greeting")
        call = await talk(media, far, callee, final="")

    assert BargeIn not in kinds(call)
    assert not prompt.interrupted
    assert voiced_packets(far) == 200
    # it was loud enough to be taken for speech: paused, then resumed
    assert (media.stats.barge_in_pauses, media.stats.barge_in_resumes) == (1, 1)


async def test_without_final_words_a_paused_line_goes_on_after_the_wait(
    autojump_clock: trio.testing.MockClock, ne: np.ndarray
) -> None:
    callee = np.concatenate((silence(0.8), ne, silence(3.0)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        settings = BargeInSettings(final_wait_ms=600, backchannels=KO)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=settings)
        prompt = media.player.play(tone(4.0), label="greeting")
        call = await talk(media, far, callee)

    [(ended_at, _)] = [(t, e) for t, e in call.events if isinstance(e, SpeechEnded)]
    [(resumed_at, _)] = [(t, e) for t, e in call.events if isinstance(e, BargeInResumed)]
    assert resumed_at - ended_at == pytest.approx(0.6, abs=0.03)
    assert not prompt.interrupted and voiced_packets(far) == 200


def test_the_endpointer_tells_its_count_towards_speech_only_while_starting() -> None:
    endpointer = Endpointer()
    audio = np.concatenate((silence(0.4), cough(0.15), silence(0.6), tone(0.5), silence(0.2)))
    seen: list[tuple[EndpointState, int]] = []
    for k in range(0, audio.size - SPF + 1, SPF):
        endpointer.feed(audio[k : k + SPF])
        seen.append((endpointer.state, endpointer.starting_voiced_ms))
    cough_ticks = seen[: round(1.15 / FRAME)]  # the cough and the silence after it
    counts = [ms for state, ms in cough_ticks if state is EndpointState.STARTING]
    assert max(counts) == 160 and min(counts) == 20  # 8 voiced frames, never confirmed
    assert counts[:8] == list(range(20, 180, 20))  # one frame at a time
    assert cough_ticks[-1] == (EndpointState.QUIET, 0)
    assert all(ms == 0 for state, ms in seen if state is not EndpointState.STARTING)
    assert EndpointState.SPEAKING in {state for state, _ in seen}  # the tone is speech


async def test_a_cough_too_short_for_speech_holds_the_line_briefly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """150 ms: the endpointer counts it towards speech but never confirms it."""
    callee = np.concatenate((silence(1.0), cough(0.15), silence(2.0)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        settings = BargeInSettings(pause_ms=120, backchannels=KO)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=settings)
        prompt = media.player.play(tone(4.0), label="greeting")
        call = await talk(media, far, callee, final="")

    # paused on the onset, resumed when the endpointer was quiet again: no speech at all
    assert kinds(call) == [BargeInPaused, BargeInResumed, PromptFinished]
    [(paused_at, _)] = [(t, e) for t, e in call.events if isinstance(e, BargeInPaused)]
    [(resumed_at, _)] = [(t, e) for t, e in call.events if isinstance(e, BargeInResumed)]
    assert resumed_at - paused_at <= 0.4  # the cough's rest and the endpointer's window
    assert not prompt.interrupted
    assert voiced_packets(far) == 200  # the line went on from where it paused
    assert (media.stats.barge_in_pauses, media.stats.barge_in_resumes) == (1, 1)


@pytest.mark.parametrize("pause_ms", [120, 200])
async def test_the_robot_falls_silent_pause_ms_after_the_onset(
    autojump_clock: trio.testing.MockClock, ne: np.ndarray, pause_ms: int
) -> None:
    callee = np.concatenate((silence(0.8), ne, silence(2.0)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        settings = BargeInSettings(pause_ms=pause_ms, backchannels=KO)
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=settings)
        prompt = media.player.play(tone(4.0), label="greeting")
        call = await talk(media, far, callee, final="네")

    assert kinds(call)[:2] == [BargeInPaused, SpeechStarted]
    assert not prompt.interrupted and voiced_packets(far) == 200
    onset = call.start + FRAME / 2 + 0.8 + np.flatnonzero(np.abs(ne) > 300)[0] / RATE
    first_silent = next(t for t, p in far.received if t > onset and robot_silent(far, p))
    # pause_ms of voice, and the jitter buffer's two frames (the VAD's onset lag within
    # them): not the endpointer's 200 ms confirmation when pause_ms is shorter
    assert first_silent - onset <= (pause_ms + 2 * FRAME * 1000) / 1000 + 1e-6


async def echo_back(far: FarEnd, gain_db: float, delay_s: float) -> None:
    """The far end returns what it hears: decoded, attenuated, delayed, encoded again."""
    sender = RtpSender(far.codec.payload_type)
    gain = 10 ** (gain_db / 20)
    done = 0
    while True:
        await trio.sleep(FRAME / 4)
        while done < len(far.received):
            at, packet = far.received[done]
            done += 1
            await trio.sleep_until(at + delay_s)
            pcm = far.decode(packet.payload).astype(np.float64) * gain
            payload = far.encode(np.rint(pcm).astype(np.int16))
            await far.send(sender.next_packet(payload, SPF))


@pytest.mark.parametrize("guard", [True, False], ids=["guarded", "unguarded"])
async def test_the_robots_own_echo_never_pauses_its_line(
    autojump_clock: trio.testing.MockClock, greeting: np.ndarray, guard: bool
) -> None:
    with trio.fail_after(120):
        leg, far = await make_pair(PCMU)
        media = CallMedia(
            leg,
            endpointer=Endpointer(),
            barge_in=BargeInSettings(backchannels=KO),
            echo_guard=guard,
        )
        lines = [media.player.play(greeting, label=f"line{k}") for k in range(3)]

        async def scenario(call: Call) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo_back, far, -20.0, 0.060)
                while media.player.playing or media.player.paused:
                    await trio.sleep(FRAME)
                    if trio.current_time() - call.start > 60:
                        break
                await trio.sleep(0.5)
                nursery.cancel_scope.cancel()

        call = await run_call(media, far, scenario)

    events = kinds(call)
    if guard:
        assert media.stats.barge_in_pauses == 0 and media.stats.barge_ins == 0
        assert SpeechStarted not in events
        assert not any(line.interrupted for line in lines)
        assert media.echo is not None and media.echo.estimate is not None
        assert media.echo.estimate.delay >= 480  # 60 ms on the line, plus the jitter buffer
    else:  # the same line heard as it is: the robot stops for its own voice
        assert media.stats.barge_in_pauses >= 1
        assert SpeechStarted in events
