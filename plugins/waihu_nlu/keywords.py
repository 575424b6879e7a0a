"""The ``keywords`` classifier: a script's classes recognised by rules only.

Each class (``waihu.api.Intent``) of a script lists keywords (found anywhere
in the reply), patterns (regular expressions), exclusions and examples
(matching the whole reply); ``waihu_nlu.matcher`` holds what they mean —
normalisation, negation scope, A-not-A questions, sound-alike matching — and
matches all of them in one pass.

Korean and Chinese recognisers space words unpredictably ("얼마 예요" /
"얼마예요"), so keywords without Latin letters are matched with every space
removed (``ignore_spaces``); keywords with Latin letters match whole words
only, so "no" is not found in "know". A keyword of a single Korean or Chinese
character is a word of its own: "네" is found in "네", "네네" and "네, 좋아요"
but not inside "바쁘네요" (I'm busy), and "对" not inside "对劲".

Candidates come back in the order of ``allowed``, which is the script's
priority order (always-tier, knowledge base, then affirmative, negative…):
the first candidate wins even if a later one matched a longer keyword.

What it is not: a trained classifier — that is ``trained``
(``waihu_nlu.trained``), which adds a model to these same rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from waihu.api import Intent, Match, Provider, ProviderContext
from waihu_nlu.matcher import MatchOptions, RuleMatcher

__all__ = ["KeywordClassifier"]


class KeywordClassifier(Provider):
    """``waihu.api.Classifier`` by keywords, patterns and example phrases; config type ``keywords``.

    Config (``[nlu.NAME]`` with ``type = "keywords"``):

    - ``normalize_width`` (true): fold full-width forms (NFKC) before matching;
    - ``ignore_spaces`` (true): match non-Latin keywords, patterns and
      examples with spaces removed from both sides;
    - ``sound_alike`` (true): also match keywords by their toneless pinyin
      (在 for 再, 前 for 钱), where the script does not switch it off for a
      keyword or class;
    - ``negation`` (true): a negated keyword counts for its negated class
      (or nothing); off, a keyword counts wherever it appears.
    """

    type_name = "keywords"

    @attrs.frozen(kw_only=True)
    class Config:
        """``[nlu.NAME]`` keys of a keyword classifier."""

        normalize_width: bool = True  # NFKC: full-width ＡＢＣ１２３，→ ABC123,
        ignore_spaces: bool = True  # "얼마예요" matches "얼마 예요" and the reverse
        sound_alike: bool = True  # keywords match their homophones too (pinyin)
        negation: bool = True  # 不/没… before a keyword sends it to its negated class

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._matcher = RuleMatcher((), self._options())

    def fit(self, intents: Sequence[Intent]) -> None:
        """Prepare the rules of ``intents``, replacing any earlier fit.

        An intent named twice gets the rules of both. A keyword or example
        with nothing left after normalisation (only punctuation) is skipped
        with a warning naming the intent. Raises ``ValueError`` naming the
        intent and the pattern when a pattern or exclusion is not a valid
        regular expression (the earlier fit then stays).
        """
        self._matcher = RuleMatcher(intents, self._options())

    def classify(self, text: str, allowed: Sequence[str]) -> list[Match]:
        """Every class in ``allowed`` whose rules fire on ``text``, in the order of ``allowed``.

        Names not fitted are ignored, as are repeats; empty when nothing matches.
        """
        return self._matcher.match(text, allowed)

    def _options(self) -> MatchOptions:
        config = self.config
        return MatchOptions(
            normalize_width=config.normalize_width,
            ignore_spaces=config.ignore_spaces,
            sound_alike=config.sound_alike,
            negation=config.negation,
        )
