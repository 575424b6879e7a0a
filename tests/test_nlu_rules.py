"""Chinese reply rules: negation scope, A-not-A and repetition, patterns and exclusions,
sound-alikes, the question mark, ties — on a sales script's classes as an author writes them."""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from waihu.api import Intent, Keyword, Match, ProviderContext
from waihu_nlu.keywords import KeywordClassifier
from waihu_nlu.literals import needed_characters
from waihu_nlu.matcher import SOUND_ALIKE_FACTOR
from waihu_nlu.negation import in_question_form, negations_before
from waihu_nlu.words import cuts_word, word_count

SCRIPTS = Path(__file__).resolve().parent.parent / "etc" / "waihu" / "scripts"

# The standard classes of a sales script (script-v2 §5), negation defaults as
# [script].negation gives them (affirm ↔ deny).
SALES = [
    Intent(
        "dnc",
        keywords=("拉黑", "骚扰", "删掉我的号码"),
        patterns=(r"(别|不要).{0,4}打.{0,2}(电话|了)",),
    ),
    Intent("complaint", keywords=("投诉", "举报", "12315")),
    Intent(
        "kb.price",
        keywords=("多少钱", "价格", "多少"),
        exclusions=("说了多少遍", r"多少(次|回)"),
    ),
    Intent("kb.robot", keywords=("机器人", "真人")),
    Intent(
        "affirm",
        keywords=(
            "好的",
            "可以",
            "行",
            "对",
            "是",
            "嗯",
            Keyword("感兴趣", negated="deny"),
            "兴趣",
            "需要",
            "好用",
            "想要",
            "没问题",
        ),
        examples=("那你说说看",),
        negated="deny",
    ),
    Intent(
        "deny",
        keywords=("不需要", "不用", "不要", "没兴趣", "不感兴趣", "不好", "不买", "没有", "算了"),
        negated="affirm",
    ),
    Intent("call_later", keywords=("再打", "改天", "晚点")),
    Intent("ask_use", keywords=("用不用",)),  # "do I have to use it?" — a question class
    Intent("repeat", keywords=("再说一遍", "没听清"), examples=("嗯？", "啊？")),
]
ALLOWED = [
    "dnc",
    "complaint",
    "kb.price",
    "kb.robot",
    "affirm",
    "deny",
    "call_later",
    "ask_use",
    "repeat",
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


@pytest.fixture(scope="module")
def sales() -> KeywordClassifier:
    return make(SALES, Path("."))


def first(classifier: KeywordClassifier, reply: str) -> Match | None:
    matches = classifier.classify(reply, ALLOWED)
    return matches[0] if matches else None


def classes(classifier: KeywordClassifier, reply: str) -> list[str]:
    return [m.intent for m in classifier.classify(reply, ALLOWED)]


# ── negation scope ──


@pytest.mark.parametrize(
    ("reply", "expected", "negated"),
    [
        ("我对这个不感兴趣", "deny", False),  # deny's own keyword (不感兴趣), longest
        ("不是很感兴趣", "deny", True),  # 感兴趣 under 不是 across 很
        ("没太大兴趣", "deny", True),  # 兴趣 under 没 across 太大
        ("没什么太大兴趣", "deny", True),  # across two gap words
        ("不怎么需要", "deny", True),
        ("我不太想要", "deny", True),
        ("倒也不是没兴趣", "affirm", True),  # deny's 没兴趣 negated by 不是
        ("我可没说不要", "affirm", True),  # 没[说] + 不要 → deny's negated class
        ("也不是不需要", "affirm", True),  # double negation restores
        ("感兴趣", "affirm", False),
        ("不需要", "deny", False),  # begins with a negator: not negated by its own 不
        ("不行", "deny", True),  # a one-character keyword right after 不
        ("不行不行", "deny", True),
        ("我觉得不行", "deny", True),
        ("也不是不行", "affirm", True),
        ("不对不对", "deny", True),
        ("不是不是", "deny", True),  # a repeated no, not a double negation
        ("这个没问题", "affirm", False),  # 没问题 is a word, not 问题 negated
    ],
)
def test_negation_sends_a_keyword_to_its_negated_class(
    sales: KeywordClassifier, reply: str, expected: str, negated: bool
) -> None:
    match = first(sales, reply)
    assert match is not None, reply
    assert (match.intent, match.negated) == (expected, negated), reply
    assert "affirm" not in classes(sales, reply) or expected == "affirm", reply


# deny lists the bare negators as answers of their own, as the class library does
NEGATOR_KEYWORDS = [
    Intent("affirm", keywords=("感兴趣", "需要", "可以"), negated="deny"),
    Intent(
        "deny",
        keywords=("不是", "没有", "没兴趣", "不感兴趣", "不需要", "不行"),
        negated="affirm",
    ),
]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # the negator is used up by the double negation: it is no "no" of its own
        ("倒也不是没兴趣", ["affirm"]),
        ("我也没有不感兴趣啊", ["affirm"]),
        ("没有不需要", ["affirm"]),
        ("也不是不行", ["affirm"]),
        ("不是不可以", ["affirm"]),
        # a negator that negates nothing still says no
        ("不是", ["deny"]),
        ("没有没有", ["deny"]),
        ("不是，没兴趣", ["deny"]),  # the comma ends 不是's reach: two noes
        ("不是我不需要", ["deny"]),  # 我 stands between: 不是 negates nothing
    ],
)
def test_a_negator_used_by_a_negation_is_no_keyword_of_its_own(
    tmp_path: Path, reply: str, expected: list[str]
) -> None:
    classifier = make(NEGATOR_KEYWORDS, tmp_path)
    assert [m.intent for m in classifier.classify(reply, ["affirm", "deny"])] == expected


