"""The dialogue engine: one instance drives one conversation through a script.

It is told what happens (``SpeechBegan``, ``Utterance``, ``PromptDone``,
``Dtmf``) through a channel and acts through a ``Speaker`` (say a line, get a
handle that says when it finished or was cut off). It does not know about
audio, SIP or recognisers: the voice pipeline in ``waihu.call`` turns media
and ASR into these events, and a text chat or a dialogue test case feeds typed
lines the same way.

One turn: say the node's line → listen (the silence window opens only once
the last line has finished) → ``classify_reply`` gives the reply its class
(the ``always`` tier first, then the node's order) → the route is applied.
Routes and handlers are ``Action``s: set variables, add tags, mark the number
do-not-call, say a line, then go to a node, hang up, transfer, or resume
(say the node's line again, or just listen). What happens besides routing:

- knowledge base: a ``kb.*`` class the node does not route itself is
  answered, then its ``then`` applies; past its per-call ``limit`` its
  ``on_limit`` applies instead;
- "say that again" (``handlers.repeat``): the robot's last turn is said
  again, the same variants (so the same audio); it counts against nothing;
- unmatched replies take the node's ``short`` or ``long`` route by their
  length, else ``default``; ``handlers.no_match`` counts them and at its
  limit takes its ``then`` instead;
- silence: ``handlers.no_input`` counts it; before its limit the node's
  reprompt is said, at the limit its ``then`` applies;
- the turn cap: the ``turn_cap``-th reply that would route takes
  ``on_turn_cap`` instead;
- ignore policy: while the node's own line is still playing, a reply the
  node's ``ignore`` does not let through is written to the transcript with
  the intent ``ignored`` and otherwise counts for nothing;
- DTMF keys route by ``handlers.dtmf``;
- backchannels: an utterance the media took for a backchannel ("네", "嗯"
  over a line, which went on) is written to the transcript with the intent
  ``backchannel`` and routes nothing;
- false-interruption recovery: a line cut by the callee (``PromptDone`` with
  ``interrupted``) followed by no words — the utterance that cut it comes out
  empty (a long cough, noise), or nothing arrives within ``recovery_ms`` while
  the callee is quiet — is taken up again as the node's
  ``barge_in_recovery`` says: ``resume`` (the rest of the line from where it
  was cut, and the lines of that turn cut with it), ``repeat`` (the line
  again), ``listen`` (nothing);
- a transfer the call could not make: ``transfer_failed`` applies the
  script's ``on_transfer_failed`` at the node that transferred, and the
  conversation goes on.

Everything that happened is kept in ``facts`` (``CallFacts``) so that
``verdict`` can grade the call at any moment — also when the callee hangs up
in the middle of a line and the caller cancels ``run``.

What it is not: the classifier (a ``waihu.api.Classifier`` provider), the
script model and its checks (``waihu.dialog.script``), or the grading rules
themselves (``waihu.dialog.grading``).

Error handling: the engine raises nothing of its own; a script reaching it
has been validated by ``load_script``. Cancelling ``run`` (callee hung up,
daemon draining) is how a call stops early; ``verdict`` still works after it.
"""

from __future__ import annotations

import collections
import math
import string
import unicodedata
from collections.abc import Callable, Mapping
from typing import Protocol

import attrs
import trio

from waihu.api import Classifier, Match, Turn
from waihu.dialog.grading import DEFAULT_FALLBACK_REASON, CallFacts, Verdict, grade
from waihu.dialog.script import DEFAULT_INTENT, Action, Counter, Node, Script, Variant

__all__ = [
    "BACKCHANNEL_INTENT",
    "IGNORED_INTENT",
    "CutLine",
    "Decision",
    "DialogueEngine",
    "Dtmf",
    "Ending",
    "EngineEvent",
    "PromptDone",
    "PromptHandle",
    "Speaker",
    "SpeechBegan",
    "Step",
    "Utterance",
    "Verdict",
    "bare_reply",
    "classify_reply",
]

