"""When a turn ended on the short window stands: every final word sure enough.

The hold itself (words after a pause heard as one utterance) is proven end to end
in tests/test_e2e_endpoint.py; this is the word-confidence rule on its own.
"""

from __future__ import annotations

from waihu.api import AsrResult
from waihu.voice import QUICK_END_WORD_CONFIDENCE, _sure


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
