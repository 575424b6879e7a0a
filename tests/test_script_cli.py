"""``waihuctl script validate | chat | test | graph``: local commands, no daemon.

They run as ``main([...])`` with standard input replaced by the typed lines.
No daemon runs, and ``ControlClient`` is replaced by a tripwire: these
commands must not connect. The classifier is the real built-in plugin
(``trained`` by default, ``keywords`` when asked), found through its entry
point; the Chinese script is written by the tests, the Korean one is the
shipped demo.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from waihu.control import client
from waihu.control.client import main
from waihu.dialog.script import Script, load_script

from conftest import SCRIPTS

DEMO = SCRIPTS / "demo-ko.toml"

ZH = """\
[script]
name = "cli-demo"
language = "zh"
start = "greeting"
priority = ["kb", "affirm", "deny"]
always = ["dnc"]

[variables]
company = "平安"

[handlers.no_input]
limit = 2
then = "bye_silence"

[handlers.on]
dnc = { dnc = true, say = [{ text = "好的，不再打扰。" }], hangup = true }

[intents.affirm]
keywords = ["可以", "感兴趣"]

[intents.deny]
keywords = ["不用"]

[intents.dnc]
keywords = ["别再打"]

[nodes.greeting]
say = [{ text = "您好，我是{company}的客服，您感兴趣吗？" }]
on = { affirm = "bye_yes", deny = "bye_no", default = "repeat" }

[nodes.bye_yes]
say = [{ text = "好的，稍后联系您。" }]
end = true
grade = "A"
tags = ["interested"]

[nodes.bye_no]
say = [{ text = "打扰了。" }]
end = true
grade = "C"

[nodes.bye_silence]
say = [{ text = "再见。" }]
end = true
grade = "D"

[kb.price]
keywords = ["多少钱"]
say = [{ text = "每月十元。" }]
then = "repeat"

[[grading]]
grade = "A"
tags = ["hot"]
reason = "asked the price and agreed"
when = { reached = ["bye_yes"], heard = { "kb.price" = 1 } }
"""

GREETING = "robot: 您好，我是平安的客服，您感兴趣吗？"


def line_of(start: str, text: str = ZH) -> int:
    """The number of the first line of ``text`` starting with ``start``."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(start))


@pytest.fixture(autouse=True)
def no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a local command tried to connect to waihud")

    monkeypatch.setattr(client, "ControlClient", connect)


@pytest.fixture
def demo() -> Script:
    return load_script(DEMO)


@pytest.fixture
def zh(tmp_path: Path) -> Path:
    path = tmp_path / "cli-demo.toml"
    path.write_text(ZH, encoding="utf-8")
    return path


