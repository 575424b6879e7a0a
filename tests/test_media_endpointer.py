"""The endpointer on real synthetic speech (espeak-ng), clicks, noise and silence."""

from __future__ import annotations

import numpy as np
import pytest

from waihu.media.endpointer import (
    Endpointer,
    EndpointState,
    SpeechAudio,
    SpeechEnded,
    SpeechEvent,
    SpeechStarted,
)
from waihu.testing.speech import speech_pcm

RATE = 8000
SPF = 160
FRAME_MS = 20


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.int16)


def add_noise(audio: np.ndarray, rms: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, rms, audio.size)
    return np.clip(audio + noise, -32768, 32767).astype(np.int16)


def feed_all(endpointer: Endpointer, audio: np.ndarray) -> list[tuple[int, SpeechEvent]]:
    """(frame index, event) for every event, feeding whole frames."""
    out = []
    for i in range(audio.size // SPF):
        out.extend((i, ev) for ev in endpointer.feed(audio[i * SPF : (i + 1) * SPF]))
    return out


def utterances(events: list[tuple[int, SpeechEvent]]) -> list[tuple[int, int, SpeechEnded]]:
    """(start frame, end frame, SpeechEnded) per utterance; asserts the event grammar."""
    found = []
    start = None
    for i, ev in events:
        if isinstance(ev, SpeechStarted):
            assert start is None, "SpeechStarted inside an utterance"
            start = i
        elif isinstance(ev, SpeechAudio):
            assert start is not None, "SpeechAudio outside an utterance"
        else:
            assert start is not None, "SpeechEnded without SpeechStarted"
            found.append((start, i, ev))
            start = None
    assert start is None, "utterance never ended"
    return found


@pytest.fixture(scope="module")
def ne() -> np.ndarray:
    return speech_pcm("네")


@pytest.fixture(scope="module")
def price() -> np.ndarray:
    return speech_pcm("가격이 얼마 예요")


@pytest.mark.parametrize("noise_rms", [0, 300])
def test_one_word_is_one_utterance_with_sensible_bounds(ne: np.ndarray, noise_rms: float) -> None:
    lead = silence(1.0)
    audio = np.concatenate((lead, ne, silence(1.5)))
    if noise_rms:
        audio = add_noise(audio, noise_rms)
    events = feed_all(Endpointer(), audio)
    [(start, end, ended)] = utterances(events)
    onset = lead.size // SPF  # the word's first frame
    spoken_frames = ne.size // SPF
    # confirmed once 200 ms were voiced, and not much later
    assert onset + 200 // FRAME_MS - 1 <= start <= onset + 400 // FRAME_MS
    # ended 700 ms after the voice stopped, so within the word's span + 700 ms (+ a frame)
    assert onset + 700 // FRAME_MS < end <= onset + spoken_frames + 700 // FRAME_MS + 1
    assert not ended.truncated
    assert 200 <= ended.duration_ms <= ne.size * 1000 // RATE
    started = next(ev for _, ev in events if isinstance(ev, SpeechStarted))
    assert started.lead_ms == 300


def test_preroll_and_audio_cover_the_utterance_exactly(price: np.ndarray) -> None:
    lead = silence(1.0)
    audio = np.concatenate((lead, price, silence(1.5)))
    indexed = feed_all(Endpointer(), audio)
    start_frame, started = indexed[0]
    assert isinstance(started, SpeechStarted)
    assert isinstance(indexed[-1][1], SpeechEnded)
    heard = np.concatenate(
        [started.preroll] + [ev.pcm for _, ev in indexed if isinstance(ev, SpeechAudio)]
    )
    # the pre-roll ends with the frame that confirmed speech, and SpeechAudio goes on
    # from there: together one contiguous stretch of the input
    first = (start_frame + 1) * SPF - started.preroll.size
    np.testing.assert_array_equal(heard, audio[first : first + heard.size])
    assert first <= lead.size  # it reaches back before the phrase…
    assert first + heard.size >= lead.size + price.size  # …and nothing of it is missing


def test_states_follow_the_speech(ne: np.ndarray) -> None:
    endpointer = Endpointer()
    audio = np.concatenate((silence(0.5), ne, silence(1.0)))
    seen = []
    for i in range(audio.size // SPF):
        endpointer.feed(audio[i * SPF : (i + 1) * SPF])
        if not seen or seen[-1] != endpointer.state:
            seen.append(endpointer.state)
    assert seen[0] is EndpointState.QUIET
    assert seen[1:4] == [EndpointState.STARTING, EndpointState.SPEAKING, EndpointState.STOPPING]
    assert seen[-1] is EndpointState.QUIET
    assert not endpointer.in_speech


@pytest.mark.parametrize("noise_rms", [0, 50, 300, 1000])
@pytest.mark.parametrize("kind", ["noise burst", "tone"])
def test_sixty_ms_click_never_starts_speech(noise_rms: float, kind: str) -> None:
    audio = np.zeros(3 * RATE)
    click = slice(RATE, RATE + 60 * RATE // 1000)
    if kind == "tone":
        audio[click] = 15000 * np.sin(2 * np.pi * 400 * np.arange(480) / RATE)
    else:
        audio[click] = np.random.default_rng(5).normal(0, 8000, 480)
    audio = add_noise(np.clip(audio, -32768, 32767), noise_rms)
    endpointer = Endpointer()
    assert feed_all(endpointer, audio) == []
    assert endpointer.state is EndpointState.QUIET


def test_pure_silence_and_quiet_noise_never_start(ne: np.ndarray) -> None:
    for audio in (silence(60.0), add_noise(silence(60.0), 60), add_noise(silence(20.0), 1000)):
        endpointer = Endpointer()
        assert feed_all(endpointer, audio) == []
    # the energy gate alone: even speech, turned down below min_rms, does not count
    faint = (ne.astype(np.float64) * 0.01).astype(np.int16)
    assert feed_all(Endpointer(), np.concatenate((silence(0.5), faint, silence(1)))) == []


def test_short_pause_keeps_one_utterance_long_pause_makes_two(ne: np.ndarray) -> None:
    short = np.concatenate((silence(0.5), ne, silence(0.3), ne, silence(1.5)))
    assert len(utterances(feed_all(Endpointer(), short))) == 1
    long = np.concatenate((silence(0.5), ne, silence(1.5), ne, silence(1.5)))
    assert len(utterances(feed_all(Endpointer(), long))) == 2


def test_max_utterance_cuts_long_speech(price: np.ndarray) -> None:
    audio = np.concatenate((silence(0.5), price, silence(1.5)))
    events = feed_all(Endpointer(max_utterance_ms=600), audio)
    ends = [ev for _, ev in events if isinstance(ev, SpeechEnded)]
    assert ends[0].truncated
    assert ends[0].duration_ms <= 600
    [(start, end, _), *_rest] = utterances(events)
    # the onset precedes the confirmation, so the cut comes at most 600 ms after it
    assert start < end <= start + 600 // FRAME_MS


def test_reset_forgets_speech(ne: np.ndarray) -> None:
    endpointer = Endpointer()
    audio = np.concatenate((silence(0.5), ne))
    feed_all(endpointer, audio[: RATE // 2 + ne.size // 2])
    assert endpointer.in_speech
    endpointer.reset()
    assert endpointer.state is EndpointState.QUIET
    assert feed_all(endpointer, silence(2.0)) == []


def test_other_rates_and_bad_input() -> None:
    wide = Endpointer(sample_rate=16000)
    assert wide.samples_per_frame == 320
    assert wide.feed(np.zeros(320, np.int16)) == []
    with pytest.raises(ValueError, match="int16 frames of 160"):
        Endpointer().feed(np.zeros(80, np.int16))
    with pytest.raises(ValueError, match="int16 frames"):
        Endpointer().feed(np.zeros(160, np.float64))
    with pytest.raises(ValueError, match="11025"):
        Endpointer(sample_rate=11025)
    with pytest.raises(ValueError, match="aggressiveness"):
        Endpointer(aggressiveness=4)
    with pytest.raises(ValueError, match="end_silence_ms"):
        Endpointer(end_silence_ms=0)


def test_reset_resets_the_detector_too() -> None:
    """A VAD provider's per-call state (Silero's recurrent state) goes with a reset."""

    class Counting:
        resets = 0

        def is_speech(self, frame: np.ndarray) -> bool:
            return False

        def reset(self) -> None:
            self.resets += 1

    detector = Counting()
    endpointer = Endpointer(detector=detector)
    endpointer.reset()
    assert detector.resets == 1


def test_each_frame_says_how_long_the_callee_has_been_silent(ne: np.ndarray) -> None:
    events = feed_all(Endpointer(), np.concatenate((silence(0.5), ne, silence(1.0))))
    audio = [ev for _, ev in events if isinstance(ev, SpeechAudio)]
    silent = [ev.silent_ms for ev in audio]
    assert 0 in silent  # the word's voiced frames
    last_voiced = max(i for i, ms in enumerate(silent) if ms == 0)
    # from the word's end the silence grows a frame at a time up to the end window
    assert silent[last_voiced + 1 :] == [
        FRAME_MS * (i + 1) for i in range(len(silent) - last_voiced - 1)
    ]
    assert silent[-1] == 700
    # voiced frames and short gaps inside the word never count as a long silence
    assert max(silent[: last_voiced + 1]) < 700
