"""What is legal in a script but probably wrong: the warnings of ``waihuctl script validate``.

``load_script`` refuses what cannot run (an unknown node or class, a loop
with no exit, a missing recording). ``lint`` looks at a script that loaded
and finds what runs but will surprise its author on a call:

- a node no reply leads out of (a dead end: only the handlers — silence,
  no match, the turn cap, a key — end the call there);
- a recording that exists but does not decode (the daemon would refuse the
  script: this one is an error);
- a ``{field}`` with no ``[variables]`` default and set by no node or
  action: every contact must then have that column;
- the same keyword (or whole example reply) claimed by two classes of one
  tier at a node (the first in the node's order always takes it);
- a keyword of one class inside a keyword of another ("感兴趣" inside
  "不感兴趣") where the inner keyword's class comes first at a node, with no
  negation rule to separate them: fine when the outer keyword starts with a
  negator (or has one right before the inner keyword) and the inner
  keyword's negated class is the outer one's class, or when an exclusion of
  the inner class covers it;
- a pattern that matches an empty reply (it fires on every reply);
- a class the script defines itself that no listening node hears (an
  included library's classes need not all be used);
- a knowledge-base entry whose answer is never said: every node hearing it
  routes its class itself.

Each ``Finding`` names the file, the line (``Script.line_of``: the line of
the key, or of the nearest enclosing key the loader recorded) and the dotted
key.

What it is not: the loader's validation (errors that stop a script loading
are ``ScriptError``) or a judge of the wording.

Error handling: ``lint`` raises nothing; a recording that fails to decode is
a finding of severity ``error``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import attrs

from waihu.api import Intent, Keyword
from waihu.dialog.library import fields, required_variables
from waihu.dialog.script import Node, Script
from waihu.media.prompt_player import PromptError, load_prompt

__all__ = ["NEGATORS", "Finding", "lint"]

Severity = Literal["error", "warning"]
# characters that negate what follows in Mandarin (and 唔 in Cantonese): the classifier
# flips or cancels a keyword right after one (waihu-script(5), "Negation")
NEGATORS = frozenset("不没别甭莫未无唔")
INCLUDED_SECTIONS = ("intents", "kb")  # tables an included file may hold
PROMPT_RATE = 8000  # Hz: recordings are decoded as the daemon decodes them, for G.711


@attrs.frozen(kw_only=True)
class Finding:
    """One thing ``lint`` found: where (file, line, dotted key) and what."""

    severity: Severity
    file: Path
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        label = "warning: " if self.severity == "warning" else ""
        return f"{where}: {label}{self.key}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        """The finding as JSON-ready data (``waihuctl script validate --json``)."""
        return {
            "severity": self.severity,
            "file": str(self.file),
            "line": self.line,
            "key": self.key,
            "message": self.message,
        }


def lint(script: Script, *, decode_recordings: bool = True) -> list[Finding]:
    """Everything suspicious about ``script``, in file order of the key's line."""
    found = _Findings(script)
    _flow(script, found)
    if decode_recordings:
        _recordings(script, found)
    _variables(script, found)
    _keywords(script, found)
    _patterns(script, found)
    _kb_heard(script, found)
    _classes_heard(script, found)
    return sorted(found.items, key=lambda f: (f.line is None, f.line or 0))


