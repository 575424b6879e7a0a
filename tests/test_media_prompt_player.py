"""Loading prompt recordings (WAV formats, resampling, errors) and the prompt player."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from waihu.media.prompt_player import Playback, PromptError, PromptPlayer, load_prompt
from waihu.media.resample import resample

SPF = 160


def write_wav(
    path: Path, frames: bytes, *, width: int, channels: int = 1, rate: int = 8000
) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return path


def sox(*args: str) -> None:
    if shutil.which("sox") is None:
        pytest.fail("sox is required for these tests (Debian package sox)")
    subprocess.run(["sox", *args], check=True, capture_output=True)


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.argmax(spectrum) * rate / pcm.size)


# ───────────── loading ─────────────


def test_16_bit_at_call_rate_is_unchanged(tmp_path: Path) -> None:
    pcm = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    path = write_wav(tmp_path / "a.wav", pcm.astype("<i2").tobytes(), width=2)
    loaded = load_prompt(path)
    assert loaded.dtype == np.int16
    np.testing.assert_array_equal(loaded, pcm)


def test_8_bit_is_unsigned(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", bytes([128, 0, 255, 129]), width=1)
    np.testing.assert_array_equal(load_prompt(path), [0, -32768, 32512, 256])


def test_24_bit_sign_extends_and_scales(tmp_path: Path) -> None:
    values = [0, 256, -256, 0x7FFFFF, -0x800000, 0x12345]
    raw = b"".join((v & 0xFFFFFF).to_bytes(3, "little") for v in values)
    path = write_wav(tmp_path / "a.wav", raw, width=3)
    np.testing.assert_array_equal(load_prompt(path), [0, 1, -1, 32767, -32768, 291])


def test_32_bit_scales(tmp_path: Path) -> None:
    values = np.array([0, 65536, -65536, 2**31 - 1, -(2**31)], dtype="<i4")
    path = write_wav(tmp_path / "a.wav", values.tobytes(), width=4)
    np.testing.assert_array_equal(load_prompt(path), [0, 1, -1, 32767, -32768])


def test_channels_are_mixed_to_mono(tmp_path: Path) -> None:
    stereo = np.array([[1000, 3000], [-2000, 0], [32767, 32767]], dtype="<i2")
    path = write_wav(tmp_path / "a.wav", stereo.tobytes(), width=2, channels=2)
    np.testing.assert_array_equal(load_prompt(path), [2000, -1000, 32767])


@pytest.mark.parametrize("rate", [44100, 22050, 16000, 48000, 11025])
def test_resampled_to_call_rate(tmp_path: Path, rate: int) -> None:
    t = np.arange(rate) / rate
    tone = (12000 * np.sin(2 * np.pi * 1000 * t)).astype("<i2")
    path = write_wav(tmp_path / "a.wav", tone.tobytes(), width=2, rate=rate)
    loaded = load_prompt(path, sample_rate=8000)
    assert loaded.size == 8000
    assert dominant_frequency(loaded.astype(float), 8000) == pytest.approx(1000, abs=2)
    ty = np.arange(loaded.size) / 8000
    expected = 12000 * np.sin(2 * np.pi * 1000 * ty)
    middle = slice(200, -200)  # the kernel sees zeros beyond the ends
    error = np.sqrt(np.mean((loaded[middle] - expected[middle]) ** 2))
    assert error < 12000 * 0.005  # better than -46 dB: a real interpolator, not a nearest pick


def test_downsampling_does_not_alias(tmp_path: Path) -> None:
    # A 6 kHz tone cannot exist at 8 kHz; naive decimation would fold it to 2 kHz.
    rate = 16000
    t = np.arange(rate) / rate
    tone = (12000 * np.sin(2 * np.pi * 6000 * t)).astype("<i2")
    path = write_wav(tmp_path / "a.wav", tone.tobytes(), width=2, rate=rate)
    loaded = load_prompt(path, sample_rate=8000)
    assert np.sqrt(np.mean(loaded[200:-200].astype(float) ** 2)) < 12000 * 0.001


def test_resample_passes_band_and_upsamples() -> None:
    t = np.arange(8000) / 8000
    tone = 10000 * np.sin(2 * np.pi * 440 * t)
    up = resample(tone, 8000, 16000)
    assert up.size == 16000
    tu = np.arange(16000) / 16000
    np.testing.assert_allclose(
        up[400:-400], 10000 * np.sin(2 * np.pi * 440 * tu)[400:-400], atol=30
    )
    with pytest.raises(ValueError, match="positive"):
        resample(tone, 0, 8000)


@pytest.mark.parametrize("bits", ["24", "32"])
def test_wave_format_extensible_from_sox(tmp_path: Path, bits: str) -> None:
    path = tmp_path / "ext.wav"
    sox(*f"-n -r 44100 -c 2 -b {bits} {path} synth 0.5 sine 700 vol 0.5".split())
    assert path.read_bytes()[20:22] == b"\xfe\xff"  # sox wrote WAVE_FORMAT_EXTENSIBLE
    loaded = load_prompt(path)
    assert loaded.size == 4000
    assert dominant_frequency(loaded.astype(float), 8000) == pytest.approx(700, abs=4)
    assert 0.45 * 32767 < np.abs(loaded).max() < 0.55 * 32767


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"prompt .*nope\.wav: file not found"):
        load_prompt(tmp_path / "nope.wav")


def test_not_a_wav_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("hello, this is not audio")
    with pytest.raises(PromptError, match=r"notes\.wav: not a WAV file"):
        load_prompt(path)


def test_float_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    sox(*f"-n -r 8000 -c 1 -e floating-point -b 32 {path} synth 0.1 sine 440".split())
    with pytest.raises(PromptError, match=r"float\.wav: unsupported WAV encoding \(format 0x0003"):
        load_prompt(path)


def test_empty_and_truncated_wav(tmp_path: Path) -> None:
    empty = write_wav(tmp_path / "empty.wav", b"", width=2)
    with pytest.raises(PromptError, match=r"empty\.wav: contains no audio"):
        load_prompt(empty)
    whole = write_wav(tmp_path / "whole.wav", bytes(1000), width=2).read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[:30])
    with pytest.raises(PromptError, match=r"cut\.wav"):
        load_prompt(cut)


# ───────────── playing ─────────────


def ramp(n: int, start: int = 1) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int16)


def test_idle_player_sends_silence() -> None:
    player = PromptPlayer(SPF)
    frame = player.next_frame()
    assert frame.shape == (SPF,)
    assert frame.dtype == np.int16
    assert not frame.any()
    assert not player.playing
    assert not player.interruptible


def test_frames_in_order_last_one_padded_then_done() -> None:
    finished: list[Playback] = []
    player = PromptPlayer(SPF, on_finished=finished.append)
    audio = ramp(400)
    handle = player.play(audio, label="hello")
    assert player.playing
    assert player.interruptible
    first = player.next_frame()
    second = player.next_frame()
    assert not handle.done.is_set()
    third = player.next_frame()  # the last 80 samples, padded
    np.testing.assert_array_equal(np.concatenate((first, second, third[:80])), audio)
    assert not third[80:].any()
    assert handle.done.is_set()
    assert handle.interrupted is False
    assert handle.played_samples == 400
    assert finished == [handle]
    assert not player.playing
    assert not player.next_frame().any()


def test_queue_plays_back_to_back() -> None:
    player = PromptPlayer(SPF)
    a = player.play(ramp(SPF, 1), label="a")
    b = player.play(ramp(SPF, 1000), label="b", interruptible=False)
    assert player.interruptible
    assert player.next_frame()[0] == 1
    assert a.done.is_set()
    assert not player.interruptible  # b is next
    assert player.next_frame()[0] == 1000
    assert b.done.is_set()


def test_empty_prompt_finishes_without_a_frame() -> None:
    finished: list[str] = []
    player = PromptPlayer(SPF, on_finished=lambda p: finished.append(p.label))
    player.play(np.zeros(0, np.int16), label="empty")
    player.play(ramp(SPF, 7), label="next")
    assert player.next_frame()[0] == 7
    assert finished == ["empty", "next"]


def test_stop_interrupts_current_and_queued() -> None:
    finished: list[str] = []
    player = PromptPlayer(SPF, on_finished=lambda p: finished.append(p.label))
    a = player.play(ramp(1000), label="a")
    b = player.play(ramp(1000), label="b", interruptible=False)
    player.next_frame()
    assert player.stop() == 2
    assert a.interrupted and a.done.is_set()
    assert b.interrupted and b.done.is_set()
    assert a.played_samples == SPF
    assert finished == ["a", "b"]
    assert not player.playing
    assert not player.next_frame().any()


def test_barge_in_stop_keeps_uninterruptible_prompts() -> None:
    player = PromptPlayer(SPF)
    a = player.play(ramp(1000), label="a")
    disclosure = player.play(ramp(SPF, 500), label="legal", interruptible=False)
    c = player.play(ramp(1000), label="c")
    player.next_frame()
    assert player.stop(keep_uninterruptible=True) == 2
    assert a.interrupted and c.interrupted
    assert not disclosure.done.is_set()
    assert player.next_frame()[0] == 500
    assert disclosure.done.is_set() and not disclosure.interrupted
    # a non-interruptible prompt that is playing is not stopped either
    legal = player.play(ramp(1000), interruptible=False)
    player.next_frame()
    assert player.stop(keep_uninterruptible=True) == 0
    assert player.playing and not legal.done.is_set()


def test_play_refuses_wrong_audio() -> None:
    player = PromptPlayer(SPF)
    with pytest.raises(TypeError, match="int16"):
        player.play(np.zeros(10, np.float32))
    with pytest.raises(TypeError, match="1-D"):
        player.play(np.zeros((2, 10), np.int16))