def test_the_negated_match_names_the_keyword_that_matched(sales: KeywordClassifier) -> None:
    [match] = sales.classify("不是很感兴趣", ALLOWED)
    assert (match.intent, match.matched, match.source) == ("deny", "感兴趣", "keyword")


def test_punctuation_ends_the_scope_of_a_negator(sales: KeywordClassifier) -> None:
    assert classes(sales, "不，感兴趣") == ["affirm"]
    assert classes(sales, "不感兴趣") == ["deny"]
    assert classes(sales, "不，是很感兴趣") == ["affirm"]
    assert classes(sales, "不，是感兴趣的") == ["affirm"]  # no 不是 across the comma
    assert classes(sales, "不是很感兴趣") == ["deny"]


def test_a_negated_keyword_without_a_negated_class_counts_for_nothing(tmp_path: Path) -> None:
    nlu = make([Intent("busy", keywords=("在忙",)), Intent("affirm", keywords=("好",))], tmp_path)
    assert nlu.classify("我没在忙", ["busy", "affirm"]) == []
    assert [m.intent for m in nlu.classify("我在忙", ["busy", "affirm"])] == ["busy"]


def test_a_negated_class_outside_allowed_is_not_returned(sales: KeywordClassifier) -> None:
    assert sales.classify("不是很感兴趣", ["affirm"]) == []


def test_negation_can_be_switched_off(tmp_path: Path) -> None:
    nlu = make(SALES, tmp_path, negation=False)
    match = first(nlu, "不是很感兴趣")
    assert match is not None and (match.intent, match.negated) == ("affirm", False)


# ── A-not-A questions and repeated refusals ──


@pytest.mark.parametrize(
    ("reply", "absent"),
    [
        ("好不好用", ["deny", "affirm"]),  # neither 不好 nor 好用: a question
        ("买不买得看价格", ["deny"]),
        ("需不需要交钱", ["deny", "affirm"]),
        ("有没有优惠", ["deny"]),
        ("你们感不感兴趣我不管", ["affirm", "deny"]),
        ("不用不用", ["ask_use", "affirm"]),  # a repeated refusal, not the question 用不用
        ("不要不要", ["affirm"]),
        ("行不行啊", ["affirm", "deny"]),
        ("是不是机器人", ["affirm", "deny"]),
    ],
)
def test_a_not_a_questions_are_not_statements(
    sales: KeywordClassifier, reply: str, absent: list[str]
) -> None:
    found = classes(sales, reply)
    for name in absent:
        assert name not in found, (reply, found)


