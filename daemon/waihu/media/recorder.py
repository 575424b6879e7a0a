"""The call recording: both directions in one stereo WAV, callee left, robot right.

The call's media tick hands the recorder the robot's outgoing frame and the
callee's incoming frame every 20 ms, so the two channels advance together and
stay aligned — a prompt and the barge-in that cut it line up to the frame.
Frames are kept in memory (about 32 KB per second of call at 8 kHz) and
written once, when the call is over, in a worker thread.

The file is created mode 0640 and the folders the recorder makes 0750, set
explicitly (``mkstemp`` creates 0600 whatever the umask; systemd's
``UMask=0027`` would leave 0640 and 0750 alone, a stricter umask would not),
so that the ``waihu`` group — the operators — can read the recordings, as
the unit file promises, and nobody else can.

What it is not: a streaming writer. A call that is killed outright loses its
recording; its result, filed separately, does not depend on it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import wave
from pathlib import Path

import numpy as np
import trio

__all__ = ["CHANNEL_LAYOUT", "DIRECTORY_MODE", "FILE_MODE", "StereoRecorder"]

log = logging.getLogger("waihu.media.recorder")

SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
CHANNELS = 2  # callee left, robot right (the customary layout of call-centre recordings)
CHANNEL_LAYOUT = ("callee", "robot")  # who is heard on the left channel, and on the right
FILE_MODE = 0o640  # the waihu group (operators) may read a recording; others may not
DIRECTORY_MODE = 0o750  # and may list the folders holding them


class StereoRecorder:
    """Collects one call's audio; ``save`` writes it as a 16-bit stereo WAV at ``path``."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._robot: list[np.ndarray] = []
        self._callee: list[np.ndarray] = []
        self._robot_samples = 0  # kept so ``duration`` needs no concatenation
        self._callee_samples = 0

    @property
    def duration(self) -> float:
        """Seconds recorded so far (the longer channel)."""
        return max(self._robot_samples, self._callee_samples) / self.sample_rate

    def robot(self, frame: np.ndarray) -> None:
        """Append the robot's outgoing frame for this tick (right channel)."""
        self._robot.append(np.array(frame, dtype=np.int16, copy=True))
        self._robot_samples += frame.size

    def callee(self, frame: np.ndarray) -> None:
        """Append the callee's incoming frame for this tick (left channel)."""
        self._callee.append(np.array(frame, dtype=np.int16, copy=True))
        self._callee_samples += frame.size

    def stereo(self) -> np.ndarray:
        """The recording so far as an (n, 2) int16 array; a shorter channel is padded."""
        return _interleave(list(self._callee), list(self._robot))

    async def save(self, *, limiter: trio.CapacityLimiter | None = None) -> Path:
        """Write the WAV (creating parent directories) in a worker thread; returns its path.

        Assembling and writing both happen in the thread (a long call is tens of
        megabytes, too much to copy on the trio thread between two media ticks).
        The file appears whole or not at all (written beside it, then renamed).
        Raises ``OSError`` when it cannot be written.
        """
        callee, robot = list(self._callee), list(self._robot)  # a snapshot; cheap
        seconds = await trio.to_thread.run_sync(self._write, callee, robot, limiter=limiter)
        log.debug("saved %.1f s of call audio to %s", seconds, self.path)
        return self.path

    def _write(self, callee: list[np.ndarray], robot: list[np.ndarray]) -> float:
        audio = _interleave(callee, robot)
        _make_folders(self.path.parent)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{self.path.stem}-", suffix=".wav", dir=self.path.parent
        )
        tmp = Path(tmp_name)
        try:
            os.fchmod(fd, FILE_MODE)  # mkstemp made it 0600
            with os.fdopen(fd, "wb") as raw, wave.open(raw, "wb") as wav:
                wav.setnchannels(CHANNELS)
                wav.setsampwidth(SAMPLE_WIDTH)
                wav.setframerate(self.sample_rate)
                wav.writeframes(audio.astype("<i2").tobytes())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return audio.shape[0] / self.sample_rate


def _make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents, each DIRECTORY_MODE whatever the umask;
    folders already there keep the mode they have (an administrator's choice)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue  # made meanwhile by another call's recorder: its mode is set
        path.chmod(DIRECTORY_MODE)


def _interleave(callee: list[np.ndarray], robot: list[np.ndarray]) -> np.ndarray:
    left = np.concatenate(callee) if callee else np.zeros(0, np.int16)
    right = np.concatenate(robot) if robot else np.zeros(0, np.int16)
    out = np.zeros((max(left.size, right.size), CHANNELS), dtype=np.int16)
    out[: left.size, 0] = left
    out[: right.size, 1] = right
    return out
