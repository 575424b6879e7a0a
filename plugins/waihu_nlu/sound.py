"""Sound-alike matching: Chinese text as toneless pinyin syllables, one code per syllable.

A recogniser that hears 再打 may write 在打; 钱 comes out as 前, 兴趣 as 性趣.
The characters differ, the syllables (zai da, qian, xing qu) do not. Each Han
character is mapped to one code standing for its toneless pinyin syllable
(``pypinyin``), so a text and its sound code have the same length and the
same indices: a keyword's code found in a reply's code is a match on syllable
boundaries, at the same place as the characters it sounds like. Characters
that are not Han (Latin, Hangul, digits, ?) stand for themselves.

A reply is coded character by character, each with its most common reading
(``lazy_pinyin`` of the character alone, cached): a whole-phrase reading
costs about 15 µs per character, too slow for every reply. A keyword gets
both its per-character code and its phrase reading (银行: yin xing and
yin hang), so it matches a homophone of either.

What it is not: fuzzy pinyin (zh/z, in/ing, n/l are distinct syllables
here), and not tones — 买 (mǎi) and 卖 (mài) sound alike to it.
"""

from __future__ import annotations

import threading

from pypinyin import lazy_pinyin

__all__ = ["keyword_codes", "sound_code"]

# Syllable codes live in Supplementary Private Use Area-A, which no recogniser
# or keyboard produces, so a code can never be mistaken for a real character.
_CODE_BASE = 0xF0000

_syllables: dict[str, str] = {}  # toneless syllable → its code character
_syllables_lock = threading.Lock()  # fits run in worker threads, replies on the trio thread


def _syllable_code(syllable: str) -> str:
    code = _syllables.get(syllable)
    if code is None:
        with _syllables_lock:
            code = _syllables.setdefault(syllable, chr(_CODE_BASE + len(_syllables)))
    return code


_CACHE_LIMIT = 1 << 16  # characters remembered; rarer ones are looked up each time


class _CharCodes(dict[int, str]):
    """``str.translate`` table: a character's ordinal → its syllable code, filled on first use."""

    def __missing__(self, ordinal: int) -> str:
        char = chr(ordinal)
        reading = lazy_pinyin(char)[0]
        # pypinyin returns a character it has no reading for (not Han) unchanged
        code = char if reading == char else _syllable_code(reading)
        if len(self) < _CACHE_LIMIT:  # bounded whatever the replies hold
            self[ordinal] = code
        return code


_CHAR_CODES = _CharCodes()


def sound_code(text: str) -> str:
    """``text`` (normalised, without spaces) with every Han character replaced by its code."""
    return text.translate(_CHAR_CODES)


def keyword_codes(word: str) -> list[str]:
    """The codes ``word`` (normalised, without spaces) may sound as; empty unless all Han.

    The per-character code first, then the phrase reading when it differs.
    """
    coded = sound_code(word)
    if not word or any(a == b for a, b in zip(word, coded, strict=True)):
        return []
    codes = [coded]
    readings = lazy_pinyin(word)
    if len(readings) == len(word):
        phrase = "".join(_syllable_code(r) for r in readings)
        if phrase != coded:
            codes.append(phrase)
    return codes