VISIT = [
    Intent("affirm", keywords=("去",), negated="deny"),
    Intent("deny", keywords=("不去",), negated="affirm"),
]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("没时间带他去不去了", ["deny"]),  # the refusal 不去了, not the question 去不去
        ("算了去不去了，下次吧", ["deny"]),  # 了 before punctuation ends the clause too
        ("你们去不去", []),
        ("去不去了你说", []),  # 了 inside the clause: still a question
        ("去不去了啊", []),
    ],
)
def test_a_not_a_with_le_at_the_clause_end_is_a_refusal(
    tmp_path: Path, reply: str, expected: list[str]
) -> None:
    visit = make(VISIT, tmp_path)
    assert [m.intent for m in visit.classify(reply, ["affirm", "deny"])] == expected


def test_break_ends_the_clause_of_a_refusal() -> None:
    breaks = [False] * 7
    breaks[4] = True  # 去不去了，你说
    assert in_question_form("去不去了你说", 1, 3, breaks) is False
    assert in_question_form("去不去了你说", 1, 3) is True


def test_repeated_refusals_are_refusals(sales: KeywordClassifier) -> None:
    assert classes(sales, "不用不用") == ["deny"]
    assert classes(sales, "不要不要不要") == ["deny"]
    assert classes(sales, "那这个用不用交钱") == ["ask_use"]


@pytest.mark.parametrize(
    ("text", "start", "end", "question"),
    [
        ("好不好用", 1, 3, True),  # 不好, begun at the 不 of 好不好
        ("好不好用", 2, 4, True),  # 好用, right after 好不
        ("感不感兴趣", 2, 5, True),
        ("不用不用", 2, 4, False),  # the second 不用 of a repeated refusal
        ("是不是机器人", 0, 1, True),  # 是, before 不是
        ("喜欢不喜欢", 0, 2, True),
        ("用不用", 0, 3, False),  # the whole question is what the keyword says
        ("不行不行", 1, 2, False),
        ("不好", 0, 2, False),
        ("还不好", 1, 3, False),
        # X不X了 ending the reply refuses: 不去了, not the question 去不去
        ("没时间带他去不去了", 6, 8, False),  # 不去, at the 不
        ("没时间带他去不去了", 5, 6, False),  # 去, the A before 不去
        ("没时间带他去不去了", 7, 8, False),  # 去, right after 去不
        ("喜欢不喜欢了", 0, 2, False),
        ("去不去了啊", 1, 3, True),  # 了 not at the end: still asks
        ("你去不去", 2, 4, True),
        ("去不去了你说", 1, 3, True),
    ],
)
def test_question_forms_at_the_match_site(text: str, start: int, end: int, question: bool) -> None:
    assert in_question_form(text, start, end) is question


@pytest.mark.parametrize(
    ("text", "start", "count"),
    [
        ("倒也不是没兴趣", 5, 2),  # 没, then 不是
        ("不是很感兴趣", 3, 1),
        ("没什么太大兴趣", 5, 1),
        ("要不要再打", 3, 0),  # the 不 of 要不要 asks, it does not negate
        ("感兴趣", 0, 0),
    ],
)
def test_negators_counted_before_a_match(text: str, start: int, count: int) -> None:
    assert negations_before(text, start) == count


def test_a_keyword_that_is_itself_a_repetition_matches(tmp_path: Path) -> None:
    nlu = make([Intent("deny", keywords=("不用不用",))], tmp_path)
    assert [m.matched for m in nlu.classify("不用不用", ["deny"])] == ["不用不用"]


# ── patterns and exclusions ──


def test_a_gap_pattern_matches_and_names_itself(sales: KeywordClassifier) -> None:
    match = first(sales, "以后别再给我打电话了")
    assert match is not None
    assert (match.intent, match.source) == ("dnc", "pattern")
    assert match.matched == r"(别|不要).{0,4}打.{0,2}(电话|了)"
    assert first(sales, "以后别，再给我打电话了") is not None  # punctuation is gone
    assert "dnc" not in classes(sales, "别在我上班的时候打电话")  # a gap longer than .{0,4}


def test_exclusions_veto_matches_inside_them_only(sales: KeywordClassifier) -> None:
    assert "kb.price" not in classes(sales, "我说了多少遍了")
    assert "kb.price" not in classes(sales, "打了多少次了")  # an exclusion pattern
    assert "kb.price" in classes(sales, "说了多少遍了，到底多少钱")  # 多少钱 lies outside
    assert "kb.price" in classes(sales, "一个月多少")


