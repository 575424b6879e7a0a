"""Dialogue test cases: replies in, path and grade out (``waihuctl script test``).

An author keeps a file of cases beside a script (``insurance.cases.toml``
beside ``insurance.toml``)::

    [[case]]
    name = "interested after the price"
    vars = { name = "王先生" }                # default: [variables], other placeholders "测试"
    replies = ["是我", "多少钱", "可以", ""]   # "" = silence (the silence window passes)
    path = ["greeting", "offer", "book"]      # optional: exactly the nodes entered, in order
    end = "bye_booked"                        # optional: the last node
    grade = "A"                               # optional
    tags = ["hot"]                            # optional: each must be among the call's tags
    intents = ["affirm", "kb.price", "affirm"] # optional: class of each non-empty reply
                                              # (the first N when fewer are listed)
    dnc = true                                # optional

After the replies run out the callee hangs up, unless an end node was
reached first. ``load_cases`` reads and checks such a file; ``check_cases``
holds it against the script (nodes and classes it names exist);
``differences`` says what an outcome got wrong.

``play`` is how a case (and ``waihuctl script chat``) talks to a script: the
real ``DialogueEngine`` and classifier, the text speaker, and a clock that
stands still (trio's ``MockClock`` at rate 0) so that typing takes no time in
the script's eyes; a silence moves the clock on by the current node's silence
window at once, so nobody waits for real seconds.

What it is not: the engine or the classifier (a case runs the real ones), or
the command line (``waihu.control.script_tools``).

Error handling: every problem of a cases file is collected and raised as one
``CasesError`` whose ``problems`` each name the file, the case (its number,
counting from 1, and its name) and the key.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import attrs
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from waihu.api import Classifier, Turn, WaihuError, one_of
from waihu.config import ConfigError, structure_strict
from waihu.dialog.chat import TextSpeaker
from waihu.dialog.engine import (
    DialogueEngine,
    Ending,
    EngineEvent,
    SpeechBegan,
    Step,
    Utterance,
)
from waihu.dialog.script import Script

__all__ = [
    "CASE_TABLE",
    "CasesError",
    "DialogueCase",
    "Outcome",
    "Played",
    "check_cases",
    "differences",
    "load_cases",
    "play",
]

CASE_TABLE = "case"  # the array of tables holding the cases: [[case]]
GRADE_LETTERS = "ABCDEF"  # the grades a script can give (waihu-script(5))
PLACEHOLDER_VALUE = "测试"  # what a placeholder with no value of its own is filled with
TYPED_CONFIDENCE = 1.0  # a typed reply is heard exactly
INBOX = 4  # engine events in flight: two per reply
HUNG_UP_BY_CALLEE = "callee"  # who hung up, for grading, when the replies run out


class CasesError(WaihuError):
    """A cases file cannot be used; ``problems`` lists each fault with file, case and key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@attrs.frozen(kw_only=True)
class _CaseTable:
    name: str = ""
    vars: dict[str, str] = attrs.Factory(dict)
    replies: list[str]
    path: list[str] | None = None
    end: str | None = None
    grade: str | None = attrs.field(default=None, validator=one_of(*GRADE_LETTERS))
    tags: list[str] | None = None
    intents: list[str] | None = None
    dnc: bool | None = None


@attrs.frozen(kw_only=True)
class DialogueCase:
    """One case: what the callee says, and what must come of it (None: not checked)."""

    number: int  # counting from 1, in file order
    name: str  # as written; may be empty
    vars: Mapping[str, str]
    replies: tuple[str, ...]  # "" is a silence
    path: tuple[str, ...] | None
    end: str | None
    grade: str | None
    tags: tuple[str, ...] | None
    intents: tuple[str, ...] | None
    dnc: bool | None

    @property
    def label(self) -> str:
        """How messages name the case: ``case 2 (interested after the price)``, or
        ``case 2`` when it has no name."""
        return _label(self.number, self.name)

    def variables(self, defaults: Mapping[str, str], placeholders: Sequence[str]) -> dict[str, str]:
        """The call's variables: the script's ``defaults``, each placeholder without a value
        filled with a stand-in, then the case's own ``vars``."""
        filled = {field: PLACEHOLDER_VALUE for field in placeholders}
        return {**filled, **defaults, **self.vars}


