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
from typing import NamedTuple

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
_LEADING_FIRST = frozenset("那就这然嗯啊呃额哦噢哎唉诶欸喂")  # first characters of leading fillers
_TRAILING_CHARS = "吧呢啦呀哈啊嘛哦噢嗯呗咯喽"  # modal particles closing a reply
_TRAILING_LAST = frozenset(_TRAILING_CHARS)
_TRAILING_STRIP = _TRAILING_CHARS + " "

# Single characters that are fillers wherever they stand: they delimit a
# one-character keyword like a space does ("对啊对啊", "好吧").
FILLER_CHARS = frozenset("嗯啊呃哦噢吧呢啦呀哈嘛呗咯喽")


# Each character's kind, as one letter, so a reply's kinds are one str.translate.
_WORD, _SPACE, _PUNCTUATION, _QUESTION = "wspq"
_RUNS = re.compile(r"w+|q|[sp]+")  # words, a question mark, a gap of spaces and punctuation


_CACHE_LIMIT = 1 << 16  # characters remembered; rarer ones are looked up each time


class _CharKinds(dict[int, str]):
    """``str.translate`` table: a character's ordinal → its kind, computed once per character."""

    def __missing__(self, ordinal: int) -> str:
        char = chr(ordinal)
        if char in _QUESTION_MARKS:
            kind = _QUESTION
        elif char.isspace():
            kind = _SPACE
        elif unicodedata.category(char).startswith("P"):
            kind = _PUNCTUATION
        else:
            kind = _WORD
        if len(self) < _CACHE_LIMIT:  # bounded whatever the replies hold
            self[ordinal] = kind
        return kind


_CHAR_KINDS = _CharKinds()


class Reply(NamedTuple):
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
    plain: bool = False  # one run of word characters: no space, punctuation or ? anywhere


def analyse(text: str, *, width: bool = True) -> Reply:
    """Normalise ``text`` (see the module docstring) and record where its gaps were."""
    if width:
        text = unicodedata.normalize("NFKC", text)
    text = text.casefold()
    kinds = text.translate(_CHAR_KINDS)
    if kinds.count(_WORD) == len(kinds):
        # the common case of a recognised reply: one run of word characters
        size = len(text)
        flags = (False,) * size + (True,)
        return Reply(text, text, flags, flags, tuple(range(size)), plain=True)
    chars: list[str] = []
    gaps: list[bool] = []
    breaks: list[bool] = []
    gap = brk = False
    for run in _RUNS.finditer(kinds):
        start, end = run.span()
        kind = kinds[start]
        if kind == _WORD:
            # nothing stands before the first character: no gap to record there
            rest = [False] * (end - start - 1)
            gaps.append(gap and bool(chars))
            gaps.extend(rest)
            breaks.append(brk and bool(chars))
            breaks.extend(rest)
            chars.append(text[start:end])
            gap = brk = False
        elif kind == _QUESTION:
            gaps.append(bool(chars))
            breaks.append(bool(chars))
            chars.append(QUESTION)
            gap = brk = True
        else:
            gap = True
            brk = brk or _PUNCTUATION in kinds[start:end]
    gaps.append(True)
    breaks.append(True)
    # every piece (a run of word characters, or a question mark) stands apart
    spaced = " ".join(chars)
    to_spaced: list[int] = []
    at = 0
    for piece in chars:
        to_spaced.extend(range(at, at + len(piece)))
        at += len(piece) + 1
    joined = "".join(chars)
    return Reply(spaced, joined, tuple(gaps), tuple(breaks), tuple(to_spaced))


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
    if not spaced or (
        spaced[0] not in _LEADING_FIRST and spaced[-1] not in _TRAILING_LAST and spaced[-1] != "?"
    ):
        return spaced  # no filler can stand at either edge
    body = spaced.rstrip(" ?")
    if not body:
        return spaced
    tail = spaced[len(body) :]  # the closing question marks stay as they were
    while True:
        leading = _LEADING_FILLER.match(body)
        if leading and _has_word(body[leading.end() :]):
            body = body[leading.end() :]
            continue
        rest = body.rstrip(_TRAILING_STRIP)
        if rest != body and _has_word(rest):
            body = rest
            continue
        return body + tail


def _has_word(text: str) -> bool:
    return bool(text.replace(" ", "").replace("?", ""))


def compact(text: str) -> str:
    """``text`` without spaces (of already normalised text)."""
    return text.replace(" ", "")


def is_latin_alnum(char: str) -> bool:
    """Whether ``char`` is a Latin letter or an ASCII digit."""
    return bool(_LATIN_ALNUM_RE.fullmatch(char))


def has_latin_letter(text: str) -> bool:
    """Whether ``text`` contains a Latin letter (so its words are space-delimited)."""
    return any(c.isalpha() and is_latin_alnum(c) for c in text)
