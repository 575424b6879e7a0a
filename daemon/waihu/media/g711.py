"""G.711 μ-law (PCMU) and A-law (PCMA) with numpy lookup tables.

Encoding indexes a 65536-entry table with each int16 sample viewed as uint16;
decoding indexes a 256-entry int16 table with each code byte. Both tables are
computed once at import from the ITU-T G.711 reference algorithm (the classic
Sun/CCITT ``g711.c``: ``linear2ulaw``/``ulaw2linear``, ``linear2alaw``/
``alaw2linear``), so results are bit-exact with that code and with the
stdlib ``audioop`` that was built from it.

What it is not: packetising (``rtp``) or resampling (``prompt_player``); the
functions here turn one frame of 16-bit PCM into payload bytes and back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "CODECS",
    "Decoder",
    "Encoder",
    "alaw_decode",
    "alaw_encode",
    "codec_functions",
    "ulaw_decode",
    "ulaw_encode",
]

Encoder = Callable[[np.ndarray], bytes]
Decoder = Callable[[bytes], np.ndarray]

# Segment end points of the reference code: a magnitude belongs to the first
# segment whose end it does not exceed.
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_SEGMENTS = 8
_QUANT_MASK = 0x0F  # the four mantissa bits of a code
_SEG_MASK = 0x70  # the three segment bits of a code
_SEG_SHIFT = 4
_SIGN_BIT = 0x80
_ULAW_BIAS = 0x84  # μ-law adds 132 (33 after the 14-bit shift) before finding the segment
_ULAW_CLIP = 8159  # largest 14-bit magnitude μ-law represents
_ALAW_TOGGLE = 0x55  # A-law inverts the even bits of every code


def _all_int16() -> np.ndarray:
    """Every int16 value, laid out so that index ``u`` holds ``uint16(u)`` viewed as int16."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> np.ndarray:
    pcm = _all_int16() >> 2  # the reference works on 14-bit samples
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, magnitude, side="left")
    in_range = seg < _SEGMENTS
    seg_c = np.minimum(seg, _SEGMENTS - 1)
    code = (seg_c << _SEG_SHIFT) | ((magnitude >> (seg_c + 1)) & _QUANT_MASK)
    code = np.where(in_range, code, 0x7F)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & _QUANT_MASK) << 3) + _ULAW_BIAS) << ((u & _SEG_MASK) >> _SEG_SHIFT)
    return np.where(u & _SIGN_BIT, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> np.ndarray:
    pcm = _all_int16() >> 3  # the reference works on 13-bit samples
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_ALAW_SEG_END, magnitude, side="left")
    in_range = seg < _SEGMENTS
    seg_c = np.minimum(seg, _SEGMENTS - 1)
    shift = np.where(seg_c < 2, 1, seg_c)
    code = (seg_c << _SEG_SHIFT) | ((magnitude >> shift) & _QUANT_MASK)
    code = np.where(in_range, code, 0x7F)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ _ALAW_TOGGLE
    seg = (a & _SEG_MASK) >> _SEG_SHIFT
    t = (a & _QUANT_MASK) << 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & _SIGN_BIT, t, -t).astype(np.int16)


_ULAW_ENCODE = _build_ulaw_encode()
_ULAW_DECODE = _build_ulaw_decode()
_ALAW_ENCODE = _build_alaw_encode()
_ALAW_DECODE = _build_alaw_decode()
for _table in (_ULAW_ENCODE, _ULAW_DECODE, _ALAW_ENCODE, _ALAW_DECODE):
    _table.flags.writeable = False


def _as_index(pcm: np.ndarray) -> np.ndarray:
    if pcm.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 PCM, not {pcm.dtype}")
    return pcm.view(np.uint16)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """μ-law (PCMU) payload bytes for int16 PCM samples."""
    return _ULAW_ENCODE[_as_index(pcm)].tobytes()


def ulaw_decode(payload: bytes) -> np.ndarray:
    """int16 PCM samples for μ-law (PCMU) payload bytes."""
    return _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> bytes:
    """A-law (PCMA) payload bytes for int16 PCM samples."""
    return _ALAW_ENCODE[_as_index(pcm)].tobytes()


def alaw_decode(payload: bytes) -> np.ndarray:
    """int16 PCM samples for A-law (PCMA) payload bytes."""
    return _ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


CODECS: dict[str, tuple[Encoder, Decoder]] = {
    "PCMU": (ulaw_encode, ulaw_decode),
    "PCMA": (alaw_encode, alaw_decode),
}


def codec_functions(name: str) -> tuple[Encoder, Decoder]:
    """The ``(encode, decode)`` pair for an RTP codec name ("PCMU" or "PCMA").

    Raises ``ValueError`` naming the supported codecs for any other name.
    """
    try:
        return CODECS[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported codec {name!r}: supported are {', '.join(CODECS)}") from None
