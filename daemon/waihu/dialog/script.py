"""The script (话术): its TOML format, model and validator.

A script is one TOML file (format v2; every v1 script still loads) — the full
reference with a complete example is ``waihu-script(5)``::

    [script]
    start = "greeting"
    include = ["common/zh-intents.toml"]     # [intents.*] / [kb.*] shared by many scripts
    always = ["dnc"]                         # classes that win whatever the order

    [handlers.no_input]
    limit = 3
    then = "bye_silence"

    [intents.affirm]
    keywords = ["好的", { word = "感兴趣", negated = "deny" }]
    patterns = ["(明天|下午).{0,6}(打|联系)"]

    [nodes.greeting]
    say = [{ text = "您好{name}，…", recording = "prompts/greeting.wav" }]
    on = { affirm = "offer", dnc = { say = [{ text = "好的" }], dnc = true, hangup = true },
           default = "repeat" }

    [kb.price]
    keywords = ["多少钱"]
    say = [{ text = "每月十元起。" }]
    then = "repeat"

    [[grading]]
    grade = "A"
    reason = "agreed to a visit"
    when = { reached = ["book_ok"] }

``load_script`` parses, merges the included files and validates; every problem
names the file, the line when it is known, and the key
(``demo.toml:31: nodes.greeting.on.afirm: unknown class 'afirm'``), and all are
reported at once. The result is a frozen ``Script`` the dialogue engine, the
classifier (``Script.intents``), the operator tools and the grader read.

Routes, handler outcomes, knowledge-base follow-ups, the turn-cap outcome and
DTMF keys are all ``Action``s: a plain string is ``goto`` (``"repeat"`` and
``"listen"`` are ``resume``); a table may also set variables, add tags, put
the number on the do-not-call list and say a line first. ``[handlers.on]``
holds script-wide routes by class, taken at every listening node that has no
route of its own for that class (a class of the ``always`` tier must have a
route at every listening node, from either place); the loader copies them
into each such node's ``on``, so the engine reads one table.

What it is not: the engine (``waihu.dialog.engine``), the classifier
(``waihu.api.Classifier``; this module only hands it ``Intent``s and the
ordered names it may answer with), the grader (``waihu.dialog.grading``) or
the operator's warnings (``waihu.dialog.lint``). It loads no audio: the daemon
decodes recordings once per script.

Error handling: ``load_script`` raises ``ScriptError`` whose ``problems`` list
every fault, formatted ``FILE:LINE: KEY: MESSAGE`` (``FILE: KEY: MESSAGE``
when no line is known); a problem found in an included file names that file.
"""

from __future__ import annotations

import hashlib
import re
import string
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs

from waihu.api import Intent, Keyword, WaihuError, at_least, one_of, positive
from waihu.config import ConfigError, structure_strict

__all__ = [
    "DEFAULT_INTENT",
    "GRADES",
    "KB_CLASS",
    "KB_PREFIX",
    "Action",
    "Condition",
    "Counter",
    "GradeRule",
    "Handlers",
    "KbEntry",
    "Node",
    "Script",
    "ScriptError",
    "Variant",
    "load_script",
]

KB_CLASS = "kb"  # the priority entry that stands for every knowledge-base entry
DEFAULT_INTENT = "default"  # the class of a reply that matched nothing
KB_PREFIX = "kb."  # intents made from knowledge-base entries are named "kb.<entry>"
SCOPE_SEPARATOR = "/"  # node-scoped extras of a class are fitted as "<node>/<class>"
GRADES = ("A", "B", "C", "D", "E", "F")
RESUMES = ("repeat", "listen")  # route words that stay at the node instead of going to one
# how a line cut by the callee with no words after it is taken up again (node key
# barge_in_recovery, script-wide default in [script]): the rest of it, all of it, or nothing
BARGE_IN_RECOVERIES = ("resume", "repeat", "listen")
DEFAULT_BARGE_IN_RECOVERY = "resume"
UNMATCHED_ROUTES = (DEFAULT_INTENT, "short", "long")  # route keys for replies matching nothing
DTMF_KEYS = frozenset("0123456789*#ABCD")  # RFC 4733 events a phone can send
SECTIONS = ("script", "variables", "handlers", "intents", "nodes", "kb", "grading")
INCLUDE_SECTIONS = ("intents", "kb")  # what an included file may hold
LIST_KEYS = ("keywords", "patterns", "exclusions", "examples")  # merged across includes
# v1's defaults, kept so that v1 scripts behave as before
V1_PRIORITY = (KB_CLASS, "affirm", "deny")
V1_SILENCE_RETRIES = 1
DEFAULT_NEGATION = (("affirm", "deny"), ("deny", "affirm"))
DEFAULT_REFUSALS = ("deny", "dnc", "complaint")
DEFAULT_REPEAT_CLASS = "repeat"


