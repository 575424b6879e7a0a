"""Call-progress tones and beeps found in synthetic telephone audio, with line noise.

The audio is made here (sine bursts with the cadences carriers use, white noise at
−50 dBFS standing for the line) and, for speech, by espeak-ng: a person talking must
never read as a tone pattern.
"""

from __future__ import annotations

import numpy as np
import pytest

from waihu.media.tones import ToneSegment, ToneTracker, classify_cadence, frame_tone
from waihu.testing.speech import speech_pcm

RATE = 8000
RNG = np.random.default_rng(7)


def tone(hz: float, seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return level * np.sin(2 * np.pi * hz * t)


def gap(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds))


def line(*parts: np.ndarray, noise_dbfs: float = -50.0) -> np.ndarray:
    audio = np.concatenate(parts)
    audio = audio + RNG.normal(0, 10 ** (noise_dbfs / 20), audio.size)
    return np.clip(audio * 32767, -32768, 32767).astype(np.int16)


def heard(audio: np.ndarray) -> str | None:
    tracker = ToneTracker(RATE)
    tracker.feed_pcm(audio)
    return tracker.classify()


@pytest.mark.parametrize("hz", [350.0, 450.0, 1000.0, 1400.0, 2100.0])
def test_a_pure_tone_frame_is_found_at_its_frequency(hz: float) -> None:
    found = frame_tone(line(tone(hz, 0.02)), RATE)
    assert found is not None and abs(found - hz) < 10


def test_noise_silence_and_two_tones_at_once_are_no_tone() -> None:
    assert frame_tone(line(gap(0.02), noise_dbfs=-30), RATE) is None
    assert frame_tone(np.zeros(160, dtype=np.int16), RATE) is None
    assert frame_tone(line(tone(697, 0.02) + tone(1209, 0.02)), RATE) is None  # a DTMF key


def test_chinese_ringback_is_one_second_on_four_off() -> None:
    assert heard(line(gap(0.3), tone(450, 1.0), gap(4.0), tone(450, 0.5))) == "ringback"
    assert heard(line(tone(450, 1.0), gap(4.0))) == "ringback"
    assert heard(line(tone(450, 1.0), gap(1.0))) is None  # too early to say


def test_chinese_busy_is_short_bursts() -> None:
    busy = [part for _ in range(3) for part in (tone(450, 0.35), gap(0.35))]
    assert heard(line(*busy)) == "busy"
    assert heard(line(tone(450, 0.35), gap(0.35))) is None  # one burst: could be a beep


def test_a_beep_after_a_greeting_is_a_beep() -> None:
    greeting = speech_pcm("여보세요").astype(np.float64) / 32768
    audio = line(greeting, gap(0.4), tone(1000, 0.5), gap(0.5))
    assert heard(audio) == "beep"


def test_a_tone_that_never_stops_is_continuous() -> None:
    assert heard(line(tone(450, 3.5))) == "continuous"


@pytest.mark.parametrize("text", ["여보세요", "네 말씀하세요 누구세요"])
def test_a_person_talking_is_no_tone_pattern(text: str) -> None:
    speech = speech_pcm(text).astype(np.float64) / 32768
    assert heard(line(gap(0.2), speech, gap(1.0), speech, gap(0.5))) is None


def test_tolerances_of_real_networks_and_what_is_outside_them() -> None:
    def segs(*pairs: tuple[float | None, float]) -> list[ToneSegment]:
        return [ToneSegment(hz, s) for hz, s in pairs]

    assert classify_cadence(segs((452.0, 1.2), (None, 3.0))) == "ringback"  # +20 %, −25 %
    assert classify_cadence(segs((450.0, 1.4), (None, 4.0))) is None  # +40 % on
    assert classify_cadence(segs((450.0, 0.4), (None, 0.3), (450.0, 0.3), (None, 0.3))) == "busy"
    # a second burst still sounding may yet turn out longer (a ring-back's): not busy yet
    assert classify_cadence(segs((450.0, 0.4), (None, 0.3), (450.0, 0.3))) is None
    assert classify_cadence(segs((450.0, 0.6), (None, 0.6), (450.0, 0.6))) is None
    assert classify_cadence(segs((None, 1.0), (800.0, 0.2), (None, 0.1))) == "beep"
    assert classify_cadence(segs((800.0, 2.0), (None, 0.5))) is None  # too long for a beep


def test_a_faint_tone_is_line_noise_and_a_tone_after_a_tone_is_no_beep() -> None:
    assert frame_tone(line(tone(1000, 0.02, level=0.0005), noise_dbfs=-90), RATE) is None
    two = [ToneSegment(None, 1.0), ToneSegment(600.0, 0.3), ToneSegment(900.0, 0.3),
           ToneSegment(None, 0.5)]  # fmt: skip
    assert classify_cadence(two) is None  # a melody, not a beep
