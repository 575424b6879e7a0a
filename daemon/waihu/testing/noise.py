"""Synthetic line noise, hum and coughs for VAD tests and benchmarks, and a G.711 pass.

Everything is int16 at a given rate (8 kHz by default, as calls are heard),
made from a seeded ``numpy.random.Generator`` so that a test or a benchmark
run sees the same samples every time:

- ``white_noise`` / ``pink_noise`` at a level in dBFS (RMS relative to full
  scale), the hiss of an analogue line;
- ``hum`` — mains hum, 50 Hz with its odd harmonics;
- ``cough`` — a short broadband burst with a fast attack and a decaying
  envelope, low-passed a little: what a cough, a knock or a handset bump
  looks like to a VAD;
- ``through_g711`` — μ-law encoded and decoded, as every call is carried;
- ``voicing`` — which 20 ms frames of clean speech are voiced, by energy
  against the loudest frame: the reference a VAD is scored against.

What it is not: speech (``waihu.testing.speech`` makes that with espeak-ng) or
a model of a real telephone channel (no echo, no packet loss).
"""

from __future__ import annotations

import numpy as np

from waihu.api import FRAME_MS
from waihu.media.g711 import ulaw_decode, ulaw_encode

__all__ = [
    "cough",
    "dbfs",
    "frames",
    "hum",
    "mix",
    "pink_noise",
    "through_g711",
    "voicing",
    "white_noise",
]

RATE = 8000  # Hz: calls are heard at G.711's rate
FULL_SCALE = 32767.0
MAINS_HZ = 50.0
HUM_HARMONICS = (1, 3, 5, 7)  # a rectified mains hum is mostly odd harmonics
HUM_HARMONIC_DECAY = 0.5  # each harmonic's amplitude relative to the one before
COUGH_ATTACK_MS = 5.0
COUGH_DECAY_MS = 60.0  # time constant of the envelope after the attack
COUGH_SMOOTH = 3  # samples averaged: a cough's energy falls off toward 4 kHz
# a frame is voiced when it is within this many dB of the loudest frame of the speech
VOICING_RANGE_DB = 35.0


def dbfs(pcm: np.ndarray) -> float:
    """RMS level of ``pcm`` in dBFS (−inf for digital silence)."""
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if pcm.size else 0.0
    return 20.0 * np.log10(rms / FULL_SCALE) if rms > 0 else float("-inf")


def _scaled(signal: np.ndarray, level_dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(signal**2))) or 1.0
    return signal * (FULL_SCALE * 10.0 ** (level_dbfs / 20.0) / rms)


def _int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def white_noise(
    seconds: float, level_dbfs: float, rng: np.random.Generator, rate: int = RATE
) -> np.ndarray:
    """Gaussian white noise at ``level_dbfs``."""
    return _int16(_scaled(rng.standard_normal(round(seconds * rate)), level_dbfs))


def pink_noise(
    seconds: float, level_dbfs: float, rng: np.random.Generator, rate: int = RATE
) -> np.ndarray:
    """1/f noise at ``level_dbfs`` (white noise shaped by 1/sqrt(f) in the spectrum)."""
    n = round(seconds * rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0.0
    return _int16(_scaled(np.fft.irfft(spectrum, n), level_dbfs))


def hum(seconds: float, level_dbfs: float, rate: int = RATE) -> np.ndarray:
    """Mains hum at ``level_dbfs``: 50 Hz and its odd harmonics."""
    t = np.arange(round(seconds * rate)) / rate
    signal = sum(
        HUM_HARMONIC_DECAY**i * np.sin(2 * np.pi * MAINS_HZ * h * t)
        for i, h in enumerate(HUM_HARMONICS)
    )
    return _int16(_scaled(np.asarray(signal), level_dbfs))


def cough(ms: float, peak_dbfs: float, rng: np.random.Generator, rate: int = RATE) -> np.ndarray:
    """A cough-like burst ``ms`` long peaking near ``peak_dbfs``: broadband noise with a
    5 ms attack and an exponential decay."""
    n = round(ms * rate / 1000)
    t_ms = np.arange(n) * 1000.0 / rate
    envelope = np.where(
        t_ms < COUGH_ATTACK_MS,
        t_ms / COUGH_ATTACK_MS,
        np.exp(-(t_ms - COUGH_ATTACK_MS) / COUGH_DECAY_MS),
    )
    noise = np.convolve(rng.standard_normal(n), np.ones(COUGH_SMOOTH) / COUGH_SMOOTH, "same")
    noise *= FULL_SCALE * 10.0 ** (peak_dbfs / 20.0) / (float(np.max(np.abs(noise))) or 1.0)
    return _int16(noise * envelope)


def mix(*parts: np.ndarray) -> np.ndarray:
    """The sum of int16 signals (the shortest sets the length), clipped to int16."""
    n = min(p.size for p in parts)
    return _int16(sum(p[:n].astype(np.float64) for p in parts))


def through_g711(pcm: np.ndarray) -> np.ndarray:
    """``pcm`` μ-law encoded and decoded, as a call carries it."""
    return ulaw_decode(ulaw_encode(pcm))


def frames(pcm: np.ndarray, rate: int = RATE) -> list[np.ndarray]:
    """``pcm`` cut into whole 20 ms frames (a ragged end is dropped)."""
    size = rate * FRAME_MS // 1000
    return [pcm[i : i + size] for i in range(0, pcm.size - size + 1, size)]


def voicing(pcm: np.ndarray, rate: int = RATE) -> np.ndarray:
    """Which 20 ms frames of clean speech ``pcm`` are voiced (bool per frame): those
    within ``VOICING_RANGE_DB`` of the loudest frame."""
    energy = np.array([float(np.mean(f.astype(np.float64) ** 2)) for f in frames(pcm, rate)])
    if not energy.size or energy.max() <= 0:
        return np.zeros(energy.size, dtype=bool)
    return energy > energy.max() * 10.0 ** (-VOICING_RANGE_DB / 10.0)
