"""When a turn ended on the short window stands: every final word sure enough; what
the recogniser expects while who answered is undecided.

The hold itself (words after a pause heard as one utterance) is proven end to end
in tests/test_e2e_endpoint.py; this is the word-confidence rule on its own.
"""

from __future__ import annotations

from waihu.api import AsrResult
from waihu.dialog.script import Node
from waihu.voice import QUICK_END_WORD_CONFIDENCE, _sure, utterance_phrases
from waihu.who_answered import AnswerScreen


def words(*confidences: float) -> AsrResult:
    return AsrResult(
        "x", 1.0, words=tuple((f"w{i}", c, 0.0, 0.1) for i, c in enumerate(confidences))
    )


def test_a_clear_answer_is_sure() -> None:
    assert _sure(words(1.0))
    assert _sure(words(1.0, QUICK_END_WORD_CONFIDENCE))


def test_one_forced_word_makes_the_early_end_unsure() -> None:
    """A phrase grammar forcing 가격이 onto "네 없어요" gives the second word 0.74."""
    assert not _sure(words(1.0, 0.74))
    assert not _sure(words(QUICK_END_WORD_CONFIDENCE - 0.01))


def test_without_words_the_result_confidence_decides() -> None:
    assert _sure(AsrResult("네", 0.95))
    assert not _sure(AsrResult("네", 0.5))


def node_with(phrases: tuple[str, ...]) -> Node:
    return Node(name="greeting", say=(), reprompt=(), on={}, priority=(), phrases=phrases)


def test_the_screen_adds_its_phrases_to_a_grammar_node_until_its_verdict() -> None:
    """A phrase grammar hears nothing it does not list: while who answered is undecided a
    grammar node also expects what machines say and how people answer the phone."""
    node = node_with(("네", "가격이 얼마 예요"))
    screen = AnswerScreen("ko", sample_rate=8000, now=lambda: 0.0)
    phrases = utterance_phrases(node, screen)
    assert phrases is not None and phrases[:2] == ["네", "가격이 얼마 예요"]
    assert {"없는 번호", "음성 사서함", "여보세요"} <= set(phrases)
    assert phrases.count("네") == 1  # once, though it is a greeting too
    assert utterance_phrases(node, None) == ["네", "가격이 얼마 예요"]
    assert utterance_phrases(node_with(()), screen) is None  # free-form hears all
    screen.heard("여보세요", final=True)  # a person: the node's phrases alone
    assert utterance_phrases(node, screen) == ["네", "가격이 얼마 예요"]
