"""The endpointer's early end of turn: ``quick_end`` and ``set_windows``.

Synthetic frames (a loud tone is voice, digital silence is not) through a
plain energy detector, so every frame's verdict is known and the frame on
which an utterance ends can be asserted exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from waihu.media.endpointer import Endpointer, SpeechEnded, SpeechStarted

RATE = 8000
SAMPLES = RATE // 50  # one 20 ms frame
TONE = (3000 * np.sin(2 * np.pi * 440 * np.arange(SAMPLES) / RATE)).astype(np.int16)
QUIET = np.zeros(SAMPLES, np.int16)
TAIL = (TONE // 12).astype(np.int16)  # 21.6 dB down: a fading vowel, still voiced
START_MS, END_MS, QUICK_MS = 100, 700, 250
END_FRAMES, QUICK_FRAMES = 35, 13  # whole frames covering END_MS, QUICK_MS
LEAD_FRAMES = 5  # silence fed before every plan


class Loud:
    """A ``VoiceDetector`` that takes any sound for voice (the energy gates do the rest)."""

    def is_speech(self, frame: np.ndarray) -> bool:
        return bool(np.any(frame))

    def reset(self) -> None:
        """Nothing to forget."""


def endpointer() -> Endpointer:
    ep = Endpointer(RATE, start_ms=START_MS, end_silence_ms=END_MS, preroll_ms=0, detector=Loud())
    ep.set_windows(END_MS, QUICK_MS)
    return ep


def run(
    ep: Endpointer, plan: str, at: dict[int, Callable[[Endpointer], None]] | None = None
) -> tuple[list[int], list[int]]:
    """Feed ``plan`` ('v' voice, 't' a faint voiced tail, '.' silence, one letter a
    frame); call ``at[i]`` before
    frame i. Returns the frame indexes of the starts and of the ends."""
    starts, ends = [], []
    for _ in range(LEAD_FRAMES):  # the noise floor is learnt from silence, as on a line
        assert not ep.feed(QUIET)
    for i, kind in enumerate(plan):
        if at and i in at:
            at[i](ep)
        for event in ep.feed({"v": TONE, "t": TAIL}.get(kind, QUIET)):
            if isinstance(event, SpeechStarted):
                starts.append(i)
            elif isinstance(event, SpeechEnded):
                ends.append(i)
    return starts, ends


def quick(value: bool) -> Callable[[Endpointer], None]:
    def set_it(ep: Endpointer) -> None:
        ep.quick_end = value

    return set_it


WORD = "v" * 20  # 400 ms of voice, frames 0–19; the last voiced frame is 19
LAST = len(WORD) - 1
SETTLE_FRAMES = 7  # DEFAULT_QUICK_SETTLE_MS (150 ms) in whole frames
# at[i] runs before frame i is fed: a verdict set there was given at frame i - 1
SETTLED = LAST + 1 + SETTLE_FRAMES  # the first plan index where a verdict counts


def test_without_quick_end_the_turn_ends_on_the_full_window() -> None:
    _, ends = run(endpointer(), WORD + "." * 60)
    assert ends == [LAST + END_FRAMES]


def test_a_complete_answer_ends_on_the_short_window() -> None:
    _, ends = run(endpointer(), WORD + "." * 60, {SETTLED: quick(True)})
    assert ends == [LAST + QUICK_FRAMES]


def test_a_verdict_given_while_the_voice_goes_on_does_not_count() -> None:
    # the partial that said "complete" had not heard the rest of the voice
    _, ends = run(endpointer(), WORD + "." * 60, {10: quick(True)})
    assert ends == [LAST + END_FRAMES]


def test_a_verdict_given_too_soon_after_the_voice_does_not_count() -> None:
    _, ends = run(endpointer(), WORD + "." * 60, {SETTLED - 1: quick(True)})
    assert ends == [LAST + END_FRAMES]


def test_the_same_verdict_given_again_later_counts() -> None:
    plan = WORD + "." * 60
    _, ends = run(endpointer(), plan, {SETTLED - 3: quick(True), SETTLED + 2: quick(True)})
    assert ends == [LAST + QUICK_FRAMES]


def test_no_settling_wanted_takes_a_verdict_right_after_the_voice() -> None:
    ep = Endpointer(RATE, start_ms=START_MS, end_silence_ms=END_MS, preroll_ms=0, detector=Loud(),
                    quick_settle_ms=0)  # fmt: skip
    ep.set_windows(END_MS, QUICK_MS)
    _, ends = run(ep, WORD + "." * 60, {LAST + 1: quick(True)})
    assert ends == [LAST + QUICK_FRAMES]


def test_quick_end_in_a_silence_already_past_the_short_window_ends_at_once() -> None:
    set_at = LAST + 20  # 400 ms into the silence, past the 250 ms window
    _, ends = run(endpointer(), WORD + "." * 60, {set_at: quick(True)})
    assert ends == [set_at]


def test_quick_end_in_a_silence_shorter_than_the_short_window_waits_for_it() -> None:
    _, ends = run(endpointer(), WORD + "." * 60, {SETTLED + 2: quick(True)})
    assert ends == [LAST + QUICK_FRAMES]


@pytest.mark.parametrize("cleared", [True, False], ids=["verdict-cleared", "voice-only"])
def test_more_words_after_a_complete_answer_get_the_full_window_again(cleared: bool) -> None:
    # "네" (complete) … 200 ms pause … "그런데": the listener says incomplete again, and
    # even before it does, the new voice makes the old verdict stale
    plan = WORD + "." * 10 + "v" * 20 + "." * 60
    last = len(WORD) + 10 + 20 - 1
    at = {SETTLED: quick(True)}
    if cleared:
        at[len(WORD) + 10 + 15] = quick(False)
    _, ends = run(endpointer(), plan, at)
    assert ends == [last + END_FRAMES]


def test_a_complete_answer_said_twice_ends_on_the_short_window_after_the_second() -> None:
    # "네 … 네": the pause is shorter than the short window; the new partial is complete too
    plan = WORD + "." * 10 + "v" * 10 + "." * 60
    last = len(WORD) + 10 + 10 - 1
    _, ends = run(endpointer(), plan, {SETTLED: quick(True), last + 9: quick(True)})
    assert ends == [last + QUICK_FRAMES]


def test_the_verdict_does_not_carry_to_the_next_utterance() -> None:
    plan = WORD + "." * 20 + WORD + "." * 60
    second_last = len(WORD) + 20 + LAST
    starts, ends = run(endpointer(), plan, {SETTLED: quick(True)})
    assert len(starts) == 2
    assert ends == [LAST + QUICK_FRAMES, second_last + END_FRAMES]


def test_a_verdict_given_before_speech_starts_is_dropped() -> None:
    _, ends = run(endpointer(), "." * 5 + WORD + "." * 60, {0: quick(True)})
    assert ends == [5 + LAST + END_FRAMES]


def test_reset_clears_quick_end() -> None:
    ep = endpointer()
    ep.quick_end = True
    ep.reset()
    assert ep.quick_end is False


def test_a_short_window_of_zero_never_ends_early() -> None:
    ep = endpointer()
    ep.set_windows(END_MS, 0)
    _, ends = run(ep, WORD + "." * 60, {SETTLED: quick(True)})
    assert ends == [LAST + END_FRAMES]


def test_a_short_window_longer_than_the_full_one_is_the_full_one() -> None:
    ep = endpointer()
    ep.set_windows(300, 900)
    _, ends = run(ep, WORD + "." * 60, {SETTLED: quick(True)})
    assert ends == [LAST + 15]


def test_a_node_window_applies_to_the_utterance_under_way() -> None:
    # a date question: the listener sets 1200 ms at the start of speech
    ep = endpointer()
    _, ends = run(ep, WORD + "." * 80, {1: lambda e: e.set_windows(1200, QUICK_MS)})
    assert ends == [LAST + 60]


@pytest.mark.parametrize(
    ("end_ms", "quick_ms", "message"),
    [(10, 250, "end_silence_ms must be at least one frame"), (700, -1, "quick_end_ms")],
)
def test_bad_windows_are_refused(end_ms: int, quick_ms: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        endpointer().set_windows(end_ms, quick_ms)


def test_a_negative_settle_time_is_refused() -> None:
    with pytest.raises(ValueError, match="quick_settle_ms"):
        Endpointer(RATE, quick_settle_ms=-1)


def test_a_faint_tail_is_voice_for_the_silence_but_not_for_the_verdict() -> None:
    # "네" and 100 ms of its fading tail: the partial that comes 60 ms after the tail
    # came 160 ms after the words, so it has heard them all
    plan = WORD + "t" * 5 + "." * 60
    tail_last = LAST + 5
    _, ends = run(endpointer(), plan, {tail_last + 4: quick(True)})
    assert ends == [tail_last + QUICK_FRAMES]  # the silence counts from the tail


def test_a_verdict_during_loud_voice_after_a_faint_stretch_does_not_count() -> None:
    plan = WORD + "t" * 10 + "v" * 5 + "." * 60
    last = len(WORD) + 10 + 5 - 1
    _, ends = run(endpointer(), plan, {len(WORD) + 8: quick(True), last + 3: quick(True)})
    assert ends == [last + END_FRAMES]


def test_quick_end_reads_false_once_a_new_utterance_starts_and_once_it_ends() -> None:
    ep = endpointer()
    for _ in range(LEAD_FRAMES):
        ep.feed(QUIET)
    ep.quick_end = True  # a verdict left over from before the speech
    while not any(isinstance(e, SpeechStarted) for e in ep.feed(TONE)):
        pass
    assert ep.quick_end is False
    for _ in range(10):
        ep.feed(TONE)
    for _ in range(SETTLE_FRAMES + 1):
        ep.feed(QUIET)
    ep.quick_end = True
    while not any(isinstance(e, SpeechEnded) for e in ep.feed(QUIET)):
        assert ep.quick_end is True
    assert ep.quick_end is False


def judged(complete: bool, covered_frames: int, utterance: int = 1) -> Callable[[Endpointer], None]:
    """A verdict on a partial result that heard the utterance's first ``covered_frames``."""

    def judge(ep: Endpointer) -> None:
        ep.judge_partial(complete, utterance=utterance, covered_ms=covered_frames * 20)

    return judge


