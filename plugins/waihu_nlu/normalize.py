"""Text normalisation shared by keywords, examples and replies, so they compare alike.

Replies come from a recogniser (Korean or Chinese words spaced unpredictably,
no punctuation) or from an operator typing in ``waihuctl script chat``
(full-width characters, punctuation, capitals). Both sides of a comparison go
through ``normalize``; ``compact`` then drops the spaces for scripts that do
not delimit words with them.

What it is not: segmentation or stemming; a keyword matches as written.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["LATIN_ALNUM", "compact", "has_latin_letter", "is_latin_alnum", "normalize"]

# Latin letters and digits (Basic Latin, Latin-1, Latin Extended-A/B), as the
# body of a regex character class: words in these scripts are delimited by
# spaces, so their keywords match whole words only.
LATIN_ALNUM = "0-9A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
_LATIN_ALNUM_RE = re.compile(f"[{LATIN_ALNUM}]")


def normalize(text: str, *, width: bool = True) -> str:
    """Lower-cased text with punctuation turned into spaces and runs of spaces collapsed.

    ``width`` applies Unicode NFKC first, folding full-width Latin letters,
    digits and punctuation (ＯＫ，) into their ordinary forms.
    """
    if width:
        text = unicodedata.normalize("NFKC", text)
    text = text.casefold()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def compact(text: str) -> str:
    """``text`` without spaces (of already normalised text)."""
    return text.replace(" ", "")


def is_latin_alnum(char: str) -> bool:
    """Whether ``char`` is a Latin letter or an ASCII digit."""
    return bool(_LATIN_ALNUM_RE.fullmatch(char))


def has_latin_letter(text: str) -> bool:
    """Whether ``text`` contains a Latin letter (so its words are space-delimited)."""
    return any(c.isalpha() and is_latin_alnum(c) for c in text)