def run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    typed: str = "",
) -> tuple[int, list[str], str]:
    """Run ``waihuctl ARGV`` with ``typed`` as its input: exit status, lines, stderr."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


# ───────────────────────── validate ─────────────────────────


def test_validate_says_ok_with_the_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["script", "validate", str(DEMO)]) == 0
    assert capsys.readouterr().out == f"{DEMO}: OK (6 nodes, 2 kb entries)\n"


def test_validate_prints_every_error_with_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(SCRIPTS / "prompts", tmp_path / "prompts")
    broken = tmp_path / "broken.toml"
    broken.write_text(
        DEMO.read_text(encoding="utf-8")
        .replace('default = "bye_unclear"', 'default = "bye_unclaer"')
        .replace('affirm = "bye_interested", deny = "bye_declined", default = "ask_again"',
                 'afirm = "bye_interested", deny = "bye_declined", default = "ask_again"'),
        encoding="utf-8",
    )  # fmt: skip
    assert main(["script", "validate", str(broken), str(DEMO)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{broken}:35: nodes.ask_again.on.default: no node named 'bye_unclaer'" in out
    assert any(line.startswith(f"{broken}:29: nodes.greeting.on.afirm: ") for line in out)
    assert all(line.startswith(f"{broken}:") for line in out[:-1])
    assert out[-1] == f"{DEMO}: OK (6 nodes, 2 kb entries)"  # the next file is still checked


def test_validate_warnings_pass_unless_strict(
    zh: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    zh.write_text(ZH.replace("您好，我是", "{name}您好，我是"), encoding="utf-8")
    line = line_of('say = [{ text = "您好')
    warning = (
        f"{zh}:{line}: warning: nodes.greeting.say[0]: {{name}} has no [variables] default and no "
        "node sets it: needs every contact to have 'name'"
    )
    code, out, _ = run(monkeypatch, capsys, "script", "validate", str(zh))
    assert (code, out) == (0, [warning, f"{zh}: OK (4 nodes, 1 kb entries, 1 warning)"])
    code, out, _ = run(monkeypatch, capsys, "script", "validate", "--strict", str(zh))
    assert (code, out) == (1, [warning, f"{zh}: FAILED (4 nodes, 1 kb entries, 1 warning)"])


def test_validate_as_json(
    zh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    zh.write_text(ZH.replace("您好，我是", "{name}您好，我是"), encoding="utf-8")
    broken = tmp_path / "broken.toml"
    broken.write_text(ZH.replace('start = "greeting"', 'start = "greting"'), encoding="utf-8")
    code, out, _ = run(monkeypatch, capsys, "script", "validate", "--json", str(zh), str(broken))
    document = json.loads("\n".join(out))
    assert code == 1 and document["ok"] is False
    good, bad = document["files"]
    assert (good["file"], good["nodes"], good["kb"], good["errors"]) == (str(zh), 4, 1, [])
    assert [(w["severity"], w["line"], w["key"]) for w in good["warnings"]] == [
        ("warning", line_of('say = [{ text = "您好'), "nodes.greeting.say[0]")
    ]
    assert good["warnings"][0]["message"].endswith("needs every contact to have 'name'")
    assert [(e["severity"], e["file"], e["line"], e["key"]) for e in bad["errors"]] == [
        ("error", str(broken), line_of("start = "), "script.start")
    ]
    assert bad["errors"][0]["message"] == "no node named 'greting'"


def test_the_global_json_flag_before_the_command_counts_for_validate(
    zh: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, "--json", "script", "validate", str(zh))
    document = json.loads("\n".join(out))
    assert code == 0 and document["ok"] is True
    assert [f["file"] for f in document["files"]] == [str(zh)]


def test_validate_holds_a_cases_file_to_the_script_beside_it(
    zh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = tmp_path / "cli-demo.cases.toml"
    cases.write_text('[[case]]\nreplies = ["可以"]\nend = "bye_yes"\n', encoding="utf-8")
    code, out, _ = run(monkeypatch, capsys, "script", "validate", str(zh), str(cases))
    assert (code, out) == (0, [
        f"{zh}: OK (4 nodes, 1 kb entries)",
        f"{cases}: OK (1 case for {zh})",
    ])  # fmt: skip
    cases.write_text('[[case]]\nname = "typo"\nreplies = ["可以"]\nend = "bye_yse"\n', "utf-8")
    code, out, _ = run(monkeypatch, capsys, "script", "validate", str(cases))
    assert (code, out) == (1, [f"{cases}: case 1 (typo): end: the script has no node 'bye_yse'"])
    alone = tmp_path / "alone.cases.toml"
    alone.write_text('[[case]]\nreplies = ["可以"]\n', encoding="utf-8")
    code, out, _ = run(monkeypatch, capsys, "script", "validate", "--strict", str(alone))
    assert (code, out) == (1, [
        f"{alone}: warning: no script {tmp_path / 'alone.toml'} beside it that loads: "
        "the cases are not held to one",
        f"{alone}: FAILED (1 case, 1 warning)",
    ])  # fmt: skip


def test_validate_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["script", "validate", str(missing)]) == 1
    assert capsys.readouterr().out == f"{missing}: cannot read: No such file or directory\n"


def test_validate_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["script", "validate"])
    assert exited.value.code == 2
    assert "FILE" in capsys.readouterr().err


# ───────────────────────── chat ─────────────────────────


def test_chat_explains_each_reply_before_the_answer(
    zh: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    typed = "多少钱\n不是很感兴趣\n"
    code, out, err = run(monkeypatch, capsys, "script", "chat", str(zh), "--nlu", "keywords",
                         typed=typed)  # fmt: skip
    assert (code, err) == (0, "")
    assert out == [
        GREETING,
        "callee: 多少钱",
        "  → kb.price (keyword '多少钱', score 1.00)",
        f"    kb.price → resume:repeat ⇒ node greeting (line {line_of('[nodes.greeting]')})",
        "robot: 每月十元。",
        GREETING,
        "callee: 不是很感兴趣",
        "  → deny (keyword '感兴趣', negated, score 0.50)",
        f"    deny → goto:bye_no ⇒ node bye_no (line {line_of('[nodes.bye_no]')})",
        "robot: 打扰了。",
        "end: node bye_no, grade C, tags none",
        "reason: no grading rule matched; grade of node bye_no",
    ]


def test_chat_ends_with_the_grading_rule_and_its_reason(
    zh: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, "script", "chat", str(zh), typed="多少钱\n可以\n")
    assert code == 0
    assert out[-2:] == [
        "end: node bye_yes, grade A, tags interested, hot",
        "reason: asked the price and agreed",
    ]


def test_chat_kb_answer_then_the_question_again_in_korean(
    demo: Script, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, "script", "chat", str(DEMO),
                       typed="가격이 얼마 예요\n아니요\n")  # fmt: skip
    greeting = "robot: " + demo.nodes["greeting"].say[0].text
    assert code == 0
    assert out[:2] == [greeting, "callee: 가격이 얼마 예요"]
    assert out[2].startswith("  → kb.price (")
    assert out[3:8] == [
        "    kb.price → resume:repeat ⇒ node greeting (line 22)",
        "robot: " + demo.kb["kb.price"].say[0].text,
        greeting,
        "callee: 아니요",
        "  → deny (keyword '아니요', score 1.00)",
    ]
    assert out[-2] == "end: node bye_declined, grade C, tags declined"


def test_chat_empty_lines_are_silence_at_once(
    demo: Script, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, out, _ = run(monkeypatch, capsys, "script", "chat", str(DEMO), "--nlu", "keywords",
                       typed="\n\n")  # fmt: skip
    took = time.monotonic() - started
    silence = f"  ({demo.silence_timeout:g} s of silence)"
    assert code == 0
    assert out == [
        "robot: " + demo.nodes["greeting"].say[0].text,
        silence,
        "  → no input",
        "    reprompt ⇒ node greeting (line 22)",
        "robot: " + demo.nodes["greeting"].reprompt[0].text,
        silence,
        "  → no input",
        "    no_input:limit → goto:bye_silence ⇒ node bye_silence (line 60)",
        "robot: " + demo.nodes["bye_silence"].say[0].text,
        "end (silence): node bye_silence, grade D, tags no-answer",
        "reason: no grading rule matched; grade of node bye_silence",
    ]
    assert took < demo.silence_timeout  # the silence timer fired without anybody waiting


def test_chat_end_of_input_is_hanging_up(
    demo: Script, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, "script", "chat", str(DEMO), "--nlu", "keywords",
                       typed="오늘 날씨가 맑아요\n")  # fmt: skip
    assert code == 0
    assert out[1:] == [
        "callee: 오늘 날씨가 맑아요",
        "  → default (nothing matched)",
        "    default → goto:ask_again ⇒ node ask_again (line 31)",
        "robot: " + demo.nodes["ask_again"].say[0].text,
        "hung up at node ask_again: grade D, tags none",
        "reason: no grading rule matched; the script's default grade",
    ]


def test_chat_fills_variables_and_needs_no_recordings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    draft = tmp_path / "draft.toml"  # no prompts/ beside it
    text = DEMO.read_text(encoding="utf-8")
    draft.write_text(text.replace("안녕하세요, 와이후", "{name} 님 안녕하세요, 와이후"), "utf-8")
    code, out, _ = run(monkeypatch, capsys, "script", "chat", str(draft), "--nlu", "keywords",
                       "--var", "name=김민수")  # fmt: skip
    assert code == 0
    assert out[0].startswith("robot: 김민수 님 안녕하세요, 와이후")


def test_chat_refuses_an_unknown_classifier_and_a_broken_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, "script", "chat", str(DEMO), "--nlu", "bert")
    assert (code, out) == (1, [])
    assert err.startswith("waihuctl: no nlu type 'bert' (installed: keywords")
    broken = tmp_path / "broken.toml"
    broken.write_text(DEMO.read_text(encoding="utf-8").replace('start = "greeting"', ""))
    code, out, _ = run(monkeypatch, capsys, "script", "chat", str(broken))
    assert code == 1
    assert out == [f"{broken}:5: script.start: required key is missing"]


def test_chat_falls_back_to_keywords_while_no_trained_classifier_is_installed(
    zh: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from waihu.control import script_tools

    installed = script_tools.collect_provider_types(script_tools.make_plugin_manager())["nlu"]
    only_keywords = {"nlu": {"keywords": installed["keywords"]}}  # as before trained existed
    monkeypatch.setattr(script_tools, "collect_provider_types", lambda _pm: only_keywords)
    code, out, err = run(monkeypatch, capsys, "script", "chat", str(zh), typed="不是很感兴趣\n")
    assert (code, err) == (0, "")
    assert out[2] == "  → deny (keyword '感兴趣', negated, score 0.50)"
    code, out, err = run(monkeypatch, capsys, "script", "chat", str(zh), "--nlu", "trained")
    assert (code, out, err) == (1, [], "waihuctl: no nlu type 'trained' (installed: keywords)\n")
