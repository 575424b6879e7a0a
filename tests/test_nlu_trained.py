"""The ``trained`` classifier: rules first, then a model of the script's examples and keywords.

The paraphrase set below is also where the default threshold and the
regularisation were chosen (see ``waihu_nlu.trained``): none of its replies
is a keyword or an example of the script.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from waihu.api import Classifier, Intent, Keyword, ProviderContext
from waihu_nlu.model import IntentModel
from waihu_nlu.trained import DEFAULT_THRESHOLD, TrainedClassifier

# A 13-class sales script as an author writes it: a few keywords and examples each.
SCRIPT = [
    Intent(
        "dnc",
        keywords=("别再打", "不要再打", "别打了", "不要打了", "删掉我的号码", "拉黑", "骚扰"),
        examples=("以后别给我打电话了", "把我号码删了"),
        patterns=("别.{0,2}打",),
    ),
    Intent("complaint", keywords=("投诉", "举报", "12315", "报警"), examples=("我要投诉你们",)),
    Intent(
        "kb.price",
        keywords=("多少钱", "价格", "费用", "贵不贵", "收费"),
        examples=("怎么收费的", "一个月要交多少"),
    ),
    Intent(
        "kb.who", keywords=("哪里", "哪家公司", "你是谁", "什么公司"), examples=("你们是干什么的",)
    ),
    Intent("kb.robot", keywords=("机器人", "真人", "录音"), examples=("你是人还是机器",)),
    Intent(
        "kb.how_number",
        keywords=("哪来的号码", "怎么知道我的电话", "号码哪里来"),
        examples=("谁给你的我电话",),
    ),
    Intent(
        "affirm",
        keywords=(
            "好的",
            "可以",
            "行",
            "对",
            "是的",
            "嗯",
            Keyword("感兴趣", negated="deny"),
            "没问题",
            "有兴趣",
            "了解一下",
        ),
        examples=("那你说说看", "你讲吧", "发过来看看"),
        negated="deny",
    ),
    Intent(
        "deny",
        keywords=("不需要", "不用", "不要", "没兴趣", "不感兴趣", "算了", "不考虑"),
        examples=("谢谢不用了", "我们不需要这个"),
        negated="affirm",
    ),
    Intent(
        "busy",
        keywords=("在忙", "开车", "开会", "没空", "不方便"),
        examples=("我现在上班呢", "正忙着呢"),
    ),
    Intent(
        "call_later",
        keywords=("晚点", "回头再说", "改天", "过两天", "下次再说"),
        examples=("你晚些时候再打过来", "发个短信给我吧"),
    ),
    Intent(
        "wrong_person",
        keywords=("打错了", "不是我", "不是本人", "不认识"),
        examples=("你找错人了", "他不在"),
    ),
    Intent(
        "already_have",
        keywords=("已经有了", "买过了", "办过了", "已经买了", "有了"),
        examples=("我家里已经有一份了", "去年就买了"),
    ),
    Intent(
        "repeat",
        keywords=("再说一遍", "没听清", "听不清", "什么意思"),
        examples=("嗯？", "啊？", "你说什么"),
    ),
]
ALLOWED = [i.name for i in SCRIPT]

# Replies no rule of SCRIPT catches, with the class a person would give them.
PARAPHRASES = [
    ("我老公买了一份", "already_have"),
    ("这会儿腾不开手", "busy"),
    ("过几天再联系吧", "call_later"),
    ("晚些时候打过来", "call_later"),
    ("这个号码不是他的", "wrong_person"),
    ("你们是哪个单位的", "kb.who"),
    ("一年交多少", "kb.price"),
    ("收不收费啊", "kb.price"),
    ("你是真的人吗", "kb.robot"),
    ("你说说看吧", "affirm"),
    ("那你发过来我看下", "affirm"),
    ("我正忙着呢", "busy"),
    ("不买不买", "deny"),  # a repeated refusal, not the question 买不买
    ("不去不去", "deny"),
]
# …and three the model does not get: below the threshold, they stay unmatched.
MISSED = ["早都办好了", "上个月刚续的", "你刚才说啥"]
# Everyday talk that answers nothing the call asked.
UNRELATED = [
    "今天天气不错",
    "我家猫生病了",
    "晚饭吃了吗",
    "一二三四五",
    "asdfgh",
    "哈哈哈哈",
    "那边下雨了没",
    # a callee talking to someone in the room: household words (打, 别, 没) in
    # their everyday senses, not a refusal or a request to stop calling
    "小宝别哭了妈妈在打电话",
    "我家猫又把杯子打碎了",
    "你吃了没",
    "别把汤弄洒了",
    "儿子去把门关上",
]


def make(intents: list[Intent], **config: float) -> TrainedClassifier:
    context = ProviderContext(
        name="test",
        state_dir=Path("."),
        log=logging.getLogger("waihu.nlu.test"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    classifier = TrainedClassifier(TrainedClassifier.Config(**config), context)
    classifier.fit(intents)
    return classifier


_TRAINED = make(SCRIPT)  # fitted once: training takes a few tenths of a second


@pytest.fixture
def trained() -> TrainedClassifier:
    return _TRAINED


def test_plugin_registers_both_types(provider_types: dict) -> None:
    assert provider_types["nlu"]["trained"] is TrainedClassifier
    assert provider_types["nlu"]["keywords"].type_name == "keywords"


def test_follows_the_classifier_protocol(trained: TrainedClassifier) -> None:
    assert isinstance(trained, Classifier)
    assert TrainedClassifier.Config().threshold == DEFAULT_THRESHOLD


def test_rules_that_fire_win_and_the_model_is_not_asked(trained: TrainedClassifier) -> None:
    [match] = trained.classify("我对这个不感兴趣", ALLOWED)
    assert (match.intent, match.source) == ("deny", "keyword")
    [heard] = trained.classify("倒也不是没兴趣", ALLOWED)
    assert (heard.intent, heard.source, heard.negated) == ("affirm", "keyword", True)


@pytest.mark.parametrize(("reply", "expected"), PARAPHRASES)
def test_a_paraphrase_no_rule_knows_goes_to_its_class(
    trained: TrainedClassifier, reply: str, expected: str
) -> None:
    [match] = trained.classify(reply, ALLOWED)
    assert (match.intent, match.source) == (expected, "model"), reply
    assert DEFAULT_THRESHOLD <= match.score <= 1.0
    samples = {s for i in SCRIPT if i.name == expected for s in (*i.examples, *i.keywords)}
    assert match.matched in {k.text if isinstance(k, Keyword) else k for k in samples}


@pytest.mark.parametrize("reply", UNRELATED + MISSED)
def test_an_unrelated_reply_stays_unmatched(trained: TrainedClassifier, reply: str) -> None:
    assert trained.classify(reply, ALLOWED) == []


def test_the_threshold_decides_whether_the_model_is_believed() -> None:
    strict = make(SCRIPT, threshold=0.99)
    assert strict.classify("你们是哪个单位的", ALLOWED) == []
    lenient = make(SCRIPT, threshold=0.0)
    [match] = lenient.classify("今天天气不错", ALLOWED)
    assert match.source == "model" and match.score < DEFAULT_THRESHOLD


def test_a_threshold_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        TrainedClassifier.Config(threshold=1.5)


def test_the_model_answers_only_with_allowed_classes(trained: TrainedClassifier) -> None:
    assert all(m.intent != "call_later" for m in trained.classify("晚些时候打过来", ["busy"]))
    assert trained.classify("晚些时候打过来", []) == []


def test_a_model_class_is_allowed_under_its_node_scoped_name(trained: TrainedClassifier) -> None:
    [scoped] = trained.classify("你说说看吧", ["kb.price", "offer/affirm"])
    assert scoped.intent == "offer/affirm"
    [plain] = trained.classify("你说说看吧", ["offer/affirm", "affirm"])
    assert plain.intent == "affirm"


def test_node_scoped_extras_are_rules_but_not_trained() -> None:
    nlu = make([*SCRIPT, Intent("appointment/affirm", keywords=("周四", "上午"))])
    assert nlu.model is not None
    assert "appointment/affirm" not in nlu.model.labels
    assert "affirm" in nlu.model.labels
    [match] = nlu.classify("周四吧", ["appointment/affirm", "affirm"])
    assert (match.intent, match.source) == ("appointment/affirm", "keyword")


def test_one_character_keywords_are_rules_but_not_samples() -> None:
    intents = [
        Intent("affirm", keywords=("中", "好的", "可以")),
        Intent("deny", keywords=("不要",)),
    ]
    nlu = make(intents)
    assert nlu.classify("你是中介吧", ["affirm", "deny"]) == []  # 中 (OK) inside 中介
    assert [m.source for m in nlu.classify("中", ["affirm", "deny"])] == ["keyword"]


def test_a_yes_word_said_twice_is_a_rule_but_no_sample() -> None:
    intents = [
        Intent("affirm", keywords=("好", "好好", "可以")),
        Intent("deny", keywords=("不要",)),
    ]
    nlu = make(intents)
    assert nlu.classify("你说话好好玩", ["affirm", "deny"]) == []  # "so", no yes
    assert [m.source for m in nlu.classify("好好", ["affirm", "deny"])] == ["keyword"]


def test_an_a_not_a_question_is_no_refusal_to_the_model(trained: TrainedClassifier) -> None:
    [match] = trained.classify("试听要不要钱", ALLOWED)  # 不要 inside 要不要: a question
    assert (match.intent, match.source) == ("kb.price", "model")


def test_a_refusal_x_not_x_le_is_no_question_to_the_model() -> None:
    from waihu_nlu.trained import _as_question

    assert _as_question("没时间带他去不去了") == "没时间带他去不去了"  # 不去了: a refusal
    assert _as_question("去不去了啊") == "去吗了啊"
    assert _as_question("要不要钱") == "要吗钱"


def test_a_one_character_reply_may_go_to_the_model(trained: TrainedClassifier) -> None:
    [match] = trained.classify("忙", ALLOWED)  # no rule: busy's keywords are 在忙, 没空…
    assert (match.intent, match.source) == ("busy", "model")


def test_fewer_than_two_classes_give_no_model_but_rules_work() -> None:
    nlu = make([Intent("affirm", keywords=("好的",))])
    assert nlu.model is None
    assert [m.intent for m in nlu.classify("好的", ["affirm"])] == ["affirm"]
    assert nlu.classify("你说说看吧", ["affirm"]) == []


def test_training_is_deterministic() -> None:
    once, again = _TRAINED, make(list(SCRIPT))
    for reply, _ in PARAPHRASES:
        assert once.classify(reply, ALLOWED) == again.classify(reply, ALLOWED)
    assert once.model is not None and again.model is not None
    assert once.model.probabilities("一年交多少") == again.model.probabilities("一年交多少")


@pytest.mark.parametrize("reply", ["一年交多少", "这会儿腾不开手", "今天天气不错", "ok 行"])
def test_the_fast_path_gives_scikit_learns_probabilities(
    trained: TrainedClassifier, reply: str
) -> None:
    model = trained.model
    assert isinstance(model, IntentModel)
    fast = model.probabilities(reply)
    assert fast is not None
    assert fast == pytest.approx(model.reference_probabilities(reply), abs=1e-9)


def test_two_classes_and_the_background_give_three_probabilities() -> None:
    nlu = make([Intent("affirm", keywords=("好的", "可以")), Intent("deny", keywords=("不要",))])
    assert nlu.model is not None and nlu.model.labels == ("affirm", "deny")
    fast = nlu.model.probabilities("可以的")
    assert fast == pytest.approx(nlu.model.reference_probabilities("可以的"), abs=1e-9)
    assert fast is not None and fast["affirm"] > fast["deny"]
    assert sum(fast.values()) < 1.0  # the rest is the background's


def test_a_bad_pattern_is_an_error_naming_it_and_the_earlier_fit_stays() -> None:
    nlu = make(SCRIPT)
    with pytest.raises(ValueError, match=r"intent 'dnc': pattern '别\.\{0,2\}\(打'"):
        nlu.fit([*SCRIPT[1:], Intent("dnc", patterns=("别.{0,2}(打",))])
    assert nlu.classify("一年交多少", ALLOWED) == _TRAINED.classify("一年交多少", ALLOWED)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=30))
def test_classify_never_raises(text: str) -> None:
    matches = _TRAINED.classify(text, ALLOWED)
    assert all(m.intent in ALLOWED and 0.0 <= m.score <= 1.0 for m in matches)


# ── the shipped templates: everyday talk aside stays unmatched, paraphrases still land ──

REPO = Path(__file__).resolve().parent.parent


def _load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nlu_eval", REPO / "benchmarks" / "nlu_eval.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nlu_eval"] = module
    spec.loader.exec_module(module)
    return module


# (template, kind of question asked, reply, class): none of these replies is a line of the
# background class (waihu_nlu.background) nor of the evaluation sets
AT_THE_TEMPLATES = [
    # said aside or off-topic: the model took each before the background was widened
    ("insurance", "identity", "油价又涨了", "default"),  # 价 → kb.price
    ("insurance", "interest", "外面好大的风", "default"),  # 好 → affirm
    ("real_estate", "interest", "你等一下我关个火", "default"),  # 等一下 → call_later
    ("real_estate", "appointment", "这个那个就是那啥", "default"),  # 啥 → repeat
    ("insurance", "identity", "孩子发烧了刚退", "default"),
    ("real_estate", "appointment", "你看那个人在干嘛", "default"),
    ("after_sales", "satisfaction", "我姐明天结婚", "default"),  # 明天 → call_later
    ("education", "interest", "鸡汤炖好了", "default"),  # 好了 → already_have
    ("appointment", "appointment", "牙疼得厉害", "default"),
    ("insurance", "identity", "你们谁拿了我的充电器", "default"),  # 谁…我的 → kb.how_number
    ("education", "identity", "老头子把遥控器给我", "default"),
    ("after_sales", "identity", "头发该剪了", "default"),  # 头 → call_later's 回头
    # real paraphrases the model must still take
    ("education", "appointment", "没时间带他去不去了", "deny"),
    ("insurance", "interest", "你从哪弄到我号码的", "kb.how_number"),
    ("real_estate", "interest", "均价大概多少一平", "kb.price"),
    ("appointment", "confirm", "能准时到", "affirm"),
    ("education", "interest", "孩子已经报了别的班", "already_have"),
]


@pytest.fixture(scope="module")
def at_the_templates() -> dict[str, str]:
    nlu_eval = _load_benchmark()
    nodes = nlu_eval.load_nodes(REPO / "tests" / "data" / "nlu_eval_nodes.toml")
    replies = [
        nlu_eval.Reply(number, template, context, text, expect)
        for number, (template, context, text, expect) in enumerate(AT_THE_TEMPLATES, 1)
    ]
    report = nlu_eval.evaluate(replies, nodes=nodes)
    return {outcome.reply.text: outcome.got for outcome in report.outcomes}


@pytest.mark.parametrize(("template", "context", "reply", "expected"), AT_THE_TEMPLATES)
def test_the_templates_reject_talk_aside_and_take_paraphrases(
    at_the_templates: dict[str, str], template: str, context: str, reply: str, expected: str
) -> None:
    assert at_the_templates[reply] == expected, (template, context, reply)


def test_the_background_is_trained_as_replies_reach_the_model() -> None:
    # fillers (嗯, 呃, 哎) are stripped from a reply before the model sees it; the
    # background's lines hold them (嗯嗯那个, 呃这个, 哎呀这个) but are trained the same way,
    # so the model learns no n-gram that no reply brings
    nlu = make([Intent("affirm", keywords=("可以", "好的")), Intent("deny", keywords=("算了",))])
    assert nlu.model is not None
    for filler in "嗯呃哎":
        assert nlu.model.probabilities(filler) is None, filler
    assert nlu.model.probabilities("今天") is not None  # the background's words are there
