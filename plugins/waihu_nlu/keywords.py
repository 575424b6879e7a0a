"""The ``keywords`` classifier: an intent matches when one of its keywords occurs in the reply.

Each intent of a script lists keywords (found anywhere in the reply) and
examples (matching the whole reply). Both the script's words and the reply are
normalised alike (``waihu_nlu.normalize``). Korean and Chinese recognisers
space words unpredictably ("얼마 예요" / "얼마예요"), so keywords without Latin
letters are also matched with every space removed; keywords with Latin letters
match whole words only, so "no" is not found in "know". A keyword of a single
Korean or Chinese character is a word of its own too (repeats allowed): "네"
is found in "네", "네네" and "네, 좋아요" but not inside "바쁘네요" (I'm busy),
and "对" not inside "不对".

Candidates come back in the order of ``allowed``, which is the script's
priority order (knowledge base, then affirmative, then negative…): the first
candidate wins even if a later one matched a longer keyword. The score (0–1)
is the share of the reply the longest matched keyword covers, 1 for an
example; it is for the transcript and for tie-breaking within an intent.

What it is not: a trained classifier, and not yet negation-aware: "不需要"
must be its own keyword of the negative intent. ``KeywordClassifier.negated``
is the seam where a negation guard goes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import attrs

from waihu.api import Intent, Match, Provider, ProviderContext
from waihu_nlu.normalize import (
    LATIN_ALNUM,
    compact,
    has_latin_letter,
    is_latin_alnum,
    normalize,
)

__all__ = ["KeywordClassifier"]

log = logging.getLogger("waihu.nlu")

EXAMPLE_SCORE = 1.0  # an example matches the whole reply


@attrs.frozen
class _Keyword:
    """One keyword ready to search for."""

    written: str  # as the script wrote it: reported in Match.matched
    pattern: re.Pattern[str]
    in_compact: bool  # searched in the reply without spaces (else in the spaced reply)
    size: int  # characters without spaces, for the score


@attrs.frozen
class _Example:
    written: str
    spaced: str
    compact: str


@attrs.define
class _IntentRules:
    keywords: list[_Keyword] = attrs.Factory(list)
    examples: list[_Example] = attrs.Factory(list)


class KeywordClassifier(Provider):
    """``waihu.api.Classifier`` by keywords and example phrases; config type ``keywords``.

    Config (``[nlu.NAME]`` with ``type = "keywords"``): ``normalize_width``
    folds full-width forms (NFKC) before matching; ``ignore_spaces`` also
    matches non-Latin keywords with spaces removed from both sides.
    """

    type_name = "keywords"

    @attrs.frozen(kw_only=True)
    class Config:
        """``[nlu.NAME]`` keys of a keyword classifier."""

        normalize_width: bool = True  # NFKC: full-width ＡＢＣ１２３，→ ABC123,
        ignore_spaces: bool = True  # "얼마예요" matches "얼마 예요" and the reverse

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._intents: dict[str, _IntentRules] = {}

    def fit(self, intents: Sequence[Intent]) -> None:
        """Prepare the keywords and examples of ``intents``, replacing any earlier fit.

        An intent named twice gets the keywords of both. A keyword or example
        with nothing left after normalisation (only punctuation) is skipped
        with a warning naming the intent.
        """
        rules: dict[str, _IntentRules] = {}
        for intent in intents:
            into = rules.setdefault(intent.name, _IntentRules())
            for entry in intent.keywords:
                word = entry.text
                keyword = self._keyword(word)
                if keyword is None:
                    log.warning(
                        "intent %r: keyword %r is empty after normalisation; skipped",
                        intent.name,
                        word,
                    )
                else:
                    into.keywords.append(keyword)
            for phrase in intent.examples:
                spaced = self._normalize(phrase)
                if not spaced:
                    log.warning(
                        "intent %r: example %r is empty after normalisation; skipped",
                        intent.name,
                        phrase,
                    )
                else:
                    into.examples.append(_Example(phrase, spaced, compact(spaced)))
        self._intents = rules

    def classify(self, text: str, allowed: Sequence[str]) -> list[Match]:
        """Every intent in ``allowed`` that ``text`` matches, in the order of ``allowed``.

        Names not fitted are ignored, as are repeats; empty when nothing matches.
        """
        spaced = self._normalize(text)
        squeezed = compact(spaced)
        if not squeezed:
            return []
        matches: list[Match] = []
        seen: set[str] = set()
        for name in allowed:
            rules = self._intents.get(name)
            if rules is None or name in seen:
                continue
            seen.add(name)
            found = self._match(rules, spaced, squeezed)
            if found is not None:
                score, matched = found
                matches.append(Match(intent=name, score=score, matched=matched))
        return matches

    def negated(self, text: str, start: int, end: int) -> bool:
        """Whether the keyword found at ``text[start:end]`` is negated, so does not count.

        ``text`` is the normalised reply the keyword was found in (spaced, or
        without spaces for keywords matched that way). Always False for now:
        this is where a negation guard (不, 没, 안, 않, not …) will decide.
        """
        return False

    # ── internals ──

    def _normalize(self, text: str) -> str:
        return normalize(text, width=self.config.normalize_width)

    def _keyword(self, word: str) -> _Keyword | None:
        spaced = self._normalize(word)
        if not spaced:
            return None
        if has_latin_letter(spaced):
            # Whole words only: not preceded or followed by another Latin letter or digit.
            before = f"(?<![{LATIN_ALNUM}])" if is_latin_alnum(spaced[0]) else ""
            after = f"(?![{LATIN_ALNUM}])" if is_latin_alnum(spaced[-1]) else ""
            pattern = re.compile(before + re.escape(spaced) + after)
            return _Keyword(word, pattern, in_compact=False, size=len(compact(spaced)))
        if len(spaced) == 1:
            # one syllable is the ending of countless words (바쁘네요, 그러네요): only a
            # word of its own counts, said once or repeated (네네)
            pattern = re.compile(rf"(?<!\w)(?:{re.escape(spaced)})+(?!\w)")
            return _Keyword(word, pattern, in_compact=False, size=1)
        in_compact = self.config.ignore_spaces
        target = compact(spaced) if in_compact else spaced
        return _Keyword(word, re.compile(re.escape(target)), in_compact, len(compact(spaced)))

    def _match(self, rules: _IntentRules, spaced: str, squeezed: str) -> tuple[float, str] | None:
        """The best (score, matched text) of one intent, or None."""
        for example in rules.examples:
            if example.spaced == spaced or (
                self.config.ignore_spaces and example.compact == squeezed
            ):
                return EXAMPLE_SCORE, example.written
        best: _Keyword | None = None
        for keyword in rules.keywords:
            if best is not None and keyword.size <= best.size:
                continue
            target = squeezed if keyword.in_compact else spaced
            if any(
                not self.negated(target, m.start(), m.end())
                for m in keyword.pattern.finditer(target)
            ):
                best = keyword
        if best is None:
            return None
        return min(1.0, best.size / len(squeezed)), best.written
