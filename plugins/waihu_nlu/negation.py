"""Negation scope and A-not-A questions in Chinese replies, decided at a keyword's match site.

All functions take the compact reply (normalised, no spaces: ``Reply.compact``)
and the match's place in it.

Negation: a negator (不, 没, 没有, 别, 甭, 莫, 未, 无, 唔, 不是, 并不, 从没 …)
before a match, possibly across a short gap of degree or modal words (不是很感兴趣,
没太大兴趣, 不怎么需要, 不太想要), negates it; a negator before that negator
(不是不, 也不是没, 可没说不要) is counted too, so an even count restores the
meaning. A keyword that begins with a negator (不需要) is the negated form
itself: only what stands before it counts. The scan stops at punctuation, so
"不知道，有兴趣" does not negate 兴趣.

A-not-A: X不X / X没X is a yes-no question (好不好用, 买不买, 有没有, 是不是),
so neither "不好" inside it, "好用" after it nor "是" before 不是 is a
statement; but 不X不X (不用不用, 不要不要) is a repeated refusal, not the
question "用不用". Only X不X itself is seen, whatever X is: no word list.
Nor is X不X了 at the end of a clause a question: "没时间带他去不去了" is "(go?) —
not going any more", the refusal 不去了 that 了 marks as a changed plan. Only 了
right at the clause end counts: "去不去了啊" and "去不去了你说" still ask.

Negation after a match is read in one construction only: a universal with 都
(哪天都, 随时都, 什么时候都) and a negator right after it says "at no time"
(哪天都不来, 随时都没空), which negates the match the way a negator before it
does. 都 after other words with a negator (好的都不要?) is rare and left alone;
也 after a yes (行，也不贵) is a second statement, not a negation of the first.

What it is not: a parser. A negator inside the matched words, or negation
after them other than across 都 (感兴趣才怪), is not seen.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "A_NOT_A_INFIXES",
    "NEGATOR_CHARS",
    "in_question_form",
    "negations_before",
    "negator_after",
    "negator_spans",
    "repeats_refusal",
]

# Longest first, so "不是" is taken whole rather than as "是" + "不".
NEGATORS = tuple(
    sorted(
        (
            "不", "没", "没有", "别", "甭", "莫", "未", "无", "唔", "勿", "不是", "并不", "并没",
            "并没有", "从不", "从没", "从没有", "从来不", "从来没", "从来没有", "毫无", "毫不",
            "绝不", "决不", "没怎么", "不用", "无需", "不必",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip

# Degree, modal and speech words that may stand between a negator and what it
# negates: 不[是很]感兴趣, 没[太大]兴趣, 不[怎么]需要, 没[说]不要.
GAP_WORDS = tuple(
    sorted(
        (
            "很", "太", "太大", "大", "怎么", "那么", "这么", "特别", "非常", "十分", "什么",
            "啥", "多", "多大", "一点", "有点", "想", "要", "会", "能", "再", "说", "说过",
            "讲", "打算", "够", "真", "真的", "完全", "根本", "一定", "是很", "是太",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip
# Gap words between a negator and what it negates: 不[是很]… is one, 没[太][想]… two.
MAX_GAP_WORDS = 2

A_NOT_A_INFIXES = frozenset("不没")  # X不X, X没X
REFUSAL_END = "了"  # X不X了 ending a clause: a changed plan (不去了), not the question X不X

# The negators of one character: a word that one of them starts (不能, 没有) is the
# negation of what follows, not a word a keyword after it cuts (不能 before 能来).
NEGATOR_CHARS = frozenset(n for n in NEGATORS if len(n) == 1)
UNIVERSAL = "都"  # 哪天都不来: "at no time", see the module docstring

_NEGATOR_SET = frozenset(NEGATORS)
_NEGATOR_LENGTHS = sorted({len(n) for n in NEGATORS}, reverse=True)  # longest first
_GAP_SET = frozenset(GAP_WORDS)
_GAP_LENGTHS = sorted({len(w) for w in GAP_WORDS}, reverse=True)


def negations_before(text: str, start: int, breaks: Sequence[bool] | None = None) -> int:
    """How many negators govern the match at ``text[start:]`` (0: none; even: restored).

    ``breaks[i]`` (``Reply.break_before``) marks punctuation before
    ``text[i]``; the scan does not cross it.
    """
    return len(negator_spans(text, start, breaks))


def negator_spans(
    text: str, start: int, breaks: Sequence[bool] | None = None
) -> list[tuple[int, int]]:
    """The negators governing the match at ``text[start:]``, nearest first, as spans of ``text``.

    A negator used up this way is part of the negation, not a word of its own:
    the 不是 of 倒也不是没兴趣 says nothing apart from 没兴趣.
    """
    spans: list[tuple[int, int]] = []
    at = start
    while True:
        found = _negator_ending(text, at, breaks)
        if found is None:
            return spans
        begin, end = found
        spans.append((begin, end))
        at = begin


def negator_after(
    text: str, end: int, breaks: Sequence[bool] | None = None
) -> tuple[int, int] | None:
    """The span of a negator after the match ending at ``end`` across 都, or None.

    The match ends with 都 (a pattern "哪天都") or 都 follows it right away, and a
    negator comes next: 哪天都不来, 随时都没空. Punctuation between stops it.
    """
    at = end
    if at < len(text) and text[at] == UNIVERSAL and not (breaks is not None and breaks[at]):
        at += 1
    elif not (end > 0 and text[end - 1] == UNIVERSAL):
        return None
    if at >= len(text) or (breaks is not None and breaks[at]):
        return None
    for length in _NEGATOR_LENGTHS:
        if (
            at + length <= len(text)
            and text[at : at + length] in _NEGATOR_SET
            and not _crosses(breaks, at, at + length)
            and not _is_question_infix(text, at, breaks)
        ):
            return at, at + length
    return None


def _negator_ending(text: str, end: int, breaks: Sequence[bool] | None) -> tuple[int, int] | None:
    """The span of a negator ending at ``end`` or before up to MAX_GAP_WORDS gap words; or None."""
    at = end
    for _ in range(MAX_GAP_WORDS + 1):
        if at <= 0 or (breaks is not None and breaks[at]):
            return None
        for length in _NEGATOR_LENGTHS:
            begin = at - length
            if (
                begin >= 0
                and text[begin:at] in _NEGATOR_SET
                and not _crosses(breaks, begin, at)
                and not _is_question_infix(text, begin, breaks)
            ):
                return begin, at
        for length in _GAP_LENGTHS:
            begin = at - length
            if begin >= 0 and text[begin:at] in _GAP_SET and not _crosses(breaks, begin, at):
                at = begin
                break
        else:
            return None
    return None


def _crosses(breaks: Sequence[bool] | None, begin: int, end: int) -> bool:
    """Whether punctuation stands inside ``text[begin:end]``."""
    return breaks is not None and end - begin > 1 and any(breaks[begin + 1 : end])


def _is_question_infix(text: str, at: int, breaks: Sequence[bool] | None = None) -> bool:
    """Whether ``text[at]`` is the 不/没 of an X不X question (not of a 不X不X repetition,
    nor of a refusal X不X了 ending a clause)."""
    return (
        text[at] in A_NOT_A_INFIXES
        and 0 < at < len(text) - 1
        and text[at - 1] == text[at + 1]
        and not (at >= 2 and text[at - 2] == text[at])
        and not _ends_clause_with_le(text, at + 2, breaks)
    )


def _ends_clause_with_le(text: str, at: int, breaks: Sequence[bool] | None) -> bool:
    """Whether ``text[at]`` is a 了 that ends its clause (the text's end, or punctuation next)."""
    if at >= len(text) or text[at] != REFUSAL_END:
        return False
    after = at + 1
    return after == len(text) or (breaks is not None and after < len(breaks) and breaks[after])


def in_question_form(text: str, start: int, end: int, breaks: Sequence[bool] | None = None) -> bool:
    """Whether the match ``text[start:end]`` is part of an X不X question.

    It begins at the 不 of one (不好 in 好不好用), right after it (好用 in
    好不好用, 感兴趣 in 感不感兴趣), or right before it (是 in 是不是, 喜欢 in
    喜欢不喜欢); not when X不X了 ends a clause (a refusal, module docstring).
    ``breaks`` as for ``negations_before``.
    """
    if start < len(text) and _is_question_infix(text, start, breaks):
        return True
    if (
        start >= 2
        and _is_question_infix(text, start - 1, breaks)
        and text[start - 2] == text[start]
    ):
        return True
    # the match is the A of A不A: 是 in 是不是, 喜欢 in 喜欢不喜欢, unless 不A不A
    size = end - start
    return (
        end + size < len(text)
        and text[end] in A_NOT_A_INFIXES
        and text[end + 1 : end + 1 + size] == text[start:end]
        and not (start > 0 and text[start - 1] == text[end])
        and not _ends_clause_with_le(text, end + 1 + size, breaks)
    )


def repeats_refusal(text: str, start: int, end: int) -> bool:
    """Whether a match beginning X不X (``text[start:end]``) stands in 不X不X, a repeated refusal.

    "用不用" found inside "不用不用" is not the question it spells; a keyword
    that is itself "不用不用" is what it says.
    """
    at = start + 1  # the 不 of an X不X the match begins with
    return (
        start >= 1
        and at + 1 < end
        and text[at] in A_NOT_A_INFIXES
        and text[start] == text[at + 1]
        and text[start - 1] == text[at]
    )
