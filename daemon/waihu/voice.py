"""The voice pipeline of one call: what the callee says in, what the robot says out.

``Listener`` turns a call's media events into the dialogue engine's events:
the endpointer's utterances are fed to the call's recogniser as they arrive
(streaming), each partial result is shown to

- the endpointer's turn-end decision (``turn_windows``/``complete_answer``:
  a confident, complete answer for the node ends the turn after the short
  end window instead of the full one),
- the call's barge-in judge (``CallMedia.heard``: backchannels and coughs do
  not cut a line, words do),
- the who-answered screen, while it is still deciding (``screen``: it holds
  utterances back until it knows a person is there),

and each final result becomes an ``Utterance`` for the engine. Silence at the end of an
utterance is decoded only for ``DECODED_SILENCE_MS``: the recogniser has heard every word
by then, and the rest of the end window (700 ms by default, longer on some nodes) would
only cost CPU; if the callee goes on, the pause is decoded before their next words.
When the recogniser is slower than the audio (many calls talking at once), the frames
waiting behind the listener are fed together in one piece (one worker-thread hop instead
of one per batch), so the listener catches up instead of staying behind by its queue.

Early end of turn: a partial result is judged by the audio it accounts for
(``AsrResult.audio_ms``, ``Endpointer.judge_partial``), so a verdict given
before the callee's loud speech was over does not count. When a turn ended on
the short window but its final words are not a sure, complete answer (every
word at least ``QUICK_END_WORD_CONFIDENCE``), the utterance is held for the
rest of the full window; words that follow within it are decoded again
together with it as one utterance, as if the full window had applied.

``VoiceSpeaker`` plays script lines through the call's prompt player: the
recording, else the synthesis the library made at load, else the call's own
TTS; a line whose audio is still being synthesised keeps its place in line;
``say_from`` plays the rest of a line (from an offset), which is how a line
cut by a false interruption is resumed.

Backchannels: after each final result the listener asks the media whether the
utterance was taken for a backchannel (``CallMedia.backchannel``: it paused a
line, which then went on) and marks the ``Utterance`` so; one with no word
that counts to the judge (``CallMedia.backchannel_words``: no backchannel word,
none sure) reaches the engine without its text (noise: an echo leak or a
breath, logged); cut lines reach the engine as
``PromptDone(interrupted=True, played_ms=…)``.

What it is not: the media (``waihu.media.call_media``), the dialogue
(``waihu.dialog.engine``) or the recogniser (an ``AsrEngine`` provider).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import numpy as np
import trio

from waihu.api import AsrResult, AsrStream, ProviderError
from waihu.call_lifecycle import CallLifecycle
from waihu.dialog.engine import (
    Dtmf,
    EngineEvent,
    PromptDone,
    PromptHandle,
    SpeechBegan,
    Utterance,
)
from waihu.dialog.library import LoadedScript, SpeechCache
from waihu.dialog.script import Node, Variant
from waihu.media.call_media import (
    BargeIn,
    CallMedia,
    DtmfDigit,
    MediaEvent,
    PromptFinished,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from waihu.media.endpointer import EndpointState
from waihu.media.prompt_player import Playback, PromptPlayer

log = logging.getLogger("waihu.voice")

__all__ = ["Listener", "Screen", "VoiceSpeaker", "utterance_phrases"]

# Lines are rendered ahead at the rate G.711 calls run at; a call answered with another
# codec rate has its lines rendered as it says them.
PRERENDER_RATE = 8000
# A turn ended early stands only when every final word is at least this sure: a phrase
# grammar forces a fragment onto its phrases ("가격이" alone comes back "네 없어요", the
# second word 0.74 sure), while a clear "네" comes back 1.0.
QUICK_END_WORD_CONFIDENCE = 0.9
# A held utterance waits this much longer, while the endpointer is confirming a new sound
# as speech, and at most HOLD_EXTENSION_MAX_S in all.
HOLD_EXTENSION_S = 0.05
HOLD_EXTENSION_MAX_S = 0.5
# Silence at the end of an utterance decoded before the turn ends: past the short end
# window (250 ms) and vosk's partial-result lag (~180 ms, plus a 100 ms batch), every
# word was heard; the rest of the full window is not decoded unless the callee goes on.
DECODED_SILENCE_MS = 300


class Screen(Protocol):
    """The who-answered screen as the listener sees it (``waihu.who_answered``)."""

    def heard(
        self,
        text: str,
        *,
        final: bool,
        confidence: float | None = None,
        words: Sequence[tuple[str, float, float, float]] = (),
    ) -> None:
        """Recognised text of the callee's side (partial, or final with its confidence
        and words)."""
        ...

    def grammar(self) -> list[str]:
        """Phrases the recogniser should expect besides the node's while the screen
        listens (a machine's words, people's greetings); none once it has decided."""
        ...

    async def admit(self, utterance: Utterance) -> bool:
        """Wait until the screen has decided (at most its window); True when the
        utterance should reach the engine (a person, or unsure)."""
        ...


def utterance_phrases(node: Node, screen: Screen | None) -> list[str] | None:
    """The phrases the recogniser should expect at ``node``: the node's, plus what the
    screen still listens for (a carrier's, a voicemail's, a greeting); None decodes
    free-form, which hears those anyway."""
    phrases = list(node.phrases)
    if not phrases:
        return None
    if screen is not None:
        phrases += [phrase for phrase in screen.grammar() if phrase not in node.phrases]
    return phrases


class Listener:
    """Media events → engine events for one call; ``run`` is a task of the call.

    ``complete_answer(text, node)`` says whether a partial result is already a
    confident, complete answer at ``node``; ``turn_windows(node)`` gives the
    node's (full, short) end-of-speech windows in ms. Both None: every turn
    ends on the endpointer's own window.
    """

    def __init__(
        self,
        media: CallMedia,
        stream: AsrStream,
        inbox: trio.MemorySendChannel[EngineEvent],
        current_node: Callable[[], Node],
        life: CallLifecycle,
        *,
        complete_answer: Callable[[str, Node], bool] | None = None,
        turn_windows: Callable[[Node], tuple[int, int]] | None = None,
        screen: Screen | None = None,
    ) -> None:
        self.media = media
        self.stream = stream
        self.inbox = inbox
        self.current_node = current_node
        self.life = life
        self.complete_answer = complete_answer
        self.turn_windows = turn_windows
        self.screen = screen
        self._node: Node | None = None  # the node the current utterance answers
        self._utterance = 0  # the endpointer's number of the current utterance
        self._started_at = 0.0  # when the callee began the utterance being heard
        # an utterance ended on the short window whose final words were not a complete
        # answer: held until the rest of the full window passes or more words join it
        self._held: Utterance | None = None
        self._hold_until = math.inf  # trio time the held utterance is released at
        self._extended = 0.0  # seconds the hold was stretched for a sound being confirmed
        self._audio: list[np.ndarray] = []  # what the recogniser was fed of this utterance
        self._held_audio = np.zeros(0, np.int16)  # the held utterance's audio
        self._offset_ms = 0  # held audio fed again ahead of this piece
        self._next: MediaEvent | None = None  # read while draining audio, handled next
        self._tail: list[np.ndarray] = []  # silence past DECODED_SILENCE_MS, not decoded yet

    async def run(self) -> None:
        """Read the media events until the call's media is closed."""
        while True:
            event: MediaEvent | None = self._next
            self._next = None
            if event is None:
                with trio.move_on_at(self._hold_until):
                    try:
                        event = await self.media.events.receive()
                    except trio.EndOfChannel:
                        break
            if event is not None:  # handled outside the wait: a deadline must not cut it
                await self._handle(event)
                continue
            if self.media.endpointer.state is EndpointState.STARTING and self._extended < (
                HOLD_EXTENSION_MAX_S
            ):
                # a sound that may be the callee going on: speech is confirmed only after
                # start_ms of it, which the full window would not have needed
                self._hold_until += HOLD_EXTENSION_S
                self._extended += HOLD_EXTENSION_S
                continue
            await self._release()  # the full window passed: the held words were all
        held, self._held = self._held, None
        if held is not None:  # the media ended on them: the engine hears them if it still listens
            try:
                self.inbox.send_nowait(held)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("call %s: %r came as the call ended", self.media.call_id, held.text)

    async def _handle(self, event: MediaEvent) -> None:
        media, stream, inbox, life = self.media, self.stream, self.inbox, self.life
        if isinstance(event, SpeechStarted):
            if self._held is None:
                self._started_at = time.time()
            self._hold_until = math.inf  # more words: they join the held ones
            node = self._node = self.current_node()
            self._utterance = event.number
            if self.turn_windows is not None:
                media.endpointer.set_windows(*self.turn_windows(node))
            stream.set_phrases(utterance_phrases(node, self.screen))
            self._audio = []
            self._tail = []
            self._offset_ms = 0
            if self._held is not None:
                log.debug("call %s: words after %r: heard as one", media.call_id, self._held.text)
                # decoded again with what follows: a phrase grammar reads a fragment
                # ("가격이") as another phrase, the whole sentence right
                held_audio = self._held_audio
                self._offset_ms = held_audio.size * 1000 // media.endpointer.sample_rate
                await self._accept(held_audio)
            await self._accept(event.preroll)
            await inbox.send(SpeechBegan())
        elif isinstance(event, SpeechAudio):
            pieces: list[np.ndarray] = []
            for audio in self._audio_waiting(event):
                if audio.silent_ms > DECODED_SILENCE_MS:
                    self._tail.append(audio.pcm)  # decoded only if the callee goes on
                    continue
                if audio.silent_ms == 0 and self._tail:  # they did: the pause goes in first
                    pieces += self._tail
                    self._tail.clear()
                pieces.append(audio.pcm)
            if pieces:
                await self._accept(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
        elif isinstance(event, SpeechEnded):
            ended_at = time.time()  # when the endpointer decided, before recognition
            result = await stream.finish()
            media.heard(result.text, final=True, words=result.words)
            if self.screen is not None:  # every final, held or not: the screen weighs words
                self.screen.heard(
                    result.text, final=True, confidence=result.confidence, words=result.words
                )
            backchannel = media.backchannel  # the judge's word on it, given just now
            decode_seconds = time.time() - ended_at
            life.utterance(result.text, result.confidence, decode_seconds=decode_seconds)
            text = result.text
            # a real 네 counts however unsure (0.56–0.66 under load); the robot's echo that
            # leaked past the echo guard, or a breath, comes back as a lone unsure word of
            # something else ("않", 0.60–0.68)
            if backchannel and text and not media.backchannel_words:
                log.info(
                    "call %s: %r (%.2f) over a line, no backchannel word, none sure:"
                    " taken for noise",
                    media.call_id,
                    text,
                    result.confidence,
                )
                text = ""  # noise to the engine: nothing written, nothing routed
            utterance = Utterance(
                text, result.confidence, self._started_at, ended_at, backchannel=backchannel
            )
            if self._held is not None:  # words after a pause: one utterance with them
                utterance = attrs.evolve(utterance, started_at=self._held.started_at)
                self._held = None
            if (
                event.quick
                and self.complete_answer is not None
                and self._node is not None
                and not (_sure(result) and self.complete_answer(utterance.text, self._node))
            ):
                # the partial said "complete" but the final words do not: the callee may be
                # mid-sentence, so the turn waits out the rest of the full window
                log.debug(
                    "call %s: %r ended on the short window is not a sure, complete answer:"
                    " held %d ms for more words",
                    media.call_id,
                    utterance.text,
                    event.rest_ms,
                )
                self._held = utterance
                self._held_audio = np.concatenate(self._audio)
                self._hold_until = trio.current_time() + event.rest_ms / 1000
                self._extended = 0.0
                return
            await self._deliver(utterance)
        elif isinstance(event, BargeIn):
            life.barge_in()
        elif isinstance(event, PromptFinished):
            await inbox.send(PromptDone(event.interrupted, event.played_ms))
        elif isinstance(event, DtmfDigit):
            await inbox.send(Dtmf(event.digit))

    def _audio_waiting(self, first: SpeechAudio) -> list[SpeechAudio]:
        """``first`` and the utterance's frames already waiting in the channel after it.

        While the recogniser is busy (many calls talking at once) frames pile up behind the
        listener; fed one batch per worker-thread hop they would keep the listener behind
        by the queue's length, while fed together they cost one hop and decode faster per
        second of audio, so the listener catches up. The first other event stops the
        draining and is handled next."""
        frames = [first]
        while True:
            try:
                event = self.media.events.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if not isinstance(event, SpeechAudio):
                self._next = event
                break
            frames.append(event)
        return frames

    async def _release(self) -> None:
        """Hand on the held utterance: no more words came within the full window."""
        held, self._held, self._hold_until = self._held, None, math.inf
        log.debug("call %s: no more words: %r released", self.media.call_id, held and held.text)
        if held is not None:
            await self._deliver(held)

    async def _deliver(self, utterance: Utterance) -> None:
        if self.screen is not None:
            if not await self.screen.admit(utterance):
                return
        await self.inbox.send(utterance)

    async def _accept(self, pcm: np.ndarray) -> None:
        """Feed the recogniser; show a new partial result to whoever weighs it."""
        self._audio.append(pcm)
        partial: AsrResult | None = await self.stream.accept(pcm)
        if partial is None:
            return
        self.media.heard(partial.text, final=False)
        if self.complete_answer is not None and self._node is not None:
            complete = self.complete_answer(partial.text, self._node)
            if partial.audio_ms is None:  # timed by when it arrived
                self.media.endpointer.quick_end = complete
            else:  # timed by the audio it heard
                covered_ms = max(0, partial.audio_ms - self._offset_ms)  # of this piece
                self.media.endpointer.judge_partial(
                    complete, utterance=self._utterance, covered_ms=covered_ms
                )
        if self.screen is not None:
            self.screen.heard(partial.text, final=False)


class _LaterLine:
    """A line whose audio is still being synthesised (``PromptHandle``).

    Until it is queued it is neither started nor interrupted; then it reads
    as its ``Playback``. ``done`` is set once that playback ended.
    """

    def __init__(self) -> None:
        self.done = trio.Event()
        self.playback: Playback | None = None

    @property
    def interrupted(self) -> bool:
        return self.playback is not None and self.playback.interrupted

    @property
    def started_at(self) -> float | None:
        return None if self.playback is None else self.playback.started_at

    @property
    def ended_at(self) -> float | None:
        return None if self.playback is None else self.playback.ended_at

    @property
    def played_ms(self) -> int:
        return 0 if self.playback is None else self.playback.played_ms

    @property
    def duration_ms(self) -> int | None:
        return None if self.playback is None else self.playback.duration_ms


class VoiceSpeaker:
    """Plays script lines through the call's prompt player: the recording, else the
    synthesis the library made at load, else the call's own TTS (see the module
    docstring). ``nursery`` runs the lines still being synthesised."""

    def __init__(
        self,
        player: PromptPlayer,
        loaded: LoadedScript,
        speech: SpeechCache | None,
        nursery: trio.Nursery,
        *,
        sample_rate: int,
    ) -> None:
        self.player = player
        self.loaded = loaded
        self.speech = speech
        self.nursery = nursery
        self.sample_rate = sample_rate
        self._queued = trio.Event()  # set while no line waits for its audio
        self._queued.set()

    def say(self, variant: Variant, text: str, *, interruptible: bool) -> PromptHandle:
        return self.say_from(variant, text, interruptible=interruptible, from_ms=0)

    def say_from(
        self, variant: Variant, text: str, *, interruptible: bool, from_ms: int
    ) -> PromptHandle:
        """``say``, starting ``from_ms`` into the line's audio: the rest of a line the
        callee cut (the engine's ``resume`` recovery). Past its end: nothing is heard."""
        audio = self._ready(variant, text)
        offset = max(0, from_ms) * self.sample_rate // 1000
        if audio is not None and self._queued.is_set():
            offset = min(offset, audio.size)
            return self.player.play(audio, interruptible=interruptible, label=text, offset=offset)
        # behind a line still being synthesised, or one itself: keep the order said
        line, before, queued = _LaterLine(), self._queued, trio.Event()
        self._queued = queued
        self.nursery.start_soon(
            self._later, line, audio, text, interruptible, before, queued, offset
        )
        return line

    def _ready(self, variant: Variant, text: str) -> np.ndarray | None:
        if variant.recording is not None:
            return self.loaded.audio[variant.recording]
        if self.sample_rate == PRERENDER_RATE and text in self.loaded.speech:
            return self.loaded.speech[text]
        if self.speech is None:  # the library refuses such a script; never reached
            raise ProviderError(f"no [call] tts to speak {text!r}")
        language = self.loaded.script.language
        return self.speech.peek(text, language=language, sample_rate=self.sample_rate)

    async def _later(
        self,
        line: _LaterLine,
        audio: np.ndarray | None,
        text: str,
        interruptible: bool,
        before: trio.Event,
        queued: trio.Event,
        offset: int = 0,
    ) -> None:
        try:
            if audio is None:
                assert self.speech is not None  # _ready raised otherwise
                audio = await self.speech.speak(
                    text, language=self.loaded.script.language, sample_rate=self.sample_rate
                )
            await before.wait()
            playback = line.playback = self.player.play(
                audio, interruptible=interruptible, label=text, offset=min(offset, audio.size)
            )
        finally:
            queued.set()  # a failed line must not hold back the next (the call ends anyway)
        await playback.done.wait()
        line.done.set()


def _sure(result: AsrResult) -> bool:
    """Every word of a final result is sure enough for a turn ended early (the result's
    confidence when the engine gives no words)."""
    lowest = min((word[1] for word in result.words), default=result.confidence)
    return lowest >= QUICK_END_WORD_CONFIDENCE
