"""The keyword classifier: priority order, Korean and Chinese spacing, examples, Latin words,
normalisation. Chinese rules (negation, A-not-A, patterns, sound-alikes) are in test_nlu_rules.py;
the trained classifier in test_nlu_trained.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from waihu.api import Classifier, Intent, Match, ProviderContext
from waihu_nlu.keywords import KeywordClassifier
from waihu_nlu.normalize import normalize, strip_fillers

KOREAN = [
    Intent("kb_price", keywords=("가격", "얼마 예요", "비싸")),
    Intent("affirm", keywords=("네", "좋아요"), examples=("관심 있어요",)),
    Intent("negative", keywords=("아니요", "필요 없어요")),
]
CHINESE = [
    Intent("affirm", keywords=("是的", "好的", "可以")),
    Intent("negative", keywords=("不需要", "不用")),
    Intent("kb_price", keywords=("多少钱", "价格")),
]


def make(intents: list[Intent], tmp_path: Path, **config: bool) -> KeywordClassifier:
    context = ProviderContext(
        name="test",
        state_dir=tmp_path,
        log=logging.getLogger("waihu.nlu.test"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    classifier = KeywordClassifier(KeywordClassifier.Config(**config), context)
    classifier.fit(intents)
    return classifier


def names(matches: list[Match]) -> list[str]:
    return [m.intent for m in matches]


def test_plugin_registers_keywords(provider_types: dict) -> None:
    assert provider_types["nlu"]["keywords"] is KeywordClassifier


def test_follows_the_classifier_protocol(tmp_path: Path) -> None:
    assert isinstance(make(KOREAN, tmp_path), Classifier)


def test_allowed_order_is_the_priority(tmp_path: Path) -> None:
    nlu = make(KOREAN, tmp_path)
    text = "네 가격이 얼마 예요"  # affirmative and a price question at once
    assert names(nlu.classify(text, ["kb_price", "affirm", "negative"])) == ["kb_price", "affirm"]
    # even though "얼마 예요" is longer than "네", the script's order decides
    assert names(nlu.classify(text, ["affirm", "kb_price", "negative"])) == ["affirm", "kb_price"]


def test_korean_matches_with_or_without_spaces(tmp_path: Path) -> None:
    nlu = make(KOREAN, tmp_path)
    allowed = ["kb_price", "negative"]
    for text in ("얼마예요", "얼마 예요", "가 격 이 얼마"):
        assert names(nlu.classify(text, allowed))[:1] == ["kb_price"], text
    assert names(nlu.classify("필요없어요", allowed)) == ["negative"]
    assert names(nlu.classify("아니 요", allowed)) == ["negative"]


def test_spaces_count_when_told_to(tmp_path: Path) -> None:
    nlu = make(KOREAN, tmp_path, ignore_spaces=False)
    assert nlu.classify("얼마예요", ["kb_price"]) == []
    assert names(nlu.classify("그거 얼마 예요", ["kb_price"])) == ["kb_price"]


def test_chinese_keywords(tmp_path: Path) -> None:
    nlu = make(CHINESE, tmp_path)
    allowed = ["kb_price", "affirm", "negative"]
    assert names(nlu.classify("嗯，是的。", allowed)) == ["affirm"]
    assert names(nlu.classify("是 的", allowed)) == ["affirm"]  # recogniser spacing
    assert names(nlu.classify("不需要，谢谢", allowed)) == ["negative"]
    assert names(nlu.classify("这个多少钱 可以便宜点吗", allowed)) == ["kb_price", "affirm"]


def test_no_match_is_empty(tmp_path: Path) -> None:
    nlu = make(KOREAN + CHINESE, tmp_path)
    allowed = ["kb_price", "affirm", "negative"]
    assert nlu.classify("여보세요", allowed) == []
    assert nlu.classify("", allowed) == []
    assert nlu.classify(" ，。!? ", allowed) == []
    assert nlu.classify("네", []) == []


def test_unknown_and_repeated_names_in_allowed_are_ignored(tmp_path: Path) -> None:
    nlu = make(KOREAN, tmp_path)
    matches = nlu.classify("네 좋아요", ["no_such_intent", "affirm", "affirm"])
    assert names(matches) == ["affirm"]


def test_match_names_the_longest_keyword_and_scores_its_share(tmp_path: Path) -> None:
    nlu = make(KOREAN, tmp_path)
    [match] = nlu.classify("네 좋아요", ["affirm"])
    assert match.matched == "좋아요"
    assert match.score == pytest.approx(3 / 4)  # 좋아요 is 3 of the 4 non-space characters
    [whole] = nlu.classify("아니요", ["negative"])
    assert whole.score == 1.0


def test_examples_match_whole_replies_only(tmp_path: Path) -> None:
    nlu = make(KOREAN, tmp_path)
    [match] = nlu.classify("관심있어요!", ["affirm"])
    assert (match.matched, match.score) == ("관심 있어요", 1.0)
    assert nlu.classify("관심 있어요 근데 나중에", ["affirm"]) == []


def test_latin_is_case_insensitive_and_matches_whole_words(tmp_path: Path) -> None:
    intents = [
        Intent("affirm", keywords=("Yes", "OK")),
        Intent("negative", keywords=("no", "not interested")),
    ]
    nlu = make(intents, tmp_path)
    allowed = ["affirm", "negative"]
    assert names(nlu.classify("YES please", allowed)) == ["affirm"]
    assert names(nlu.classify("ｏｋ", allowed)) == ["affirm"]  # full-width, folded by NFKC
    assert nlu.classify("I know, my eyes", allowed) == []  # no "no" in know, no "yes" in eyes
    assert names(nlu.classify("I'm  NOT   interested.", allowed)) == ["negative"]
    assert names(nlu.classify("no", allowed)) == ["negative"]


def test_width_folding_can_be_turned_off(tmp_path: Path) -> None:
    nlu = make([Intent("affirm", keywords=("ok",))], tmp_path, normalize_width=False)
    assert nlu.classify("ｏｋ", ["affirm"]) == []


def test_fit_replaces_the_previous_intents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nlu = make(KOREAN, tmp_path)
    with caplog.at_level(logging.WARNING, logger="waihu.nlu"):
        nlu.fit([Intent("affirm", keywords=("예", "。"))])
    assert "'affirm'" in caplog.text and "'。'" in caplog.text
    assert nlu.classify("네", ["affirm"]) == []
    assert names(nlu.classify("예", ["affirm"])) == ["affirm"]


def test_a_negated_keyword_counts_for_its_negated_class_or_for_nothing(tmp_path: Path) -> None:
    nlu = make(CHINESE, tmp_path)
    assert nlu.classify("不可以", ["affirm", "negative"]) == []  # affirm names no negated class
    flipping = make([Intent("affirm", keywords=("可以",), negated="negative"), *CHINESE], tmp_path)
    [match] = flipping.classify("不可以", ["affirm", "negative"])
    assert (match.intent, match.matched, match.negated) == ("negative", "可以", True)
    assert names(flipping.classify("可以", ["affirm", "negative"])) == ["affirm"]


def test_normalize_folds_width_case_and_punctuation() -> None:
    assert normalize("  ＨＥＬＬＯ，  World!! 네. ") == "hello world 네"
    assert normalize("ＨＩ", width=False) == "ｈｉ"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("嗯？", "嗯 ?"),  # the question mark is a token: "what?", not a bare yes
        ("嗯?", "嗯 ?"),
        ("什么？？", "什么 ? ?"),
        ("？好", "? 好"),
        ("好的，谢谢。", "好的 谢谢"),
    ],
)
def test_normalize_keeps_the_question_mark_as_a_token(text: str, expected: str) -> None:
    assert normalize(text) == expected
    assert normalize(text, width=False) == expected


@pytest.mark.parametrize(
    ("text", "core"),
    [
        ("嗯", "嗯"),  # nothing else: a bare 嗯 stays
        ("嗯 ?", "嗯 ?"),  # a question mark is not a word
        ("嗯嗯 好的吧", "好的"),
        ("那个 多少钱呢", "多少钱"),
        ("就是不想要", "不想要"),
        ("额度多少", "额度多少"),  # 额 of 额度 is a word, not a filler
        ("好吧 ?", "好 ?"),
        ("哈哈", "哈哈"),
        ("喂 你好啊", "你好"),
    ],
)
def test_fillers_go_from_the_edges_only_while_other_words_remain(text: str, core: str) -> None:
    assert strip_fillers(text) == core


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("네", ["affirm"]),
        ("네네", ["affirm"]),
        ("네 알겠습니다", ["affirm"]),
        ("네, 좋아요", ["affirm"]),
        ("지금 바쁘네요", []),  # "I'm busy now": 네 here is only a word ending
        ("그러네요", []),
    ],
)
def test_single_syllable_keyword_is_a_word_of_its_own(
    tmp_path: Path, reply: str, expected: list[str]
) -> None:
    classifier = make([Intent("affirm", keywords=("네",))], tmp_path)
    assert names(classifier.classify(reply, ["affirm"])) == expected


def test_single_chinese_character_keyword(tmp_path: Path) -> None:
    classifier = make(
        [Intent("affirm", keywords=("对",)), Intent("deny", keywords=("不对",))], tmp_path
    )
    assert names(classifier.classify("对 对", ["affirm", "deny"])) == ["affirm"]
    assert names(classifier.classify("不对", ["affirm", "deny"])) == ["deny"]
    assert names(classifier.classify("对啊对啊", ["affirm", "deny"])) == ["affirm"]
    assert classifier.classify("对面有人", ["affirm", "deny"]) == []  # 对 of 对面 is no yes
    assert classifier.classify("对？", ["affirm", "deny"]) == []  # a question, not a yes