# Routes a Decision can carry besides the keys of a node's ``on``.
ROUTE_KB = "kb"  # a knowledge-base entry answers
ROUTE_REPEAT = "repeat"  # "say that again": the last turn is replayed
ROUTE_IGNORED = "ignored"  # the node's line was playing and its ignore policy held
ROUTE_SHORT = "short"  # an unmatched short reply ("嗯")
ROUTE_LONG = "long"  # an unmatched long reply
UNMATCHED_ROUTES = frozenset({ROUTE_SHORT, ROUTE_LONG, DEFAULT_INTENT})
IGNORED_INTENT = "ignored"  # the transcript's intent of a reply that was ignored
BACKCHANNEL_INTENT = "backchannel"  # the transcript's intent of a backchannel ("네")
# how long after a line was cut the engine waits for words before taking the line up again
DEFAULT_RECOVERY_MS = 1500
RECOVERY_EVENT = "barge_in_recovery"  # Step.event of a recovery

# Why a conversation ended (Ending.reason).
REASON_END = "end"  # an end node was reached and said
REASON_SILENCE = "silence"  # handlers.no_input reached its limit
REASON_NO_MATCH = "no_match"  # handlers.no_match reached its limit
REASON_TURN_CAP = "turn_cap"  # the turn cap was reached
REASON_HANGUP = "hangup"  # an action hung up
REASON_TRANSFER = "transfer"  # handed to a human
REASON_TRANSFER_FAILED = "transfer_failed"  # the transfer failed and the fallback hung up

HANGUP_BY_ROBOT = "robot"  # CallFacts.hangup_by when the script ended the call


# ───────────────────────── what the engine is told ─────────────────────────


@attrs.frozen
class SpeechBegan:
    """The callee started speaking (stops the silence timer)."""


@attrs.frozen
class Utterance:
    """The callee finished a phrase; ``text`` is empty when nothing was recognised.

    ``started_at``/``ended_at`` say when the callee spoke (any clock, the same
    for both); their difference adds to the call's talk time. ``backchannel``:
    the media took it for a backchannel over a line that went on ("네", "嗯"):
    it is written down, and routes nothing.
    """

    text: str
    confidence: float = 1.0
    started_at: float | None = None
    ended_at: float | None = None
    backchannel: bool = False


@attrs.frozen
class PromptDone:
    """A line the robot was saying has ended: finished, or cut off by the callee
    (``interrupted``) after ``played_ms`` of it."""

    interrupted: bool = False
    played_ms: int = 0


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


class ResumingSpeaker(Speaker, Protocol):
    """A speaker that can also say the rest of a line (the voice's ``VoiceSpeaker``);
    a speaker without ``say_from`` says a line to be resumed again whole."""

    def say_from(
        self, variant: Variant, text: str, *, interruptible: bool, from_ms: int
    ) -> PromptHandle:
        """Queue ``variant`` starting ``from_ms`` into its audio."""
        ...


@attrs.frozen
class CutLine:
    """Where the callee cut the robot's line: ``played_ms`` of its audio were heard,
    about ``heard_chars`` characters of ``text`` (estimated from the share played)."""

    node: str
    text: str
    played_ms: int
    heard_chars: int | None


# ───────────────────────── what the engine tells ─────────────────────────


@attrs.frozen
class Decision:
    """What a reply was taken for at a node.

    ``intent`` is the class ("affirm", "kb.price", or "default" when nothing
    matched); ``route`` the key of ``node.on`` that applies ("affirm",
    "short", "default"…) or one of "kb", "repeat", "ignored";
    ``match`` the classifier's winning candidate (None when nothing matched or
    the recogniser's confidence was below the floor).
    """

    node: str
    text: str
    intent: str
    route: str
    match: Match | None


