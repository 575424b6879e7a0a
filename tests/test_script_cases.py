"""``waihu.dialog.cases``: the dialogue test-case file, its checks, and playing a case.

The loader is fed files written here and must name the file, the case and
the key of every problem; ``differences`` names what an outcome got wrong;
``play`` drives the real engine with the real ``keywords`` classifier on a
clock that stands still, and a ``waihuctl script test`` run ties them
together (PASS/FAIL per case, exit status).
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio.testing import MockClock

from waihu.api import Classifier, ProviderContext
from waihu.control.client import main
from waihu.dialog.cases import (
    CasesError,
    DialogueCase,
    Outcome,
    check_cases,
    differences,
    load_cases,
    play,
)
from waihu.dialog.script import Script, load_script

SCRIPT = """\
[script]
name = "cases-demo"
language = "zh"
start = "greeting"
priority = ["kb", "affirm", "deny"]
always = ["dnc"]

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
say = [{ text = "{name}您好，您感兴趣吗？" }]
on = { affirm = "book", deny = "bye_no", default = "repeat" }

[nodes.book]
say = [{ text = "那我约您明天上午，可以吗？" }]
on = { affirm = "bye_yes", deny = "bye_no", default = "bye_no" }

[nodes.bye_yes]
say = [{ text = "好的，明天见。" }]
end = true
grade = "A"
tags = ["booked"]

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
reason = "asked the price and booked"
when = { reached = ["bye_yes"], heard = { "kb.price" = 1 } }
"""

CASES = """\
[[case]]
name = "price then yes twice"
vars = { name = "王先生" }
replies = ["多少钱", "可以", "可以"]
path = ["greeting", "book", "bye_yes"]
end = "bye_yes"
grade = "A"
tags = ["hot", "booked"]
intents = ["kb.price", "affirm", "affirm"]
dnc = false

[[case]]
name = "do not call"
replies = ["以后别再打了"]
path = ["greeting"]
grade = "D"
dnc = true

[[case]]
replies = ["", "", "可以"]
end = "bye_silence"
"""


@pytest.fixture
def script(tmp_path: Path) -> Script:
    path = tmp_path / "cases-demo.toml"
    path.write_text(SCRIPT, encoding="utf-8")
    return load_script(path)


def write(tmp_path: Path, text: str, name: str = "cases-demo.cases.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(CasesError) as raised:
        load_cases(path)
    return raised.value.problems


# ───────────────────────── the file ─────────────────────────


def test_cases_load_in_file_order_with_their_expectations(tmp_path: Path) -> None:
    first, second, third = load_cases(write(tmp_path, CASES))
    assert first == DialogueCase(
        number=1,
        name="price then yes twice",
        vars={"name": "王先生"},
        replies=("多少钱", "可以", "可以"),
        path=("greeting", "book", "bye_yes"),
        end="bye_yes",
        grade="A",
        tags=("hot", "booked"),
        intents=("kb.price", "affirm", "affirm"),
        dnc=False,
    )
    assert (second.label, second.dnc, second.path, second.end) == (
        "case 2 (do not call)",
        True,
        ("greeting",),
        None,
    )
    assert (third.label, third.replies, third.grade, third.tags) == (
        "case 3",
        ("", "", "可以"),
        None,
        None,
    )


def test_every_problem_names_the_file_the_case_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, """\
[[case]]
name = "ok"
replies = ["是"]

[[case]]
name = "bad replies"
replies = "是"
colour = "red"

[[case]]
replies = ["是", 3]

[[case]]
name = "bad grade"
replies = []
grade = "Z"
""")  # fmt: skip
    assert problems(path) == [
        f"{path}: case 2 (bad replies): replies: must be an array, not a string",
        f"{path}: case 2 (bad replies): unknown key colour",
        f"{path}: case 3: replies: must be a string, not an integer",
        f"{path}: case 4 (bad grade): grade: must be one of A, B, C, D, E, F, not 'Z'",
    ]


def test_a_file_without_cases_or_with_other_tables(tmp_path: Path) -> None:
    empty = write(tmp_path, "# nothing yet\n")
    assert problems(empty) == [f"{empty}: no [[case]] tables: nothing to test"]
    other = write(tmp_path, '[cases]\nreplies = ["是"]\n')
    assert problems(other) == [
        f"{other}: cases: unknown section (a cases file holds [[case]] tables only)"
    ]
    table = write(tmp_path, '[case]\nreplies = ["是"]\n')
    assert problems(table) == [f"{table}: case: must be an array of tables [[case]]"]


def test_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.cases.toml"
    assert problems(missing) == [f"{missing}: cannot read: No such file or directory"]
    broken = write(tmp_path, "[[case]\n")
    assert problems(broken)[0].startswith(f"{broken}: ")


def test_cases_are_held_to_the_script(tmp_path: Path, script: Script) -> None:
    path = write(tmp_path, """\
