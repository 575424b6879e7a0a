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

and each final result becomes an ``Utterance`` for the engine.

``VoiceSpeaker`` plays script lines through the call's prompt player: the
recording, else the synthesis the library made at load, else the call's own
TTS; a line whose audio is still being synthesised keeps its place in line;
``say_from`` plays the rest of a line (from an offset), which is how a line
cut by a false interruption is resumed.

Backchannels: after each final result the listener asks the media whether the
utterance was taken for a backchannel (``CallMedia.backchannel``: it paused a
line, which then went on) and marks the ``Utterance`` so; cut lines reach the
engine as ``PromptDone(interrupted=True, played_ms=…)``.

What it is not: the media (``waihu.media.call_media``), the dialogue
(``waihu.dialog.engine``) or the recogniser (an ``AsrEngine`` provider).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

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
    PromptFinished,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from waihu.media.prompt_player import Playback, PromptPlayer

__all__ = ["Listener", "Screen", "VoiceSpeaker"]

# Lines are rendered ahead at the rate G.711 calls run at; a call answered with another
# codec rate has its lines rendered as it says them.
PRERENDER_RATE = 8000


class Screen(Protocol):
    """The who-answered screen as the listener sees it (``waihu.who_answered``)."""

    def heard(self, text: str, *, final: bool) -> None:
        """Recognised text of the callee's side (partial or final)."""
        ...

    async def admit(self, utterance: Utterance) -> bool:
        """Wait until the screen has decided (at most its window); True when the
        utterance should reach the engine (a person, or unsure)."""
        ...


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

    async def run(self) -> None:
        """Read the media events until the call's media is closed."""
        media, stream, inbox, life = self.media, self.stream, self.inbox, self.life
        started_at = 0.0
        async for event in media.events:
            if isinstance(event, SpeechStarted):
                started_at = time.time()
                node = self._node = self.current_node()
                if self.turn_windows is not None:
                    media.endpointer.set_windows(*self.turn_windows(node))
                stream.set_phrases(list(node.phrases) or None)
                await self._accept(event.preroll)
                await inbox.send(SpeechBegan())
            elif isinstance(event, SpeechAudio):
                await self._accept(event.pcm)
            elif isinstance(event, SpeechEnded):
                ended_at = time.time()  # when the endpointer decided, before recognition
                result = await stream.finish()
                media.heard(result.text, final=True)
                backchannel = media.backchannel  # the judge's word on it, given just now
                decode_seconds = time.time() - ended_at
                life.utterance(result.text, result.confidence, decode_seconds=decode_seconds)
                utterance = Utterance(
                    result.text, result.confidence, started_at, ended_at, backchannel=backchannel
                )
                if self.screen is not None:
                    self.screen.heard(result.text, final=True)
                    if not await self.screen.admit(utterance):
                        continue
                await inbox.send(utterance)
            elif isinstance(event, BargeIn):
                life.barge_in()
            elif isinstance(event, PromptFinished):
                await inbox.send(PromptDone(event.interrupted, event.played_ms))
            elif isinstance(event, DtmfDigit):
                await inbox.send(Dtmf(event.digit))

    async def _accept(self, pcm: np.ndarray) -> None:
        """Feed the recogniser; show a new partial result to whoever weighs it."""
        partial: AsrResult | None = await self.stream.accept(pcm)
        if partial is None:
            return
        self.media.heard(partial.text, final=False)
        if self.complete_answer is not None and self._node is not None:
            self.media.endpointer.quick_end = self.complete_answer(partial.text, self._node)
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
