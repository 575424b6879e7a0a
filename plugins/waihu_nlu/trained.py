"""The ``trained`` classifier: a script's rules, plus a model trained from its examples and words.

Callers phrase things an author cannot list ("早都办过了", "上个月刚续的" for
"already have it"); a model of character n-grams (``waihu_nlu.model``),
fitted from each script's examples and keywords as short sample replies,
catches many of them. Rules stay in charge, by this policy (also in
``waihu.api.Classifier``):

1. every class of ``allowed`` whose rules fire (keywords, patterns,
   examples, with negation — exactly the ``keywords`` classifier) comes back
   first, in the order of ``allowed``; the model is not asked;
2. only when no rule fires, the model's most probable class among
   ``allowed`` is added, if its probability reaches ``threshold``, with
   ``Match.source = "model"``, ``score`` its probability and ``matched`` the
   training sample of that class nearest the reply. Below the threshold the
   reply stays unmatched (the node's default route).

Node-scoped classes ("offer/affirm": a node's extra keywords) are not trained
— the same words mean other things at other nodes; a model label ("affirm")
counts as allowed when ``allowed`` holds it or a node-scoped name of it, and
comes back under the name ``allowed`` gives it first. A script with fewer
than two classes that have samples gets no model (rules only). Ties in
probability go to the earlier name in ``allowed``.

The default threshold, 0.3, was chosen on the paraphrase set of
``tests/test_nlu_trained.py`` (a 13-class sales script, 14 paraphrases no
rule catches, 13 unrelated or missed replies): the paraphrases the model gets
right score 0.38–0.92; unrelated replies and its wrong guesses (早都办好了 →
0.10 already_have, 你刚才说啥 → 0.20 affirm) at most 0.20. 0.3 lies between;
a lower one lets everyday talk through, a higher one (0.5) loses a third of
the right paraphrases. On the templates' evaluation set
(``benchmarks/nlu_eval.py``, and its holdout set) accuracy is flat from
0.25 to 0.4 and falls beyond; the model adds about 10 points there over the
rules alone. The probability is spread over the script's classes and a
background class of everyday talk (``waihu_nlu.model``), so a script with
few classes may want a higher one.

The background class's lines are trained as replies reach the model
(fillers stripped, A-not-A spelt "A吗", below), so it learns no n-gram a
reply never brings. Requiring a model answer to share a word (not just a
character) with its class was measured and left out: it turned away two
off-topic replies of 64 but also right paraphrases (这会儿腾不开手 → busy by
会/开, 试听要不要钱 → kb.price) scoring alike (0.33–0.40).

One-character keywords (行, 中, 是) and such a keyword said again (好好,
对对) are not samples: the rules take them only as a word of their own, while
in a model the character would count wherever it stands ("你是中介吧" is no
yes). Samples and replies alike have each A-not-A
question spelt "A吗" (要不要钱 → 要吗钱), so its 不要 does not read as a no
(on the evaluation sets: +1 and +2.6 points).

What it is not: a model of negation — a paraphrase under 不 is only as good as
its n-grams; the rules handle negation, and fire first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from waihu.api import Intent, Match, ProviderContext
from waihu_nlu.keywords import KeywordClassifier
from waihu_nlu.matcher import RuleMatcher, word_of_its_own
from waihu_nlu.model import BACKGROUND, IntentModel

__all__ = ["DEFAULT_THRESHOLD", "TrainedClassifier"]

DEFAULT_THRESHOLD = 0.3  # see the module docstring: between wrong (≤ 0.20) and right (≥ 0.38)
_NODE_SEPARATOR = "/"  # "offer/affirm": a node's own extras of class affirm
# X不X / X没X, not inside 不X不X: a yes-no question (要不要钱, 有没有优惠); not X不X了 ending
# a clause either, a refusal (去不去了: 不去了) as ``waihu_nlu.negation`` reads it
_A_NOT_A = re.compile(r"(?<![不没])(.)[不没]\1(?!了(?:$|\s))")


def _as_question(sample: str) -> str:
    """``sample`` with each A-not-A question spelt "A吗" (要不要钱 → 要吗钱): its n-grams then
    say "a question about A", where 不要 would say "no"."""
    return _A_NOT_A.sub(r"\1吗", sample)


class TrainedClassifier(KeywordClassifier):
    """``waihu.api.Classifier`` by rules, then a trained model; config type ``trained``.

    Config (``[nlu.NAME]`` with ``type = "trained"``): the keys of
    ``keywords`` (``normalize_width``, ``ignore_spaces``, ``sound_alike``,
    ``negation``) and ``threshold`` (0–1, default 0.3): the probability the
    model's best class needs when no rule fires.
    """

    type_name = "trained"

    @attrs.frozen(kw_only=True)
    class Config(KeywordClassifier.Config):
        """``[nlu.NAME]`` keys of a trained classifier."""

        threshold: float = attrs.field(default=DEFAULT_THRESHOLD)

        @threshold.validator
        def _between_0_and_1(self, attribute: attrs.Attribute, value: float) -> None:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold must be between 0 and 1, not {value!r}")

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)
        self._model: IntentModel | None = None
        self._written: dict[tuple[str, str], str] = {}

    @property
    def model(self) -> IntentModel | None:
        """The fitted model; None before ``fit`` or with fewer than two trained classes."""
        return self._model

    def fit(self, intents: Sequence[Intent]) -> None:
        """Fit the rules (as ``keywords``) and train the model; blocking CPU work.

        Raises ``ValueError`` naming the intent and pattern on a bad pattern,
        before any training; the earlier fit then stays. Rules and model are
        replaced together once both are ready, so a reply classified during a
        refit meets the old pair or the new one.
        """
        matcher = RuleMatcher(intents, self._options())
        core = matcher.core
        # (normalised sample, class) → the sample as written, for Match.matched;
        # ordered, and without repeats
        samples: dict[tuple[str, str], str] = {}
        for intent in intents:
            if _NODE_SEPARATOR in intent.name:
                continue
            words = [core(k.text).replace(" ", "") for k in intent.keywords]
            singles = {word for word in words if len(word) == 1}
            for text in (*intent.examples, *(k.text for k in intent.keywords)):
                sample = core(text)
                # a one-character keyword, or one said again (好好), is a word of its
                # own only (module docstring)
                compact = sample.replace(" ", "")
                if not word_of_its_own(compact, singles) or text in intent.examples:
                    samples.setdefault((_as_question(sample), intent.name), text)
        # the background as replies reach the model: fillers gone, A-not-A spelt "A吗"
        background = list(
            dict.fromkeys(_as_question(b) for line in BACKGROUND if (b := core(line)).strip())
        )
        model = IntentModel.train(list(samples), background)
        self._matcher, self._model, self._written = matcher, model, samples

    def classify(self, text: str, allowed: Sequence[str]) -> list[Match]:
        """The rules' classes; when none fires, the model's confident class (module docstring)."""
        matches, sample = self._matcher.match_core(text, allowed)
        if matches or self._model is None or not sample.strip():
            return matches
        prediction = self._model.predict(_as_question(sample))
        if prediction is None:
            return []
        probabilities = prediction.probabilities
        wanted = set(allowed)
        best: tuple[float, str, str] | None = None  # probability, name to return, label
        for name in allowed:
            label = name.rpartition(_NODE_SEPARATOR)[2]
            probability = probabilities.get(label)
            if probability is not None and (best is None or probability > best[0]):
                best = (probability, label if label in wanted else name, label)
        if best is None or best[0] < self.config.threshold:
            return []
        probability, name, label = best
        return [
            Match(
                name,
                probability,
                self._written.get((self._model.nearest(prediction, label), label), ""),
                source="model",
            )
        ]
