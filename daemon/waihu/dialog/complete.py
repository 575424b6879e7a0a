"""Is what the callee said so far already a confident, complete answer for the node?

The early end of turn (``waihu.voice.Listener``, ``Endpointer.quick_end``)
asks this of every partial recognition: when it says yes, the turn ends after
the short end window ([media] ``quick_end_ms``, or the node's own) instead of
the full one; when more words make it no again, the full window is back.

The rule (``complete_answer``): the text is complete when all of these hold —

1. it is short: at most ``MAX_COMPLETE_WORDS`` words and ``MAX_COMPLETE_CHARS``
   characters once spaces and punctuation are dropped ("네 좋아요", "不需要";
   not a sentence that happens to hold a keyword);
2. the whole text classifies (the node's classifier, the way
   ``waihu.dialog.engine.classify_reply`` does it, among
   ``Script.allowed(node)``) to a class that gets an answer here: one the
   node routes on (the ``always`` tier included), a knowledge-base entry, or
   "say that again" — never the unmatched routes;
3. the text is wholly accounted for: the classifier's score — the share of
   the reply (without edge fillers such as 啊/吧) its best rule covers — is
   at least ``MIN_COMPLETE_SCORE`` ("네 좋아요": 좋아요 covers 3 of 4;
   "可以啊", "전화하지 마세요"), or every word of it, classified on its own,
   is that class with such a score ("네 네", "好的 可以", "아니요 싫어요");
   not "네 그런데" (the callee is going on), "좋아요 근데", nor "可以考虑一下"
   (a keyword inside a longer sentence);
4. no word of it, classified on its own, says another class: "好的 不用" or
   "不 需要" heard as two words (whose "需要" alone says the opposite) are
   left to the full window and the final result.

A negation inside the answer ("不需要", "필요 없어요") is the classifier's to
resolve: "不需要" is complete as a refusal where the node routes refusals,
and never as the "需要" it contains. Words are what the recogniser puts
spaces between (vosk's output); a text without spaces (typed Chinese) is one
word.

What it is not: the decision of the turn — the engine classifies the final
result again and routes on that. A wrong "complete" costs only the rest of
the full window (the caller who goes on after the short pause is heard as a
second utterance); a wrong "not complete" costs the old, slower turn.

Error handling: none of its own; the classifier never raises on any text.
"""

from __future__ import annotations

from collections.abc import Callable

from waihu.api import Classifier, Match
from waihu.dialog.engine import bare_reply
from waihu.dialog.script import Node, Script

__all__ = [
    "MAX_COMPLETE_CHARS",
    "MAX_COMPLETE_WORDS",
    "MIN_COMPLETE_SCORE",
    "answer_judge",
    "complete_answer",
    "node_windows",
]

# A complete answer is short: "네", "예 좋아요", "아니요 괜찮아요", "可以", "不需要",
# "好的好的". Longer speech is a sentence the callee may well go on with.
MAX_COMPLETE_WORDS = 3
MAX_COMPLETE_CHARS = 8
# The best rule must cover this share of the reply: "네 좋아요" (3 of 4) passes;
# "좋아요 근데" (3 of 5, "good, but") and "可以考虑一下" (2 of 6) do not.
MIN_COMPLETE_SCORE = 0.7


def complete_answer(text: str, node: Node, classifier: Classifier, script: Script) -> bool:
    """True when ``text`` (a partial recognition) is a confident, complete answer at
    ``node`` by the rule of the module docstring."""
    words = text.split()
    if not words or len(words) > MAX_COMPLETE_WORDS:
        return False
    if not 0 < len(bare_reply(text)) <= MAX_COMPLETE_CHARS:
        return False
    allowed = script.allowed(node)
    whole = _best(classifier, text, allowed)
    if whole is None:
        return False
    answer = script.class_of(whole.intent)  # one the node acts on: allowed() has no other
    alone = [_best(classifier, word, allowed) for word in words] if len(words) > 1 else []
    if any(m is not None and script.class_of(m.intent) != answer for m in alone):
        return False  # a word that says something else
    if whole.score >= MIN_COMPLETE_SCORE:
        return True
    return bool(alone) and all(m is not None and m.score >= MIN_COMPLETE_SCORE for m in alone)


def answer_judge(script: Script, classifier: Classifier) -> Callable[[str, Node], bool]:
    """``complete_answer`` bound to one script and its classifier: the
    ``Listener(complete_answer=...)`` of a call."""

    def judge(text: str, node: Node) -> bool:
        return complete_answer(text, node, classifier, script)

    return judge


def node_windows(node: Node, end_silence_ms: int, quick_end_ms: int) -> tuple[int, int]:
    """The (full, short) end-of-speech windows of replies at ``node``: its own
    ``end_window_ms``/``quick_end_ms`` where the script gives them, else the
    ``[media]`` values passed in (a short window of 0: no early end)."""
    full = node.end_window_ms if node.end_window_ms is not None else end_silence_ms
    quick = node.quick_end_ms if node.quick_end_ms is not None else quick_end_ms
    return full, quick


def _best(classifier: Classifier, text: str, allowed: list[str]) -> Match | None:
    """The classifier's first candidate, as the engine takes it."""
    matches = classifier.classify(text, allowed)
    return matches[0] if matches else None
