"""Sample-rate conversion for prompts, done once when a recording is loaded.

A windowed-sinc (Kaiser) interpolator in numpy: each output sample is the
band-limited reconstruction of the input at its exact position, with the
low-pass cut below the lower of the two Nyquist frequencies, so a 44.1 kHz
recording brought down to 8 kHz does not alias its high end into the
telephone band.

What it is not: a real-time resampler. It works on whole recordings and costs
about 10 ms per second of 44.1 kHz audio; nothing on the media path calls it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["resample"]

HALF_TAPS = 16  # zero crossings of the sinc kept on each side (at the lower rate)
KAISER_BETA = 8.6  # about 85 dB of stop-band attenuation
PASSBAND = 0.92  # cut-off as a fraction of the lower Nyquist frequency, leaving a transition band
BLOCK = 2048  # output samples computed per vectorised step (bounds the working memory)
MAX_PHASE_TABLE = 1 << 22  # kernel values precomputed per phase, at most (32 MB of float64)


def _kaiser(x: np.ndarray) -> np.ndarray:
    """The Kaiser window over -1..1 (zero outside)."""
    inside = np.abs(x) < 1.0
    arg = np.sqrt(np.clip(1.0 - x * x, 0.0, None))
    return np.where(inside, np.i0(KAISER_BETA * arg) / np.i0(KAISER_BETA), 0.0)


def resample(signal: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """``signal`` (1-D, any numeric dtype) at ``dst_rate``, as float64.

    The output has ``ceil(len(signal) * dst_rate / src_rate)`` samples; output
    sample ``m`` sits at input position ``m * src_rate / dst_rate``. Raises
    ``ValueError`` for non-positive rates.
    """
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} → {dst_rate}")
    x = np.asarray(signal, dtype=np.float64)
    if src_rate == dst_rate or x.size == 0:
        return x.copy()
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    n_out = -(-x.size * up // down)
    scale = min(1.0, dst_rate / src_rate)  # < 1 when going down: widen the kernel
    cutoff = scale * PASSBAND
    half_width = HALF_TAPS / scale  # kernel half-length in input samples
    reach = math.ceil(half_width)
    offsets = np.arange(-reach + 1, reach + 1)
    out = np.empty(n_out, dtype=np.float64)

    def kernel(frac: np.ndarray) -> np.ndarray:
        distance = frac[:, None] - offsets[None, :]  # output position minus input index
        return cutoff * np.sinc(cutoff * distance) * _kaiser(distance / half_width)

    # Output m falls ``(m * down) % up / up`` past an input sample: only ``up``
    # distinct phases exist, so their kernels are computed once when that fits.
    table = kernel(np.arange(up) / up) if up * offsets.size <= MAX_PHASE_TABLE else None
    for first in range(0, n_out, BLOCK):
        m = np.arange(first, min(first + BLOCK, n_out), dtype=np.int64)
        base = (m * down) // up  # the input sample at or before each output position
        phase = (m * down) % up
        weights = table[phase] if table is not None else kernel(phase / up)
        index = base[:, None] + offsets[None, :]
        valid = (index >= 0) & (index < x.size)
        taps = x[np.clip(index, 0, x.size - 1)] * valid
        out[first : first + m.size] = np.einsum("ij,ij->i", taps, weights)
    return out