@attrs.frozen(kw_only=True)
class Outcome:
    """What happened when a case ran: what ``differences`` compares with the case."""

    path: tuple[str, ...]  # the nodes entered, in order
    end: str  # the last node
    grade: str
    tags: tuple[str, ...]
    reason: str  # the grade's reason
    intents: tuple[str, ...]  # the class of each non-empty reply, in order
    dnc: bool
    completed: bool  # an end node was reached (else the callee hung up)


def load_cases(path: Path | str) -> list[DialogueCase]:
    """Read a cases file; raise CasesError listing every problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CasesError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise CasesError([f"{path}: not UTF-8 text: {exc.reason}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise CasesError([f"{path}: {exc}"]) from None
    problems = [
        f"{path}: {key}: unknown section (a cases file holds [[{CASE_TABLE}]] tables only)"
        for key in raw
        if key != CASE_TABLE
    ]
    tables = raw.get(CASE_TABLE, [])
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise CasesError([*problems, f"{path}: {CASE_TABLE}: must be an array of tables [[case]]"])
    if not tables and not problems:
        problems.append(f"{path}: no [[{CASE_TABLE}]] tables: nothing to test")
    cases = []
    for number, table in enumerate(tables, start=1):
        name = table.get("name")
        name = name.strip() if isinstance(name, str) else ""
        label = _label(number, name)
        try:
            t = structure_strict(_CaseTable, table, file=path, key=CASE_TABLE)
        except ConfigError as exc:
            problems.extend(_relabel(p, path, label) for p in exc.problems)
            continue
        cases.append(
            DialogueCase(
                number=number,
                name=name,
                vars=dict(t.vars),
                replies=tuple(r.strip() for r in t.replies),
                path=None if t.path is None else tuple(t.path),
                end=t.end,
                grade=t.grade,
                tags=None if t.tags is None else tuple(t.tags),
                intents=None if t.intents is None else tuple(t.intents),
                dnc=t.dnc,
            )
        )
    if problems:
        raise CasesError(problems)
    return cases


def _label(number: int, name: str) -> str:
    return f"case {number} ({name})" if name else f"case {number}"


def _relabel(problem: str, path: Path, label: str) -> str:
    """``FILE: case.replies: msg`` → ``FILE: case 2 (name): replies: msg``."""
    head = f"{path}: {CASE_TABLE}"
    rest = problem.removeprefix(head)
    if rest == problem:
        return problem
    if rest.startswith(": "):  # the problem is with the table itself (an unknown key)
        return f"{path}: {label}{rest}"
    key, _, message = rest.removeprefix(".").partition(": ")
    return f"{path}: {label}: {key}: {message}"


def check_cases(
    cases: Sequence[DialogueCase],
    path: Path | str,
    *,
    nodes: Sequence[str],
    classes: Sequence[str],
) -> list[str]:
    """What the cases in ``path`` expect that the script cannot give: nodes it does not
    have, classes it does not know, more intents than replies. Empty when all is well."""
    problems = []

    def bad(case: DialogueCase, key: str, message: str) -> None:
        problems.append(f"{path}: {case.label}: {key}: {message}")

    for case in cases:
        for index, node in enumerate(case.path or ()):
            if node not in nodes:
                bad(case, f"path[{index}]", f"the script has no node {node!r}")
        if case.end is not None and case.end not in nodes:
            bad(case, "end", f"the script has no node {case.end!r}")
        for index, intent in enumerate(case.intents or ()):
            if intent not in classes:
                bad(case, f"intents[{index}]", f"the script has no class {intent!r}")
        spoken = sum(1 for reply in case.replies if reply)
        if case.intents is not None and len(case.intents) > spoken:
            bad(
                case,
                "intents",
                f"{len(case.intents)} classes for {spoken} non-empty replies",
            )
    return problems


def differences(case: DialogueCase, outcome: Outcome) -> list[str]:
    """What ``outcome`` got wrong against what ``case`` expects, one line each."""
    found = []
    if case.path is not None and tuple(case.path) != outcome.path:
        found.append(f"path: expected {_arrow(case.path)}, got {_arrow(outcome.path)}")
    if case.end is not None and case.end != outcome.end:
        how = "" if outcome.completed else " (the callee hung up there)"
        found.append(f"end: expected {case.end}, got {outcome.end}{how}")
    if case.grade is not None and case.grade != outcome.grade:
        why = f" ({outcome.reason})" if outcome.reason else ""
        found.append(f"grade: expected {case.grade}, got {outcome.grade}{why}")
    if case.tags is not None:
        missing = [tag for tag in case.tags if tag not in outcome.tags]
        if missing:
            got = ", ".join(outcome.tags) or "none"
            found.append(f"tags: missing {', '.join(missing)} (got {got})")
    if case.intents is not None:
        got_intents = outcome.intents[: len(case.intents)]
        for index, (want, got) in enumerate(zip(case.intents, got_intents, strict=False)):
            if want != got:
                found.append(f"intents[{index}]: expected {want}, got {got}")
        if len(got_intents) < len(case.intents):
            found.append(
                f"intents: expected {len(case.intents)} classified replies, "
                f"the call heard {len(got_intents)}"
            )
    if case.dnc is not None and case.dnc != outcome.dnc:
        found.append(f"dnc: expected {_yes(case.dnc)}, got {_yes(outcome.dnc)}")
    return found


def _arrow(nodes: Sequence[str]) -> str:
    return " → ".join(nodes) or "(none)"


def _yes(value: bool) -> str:
    return "true" if value else "false"


# ───────────────────────── playing a conversation ─────────────────────────

NextReply = Callable[[], Awaitable[str | None]]  # the callee's next reply; None: hangs up


@attrs.define
class Played:
    """A conversation played by ``play``: the engine (its ``facts`` and ``verdict``), how
    it ended (None: the callee hung up first), the nodes entered and the steps handled."""

    engine: DialogueEngine
    ending: Ending | None
    nodes: list[str]
    steps: list[Step]

    def outcome(self) -> Outcome:
        """What happened, for ``differences``."""
        intents = tuple(
            s.decision.intent for s in self.steps if s.event == "reply" and s.decision is not None
        )
        if self.ending is not None:
            return Outcome(
                path=tuple(self.nodes),
                end=self.ending.node,
                grade=self.ending.grade,
                tags=tuple(self.ending.tags),
                reason=self.ending.grade_reason,
                intents=intents,
                dnc=self.ending.dnc,
                completed=True,
            )
        verdict = self.engine.verdict(hangup_by=HUNG_UP_BY_CALLEE)
        return Outcome(
            path=tuple(self.nodes),
            end=self.engine.node,
            grade=verdict.grade,
            tags=tuple(verdict.tags),
            reason=verdict.reason,
            intents=intents,
            dnc=self.engine.dnc,  # a dnc action stands though the callee hung up after it
            completed=False,
        )


async def play(
    script: Script,
    classifier: Classifier,
    next_reply: NextReply,
    clock: MockClock,
    *,
    variables: Mapping[str, str],
    echo: Callable[[str], None] | None = None,
    on_step: Callable[[Step], None] | None = None,
    on_silence: Callable[[float], None] | None = None,
) -> Played:
    """Talk to ``script`` until it ends or ``next_reply`` gives None (the callee hangs up).

    ``clock`` must be the run's clock, standing still (rate 0): each reply is sent once
    the engine listens; an empty reply is a silence, the clock jumping by the current
    node's silence window (``on_silence`` is told how long). ``echo`` gets each robot
    line, ``on_step`` each handled event.
    """
    nodes: list[str] = []
    steps: list[Step] = []

    def step(handled: Step) -> None:
        steps.append(handled)
        if on_step is not None:
            on_step(handled)

    send, inbox = trio.open_memory_channel[EngineEvent](INBOX)
    engine = DialogueEngine(
        script,
        classifier,
        TextSpeaker(echo=echo),
        inbox,
        on_turn=_no_turn,
        on_node=nodes.append,
        on_step=step,
        variables=variables,
        now=time.time,
    )
    ending: Ending | None = None
    async with trio.open_nursery() as nursery:

        async def converse() -> None:
            nonlocal ending
            ending = await engine.run()
            nursery.cancel_scope.cancel()  # the conversation is over: stop the callee

        nursery.start_soon(converse)
        while True:
            await wait_all_tasks_blocked()  # the robot has said its piece and listens
            reply = await next_reply()
            if reply is None:
                break
            if not reply:
                window = script.nodes[engine.node].silence_timeout
                if on_silence is not None:
                    on_silence(window)
                clock.jump(window)
                continue
            await send.send(SpeechBegan())
            await send.send(Utterance(reply, TYPED_CONFIDENCE))
        nursery.cancel_scope.cancel()  # out of replies: the callee hung up
    return Played(engine=engine, ending=ending, nodes=nodes, steps=steps)


def _no_turn(_turn: Turn) -> None:
    """Transcript lines are not kept: the steps say more."""
