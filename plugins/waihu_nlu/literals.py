"""Which characters a regular expression's every match must hold: a cheap test before a search.

A script's patterns are searched in every reply; most cannot match it. For
a pattern "(你|您)是" + anything, every match holds 是; for "(打|拨)?(12315|110)" every
match holds 1 (and 2 or 1…): if the reply holds none of the characters of
such a set, the search is skipped. ``needed_characters`` finds one small set
from the pattern's parse tree (``re._parser``, the parser ``re`` itself
uses): a literal in sequence gives itself; an alternation the union of what
each branch needs; a group what its content needs; a repeat at least once
what its body needs. Of the sets a sequence offers, the smallest is taken.

What it is not: a matcher. It only says "cannot match"; a pattern it cannot
read (case-insensitive, or any construct not listed) gets None: always
searched.
"""

from __future__ import annotations

import re
from typing import Any

try:  # the parser re uses; named sre_parse before Python 3.11
    from re import _constants as _sre
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

__all__ = ["needed_characters"]

MAX_SET = 64  # a character class wider than this ([0-9a-z…]) says too little to be worth it


def needed_characters(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Characters one of which every match of ``pattern`` holds; None when not known."""
    if pattern.flags & re.IGNORECASE:
        return None  # a literal then matches in other cases too
    try:
        parsed = _sre_parse.parse(pattern.pattern, pattern.flags)
        found = _sequence(list(parsed))
    except Exception:  # an unreadable tree only costs the shortcut, never a match
        return None
    return frozenset(found) if found else None


def _sequence(items: list[tuple[Any, Any]]) -> set[str] | None:
    best: set[str] | None = None
    for op, av in items:
        found = _item(op, av)
        if found and (best is None or len(found) < len(best)):
            best = found
    return best


def _item(op: Any, av: Any) -> set[str] | None:
    if op is _sre.LITERAL:
        return {chr(av)}
    if op is _sre.IN:
        chars: set[str] = set()
        for kind, value in av:
            if kind is _sre.LITERAL:
                chars.add(chr(value))
            elif kind is _sre.RANGE and value[1] - value[0] < MAX_SET:
                chars.update(chr(c) for c in range(value[0], value[1] + 1))
            else:
                return None  # negated, a category (\d), or too wide
        return chars if 0 < len(chars) <= MAX_SET else None
    if op is _sre.SUBPATTERN:
        return _sequence(list(av[-1]))
    if op is _sre.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            found = _sequence(list(branch))
            if not found:
                return None  # a branch that needs nothing known: no constraint
            union |= found
        return union
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) or op is getattr(_sre, "POSSESSIVE_REPEAT", None):
        low, _, body = av
        return _sequence(list(body)) if low >= 1 else None
    return None
