"""``waihuctl script validate`` and ``waihuctl script chat``: local commands, no daemon.

They run as ``main([...])`` with standard input replaced by the typed lines,
and once as a real process fed through a pipe. No daemon runs, and
``ControlClient`` is replaced by a tripwire: these commands must not connect.
The chat's classifier is the real built-in ``keywords`` plugin, found through
its entry point.
"""

from __future__ import annotations

import io
import shutil
import subprocess
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


@pytest.fixture(autouse=True)
def no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a local command tried to connect to waihud")

    monkeypatch.setattr(client, "ControlClient", connect)


@pytest.fixture
def demo() -> Script:
    return load_script(DEMO)


def chat(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    typed: str,
    *args: str,
) -> tuple[int, list[str], str]:
    """Run ``waihuctl script chat`` with ``typed`` as its input: exit status, lines, stderr."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    code = main(["script", "chat", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


# ───────────────────────── validate ─────────────────────────


def test_validate_says_ok_with_the_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["script", "validate", str(DEMO)]) == 0
    assert capsys.readouterr().out == f"{DEMO}: OK (6 nodes, 2 kb entries)\n"


def test_validate_prints_every_problem_with_file_and_key(
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
    assert f"{broken}: nodes.ask_again.on.default: no node named 'bye_unclaer'" in out
    assert f"{broken}: nodes.greeting.on.afirm: unknown intent 'afirm'" in out
    assert all(line.startswith(f"{broken}: ") for line in out[:-1])
    assert out[-1] == f"{DEMO}: OK (6 nodes, 2 kb entries)"  # the next file is still checked


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


def test_chat_affirm_reaches_grade_a(
    demo: Script, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = chat(monkeypatch, capsys, "네\n", str(DEMO))
    assert (code, err) == (0, "")
    assert out == [
        "robot: " + demo.nodes["greeting"].say[0].text,
        "callee: 네",
        "  → affirm",
        "robot: " + demo.nodes["bye_interested"].say[0].text,
        "end: node bye_interested, grade A, tags interested",
    ]


def test_chat_kb_answer_then_the_question_again(
    demo: Script, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = chat(monkeypatch, capsys, "가격이 얼마 예요\n아니요\n", str(DEMO))
    greeting = "robot: " + demo.nodes["greeting"].say[0].text
    assert code == 0
    assert out == [
        greeting,
        "callee: 가격이 얼마 예요",
        "  → kb.price",
        "robot: " + demo.kb["kb.price"].say[0].text,
        greeting,
        "callee: 아니요",
        "  → deny",
        "robot: " + demo.nodes["bye_declined"].say[0].text,
        "end: node bye_declined, grade C, tags declined",
    ]


def test_chat_empty_lines_are_silence_at_once(
    demo: Script, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, out, _ = chat(monkeypatch, capsys, "\n\n", str(DEMO))
    took = time.monotonic() - started
    silence = f"  ({demo.silence_timeout:g} s of silence)"
    assert code == 0
    assert out == [
        "robot: " + demo.nodes["greeting"].say[0].text,
        silence,
        "robot: " + demo.nodes["greeting"].reprompt[0].text,
        silence,
        "robot: " + demo.nodes["bye_silence"].say[0].text,
        "end after silence: node bye_silence, grade D, tags no-answer",
    ]
    # the silence timer fired without anybody waiting for it
    assert took < demo.silence_timeout


def test_chat_one_silence_then_an_answer(
    demo: Script, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = chat(monkeypatch, capsys, "\n네\n", str(DEMO))
    assert code == 0
    assert out[2] == "robot: " + demo.nodes["greeting"].reprompt[0].text
    assert out[-1] == "end: node bye_interested, grade A, tags interested"


def test_chat_end_of_input_is_hanging_up(
    demo: Script, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = chat(monkeypatch, capsys, "오늘 날씨가 맑아요\n", str(DEMO))
    assert code == 0
    assert out[1:] == [
        "callee: 오늘 날씨가 맑아요",
        "  → default",
        "robot: " + demo.nodes["ask_again"].say[0].text,
        "hung up at node ask_again: grade D (the script's default_grade)",
    ]


def test_chat_fills_variables_and_needs_no_recordings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    draft = tmp_path / "draft.toml"  # no prompts/ beside it
    text = DEMO.read_text(encoding="utf-8")
    draft.write_text(text.replace("안녕하세요, 와이후", "{name} 님 안녕하세요, 와이후"), "utf-8")
    code, out, _ = chat(monkeypatch, capsys, "", str(draft), "--var", "name=김민수")
    assert code == 0
    assert out[0].startswith("robot: 김민수 님 안녕하세요, 와이후")


def test_chat_refuses_an_unknown_classifier_and_a_broken_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = chat(monkeypatch, capsys, "네\n", str(DEMO), "--nlu", "bert")
    assert (code, out) == (1, [])
    assert err == "waihuctl: no nlu type 'bert' (installed: keywords)\n"
    broken = tmp_path / "broken.toml"
    broken.write_text(DEMO.read_text(encoding="utf-8").replace('start = "greeting"', ""))
    code, out, _ = chat(monkeypatch, capsys, "네\n", str(broken))
    assert code == 1
    assert out == [f"{broken}: script.start: required key is missing"]


def test_chat_as_a_process_reading_a_pipe(demo: Script) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "waihu.control.client", "script", "chat", str(DEMO)],
        input="가격이 얼마 예요\n\n네\n",
        capture_output=True,
        encoding="utf-8",
        timeout=60,
    )
    assert (run.returncode, run.stderr) == (0, "")
    lines = run.stdout.splitlines()
    assert lines[1:3] == ["callee: 가격이 얼마 예요", "  → kb.price"]
    assert f"  ({demo.silence_timeout:g} s of silence)" in lines
    assert lines[-1] == "end: node bye_interested, grade A, tags interested"
