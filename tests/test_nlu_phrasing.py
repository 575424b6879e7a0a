"""Chinese reply rules for phrasings a keyword list gets wrong: negation after a universal
with 都, a negator that starts a common word, sound-alikes of particles, and a yes-word
said twice before another word."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio

from waihu.api import Intent, Keyword, Match, ProviderContext
from waihu_nlu.keywords import KeywordClassifier
from waihu_nlu.matcher import word_of_its_own
from waihu_nlu.negation import negator_after
from waihu_nlu.normalize import analyse
from waihu_nlu.words import cuts_word

# An appointment question's classes as a template writes them: a time left to the
# robot ("哪天都行") is a yes, and the yes-words of the class library.
APPOINTMENT = [
    Intent(
        "affirm",
        keywords=(
            "好",
            "好好",
            "好的",
            "对",
            "对对",
            "听听",
            "可以的",
            "随时",
            Keyword("能来", negated="deny"),
            Keyword("满意", negated="deny"),
        ),
        patterns=("(随时|都行|都可以|哪天都)",),
        negated="deny",
    ),
    Intent("deny", keywords=("不去", "不行", "不需要"), negated="affirm"),
    Intent("busy", keywords=("没空", "有事")),
    Intent("call_later", keywords=("再听",)),
]
ALLOWED = ["affirm", "deny", "busy", "call_later"]


def make(intents: list[Intent], tmp_path: Path) -> KeywordClassifier:
    context = ProviderContext(
        name="test",
        state_dir=tmp_path,
        log=logging.getLogger("waihu.nlu.test"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    classifier = KeywordClassifier(KeywordClassifier.Config(), context)
    classifier.fit(intents)
    return classifier


@pytest.fixture(scope="module")
def appointment() -> KeywordClassifier:
    return make(APPOINTMENT, Path("."))


def first(classifier: KeywordClassifier, reply: str) -> Match | None:
    matches = classifier.classify(reply, ALLOWED)
    return matches[0] if matches else None


def classes(classifier: KeywordClassifier, reply: str) -> list[str]:
    return [m.intent for m in classifier.classify(reply, ALLOWED)]


# ── negation after a universal with 都 ──


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("哪天都不来", ["deny"]),  # the pattern 哪天都, then 不: at no day
        ("我哪天都没空", ["deny", "busy"]),  # 没 after 都 negates; 没空 is busy's own
        ("随时都不行", ["deny"]),  # 都 right after the keyword 随时
        ("哪天都行", ["affirm"]),  # no negator after 都
        ("随时都可以", ["affirm"]),
        ("哪天都，不去", ["affirm", "deny"]),  # punctuation ends the scope
        ("好的也不去", ["affirm", "deny"]),  # 也 after a yes is a second statement
    ],
)
def test_a_universal_with_du_then_a_negator_negates_it(
    appointment: KeywordClassifier, reply: str, expected: list[str]
) -> None:
    assert classes(appointment, reply) == expected


def test_a_negation_after_the_match_is_reported_as_negation(
    appointment: KeywordClassifier,
) -> None:
    match = first(appointment, "哪天都不来")
    assert match is not None
    assert (match.intent, match.matched, match.negated) == (
        "deny",
        "(随时|都行|都可以|哪天都)",
        True,
    )


@pytest.mark.parametrize(
    ("text", "end", "span"),
    [
        ("哪天都不来", 3, (3, 4)),  # the match ends with 都
        ("随时都不去", 2, (3, 4)),  # 都 right after the match
        ("随时都不是", 2, (3, 5)),  # the longest negator
        ("随时都去", 2, None),  # no negator
        ("随时也不去", 2, None),  # 也 is no universal
        ("随时", 2, None),  # the reply's end
        ("随时都", 2, None),
        ("随时都不不", 2, (3, 4)),
    ],
)
def test_the_negator_after_a_match(text: str, end: int, span: tuple[int, int] | None) -> None:
    assert negator_after(text, end) == span


def test_punctuation_after_du_stops_the_negator() -> None:
    reply = analyse("随时都，不去")
    assert negator_after(reply.compact, 2, reply.break_before) is None
    reply = analyse("随时，都不去")
    assert negator_after(reply.compact, 2, reply.break_before) is None


# ── a negator that starts a common word ──


@pytest.mark.parametrize(
    ("reply", "expected", "negated"),
    [
        ("不能来", "deny", True),  # 不能 is a common word, but its 不 negates 能来
        ("不能来了要加班", "deny", True),
        ("我能来", "affirm", False),
        ("也不是不能来", "affirm", True),
    ],
)
def test_a_negator_before_a_keyword_is_no_word_the_keyword_cuts(
    appointment: KeywordClassifier, reply: str, expected: str, negated: bool
) -> None:
    match = first(appointment, reply)
    assert match is not None
    assert (match.intent, match.matched, match.negated) == (expected, "能来", negated)


def test_keep_start_reads_only_the_end_of_a_hit() -> None:
    assert cuts_word("不能来", 1, 3)  # 不能 is commoner than 能来
    assert not cuts_word("不能来", 1, 3, keep_start=True)
    assert cuts_word("说好的", 1, 3, keep_start=False)
    assert cuts_word("我不知道", 1, 3, keep_start=True)  # 知道 across the end still cuts


# ── sound-alikes of a yes made of one syllable and a particle ──


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("要换个中号的", []),  # 号的 (hao de) is no 好的: one syllable and a particle
        ("这双鞋有小号的吗", []),
        ("你是几号的票", []),
        ("好的", ["affirm"]),  # as written it stands
        ("可已的", ["affirm"]),  # 可以的: two syllables before the particle, a slip
        ("过两天再挺", ["call_later"]),  # 再听: two syllables, a slip
        ("服务很蛮意", ["affirm"]),  # 满意 heard as 蛮意
    ],
)
def test_a_keyword_of_one_syllable_and_a_particle_is_not_heard_by_sound(
    appointment: KeywordClassifier, reply: str, expected: list[str]
) -> None:
    assert classes(appointment, reply) == expected


# ── a yes-word said twice ──


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("好好", ["affirm"]),  # the yes said twice, alone
        ("好好，那你说", ["affirm"]),  # then a pause
        ("好好好", ["affirm"]),
        ("嗯对对", ["affirm"]),
        ("你说话好好玩", []),  # "so": no yes
        ("好好学习", []),  # "properly": no yes
        ("对对碰", []),
        ("也不是不能听听", ["affirm"]),  # 听听 is a verb said twice: no keyword 听, plain
        ("听听也行", ["affirm"]),
    ],
)
def test_a_yes_word_said_twice_is_a_word_of_its_own(
    appointment: KeywordClassifier, reply: str, expected: list[str]
) -> None:
    assert classes(appointment, reply) == expected


@pytest.mark.parametrize(
    ("key", "singles", "own"),
    [
        ("好", set(), True),
        ("好好", {"好"}, True),
        ("对对对", {"对"}, True),
        ("好好", set(), False),  # no keyword 好 in its class
        ("听听", {"好"}, False),
        ("好好好好", {"好"}, False),  # longer than a repetition goes
        ("好的", {"好"}, False),
    ],
)
def test_which_keywords_are_words_of_their_own(key: str, singles: set[str], own: bool) -> None:
    assert word_of_its_own(key, singles) is own


# ── the templates: classes in the order a careful author routes them ──

REPO = Path(__file__).resolve().parent.parent


def _load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "nlu_eval_phrasing", REPO / "benchmarks" / "nlu_eval.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nlu_eval_phrasing"] = module
    spec.loader.exec_module(module)
    return module


# (template, kind of question, reply, class): one or two of each family, by the rules only
FAMILIES = [
    # "didn't hear" outranks the knowledge-base question it comes with
    ("real_estate", "identity", "没听清楚 你们是哪个公司的", "repeat"),
    ("after_sales", "satisfaction", "你刚问的是什么", "repeat"),
    # busy now, with a time for the call back: call_later
    ("insurance", "identity", "我在开会 晚点再打给我", "call_later"),
    # a relative says the person is away; at a time question too
    ("appointment", "appointment", "你找的应该是我妈吧", "wrong_person"),
    ("education", "identity", "我是孩子奶奶 她爸妈都出门了", "wrong_person"),
    ("insurance", "identity", "不对 不是什么赵先生", "wrong_person"),
    # a kind of product is a question about the offer; which firm's is who calls
    ("real_estate", "interest", "挺好 什么楼盘", "affirm"),
    ("insurance", "identity", "你们是哪家保险的", "kb.who"),
    # negation after a universal, before a keyword, of a mishap
    ("education", "appointment", "周末哪天都不来", "deny"),
    ("appointment", "confirm", "不能来了 孩子病了", "deny"),
    ("appointment", "confirm", "保证不会耽误", "affirm"),
    # a size, not 好的 by sound
    ("after_sales", "satisfaction", "裤子有没有小号的", "default"),
    # a deed done, in 是…的; a class taken is not work
    ("insurance", "interest", "保险去年就买的", "already_have"),
    ("appointment", "confirm", "我正在上班 不方便说话", "busy"),
    # knowledge-base questions put other ways
    ("after_sales", "identity", "我的手机号你们从哪搞来的", "kb.how_number"),
    ("real_estate", "identity", "这号码你们咋弄到的", "kb.how_number"),
    ("education", "appointment", "离哪个公交站近", "kb.address"),
    ("real_estate", "identity", "你哪里呀", "kb.who"),
    # listening; a time and whom the caller brings
    ("real_estate", "interest", "讲吧 听着呢", "affirm"),
    ("education", "appointment", "周六带孩子过去", "affirm"),
]


def test_the_templates_route_each_family_of_phrasing_by_their_rules() -> None:
    nlu_eval = _load_benchmark()
    replies = [
        nlu_eval.Reply(number, template, context, text, expect)
        for number, (template, context, text, expect) in enumerate(FAMILIES, 1)
    ]
    report = nlu_eval.evaluate(
        replies, nlu="keywords", nodes=nlu_eval.load_nodes(nlu_eval.NODES_FILE)
    )
    misses = [
        f"{m.reply.template}/{m.reply.context} 「{m.reply.text}」 {m.reply.expect} → {m.got}"
        for m in report.misses
    ]
    assert misses == []
