"""Recorded prompts: load them once, then hand them out one 20 ms frame per tick.

``load_prompt`` reads a WAV file (8/16/24/32-bit integer PCM, any number of
channels, any rate) into 16-bit mono PCM at the call's rate, resampling once
at load time. ``PromptPlayer`` is one call's outgoing voice: ``play`` queues
a prompt and returns its ``Playback`` handle; the media clock pulls
``next_frame`` every tick (silence when idle); ``pause`` holds the prompt
where it is (silence goes out, the prompt and its queue wait) until
``resume``, which is what a suspected barge-in does; ``stop`` cuts the current
and queued prompts short, which is what a confirmed barge-in does. ``play``
can start a prompt part-way (``offset``): the rest of a line cut earlier.

What it is not: text-to-speech, or a mixer — one prompt sounds at a time.
"""

from __future__ import annotations

import io
import struct
import time
import wave
from collections import deque
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import trio

from waihu.api import WaihuError
from waihu.media.resample import resample

__all__ = ["Playback", "PromptError", "PromptPlayer", "load_prompt"]

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The SubFormat GUID of WAVE_FORMAT_EXTENSIBLE integer PCM ends in these 14 bytes
# after its leading 16-bit format code (KSDATAFORMAT_SUBTYPE_PCM).
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_INT16_MIN, _INT16_MAX = -32768, 32767


class PromptError(WaihuError):
    """A prompt recording cannot be used; the message names the file and why."""


# ───────────────────────── loading ─────────────────────────


def _riff_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(id, offset of the chunk body, body size) of each top-level chunk of a RIFF/WAVE file."""
    chunks = []
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        chunks.append((chunk_id, offset + 8, size))
        offset += 8 + size + (size & 1)  # chunks are padded to even length
    return chunks


def _plain_pcm_header(data: bytes, path: Path) -> bytes:
    """The file with a WAVE_FORMAT_EXTENSIBLE integer-PCM tag rewritten as plain PCM.

    Python 3.11's ``wave`` refuses the extensible tag that sox, Audacity and
    others write for 24/32-bit or multichannel files, although its integer
    subformat is ordinary PCM. Other formats (float, compressed) are refused
    with a clear error.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PromptError(f"prompt {path}: not a WAV file (no RIFF/WAVE header)")
    for chunk_id, body, size in _riff_chunks(data):
        if chunk_id != b"fmt ":
            continue
        if size < 16 or body + size > len(data):
            raise PromptError(f"prompt {path}: truncated WAV format chunk")
        (tag,) = struct.unpack_from("<H", data, body)
        if tag == WAVE_FORMAT_PCM:
            return data
        if tag == WAVE_FORMAT_EXTENSIBLE and size >= 40:
            (subformat,) = struct.unpack_from("<H", data, body + 24)
            if subformat == WAVE_FORMAT_PCM and data[body + 26 : body + 40] == _GUID_TAIL:
                patched = bytearray(data)
                struct.pack_into("<H", patched, body, WAVE_FORMAT_PCM)
                return bytes(patched)
            tag = subformat
        raise PromptError(
            f"prompt {path}: unsupported WAV encoding (format 0x{tag:04x}); save it as integer PCM"
        )
    raise PromptError(f"prompt {path}: WAV file has no format chunk")


def _decode_samples(raw: bytes, width: int, channels: int, path: Path) -> np.ndarray:
    """Interleaved little-endian PCM as float64 mono on the 16-bit scale."""
    frame_bytes = width * channels
    raw = raw[: len(raw) - len(raw) % frame_bytes]  # a truncated last frame is dropped
    if width == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) * 256.0
    elif width == 2:
        samples = np.frombuffer(raw, "<i2").astype(np.float64)
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        samples = ((value ^ 0x800000) - 0x800000).astype(np.float64) / 256.0
    elif width == 4:
        samples = np.frombuffer(raw, "<i4").astype(np.float64) / 65536.0
    else:
        raise PromptError(f"prompt {path}: unsupported sample width of {width * 8} bits")
    return samples.reshape(-1, channels).mean(axis=1)