class _Findings:
    """Collects findings, each placed at the file and line of its key: the script's own
    (``Script.line_of``), or for a class the script takes from an included file, that
    file's table."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.items: list[Finding] = []
        self._seen: set[tuple[str, str]] = set()
        self._included: list[tuple[Path, list[str]]] | None = None  # read when first needed

    def add(self, key: str, message: str, severity: Severity = "warning") -> None:
        if (key, message) in self._seen:
            return
        self._seen.add((key, message))
        file, line = self._locate(key)
        self.items.append(
            Finding(severity=severity, file=file, line=line, key=key, message=message)
        )

    def _locate(self, key: str) -> tuple[Path, int | None]:
        table, _, rest = key.partition(".")
        name, _, sub = rest.partition(".")
        if table in INCLUDED_SECTIONS and f"{table}.{name}" not in self.script.sources:
            for file, lines in self._includes():  # the class comes from an included file
                found = _table_line(lines, f"{table}.{name}", sub.split(".")[0].split("[")[0])
                if found is not None:
                    return file, found
        return self.script.path, self.script.line_of(key)

    def _includes(self) -> list[tuple[Path, list[str]]]:
        """The script's included files and their lines ([script].include), as the loader
        found them; a file it cannot read again is left out (the loader read it)."""
        if self._included is None:
            self._included = []
            try:
                head = tomllib.loads(self.script.path.read_text(encoding="utf-8"))
                names = head.get("script", {}).get("include", [])
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                names = []
            for name in names if isinstance(names, list) else []:
                file = self.script.path.parent / str(name)
                try:
                    self._included.append((file, file.read_text(encoding="utf-8").splitlines()))
                except (OSError, UnicodeDecodeError):
                    continue
        return self._included


def _table_line(lines: Sequence[str], table: str, key: str) -> int | None:
    """The line of ``key`` in ``[table]`` of a TOML file's ``lines`` (of the table's header
    when ``key`` is empty or not found); None when the table is not there."""
    header = re.compile(r"\s*\[\s*" + r"\s*\.\s*".join(map(re.escape, table.split("."))) + r"\s*\]")
    start = next((n for n, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return None
    if key:
        assignment = re.compile(r"\s*" + re.escape(key) + r"\s*=")
        for n in range(start + 1, len(lines)):
            if lines[n].lstrip().startswith("["):
                break
            if assignment.match(lines[n]):
                return n + 1
    return start + 1


# ───────────────────────── the flow ─────────────────────────


def _flow(script: Script, found: _Findings) -> None:
    """Dead ends: listening nodes no reply leads out of (the loader refuses unreachable
    nodes and loops with no exit; a node only the handlers leave still loads)."""
    shared = script.handlers.on
    for name, node in script.nodes.items():
        # script-wide routes ([handlers.on], copied into every node) are handlers too
        own = [a for k, a in node.on.items() if shared.get(k) is not a]
        if node.end or not own:
            continue
        onward = {a.goto for a in own if a.goto is not None} - {name}
        if not onward and not any(a.ends for a in own):
            found.add(
                f"nodes.{name}",
                "dead end: no reply leads out of this node; only the handlers "
                "(no input, no match, turn cap, keys, [handlers.on]) end a call here",
            )


# ───────────────────────── recordings and variables ─────────────────────────


def _recordings(script: Script, found: _Findings) -> None:
    """Each recording decoded as the daemon would decode it; one finding per bad file."""
    checked: dict[Path, str | None] = {}
    for key, variant in script.variants():
        if variant.recording is None:
            continue
        path = script.path.parent / variant.recording
        if path not in checked:
            try:
                load_prompt(path, PROMPT_RATE)
                checked[path] = None
            except PromptError as exc:
                checked[path] = str(exc)
        problem = checked[path]
        if problem is not None:
            found.add(f"{key}.recording", problem, "error")


def _variables(script: Script, found: _Findings) -> None:
    """Placeholders that only a contact's own column can fill (``required_variables``:
    no non-blank ``[variables]`` default, set by no node or action)."""
    required = required_variables(script)
    for key, variant in script.variants():
        for field in sorted(fields(variant.text) & required):
            found.add(
                key,
                f"{{{field}}} has no [variables] default and no node sets it: "
                f"needs every contact to have {field!r}",
            )


# ───────────────────────── keywords ─────────────────────────


def _keywords(script: Script, found: _Findings) -> None:
    """The same keyword in two classes of a tier; one class's keyword inside another's."""
    intents = _by_name(script)
    owners: dict[str, list[tuple[Intent, Keyword]]] = {}  # keyword text → who has it
    for intent in script.intents:
        for keyword in intent.keywords:
            owners.setdefault(keyword.text, []).append((intent, keyword))
    claimed: set[tuple[str, str, str]] = set()
    inside: set[tuple[str, str, str]] = set()
    for node in script.nodes.values():
        if node.end:
            continue
        allowed = [name for name in script.allowed(node) if name in intents]
        top = [n for n in allowed if script.class_of(n) in script.always]
        for tier in (top, [n for n in allowed if n not in top]):
            _claimed_twice(script, node, [intents[n] for n in tier], found, claimed)
        _inner(script, node, allowed, owners, found, inside)


def _claimed_twice(
    script: Script,
    node: Node,
    tier: list[Intent],
    found: _Findings,
    seen: set[tuple[str, str, str]],
) -> None:
    """Keywords, and whole example replies, that two classes of one tier both have: the
    first in the node's order always takes them."""
    for kind in ("keywords", "examples"):
        first: dict[str, Intent] = {}  # text → the first class of the tier having it
        for intent in tier:
            texts = [k.text for k in intent.keywords] if kind == "keywords" else intent.examples
            for text in texts:
                owner = first.setdefault(text, intent)
                if script.class_of(owner.name) == script.class_of(intent.name) or _scoped(owner):
                    continue  # a node's own extras override a class there on purpose
                if (kind, intent.name, text) in seen:
                    continue
                seen.add((kind, intent.name, text))
                found.add(
                    _rules_key(script, intent.name, kind),
                    f"{text!r} is also {_ONE_OF[kind]} {script.class_of(owner.name)!r}, "
                    f"which comes first at node {node.name!r}: "
                    f"{script.class_of(intent.name)!r} never gets it there",
                )


_ONE_OF = {"keywords": "a keyword of", "examples": "an example of"}


