"""How often the Chinese templates understand a callee: accuracy over the evaluation set.

Run: ``.venv/bin/python benchmarks/nlu_eval.py [--nlu trained|keywords] [--json]
[--min-accuracy 0.95]``.

Reads the replies of ``tests/data/nlu_eval_zh.toml`` (each: a template, the kind of
question just asked, what the callee said, the class a careful author routes it on),
loads each template ``etc/waihu/scripts/zh/<template>.toml`` as the daemon does
(recordings not needed), finds the node that asks each kind of question through
``tests/data/nlu_eval_nodes.toml`` (``[insurance] identity = "greeting"`` …), builds the
classifier type ``--nlu`` through the plugin registry with its default settings, fits it
with the script's intents, and classifies every reply with the engine's own
``classify_reply`` — the one place a reply gets its class in a call, in ``script chat`` and
in ``script test``. Prints the overall accuracy, the accuracy per template and per expected
class, a confusion table (expected × got, only the classes involved in a miss) and every
miss with what matched; ``--json`` prints the same figures as JSON.

``tests/test_nlu_eval.py`` runs the same ``evaluate`` and holds the templates to
``TARGET_ACCURACY``.

What it is not: a test of the engine's routing (the class is what is measured, not the
node reached next; that is ``waihuctl script test``), nor a speed benchmark.

Error handling: a bad evaluation set, a bad node map, a template that does not load, or an
nlu type that is not installed is reported with the file and key (or the item number) and
exit status 2 — there is no figure to give. Otherwise the exit status is 0 whatever the
accuracy, unless ``--min-accuracy`` is given and not reached (1).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pluggy
import trio
from rich.console import Console
from rich.table import Table

from waihu.api import Classifier, Match, WaihuError
from waihu.dialog.engine import classify_reply
from waihu.dialog.script import DEFAULT_INTENT, Script, ScriptError, load_script
from waihu.plugins import PluginError, collect_provider_types, make_plugin_manager
from waihu.providers import provider_context

__all__ = [
    "CLASSES",
    "CONTEXTS",
    "DEFAULT_CLASS",
    "TARGET_ACCURACY",
    "EvalError",
    "Outcome",
    "Reply",
    "Report",
    "evaluate",
    "load_nodes",
    "load_replies",
    "main",
    "print_report",
]

REPO = Path(__file__).resolve().parent.parent
REPLIES_FILE = REPO / "tests" / "data" / "nlu_eval_zh.toml"
NODES_FILE = REPO / "tests" / "data" / "nlu_eval_nodes.toml"
SCRIPTS_DIR = REPO / "etc" / "waihu" / "scripts" / "zh"
DEFAULT_NLU = "trained"  # what the shipped templates are written for
TARGET_ACCURACY = 0.95  # issue 6: replies the authors never saw take the right class

# The question kinds each template asks (the node map names one node per pair).
CONTEXTS: Mapping[str, tuple[str, ...]] = {
    "insurance": ("identity", "interest"),
    "real_estate": ("identity", "interest", "appointment"),
    "education": ("identity", "interest", "appointment"),
    "after_sales": ("identity", "satisfaction"),
    "appointment": ("identity", "confirm", "appointment"),
}
DEFAULT_CLASS = DEFAULT_INTENT  # the expected class of a reply that should match nothing
INTENT_CLASSES = (
    "affirm",
    "deny",
    "busy",
    "call_later",
    "wrong_person",
    "already_have",
    "dnc",
    "complaint",
    "repeat",
)
KB_CLASSES = ("kb.price", "kb.who", "kb.robot", "kb.how_number", "kb.address")
CLASSES = (*INTENT_CLASSES, *KB_CLASSES, DEFAULT_CLASS)  # the standard classes, in report order
# kb.address ("where are you") exists only where the callee is asked to come somewhere
ADDRESS_TEMPLATES = frozenset({"real_estate", "education", "appointment"})
REPLY_KEYS = frozenset({"template", "context", "text", "expect"})

WIDE_OUTPUT = 160  # characters per line when printing to a file: 16 confusion columns fit
EXIT_BELOW_TARGET = 1
EXIT_NO_FIGURE = 2


class EvalError(WaihuError):
    """The evaluation cannot run; the message names the file and key or item."""


@attrs.frozen
class Reply:
    """One line of the evaluation set: ``text`` said after a question of kind ``context``."""

    number: int  # 1-based position in the file, for messages
    template: str
    context: str
    text: str
    expect: str


@attrs.frozen
class Outcome:
    """What the classifier made of one reply: the class and the candidate that won."""

    reply: Reply
    node: str
    got: str
    match: Match | None

    @property
    def correct(self) -> bool:
        """The reply took the class its annotator expected."""
        return self.got == self.reply.expect

    @property
    def matched(self) -> str:
        """What matched, for a person: ``keyword '感兴趣' (negated, score 1.00)`` or ``nothing``."""
        if self.match is None:
            return "nothing"
        what = f"{self.match.source} {self.match.matched!r}" if self.match.matched else (
            self.match.source
        )  # fmt: skip
        negated = "negated, " if self.match.negated else ""
        return f"{what} ({negated}score {self.match.score:.2f})"


@attrs.frozen
class Report:
    """The outcome of every reply of one run, and the figures drawn from them."""

    nlu: str
    outcomes: tuple[Outcome, ...]

    @property
    def correct(self) -> int:
        """How many replies took the expected class."""
        return sum(o.correct for o in self.outcomes)

    @property
    def accuracy(self) -> float:
        """The share of replies that took the expected class (0.0 for no replies)."""
        return self.correct / len(self.outcomes) if self.outcomes else 0.0

    @property
    def misses(self) -> tuple[Outcome, ...]:
        """The replies that took another class, in file order."""
        return tuple(o for o in self.outcomes if not o.correct)

    def by_template(self) -> dict[str, tuple[int, int]]:
        """Template → (correct, replies), in the order of ``CONTEXTS``."""
        return _tally(self.outcomes, lambda o: o.reply.template, CONTEXTS)

    def by_class(self) -> dict[str, tuple[int, int]]:
        """Expected class → (correct, replies), in the order of ``CLASSES``."""
        return _tally(self.outcomes, lambda o: o.reply.expect, CLASSES)

    def confusion(self) -> dict[str, dict[str, int]]:
        """Expected → got → count, over the classes that take part in at least one miss.

        The diagonal (right answers) of those classes is kept, so a row reads as "of the
        replies expected to be X, n were right and m went to Y".
        """
        involved = {o.reply.expect for o in self.misses} | {o.got for o in self.misses}
        order = _ordered(involved)
        counts = Counter(
            (o.reply.expect, o.got)
            for o in self.outcomes
            if o.reply.expect in involved and o.got in involved
        )
        table: dict[str, dict[str, int]] = {}
        for expected in order:
            row = {got: counts[expected, got] for got in order if counts[expected, got]}
            if row:
                table[expected] = row
        return table

    def as_json(self) -> dict[str, Any]:
        """The figures as plain data (``--json``)."""

        def share(correct: int, total: int) -> dict[str, Any]:
            return {"correct": correct, "replies": total, "accuracy": correct / total}

        return {
            "nlu": self.nlu,
            "replies": len(self.outcomes),
            "correct": self.correct,
            "accuracy": self.accuracy,
            "by_template": {t: share(*ct) for t, ct in self.by_template().items()},
            "by_class": {c: share(*ct) for c, ct in self.by_class().items()},
            "confusion": self.confusion(),
            "misses": [
                {
                    "template": o.reply.template,
                    "context": o.reply.context,
                    "node": o.node,
                    "text": o.reply.text,
                    "expected": o.reply.expect,
                    "got": o.got,
                    "matched": o.matched,
                }
                for o in self.misses
            ],
        }


def _ordered(names: Iterable[str]) -> list[str]:
    """Standard classes in report order, then any others by name."""
    rank = {name: index for index, name in enumerate(CLASSES)}
    return sorted(set(names), key=lambda name: (rank.get(name, len(rank)), name))


def _tally(
    outcomes: Iterable[Outcome], key: Any, order: Iterable[str]
) -> dict[str, tuple[int, int]]:
    totals: Counter[str] = Counter()
    rights: Counter[str] = Counter()
    for outcome in outcomes:
        totals[key(outcome)] += 1
        rights[key(outcome)] += outcome.correct
    known = [name for name in order if totals[name]]
    rest = sorted(name for name in totals if name not in known)
    return {name: (rights[name], totals[name]) for name in (*known, *rest)}


# ───────────────────────────── the two data files ─────────────────────────────


def load_replies(path: Path) -> list[Reply]:
    """The evaluation set in ``path``, checked; EvalError lists every bad item.

    Each ``[[reply]]`` needs exactly the keys template, context, text and expect; the
    template and context must be a pair of ``CONTEXTS``; expect a name of ``CLASSES``
    that the template has (kb.address only where there is an address); the text must be
    non-empty and appear once per template and context.
    """
    data = _read_toml(path)
    items = data.get("reply")
    if not isinstance(items, list) or set(data) != {"reply"}:
        raise EvalError(f"{path}: expected only [[reply]] tables")
    problems: list[str] = []
    replies: list[Reply] = []
    seen: dict[tuple[str, str, str], int] = {}
    for number, item in enumerate(items, start=1):
        where = f"{path}: reply {number}"
        if set(item) != REPLY_KEYS:
            missing = ", ".join(sorted(REPLY_KEYS - set(item))) or "none"
            unknown = ", ".join(sorted(set(item) - REPLY_KEYS)) or "none"
            problems.append(f"{where}: keys missing: {missing}; unknown keys: {unknown}")
            continue
        if not all(isinstance(item[key], str) for key in REPLY_KEYS):
            problems.append(f"{where}: template, context, text and expect must be strings")
            continue
        reply = Reply(number, item["template"], item["context"], item["text"], item["expect"])
        problem = _reply_problem(reply)
        key = (reply.template, reply.context, reply.text)
        if problem is None and key in seen:
            problem = f"text {reply.text!r} repeats reply {seen[key]} at the same question"
        if problem is not None:
            problems.append(f"{where}: {problem}")
            continue
        seen[key] = number
        replies.append(reply)
    if problems:
        raise EvalError("\n".join(problems))
    return replies


def _reply_problem(reply: Reply) -> str | None:
    if reply.template not in CONTEXTS:
        return f"template {reply.template!r} is not one of {', '.join(CONTEXTS)}"
    if reply.context not in CONTEXTS[reply.template]:
        asked = ", ".join(CONTEXTS[reply.template])
        return f"context {reply.context!r}: template {reply.template} asks only {asked}"
    if reply.expect not in CLASSES:
        return f"expect {reply.expect!r} is not a standard class or {DEFAULT_CLASS!r}"
    if reply.expect == "kb.address" and reply.template not in ADDRESS_TEMPLATES:
        return f"expect 'kb.address': template {reply.template} has no address entry"
    if not reply.text.strip():
        return "text is empty"
    return None


def load_nodes(path: Path) -> dict[tuple[str, str], str]:
    """(template, context) → node name from ``path`` (``[insurance] identity = "greeting"``).

    EvalError names the key of an unknown template or context or a value not a string.
    """
    data = _read_toml(path)
    nodes: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    for template, table in data.items():
        if template not in CONTEXTS or not isinstance(table, dict):
            problems.append(f"{path}: [{template}] is not a template table")
            continue
        for context, node in table.items():
            if context not in CONTEXTS[template]:
                asked = ", ".join(CONTEXTS[template])
                problems.append(f"{path}: {template}.{context}: {template} asks only {asked}")
            elif not isinstance(node, str):
                problems.append(f"{path}: {template}.{context} must be a node name")
            else:
                nodes[template, context] = node
    if problems:
        raise EvalError("\n".join(problems))
    return nodes


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise EvalError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise EvalError(f"{path}: {exc}") from None


# ───────────────────────────── the run ─────────────────────────────


def evaluate(
    replies: Sequence[Reply],
    *,
    nlu: str = DEFAULT_NLU,
    scripts_dir: Path = SCRIPTS_DIR,
    nodes: Mapping[tuple[str, str], str],
) -> Report:
    """Classify every reply at the node of its template that asks its kind of question.

    Each template that ``replies`` use is loaded from ``scripts_dir`` and gets its own
    classifier of type ``nlu``, fitted with its intents, as a call would. EvalError when
    the nlu type is missing, a template does not load, or a (template, context) has no
    node in ``nodes`` or names one the script lacks.
    """
    make = _classifier_type(nlu)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="waihu-nlu-eval-") as state_dir:
        prepared: dict[str, tuple[Script, Classifier]] = {}
        for reply in replies:
            if reply.template not in prepared:
                script = _load_template(scripts_dir / f"{reply.template}.toml")
                prepared[reply.template] = (script, _classifier(make, script, Path(state_dir)))
            script, classifier = prepared[reply.template]
            name = nodes.get((reply.template, reply.context))
            if name is None:
                raise EvalError(
                    f"node map: no node for {reply.template}.{reply.context} (reply {reply.number})"
                )
            if name not in script.nodes:
                raise EvalError(
                    f"node map: {reply.template}.{reply.context} = {name!r}:"
                    f" {script.path} has no such node"
                )
            decision = classify_reply(script, classifier, script.nodes[name], reply.text)
            outcomes.append(Outcome(reply, name, decision.intent, decision.match))
    return Report(nlu=nlu, outcomes=tuple(outcomes))


def _load_template(path: Path) -> Script:
    try:
        return load_script(path, check_recordings=False)  # the NLU needs no audio
    except ScriptError as exc:
        raise EvalError("\n".join(exc.problems)) from None


def _classifier_type(nlu: str) -> type[Any]:
    try:
        types = collect_provider_types(make_plugin_manager())["nlu"]
    except (PluginError, pluggy.PluginValidationError) as exc:
        raise EvalError(f"plugin error: {exc}") from None
    if nlu not in types:
        raise EvalError(f"no nlu type {nlu!r} (installed: {', '.join(sorted(types)) or 'none'})")
    return types[nlu]


def _classifier(cls: type[Any], script: Script, state_dir: Path) -> Classifier:
    """A classifier of type ``cls`` with its default settings, fitted to ``script``."""
    try:
        config = cls.Config()
    except TypeError:
        raise EvalError(f"nlu type {cls.type_name!r} has settings without defaults") from None
    context = provider_context(
        "nlu", f"eval-{script.name}", state_dir=state_dir, cpu_limiter=trio.CapacityLimiter(1)
    )
    classifier: Classifier = cls(config, context)
    classifier.fit(script.intents)
    return classifier


# ───────────────────────────── printing ─────────────────────────────


def _percent(correct: int, total: int) -> str:
    return f"{correct / total:.1%}" if total else "-"


def print_report(report: Report, console: Console) -> None:
    """The figures as tables: accuracy, per template, per class, confusion, misses."""
    total = len(report.outcomes)
    console.print(
        f"nlu {report.nlu}: {report.correct}/{total} replies right,"
        f" accuracy {_percent(report.correct, total)}"
    )
    for title, rows in (("template", report.by_template()), ("class", report.by_class())):
        table = Table(title=f"accuracy per {title}")
        for column in (title, "right", "replies", "accuracy"):
            table.add_column(column, justify="left" if column == title else "right")
        for name, (correct, count) in rows.items():
            table.add_row(name, str(correct), str(count), _percent(correct, count))
        console.print(table)
    confusion = report.confusion()
    if confusion:
        got = _ordered(g for row in confusion.values() for g in row)
        table = Table(title="confusion (rows: expected, columns: got)")
        table.add_column("expected")
        for name in got:
            table.add_column(name, justify="right")
        for expected, row in confusion.items():
            table.add_row(expected, *(str(row.get(name, "")) for name in got))
        console.print(table)
    # one line per miss, not a table: a reply must be read whole, and a line can be grepped
    console.print(f"misses ({len(report.misses)}):" if report.misses else "no misses")
    for miss in report.misses:
        r = miss.reply
        console.print(
            f"  {r.template}/{r.context} ({miss.node}) 「{r.text}」 expected {r.expect},"
            f" got {miss.got} — {miss.matched}",
            markup=False,
            highlight=False,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation and print it; the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nlu", default=DEFAULT_NLU, help=f"nlu type (default {DEFAULT_NLU})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--min-accuracy", type=float, metavar="X", help="exit 1 when accuracy is below X (0–1)"
    )
    parser.add_argument(
        "--template",
        action="append",
        choices=list(CONTEXTS),
        help="only the replies of this template (repeatable; default: all)",
    )
    parser.add_argument("--replies", type=Path, default=REPLIES_FILE, help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=Path, default=NODES_FILE, help=argparse.SUPPRESS)
    parser.add_argument("--scripts-dir", type=Path, default=SCRIPTS_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        replies = load_replies(args.replies)
        if args.template:
            replies = [r for r in replies if r.template in args.template]
        nodes = load_nodes(args.nodes)
        report = evaluate(replies, nlu=args.nlu, scripts_dir=args.scripts_dir, nodes=nodes)
    except EvalError as exc:
        print(exc, file=sys.stderr)
        return EXIT_NO_FIGURE
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: room for the confusion table's columns
            console = Console(width=WIDE_OUTPUT)
        print_report(report, console)
    if args.min_accuracy is not None and report.accuracy < args.min_accuracy:
        return EXIT_BELOW_TARGET
    return 0


if __name__ == "__main__":
    sys.exit(main())
