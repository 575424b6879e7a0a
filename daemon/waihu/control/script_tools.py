"""What ``waihuctl script validate | chat | test | graph`` do, on this machine.

All four work on script files alone and never connect to waihud: a script
can be checked, talked to, tested and drawn before it is installed, on any
machine with waihu.

``validate`` loads each file as the daemon would (``load_script``, recordings
included), then asks ``lint`` what is legal but probably wrong. Errors read
``FILE:LINE: KEY: MESSAGE``, warnings ``FILE:LINE: warning: KEY: MESSAGE``;
a file without errors ends with ``FILE: OK (N nodes, M kb entries)`` (and its
count of warnings). A cases file (``NAME.cases.toml``) is read and held to
the script beside it instead, so ``validate zh/*.toml`` checks a template's
cases too. Exit status 1 when a file has an error, or with ``--strict`` a
warning; ``--json`` prints one JSON document instead.

``chat`` runs the real ``DialogueEngine`` with the real classifier (``--nlu
TYPE``, default ``trained``, else ``keywords`` while no ``trained`` plugin is
installed) and the text speaker: each line read from standard input is what
the callee said, and under it the engine's step is explained — the class,
the words or pattern that matched, whether negation applied, the source and
score, the chain of actions, the node it landed on and that node's line in
the file — then the robot's answer. An empty line is silence (the clock
jumps by the node's silence window: nobody waits). At the end: the node, the
grade, the tags and the reason; end of input is the callee hanging up.

``test`` plays each case of a cases file (``waihu.dialog.cases``) through the
same engine and classifier and prints ``PASS`` or ``FAIL`` with what
differed; exit status 1 if any case failed or a file could not be used.

``graph`` draws the flow (``waihu.dialog.graph``) as SVG, PNG or DOT text.

What it is not: the command table (``local``), the checks (``dialog.lint``),
the case format (``dialog.cases``) or a voice test (that is a real call:
``waihuctl call`` against a softphone).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import pluggy
import trio
from trio.testing import MockClock

from waihu.api import Classifier, ProviderContext
from waihu.control.render import emit
from waihu.dialog.cases import (
    CasesError,
    DialogueCase,
    check_cases,
    differences,
    load_cases,
    play,
)
from waihu.dialog.engine import Step
from waihu.dialog.graph import FORMATS, Format, GraphError, flow_graph, render
from waihu.dialog.lint import Finding, lint
from waihu.dialog.script import DEFAULT_INTENT, Script, ScriptError, load_script
from waihu.plugins import PluginError, collect_provider_types, make_plugin_manager

__all__ = ["DEFAULT_NLU", "FALLBACK_NLU", "chat", "draw", "run_cases", "validate"]

DEFAULT_NLU = "trained"  # rules and the model trained from the script's examples
FALLBACK_NLU = "keywords"  # the rules alone: what runs while no trained classifier is installed
EXIT_FAILED = 1
CALLEE_PROMPT = "callee: "
ROBOT_PREFIX = "robot: "
CASES_SUFFIX = ".cases.toml"  # dialogue test cases kept beside a script (waihu-script(5))
STDOUT = "-"  # graph -o -: write to standard output
SUFFIX_FORMATS: dict[str, Format] = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}
_LINE_PROBLEM = re.compile(r"(?P<line>\d+): (?P<key>[^:]+): (?P<message>.*)", re.DOTALL)
_KEY_PROBLEM = re.compile(r"(?P<key>[\w.\[\]/-]+): (?P<message>.*)", re.DOTALL)


# ───────────────────────── validate ─────────────────────────


def validate(files: list[str], strict: bool = False, as_json: bool = False) -> int:
    """Check each script file: errors, then warnings; one summary line per good file.

    Returns 1 when a file has an error (with ``strict``, a warning too), else 0.
    """
    reports = [_validate_one(file) for file in files]
    failed = any(r["errors"] or (strict and r["warnings"]) for r in reports)
    if as_json:
        emit(json.dumps({"ok": not failed, "files": reports}, ensure_ascii=False, indent=2),
             sys.stdout)  # fmt: skip
        return EXIT_FAILED if failed else 0
    for report in reports:
        for problem in (*report["errors"], *report["warnings"]):
            emit(problem["text"], sys.stdout)
        if report["errors"]:
            continue
        count = len(report["warnings"])
        verdict = "OK" if not count else ("FAILED" if strict else "OK")
        warned = f", {count} warning{'s' if count != 1 else ''}" if count else ""
        if "cases" in report:
            held = f" for {report['script']}" if report["script"] else ""
            what = f"{report['cases']} case{'s' if report['cases'] != 1 else ''}{held}"
        else:
            what = f"{report['nodes']} nodes, {report['kb']} kb entries"
        emit(f"{report['file']}: {verdict} ({what}{warned})", sys.stdout)
    return EXIT_FAILED if failed else 0


def _validate_one(file: str) -> dict[str, Any]:
    if file.endswith(CASES_SUFFIX):
        return _validate_cases(file)
    report: dict[str, Any] = {"file": file, "errors": [], "warnings": []}
    try:
        script = load_script(file)
    except ScriptError as exc:
        report["errors"] = [_parse_problem(file, p) for p in exc.problems]
        return report
    findings = lint(script)
    report["errors"] = [_finding(f) for f in findings if f.severity == "error"]
    report["warnings"] = [_finding(f) for f in findings if f.severity == "warning"]
    report["nodes"], report["kb"] = len(script.nodes), len(script.kb)
    return report


def _validate_cases(file: str) -> dict[str, Any]:
    """A cases file (``NAME.cases.toml``, so that ``validate zh/*.toml`` takes them in
    stride): read, and held to the script beside it (``NAME.toml``) when there is one."""
    script_file = file.removesuffix(CASES_SUFFIX) + ".toml"
    report: dict[str, Any] = {"file": file, "errors": [], "warnings": [], "script": None}
    try:
        cases = load_cases(file)
    except CasesError as exc:
        report["errors"] = [_parse_problem(file, p) for p in exc.problems]
        return report
    report["cases"] = len(cases)
    try:
        script = load_script(script_file, check_recordings=False)
    except ScriptError:
        message = f"no script {script_file} beside it that loads: the cases are not held to one"
        report["warnings"] = [
            {"severity": "warning", "file": file, "line": None, "key": "", "message": message,
             "text": f"{file}: warning: {message}"}
        ]  # fmt: skip
        return report
    report["script"] = script_file
    problems = check_cases(cases, file, nodes=list(script.nodes), classes=_classes(script))
    report["errors"] = [_parse_problem(file, p) for p in problems]
    return report


def _classes(script: Script) -> list[str]:
    """Every class a reply to ``script`` can be taken for, as cases name them."""
    return sorted({script.class_of(i.name) for i in script.intents} | {DEFAULT_INTENT})


def _finding(finding: Finding) -> dict[str, Any]:
    return {**finding.as_dict(), "text": str(finding)}


def _parse_problem(file: str, problem: str) -> dict[str, Any]:
    """A loader problem (``FILE:LINE: KEY: MESSAGE`` or ``FILE: KEY: MESSAGE``) as data;
    ``text`` keeps it as written."""
    parsed: dict[str, Any] = {"severity": "error", "file": file, "line": None, "key": "",
                              "message": problem, "text": problem}  # fmt: skip
    for prefix in (f"{file}:", f"{Path(file)}:"):
        if problem.startswith(prefix):
            rest = problem[len(prefix) :].lstrip()
            break
    else:
        return parsed  # an included file's problem: kept whole
    found = _LINE_PROBLEM.fullmatch(rest)
    if found:
        parsed["line"] = int(found["line"])
    else:
        found = _KEY_PROBLEM.fullmatch(rest)
    if found:
        parsed["key"], parsed["message"] = found["key"], found["message"]
    else:
        parsed["message"] = rest
    return parsed


# ───────────────────────── the classifier ─────────────────────────


class _ToolError(Exception):
    """The command cannot go on; the message says why."""


def _classifier_type(nlu: str | None) -> type[Any]:
    """The classifier type named ``nlu``; None: ``DEFAULT_NLU``, else ``FALLBACK_NLU``
    while no default one is installed."""
    try:
        types = collect_provider_types(make_plugin_manager())["nlu"]
    except (PluginError, pluggy.PluginValidationError) as exc:
        raise _ToolError(f"plugin error: {exc}") from None
    if nlu is None:
        nlu = DEFAULT_NLU if DEFAULT_NLU in types or FALLBACK_NLU not in types else FALLBACK_NLU
    if nlu not in types:
        raise _ToolError(f"no nlu type {nlu!r} (installed: {', '.join(sorted(types)) or 'none'})")
    return types[nlu]


async def _make_classifier(cls: type[Any], script: Script, state_dir: Path) -> Classifier:
    """A classifier of type ``cls`` with its default settings, fitted to ``script`` (in a
    worker thread: a trained model takes a moment)."""
    try:
        config = cls.Config()
    except TypeError:
        raise _ToolError(
            f"nlu type {cls.type_name!r} needs settings; the script tools run a classifier "
            "with its defaults only"
        ) from None
    context = ProviderContext(
        name="script-tools",
        state_dir=state_dir,
        log=logging.getLogger(f"waihu.nlu.{cls.type_name}"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    classifier: Classifier = cls(config, context)
    await trio.to_thread.run_sync(classifier.fit, script.intents)
    return classifier


def _load_for_talk(file: str) -> Script | None:
    """The script, recordings not needed (a draft may lack them); None after printing
    its problems."""
    try:
        return load_script(file, check_recordings=False)
    except ScriptError as exc:
        for problem in exc.problems:
            emit(problem, sys.stdout)
        return None


def _run_standing(
    main: Callable[[MockClock, Path], Any],
) -> Any:
    """Run ``main(clock, state_dir)`` in trio on a clock that stands still."""
    clock = MockClock(rate=0.0)  # only a silence moves it
    with tempfile.TemporaryDirectory(prefix="waihu-script-") as state_dir:
        return trio.run(main, clock, Path(state_dir), clock=clock)


# ───────────────────────── chat ─────────────────────────


def chat(file: str, nlu: str | None = None, variables: Mapping[str, str] | None = None) -> int:
    """Talk to the script in ``file`` over standard input and output; the exit status."""
    script = _load_for_talk(file)
    if script is None:
        return EXIT_FAILED
    try:
        classifier_type = _classifier_type(nlu)
    except _ToolError as exc:
        emit(f"waihuctl: {exc}", sys.stderr)
        return EXIT_FAILED
    out = sys.stdout

    async def main(clock: MockClock, state_dir: Path) -> int:
        classifier = await _make_classifier(classifier_type, script, state_dir)
        console = _Console(script, out)
        played = await play(
            script,
            classifier,
            _reader(sys.stdin, out, console.flush),
            clock,
            variables=dict(variables or {}),
            echo=console.robot,
            on_step=console.step,
            on_silence=lambda seconds: emit(f"  ({seconds:g} s of silence)", out),
        )
        console.flush()
        if played.ending is not None:
            ending = played.ending
            how = "" if ending.reason == "end" else f" ({ending.reason})"
            emit(f"end{how}: node {ending.node}, grade {ending.grade}, "
                 f"tags {', '.join(ending.tags) or 'none'}", out)  # fmt: skip
            if ending.transfer:
                emit(f"transfer to {ending.transfer}", out)
            reason = ending.grade_reason
        else:
            verdict = played.engine.verdict(hangup_by="callee")
            emit(f"hung up at node {played.engine.node}: grade {verdict.grade}, "
                 f"tags {', '.join(verdict.tags) or 'none'}", out)  # fmt: skip
            reason = verdict.reason
        emit(f"reason: {reason or _NO_RULE}", out)
        return 0

    try:
        return int(_run_standing(main))
    except _ToolError as exc:
        emit(f"waihuctl: {exc}", sys.stderr)
        return EXIT_FAILED


_NO_RULE = "no grading rule matched (the end node's grade, else the script's default_grade)"


def _reader(stdin: TextIO, out: TextIO, before: Callable[[], None]) -> Callable[[], Any]:
    """The callee's replies read from ``stdin``: a prompt when it is a terminal, the line
    echoed when it is not (a pipe's lines are not on screen)."""
    interactive = stdin.isatty()

    async def next_reply() -> str | None:
        before()
        if interactive:
            out.write(CALLEE_PROMPT)
            out.flush()
        line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
        if not line:
            return None
        text = line.strip()
        if text and not interactive:
            emit(CALLEE_PROMPT + text, out)
        return text

    return next_reply


class _Console:
    """Prints each step's explanation before the robot's answer to it.

    The engine says its answer while handling a reply and reports the step
    after; robot lines are held until then, so a reply, what it was taken for,
    and the answer read top to bottom.
    """

    def __init__(self, script: Script, out: TextIO) -> None:
        self.script = script
        self.out = out
        self._held: list[str] = []

    def robot(self, text: str) -> None:
        self._held.append(text)

    def flush(self) -> None:
        for text in self._held:
            emit(ROBOT_PREFIX + text, self.out)
        self._held.clear()

    def step(self, step: Step) -> None:
        for line in explain(self.script, step):
            emit(line, self.out)
        self.flush()


def explain(script: Script, step: Step) -> list[str]:
    """A step as the chat shows it: what the reply was taken for, then where it led."""
    lines = []
    decision = step.decision
    if decision is not None:
        match = decision.match
        if match is None:
            lines.append(f"  → {DEFAULT_INTENT} (nothing matched)")
        else:
            how = [f"{match.source} {match.matched!r}" if match.matched else match.source]
            if match.negated:
                how.append("negated")
            how.append(f"score {match.score:.2f}")
            lines.append(f"  → {decision.intent} ({', '.join(how)})")
    else:
        lines.append(f"  → {step.event.replace('_', ' ')}")
    route = f"route {decision.route}" if decision is not None else step.event
    chain = " → ".join(step.chain or (route,))
    line = script.sources.get(f"nodes.{step.node}")
    at = f" (line {line})" if line is not None else ""
    lines.append(f"    {chain} ⇒ node {step.node}{at}")
    return lines


# ───────────────────────── test ─────────────────────────


def run_cases(file: str, cases: list[str], nlu: str | None = None) -> int:
    """Play every case of the ``cases`` files against the script in ``file``; PASS or FAIL
    per case with what differed. The exit status: 1 if any failed or could not run."""
    script = _load_for_talk(file)
    if script is None:
        return EXIT_FAILED
    loaded: list[tuple[str, list[DialogueCase]]] = []
    problems: list[str] = []
    for cases_file in cases:
        try:
            found = load_cases(cases_file)
        except CasesError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(
            check_cases(found, cases_file, nodes=list(script.nodes), classes=_classes(script))
        )
        loaded.append((cases_file, found))
    if problems:
        for problem in problems:
            emit(problem, sys.stdout)
        return EXIT_FAILED
    try:
        classifier_type = _classifier_type(nlu)
    except _ToolError as exc:
        emit(f"waihuctl: {exc}", sys.stderr)
        return EXIT_FAILED
    out = sys.stdout

    async def main(clock: MockClock, state_dir: Path) -> tuple[int, int]:
        classifier = await _make_classifier(classifier_type, script, state_dir)
        passed = failed = 0
        for cases_file, found in loaded:
            for case in found:
                wrong = await _run_case(script, classifier, clock, case)
                if wrong:
                    failed += 1
                    emit(f"FAIL {cases_file}: {case.label}", out)
                    for difference in wrong:
                        emit(f"    {difference}", out)
                else:
                    passed += 1
                    emit(f"PASS {cases_file}: {case.label}", out)
        return passed, failed

    try:
        passed, failed = _run_standing(main)
    except _ToolError as exc:
        emit(f"waihuctl: {exc}", sys.stderr)
        return EXIT_FAILED
    emit(f"{passed} passed, {failed} failed", out)
    return EXIT_FAILED if failed else 0


async def _run_case(
    script: Script, classifier: Classifier, clock: MockClock, case: DialogueCase
) -> list[str]:
    replies = iter(case.replies)

    async def next_reply() -> str | None:
        return next(replies, None)

    variables = case.variables(script.variables, sorted(script.placeholders))
    played = await play(script, classifier, next_reply, clock, variables=variables)
    return differences(case, played.outcome())


# ───────────────────────── graph ─────────────────────────


def draw(file: str, output: str, format: str | None = None) -> int:
    """Draw the script in ``file`` to ``output`` (``-``: standard output) as ``format``
    (default: by the output's suffix, else SVG; DOT text to standard output)."""
    fmt = _graph_format(output, format)
    if fmt is None:
        emit(f"waihuctl: unknown format {format!r} (one of {', '.join(FORMATS)})", sys.stderr)
        return EXIT_FAILED
    script = _load_for_talk(file)
    if script is None:
        return EXIT_FAILED
    try:
        drawn = render(flow_graph(script), fmt)
    except GraphError as exc:
        emit(f"waihuctl: {exc}", sys.stderr)
        return EXIT_FAILED
    if output == STDOUT:
        if fmt == "dot":
            sys.stdout.write(drawn.decode("utf-8"))
        else:  # an image, for a pipe: bytes as they are
            sys.stdout.flush()
            sys.stdout.buffer.write(drawn)
            sys.stdout.buffer.flush()
        return 0
    try:
        Path(output).write_bytes(drawn)
    except OSError as exc:
        emit(f"waihuctl: cannot write {output}: {exc.strerror}", sys.stderr)
        return EXIT_FAILED
    emit(f"{output}: {fmt}, {len(script.nodes)} nodes, {len(script.kb)} kb entries", sys.stdout)
    return 0


def _graph_format(output: str, format: str | None) -> Format | None:
    if format is not None:
        return next((f for f in FORMATS if f == format.lower()), None)
    if output == STDOUT:
        return "dot"
    return SUFFIX_FORMATS.get(Path(output).suffix.lower(), "svg")