def _inner(
    script: Script,
    node: Node,
    allowed: Sequence[str],
    owners: Mapping[str, list[tuple[Intent, Keyword]]],
    found: _Findings,
    seen: set[tuple[str, str, str]],
) -> None:
    """Keywords found inside a keyword of a class that comes later at ``node``.

    The classifier answers with the first class in ``allowed`` whose rules fire, so
    a reply saying the outer keyword goes to the inner keyword's class when that
    class comes first, unless negation or an exclusion keeps the inner one from
    firing. An outer class that comes first wins anyway.
    """
    place = {name: index for index, name in enumerate(allowed)}
    for text, outers in owners.items():
        for outer, _keyword in outers:
            if outer.name not in place:
                continue
            outer_class = script.class_of(outer.name)
            for at, part in _parts(text):
                for inner, inner_keyword in owners.get(part, ()):
                    inner_class = script.class_of(inner.name)
                    if (
                        place.get(inner.name, len(place)) > place[outer.name]
                        or inner_class == outer_class
                        or _scoped(inner)  # a node's own extras win there on purpose
                        or (outer.name, text, part) in seen
                        or _separated(text, at, outer_class, inner, inner_keyword)
                    ):
                        continue
                    seen.add((outer.name, text, part))
                    if _negates(text, at):
                        fix = f"give {part!r} negated = {outer_class!r}"
                    else:
                        fix = f"put {outer_class!r} first there"
                    found.add(
                        _rules_key(script, outer.name, "keywords"),
                        f"{text!r} ({outer_class}) contains {part!r} ({inner_class}) and no "
                        f"negation rule separates them: at node {node.name!r}, where "
                        f"{inner_class!r} comes first, a reply saying {text!r} is taken for "
                        f"{inner_class!r}; {fix}, or give {inner_class!r} the exclusion "
                        f"{text!r}",
                    )


def _parts(text: str) -> Iterator[tuple[int, str]]:
    """Every shorter piece of ``text`` and where it starts, but single characters: the
    classifier takes a one-character keyword only as a word of its own, never inside
    another word (a keyword is a few characters: this stays small)."""
    for start in range(len(text)):
        for end in range(start + 2, len(text) + 1):
            if end - start < len(text):
                yield start, text[start:end]


def _separated(outer_text: str, at: int, outer_class: str, inner: Intent, keyword: Keyword) -> bool:
    """Whether the classifier keeps ``keyword`` (found at ``at``) from counting inside
    ``outer_text``: the outer keyword negates it (starts with a negator, or has one right
    before it) and its negated class is the outer one's, or an exclusion covers it."""
    negated = keyword.negated if keyword.negated is not None else inner.negated
    if _negates(outer_text, at) and negated == outer_class:
        return True
    for exclusion in inner.exclusions:
        try:
            if re.search(exclusion, outer_text):
                return True
        except re.error:
            if exclusion in outer_text:
                return True
    return False


def _patterns(script: Script, found: _Findings) -> None:
    """Patterns that match an empty reply ("(好|)", ".*"): they fire on every reply."""
    for intent in script.intents:
        for index, pattern in enumerate(intent.patterns):
            try:
                empty = re.search(pattern, "") is not None
            except re.error:  # the loader refuses it; nothing to add
                continue
            if empty:
                found.add(
                    f"{_rules_key(script, intent.name, 'patterns')}[{index}]",
                    f"pattern {pattern!r} matches an empty reply, so it fires on every reply: "
                    f"everything is {script.class_of(intent.name)!r}",
                )


def _classes_heard(script: Script, found: _Findings) -> None:
    """Classes the script defines itself that no listening node hears (a library's, from
    an include, need not all be used)."""
    heard = {
        script.class_of(name)
        for node in script.nodes.values()
        if not node.end
        for name in script.allowed(node)
    }
    for intent in script.intents:
        key = f"intents.{intent.name}"
        if intent.name not in heard and key in script.sources:
            found.add(key, "heard nowhere: no node routes on it, and it is not in script.always")


def _kb_heard(script: Script, found: _Findings) -> None:
    """Knowledge-base entries whose answer is never said: no listening node both hears
    the class and leaves it to the entry (a node routing ``kb.x`` itself answers it its
    own way)."""
    answered = {
        name
        for node in script.nodes.values()
        if not node.end
        for name in script.allowed(node)
        if name not in node.on
    }
    for intent, entry in script.kb.items():
        if intent not in answered:
            found.add(
                f"kb.{entry.name}",
                f"never answered: every node that hears {intent!r} routes it itself "
                "(or no node hears it), so this entry's answer is never said",
            )


def _negates(outer_text: str, at: int) -> bool:
    """The outer keyword negates what lies at ``at``: it starts with a negator, or one
    stands right before."""
    return outer_text[0] in NEGATORS or (at > 0 and outer_text[at - 1] in NEGATORS)


def _scoped(intent: Intent) -> bool:
    """A node's extra keywords for a class ("offer/affirm")."""
    return intent.name != Script.class_of(intent.name)


def _rules_key(script: Script, intent: str, kind: str) -> str:
    """The dotted key of an intent's ``kind`` of rules (``keywords``, ``patterns``,
    ``examples``): ``intents.affirm.keywords``, ``kb.price.keywords``, and for a node's
    extras ``nodes.offer.keywords.affirm``."""
    node, slash, cls = intent.partition("/")
    if slash:
        return f"nodes.{node}.{kind}.{cls}"
    if intent in script.kb:
        return f"{intent}.{kind}"
    return f"intents.{intent}.{kind}"


def _by_name(script: Script) -> Mapping[str, Intent]:
    return {intent.name: intent for intent in script.intents}
