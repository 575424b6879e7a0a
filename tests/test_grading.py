"""Grading rules: each condition kind holds or not; the first rule with a grade wins; every
matching rule tags; no grading rule → the fallback with the reason the engine words."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from waihu.dialog.grading import DEFAULT_FALLBACK_REASON, CallFacts, Verdict, grade, matches
from waihu.dialog.script import Condition, GradeRule, load_script


def call(**changes: object) -> CallFacts:
    """An ordinary call: greeted, asked the price twice, agreed, booked, hung up by the robot."""
    facts = CallFacts(
        nodes=["greeting", "offer", "book"],
        heard=collections.Counter({"affirm": 2, "kb.price": 2}),
        refusals=1,
        silences=1,
        no_matches=2,
        turns=5,
        talk_seconds=12.5,
        said=[("greeting", "是我"), ("offer", "周四上午可以")],
        last_node="book",
        completed=True,
        hangup_by="robot",
    )
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


# Each condition: a value that holds for call() and one, as close as can be, that does not.
CONDITIONS = [
    ("reached", ("greeting", "book"), ("greeting", "bye")),
    ("reached_any", ("bye", "book"), ("bye", "later")),
    ("not_reached", ("bye",), ("bye", "offer")),
    ("ended_at", ("bye", "book"), ("offer",)),
    ("heard", {"kb.price": 2, "affirm": 1}, {"kb.price": 3}),
    ("not_heard", ("deny",), ("deny", "affirm")),
    ("refusals", 1, 2),
    ("silences", 1, 2),
    ("no_matches", 2, 3),
    ("min_turns", 5, 6),
    ("max_turns", 5, 4),
    ("min_talk_seconds", 12.5, 12.6),
    ("said", {"offer": ("周四", "周五")}, {"greeting": ("周四",)}),
    ("hangup_by", "robot", "callee"),
    ("completed", True, False),
]


@pytest.mark.parametrize(("key", "holds", "fails"), CONDITIONS, ids=[c[0] for c in CONDITIONS])
def test_each_condition_kind(key: str, holds: object, fails: object) -> None:
    assert matches(Condition(**{key: holds}), call())
    assert not matches(Condition(**{key: fails}), call())


def test_a_rule_without_conditions_always_matches_and_all_given_must_hold() -> None:
    assert matches(Condition(), CallFacts())
    assert matches(Condition(reached=("book",), refusals=1), call())
    assert not matches(Condition(reached=("book",), refusals=2), call())


def test_nothing_heard_counts_as_zero_and_no_last_node_ends_nowhere() -> None:
    empty = CallFacts()
    assert matches(Condition(not_heard=("affirm",), max_turns=0), empty)
    assert not matches(Condition(heard={"affirm": 1}), empty)
    assert not matches(Condition(ended_at=("book",)), empty)
    assert not matches(Condition(completed=True), empty)


RULES = (
    GradeRule(grade=None, tags=("price",), when=Condition(heard={"kb.price": 1})),
    GradeRule(
        grade="A",
        tags=("hot",),
        reason="asked the price and booked",
        when=Condition(reached=("book",), heard={"kb.price": 2}),
    ),
    GradeRule(
        grade="B", tags=("booked", "hot"), reason="booked", when=Condition(reached=("book",))
    ),
    GradeRule(grade="F", tags=("never",), reason="refused twice", when=Condition(refusals=2)),
)


def test_first_rule_with_a_grade_gives_grade_and_reason_every_match_adds_tags() -> None:
    verdict = grade(RULES, call(), fallback="D", fallback_tags=("interested",))
    assert verdict == Verdict(
        grade="A",
        tags=("interested", "price", "hot", "booked"),
        reason="asked the price and booked",
    )
    # the A rule no longer holds: the next matching rule with a grade gives it
    once = call(heard=collections.Counter({"kb.price": 1}))
    assert grade(RULES, once, fallback="D") == Verdict(
        grade="B", tags=("price", "booked", "hot"), reason="booked"
    )


def test_no_rule_with_a_grade_matches_takes_the_fallback_and_its_reason() -> None:
    unbooked = call(nodes=["greeting", "offer"])
    verdict = grade(
        RULES,
        unbooked,
        fallback="C",
        fallback_tags=("declined",),
        fallback_reason="no grading rule matched; grade of node bye_no",
    )
    # the tagging rule still matched: its tags count although it gave no grade
    assert verdict == Verdict(
        grade="C",
        tags=("declined", "price"),
        reason="no grading rule matched; grade of node bye_no",
    )
    assert grade((), CallFacts(), fallback="D") == Verdict(
        grade="D", tags=(), reason=DEFAULT_FALLBACK_REASON
    )


def test_rules_loaded_from_a_script_grade_a_call(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        """
[script]
start = "a"
default_grade = "E"
[intents.affirm]
keywords = ["好"]
[nodes.a]
say = [{ text = "好吗" }]
on = { affirm = "ok", default = "a" }
[nodes.ok]
say = [{ text = "好的" }]
end = true
grade = "B"
[[grading]]
grade = "A"
tags = ["hot"]
reason = "agreed at once"
when = { reached = ["ok"], max_turns = 1 }
[[grading]]
tags = ["slow"]
when = { min_turns = 2 }
""",
        encoding="utf-8",
    )
    script = load_script(path)
    quick = CallFacts(nodes=["a", "ok"], turns=1, last_node="ok")
    slow = CallFacts(nodes=["a", "a", "ok"], turns=3, last_node="ok")
    assert grade(script.grading, quick, fallback="B") == Verdict(
        grade="A", tags=("hot",), reason="agreed at once"
    )
    assert grade(script.grading, slow, fallback="B").tags == ("slow",)
    assert grade(script.grading, slow, fallback="B").grade == "B"