def load_prompt(path: str | Path, sample_rate: int = 8000) -> np.ndarray:
    """The recording at ``path`` as int16 mono PCM at ``sample_rate``.

    Raises ``PromptError`` naming the file when it is missing, unreadable,
    not integer-PCM WAV, or holds no audio.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PromptError(f"prompt {path}: file not found") from None
    except OSError as exc:
        raise PromptError(f"prompt {path}: cannot read: {exc.strerror or exc}") from None
    data = _plain_pcm_header(data, path)
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, struct.error) as exc:
        raise PromptError(f"prompt {path}: unreadable WAV: {exc or type(exc).__name__}") from None
    if channels < 1 or rate < 1:
        raise PromptError(f"prompt {path}: WAV header says {channels} channels at {rate} Hz")
    mono = _decode_samples(raw, width, channels, path)
    if mono.size == 0:
        raise PromptError(f"prompt {path}: contains no audio")
    if rate != sample_rate:
        mono = resample(mono, rate, sample_rate)
    return np.clip(np.rint(mono), _INT16_MIN, _INT16_MAX).astype(np.int16)


# ───────────────────────── playing ─────────────────────────


@attrs.define(eq=False)
class Playback:
    """One queued or playing prompt.

    ``done`` is set once it ended — played out, or stopped (then
    ``interrupted`` is True). ``played_samples`` says how far it got.
    """

    audio: np.ndarray = attrs.field(repr=False)
    interruptible: bool
    label: str
    done: trio.Event = attrs.field(factory=trio.Event, repr=False)
    interrupted: bool = False
    played_samples: int = 0
    started_at: float | None = None  # wall clock when its first frame went out; None if never
    ended_at: float | None = None  # wall clock when it ended
    sample_rate: int = 8000  # of ``audio``: what ``played_ms`` counts in

    @property
    def played_ms(self) -> int:
        """How far into its audio it got, in ms (a prompt started at an offset counts
        from the start of its audio, not from the offset)."""
        return self.played_samples * 1000 // self.sample_rate

    @property
    def duration_ms(self) -> int:
        """The length of its audio, in ms."""
        return self.audio.size * 1000 // self.sample_rate


class PromptPlayer:
    """One call's outgoing voice: a queue of prompts read out one frame at a time.

    ``on_finished`` is called (synchronously) with each ``Playback`` as it
    ends, played out or stopped.
    """

    def __init__(
        self,
        samples_per_frame: int,
        *,
        on_finished: Callable[[Playback], None] | None = None,
        sample_rate: int = 8000,
    ) -> None:
        if samples_per_frame < 1:
            raise ValueError(f"samples_per_frame must be positive, not {samples_per_frame}")
        self.samples_per_frame = samples_per_frame
        self.sample_rate = sample_rate
        self.paused = False  # see ``pause``
        self.on_finished = on_finished
        self._queue: deque[Playback] = deque()
        self._current: Playback | None = None
        self._silence = np.zeros(samples_per_frame, dtype=np.int16)
        self._silence.flags.writeable = False  # shared by every idle tick

    @property
    def playing(self) -> bool:
        """True while a prompt is playing or queued."""
        return self._current is not None or bool(self._queue)

    @property
    def interruptible(self) -> bool:
        """Whether the prompt being heard (or about to be) may be cut short; False when idle."""
        upcoming = self._current or (self._queue[0] if self._queue else None)
        return upcoming is not None and upcoming.interruptible

    def remaining_samples(self) -> int:
        """What is left to say: the rest of the current prompt and all those queued."""
        left = sum(p.audio.size - p.played_samples for p in self._queue)
        if self._current is not None:
            left += self._current.audio.size - self._current.played_samples
        return left

    @property
    def current(self) -> Playback | None:
        """The prompt being played, if any."""
        return self._current

    def play(
        self,
        audio: np.ndarray,
        *,
        interruptible: bool = True,
        label: str = "",
        offset: int = 0,
    ) -> Playback:
        """Queue ``audio`` (1-D int16 PCM at the call's rate) after what is already queued;
        it starts ``offset`` samples in (the rest of a line: 0…its length)."""
        if not isinstance(audio, np.ndarray) or audio.dtype != np.int16 or audio.ndim != 1:
            raise TypeError("a prompt is a 1-D numpy int16 array")
        if not 0 <= offset <= audio.size:
            raise ValueError(f"offset {offset} is outside the prompt's {audio.size} samples")
        playback = Playback(
            audio=audio,
            interruptible=interruptible,
            label=label,
            played_samples=offset,
            sample_rate=self.sample_rate,
        )
        self._queue.append(playback)
        return playback

    def pause(self) -> bool:
        """Hold the prompt where it is: silence goes out and nothing advances until
        ``resume`` (or ``stop``). Only an interruptible prompt is held (a disclosure is
        not); returns whether the player is paused now."""
        if self.interruptible:
            self.paused = True
        return self.paused

    def resume(self) -> None:
        """Go on from where ``pause`` held the prompt (nothing when not paused)."""
        self.paused = False

    def next_frame(self) -> np.ndarray:
        """The next ``samples_per_frame`` samples to send: prompt audio, or silence.

        The last frame of a prompt is zero-padded; the prompt counts as done
        when that frame is handed out. Callers must not modify the result.
        """
        if self.paused:
            return self._silence
        while True:
            if self._current is None:
                if not self._queue:
                    return self._silence
                self._current = self._queue.popleft()
                self._current.started_at = time.time()
            playback = self._current
            if playback.played_samples < playback.audio.size:
                break
            self._finish(playback, interrupted=False)  # an empty prompt
        start = playback.played_samples
        frame = playback.audio[start : start + self.samples_per_frame]
        playback.played_samples = start + frame.size
        if playback.played_samples >= playback.audio.size:
            self._finish(playback, interrupted=False)
        if frame.size < self.samples_per_frame:
            frame = np.concatenate(
                (frame, np.zeros(self.samples_per_frame - frame.size, dtype=np.int16))
            )
        return frame

    def stop(self, *, keep_uninterruptible: bool = False) -> int:
        """Stop the current prompt and empty the queue, marking each interrupted.

        With ``keep_uninterruptible`` (barge-in), prompts marked not
        interruptible — a legal disclosure — are left to play. A paused player
        is no longer paused. Returns how many prompts were stopped.
        """
        self.paused = False
        stopped: list[Playback] = []
        if self._current is not None and (not keep_uninterruptible or self._current.interruptible):
            stopped.append(self._current)
            self._current = None
        kept: deque[Playback] = deque()
        for playback in self._queue:
            if keep_uninterruptible and not playback.interruptible:
                kept.append(playback)
            else:
                stopped.append(playback)
        self._queue = kept
        for playback in stopped:
            self._finish(playback, interrupted=True)
        return len(stopped)

    def _finish(self, playback: Playback, *, interrupted: bool) -> None:
        if self._current is playback:
            self._current = None
        playback.interrupted = interrupted
        playback.ended_at = time.time()
        playback.done.set()
        if self.on_finished is not None:
            self.on_finished(playback)
