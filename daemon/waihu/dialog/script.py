"""The script (话术): its TOML format, model and validator.

A script is one TOML file::

    [script]
    name = "demo-ko"              # defaults to the file name without .toml
    start = "greeting"            # first node
    priority = ["kb", "affirm", "deny", "default"]   # order replies are classified in
    silence_timeout = 6.0         # seconds without speech after a prompt ends
    silence_retries = 1           # re-prompts before giving up
    on_silence = "bye_silence"    # node after the last silent re-prompt
    default_grade = "D"           # grade when the callee hangs up before an end node

    [intents.affirm]
    keywords = ["네", "좋아요"]

    [nodes.greeting]
    say = [{ text = "안녕하세요…", recording = "prompts/greeting.wav" }]
    on = { affirm = "offer", deny = "bye_no", default = "bye_unclear" }
    # optional: what the recogniser should expect after this node (default: the
    # examples, else the keywords, of the intents routed on and of every kb entry)
    phrases = ["네", "아니요"]

    [nodes.bye_no]
    say = [{ text = "감사합니다", recording = "prompts/bye.wav" }]
    end = true
    grade = "C"

    [kb.price]
    keywords = ["가격", "얼마"]
    say = [{ text = "월 만원입니다", recording = "prompts/price.wav" }]
    then = "repeat"               # re-ask the node's question ("listen": just listen again)

Recordings are resolved against the script's directory. ``{name}``-style
fields in text are filled from the contact's variables.

``load_script`` parses and validates; every problem names the file and the key
(``nodes.greeting.on.afirm: unknown intent 'afirm'``) and all are reported at
once. It does not load audio: the daemon decodes recordings once per script.
"""

from __future__ import annotations

import hashlib
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from waihu.api import Intent, WaihuError, at_least, one_of, positive
from waihu.config import ConfigError, structure_strict

