"""The stereo call recorder: channel placement, alignment, writing to disk."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.media.recorder import StereoRecorder

SPF = 160


def read_stereo(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        data = np.frombuffer(wav.readframes(params.nframes), "<i2").reshape(-1, 2)
    return params, data


async def test_callee_left_robot_right(tmp_path: Path) -> None:
    with trio.fail_after(30):
        path = tmp_path / "2024" / "06" / "call-1.wav"  # parents do not exist yet
        recorder = StereoRecorder(path, 8000)
        for tick in range(50):
            recorder.robot(np.full(SPF, 1000 + tick, np.int16))
            recorder.callee(np.full(SPF, -2000 - tick, np.int16))
        assert recorder.duration == pytest.approx(1.0)
        saved = await recorder.save()
    assert saved == path
    params, data = read_stereo(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert data.shape == (50 * SPF, 2)
    for tick in range(50):
        block = data[tick * SPF : (tick + 1) * SPF]
        assert (block[:, 0] == -2000 - tick).all()  # left: callee
        assert (block[:, 1] == 1000 + tick).all()  # right: robot
    assert [p.name for p in path.parent.iterdir()] == ["call-1.wav"]  # no temp file left


async def test_frames_are_copied_and_short_channel_padded(tmp_path: Path) -> None:
    with trio.fail_after(30):
        recorder = StereoRecorder(tmp_path / "r.wav", 8000)
        buffer = np.full(SPF, 7, np.int16)
        recorder.robot(buffer)
        recorder.callee(buffer)
        buffer[:] = 9  # a caller reusing its buffer does not change what was recorded
        recorder.robot(buffer)
        await recorder.save(limiter=trio.CapacityLimiter(1))
    _, data = read_stereo(tmp_path / "r.wav")
    assert data.shape == (2 * SPF, 2)
    assert (data[:SPF] == 7).all()
    assert (data[SPF:, 1] == 9).all()
    assert (data[SPF:, 0] == 0).all()  # the callee channel is padded at the end


async def test_empty_recording_is_a_valid_empty_wav(tmp_path: Path) -> None:
    with trio.fail_after(30):
        await StereoRecorder(tmp_path / "e.wav", 8000).save()
    params, data = read_stereo(tmp_path / "e.wav")
    assert params.nframes == 0
    assert data.shape == (0, 2)


async def test_unwritable_path_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    recorder = StereoRecorder(blocker / "call.wav", 8000)
    recorder.robot(np.zeros(SPF, np.int16))
    with trio.fail_after(30), pytest.raises(OSError):
        await recorder.save()