class ScriptError(WaihuError):
    """A script cannot be used; ``problems`` lists each fault with file, line and key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ───────────────────────────── the model ─────────────────────────────


@attrs.frozen(kw_only=True)
class Variant:
    """One way of saying a line: its text (for transcripts and TTS) and maybe a recording.

    A recording plays where there is one; without one the line is spoken by the
    call's TTS provider (``waihu.dialog.library``).
    """

    text: str
    recording: str | None = None


@attrs.frozen(kw_only=True)
class Action:
    """What happens: ``set`` variables, add ``tags``, ``dnc``, ``say`` a line, then exactly
    one of ``goto`` a node, ``resume`` the node (``repeat`` its line / ``listen`` again),
    ``hangup`` or ``transfer`` to a human."""

    goto: str | None = None
    resume: Literal["repeat", "listen"] | None = None
    hangup: bool = False
    transfer: str | None = None
    say: tuple[Variant, ...] = ()
    dnc: bool = False
    set: Mapping[str, str] = attrs.field(factory=dict)
    tags: tuple[str, ...] = ()

    @property
    def ends(self) -> bool:
        """Whether the action ends the call (hang-up or transfer)."""
        return self.hangup or self.transfer is not None


@attrs.frozen(kw_only=True)
class Counter:
    """A handler counting no-inputs or unmatched replies: the ``limit``-th takes ``then``.

    ``counting``: "consecutive" (any routed reply resets it) or "total";
    ``scope``: "node" (reset on entering a node) or "call".
    """

    limit: int
    counting: Literal["consecutive", "total"]
    scope: Literal["node", "call"]
    then: Action


@attrs.frozen(kw_only=True)
class Handlers:
    """Script-wide handlers: silence, unmatched replies, "say that again", keys, and
    script-wide routes by class (``on``, already copied into every listening node's ``on``)."""

    no_input: Counter
    no_match: Counter | None = None
    repeat: str | None = None  # the class that replays the last line
    dtmf: Mapping[str, Action] = attrs.field(factory=dict)
    on: Mapping[str, Action] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Node:
    """A step of the main flow: what the robot says, then where each reply leads."""

    name: str
    say: tuple[Variant, ...]
    reprompt: tuple[Variant, ...]  # said on no input; the node's ``say`` when not given
    on: Mapping[str, Action]  # route key (class, "default", "short", "long") → action
    priority: tuple[str, ...]  # classification order here; "kb" stands for every kb entry
    end: bool = False
    grade: str | None = None
    tags: tuple[str, ...] = ()
    dnc: bool = False  # ending here adds the number to the do-not-call list
    transfer: str | None = None  # an end node that transfers after its line
    barge_in: bool = True  # may the callee cut this node's line
    ignore: Literal["none", "all", "refusal"] | tuple[str, ...] = "none"
    silence_timeout: float = 6.0
    phrases: tuple[str, ...] = ()  # what the recogniser should expect after this node
    set: Mapping[str, str] = attrs.field(factory=dict)  # variables set on entering
    # a line of this node cut by the callee, then no words: "resume" | "repeat" | "listen"
    barge_in_recovery: Literal["resume", "repeat", "listen"] = DEFAULT_BARGE_IN_RECOVERY


@attrs.frozen(kw_only=True)
class KbEntry:
    """A knowledge-base answer, askable at any listening node."""

    name: str
    intent: str  # "kb.<name>"
    say: tuple[Variant, ...]
    then: Action
    limit: int | None = None  # answers per call; None: unlimited
    on_limit: Action | None = None  # the (limit+1)-th ask; None: answer anyway


@attrs.frozen(kw_only=True)
class Condition:
    """The ``when`` of a grading rule: every condition given must hold (none: always)."""

    reached: tuple[str, ...] = ()  # all of these nodes were entered
    reached_any: tuple[str, ...] = ()  # at least one of these was entered
    not_reached: tuple[str, ...] = ()  # none of these was entered
    ended_at: tuple[str, ...] = ()  # the last node is one of these
    heard: Mapping[str, int] = attrs.field(factory=dict)  # class → heard at least N times
    not_heard: tuple[str, ...] = ()  # classes never heard
    refusals: int | None = attrs.field(default=None, validator=at_least(0))
    silences: int | None = attrs.field(default=None, validator=at_least(0))
    no_matches: int | None = attrs.field(default=None, validator=at_least(0))
    min_turns: int | None = attrs.field(default=None, validator=at_least(0))
    max_turns: int | None = attrs.field(default=None, validator=at_least(0))
    min_talk_seconds: float | None = attrs.field(default=None, validator=at_least(0))
    said: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)  # node → words
    hangup_by: str | None = attrs.field(default=None, validator=one_of("callee", "robot"))
    completed: bool | None = None  # an end node finished its line


@attrs.frozen(kw_only=True)
class GradeRule:
    """One ``[[grading]]`` rule; the first matching rule with a grade gives the grade."""

    grade: str | None = attrs.field(default=None, validator=one_of(*GRADES))
    tags: tuple[str, ...] = ()
    reason: str = ""
    when: Condition = attrs.field(factory=Condition)


@attrs.frozen(kw_only=True)
class Script:
    """A validated script, ready for the dialogue engine."""

    name: str
    path: Path
    description: str
    language: str
    start: str
    priority: tuple[str, ...]  # the script-wide order (nodes without their own use it)
    always: tuple[str, ...]  # the top tier, in this order
    refusals: tuple[str, ...]  # classes that count as a refusal
    silence_timeout: float
    short_reply: int  # an unmatched reply of at most this many characters is "short"
    turn_cap: int | None
    on_turn_cap: Action | None
    default_grade: str
    # where the dialogue goes when a transfer to a person fails (busy, no answer…);
    # None: the robot hangs up
    on_transfer_failed: Action | None = None
    handlers: Handlers
    variables: Mapping[str, str]  # defaults for {placeholders}
    grading: tuple[GradeRule, ...]
    nodes: Mapping[str, Node]
    kb: Mapping[str, KbEntry]  # by intent name ("kb.price")
    intents: tuple[Intent, ...]  # classes, kb entries and node-scoped extras, for the classifier
    content_hash: str = ""  # sha256 of the file (and its includes): which version spoke
    sources: Mapping[str, int] = attrs.field(factory=dict)  # dotted key → line in the file

    @property
    def placeholders(self) -> frozenset[str]:
        """Every ``{field}`` the script's lines fill in from a contact's variables.

        A campaign refuses contacts with an empty value for one of these (unless
        ``[variables]`` gives a default), so no callee ever hears a placeholder.
        """
        return frozenset(
            field.split(".")[0].split("[")[0]
            for _key, v in self.variants()
            for _text, field, _spec, _conv in string.Formatter().parse(v.text)
            if field
        )

    def variants(self) -> list[tuple[str, Variant]]:
        """Every line the script can say, with its key (``nodes.offer.say[0]``)."""
        found: list[tuple[str, Variant]] = []

        def action(key: str, a: Action | None) -> None:
            if a is not None:
                found.extend((f"{key}.say[{i}]", v) for i, v in enumerate(a.say))

        for name, node in self.nodes.items():
            found += [(f"nodes.{name}.say[{i}]", v) for i, v in enumerate(node.say)]
            if node.reprompt != node.say:
                found += [(f"nodes.{name}.reprompt[{i}]", v) for i, v in enumerate(node.reprompt)]
            for route, a in node.on.items():
                if self.handlers.on.get(route) is not a:  # a copy of a script-wide route
                    action(f"nodes.{name}.on.{route}", a)
        for entry in self.kb.values():
            found += [(f"kb.{entry.name}.say[{i}]", v) for i, v in enumerate(entry.say)]
            action(f"kb.{entry.name}.then", entry.then)
            action(f"kb.{entry.name}.on_limit", entry.on_limit)
        action("handlers.no_input.then", self.handlers.no_input.then)
        if self.handlers.no_match is not None:
            action("handlers.no_match.then", self.handlers.no_match.then)
        for key, a in self.handlers.dtmf.items():
            action(f"handlers.dtmf.{key}", a)
        for cls, a in self.handlers.on.items():
            action(f"handlers.on.{cls}", a)
        action("script.on_turn_cap", self.on_turn_cap)
        action("script.on_transfer_failed", self.on_transfer_failed)
        return found

    def transfers(self) -> list[tuple[str, str]]:
        """Every transfer the script can make, as (key, name): ``nodes.connect.transfer``,
        ``nodes.offer.on.price.transfer``…; the names are the daemon's ``[transfer.NAME]``."""
        found = [(f"nodes.{n}.transfer", node.transfer) for n, node in self.nodes.items()]
        handlers = self.handlers
        actions: list[tuple[str, Action | None]] = [
            (f"nodes.{n}.on.{route}", a)
            for n, node in self.nodes.items()
            for route, a in node.on.items()
            if handlers.on.get(route) is not a  # a copy of a script-wide route
        ]
        for entry in self.kb.values():
            actions += [(f"kb.{entry.name}.then", entry.then)]
            actions += [(f"kb.{entry.name}.on_limit", entry.on_limit)]
        actions += [("handlers.no_input.then", handlers.no_input.then)]
        if handlers.no_match is not None:
            actions += [("handlers.no_match.then", handlers.no_match.then)]
        actions += [(f"handlers.dtmf.{key}", a) for key, a in handlers.dtmf.items()]
        actions += [(f"handlers.on.{cls}", a) for cls, a in handlers.on.items()]
        actions += [("script.on_turn_cap", self.on_turn_cap)]
        found += [(f"{key}.transfer", a.transfer) for key, a in actions if a is not None]
        return [(key, name) for key, name in found if name is not None]

    def allowed(self, node: Node) -> list[str]:
        """Names to pass to ``Classifier.classify`` at ``node``, best tier first.

        The ``always`` tier, then the node's priority with "kb" expanded to every
        knowledge-base entry (script order); each class is preceded by its
        node-scoped name ("offer/affirm") when the node has extras for it. Only
        classes the node can act on appear: routed on, kb entries, the repeat
        class. Never "default".
        """
        names: list[str] = []
        fitted = {i.name for i in self.intents}

        def add(cls: str) -> None:
            if cls in names or not self._acts_on(node, cls):
                return
            scoped = f"{node.name}{SCOPE_SEPARATOR}{cls}"
            if scoped in fitted:
                names.append(scoped)
            names.append(cls)

        for cls in self.always:
            add(cls)
        for cls in node.priority:
            if cls == KB_CLASS:
                for intent in self.kb:
                    add(intent)
            else:
                add(cls)
        return names

    def _acts_on(self, node: Node, cls: str) -> bool:
        if cls in UNMATCHED_ROUTES:
            return False
        return cls in node.on or cls in self.kb or cls == self.handlers.repeat

    @staticmethod
    def class_of(name: str) -> str:
        """The class of a name from ``allowed``: "offer/affirm" → "affirm"; others unchanged."""
        return name.rpartition(SCOPE_SEPARATOR)[2]

    def recordings(self) -> set[Path]:
        """Every recording file the script uses, resolved against its directory."""
        return {self.path.parent / v.recording for _k, v in self.variants() if v.recording}

    def line_of(self, key: str) -> int | None:
        """The line of ``key`` (or of the nearest enclosing key) in the script file."""
        return _line_of(self.sources, key)


