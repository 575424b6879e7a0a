"""The dialogue engine: one instance drives one conversation through a script.

It is told what happens (``SpeechBegan``, ``Utterance``, ``PromptDone``,
``Dtmf``) through a channel and acts through a ``Speaker`` (play a line, get a
handle that says when it finished or was cut off). It does not know about
audio, SIP or recognisers: the voice pipeline in ``waihu.call`` turns media
and ASR into these events, and a text chat can feed typed lines the same way.

One turn: say the node's line → wait for a reply (silence timer starts when
the prompt has finished) → classify in the script's priority order → route:
a knowledge-base answer then back to the node, an intent to its next node, a
reply matching nothing to ``default``. Silence re-prompts ``silence_retries``
times, then goes to ``on_silence``. An end node's line is played to its end
and the engine returns the grade.

Error handling: the engine raises nothing of its own; cancelling it (callee
hung up, daemon draining) is how a call stops early.
"""

from __future__ import annotations

import math
import string
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Protocol

import attrs
import trio

from waihu.api import Classifier, Turn
from waihu.dialog.script import DEFAULT_INTENT, Node, Script, Variant

__all__ = [
    "DialogueEngine",
    "Dtmf",
    "Ending",
    "PromptDone",
    "PromptHandle",
    "Speaker",
    "SpeechBegan",
    "Utterance",
]


# ───────────────────────── what the engine is told ─────────────────────────


@attrs.frozen
class SpeechBegan:
    """The callee started speaking (stops the silence timer)."""


@attrs.frozen
class Utterance:
    """The callee finished a phrase; ``text`` is empty when nothing was recognised."""

    text: str
    confidence: float = 1.0
    started_at: float | None = None
    ended_at: float | None = None


@attrs.frozen
class PromptDone:
    """A line the robot was saying has ended (finished or cut off by barge-in)."""


@attrs.frozen
class Dtmf:
    """The callee pressed a key."""

    digit: str


EngineEvent = SpeechBegan | Utterance | PromptDone | Dtmf


class PromptHandle(Protocol):
    """A line being said: ``done`` is set when it ended; ``interrupted`` if cut off.

    ``started_at``/``ended_at`` (wall clock) say when it was really heard; None
    while it has not started (or if it never did).
    """

    done: trio.Event
    interrupted: bool
    started_at: float | None
    ended_at: float | None


class Speaker(Protocol):
    """Where the engine's lines go: a prompt player, or a text console."""

    def say(self, variant: Variant, text: str, *, interruptible: bool) -> PromptHandle:
        """Queue ``variant`` (``text`` is its text with variables filled in)."""
        ...


@attrs.frozen
class Ending:
    """How a conversation ended: the last node, its grade and tags."""

    node: str
    grade: str
    tags: tuple[str, ...]
    reason: str  # "end" | "silence"
    dnc: bool = False  # the callee asked not to be called again: add the number before hang-up


# ───────────────────────── the engine ─────────────────────────