@pytest.mark.parametrize(
    "reply",
    ["再打骚扰电话我就去投诉你们", "别给我打了再打我打12315", "天天骚扰我我要举报"],
)
def test_a_whole_reply_exclusion_vetoes_patterns_and_keywords_alike(
    tmp_path: Path, reply: str
) -> None:
    # the class library's way: a reply threatening a complaint is no do-not-call
    dnc = Intent(
        "dnc",
        keywords=("骚扰",),
        patterns=(r"(别|不要).{0,4}打",),
        exclusions=(".*(投诉|举报|12315).*",),
    )
    nlu = make([dnc, Intent("complaint", keywords=("投诉", "举报", "12315"))], tmp_path)
    assert [m.intent for m in nlu.classify(reply, ["dnc", "complaint"])] == ["complaint"]
    assert [m.intent for m in nlu.classify("别给我打了烦死了", ["dnc", "complaint"])] == ["dnc"]


def test_an_exclusion_of_one_class_does_not_veto_another(tmp_path: Path) -> None:
    intents = [
        Intent("ask_use", keywords=("用不用",), exclusions=("你用不用",)),
        Intent("ask_use_too", keywords=("用不用",)),
    ]
    nlu = make(intents, tmp_path)
    found = [m.intent for m in nlu.classify("你用不用", ["ask_use", "ask_use_too"])]
    assert found == ["ask_use_too"]


@pytest.mark.parametrize(
    ("intent", "kind"),
    [
        (Intent("dnc", patterns=("(别|不要.{0,4}打",)), "pattern '(别|不要.{0,4}打'"),
        (Intent("kb.price", exclusions=("多少[次",)), "exclusion '多少[次'"),
    ],
)
def test_a_bad_pattern_is_an_error_naming_it(tmp_path: Path, intent: Intent, kind: str) -> None:
    nlu = make(SALES, tmp_path)
    with pytest.raises(ValueError) as raised:
        nlu.fit([intent])
    assert f"intent {intent.name!r}" in str(raised.value)
    assert kind in str(raised.value)
    assert classes(nlu, "多少钱") == ["kb.price"]  # the earlier fit stays


def test_a_negated_pattern_counts_for_the_negated_class_or_nothing(tmp_path: Path) -> None:
    nlu = make([Intent("busy", patterns=("在(开会|开车)",)), *SALES], tmp_path)
    assert [m.intent for m in nlu.classify("我在开会呢", ["busy"])] == ["busy"]
    assert [m.intent for m in nlu.classify("在开会", ["busy"])] == ["busy"]  # 在 comes first
    assert nlu.classify("我没在开会", ["busy"]) == []


def test_an_exclusion_phrase_is_normalised_like_a_reply(tmp_path: Path) -> None:
    nlu = make([Intent("ask_use", keywords=("用不用",), exclusions=("你用不用！",))], tmp_path)
    assert nlu.classify("你用不用", ["ask_use"]) == []
    assert [m.intent for m in nlu.classify("我用不用", ["ask_use"])] == ["ask_use"]


def test_patterns_with_back_references_still_match(tmp_path: Path) -> None:
    intents = [
        Intent("repeat", patterns=(r"(什么|啥)\1",)),  # "什么什么?": joined, \1 would shift
        Intent("kb.price", patterns=(r"(多少)钱",)),
    ]
    nlu = make(intents, tmp_path)
    assert [m.intent for m in nlu.classify("什么什么", ["repeat", "kb.price"])] == ["repeat"]
    assert [m.intent for m in nlu.classify("要多少钱", ["repeat", "kb.price"])] == ["kb.price"]


def test_with_spaces_counting_patterns_and_exclusions_see_the_spaced_reply(
    tmp_path: Path,
) -> None:
    intents = [
        Intent("busy", patterns=("在 开会",), exclusions=("不 在 开会",)),
        Intent("affirm", keywords=("好的",)),
    ]
    nlu = make(intents, tmp_path, ignore_spaces=False)
    [match] = nlu.classify("我 在 开会", ["busy", "affirm"])
    assert (match.intent, match.score) == ("busy", pytest.approx(3 / 4))  # 在开会 of 我在开会
    assert nlu.classify("我在开会", ["busy"]) == []
    assert nlu.classify("我 不 在 开会", ["busy"]) == []
    assert nlu.classify("好 的", ["affirm"]) == []