# ───────────────────────────── raw tables ─────────────────────────────
# What the TOML holds, structured strictly (unknown keys and wrong types are
# errors); polymorphic values (routes, keywords, ignore) stay Any and are read
# by hand below.


@attrs.frozen(kw_only=True)
class _ScriptTable:
    name: str | None = None
    description: str = ""
    language: str = ""
    start: str
    include: list[str] = attrs.Factory(list)
    priority: list[str] | None = None
    always: list[str] = attrs.Factory(list)
    refusals: list[str] | None = None
    negation: dict[str, str] | None = None
    silence_timeout: float = attrs.field(default=6.0, validator=positive())
    short_reply: int = attrs.field(default=2, validator=at_least(0))
    turn_cap: int | None = attrs.field(default=None, validator=positive())
    on_turn_cap: Any = None
    on_transfer_failed: Any = None
    kb_limit: int | None = attrs.field(default=None, validator=positive())
    on_kb_limit: Any = None
    default_grade: str = attrs.field(default="D", validator=one_of(*GRADES))
    silence_retries: int | None = attrs.field(default=None, validator=at_least(0))  # v1
    on_silence: str | None = None  # v1
    barge_in_recovery: str = attrs.field(
        default=DEFAULT_BARGE_IN_RECOVERY, validator=one_of(*BARGE_IN_RECOVERIES)
    )


@attrs.frozen(kw_only=True)
class _CounterTable:
    limit: int = attrs.field(validator=at_least(1))
    counting: str | None = attrs.field(default=None, validator=one_of("consecutive", "total"))
    scope: str | None = attrs.field(default=None, validator=one_of("node", "call"))
    then: Any


@attrs.frozen(kw_only=True)
class _HandlersTable:
    no_input: dict[str, Any] | None = None
    no_match: dict[str, Any] | None = None
    repeat: str | None = None
    dtmf: dict[str, Any] = attrs.Factory(dict)
    on: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class _ActionTable:
    goto: str | None = None
    resume: str | None = attrs.field(default=None, validator=one_of(*RESUMES))
    hangup: bool = False
    transfer: str | None = None
    say: list[Variant] = attrs.Factory(list)
    dnc: bool = False
    set: dict[str, str] = attrs.Factory(dict)
    tags: list[str] = attrs.Factory(list)


@attrs.frozen(kw_only=True)
class _KeywordTable:
    word: str
    negated: str | None = None
    sound_alike: bool | None = None


@attrs.frozen(kw_only=True)
class _IntentTable:
    description: str = ""
    keywords: list[Any] = attrs.Factory(list)
    patterns: list[str] = attrs.Factory(list)
    exclusions: list[str] = attrs.Factory(list)
    examples: list[str] = attrs.Factory(list)
    negated: str | None = None
    sound_alike: bool | None = None


@attrs.frozen(kw_only=True)
class _KbTable(_IntentTable):
    say: list[Variant] = attrs.Factory(list)
    then: Any = "repeat"
    limit: int | None = attrs.field(default=None, validator=positive())
    on_limit: Any = None


@attrs.frozen(kw_only=True)
class _NodeTable:
    say: list[Variant] = attrs.Factory(list)
    reprompt: list[Variant] = attrs.Factory(list)
    on: dict[str, Any] = attrs.Factory(dict)
    priority: list[str] | None = None
    keywords: dict[str, list[Any]] = attrs.Factory(dict)
    patterns: dict[str, list[str]] = attrs.Factory(dict)
    barge_in: bool | None = None
    interruptible: bool | None = None  # v1 name of barge_in
    ignore: Any = "none"
    silence_timeout: float | None = attrs.field(default=None, validator=positive())
    phrases: list[str] | None = None
    set: dict[str, str] = attrs.Factory(dict)
    end: bool = False
    grade: str | None = attrs.field(default=None, validator=one_of(*GRADES))
    tags: list[str] = attrs.Factory(list)
    dnc: bool = False
    transfer: str | None = None
    barge_in_recovery: str | None = attrs.field(
        default=None, validator=one_of(None, *BARGE_IN_RECOVERIES)
    )