__all__ = [
    "DEFAULT_INTENT",
    "KB_CLASS",
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
GRADES = ("A", "B", "C", "D", "E", "F")


class ScriptError(WaihuError):
    """A script cannot be used; ``problems`` lists each fault with file and key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@attrs.frozen(kw_only=True)
class Variant:
    """One way of saying a line: its text (for transcripts) and its recording."""

    text: str
    recording: str


@attrs.frozen(kw_only=True)
class NodeTable:
    say: list[Variant]
    on: dict[str, str] = attrs.Factory(dict)
    end: bool = False
    grade: str | None = attrs.field(default=None, validator=one_of(*GRADES))
    tags: list[str] = attrs.Factory(list)
    interruptible: bool | None = None  # default: true, false for end nodes
    reprompt: list[Variant] = attrs.Factory(list)
    phrases: list[str] | None = None
    dnc: bool = False  # an end node that puts the callee's number on the do-not-call list


@attrs.frozen(kw_only=True)
class KbTable:
    keywords: list[str] = attrs.Factory(list)
    examples: list[str] = attrs.Factory(list)
    say: list[Variant]
    then: Literal["repeat", "listen"] = attrs.field(
        default="repeat", validator=one_of("repeat", "listen")
    )


@attrs.frozen(kw_only=True)
class IntentTable:
    keywords: list[str] = attrs.Factory(list)
    examples: list[str] = attrs.Factory(list)


@attrs.frozen(kw_only=True)
class ScriptTable:
    name: str | None = None
    description: str = ""
    language: str = ""
    start: str
    priority: list[str] = attrs.Factory(lambda: [KB_CLASS, "affirm", "deny", DEFAULT_INTENT])
    silence_timeout: float = attrs.field(default=6.0, validator=positive())
    silence_retries: int = attrs.field(default=1, validator=at_least(0))
    on_silence: str
    default_grade: str = attrs.field(default="D", validator=one_of(*GRADES))


@attrs.frozen(kw_only=True)
class Node:
    """A step of the main flow: what the robot says, then where each reply leads."""

    name: str
    say: tuple[Variant, ...]
    on: Mapping[str, str]
    end: bool
    grade: str | None
    tags: tuple[str, ...]
    interruptible: bool
    reprompt: tuple[Variant, ...]
    phrases: tuple[str, ...]  # what the recogniser should expect after this node
    dnc: bool = False  # ending here adds the number to the do-not-call list before hanging up


@attrs.frozen(kw_only=True)
class KbEntry:
    """A knowledge-base answer; after it the flow returns to the current node."""

    name: str
    intent: str  # "kb.<name>"
    say: tuple[Variant, ...]
    then: Literal["repeat", "listen"]


@attrs.frozen(kw_only=True)
class Script:
    """A validated script, ready for the dialogue engine."""

    name: str
    path: Path
    description: str
    language: str
    start: str
    priority: tuple[str, ...]
    silence_timeout: float
    silence_retries: int
    on_silence: str
    default_grade: str
    nodes: Mapping[str, Node]
    kb: Mapping[str, KbEntry]  # by intent name ("kb.price")
    intents: tuple[Intent, ...]  # script intents and kb entries, for the classifier
    content_hash: str = ""  # sha256 of the file's bytes: which version spoke to a callee

    @property
    def placeholders(self) -> frozenset[str]:
        """Every ``{field}`` the script's lines fill in from a contact's variables.

        A campaign refuses contacts with an empty value for one of these, so that no
        callee ever hears a placeholder read out.
        """
        variants = [v for n in self.nodes.values() for v in (*n.say, *n.reprompt)]
        variants += [v for k in self.kb.values() for v in k.say]
        return frozenset(
            field.split(".")[0].split("[")[0]
            for v in variants
            for _text, field, _spec, _conv in string.Formatter().parse(v.text)
            if field
        )

    def allowed(self, node: Node) -> list[str]:
        """Intent names a reply at ``node`` may be classified as, in priority order."""
        order: list[str] = []
        for cls in self.priority:
            if cls == KB_CLASS:
                order.extend(self.kb)
            elif cls != DEFAULT_INTENT and cls in node.on:
                order.append(cls)
        # intents the node routes on but the priority list forgot still count, last
        order.extend(i for i in node.on if i not in order and i != DEFAULT_INTENT)
        return order

    def recordings(self) -> set[Path]:
        """Every recording file the script uses, resolved."""
        variants = [v for n in self.nodes.values() for v in (*n.say, *n.reprompt)]
        variants += [v for k in self.kb.values() for v in k.say]
        return {self.path.parent / v.recording for v in variants}


def load_script(path: Path | str, *, check_recordings: bool = True) -> Script:
    """Parse and validate a script file; raise ScriptError listing every problem."""
    path = Path(path)
    try:
        content = path.read_bytes()
        raw = tomllib.loads(content.decode("utf-8"))
    except OSError as exc:
        raise ScriptError([f"{path}: cannot read: {exc.strerror}"]) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScriptError([f"{path}: {exc}"]) from None

    problems: list[str] = []

    def structure(cls: type, table: Any, key: str) -> Any:
        try:
            return structure_strict(cls, table, file=path, key=key)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None

    problems.extend(
        f"{path}: {k}: unknown section (expected script, intents, nodes, kb)"
        for k in raw
        if k not in ("script", "intents", "nodes", "kb")
    )
    head = structure(ScriptTable, raw.get("script", {}), "script")
    intents = {n: structure(IntentTable, t, f"intents.{n}") for n, t in _tables(raw, "intents")}
    nodes = {n: structure(NodeTable, t, f"nodes.{n}") for n, t in _tables(raw, "nodes")}
    kbs = {n: structure(KbTable, t, f"kb.{n}") for n, t in _tables(raw, "kb")}
    if problems or head is None:
        raise ScriptError(problems or [f"{path}: script: missing [script] table"])

    _check(path, head, intents, nodes, kbs, problems, check_recordings)
    if problems:
        raise ScriptError(problems)

    kb_entries = {
        KB_PREFIX + n: KbEntry(name=n, intent=KB_PREFIX + n, say=tuple(t.say), then=t.then)
        for n, t in kbs.items()
    }
    all_intents = [
        Intent(name=n, keywords=tuple(t.keywords), examples=tuple(t.examples))
        for n, t in intents.items()
    ] + [
        Intent(name=KB_PREFIX + n, keywords=tuple(t.keywords), examples=tuple(t.examples))
        for n, t in kbs.items()
    ]
    by_name = {i.name: i for i in all_intents}
    built_nodes = {}
    for name, t in nodes.items():
        phrases = t.phrases
        if phrases is None and not t.end:
            # the recogniser expects what this node can route on plus every kb question:
            # whole example sentences where the script gives them, else the keywords. A
            # vosk phrase list lets words of different phrases combine, so a shorter list
            # of longer phrases recognises better than every keyword of every sentence.
            routed = [by_name[i] for i in t.on if i in by_name]
            routed += [by_name[k] for k in kb_entries]
            phrases = list(
                dict.fromkeys(
                    p for i in routed for p in (i.examples or [k.text for k in i.keywords])
                )
            )
        built_nodes[name] = Node(
            name=name,
            say=tuple(t.say),
            on=dict(t.on),
            end=t.end,
            grade=t.grade,
            tags=tuple(t.tags),
            interruptible=(not t.end) if t.interruptible is None else t.interruptible,
            reprompt=tuple(t.reprompt),
            phrases=tuple(phrases or ()),
            dnc=t.dnc,
        )
    return Script(
        name=head.name or path.stem,
        path=path,
        description=head.description,
        language=head.language,
        start=head.start,
        priority=tuple(head.priority),
        silence_timeout=head.silence_timeout,
        silence_retries=head.silence_retries,
        on_silence=head.on_silence,
        default_grade=head.default_grade,
        nodes=built_nodes,
        kb=kb_entries,
        intents=tuple(all_intents),
        content_hash=hashlib.sha256(content).hexdigest(),
    )


def _tables(raw: Mapping[str, Any], key: str) -> list[tuple[str, Any]]:
    section = raw.get(key, {})
    return list(section.items()) if isinstance(section, Mapping) else [(key, section)]


def _check(
    path: Path,
    head: ScriptTable,
    intents: Mapping[str, IntentTable],
    nodes: Mapping[str, NodeTable],
    kbs: Mapping[str, KbTable],
    problems: list[str],
    check_recordings: bool,
) -> None:
    """Cross-references: targets exist, intents known, every node reachable and able to end."""

    def bad(key: str, message: str) -> None:
        problems.append(f"{path}: {key}: {message}")

    for key, target in (("script.start", head.start), ("script.on_silence", head.on_silence)):
        if target not in nodes:
            bad(key, f"no node named {target!r}")
    if head.on_silence in nodes and not nodes[head.on_silence].end:
        bad("script.on_silence", f"node {head.on_silence!r} must be an end node")
    for cls in head.priority:
        if cls not in (KB_CLASS, DEFAULT_INTENT) and cls not in intents:
            bad("script.priority", f"unknown intent {cls!r}")

    for name, t in intents.items():
        if not (t.keywords or t.examples):
            bad(f"intents.{name}", "has neither keywords nor examples")
    for name, t in kbs.items():
        if not (t.keywords or t.examples):
            bad(f"kb.{name}", "has neither keywords nor examples")
        if not t.say:
            bad(f"kb.{name}.say", "needs at least one variant")

    for name, t in nodes.items():
        key = f"nodes.{name}"
        if not t.say:
            bad(f"{key}.say", "needs at least one variant")
        if t.end:
            if t.on:
                bad(f"{key}.on", "an end node routes nowhere; remove 'on' or 'end'")
            continue
        if t.dnc:
            bad(f"{key}.dnc", "only an end node can add the number to the do-not-call list")
        if not t.on:
            bad(key, "has no way out: give it 'on' routes or make it an end node")
            continue
        if DEFAULT_INTENT not in t.on:
            bad(f"{key}.on", "needs a 'default' route (where a reply that matches nothing goes)")
        for intent, target in t.on.items():
            if intent != DEFAULT_INTENT and intent not in intents:
                bad(f"{key}.on.{intent}", f"unknown intent {intent!r}")
            if target not in nodes:
                bad(f"{key}.on.{intent}", f"no node named {target!r}")

    if head.start in nodes:
        reachable = _reachable(head.start, nodes, head.on_silence)
        for name in nodes:
            if name not in reachable:
                bad(f"nodes.{name}", f"is unreachable from the start node {head.start!r}")
        for name in reachable:
            if not nodes[name].end and not _can_end(name, nodes):
                bad(f"nodes.{name}", "loops with no exit: no path from it reaches an end node")

    if check_recordings:
        variants: list[tuple[str, Variant]] = []
        for name, t in nodes.items():
            variants += [(f"nodes.{name}.say[{i}]", v) for i, v in enumerate(t.say)]
            variants += [(f"nodes.{name}.reprompt[{i}]", v) for i, v in enumerate(t.reprompt)]
        for name, t in kbs.items():
            variants += [(f"kb.{name}.say[{i}]", v) for i, v in enumerate(t.say)]
        for key, v in variants:
            if not (path.parent / v.recording).is_file():
                bad(f"{key}.recording", f"file not found: {path.parent / v.recording}")


def _reachable(start: str, nodes: Mapping[str, NodeTable], on_silence: str) -> set[str]:
    seen = {start}
    todo = [start]
    if on_silence in nodes:
        seen.add(on_silence)
    while todo:
        for target in nodes[todo.pop()].on.values():
            if target in nodes and target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _can_end(name: str, nodes: Mapping[str, NodeTable]) -> bool:
    seen = {name}
    todo = [name]
    while todo:
        node = nodes[todo.pop()]
        if node.end:
            return True
        for target in node.on.values():
            if target in nodes and target not in seen:
                seen.add(target)
                todo.append(target)
    return False