# Patterns of the kinds the templates use, for the pre-search character test.
PATTERNS = [
    r"(怎么|咋)?(又|还|老是?|总是?|天天|一直|每天)(给我)?(打|来电)(来|过来|电话)",
    r"(是|不是)?(机器|机械|电脑|自动)(人|的|录音|语音)?(吗|吧|啊)?\s*\?",
    r"(请问)?(你|您)是\s*\??$",
    r"(打|拨)?(12315|12321|12345|110|315)",
    r"[0-9一二两三四五六七八九十]+(点|号)",
    r"(今|明|后)天(?!.{0,4}(不|没|忙))",
    r"别.{0,2}打",
    r"^(嗯|呃)?不是(的|啊)?$",
    r".*",
    r"(?i)ok",
    r"(好)\1",
]


@pytest.mark.parametrize(
    ("pattern", "needed"),
    [
        (PATTERNS[2], {"是"}),
        (PATTERNS[3], {"1", "3"}),
        (PATTERNS[4], {"点", "号"}),
        (PATTERNS[6], {"别"}),
        (PATTERNS[8], None),  # matches anything
        (PATTERNS[9], None),  # case-insensitive: o may be O
    ],
)
def test_the_characters_a_pattern_needs(pattern: str, needed: set[str] | None) -> None:
    assert needed_characters(re.compile(pattern)) == (None if needed is None else frozenset(needed))


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.sampled_from(PATTERNS),
    text=st.lists(st.sampled_from([*"是打拨别不没号点今明天你您机器人好12345?", "ok", "OK"])).map(
        "".join
    ),
)
def test_a_pattern_never_matches_a_reply_without_a_character_it_needs(
    pattern: str, text: str
) -> None:
    compiled = re.compile(pattern)
    needed = needed_characters(compiled)
    if needed is not None and needed.isdisjoint(text):
        assert compiled.search(text) is None


# ── sound-alike ──


@pytest.mark.parametrize(
    ("reply", "expected", "keyword"),
    [
        ("那你明天在打吧", "call_later", "再打"),  # 再 heard as 在
        ("这个多少前", "kb.price", "多少钱"),  # 钱 heard as 前
        ("我对这个有性趣", "affirm", "兴趣"),  # 兴趣 heard as 性趣
        ("没性趣", "deny", "没兴趣"),
    ],
)
def test_homophones_match_by_pinyin(
    sales: KeywordClassifier, reply: str, expected: str, keyword: str
) -> None:
    match = first(sales, reply)
    assert match is not None and (match.intent, match.matched) == (expected, keyword), reply


def test_a_keyword_also_sounds_as_its_phrase_reading(tmp_path: Path) -> None:
    nlu = make([Intent("kb.bank", keywords=("银行",))], tmp_path)  # yín háng, 行 alone: xíng
    assert [m.intent for m in nlu.classify("哪个银杭", ["kb.bank"])] == ["kb.bank"]
    assert [m.intent for m in nlu.classify("哪个银星", ["kb.bank"])] == ["kb.bank"]


def test_a_sound_alike_scores_a_little_lower_than_the_written_word(
    sales: KeywordClassifier,
) -> None:
    [written] = sales.classify("多少钱", ["kb.price"])
    [heard] = sales.classify("多少前", ["kb.price"])
    assert written.score == 1.0
    assert heard.score == pytest.approx(SOUND_ALIKE_FACTOR)


def test_a_one_character_keyword_is_never_heard_by_sound(sales: KeywordClassifier) -> None:
    assert "affirm" not in classes(sales, "十分钟以后再说")  # 十 sounds like 是 (shi)
    # even said alone: 事, 市, 试 … are all shi; one syllable says too little
    assert "affirm" not in classes(sales, "事")
    assert "affirm" in classes(sales, "是")


# A satisfaction question's classes, as a template writes them: sound-alikes on.
SATISFACTION = [
    Intent("affirm", keywords=("满意", "有意向", "好的", "在听", "可以", "是我"), negated="deny"),
    Intent("deny", keywords=("很慢", "唔使", "不值", "几房", "太差", "一般"), negated="affirm"),
    Intent("repeat", keywords=("不知道你说啥", "再说一遍")),
    Intent("call_later", keywords=("再听",)),
    Intent("busy", keywords=("有事",)),
]
SATISFACTION_ALLOWED = ["affirm", "deny", "repeat", "call_later", "busy"]