@attrs.frozen(kw_only=True)
class _GradeTable:
    grade: str | None = attrs.field(default=None, validator=one_of(*GRADES))
    tags: list[str] = attrs.Factory(list)
    reason: str = ""
    when: dict[str, Any] = attrs.Factory(dict)


# ───────────────────────────── loading ─────────────────────────────


def load_script(path: Path | str, *, check_recordings: bool = True) -> Script:
    """Parse, merge includes and validate a script file; raise ScriptError listing every
    problem (``FILE:LINE: KEY: MESSAGE``)."""
    return _Loader(Path(path)).load(check_recordings=check_recordings)


class _ReadAction(Protocol):
    """Reads one action value at ``key`` (the loader's ``_action`` with the node names bound)."""

    def __call__(
        self, key: str, value: Any, *, listening: bool = ..., file: Path | None = ...
    ) -> Action | None: ...


@attrs.define
class _ClassDef:
    """One class (intent or kb entry) as merged from the script and its includes."""

    name: str  # "affirm" or "kb.price"
    key: str  # "intents.affirm" or "kb.price"
    file: Path  # the first file defining it (the script when it does)
    table: _IntentTable  # the merged table
    parts: list[tuple[Path, _IntentTable]]  # each file's own table, the script's first
    origin: dict[str, Path]  # which file gave each scalar key of the merged table

    def file_of(self, key: str) -> Path:
        """The file that gave the merged table's ``key``."""
        return self.origin.get(key, self.file)


