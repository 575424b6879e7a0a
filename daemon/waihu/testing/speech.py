"""Synthetic callee speech for tests and the demo: espeak-ng → sox → 8 kHz WAV.

Tests speak to the robot with audio made here, so a test's callee says what
the test wants and nothing has to be recorded. The files are cached (keyed by
a hash of the text and voice settings), so a repeated run does not synthesise
again; several test processes may share one cache.

The default voice ``ko+f3`` at 190 wpm, pitch 65 is what the small Korean vosk
model recognises most reliably at 8 kHz, also after leading silence (as the
endpointer's pre-roll gives it) and through G.711: with a three-phrase grammar
every test phrase, where 175 wpm, pitch 55 misread "가격이 얼마 예요" after
silence. For Mandarin, espeak-ng reads characters badly: give tone-numbered
pinyin with ``voice="cmn-latn-pinyin"``.

What it is not: a TTS provider for the daemon (prompts are recordings; a TTS
fallback is a plugin). This module shells out to espeak-ng and sox and is only
for tests and ``make demo``; a missing tool is a loud ``SpeechToolMissing``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

__all__ = [
    "CALL_RATE",
    "SpeechToolMissing",
    "cache_dir",
    "pad_silence",
    "read_wav_pcm",
    "speech_pcm",
    "synthesize",
    "to_ulaw",
    "wav_rate",
    "write_wav_pcm",
]

CALL_RATE = 8000  # Hz: G.711 call audio, the rate the daemon hears callees at
SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
CACHE_ENV = "WAIHU_SPEECH_CACHE"  # overrides where synthesised files are kept
CACHE_VERSION = "1"  # bump when the synthesis pipeline changes, to ignore old files
DEFAULT_VOICE = "ko+f3"  # espeak-ng voice: Korean, female variant 3
DEFAULT_SPEED = 190  # words per minute
DEFAULT_PITCH = 65  # espeak-ng pitch, 0-99
TOOL_TIMEOUT_S = 60.0  # espeak-ng/sox on a short phrase take well under a second

# Debian package that provides each tool, for the error message.
TOOL_PACKAGES = {"espeak-ng": "espeak-ng", "sox": "sox"}


class SpeechToolMissing(RuntimeError):
    """espeak-ng or sox is not installed; the message names the package to install."""


def cache_dir() -> Path:
    """Where synthesised speech is kept: ``$WAIHU_SPEECH_CACHE``, else the user cache."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "waihu" / "speech"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SpeechToolMissing(
            f"{name} is not on PATH: install the Debian package {TOOL_PACKAGES[name]!r}"
            f" (apt-get install {TOOL_PACKAGES[name]})"
        )
    return path


def _run(argv: list[str], *, stdin: bytes | None = None) -> None:
    try:
        subprocess.run(argv, input=stdin, check=True, capture_output=True, timeout=TOOL_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"{Path(argv[0]).name} failed ({exc.returncode}): {err}") from None


def _publish(tmp: Path, dest: Path) -> Path:
    """Move a finished file into place atomically, so a concurrent reader never sees half."""
    os.replace(tmp, dest)
    return dest


def _temp_beside(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.stem}-", suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    return Path(name)


def synthesize(
    text: str,
    out_wav: Path | None = None,
    *,
    voice: str = DEFAULT_VOICE,
    speed: int = DEFAULT_SPEED,
    pitch: int = DEFAULT_PITCH,
) -> Path:
    """Speak ``text`` into an 8 kHz mono 16-bit WAV and return its path.

    The result is cached; with ``out_wav`` it is also copied there. Raises
    ``SpeechToolMissing`` without espeak-ng or sox, ``RuntimeError`` if a tool
    fails, ``ValueError`` for empty text.
    """
    if not text.strip():
        raise ValueError("synthesize: text is empty")
    key = hashlib.sha256(
        "\0".join((CACHE_VERSION, text, voice, str(speed), str(pitch))).encode()
    ).hexdigest()[:20]
    cached = cache_dir() / f"{key}.wav"
    if not cached.exists():
        espeak, sox = _tool("espeak-ng"), _tool("sox")
        raw = _temp_beside(cached)
        converted = _temp_beside(cached)
        try:
            # -b 1: the text is UTF-8; --stdin so a text starting with "-" is not an option.
            voice_args = ["-b", "1", "-v", voice, "-s", str(speed), "-p", str(pitch)]
            _run([espeak, *voice_args, "-w", str(raw), "--stdin"], stdin=text.encode("utf-8"))
            # -D: no dither, so the same text always gives the same samples.
            out_args = ["-r", str(CALL_RATE), "-c", "1", "-b", "16", "-e", "signed-integer"]
            _run([sox, "-D", str(raw), *out_args, str(converted)])
            _publish(converted, cached)
        finally:
            raw.unlink(missing_ok=True)
            converted.unlink(missing_ok=True)
    if out_wav is None:
        return cached
    out_wav = Path(out_wav)
    tmp = _temp_beside(out_wav)
    shutil.copyfile(cached, tmp)
    return _publish(tmp, out_wav)


def read_wav_pcm(path: Path) -> np.ndarray:
    """The samples of a 16-bit mono WAV file as an int16 array.

    Raises ``ValueError`` naming the file if it is not 16-bit mono PCM.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != SAMPLE_WIDTH:
            raise ValueError(
                f"{path}: expected 16-bit mono PCM, got {wav.getnchannels()} channel(s)"
                f" of {8 * wav.getsampwidth()} bits"
            )
        frames = wav.readframes(wav.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.int16)


def wav_rate(path: Path) -> int:
    """The sample rate of a WAV file."""
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate()


def write_wav_pcm(path: Path, pcm: np.ndarray, rate: int = CALL_RATE) -> Path:
    """Write int16 mono samples as a WAV file (atomically) and return its path."""
    path = Path(path)
    tmp = _temp_beside(path)
    with wave.open(str(tmp), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return _publish(tmp, path)


def pad_silence(wav: Path, before_s: float, after_s: float, out: Path | None = None) -> Path:
    """A copy of ``wav`` with digital silence before and after (default: beside it).

    Useful so a peer that plays a file and then hangs up leaves the robot time
    to hear the end of the utterance.
    """
    if before_s < 0 or after_s < 0:
        raise ValueError("pad_silence: durations must not be negative")
    wav = Path(wav)
    rate = wav_rate(wav)
    pcm = read_wav_pcm(wav)
    if out is None:
        out = wav.with_name(f"{wav.stem}.pad{before_s:g}-{after_s:g}{wav.suffix}")
    padded = np.concatenate(
        [
            np.zeros(round(before_s * rate), np.int16),
            pcm,
            np.zeros(round(after_s * rate), np.int16),
        ]
    )
    return write_wav_pcm(out, padded, rate)


def to_ulaw(wav: Path, out: Path) -> Path:
    """Raw 8 kHz μ-law (no header) from a WAV: what sipp's ``rtp_stream`` plays."""
    sox = _tool("sox")
    out = Path(out)
    tmp = _temp_beside(out)
    try:
        _run([sox, "-D", str(wav), "-r", str(CALL_RATE), "-c", "1", "-t", "ul", str(tmp)])
        return _publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def speech_pcm(
    text: str, *, voice: str = DEFAULT_VOICE, speed: int = DEFAULT_SPEED, pitch: int = DEFAULT_PITCH
) -> np.ndarray:
    """``text`` spoken at 8 kHz as int16 samples (synthesised or from the cache)."""
    return read_wav_pcm(synthesize(text, voice=voice, speed=speed, pitch=pitch))
