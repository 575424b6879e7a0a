"""Call-progress tones and beeps in telephone audio: which pure tone sounds, and its cadence.

A carrier tells a caller what happened with tones before (or instead of)
words: in China ring-back and busy are both 450 Hz — ring-back 1 s on, 4 s
off; busy 0.35 s on, 0.35 s off (YD/T 1069 style cadences, also what the
issue measuring this robot names) — and a voicemail box ends its greeting
with a single beep (typically 0.2–1 s of one frequency between 400 and
2,000 Hz). ``ToneTracker`` reads 20 ms frames, finds a pure tone in each (one
spectral peak holding most of the frame's energy, above a floor level), joins
frames into on/off segments of one frequency, and ``classify`` names the
pattern: ``ringback``, ``busy``, ``beep``, ``continuous`` (a tone that never
stops: dial tone, a number-unobtainable tone), or None.

Sans-IO and clock-free: it knows time only as frames fed (``FRAME_MS``
each), so tests and benchmarks feed synthetic audio at any speed.

What it is not: speech recognition of announcements (the ASR does that), or
the decision of who answered (which weighs tones with recognised phrases).

Error handling: none needed — any int16 frame is valid input; silence and
speech simply contain no tone.
"""

from __future__ import annotations

import functools

import attrs
import numpy as np

from waihu.api import FRAME_MS

__all__ = ["ToneSegment", "ToneTracker", "classify_cadence", "frame_tone", "frame_tones"]

FFT_SIZE = 1024  # zero-padded 20 ms frames: 7.8 Hz bins at 8 kHz
PEAK_HALF_WIDTH_HZ = 40.0  # energy within ±this of the peak counts as the tone's
PURITY = 0.75  # share of the frame's energy in the peak band for a pure tone
MIN_LEVEL_DBFS = -45.0  # quieter frames hold no tone (line noise)
MIN_TONE_HZ = 300.0
MAX_TONE_HZ = 3000.0
SAME_TONE_HZ = 25.0  # frames within this of each other continue one segment
FULL_SCALE = 32768.0

# cadences, in seconds (on, off), with the tolerance a real network's timing needs
CHINA_TONE_HZ = 450.0
RINGBACK = (1.0, 4.0)
BUSY = (0.35, 0.35)
CADENCE_TOLERANCE = 0.3  # ±30 % of each on/off duration
BEEP_SECONDS = (0.1, 1.6)  # a voicemail beep: one short tone
CONTINUOUS_SECONDS = 3.0  # a tone on longer than this is no cadence


def frame_tone(frame: np.ndarray, sample_rate: int) -> float | None:
    """The frequency (Hz) of the pure tone filling ``frame``, or None for none."""
    samples = frame.astype(np.float64) / FULL_SCALE
    rms = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
    if rms <= 0 or 20 * np.log10(rms) < MIN_LEVEL_DBFS:
        return None
    window = np.hanning(samples.size)
    power = np.abs(np.fft.rfft(samples * window, FFT_SIZE)) ** 2
    bin_hz = sample_rate / FFT_SIZE
    low, high = int(MIN_TONE_HZ / bin_hz), int(MAX_TONE_HZ / bin_hz) + 1
    peak = low + int(np.argmax(power[low:high]))
    half = int(PEAK_HALF_WIDTH_HZ / bin_hz)
    band = float(power[max(peak - half, 0) : peak + half + 1].sum())
    total = float(power.sum())
    if total <= 0 or band / total < PURITY:
        return None
    # parabolic interpolation of the peak for a frequency finer than a bin
    a, b, c = power[peak - 1], power[peak], power[peak + 1]
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return float((peak + shift) * bin_hz)


@functools.cache
def _window(size: int) -> np.ndarray:
    return np.hanning(size)


def frame_tones(frames: np.ndarray, sample_rate: int) -> list[float | None]:
    """``frame_tone`` of each row of ``frames`` (frames × samples), computed together: one
    FFT call for many frames costs little more than one (the who-answered screen analyses
    its calls' frames in batches)."""
    samples = frames.astype(np.float64) / FULL_SCALE
    found: list[float | None] = [None] * samples.shape[0]
    if not samples.size:
        return found
    rms = np.sqrt(np.mean(samples * samples, axis=1))
    loud = np.flatnonzero(rms >= 10 ** (MIN_LEVEL_DBFS / 20))
    if not loud.size:
        return found
    power = np.abs(np.fft.rfft(samples[loud] * _window(samples.shape[1]), FFT_SIZE, axis=1)) ** 2
    bin_hz = sample_rate / FFT_SIZE
    low, high = int(MIN_TONE_HZ / bin_hz), int(MAX_TONE_HZ / bin_hz) + 1
    half = int(PEAK_HALF_WIDTH_HZ / bin_hz)
    rows = np.arange(loud.size)
    peak = low + np.argmax(power[:, low:high], axis=1)
    summed = np.concatenate([np.zeros((loud.size, 1)), np.cumsum(power, axis=1)], axis=1)
    top = np.minimum(peak + half + 1, power.shape[1])
    band = summed[rows, top] - summed[rows, np.maximum(peak - half, 0)]
    total = summed[:, -1]
    a, b, c = power[rows, peak - 1], power[rows, peak], power[rows, peak + 1]
    curve = a - 2 * b + c
    safe = np.where(curve != 0, curve, 1.0)
    shift = np.where(curve != 0, 0.5 * (a - c) / safe, 0.0)
    for row, index in enumerate(loud):
        if total[row] > 0 and band[row] / total[row] >= PURITY:
            found[index] = float((peak[row] + shift[row]) * bin_hz)
    return found