class _Loader:
    """One load: the files read, their line maps and every problem found."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # (file, key, message, line when the key cannot give it)
        self.problems: list[tuple[Path, str, str, int | None]] = []
        self.explicit_phrases: set[str] = set()
        self.lines: dict[Path, dict[str, int]] = {}
        self.digest = hashlib.sha256()

    # ── problems ──

    def bad(self, key: str, message: str, file: Path | None = None) -> None:
        self.problems.append((file or self.path, key, message, None))

    def fail(self) -> ScriptError:
        formatted = []
        for file, key, message, known_line in self.problems:
            line = known_line or (_line_of(self.lines.get(file, {}), key) if key else None)
            where = f"{file}:{line}" if line is not None else f"{file}"
            formatted.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        return ScriptError(formatted)

    def structure(self, cls: type, table: Any, key: str, file: Path | None = None) -> Any:
        file = file or self.path
        try:
            return structure_strict(cls, table, file=file, key=key)
        except ConfigError as exc:
            prefix = f"{file}: "
            for problem in exc.problems:
                found_key, _, message = problem.removeprefix(prefix).partition(": ")
                self.bad(_bracket_indices(key, found_key), message, file)
            return None

    def read(self, file: Path) -> dict[str, Any] | None:
        try:
            content = file.read_bytes()
        except OSError as exc:
            self.bad("", f"cannot read: {exc.strerror}", file)
            return None
        self.digest.update(content)
        try:
            text = content.decode("utf-8")
            raw = tomllib.loads(text)
        except UnicodeDecodeError as exc:
            self.bad("", f"not UTF-8: {exc}", file)
            return None
        except tomllib.TOMLDecodeError as exc:
            at = re.search(r"at line (\d+)", str(exc))
            self.problems.append((file, "", str(exc), int(at.group(1)) if at else None))
            return None
        self.lines[file] = _source_lines(text)
        return raw

    # ── the whole file ──

    def load(self, *, check_recordings: bool) -> Script:
        raw = self.read(self.path)
        if raw is None:
            raise self.fail()
        for key in raw:
            if key not in SECTIONS:
                self.bad(key, f"unknown section (sections: {', '.join(SECTIONS)})")
        if "script" not in raw:
            self.bad("script", "missing [script] table")
            raise self.fail()
        head: _ScriptTable | None = self.structure(_ScriptTable, raw["script"], "script")
        if head is None:
            raise self.fail()

        classes = self._classes(raw, head)
        node_tables = {
            name: t
            for name, table in _tables(raw, "nodes", self, self.path)
            if (t := self.structure(_NodeTable, table, f"nodes.{name}")) is not None
        }
        if self.problems:
            # type errors first: cross-checks over half-read tables would only add noise
            raise self.fail()
        return self._build(raw, head, classes, node_tables, check_recordings)

    def _classes(self, raw: Mapping[str, Any], head: _ScriptTable) -> dict[str, _ClassDef]:
        """Intents and kb entries of the script and its includes, merged, in script order."""
        sources: list[tuple[Path, Mapping[str, Any]]] = [(self.path, raw)]
        for i, name in enumerate(head.include):
            file = self.path.parent / name
            if not file.is_file():
                self.bad(f"script.include[{i}]", f"file not found: {file}")
                continue
            included = self.read(file)
            if included is None:
                continue
            for key in included:
                if key not in INCLUDE_SECTIONS:
                    self.bad(key, "an included file may hold only [intents.*] and [kb.*]", file)
            sources.append((file, included))

        merged: dict[str, _ClassDef] = {}
        raw_tables: dict[str, dict[str, Any]] = {}
        for file, tables in sources:
            for section, prefix, cls in (
                ("intents", "", _IntentTable),
                ("kb", KB_PREFIX, _KbTable),
            ):
                for name, table in _tables(tables, section, self, file):
                    key = f"{section}.{name}"
                    # structure each file's table on its own so a fault names its file
                    part = self.structure(cls, table, key, file)
                    if part is None:
                        continue
                    if section == "intents" and (
                        name.startswith(KB_PREFIX) or SCOPE_SEPARATOR in name
                    ):
                        self.bad(key, "a class name may not start with 'kb.' or hold '/'", file)
                    cls_name = prefix + name
                    if cls_name not in merged:
                        raw_tables[cls_name] = dict(table)
                        merged[cls_name] = _ClassDef(
                            name=cls_name,
                            key=key,
                            file=file,
                            table=part,
                            parts=[(file, part)],
                            origin=dict.fromkeys(table, file),
                        )
                        continue
                    into, found = raw_tables[cls_name], merged[cls_name]
                    found.parts.append((file, part))
                    for list_key in LIST_KEYS:
                        into[list_key] = [*into.get(list_key, []), *table.get(list_key, [])]
                    for scalar, value in table.items():
                        if scalar not in into:  # the script's (or first file's) wins
                            into[scalar] = value
                            found.origin[scalar] = file
        # intents before kb entries (as v1), each in script order, then the includes' order
        ordered = sorted(merged.values(), key=lambda c: c.name.startswith(KB_PREFIX))
        for found in ordered:
            # every part was structured alone already: the merged table cannot fail
            kind = _KbTable if found.name.startswith(KB_PREFIX) else _IntentTable
            found.table = structure_strict(kind, raw_tables[found.name], file="", key="")
        return {c.name: c for c in ordered}

    # ── cross-checks and the model ──

    def _build(
        self,
        raw: Mapping[str, Any],
        head: _ScriptTable,
        classes: Mapping[str, _ClassDef],
        node_tables: Mapping[str, _NodeTable],
        check_recordings: bool,
    ) -> Script:
        nodes = set(node_tables)
        intents = [c for c in classes.values() if not c.name.startswith(KB_PREFIX)]
        known = set(classes)
        for name in node_tables:
            if name in RESUMES:
                self.bad(f"nodes.{name}", f"a node may not be called {name!r} (a route word)")
            elif SCOPE_SEPARATOR in name:
                self.bad(f"nodes.{name}", "a node name may not hold '/'")

        def check_class(key: str, cls: str, file: Path | None = None) -> bool:
            if cls in known:
                return True
            self.bad(key, f"unknown class {cls!r}", file)
            return False

        def check_node(key: str, target: str, file: Path | None = None) -> None:
            if target not in nodes:
                self.bad(key, f"no node named {target!r}", file)

        def action(
            key: str, value: Any, *, listening: bool = True, file: Path | None = None
        ) -> Action | None:
            return self._action(key, value, nodes, listening=listening, file=file)

        # [script]
        check_node("script.start", head.start)
        priority = (
            _default_priority(classes)
            if head.priority is None
            else self._priority(head.priority, "script.priority", known)
        )
        for i, cls in enumerate(head.always):
            check_class(f"script.always[{i}]", cls)
        refusals = (
            head.refusals
            if head.refusals is not None
            else [c for c in DEFAULT_REFUSALS if c in known]
        )
        for i, cls in enumerate(head.refusals or ()):
            check_class(f"script.refusals[{i}]", cls)
        if head.negation is None:
            negation = {a: b for a, b in DEFAULT_NEGATION if a in known and b in known}
        else:
            negation = dict(head.negation)
            for cls, other in negation.items():
                if check_class("script.negation", cls):
                    check_class(f"script.negation.{cls}", other)
        on_turn_cap = None
        if head.on_turn_cap is not None:
            on_turn_cap = action("script.on_turn_cap", head.on_turn_cap, listening=False)
            if head.turn_cap is None:
                self.bad("script.on_turn_cap", "needs turn_cap (how many replies)")
        elif head.turn_cap is not None:
            self.bad("script.turn_cap", "needs on_turn_cap (where the call goes at the cap)")
        on_transfer_failed = None
        if head.on_transfer_failed is not None:
            # the node that transferred may be an end node: nothing listens there to resume
            on_transfer_failed = action(
                "script.on_transfer_failed", head.on_transfer_failed, listening=False
            )
            if on_transfer_failed is not None and on_transfer_failed.transfer is not None:
                self.bad("script.on_transfer_failed", "cannot transfer again; goto or hangup")
        on_kb_limit = None
        if head.on_kb_limit is not None:
            on_kb_limit = action("script.on_kb_limit", head.on_kb_limit)

        variables: dict[str, str] = {}
        for name, value in _mapping(raw.get("variables", {}), "variables", self).items():
            if isinstance(value, str):
                variables[name] = value
            else:
                self.bad(f"variables.{name}", f"must be a string, not {_toml_type(value)}")

        # classes
        built_intents: list[Intent] = []
        for c in classes.values():
            t = c.table
            if not (t.keywords or t.examples or t.patterns):
                self.bad(c.key, "has none of keywords, patterns, examples", c.file)
            keywords: tuple[Keyword, ...] = ()
            for file, part in c.parts:  # each file's own, so a fault names file and index
                if part.negated is not None:
                    check_class(f"{c.key}.negated", part.negated, file)
                keywords += self._keywords(part.keywords, f"{c.key}.keywords", known, file)
                self._patterns(part.patterns, f"{c.key}.patterns", c.name, file)
                self._patterns(part.exclusions, f"{c.key}.exclusions", c.name, file)
            built_intents.append(
                Intent(
                    name=c.name,
                    keywords=keywords,
                    examples=tuple(t.examples),
                    patterns=tuple(t.patterns),
                    exclusions=tuple(t.exclusions),
                    negated=t.negated if t.negated is not None else negation.get(c.name),
                    sound_alike=True if t.sound_alike is None else t.sound_alike,
                )
            )
        by_name = {i.name: i for i in built_intents}

        kb: dict[str, KbEntry] = {}
        for c in classes.values():
            if not c.name.startswith(KB_PREFIX):
                continue
            t = c.table
            assert isinstance(t, _KbTable)
            if not t.say:
                self.bad(f"{c.key}.say", "needs at least one variant", c.file)
            then = action(f"{c.key}.then", t.then, file=c.file_of("then"))
            on_limit = (
                action(f"{c.key}.on_limit", t.on_limit, file=c.file_of("on_limit"))
                if t.on_limit is not None
                else on_kb_limit
            )
            kb[c.name] = KbEntry(
                name=c.name.removeprefix(KB_PREFIX),
                intent=c.name,
                say=tuple(t.say),
                then=then or Action(resume="repeat"),
                limit=t.limit if t.limit is not None else head.kb_limit,
                on_limit=on_limit,
            )

        # [handlers]
        handlers = self._handlers(raw, head, known, intents, action)

        # nodes
        built_nodes: dict[str, Node] = {}
        scoped: list[Intent] = []
        for name, t in node_tables.items():
            node, extras = self._node(name, t, head, priority, handlers, by_name, known, action)
            built_nodes[name] = node
            scoped += extras

        # [[grading]]
        rules = self._grading(raw, nodes, check_class)

        if head.start in nodes:
            self._flow(head.start, built_nodes, kb, handlers, on_turn_cap, on_transfer_failed)

        script = Script(
            name=head.name or self.path.stem,
            path=self.path,
            description=head.description,
            language=head.language,
            start=head.start,
            priority=priority,
            always=tuple(head.always),
            refusals=tuple(refusals),
            silence_timeout=head.silence_timeout,
            short_reply=head.short_reply,
            turn_cap=head.turn_cap,
            on_turn_cap=on_turn_cap,
            on_transfer_failed=on_transfer_failed,
            default_grade=head.default_grade,
            handlers=handlers,
            variables=variables,
            grading=rules,
            nodes=built_nodes,
            kb=kb,
            intents=(*built_intents, *scoped),
            content_hash=self.digest.hexdigest(),
            sources=self.lines.get(self.path, {}),
        )
        for key, variant in script.variants():
            try:
                list(string.Formatter().parse(variant.text))
            except ValueError as exc:
                self.bad(f"{key}.text", f"bad placeholder: {exc}")
            if check_recordings and variant.recording is not None:
                file = self.path.parent / variant.recording
                if not file.is_file():
                    self.bad(f"{key}.recording", f"file not found: {file}")
        if self.problems:
            raise self.fail()
        return attrs.evolve(
            script,
            nodes={
                n: node if n in self.explicit_phrases else _with_phrases(script, node)
                for n, node in built_nodes.items()
            },
        )

    def _priority(self, given: Sequence[str], key: str, known: set[str]) -> tuple[str, ...]:
        for i, cls in enumerate(given):
            if cls not in (KB_CLASS, DEFAULT_INTENT) and cls not in known:
                self.bad(f"{key}[{i}]", f"unknown class {cls!r}")
        return tuple(c for c in given if c != DEFAULT_INTENT)

    def _keywords(
        self, items: Sequence[Any], key: str, known: set[str], file: Path
    ) -> tuple[Keyword, ...]:
        out: list[Keyword] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(Keyword(item))
                continue
            t = self.structure(_KeywordTable, item, f"{key}[{i}]", file)
            if t is None:
                continue
            if t.negated is not None and t.negated not in known:
                self.bad(f"{key}[{i}].negated", f"unknown class {t.negated!r}", file)
            out.append(Keyword(t.word, negated=t.negated, sound_alike=t.sound_alike))
        return tuple(out)

    def _patterns(self, patterns: Sequence[str], key: str, cls: str, file: Path) -> None:
        for i, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                self.bad(f"{key}[{i}]", f"bad pattern {pattern!r} of class {cls!r}: {exc}", file)

    def _action(
        self,
        key: str,
        value: Any,
        nodes: set[str],
        *,
        listening: bool = True,
        file: Path | None = None,
    ) -> Action | None:
        """A route, handler outcome, kb follow-up, turn-cap outcome or key: string or table."""
        if isinstance(value, str):
            if value in RESUMES:
                table = _ActionTable(resume=value)
            else:
                table = _ActionTable(goto=value)
        else:
            table = self.structure(_ActionTable, value, key, file)
            if table is None:
                return None
        ends = [k for k in ("goto", "resume", "transfer") if getattr(table, k) is not None]
        ends += ["hangup"] if table.hangup else []
        if len(ends) != 1:
            self.bad(
                key,
                "needs exactly one of goto, hangup, transfer, resume"
                + (f" (has {', '.join(ends)})" if ends else ""),
                file,
            )
            return None
        if table.goto is not None and table.goto not in nodes:
            suffix = "" if isinstance(value, str) else ".goto"
            self.bad(f"{key}{suffix}", f"no node named {table.goto!r}", file)
        if table.resume is not None and not listening:
            self.bad(key, f"cannot resume ({table.resume!r}): no node is listening here", file)
        if table.transfer is not None and not table.transfer.strip():
            self.bad(f"{key}.transfer", "must name where to transfer to", file)
        return Action(
            goto=table.goto,
            resume=table.resume,  # type: ignore[arg-type]
            hangup=table.hangup,
            transfer=table.transfer,
            say=tuple(table.say),
            dnc=table.dnc,
            set=dict(table.set),
            tags=tuple(table.tags),
        )

    def _counter(
        self, table: Any, key: str, counting: str, scope: str, action: _ReadAction
    ) -> Counter | None:
        t = self.structure(_CounterTable, table, key)
        if t is None:
            return None
        then = action(f"{key}.then", t.then)
        if then is None:
            return None
        return Counter(
            limit=t.limit, counting=t.counting or counting, scope=t.scope or scope, then=then
        )

    def _handlers(
        self,
        raw: Mapping[str, Any],
        head: _ScriptTable,
        known: set[str],
        intents: Sequence[_ClassDef],
        action: _ReadAction,
    ) -> Handlers:
        t = self.structure(_HandlersTable, raw.get("handlers", {}), "handlers")
        if t is None:
            t = _HandlersTable()
        v1 = head.silence_retries is not None or head.on_silence is not None
        no_input: Counter | None = None
        if t.no_input is not None:
            if v1:
                key = (
                    "script.silence_retries"
                    if head.silence_retries is not None
                    else ("script.on_silence")
                )
                self.bad(
                    key,
                    "give [handlers.no_input] or the v1 keys silence_retries/on_silence, not both",
                )
            no_input = self._counter(t.no_input, "handlers.no_input", "consecutive", "call", action)
        elif v1:
            retries = V1_SILENCE_RETRIES if head.silence_retries is None else head.silence_retries
            then = (
                action("script.on_silence", head.on_silence)
                if head.on_silence is not None
                else Action(hangup=True)
            )
            if then is not None:
                no_input = Counter(
                    limit=retries + 1, counting="consecutive", scope="node", then=then
                )
        # nothing said: v1's default of one re-prompt, then hang up
        no_input = no_input or Counter(
            limit=V1_SILENCE_RETRIES + 1,
            counting="consecutive",
            scope="node",
            then=Action(hangup=True),
        )
        no_match = None
        if t.no_match is not None:
            no_match = self._counter(t.no_match, "handlers.no_match", "total", "call", action)
        repeat = t.repeat
        if repeat is None:
            repeat = (
                DEFAULT_REPEAT_CLASS
                if any(c.name == DEFAULT_REPEAT_CLASS for c in intents)
                else None
            )
        elif repeat not in known:
            self.bad("handlers.repeat", f"unknown class {repeat!r}")
        dtmf: dict[str, Action] = {}
        for digit, value in t.dtmf.items():
            if len(digit) != 1 or digit not in DTMF_KEYS:
                self.bad(f"handlers.dtmf.{digit}", "a key is one of 0-9 * # A B C D")
            elif (a := action(f"handlers.dtmf.{digit}", value)) is not None:
                dtmf[digit] = a
        on: dict[str, Action] = {}
        for cls, value in t.on.items():
            if cls not in known:
                self.bad(f"handlers.on.{cls}", f"unknown class {cls!r}")
            elif (a := action(f"handlers.on.{cls}", value)) is not None:
                on[cls] = a
        return Handlers(no_input=no_input, no_match=no_match, repeat=repeat, dtmf=dtmf, on=on)

    def _node(
        self,
        name: str,
        t: _NodeTable,
        head: _ScriptTable,
        priority: tuple[str, ...],
        handlers: Handlers,
        intents: Mapping[str, Intent],
        known: set[str],
        action: _ReadAction,
    ) -> tuple[Node, list[Intent]]:
        key = f"nodes.{name}"
        if not t.say:
            self.bad(f"{key}.say", "needs at least one variant")
        if t.barge_in is not None and t.interruptible is not None:
            self.bad(f"{key}.interruptible", "is the v1 name of barge_in: give one, not both")
        routes: dict[str, Action] = {}
        for route, value in t.on.items():
            if route not in UNMATCHED_ROUTES and route not in known:
                self.bad(f"{key}.on.{route}", f"unknown class {route!r}")
            elif (a := action(f"{key}.on.{route}", value, listening=not t.end)) is not None:
                routes[route] = a
        if t.end:
            if t.on:
                self.bad(f"{key}.on", "an end node routes nowhere; remove 'on' or 'end'")
        else:
            for flag in ("dnc", "transfer"):
                if getattr(t, flag):
                    self.bad(f"{key}.{flag}", f"only an end node has {flag!r} (use an action)")
            if not t.on:
                self.bad(key, "has no way out: give it 'on' routes or make it an end node")
            elif DEFAULT_INTENT not in t.on and not ("short" in t.on and "long" in t.on):
                self.bad(
                    f"{key}.on",
                    "needs a 'default' route (where a reply that matches nothing goes), "
                    "or both 'short' and 'long'",
                )
            for cls, a in handlers.on.items():
                routes.setdefault(cls, a)
            for cls in head.always:
                # a kb entry answers anywhere; any other always-class needs somewhere to go
                if cls in known and cls not in routes and not cls.startswith(KB_PREFIX):
                    self.bad(
                        f"{key}.on",
                        f"no route for {cls!r} of script.always: give {key}.on.{cls} "
                        f"or [handlers.on] {cls}",
                    )
        order = (
            priority if t.priority is None else self._priority(t.priority, f"{key}.priority", known)
        )
        appended = [c for c in routes if c not in UNMATCHED_ROUTES and c not in order]
        if KB_CLASS not in order:
            appended.append(KB_CLASS)
        if handlers.repeat is not None and handlers.repeat not in order:
            appended.append(handlers.repeat)
        order = (*order, *dict.fromkeys(appended))

        ignore: Any = t.ignore
        if isinstance(ignore, list):
            for i, cls in enumerate(ignore):
                if not isinstance(cls, str) or cls not in known:
                    self.bad(f"{key}.ignore[{i}]", f"unknown class {cls!r}")
            ignore = tuple(ignore)
        elif ignore not in ("none", "all", "refusal"):
            self.bad(f"{key}.ignore", 'must be "none", "all", "refusal" or a list of classes')
            ignore = "none"

        extras: list[Intent] = []
        for cls in dict.fromkeys([*t.keywords, *t.patterns]):
            if cls not in intents:
                where = "keywords" if cls in t.keywords else "patterns"
                self.bad(f"{key}.{where}.{cls}", f"unknown class {cls!r}")
                continue
            base = intents[cls]
            words = self._keywords(
                t.keywords.get(cls, []), f"{key}.keywords.{cls}", known, self.path
            )
            self._patterns(t.patterns.get(cls, []), f"{key}.patterns.{cls}", cls, self.path)
            extras.append(
                Intent(
                    name=f"{name}{SCOPE_SEPARATOR}{cls}",
                    keywords=words,
                    patterns=tuple(t.patterns.get(cls, [])),
                    exclusions=base.exclusions,
                    negated=base.negated,
                    sound_alike=base.sound_alike,
                )
            )
        if t.phrases is not None:
            self.explicit_phrases.add(name)
        barge_in = t.barge_in if t.barge_in is not None else t.interruptible
        node = Node(
            name=name,
            say=tuple(t.say),
            reprompt=tuple(t.reprompt) or tuple(t.say),
            on=routes,
            priority=order,
            end=t.end,
            grade=t.grade,
            tags=tuple(t.tags),
            dnc=t.dnc,
            transfer=t.transfer,
            barge_in=(not t.end) if barge_in is None else barge_in,
            ignore=ignore,
            silence_timeout=t.silence_timeout or head.silence_timeout,
            phrases=tuple(t.phrases or ()),
            set=dict(t.set),
            barge_in_recovery=t.barge_in_recovery or head.barge_in_recovery,  # type: ignore[arg-type]
        )
        return node, extras

    def _grading(
        self, raw: Mapping[str, Any], nodes: set[str], check_class: Callable[[str, str], bool]
    ) -> tuple[GradeRule, ...]:
        items = raw.get("grading", [])
        if not isinstance(items, list):
            self.bad("grading", "must be an array of tables ([[grading]])")
            return ()
        rules: list[GradeRule] = []
        for i, table in enumerate(items):
            key = f"grading[{i}]"
            t = self.structure(_GradeTable, table, key)
            when = self.structure(Condition, t.when, f"{key}.when") if t is not None else None
            if t is None or when is None:
                continue
            if t.grade is not None and not t.reason.strip():
                self.bad(f"{key}.reason", "a rule that gives a grade needs a reason (it is filed)")
            if t.grade is None and not t.tags:
                self.bad(key, "gives neither a grade nor tags")
            for field in ("reached", "reached_any", "not_reached", "ended_at"):
                for j, name in enumerate(getattr(when, field)):
                    if name not in nodes:
                        self.bad(f"{key}.when.{field}[{j}]", f"no node named {name!r}")
            for name in when.said:
                if name not in nodes:
                    self.bad(f"{key}.when.said.{name}", f"no node named {name!r}")
            for cls, count in when.heard.items():
                if check_class(f"{key}.when.heard.{cls}", cls) and count < 1:
                    self.bad(f"{key}.when.heard.{cls}", f"must be at least 1, not {count}")
            for j, cls in enumerate(when.not_heard):
                check_class(f"{key}.when.not_heard[{j}]", cls)
            if (
                when.min_turns is not None
                and when.max_turns is not None
                and when.min_turns > when.max_turns
            ):
                self.bad(f"{key}.when.max_turns", "is below min_turns: the rule can never match")
            rules.append(GradeRule(grade=t.grade, tags=tuple(t.tags), reason=t.reason, when=when))
        return tuple(rules)

    def _flow(
        self,
        start: str,
        nodes: Mapping[str, Node],
        kb: Mapping[str, KbEntry],
        handlers: Handlers,
        on_turn_cap: Action | None,
        on_transfer_failed: Action | None = None,
    ) -> None:
        """Every node reachable; from every reachable node, replies can lead to an ending.

        Reachability follows every action (routes, handlers, keys, kb follow-ups,
        the turn cap, a failed transfer): each can be taken at any listening node. An exit must be
        reachable by replying — the node's routes or the no-match handler — so a
        loop only silence, a key or the turn cap can leave is refused.
        """
        anywhere: list[Action | None] = [handlers.no_input.then, on_turn_cap, on_transfer_failed]
        anywhere += [handlers.no_match.then if handlers.no_match else None]
        anywhere += [*handlers.dtmf.values()]
        anywhere += [a for entry in kb.values() for a in (entry.then, entry.on_limit)]
        seeds = {start} | {a.goto for a in anywhere if a is not None and a.goto in nodes}
        reachable = _closure(seeds, nodes, ())
        for name in nodes:
            if name not in reachable:
                self.bad(f"nodes.{name}", f"is unreachable from the start node {start!r}")
        by_reply = (handlers.no_match.then,) if handlers.no_match else ()
        for name in nodes:  # file order: the same script gives the same report
            if name not in reachable or nodes[name].end or not nodes[name].on:
                continue  # an end, or a node already refused for having no way out
            seen = _closure({name}, nodes, by_reply)
            if not any(nodes[n].end or _exits(nodes[n], by_reply) for n in seen):
                self.bad(f"nodes.{name}", "loops with no exit: no path from it reaches an end node")


def _default_priority(classes: Mapping[str, _ClassDef]) -> tuple[str, ...]:
    """v1's default order (kb, affirm, deny: those that exist), then every other class in
    script order."""
    order = [c for c in V1_PRIORITY if c == KB_CLASS or c in classes]
    order += [c for c in classes if not c.startswith(KB_PREFIX) and c not in order]
    return tuple(order)


def _closure(seeds: set[str], nodes: Mapping[str, Node], extra: Sequence[Action]) -> set[str]:
    """Nodes reachable from ``seeds`` by their routes (and ``extra`` actions from any node)."""
    seen = set(seeds)
    todo = list(seeds)
    while todo:
        node = nodes[todo.pop()]
        actions = [*node.on.values(), *(extra if not node.end else ())]
        for a in actions:
            if a.goto in nodes and a.goto not in seen:
                seen.add(a.goto)
                todo.append(a.goto)
    return seen


def _exits(node: Node, extra: Sequence[Action]) -> bool:
    return any(a.ends for a in (*node.on.values(), *extra))


def _with_phrases(script: Script, node: Node) -> Node:
    """The node with v1's default recogniser hints: what it can act on, as examples or words.

    Whole example sentences where the script gives them, else the keywords: a
    vosk phrase list lets words of different phrases combine, so a shorter list
    of longer phrases recognises better than every keyword of every sentence.
    """
    if node.end:
        return node
    by_name = {i.name: i for i in script.intents}
    phrases = dict.fromkeys(
        p
        for name in script.allowed(node)
        for p in (by_name[name].examples or [k.text for k in by_name[name].keywords])
    )
    return attrs.evolve(node, phrases=tuple(phrases))


# ───────────────────────────── TOML helpers ─────────────────────────────


def _toml_type(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", list: "an array"}
    return kinds.get(type(value), "a table" if isinstance(value, Mapping) else "a string")


def _tables(
    raw: Mapping[str, Any], section: str, loader: _Loader, file: Path
) -> list[tuple[str, Any]]:
    """The named tables of ``section`` ([nodes.NAME]), in file order."""
    return list(_mapping(raw.get(section, {}), section, loader, file).items())


def _mapping(value: Any, key: str, loader: _Loader, file: Path | None = None) -> Mapping:
    if isinstance(value, Mapping):
        return value
    loader.bad(key, f"must be a table, not {_toml_type(value)}", file)
    return {}


def _bracket_indices(base: str, found: str) -> str:
    """A key from the converter ("grading.0.when.heard") as this module writes keys
    ("grading[0].when.heard"): indices in brackets, table keys that are digits kept."""
    dotted = base.replace("[", ".").replace("]", "")
    if not found.startswith(dotted):
        return found
    rest = re.sub(r"\.'([^']*)'", r".\1", found[len(dotted) :])  # mapping keys: .'x' → .x
    return base + re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", rest)


_BARE_OR_QUOTED = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY_LINE = re.compile(rf"^\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*\]")


def _key_path(text: str) -> str:
    """A TOML key as written (``"0"``, ``a . b``) as a dotted path, via the parser itself."""
    try:
        parsed: Any = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return text.strip()
    parts = []
    while isinstance(parsed, dict) and len(parsed) == 1:
        ((part, parsed),) = parsed.items()
        parts.append(part)
    return ".".join(parts)


def _source_lines(text: str) -> dict[str, int]:
    """Dotted keys → 1-based line: table headers and ``key =`` lines inside them.

    tomllib gives no positions, so the text is scanned: a header opens a table
    (``[[grading]]`` the n-th ``grading[n]``), a key line inside it adds
    ``table.key``. Lines inside a multi-line array or string are skipped.
    """
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    table = ""
    depth = 0  # open brackets of a multi-line array
    multiline: str | None = None  # the delimiter of an open multi-line string
    for number, line in enumerate(text.splitlines(), 1):
        if multiline is None and depth == 0:
            if header := _HEADER.match(line):
                name = _key_path(header.group(2))
                if header.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    name = f"{name}[{counts[name]}]"
                table = name
                lines.setdefault(table, number)
                continue
            if key := _KEY_LINE.match(line):
                path = _key_path(key.group(1))
                lines.setdefault(f"{table}.{path}" if table else path, number)
        depth, multiline = _scan(line, depth, multiline)
    return lines


def _scan(line: str, depth: int, multiline: str | None) -> tuple[int, str | None]:
    """Bracket depth and open multi-line string after ``line`` (strings and comments skipped)."""
    i = 0
    while i < len(line):
        if multiline is not None:
            end = line.find(multiline, i)
            if end < 0:
                return depth, multiline
            i, multiline = end + 3, None
            continue
        ch = line[i]
        if ch == "#":
            break
        if line.startswith(('"""', "'''"), i):
            multiline = line[i : i + 3]
            i += 3
        elif ch in "\"'":
            i += 1
            while i < len(line) and line[i] != ch:
                i += 2 if ch == '"' and line[i] == "\\" else 1
            i += 1
        else:
            depth += (ch in "[{") - (ch in "]}")
            i += 1
    return max(depth, 0), multiline


def _line_of(lines: Mapping[str, int], key: str) -> int | None:
    """The line of ``key`` or of the nearest enclosing key it lies in."""
    while key:
        if key in lines:
            return lines[key]
        cut = max(key.rfind("."), key.rfind("["))
        if cut <= 0:
            break
        key = key[:cut]
    # a section given only as [section.name] headers: its first one
    inside = [line for k, line in lines.items() if k.startswith(f"{key}.")]
    return min(inside, default=None)