class DialogueEngine:
    """Runs one conversation. ``on_turn`` is called for every transcript line."""

    def __init__(
        self,
        script: Script,
        classifier: Classifier,
        speaker: Speaker,
        inbox: trio.MemoryReceiveChannel[EngineEvent],
        *,
        on_turn: Callable[[Turn], None],
        on_node: Callable[[str], None] = lambda node: None,
        variables: Mapping[str, str] | None = None,
        min_confidence: float = 0.0,
        now: Callable[[], float],
    ) -> None:
        self.script = script
        self.classifier = classifier
        self.speaker = speaker
        self.inbox = inbox
        self.on_turn = on_turn
        self.on_node = on_node
        self.variables = dict(variables or {})
        self.min_confidence = min_confidence
        self.now = now
        self.node = script.start
        self._said: defaultdict[str, int] = defaultdict(int)  # rotates variants per line
        self._robot_turns: list[tuple[Turn, PromptHandle]] = []

    async def run(self) -> Ending:
        """Drive the script from its start node to an end node."""
        node = self.script.nodes[self.script.start]
        while True:
            self.node = node.name
            self.on_node(node.name)
            handle = self._say(node.say, node.name, node, interruptible=node.interruptible)
            if node.end:
                await handle.done.wait()
                reason = "silence" if node.name == self.script.on_silence else "end"
                return Ending(
                    node.name, node.grade or self.script.default_grade, node.tags, reason, node.dnc
                )
            node = self.script.nodes[await self._converse(node, handle)]

    async def _converse(self, node: Node, handle: PromptHandle) -> str:
        """Listen and answer at ``node`` until a reply routes elsewhere; the next node's name."""
        silences = 0
        while True:
            reply = await self._await_reply(handle)
            if reply is None:
                if silences >= self.script.silence_retries:
                    return self.script.on_silence
                silences += 1
                handle = self._say(
                    node.reprompt or node.say,
                    f"{node.name}/reprompt",
                    node,
                    interruptible=node.interruptible,
                )
                continue
            intent = self._classify(reply, node)
            self.on_turn(
                Turn(
                    speaker="callee",
                    text=reply.text,
                    node=node.name,
                    intent=intent,
                    confidence=reply.confidence,
                    started_at=reply.started_at,
                    ended_at=reply.ended_at,
                )
            )
            entry = self.script.kb.get(intent)
            if entry is None:
                # a line the robot cannot interrupt is finished before moving on
                await handle.done.wait()
                return node.on[intent]
            handle = self._say(entry.say, entry.intent, node, interruptible=True)
            if entry.then == "repeat":
                handle = self._say(node.say, node.name, node, interruptible=node.interruptible)

    async def _await_reply(self, handle: PromptHandle) -> Utterance | None:
        """The next non-empty utterance, or None when the callee stays silent too long."""
        speaking = False
        deadline = math.inf
        while True:
            if not speaking and handle.done.is_set() and deadline == math.inf:
                deadline = trio.current_time() + self.script.silence_timeout
            with trio.move_on_at(deadline):
                event = await self.inbox.receive()
                if isinstance(event, SpeechBegan):
                    speaking, deadline = True, math.inf
                elif isinstance(event, Utterance):
                    if event.text.strip():
                        return event
                    speaking = False  # noise: the silence timer starts over
                elif isinstance(event, PromptDone):
                    self.settle_turns()
                continue
            return None

    def _classify(self, reply: Utterance, node: Node) -> str:
        """The reply's class: the best allowed match, or ``default``."""
        if reply.confidence < self.min_confidence:
            return DEFAULT_INTENT
        matches = self.classifier.classify(reply.text, self.script.allowed(node))
        return matches[0].intent if matches else DEFAULT_INTENT

    def _say(
        self, variants: tuple[Variant, ...], line: str, node: Node, *, interruptible: bool
    ) -> PromptHandle:
        variant = variants[self._said[line] % len(variants)]
        self._said[line] += 1
        text = string.Formatter().vformat(variant.text, (), _Missing(self.variables))
        handle = self.speaker.say(variant, text, interruptible=interruptible)
        turn = Turn(speaker="robot", text=text, node=node.name, started_at=self.now())
        self.on_turn(turn)
        self._robot_turns.append((turn, handle))
        return handle

    def settle_turns(self) -> None:
        """Give robot lines the times they were really heard and mark those cut off by
        barge-in; call before filing the transcript."""
        for turn, handle in self._robot_turns:
            turn.interrupted = handle.interrupted
            if handle.started_at is not None:
                turn.started_at = handle.started_at
            turn.ended_at = handle.ended_at
        self._robot_turns = [(t, h) for t, h in self._robot_turns if not h.done.is_set()]


class _Missing(dict):
    """Variables for text: an unknown ``{field}`` stays as written rather than failing a call."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
