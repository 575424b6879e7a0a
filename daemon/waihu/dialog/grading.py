"""Grading a call by the script's ``[[grading]]`` rules over what happened in it.

The dialogue engine keeps a ``CallFacts`` up to date as the call goes (nodes
entered, classes heard, refusals, silences, unmatched replies, turns, the
callee's talk time, what was said where, how it ended); ``grade`` reads the
rules in order: the first matching rule that carries a grade gives the grade
and its reason, every matching rule adds its tags. When no rule with a grade
matches, the caller's fallback grade applies (an end node's grade, else the
script's default) with the reason the caller words.

A rule's ``when`` holds only when every condition it gives holds; a rule
without conditions always matches (a catch-all at the end of the list).

What it is not: the engine (which fills the facts and decides the fallback) or
the loader (which checks that rules name real nodes and classes). It is pure:
no clock, no I/O, callable at any moment of a call — the callee may hang up
mid-line and the call is graded all the same.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import attrs

from waihu.dialog.script import Condition, GradeRule

__all__ = ["DEFAULT_FALLBACK_REASON", "CallFacts", "Verdict", "grade", "matches"]

DEFAULT_FALLBACK_REASON = "no grading rule matched; the script's default grade"


@attrs.define(kw_only=True)
class CallFacts:
    """What happened in a call so far, as grading rules see it (filled by the engine)."""

    nodes: list[str] = attrs.Factory(list)  # nodes entered, in order (repeats kept)
    heard: collections.Counter[str] = attrs.Factory(collections.Counter)  # class → replies
    refusals: int = 0  # replies of a refusal class ([script].refusals)
    silences: int = 0  # no-inputs
    no_matches: int = 0  # replies that matched no class
    turns: int = 0  # callee replies
    talk_seconds: float = 0.0  # how long the callee spoke
    said: list[tuple[str, str]] = attrs.Factory(list)  # (node, normalised reply)
    last_node: str | None = None
    completed: bool = False  # an end node finished its line
    hangup_by: str | None = None  # "callee" | "robot" once known


@attrs.frozen(kw_only=True)
class Verdict:
    """A call's grade, its tags and why (the reason is filed with the call)."""

    grade: str
    tags: tuple[str, ...]
    reason: str


def matches(when: Condition, facts: CallFacts) -> bool:
    """Whether every condition ``when`` gives holds for ``facts``."""
    entered = set(facts.nodes)
    checks = (
        all(n in entered for n in when.reached),
        not when.reached_any or any(n in entered for n in when.reached_any),
        not any(n in entered for n in when.not_reached),
        not when.ended_at or facts.last_node in when.ended_at,
        all(facts.heard[cls] >= count for cls, count in when.heard.items()),
        not any(facts.heard[cls] for cls in when.not_heard),
        when.refusals is None or facts.refusals >= when.refusals,
        when.silences is None or facts.silences >= when.silences,
        when.no_matches is None or facts.no_matches >= when.no_matches,
        when.min_turns is None or facts.turns >= when.min_turns,
        when.max_turns is None or facts.turns <= when.max_turns,
        when.min_talk_seconds is None or facts.talk_seconds >= when.min_talk_seconds,
        all(_said(facts, node, words) for node, words in when.said.items()),
        when.hangup_by is None or facts.hangup_by == when.hangup_by,
        when.completed is None or facts.completed == when.completed,
    )
    return all(checks)


def _said(facts: CallFacts, node: str, words: Sequence[str]) -> bool:
    return any(at == node and any(w in text for w in words) for at, text in facts.said)


def grade(
    rules: Iterable[GradeRule],
    facts: CallFacts,
    *,
    fallback: str,
    fallback_tags: Sequence[str] = (),
    fallback_reason: str = DEFAULT_FALLBACK_REASON,
) -> Verdict:
    """The verdict of ``rules`` (in order) over ``facts``.

    The first matching rule with a grade gives the grade and the reason; the
    tags are ``fallback_tags`` (an end node's, given by the caller) followed by
    the tags of every matching rule, each once, in order. When no rule with a
    grade matches: ``fallback`` and ``fallback_reason`` (the engine words it,
    e.g. "no grading rule matched; grade of node bye_ok").
    """
    verdict: tuple[str, str] | None = None
    tags = dict.fromkeys(fallback_tags)
    for rule in rules:
        if not matches(rule.when, facts):
            continue
        tags.update(dict.fromkeys(rule.tags))
        if verdict is None and rule.grade is not None:
            verdict = (rule.grade, rule.reason)
    given, reason = verdict or (fallback, fallback_reason)
    return Verdict(grade=given, tags=tuple(tags), reason=reason)
