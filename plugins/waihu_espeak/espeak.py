"""The ``espeak`` TTS provider: script lines spoken by espeak-ng, at the call's rate.

Config (``[tts.NAME]`` with ``type = "espeak"``)::

    command = "espeak-ng"                 # the program (a name on PATH or a path)
    voices = { zh = "cmn-latn-pinyin", ko = "ko+f3" }   # script language → espeak voice
    speed = 175                           # words per minute (espeak -s)
    pitch = 55                            # 0–99 (espeak -p)

``voices`` adds to (and may override) the defaults ``zh → cmn-latn-pinyin``
and ``ko → ko+f3``. A language without an entry is handed to espeak-ng as
the voice name itself ("en", "ja"…). espeak-ng 1.51 reads Chinese characters
badly with its ``cmn`` voice (it speaks the tone digits), so for a voice
based on ``cmn-latn-pinyin`` the text is first written as tone-numbered
pinyin (pypinyin ``Style.TONE3``: 您好 → ``nin2 hao3``), which that voice
reads well. Korean is read as written; ``ko+f3`` at 175 wpm, pitch 55 is what
the Korean test model recognised best on this project's machines.

Each line runs ``espeak-ng --stdout`` once in a worker thread (bounded by the
daemon's ``cpu_limiter``); its WAV (22 050 Hz, 16-bit, written as a stream
with a placeholder length) is read here and resampled to the call's rate
with a windowed-sinc interpolator in numpy. The engine does not cache: the
core keeps what it returns per (text, language, rate).

Error handling: ``run`` fails start-up with ``ProviderError`` when the
program is missing or a configured voice does not load (it speaks a probe
word with each). ``synthesize`` raises ``ProviderError`` naming the text and
the voice when espeak-ng fails, times out or returns no audio.

What it is not: a cache, or a player — the core plays what it returns.
"""

from __future__ import annotations

import functools
import math
import shutil
import struct
import subprocess
import unicodedata
from collections.abc import Mapping
from typing import ClassVar

import attrs
import numpy as np
import trio
from pypinyin import Style, lazy_pinyin

from waihu.api import Provider, ProviderContext, ProviderError, between, check

__all__ = ["DEFAULT_VOICES", "PINYIN_VOICE", "EspeakSynthesizer", "read_wav", "resample"]

PINYIN_VOICE = "cmn-latn-pinyin"  # the Mandarin voice that reads tone-numbered pinyin
DEFAULT_VOICES: Mapping[str, str] = {"zh": PINYIN_VOICE, "ko": "ko+f3"}
SPEAK_TIMEOUT = 30.0  # seconds one line may take; espeak-ng needs ~40 ms for a sentence
PROBE_TEXT = "a1"  # what run() speaks with each voice to see that it loads
UTF8_INPUT = "1"  # espeak-ng -b 1: the text on stdin is UTF-8

# Chinese punctuation espeak-ng does not know, as the ASCII marks it pauses at
# (otherwise the pinyin voice may spell out the character's name).
_CJK_PUNCTUATION = str.maketrans(
    {"。": ".", "，": ",", "、": ",", "；": ";", "：": ":", "？": "?", "！": "!", "…": "..."}
)

# the resampler (see ``resample``)
HALF_TAPS = 16  # zero crossings of the sinc kept on each side, at the lower rate
KAISER_BETA = 8.6  # about 85 dB of stop-band attenuation
PASSBAND = 0.92  # cut-off as a fraction of the lower Nyquist frequency
BLOCK = 2048  # output samples computed per vectorised step (bounds working memory)

_INT16_MIN, _INT16_MAX = -32768, 32767
_PCM_TAG = 1  # WAVE_FORMAT_PCM
_PCM_WIDTH = 2  # bytes per sample: espeak-ng writes 16-bit


# ───────────────────────── text ─────────────────────────


