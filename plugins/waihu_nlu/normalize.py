"""Text normalisation shared by keywords, examples and replies, so they compare alike.

Replies come from a recogniser (Korean or Chinese words spaced unpredictably,
no punctuation) or from an operator typing in ``waihuctl script chat``
(full-width characters, punctuation, capitals). Everything a classifier
compares goes through ``analyse`` (or ``normalize``, its spaced text):

- Unicode NFKC (optional) folds full-width forms: ＯＫ，１２ → OK,12;
- case folding: OK → ok;
- punctuation becomes a space, except a question mark (? or ？), which stays
  as a token of its own: "嗯？" (what?) is not a bare "嗯" (often: yes);
- runs of spaces collapse.

``strip_fillers`` then drops hesitation fillers at the edges of a reply
(嗯, 啊, 呃, 那个, 就是 … at the start; 吧, 呢, 啦, 呀 … at the end), but only
while other words remain, so a bare "嗯" stays "嗯". Whole-reply comparisons
(examples, a one-character keyword said alone, the score) use that core;
keyword search runs over the whole text, where fillers are harmless.

What it is not: segmentation or stemming; a keyword matches as written.
"""

from __future__ import annotations

import re
import unicodedata

import attrs

__all__ = [
    "FILLER_CHARS",
    "LATIN_ALNUM",
    "QUESTION",
    "Reply",
    "analyse",
    "compact",
    "has_latin_letter",
    "is_latin_alnum",
    "normalize",
    "strip_fillers",
]

# Latin letters and digits (Basic Latin, Latin-1, Latin Extended-A/B), as the
# body of a regex character class: words in these scripts are delimited by
# spaces, so their keywords match whole words only.
LATIN_ALNUM = "0-9A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
_LATIN_ALNUM_RE = re.compile(f"[{LATIN_ALNUM}]")

QUESTION = "?"  # the one punctuation mark kept: it turns "嗯" (yes) into "嗯？" (what?)
_QUESTION_MARKS = frozenset("?？")  # ？ is folded by NFKC, but not when width folding is off

# Hesitation fillers. At the start of a reply: these words and interjections
# (额 only when not the first character of 额度/额外, which are words);
# at the end: modal particles. Repeats (嗯嗯) go as one.
_LEADING_FILLER = re.compile(
    r"^(?:那个|就是|这个|然后|嗯+|啊+|呃+|额+(?![度外])|哦+|噢+|哎+|唉+|诶+|欸+|喂+) ?"
)
_TRAILING_FILLER = re.compile(r" ?(?:吧|呢|啦|呀|哈|啊|嘛|哦|噢|嗯|呗|咯|喽)+$")
_TRAILING_QUESTIONS = re.compile(r"(?: \?)+$")

# Single characters that are fillers wherever they stand: they delimit a
# one-character keyword like a space does ("对啊对啊", "好吧").
FILLER_CHARS = frozenset("嗯啊呃哦噢吧呢啦呀哈嘛呗咯喽")


_WORD, _SPACE, _PUNCTUATION, _QUESTION = range(4)


class _CharKinds(dict[str, int]):
    """A character's kind for ``analyse``, looked up once per character ever seen."""

    def __missing__(self, char: str) -> int:
        if char in _QUESTION_MARKS:
            kind = _QUESTION
        elif char.isspace():
            kind = _SPACE
        elif unicodedata.category(char).startswith("P"):
            kind = _PUNCTUATION
        else:
            kind = _WORD
        self[char] = kind
        return kind


_CHAR_KINDS = _CharKinds()


@attrs.frozen
class Reply:
    """A reply (or keyword, or example) analysed for matching.

    ``spaced`` is the normalised text; ``compact`` the same without spaces;
    ``gap_before[i]`` says a space or punctuation stood before ``compact[i]``
    (index ``len(compact)`` too: the end), ``break_before[i]`` that it was
    punctuation — a clause boundary that negation does not cross;
    ``to_spaced[i]`` is the index of ``compact[i]`` in ``spaced``.
    """

    spaced: str
    compact: str
    gap_before: tuple[bool, ...]
    break_before: tuple[bool, ...]
    to_spaced: tuple[int, ...]


def analyse(text: str, *, width: bool = True) -> Reply:
    """Normalise ``text`` (see the module docstring) and record where its gaps were."""
    if width:
        text = unicodedata.normalize("NFKC", text)
    text = text.casefold()
    chars: list[str] = []
    gaps: list[bool] = []
    breaks: list[bool] = []
    gap = brk = False
    kinds = _CHAR_KINDS
    for char in text:
        kind = kinds[char]
        if kind == _SPACE:
            gap = True
        elif kind == _PUNCTUATION:
            gap = brk = True
        else:
            question = kind == _QUESTION
            # nothing stands before the first character: no gap to record there
            gaps.append((gap or question) and bool(chars))
            breaks.append((brk or question) and bool(chars))
            chars.append(QUESTION if question else char)
            gap = brk = question
    gaps.append(True)
    breaks.append(True)
    to_spaced: list[int] = []
    parts: list[str] = []
    at = 0
    for char, spaced_before in zip(chars, gaps, strict=False):
        if spaced_before:
            parts.append(" ")
            at += 1
        to_spaced.append(at)
        parts.append(char)
        at += 1
    spaced = "".join(parts)
    return Reply(spaced, "".join(chars), tuple(gaps), tuple(breaks), tuple(to_spaced))


def normalize(text: str, *, width: bool = True) -> str:
    """Lower-cased text with punctuation (but ``?``) turned into spaces, runs of spaces collapsed.

    ``width`` applies Unicode NFKC first, folding full-width Latin letters,
    digits and punctuation (ＯＫ，) into their ordinary forms.
    """
    return analyse(text, width=width).spaced


def strip_fillers(spaced: str) -> str:
    """``spaced`` (normalised) without edge fillers, as long as other words remain.

    A question mark is not a word: "嗯 ?" keeps its 嗯, "好吧 ?" becomes "好 ?".
    """
    questions = _TRAILING_QUESTIONS.search(spaced)
    tail = questions.group() if questions else ""
    body = spaced[: len(spaced) - len(tail)]
    while True:
        before = body
        for filler in (_LEADING_FILLER, _TRAILING_FILLER):
            rest = filler.sub("", body, count=1)
            if rest != body and _has_word(rest):
                body = rest
        if body == before:
            return body + tail


def _has_word(text: str) -> bool:
    return any(c not in " ?" for c in text)


def compact(text: str) -> str:
    """``text`` without spaces (of already normalised text)."""
    return text.replace(" ", "")


def is_latin_alnum(char: str) -> bool:
    """Whether ``char`` is a Latin letter or an ASCII digit."""
    return bool(_LATIN_ALNUM_RE.fullmatch(char))


def has_latin_letter(text: str) -> bool:
    """Whether ``text`` contains a Latin letter (so its words are space-delimited)."""
    return any(c.isalpha() and is_latin_alnum(c) for c in text)
