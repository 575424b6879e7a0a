"""G.711 tables against the ITU-T reference algorithm, written out bit by bit."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from waihu.media.g711 import (
    alaw_decode,
    alaw_encode,
    codec_functions,
    ulaw_decode,
    ulaw_encode,
)

# ── The Sun/CCITT g711.c reference, transcribed to plain Python ──

SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
BIAS = 0x84
CLIP = 8159


def search(val: int, table: tuple[int, ...]) -> int:
    for i, end in enumerate(table):
        if val <= end:
            return i
    return len(table)


def linear2ulaw(pcm_val: int) -> int:
    pcm_val >>= 2
    if pcm_val < 0:
        pcm_val = -pcm_val
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm_val > CLIP:
        pcm_val = CLIP
    pcm_val += BIAS >> 2
    seg = search(pcm_val, SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    uval = (seg << 4) | ((pcm_val >> (seg + 1)) & 0xF)
    return uval ^ mask


def ulaw2linear(u_val: int) -> int:
    u_val = ~u_val & 0xFF
    t = ((u_val & 0x0F) << 3) + BIAS
    t <<= (u_val & 0x70) >> 4
    return BIAS - t if u_val & 0x80 else t - BIAS


def linear2alaw(pcm_val: int) -> int:
    pcm_val >>= 3
    if pcm_val >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm_val = -pcm_val - 1
    seg = search(pcm_val, SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    if seg < 2:
        aval |= (pcm_val >> 1) & 0x0F
    else:
        aval |= (pcm_val >> seg) & 0x0F
    return aval ^ mask


def alaw2linear(a_val: int) -> int:
    a_val ^= 0x55
    t = (a_val & 0x0F) << 4
    seg = (a_val & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t += 0x108
        t <<= seg - 1
    return t if a_val & 0x80 else -t


ALL_PCM = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(linear2ulaw(int(v)) for v in ALL_PCM)
    assert ulaw_encode(ALL_PCM) == expected


def test_ulaw_decode_matches_reference_for_every_code() -> None:
    expected = np.array([ulaw2linear(c) for c in ALL_CODES], dtype=np.int16)
    np.testing.assert_array_equal(ulaw_decode(ALL_CODES), expected)


def test_alaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(linear2alaw(int(v)) for v in ALL_PCM)
    assert alaw_encode(ALL_PCM) == expected


def test_alaw_decode_matches_reference_for_every_code() -> None:
    expected = np.array([alaw2linear(c) for c in ALL_CODES], dtype=np.int16)
    np.testing.assert_array_equal(alaw_decode(ALL_CODES), expected)


def test_known_codes() -> None:
    # Well-known anchors: digital silence and full scale.
    assert ulaw_encode(np.zeros(1, np.int16)) == b"\xff"
    assert alaw_encode(np.zeros(1, np.int16)) == b"\xd5"
    assert ulaw_encode(np.array([32767], np.int16)) == b"\x80"
    assert ulaw_encode(np.array([-32768], np.int16)) == b"\x00"
    assert int(ulaw_decode(b"\x80")[0]) == 32124
    assert int(alaw_decode(b"\xaa")[0]) == 32256


def test_decode_then_encode_is_identity_on_codes() -> None:
    # Every code decodes to a value that encodes back to itself (except μ-law's
    # two zeros, 0x7F and 0xFF, which both decode to 0).
    ulaw_round = ulaw_encode(ulaw_decode(ALL_CODES))
    assert [c for c, r in zip(ALL_CODES, ulaw_round, strict=True) if c != r] == [0x7F]
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


@pytest.mark.skipif(_audioop() is None, reason="audioop left the stdlib in Python 3.13")
def test_cross_check_with_audioop() -> None:
    audioop = _audioop()
    raw = ALL_PCM.astype("<i2").tobytes()
    assert ulaw_encode(ALL_PCM) == audioop.lin2ulaw(raw, 2)
    assert alaw_encode(ALL_PCM) == audioop.lin2alaw(raw, 2)
    np.testing.assert_array_equal(
        ulaw_decode(ALL_CODES), np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), "<i2")
    )
    np.testing.assert_array_equal(
        alaw_decode(ALL_CODES), np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), "<i2")
    )


def test_codec_functions() -> None:
    assert codec_functions("PCMU") == (ulaw_encode, ulaw_decode)
    assert codec_functions("pcma") == (alaw_encode, alaw_decode)
    with pytest.raises(ValueError, match=r"unsupported codec 'G722'.*PCMU, PCMA"):
        codec_functions("G722")


def test_encode_refuses_non_int16() -> None:
    with pytest.raises(TypeError, match="int16"):
        ulaw_encode(np.zeros(160, np.float32))


def test_frame_round_trip_is_close() -> None:
    t = np.arange(160) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for name in ("PCMU", "PCMA"):
        encode, decode = codec_functions(name)
        payload = encode(pcm)
        assert len(payload) == 160
        back = decode(payload)
        assert back.dtype == np.int16
        # G.711 keeps roughly 38 dB SNR on a loud tone
        noise = np.sqrt(np.mean((back.astype(float) - pcm) ** 2))
        assert noise < 8000 / 50