@pytest.fixture(scope="module")
def satisfaction() -> KeywordClassifier:
    return make(SATISFACTION, Path("."))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # most of the keyword's characters differ: other words that share its sound
        ("空调有异响", []),  # 有异响 (you yi xiang) is not 有意向
        ("上午十点到", []),  # 午十 (wu shi) is not 唔使
        ("我手机放车上了", []),  # 机放 (ji fang) straddles 手机|放: not 几房
        # a written word the sound-alike reading would cut in two wins
        ("很满意", ["affirm"]),  # 满意, not 很慢 (hen man)
        ("服务很满意啊", ["affirm"]),
        ("那就可以办理吧", ["affirm"]),  # 以办 (yi ban) is not 一般: both characters differ
        ("现在有事我等会儿打给你", ["busy"]),  # 有事 written; 事我 (shi wo) is not 是我
        ("服务一版吧", ["deny"]),  # 一版 for 一般, nothing written in its way
        # a stretch written as another class's keyword is that keyword
        ("我在听", ["affirm"]),  # 在听 is listed: not 再听 (call_later) by sound
        # a recogniser's one-character slip still counts
        ("过两天再挺吧", ["call_later"]),  # 再挺 for 再听
        ("服务太茶了", ["deny"]),  # 太茶 for 太差
        ("给的东西不直", ["deny"]),  # 不直 for 不值
    ],
)
def test_a_sound_alike_hit_needs_most_of_the_keyword_as_written(
    satisfaction: KeywordClassifier, reply: str, expected: list[str]
) -> None:
    assert [m.intent for m in satisfaction.classify(reply, SATISFACTION_ALLOWED)] == expected


def test_a_written_keyword_holding_a_sound_alike_beats_it(satisfaction: KeywordClassifier) -> None:
    # 不知 sounds like 不值 (bu zhi) but is part of the written 不知道你说啥
    [match] = satisfaction.classify("不知道你说啥", SATISFACTION_ALLOWED)
    assert (match.intent, match.source) == ("repeat", "keyword")


def test_sound_alike_is_switchable_per_keyword_class_and_classifier(tmp_path: Path) -> None:
    per_keyword = make([Intent("later", keywords=(Keyword("再打", sound_alike=False),))], tmp_path)
    assert per_keyword.classify("在打", ["later"]) == []
    per_class = make([Intent("later", keywords=("再打",), sound_alike=False)], tmp_path)
    assert per_class.classify("在打", ["later"]) == []
    overridden = make(
        [Intent("later", keywords=(Keyword("再打", sound_alike=True),), sound_alike=False)],
        tmp_path,
    )
    assert [m.intent for m in overridden.classify("在打", ["later"])] == ["later"]
    switched_off = make([Intent("later", keywords=("再打",))], tmp_path, sound_alike=False)
    assert switched_off.classify("在打", ["later"]) == []
    assert [m.intent for m in switched_off.classify("再打", ["later"])] == ["later"]


# ── the question mark and fillers ──


def test_a_bare_en_is_not_en_with_a_question_mark(sales: KeywordClassifier) -> None:
    assert classes(sales, "嗯") == ["affirm"]
    assert classes(sales, "嗯嗯") == ["affirm"]
    assert classes(sales, "嗯？") == ["repeat"]
    assert classes(sales, "嗯?") == ["repeat"]
    [match] = sales.classify("嗯？", ALLOWED)
    assert (match.source, match.matched, match.score) == ("example", "嗯？", 1.0)


def test_examples_match_through_fillers_and_punctuation(sales: KeywordClassifier) -> None:
    [match] = sales.classify("嗯，那你说说看吧！", ALLOWED)
    assert (match.intent, match.source) == ("affirm", "example")


# ── ties and determinism ──


def test_within_a_class_the_longer_match_then_the_earlier_keyword_wins(tmp_path: Path) -> None:
    nlu = make([Intent("affirm", keywords=("可以", "好的", "没问题"))], tmp_path)
    assert nlu.classify("好的可以", ["affirm"])[0].matched == "可以"
    assert nlu.classify("好的没问题", ["affirm"])[0].matched == "没问题"