def speaking_text(text: str, voice: str) -> str:
    """What espeak-ng is given for ``text`` in ``voice``.

    Full-width forms become half-width (NFKC) and Chinese punctuation ASCII;
    for a voice based on ``cmn-latn-pinyin`` Chinese characters become
    tone-numbered pinyin syllables separated by spaces (the neutral tone as 5).
    """
    text = unicodedata.normalize("NFKC", text).translate(_CJK_PUNCTUATION)
    if voice.split("+")[0] != PINYIN_VOICE:
        return text
    # lazy_pinyin keeps runs that are not Chinese (digits, Latin, punctuation) as they are
    syllables = lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True)
    return " ".join(s.strip() for s in syllables if s.strip())


# ───────────────────────── audio ─────────────────────────


def read_wav(data: bytes) -> tuple[int, np.ndarray]:
    """(sample rate, int16 mono samples) of a 16-bit PCM WAV as espeak-ng writes it.

    espeak-ng writing to a pipe cannot seek back to fill in the RIFF and data
    lengths, so it writes placeholders: the data chunk is taken to run to the
    end of what was written. Raises ValueError saying what is wrong.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream (no RIFF/WAVE header)")
    offset, rate, channels = 12, 0, 0
    while offset + 8 <= len(data):
        chunk, size = struct.unpack_from("<4sI", data, offset)
        body = offset + 8
        if chunk == b"fmt ":
            tag, channels, rate = struct.unpack_from("<HHI", data, body)
            (width,) = struct.unpack_from("<H", data, body + 14)
            if tag != _PCM_TAG or width != 8 * _PCM_WIDTH or channels < 1:
                raise ValueError(f"not 16-bit PCM (format {tag}, {width} bits)")
        elif chunk == b"data":
            if not rate:
                raise ValueError("data before the format chunk")
            raw = data[body:]
            raw = raw[: len(raw) - len(raw) % (_PCM_WIDTH * channels)]
            samples = np.frombuffer(raw, "<i2").reshape(-1, channels)
            return rate, samples[:, 0].astype(np.int16)
        offset = body + size + (size & 1)
    raise ValueError("no data chunk")


def _kaiser(x: np.ndarray) -> np.ndarray:
    """The Kaiser window over -1..1 (zero outside)."""
    arg = np.sqrt(np.clip(1.0 - x * x, 0.0, None))
    return np.where(np.abs(x) < 1.0, np.i0(KAISER_BETA * arg) / np.i0(KAISER_BETA), 0.0)


@functools.lru_cache(maxsize=8)  # one table per pair of rates; a daemon uses one or two
def _phase_table(up: int, down: int) -> tuple[np.ndarray, np.ndarray]:
    """The kernel weights of each of the ``up`` output phases, and their input offsets.

    Output sample ``m`` falls ``(m * down) % up / up`` past an input sample, so
    only ``up`` distinct kernels exist: computing them once makes resampling a
    gather and a dot product per sample.
    """
    scale = min(1.0, up / down)  # < 1 going down: widen the kernel
    cutoff = scale * PASSBAND
    half_width = HALF_TAPS / scale  # kernel half-length in input samples
    reach = math.ceil(half_width)
    offsets = np.arange(-reach + 1, reach + 1)
    distance = (np.arange(up) / up)[:, None] - offsets[None, :]
    table = cutoff * np.sinc(cutoff * distance) * _kaiser(distance / half_width)
    table.flags.writeable = False  # shared by every call of this pair of rates
    return table, offsets


def resample(signal: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """``signal`` at ``dst_rate`` as float64: band-limited (windowed-sinc) interpolation.

    The same method as the core's prompt loader: output sample ``m`` is the
    reconstruction of the input at position ``m * src_rate / dst_rate``, with
    the low-pass below the lower Nyquist frequency so nothing aliases into the
    telephone band. ``ceil(len * dst / src)`` samples come out.
    """
    x = np.asarray(signal, dtype=np.float64)
    if src_rate == dst_rate or x.size == 0:
        return x.copy()
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    table, offsets = _phase_table(up, down)
    n_out = -(-x.size * up // down)
    out = np.empty(n_out, dtype=np.float64)
    for first in range(0, n_out, BLOCK):
        m = np.arange(first, min(first + BLOCK, n_out), dtype=np.int64)
        base = (m * down) // up  # the input sample at or before each output position
        index = base[:, None] + offsets[None, :]
        taps = x[np.clip(index, 0, x.size - 1)] * ((index >= 0) & (index < x.size))
        out[first : first + m.size] = np.einsum("ij,ij->i", taps, table[(m * down) % up])
    return out


# ───────────────────────── the provider ─────────────────────────


class EspeakSynthesizer(Provider):
    """Speech synthesis with espeak-ng: ``waihu.api.Synthesizer``, config type ``espeak``.

    Error handling: see the module docstring — ``run`` refuses to start
    without the program or with a voice that does not load; ``synthesize``
    raises ``ProviderError`` naming the text.
    """

    type_name: ClassVar[str] = "espeak"

    @attrs.frozen(kw_only=True)
    class Config:
        """``[tts.NAME]`` keys of an espeak-ng synthesiser."""

        command: str = attrs.field(
            default="espeak-ng", validator=check(lambda v: bool(v.strip()), "must not be empty")
        )
        voices: dict[str, str] = attrs.Factory(dict)  # added to DEFAULT_VOICES
        speed: int = attrs.field(default=175, validator=between(80, 450))  # espeak's own range
        pitch: int = attrs.field(default=55, validator=between(0, 99))

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)
        self.voices: dict[str, str] = {**DEFAULT_VOICES, **config.voices}

    def voice_for(self, language: str) -> str:
        """The espeak-ng voice for a script ``language`` (the language itself if unlisted)."""
        return self.voices.get(language, language)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check the program and every configured voice, then report ready."""
        if shutil.which(self.config.command) is None:
            raise ProviderError(
                f"tts {self.context.name}: command {self.config.command!r} not found"
                " (install espeak-ng, or set command)"
            )
        for language, voice in self.voices.items():
            try:
                await trio.to_thread.run_sync(
                    self._speak, PROBE_TEXT, voice, 8000, limiter=self.context.cpu_limiter
                )
            except ProviderError as exc:
                raise ProviderError(
                    f"tts {self.context.name}: voice {voice!r} (voices.{language}) does not"
                    f" load: {exc}"
                ) from None
        self.context.log.info(
            "espeak-ng ready: %s",
            ", ".join(f"{lang} → {voice}" for lang, voice in self.voices.items()),
        )
        task_status.started()
        await trio.sleep_forever()

    async def synthesize(self, text: str, *, language: str, sample_rate: int) -> np.ndarray:
        """``text`` spoken in ``language`` as int16 mono PCM at ``sample_rate``."""
        voice = self.voice_for(language)
        if not voice:
            raise ProviderError(f"cannot speak {text!r}: the script names no language")
        return await trio.to_thread.run_sync(
            self._speak, text, voice, sample_rate, limiter=self.context.cpu_limiter
        )

    def _speak(self, text: str, voice: str, sample_rate: int) -> np.ndarray:
        """Run espeak-ng once (blocking) and return its audio at ``sample_rate``."""
        command = [
            self.config.command,
            "--stdout",
            "--stdin",
            "-b",
            UTF8_INPUT,
            "-v",
            voice,
            "-s",
            str(self.config.speed),
            "-p",
            str(self.config.pitch),
        ]
        where = f"cannot speak {text!r} with espeak-ng voice {voice!r}"
        try:
            done = subprocess.run(
                command,
                input=speaking_text(text, voice).encode(),
                capture_output=True,
                timeout=SPEAK_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise ProviderError(f"{where}: {self.config.command!r} not found") from None
        except subprocess.TimeoutExpired:
            raise ProviderError(f"{where}: no answer in {SPEAK_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
            raise ProviderError(f"{where}: {said}")
        try:
            rate, samples = read_wav(done.stdout)
        except ValueError as exc:
            raise ProviderError(f"{where}: unreadable output: {exc}") from None
        if samples.size == 0:
            raise ProviderError(f"{where}: no audio")
        if rate == sample_rate:
            return samples
        pcm = resample(samples, rate, sample_rate)
        return np.clip(np.rint(pcm), _INT16_MIN, _INT16_MAX).astype(np.int16)