[[case]]
name = "typos"
replies = ["可以", ""]
path = ["greeting", "bok"]
end = "bye_yess"
intents = ["afirm", "affirm"]
""")  # fmt: skip
    classes = ["affirm", "deny", "dnc", "kb.price", "default"]
    assert check_cases(load_cases(path), path, nodes=list(script.nodes), classes=classes) == [
        f"{path}: case 1 (typos): path[1]: the script has no node 'bok'",
        f"{path}: case 1 (typos): end: the script has no node 'bye_yess'",
        f"{path}: case 1 (typos): intents[0]: the script has no class 'afirm'",
        f"{path}: case 1 (typos): intents: 2 classes for 1 non-empty replies",
    ]
    assert check_cases(load_cases(write(tmp_path, CASES)), path, nodes=list(script.nodes),
                       classes=classes) == []  # fmt: skip


def test_variables_default_to_the_script_then_a_stand_in() -> None:
    case = DialogueCase(number=1, name="", vars={"name": "王"}, replies=(), path=None, end=None,
                        grade=None, tags=None, intents=None, dnc=None)  # fmt: skip
    assert case.variables({"company": "平安", "name": "先生"}, ["city", "company", "name"]) == {
        "city": "测试",
        "company": "平安",
        "name": "王",
    }


# ───────────────────────── differences ─────────────────────────

OUTCOME = Outcome(path=("greeting", "book", "bye_no"), end="bye_no", grade="C",
                  tags=("declined",), reason="no grading rule matched",
                  intents=("affirm", "deny"), dnc=False, completed=True)  # fmt: skip


def expect(**given: Any) -> DialogueCase:
    fields: dict[str, Any] = {"path": None, "end": None, "grade": None, "tags": None,
                              "intents": None, "dnc": None, **given}  # fmt: skip
    return DialogueCase(number=1, name="", vars={}, replies=("可以", "不用"), **fields)


def test_an_outcome_as_expected_has_no_differences() -> None:
    case = expect(path=("greeting", "book", "bye_no"), end="bye_no", grade="C",
                  tags=("declined",), intents=("affirm", "deny"), dnc=False)  # fmt: skip
    assert differences(case, OUTCOME) == []
    assert differences(expect(), OUTCOME) == []  # nothing expected, nothing checked
    assert differences(expect(intents=("affirm",)), OUTCOME) == []  # the first N


def test_each_difference_is_named() -> None:
    assert differences(expect(path=("greeting", "bye_no")), OUTCOME) == [
        "path: expected greeting → bye_no, got greeting → book → bye_no"
    ]
    assert differences(expect(end="bye_yes"), OUTCOME) == ["end: expected bye_yes, got bye_no"]
    hung_up = attrs.evolve(OUTCOME, completed=False, end="book")
    assert differences(expect(end="bye_yes"), hung_up) == [
        "end: expected bye_yes, got book (the callee hung up there)"
    ]
    assert differences(expect(grade="A"), OUTCOME) == [
        "grade: expected A, got C (no grading rule matched)"
    ]
    assert differences(expect(tags=("declined", "hot", "vip")), OUTCOME) == [
        "tags: missing hot, vip (got declined)"
    ]
    assert differences(expect(tags=("hot",)), OUTCOME) == ["tags: missing hot (got declined)"]
    assert differences(expect(intents=("affirm", "affirm")), OUTCOME) == [
        "intents[1]: expected affirm, got deny"
    ]
    assert differences(expect(intents=("affirm", "deny", "deny")), OUTCOME) == [
        "intents: expected 3 classified replies, the call heard 2"
    ]
    assert differences(expect(dnc=True), OUTCOME) == ["dnc: expected true, got false"]


# ───────────────────────── playing ─────────────────────────


def keywords_classifier(script: Script, tmp_path: Path) -> Classifier:
    from waihu.plugins import collect_provider_types, make_plugin_manager

    cls = collect_provider_types(make_plugin_manager())["nlu"]["keywords"]
    context = ProviderContext(name="test", state_dir=tmp_path, log=logging.getLogger("test"),
                              cpu_limiter=trio.CapacityLimiter(1))  # fmt: skip
    classifier: Classifier = cls(cls.Config(), context)
    classifier.fit(script.intents)
    return classifier


async def test_play_a_conversation_to_its_end(
    script: Script, tmp_path: Path, mock_clock: MockClock
) -> None:
    replies = iter(["多少钱", "", "可以", "可以", "never heard"])
    asked: list[int] = []

    async def next_reply() -> str | None:
        asked.append(1)
        return next(replies, None)

    said: list[str] = []
    silences: list[float] = []
    clock = mock_clock  # pytest-trio's: stands still until jumped
    with trio.fail_after(60):  # mock seconds: the silences jump the clock by 6 each
        played = await play(script, keywords_classifier(script, tmp_path), next_reply, clock,
                            variables={"name": "王先生"}, echo=said.append,
                            on_silence=silences.append)  # fmt: skip
    assert played.ending is not None and played.ending.node == "bye_yes"
    assert said[0] == "王先生您好，您感兴趣吗？"
    assert silences == [script.nodes["greeting"].silence_timeout]
    assert played.nodes == ["greeting", "book", "bye_yes"]
    assert [s.event for s in played.steps] == ["reply", "no_input", "reply", "reply"]
    assert played.outcome() == Outcome(
        path=("greeting", "book", "bye_yes"), end="bye_yes", grade="A",
        tags=("booked", "hot"), reason="asked the price and booked",
        intents=("kb.price", "affirm", "affirm"), dnc=False, completed=True,
    )  # fmt: skip
    assert len(asked) == 4  # the fifth reply was never asked for: the call had ended


async def test_replies_running_out_is_the_callee_hanging_up(
    script: Script, tmp_path: Path, mock_clock: MockClock
) -> None:
    replies = iter(["可以"])

    async def next_reply() -> str | None:
        return next(replies, None)

    clock = mock_clock  # pytest-trio's: stands still until jumped
    with trio.fail_after(60):  # mock seconds: the silences jump the clock by 6 each
        played = await play(script, keywords_classifier(script, tmp_path), next_reply, clock,
                            variables={"name": "王"})  # fmt: skip
    assert played.ending is None
    outcome = played.outcome()
    assert (outcome.path, outcome.end, outcome.completed) == (("greeting", "book"), "book", False)
    assert (outcome.grade, outcome.dnc) == (script.default_grade, False)


async def test_a_dnc_action_stands_when_the_callee_hangs_up_after_it(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    path = tmp_path / "dnc-then-on.toml"
    path.write_text(SCRIPT.replace('deny = "bye_no", default = "repeat"',
                                   'deny = { dnc = true, goto = "book" }, default = "repeat"'),
                    encoding="utf-8")  # fmt: skip
    script = load_script(path)
    replies = iter(["不用"])

    async def next_reply() -> str | None:
        return next(replies, None)

    with trio.fail_after(60):
        played = await play(script, keywords_classifier(script, tmp_path), next_reply,
                            mock_clock, variables={"name": "王"})  # fmt: skip
    assert played.ending is None
    assert (played.outcome().end, played.outcome().dnc) == ("book", True)


# ───────────────────────── waihuctl script test ─────────────────────────


def run_test(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, list[str]]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = main(["script", "test", *argv, "--nlu", "keywords"])
    return code, capsys.readouterr().out.splitlines()


def test_script_test_passes_every_case(
    tmp_path: Path, script: Script, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cases = write(tmp_path, CASES)
    code, out = run_test(capsys, monkeypatch, str(script.path), str(cases))
    assert (code, out) == (0, [
        f"PASS {cases}: case 1 (price then yes twice)",
        f"PASS {cases}: case 2 (do not call)",
        f"PASS {cases}: case 3",
        "3 passed, 0 failed",
    ])  # fmt: skip


def test_script_test_names_what_differed_and_fails(
    tmp_path: Path, script: Script, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cases = write(tmp_path, CASES.replace('path = ["greeting", "book", "bye_yes"]',
                                          'path = ["greeting", "bye_yes"]')
                  .replace('dnc = true', 'dnc = false'))  # fmt: skip
    more = write(tmp_path, '[[case]]\nreplies = ["不用"]\ngrade = "C"\n', "more.cases.toml")
    code, out = run_test(capsys, monkeypatch, str(script.path), str(cases), str(more))
    assert (code, out) == (1, [
        f"FAIL {cases}: case 1 (price then yes twice)",
        "    path: expected greeting → bye_yes, got greeting → book → bye_yes",
        f"FAIL {cases}: case 2 (do not call)",
        "    dnc: expected false, got true",
        f"PASS {cases}: case 3",
        f"PASS {more}: case 1",
        "2 passed, 2 failed",
    ])  # fmt: skip


def test_script_test_refuses_bad_cases_before_running_any(
    tmp_path: Path, script: Script, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    good = write(tmp_path, CASES)
    bad = write(tmp_path, '[[case]]\nname = "x"\nreplies = ["可以"]\nend = "nowhere"\n',
                "bad.cases.toml")  # fmt: skip
    code, out = run_test(capsys, monkeypatch, str(script.path), str(good), str(bad))
    assert (code, out) == (1, [f"{bad}: case 1 (x): end: the script has no node 'nowhere'"])