@attrs.frozen
class Step:
    """One handled event, for ``waihuctl script chat``.

    ``event`` is "reply", "no_input", "dtmf:<key>" or "transfer_failed"; ``decision`` the reply's
    (None for the others); ``chain`` what was stepped through ("kb.price",
    "resume:repeat", "goto:book", "set:stage", "tags:hot", "hangup"…);
    ``node`` where the conversation is afterwards; ``line`` the text said in
    answer (several lines joined by a space; empty when nothing was said).
    """

    decision: Decision | None
    event: str
    chain: tuple[str, ...]
    node: str
    line: str


@attrs.frozen
class Ending:
    """How a conversation ended.

    ``reason``: "end" (an end node), "silence", "no_match", "turn_cap" (a
    handler or the cap led here), "hangup" (an action hung up), "transfer"
    (hand the call to ``transfer``), "transfer_failed" (the fallback after a
    failed transfer hung up). ``grade``, ``tags`` and ``grade_reason``
    are the verdict; ``dnc`` asks for the number on the do-not-call list.
    """

    node: str
    grade: str
    tags: tuple[str, ...]
    reason: str
    dnc: bool = False
    transfer: str | None = None
    grade_reason: str = ""


# ───────────────────────── classification ─────────────────────────


def bare_reply(text: str) -> str:
    """``text`` without punctuation and spaces, width-folded and lower-cased: what the
    short/long split measures and what grading's ``said`` words are looked for in."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in folded if unicodedata.category(c)[0] not in "PZC" and not c.isspace())


def classify_reply(
    script: Script,
    classifier: Classifier,
    node: Node,
    text: str,
    confidence: float = 1.0,
    min_confidence: float = 0.0,
) -> Decision:
    """What ``text``, said at ``node``, is taken for: the one place a reply gets its class.

    The classifier sees ``script.allowed(node)`` (always tier first); its first
    candidate wins and a node-scoped name ("offer/affirm") counts as its class.
    A recognition below ``min_confidence`` counts as unmatched (exactly at it
    is trusted). A class the node routes on takes that route (the always tier
    included: the loader gives it a route at every listening node); otherwise
    "say that again" and knowledge-base entries take theirs; anything else is
    unmatched and takes "short" or "long" (by the length of the bare reply
    against ``script.short_reply``) when the node has it, else "default".
    """
    match = None
    if confidence >= min_confidence:
        matches = classifier.classify(text, script.allowed(node))
        match = matches[0] if matches else None
    intent = script.class_of(match.intent) if match is not None else DEFAULT_INTENT
    if intent != DEFAULT_INTENT and intent in node.on:
        route = intent
    elif intent == script.handlers.repeat:
        route = ROUTE_REPEAT
    elif intent in script.kb:
        route = ROUTE_KB
    else:
        route = _unmatched_route(script, node, text)
    return Decision(node=node.name, text=text, intent=intent, route=route, match=match)


def _unmatched_route(script: Script, node: Node, text: str) -> str:
    route = ROUTE_SHORT if len(bare_reply(text)) <= script.short_reply else ROUTE_LONG
    return route if route in node.on else DEFAULT_INTENT


# ───────────────────────── the engine ─────────────────────────


@attrs.define
class _Said:
    """A line the engine said: what ``say that again`` replays and the waits look at."""

    variant: Variant
    text: str
    interruptible: bool
    handle: PromptHandle
    node_line: bool  # the node's own line (say/reprompt): what the ignore policy guards


def _nothing(_: object) -> None:
    """The default of the optional callbacks."""


class DialogueEngine:
    """Runs one conversation.

    ``on_turn`` is called for every transcript line, ``on_node`` on entering
    a node, ``on_step`` once per handled event. ``variables`` are the
    contact's (a non-empty value wins over the script's ``[variables]``
    default); ``min_confidence`` the recogniser confidence below which a reply
    counts as unmatched; ``now`` the wall clock for transcript times;
    ``recovery_ms`` how long after a cut line words are awaited before the line is
    taken up again (module docstring). ``last_cut`` says where the latest cut was.
    """

    def __init__(
        self,
        script: Script,
        classifier: Classifier,
        speaker: Speaker,
        inbox: trio.MemoryReceiveChannel[EngineEvent],
        *,
        on_turn: Callable[[Turn], None],
        on_node: Callable[[str], None] = _nothing,
        on_step: Callable[[Step], None] = _nothing,
        variables: Mapping[str, str] | None = None,
        min_confidence: float = 0.0,
        now: Callable[[], float],
        recovery_ms: int = DEFAULT_RECOVERY_MS,
    ) -> None:
        self.script = script
        self.classifier = classifier
        self.speaker = speaker
        self.inbox = inbox
        self.on_turn = on_turn
        self.on_node = on_node
        self.on_step = on_step
        contact = {k: v for k, v in (variables or {}).items() if v}
        self.variables: dict[str, str] = {**script.variables, **contact}
        self.min_confidence = min_confidence
        self.now = now
        self.node = script.start  # the current node's name (the voice pipeline's phrase hints)
        self.facts = CallFacts()
        self._current = script.nodes[script.start]
        self._rotation: dict[tuple[Variant, ...], int] = {}  # next variant of each line
        self._last: _Said | None = None  # the latest line said
        self._last_turn: list[_Said] = []  # the lines of the robot's latest turn
        self._turn_lines: list[_Said] = []  # lines said while handling the current event
        self._unfinished: list[_Said] = []  # lines said that may still be playing
        self._chain: list[str] = []  # what the current event stepped through
        self._tags: dict[str, None] = {}  # node and action tags, in order, once each
        self._dnc = False
        self._end_node: Node | None = None
        self._no_input = 0  # handlers.no_input's count
        self._no_match = 0  # handlers.no_match's count
        self._routed = 0  # replies that routed, for the turn cap
        self._kb_asks: collections.Counter[str] = collections.Counter()
        self._robot_turns: list[tuple[Turn, PromptHandle]] = []
        self.recovery_ms = recovery_ms
        self.last_cut: CutLine | None = None
        self._cut_lines: list[_Said] = []  # the lines a cut awaits words for; empty: none
        self._recover_at = math.inf  # when the cut lines are taken up if nothing was said

    # ── the conversation ──

    async def run(self) -> Ending:
        """Drive the script from its start node until the call ends; how it ended."""
        ending = await self._enter(self.script.nodes[self.script.start], cause=None)
        self._last_turn = self._turn_lines  # the greeting: what a first "what?" replays
        return await self._converse(ending)

    async def transfer_failed(self) -> Ending:
        """Go on after a transfer the call could not make (agent busy, no answer…).

        ``run`` (or an earlier ``transfer_failed``) returned an ``Ending`` with
        ``transfer`` set, and the person could not take the call: the script's
        ``on_transfer_failed`` is applied at the node that transferred (without
        one, the robot hangs up), and the conversation runs on until it ends
        again; how it ended. What the callee said while the agent was being
        rung is dropped: it answered nothing the robot asked.
        """
        self._drop_pending()
        then = self.script.on_transfer_failed or Action(hangup=True)
        if then.goto is not None:  # the conversation goes on: the end reached is no end
            self._end_node = None
            self.facts.completed = False
        self._chain, self._turn_lines = [], []
        self._chain.append(REASON_TRANSFER_FAILED)
        ending = await self._apply(then, self._current, cause=REASON_TRANSFER_FAILED)
        if self._turn_lines:
            self._last_turn = self._turn_lines
        line = " ".join(s.text for s in self._turn_lines)
        self.on_step(Step(None, REASON_TRANSFER_FAILED, tuple(self._chain), self.node, line))
        return await self._converse(ending)

    def _drop_pending(self) -> None:
        """Throw away the events that came while nobody listened."""
        while True:
            try:
                self.inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def _converse(self, ending: Ending | None) -> Ending:
        """Take events until the conversation ends (``ending`` is not None)."""
        while ending is None:
            event = await self._next_input()
            self._chain, self._turn_lines = [], []
            decision = None
            if event is None:
                name = "no_input"
                ending = await self._on_silence()
            elif isinstance(event, Dtmf):
                name = f"dtmf:{event.digit}"
                ending = await self._on_dtmf(event.digit)
            else:
                name = "reply"
                decision, ending = await self._on_reply(event)
            if self._turn_lines:
                self._last_turn = self._turn_lines
            line = " ".join(s.text for s in self._turn_lines)
            self.on_step(Step(decision, name, tuple(self._chain), self.node, line))
        return ending

    def verdict(self, *, hangup_by: str | None = None) -> Verdict:
        """The grade, tags and reason of what has happened so far; callable at any time
        (``hangup_by`` "callee" when the callee hung up, "robot" when the script did)."""
        facts = attrs.evolve(self.facts, hangup_by=hangup_by)
        end = self._end_node
        if end is not None and end.grade:
            fallback, why = end.grade, f"no grading rule matched; grade of node {end.name}"
        else:
            fallback, why = self.script.default_grade, DEFAULT_FALLBACK_REASON
        return grade(
            self.script.grading,
            facts,
            fallback=fallback,
            fallback_tags=tuple(self._tags),
            fallback_reason=why,
        )

    @property
    def dnc(self) -> bool:
        """Whether the callee's number goes on the do-not-call list: a ``dnc`` action ran
        or a ``dnc`` end node was entered. Read it also when the callee hung up before the
        engine ended (the closing line cut short): the request stands."""
        return self._dnc

    def settle_turns(self) -> None:
        """Give robot lines the times they were really heard and mark those cut off by
        barge-in; call before filing the transcript."""
        for turn, handle in self._robot_turns:
            turn.interrupted = handle.interrupted
            if handle.interrupted:
                turn.played_ms = getattr(handle, "played_ms", None)
            if handle.started_at is not None:
                turn.started_at = handle.started_at
            turn.ended_at = handle.ended_at
        self._robot_turns = [(t, h) for t, h in self._robot_turns if not h.done.is_set()]

    # ── events ──

    async def _on_reply(self, reply: Utterance) -> tuple[Decision, Ending | None]:
        node = self._current
        decision = classify_reply(
            self.script, self.classifier, node, reply.text, reply.confidence, self.min_confidence
        )
        if reply.started_at is not None and reply.ended_at is not None:
            self.facts.talk_seconds += max(0.0, reply.ended_at - reply.started_at)
        if self._ignored(node, decision):
            self._callee_turn(reply, node, IGNORED_INTENT)
            return attrs.evolve(decision, route=ROUTE_IGNORED), None
        self._callee_turn(reply, node, decision.intent)
        self.facts.turns += 1
        self.facts.said.append((node.name, bare_reply(reply.text)))
        if self.script.handlers.no_input.counting == "consecutive":
            self._no_input = 0  # the callee is there
        if decision.route == ROUTE_REPEAT:
            self._chain.append(ROUTE_REPEAT)
            self._replay()
            return decision, None

        if decision.intent != DEFAULT_INTENT:
            self.facts.heard[decision.intent] += 1
        if decision.intent in self.script.refusals:
            self.facts.refusals += 1
        self._routed += 1
        cap = self.script.turn_cap
        if cap is not None and self._routed >= cap:
            self._chain.append(REASON_TURN_CAP)
            then = self.script.on_turn_cap or Action(hangup=True)
            return decision, await self._apply(then, node, cause=REASON_TURN_CAP)

        no_match = self.script.handlers.no_match
        if decision.route in UNMATCHED_ROUTES:
            self.facts.no_matches += 1
            self._no_match += 1
            if no_match is not None and self._no_match >= no_match.limit:
                self._no_match = 0  # the handler has acted: its count starts over
                self._chain.append("no_match:limit")
                return decision, await self._apply(no_match.then, node, cause=REASON_NO_MATCH)
        elif no_match is not None and no_match.counting == "consecutive":
            self._no_match = 0

        if decision.route == ROUTE_KB:
            return decision, await self._answer(decision.intent, node)
        self._chain.append(decision.route)
        return decision, await self._apply(node.on[decision.route], node, cause=None)

    async def _on_silence(self) -> Ending | None:
        node = self._current
        self.facts.silences += 1
        handler: Counter = self.script.handlers.no_input
        self._no_input += 1
        if self._no_input >= handler.limit:
            self._no_input = 0  # the handler has acted: its count starts over
            self._chain.append("no_input:limit")
            return await self._apply(handler.then, node, cause=REASON_SILENCE)
        self._chain.append("reprompt")
        self._say(node.reprompt or node.say, node, node.barge_in, node_line=True)
        return None

    async def _on_dtmf(self, digit: str) -> Ending | None:
        if self.script.handlers.no_input.counting == "consecutive":
            self._no_input = 0  # a key pressed: the callee is there
        action = self.script.handlers.dtmf.get(digit)
        if action is None:
            return None  # a key the script gives no meaning
        return await self._apply(action, self._current, cause=None)

    async def _answer(self, intent: str, node: Node) -> Ending | None:
        """A knowledge-base question: the answer and its ``then``, or past the limit
        ``on_limit`` (absent: answer anyway)."""
        entry = self.script.kb[intent]
        self._kb_asks[intent] += 1
        self._chain.append(intent)
        if (
            entry.limit is not None
            and entry.on_limit is not None
            and self._kb_asks[intent] > entry.limit
        ):
            self._chain.append("kb_limit")
            return await self._apply(entry.on_limit, node, cause=None)
        self._say(entry.say, node, interruptible=True)  # an answer may always be cut short
        return await self._apply(entry.then, node, cause=None)

    def _ignored(self, node: Node, decision: Decision) -> bool:
        """Whether the node's ignore policy swallows this reply: only while the node's
        own line is still playing."""
        if node.ignore == "none" or not self._node_line_playing():
            return False
        if node.ignore == "all":
            return True
        keep = self.script.refusals if node.ignore == "refusal" else node.ignore
        return decision.intent not in keep

    def _node_line_playing(self) -> bool:
        last = self._last
        return last is not None and last.node_line and not last.handle.done.is_set()

    # ── actions ──

    async def _apply(self, action: Action, node: Node, cause: str | None) -> Ending | None:
        """Carry out ``action`` at ``node``: set, tags, dnc, say, then its one move.

        ``cause`` names the handler that chose it ("silence", "no_match",
        "turn_cap"), which becomes the ending's reason if the call ends.
        """
        for name, value in action.set.items():
            self.variables[name] = value
            self._chain.append(f"set:{name}")
        if action.tags:
            self._tags.update(dict.fromkeys(action.tags))
            self._chain.append("tags:" + ",".join(action.tags))
        if action.dnc:
            self._dnc = True
            self._chain.append("dnc")
        ends = action.hangup or action.transfer is not None
        if action.say:
            # a closing line is heard to its end; otherwise it is cut as the node's would be
            self._say(action.say, node, node.barge_in and not ends)
        if action.goto is not None:
            self._chain.append(f"goto:{action.goto}")
            return await self._enter(self.script.nodes[action.goto], cause)
        if action.hangup:
            self._chain.append("hangup")
            return await self._finish(node, cause or REASON_HANGUP, transfer=None)
        if action.transfer is not None:
            self._chain.append(f"transfer:{action.transfer}")
            return await self._finish(node, REASON_TRANSFER, transfer=action.transfer)
        if action.resume == "repeat":
            self._chain.append("resume:repeat")
            self._say(node.say, node, node.barge_in, node_line=True)
        elif action.resume == "listen":
            self._chain.append("resume:listen")
        return None

    async def _enter(self, node: Node, cause: str | None) -> Ending | None:
        """Go to ``node`` and say its line; an end node's line is said to its end and
        the call ends there."""
        # a line that may not be cut (a disclosure) is heard before the next node starts
        for said in self._unfinished:
            if not said.interruptible:
                await said.handle.done.wait()
        self._current = node
        self.node = node.name
        self.on_node(node.name)
        self.facts.nodes.append(node.name)
        self.facts.last_node = node.name
        handlers = self.script.handlers
        if handlers.no_input.scope == "node":
            self._no_input = 0
        if handlers.no_match is not None and handlers.no_match.scope == "node":
            self._no_match = 0
        self.variables.update(node.set)
        self._tags.update(dict.fromkeys(node.tags))
        self._say(node.say, node, node.barge_in, node_line=True)
        if not node.end:
            return None
        self._end_node = node
        self._dnc = self._dnc or node.dnc
        await self._lines_done()
        self.facts.completed = True
        reason = REASON_TRANSFER if node.transfer is not None else cause or REASON_END
        return await self._finish(node, reason, transfer=node.transfer)

    async def _finish(self, node: Node, reason: str, *, transfer: str | None) -> Ending:
        """The call ends here once every line has been heard."""
        await self._lines_done()
        hangup_by = None if transfer is not None else HANGUP_BY_ROBOT
        self.facts.hangup_by = hangup_by
        verdict = self.verdict(hangup_by=hangup_by)
        return Ending(
            node=node.name,
            grade=verdict.grade,
            tags=verdict.tags,
            reason=reason,
            dnc=self._dnc,
            transfer=transfer,
            grade_reason=verdict.reason,
        )

    # ── speaking ──

    def _say(
        self,
        variants: tuple[Variant, ...],
        node: Node,
        interruptible: bool,
        *,
        node_line: bool = False,
    ) -> None:
        """Say the next of ``variants``: round robin, so no variant follows itself."""
        turn = self._rotation.get(variants, 0)
        self._rotation[variants] = turn + 1
        variant = variants[turn % len(variants)]
        text = string.Formatter().vformat(variant.text, (), _Missing(self.variables))
        self._speak(variant, text, node, interruptible, node_line)

    def _replay(self) -> None:
        """Say the robot's latest turn again: the same variants and text."""
        for said in self._last_turn:
            self._speak(said.variant, said.text, self._current, said.interruptible, said.node_line)

    def _speak(
        self, variant: Variant, text: str, node: Node, interruptible: bool, node_line: bool
    ) -> None:
        handle = self.speaker.say(variant, text, interruptible=interruptible)
        self._said(variant, text, node, interruptible, node_line, handle)

    def _said(
        self,
        variant: Variant,
        text: str,
        node: Node,
        interruptible: bool,
        node_line: bool,
        handle: PromptHandle,
    ) -> None:
        said = _Said(variant, text, interruptible, handle, node_line)
        self._last = said
        self._turn_lines.append(said)
        self._unfinished = [s for s in self._unfinished if not s.handle.done.is_set()]
        self._unfinished.append(said)
        turn = Turn(speaker="robot", text=text, node=node.name, started_at=self.now())
        self.on_turn(turn)
        self._robot_turns.append((turn, handle))

    def _callee_turn(self, reply: Utterance, node: Node, intent: str) -> None:
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

    async def _lines_done(self) -> None:
        if self._last is not None:
            await self._last.handle.done.wait()  # lines are said in turn: the last ends last

    # ── listening ──

    async def _next_input(self) -> Utterance | Dtmf | None:
        """The next reply (a non-empty utterance) or key, or None when the callee stayed
        silent for the node's silence window after the last line ended. Backchannels are
        written down here, and cut lines taken up again (``_recover``)."""
        speaking = False
        deadline = math.inf
        while True:
            playing = None
            if not speaking and deadline == math.inf:
                if self._last is not None and not self._last.handle.done.is_set():
                    playing = self._last.handle.done
                else:
                    deadline = trio.current_time() + self._current.silence_timeout
            recover_at = math.inf if speaking else self._recover_at
            with trio.move_on_at(min(deadline, recover_at)) as waited:
                event = await self._receive(playing)
                if isinstance(event, SpeechBegan):
                    speaking, deadline = True, math.inf
                elif isinstance(event, Utterance):
                    if event.text.strip() and not event.backchannel:
                        self._cut_lines, self._recover_at = [], math.inf  # words came
                        return event
                    if event.text.strip():
                        self._callee_turn(event, self._current, BACKCHANNEL_INTENT)
                    speaking = False  # noise: the silence window starts over
                    deadline = math.inf
                    if self._cut_lines and not event.backchannel:
                        self._recover()  # what cut the line held no words
                elif isinstance(event, Dtmf):
                    return event
                elif isinstance(event, PromptDone):
                    self.settle_turns()
                    if event.interrupted:
                        self._line_cut()
                continue
            if waited.cancelled_caught and trio.current_time() >= recover_at:
                self._recover()  # no words came within recovery_ms
                deadline = math.inf
                continue
            return None

    def _line_cut(self) -> None:
        """A line was cut by the callee: await words for it (``recovery_ms``)."""
        if self._cut_lines:
            return  # the other lines stopped by the same cut
        # the lines said since the last were heard out: those the cut stopped are done now
        cut = [s for s in self._unfinished if s.handle.done.is_set() and s.handle.interrupted]
        if not cut:
            return
        self._cut_lines = cut
        self._recover_at = trio.current_time() + self.recovery_ms / 1000
        first = cut[0]
        played = int(getattr(first.handle, "played_ms", 0) or 0)
        total = getattr(first.handle, "duration_ms", None)
        heard = None
        if total:
            heard = min(len(first.text), round(len(first.text) * played / total))
        self.last_cut = CutLine(self._current.name, first.text, played, heard)

    def _recover(self) -> None:
        """Take up the cut lines again as the node's ``barge_in_recovery`` says."""
        cut, self._cut_lines, self._recover_at = self._cut_lines, [], math.inf
        node = self._current
        how = node.barge_in_recovery
        chain = [f"{RECOVERY_EVENT}:{how}"]
        said: list[_Said] = []
        if how != "listen":
            self._turn_lines = []
            played = self.last_cut.played_ms if self.last_cut is not None else 0
            resume_from = getattr(self.speaker, "say_from", None)
            for k, line in enumerate(cut):
                if k == 0 and how == "resume" and played > 0 and resume_from is not None:
                    handle = resume_from(
                        line.variant, line.text, interruptible=line.interruptible, from_ms=played
                    )
                    self._said(
                        line.variant, line.text, node, line.interruptible, line.node_line, handle
                    )
                else:
                    self._speak(line.variant, line.text, node, line.interruptible, line.node_line)
            said = self._turn_lines
            self._last_turn = said
        line_text = " ".join(s.text for s in said)
        self.on_step(Step(None, RECOVERY_EVENT, tuple(chain), node.name, line_text))

    async def _receive(self, playing: trio.Event | None) -> EngineEvent | None:
        """The next event; None when ``playing`` (a line's end) came first."""
        if playing is None:
            return await self.inbox.receive()
        received: EngineEvent | None = None
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                nonlocal received
                received = await self.inbox.receive()
                nursery.cancel_scope.cancel()

            async def line_ended() -> None:
                await playing.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(receive)
            nursery.start_soon(line_ended)
        return received


class _Missing(dict):
    """Variables for text: an unknown ``{field}`` stays as written rather than failing a call."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