def test_a_verdict_that_heard_past_the_last_loud_frame_ends_on_the_short_window() -> None:
    """Timed by the audio it heard: it counts however soon after the voice it arrives."""
    ep = endpointer()
    _, ends = run(ep, WORD + "." * 60, {LAST + 2: judged(True, LAST + 2)})
    assert ends == [LAST + QUICK_FRAMES]


def test_a_verdict_given_before_the_loud_speech_was_over_does_not_count() -> None:
    """The partial heard the audio only up to the last loud frame: words may follow in it."""
    _, ends = run(endpointer(), WORD + "." * 60, {LAST + 5: judged(True, LAST + 1)})
    assert ends == [LAST + END_FRAMES]


def test_a_verdict_on_another_utterance_is_ignored() -> None:
    _, ends = run(endpointer(), WORD + "." * 60, {LAST + 2: judged(True, LAST + 2, utterance=7)})
    assert ends == [LAST + END_FRAMES]


def test_the_end_says_whether_the_short_window_ended_it_and_what_was_left() -> None:
    ep = endpointer()
    events: list[SpeechEnded] = []
    for _ in range(LEAD_FRAMES):
        ep.feed(QUIET)
    for i, kind in enumerate(WORD + "." * 60):
        if i == LAST + 2:
            judged(True, LAST + 2)(ep)
        events += [e for e in ep.feed(TONE if kind == "v" else QUIET) if isinstance(e, SpeechEnded)]
    assert [(e.quick, e.rest_ms) for e in events] == [(True, (END_FRAMES - QUICK_FRAMES) * 20)]
    _, ends = run(ep, WORD + "." * 60)  # the next utterance: no verdict, the full window
    assert ends == [LAST + END_FRAMES]