def test_classes_come_in_allowed_order_every_time(tmp_path: Path) -> None:
    reply = "多少钱，你是机器人吗"
    once = make(SALES, tmp_path).classify(reply, ALLOWED)
    again = make(list(SALES), tmp_path).classify(reply, ALLOWED)
    assert once == again
    assert [m.intent for m in once] == ["kb.price", "kb.robot"]
    reordered = make(SALES, tmp_path).classify(reply, ["kb.robot", "kb.price"])
    assert [m.intent for m in reordered] == ["kb.robot", "kb.price"]


# ── Korean still works ──


def test_the_korean_demo_script(tmp_path: Path) -> None:
    table = tomllib.loads((SCRIPTS / "demo-ko.toml").read_text(encoding="utf-8"))
    intents = [
        Intent(name, keywords=tuple(t.get("keywords", ())), examples=tuple(t.get("examples", ())))
        for name, t in table["intents"].items()
    ] + [
        Intent(f"kb.{name}", keywords=tuple(t.get("keywords", ())))
        for name, t in table["kb"].items()
    ]
    nlu = make(intents, tmp_path)
    allowed = ["kb.price", "kb.who", "affirm", "deny"]
    for reply, expected in [
        ("네", "affirm"),
        ("네 좋아요", "affirm"),
        ("아니요", "deny"),
        ("필요없어요", "deny"),
        ("가격이 얼마 예요", "kb.price"),
        ("누구세요", "kb.who"),
    ]:
        assert [m.intent for m in nlu.classify(reply, allowed)][:1] == [expected], reply
    assert nlu.classify("지금 바쁘네요", allowed) == []


# ── robustness ──

_CHINESE_REPLY = st.lists(
    st.sampled_from([*"不没是好的用要嗯啊吧？?，。 别打再在钱前兴趣性多少", "不是", "没有", "ok"]),
    max_size=15,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=40), _CHINESE_REPLY))
def test_classify_never_raises_and_returns_allowed_classes(text: str) -> None:
    matches = _SHARED.classify(text, ALLOWED)
    assert [m.intent for m in matches] == [n for n in ALLOWED if n in {m.intent for m in matches}]
    assert all(0.0 <= m.score <= 1.0 for m in matches)


_SHARED = make(SALES, Path("."))


# ── keyword hits that cut a common word ──

WORD_CUTS = [
    Intent("affirm", keywords=("好的", "可以", "周日", "上午"), negated="deny"),
    Intent("deny", keywords=("不去", "不值"), negated="affirm"),
    Intent("busy", keywords=("在开会", "开会")),
    Intent("kb.address", keywords=("在哪",)),
]
WORD_CUTS_ALLOWED = ["kb.address", "affirm", "deny", "busy"]


@pytest.fixture(scope="module")
def word_cuts() -> KeywordClassifier:
    return make(WORD_CUTS, Path("."))


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("说好的赠品到现在也没给", []),  # 说好 + 的: no 好的
        ("现在哪有钱啊", []),  # 现在 + 哪: no 在哪
        ("我不知道", []),  # 不 + 知道: no 不值 by sound
        ("你们店在哪", ["kb.address"]),  # 店在 is no word: 在哪 stands
        ("好的没问题", ["affirm"]),
        ("那就周日上午", ["affirm"]),  # 周日 is the commoner word at 日|上
        ("这周日不去了", ["affirm", "deny"]),  # 这周 is no listed word: 周日 stands
        ("正在开会", ["busy"]),  # 在开会 cuts 正在; 开会 stands
        ("东西不直这个价", ["deny"]),  # 不直 for 不值, nothing cut
    ],
)
def test_a_keyword_that_cuts_a_common_word_is_no_hit(
    word_cuts: KeywordClassifier, reply: str, expected: list[str]
) -> None:
    assert [m.intent for m in word_cuts.classify(reply, WORD_CUTS_ALLOWED)] == expected


def test_the_word_counts_decide_which_side_of_an_edge_is_a_word() -> None:
    assert word_count("现在") > word_count("在哪") == 0
    assert cuts_word("说好的", 1, 3)  # 说好 across the start
    assert cuts_word("不知道", 0, 2)  # 知道 across the end
    assert not cuts_word("好的", 0, 2)  # nothing outside the hit
    assert not cuts_word("那就周日上午", 2, 4)  # 日上 is no word