@attrs.frozen
class ToneSegment:
    """A stretch of audio: a tone of ``hz`` for ``seconds``, or no tone (``hz`` None)."""

    hz: float | None
    seconds: float


class ToneTracker:
    """Frames in, tone segments out; ``classify`` names the cadence heard so far."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.segments: list[ToneSegment] = []
        self._hz: float | None = None
        self._frames = 0
        self._sum_hz = 0.0

    @property
    def seconds(self) -> float:
        """Audio fed so far."""
        return sum(s.seconds for s in self.segments) + self._frames * FRAME_MS / 1000

    def feed(self, frame: np.ndarray) -> None:
        """One 20 ms frame."""
        self._add(frame_tone(frame, self.sample_rate))

    def feed_frames(self, frames: np.ndarray) -> None:
        """Several 20 ms frames at once (frames × samples), analysed together."""
        for hz in frame_tones(frames, self.sample_rate):
            self._add(hz)

    def _add(self, hz: float | None) -> None:
        same = (hz is None and self._hz is None) or (
            hz is not None and self._hz is not None and abs(hz - self._hz) <= SAME_TONE_HZ
        )
        if self._frames and not same:
            self._close()
        if not self._frames:
            self._hz = hz
        self._frames += 1
        self._sum_hz += hz or 0.0

    def feed_pcm(self, pcm: np.ndarray) -> None:
        """Any length of audio, cut into 20 ms frames (a partial last frame is dropped)."""
        size = self.sample_rate * FRAME_MS // 1000
        for start in range(0, pcm.size - size + 1, size):
            self.feed(pcm[start : start + size])

    def _close(self) -> None:
        hz = None if self._hz is None else self._sum_hz / self._frames
        self.segments.append(ToneSegment(hz, self._frames * FRAME_MS / 1000))
        self._frames, self._sum_hz, self._hz = 0, 0.0, None

    def all_segments(self) -> list[ToneSegment]:
        """Closed segments plus the one still growing."""
        if not self._frames:
            return list(self.segments)
        hz = None if self._hz is None else self._sum_hz / self._frames
        return [*self.segments, ToneSegment(hz, self._frames * FRAME_MS / 1000)]

    def classify(self) -> str | None:
        """``ringback``, ``busy``, ``beep``, ``continuous`` or None; see ``classify_cadence``."""
        return classify_cadence(self.all_segments())


def _near(value: float, target: float) -> bool:
    return abs(value - target) <= target * CADENCE_TOLERANCE


def classify_cadence(segments: list[ToneSegment]) -> str | None:
    """Name the pattern of ``segments`` (oldest first).

    - ``busy``: two or more 450 Hz bursts of ~0.35 s, each ended and followed by
      ~0.35 s of no tone;
    - ``ringback``: a 450 Hz burst of ~1 s followed by ~4 s of no tone (or the
      start of the next burst after it);
    - ``continuous``: one tone on for longer than ``CONTINUOUS_SECONDS``;
    - ``beep``: a single tone of 0.1–1.6 s, not at 450 Hz, with no tone on either side;
    - None: nothing of the above (speech, silence, music).
    The last segment may still be growing: a cadence is named only from what
    it has shown so far.
    """
    tones = [(i, s) for i, s in enumerate(segments) if s.hz is not None]
    china = [
        (i, s) for i, s in tones if s.hz is not None and abs(s.hz - CHINA_TONE_HZ) <= SAME_TONE_HZ
    ]
    if any(s.seconds > CONTINUOUS_SECONDS for _, s in tones):
        return "continuous"
    busy_bursts = 0
    for index, segment in china:
        gap = segments[index + 1] if index + 1 < len(segments) else None
        # a burst counts once it has ended (a growing one may yet prove a ring-back's
        # second) and its gap is busy's: closed at ~0.35 s, or still open past its least
        if not _near(segment.seconds, BUSY[0]) or gap is None or gap.hz is not None:
            continue
        still_open = index + 2 == len(segments)
        if _near(gap.seconds, BUSY[1]) or (
            still_open and gap.seconds >= BUSY[1] * (1 - CADENCE_TOLERANCE)
        ):
            busy_bursts += 1
    if busy_bursts >= 2:
        return "busy"
    for index, segment in china:
        gap = segments[index + 1] if index + 1 < len(segments) else None
        if (
            _near(segment.seconds, RINGBACK[0])
            and gap is not None
            and gap.hz is None
            and gap.seconds >= RINGBACK[1] * (1 - CADENCE_TOLERANCE)
        ):
            return "ringback"
    for index, segment in tones:
        before = segments[index - 1] if index > 0 else None
        after = segments[index + 1] if index + 1 < len(segments) else None
        if (
            BEEP_SECONDS[0] <= segment.seconds <= BEEP_SECONDS[1]
            and (before is None or before.hz is None)
            and after is not None
            and after.hz is None
            # 450 Hz is the carriers' own tone (ring-back, busy), never a mailbox's beep
            and not (segment.hz is not None and abs(segment.hz - CHINA_TONE_HZ) <= SAME_TONE_HZ)
        ):
            return "beep"
    return None
