"""The Chinese industry templates (etc/waihu/scripts/zh/) and their shared class library.

Each template must load as the daemon loads it (recordings checked: it has none, every
line is spoken by TTS), lint clean, keep the shape the templates promise (identity check,
objection handling, closings with grades, handlers, turn cap, the standard knowledge
base), and pass its own dialogue cases (``NAME.cases.toml``) through the runner
``waihuctl script test`` uses, with the ``trained`` classifier. A handful of replies at
named nodes pin the decisions the class library was built around (negation, A-not-A
questions, a time named at an appointment question, a parent at a school's identity
check); ``tests/data/nlu_eval_nodes.toml`` must name, for each template, nodes that exist
and hear every standard class; and a script anywhere can include the class library by its
relative path.
"""

from __future__ import annotations

import os
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from waihu.api import Classifier
from waihu.dialog.engine import classify_reply
from waihu.dialog.script import Script, load_script
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu.providers import provider_context

REPO = Path(__file__).resolve().parent.parent
ZH = REPO / "etc" / "waihu" / "scripts" / "zh"
LIBRARY = ZH / "common" / "zh-intents.toml"
NODES_FILE = REPO / "tests" / "data" / "nlu_eval_nodes.toml"

TEMPLATES = ("insurance", "real_estate", "education", "after_sales", "appointment")
STANDARD_CLASSES = (
    "affirm",
    "deny",
    "busy",
    "call_later",
    "wrong_person",
    "already_have",
    "dnc",
    "complaint",
    "repeat",
)
STANDARD_KB = ("kb.price", "kb.who", "kb.robot", "kb.how_number")
ADDRESS_TEMPLATES = frozenset({"real_estate", "education", "appointment"})
CONTEXTS = {
    "insurance": ("identity", "interest"),
    "real_estate": ("identity", "interest", "appointment"),
    "education": ("identity", "interest", "appointment"),
    "after_sales": ("identity", "satisfaction"),
    "appointment": ("identity", "confirm", "appointment"),
}
MIN_NODES, MAX_NODES = 8, 15  # a template small enough to read, big enough to be real
MIN_INDUSTRY_KB, MAX_INDUSTRY_KB = 2, 4  # knowledge-base entries beyond the standard ones
MIN_EXAMPLES, MAX_EXAMPLES = 20, 40  # whole replies per standard class, to train the model
MIN_VARIANTS = 2  # ways of saying a main node's line
# Virtual seconds a whole case may take: cases run on a clock that stands still except
# for silences (a node's window each), so only a case that never ends reaches this.
CASE_DEADLINE = 600.0
FALLBACK_REASON = "no grading rule matched"  # how the engine words a grade no rule gave


# ───────────────────────────── fixtures ─────────────────────────────


@pytest.fixture(scope="module")
def scripts() -> dict[str, Script]:
    """Every template, loaded as the daemon loads it (recordings checked)."""
    return {name: load_script(ZH / f"{name}.toml", check_recordings=True) for name in TEMPLATES}


@pytest.fixture(scope="module")
def classifiers(
    scripts: dict[str, Script], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Classifier]:
    """A ``trained`` classifier with its default settings per template, fitted as a call's."""
    trained = collect_provider_types(make_plugin_manager())["nlu"]["trained"]
    fitted = {}
    for name, script in scripts.items():
        context = provider_context(
            "nlu",
            f"template-{name}",
            state_dir=tmp_path_factory.mktemp(name),
            cpu_limiter=trio.CapacityLimiter(1),
        )
        classifier = trained(trained.Config(), context)
        classifier.fit(script.intents)
        fitted[name] = classifier
    return fitted


def _main_nodes(script: Script) -> list[str]:
    return [name for name, node in script.nodes.items() if not node.end]


# ───────────────────────────── loading and shape ─────────────────────────────


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_is_spoken_by_tts_and_has_its_shape(scripts: dict[str, Script], name: str) -> None:
    script = scripts[name]
    assert script.name == name
    assert script.language == "zh"
    assert script.recordings() == set()
    assert script.always == ("dnc", "complaint")
    assert MIN_NODES <= len(script.nodes) <= MAX_NODES
    assert script.turn_cap is not None and script.on_turn_cap is not None
    assert "{name}" in script.nodes[script.start].say[0].text
    for node in _main_nodes(script):
        assert len(script.nodes[node].say) >= MIN_VARIANTS, node
    # every class of the library arrived through the include
    fitted = {i.name for i in script.intents}
    assert set(STANDARD_CLASSES) <= fitted
    for class_name in STANDARD_CLASSES:
        intent = next(i for i in script.intents if i.name == class_name)
        assert intent.keywords or intent.patterns, class_name
    # closings carry grades; a do-not-call closing lists the number
    graded = {script.nodes[n].grade for n in script.nodes if script.nodes[n].end}
    assert None not in graded and {"A", "C", "E", "F"} <= graded
    assert any(node.dnc for node in script.nodes.values() if node.end)
    assert all(rule.reason for rule in script.grading)
    assert any(rule.grade == "A" for rule in script.grading)


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_handlers(scripts: dict[str, Script], name: str) -> None:
    handlers = scripts[name].handlers
    assert (handlers.no_input.limit, handlers.no_input.counting) == (3, "consecutive")
    assert handlers.no_match is not None
    assert (handlers.no_match.limit, handlers.no_match.counting) == (3, "total")
    assert handlers.repeat == "repeat"
    assert handlers.dtmf["0"].transfer is not None


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_knowledge_base(scripts: dict[str, Script], name: str) -> None:
    script = scripts[name]
    standard = set(STANDARD_KB) | ({"kb.address"} if name in ADDRESS_TEMPLATES else set())
    assert standard <= set(script.kb)
    industry = set(script.kb) - standard - {"kb.address"}
    assert MIN_INDUSTRY_KB <= len(industry) <= MAX_INDUSTRY_KB
    # at least one entry answers a limited number of times, then does something else
    assert any(e.limit is not None and e.on_limit is not None for e in script.kb.values())
    for entry in script.kb.values():
        assert entry.say, entry.name


def test_insurance_disclosure_is_heard_out(scripts: dict[str, Script]) -> None:
    offer = scripts["insurance"].nodes["offer"]
    assert offer.ignore == "refusal"
    assert all("录音" in variant.text for variant in offer.say)


# ───────────────────────────── lint ─────────────────────────────


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_lints_clean(scripts: dict[str, Script], name: str) -> None:
    lint = pytest.importorskip("waihu.dialog.lint")
    findings = lint.lint(scripts[name])
    assert [str(f) for f in findings] == []


# ───────────────────────────── dialogue cases ─────────────────────────────


@pytest.mark.parametrize("name", TEMPLATES)
async def test_template_cases_pass(
    scripts: dict[str, Script],
    classifiers: dict[str, Classifier],
    mock_clock: MockClock,
    name: str,
) -> None:
    cases = pytest.importorskip("waihu.dialog.cases")
    script = scripts[name]
    path = ZH / f"{name}.cases.toml"
    found = cases.load_cases(path)
    classes = sorted({script.class_of(i.name) for i in script.intents} | {"default"})
    assert cases.check_cases(found, path, nodes=list(script.nodes), classes=classes) == []
    assert 6 <= len(found) <= 10
    wrong: list[str] = []
    with trio.fail_after(CASE_DEADLINE):
        for case in found:
            replies = iter(case.replies)

            async def next_reply(replies: Iterator[str] = replies) -> str | None:
                return next(replies, None)

            variables = case.variables(script.variables, sorted(script.placeholders))
            played = await cases.play(
                script, classifiers[name], next_reply, mock_clock, variables=variables
            )
            outcome = played.outcome()
            wrong += [f"{case.label}: {d}" for d in cases.differences(case, outcome)]
            # a grade worth checking comes from a rule that says why, not a fallback
            if case.grade is not None and outcome.reason.startswith(FALLBACK_REASON):
                wrong.append(f"{case.label}: graded by fallback ({outcome.reason})")
    assert wrong == []


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_cases_cover_the_main_paths(scripts: dict[str, Script], name: str) -> None:
    cases = pytest.importorskip("waihu.dialog.cases")
    found = cases.load_cases(ZH / f"{name}.cases.toml")
    ends = {case.path[-1] for case in found if case.path}
    grades = {case.grade for case in found}
    # a yes, a silence run-out, a wrong person and an always-tier class at least
    assert {"bye_noreply", "bye_wrong"} <= ends
    assert {"A", "E", "F"} <= grades
    assert any(tuple(case.replies) == ("", "", "") for case in found)


# ───────────────────────────── replies at nodes ─────────────────────────────

# (template, node, reply, class): the decisions the class library is built around
AT_NODES = [
    ("insurance", "offer", "我对这个不感兴趣", "deny"),
    ("insurance", "offer", "倒也不是没兴趣", "affirm"),
    ("insurance", "offer", "也不是不需要", "affirm"),
    ("insurance", "offer", "不是很感兴趣", "deny"),
    ("insurance", "offer", "以后别再打了，你们哪家公司的", "dnc"),
    ("insurance", "offer", "你们不要再给我打电话了", "dnc"),
    ("insurance", "offer", "再打我就去12315投诉", "complaint"),
    ("insurance", "offer", "上个月刚续的", "already_have"),
    ("insurance", "offer", "这会儿腾不开手", "busy"),
    ("insurance", "offer", "你把资料发我微信", "call_later"),
    ("insurance", "offer", "你是不是机器人啊", "kb.robot"),
    ("insurance", "offer", "麻烦再讲一遍", "repeat"),
    ("insurance", "greeting", "嗯", "affirm"),
    ("insurance", "greeting", "嗯？", "repeat"),
    ("insurance", "greeting", "不是，你打错了", "wrong_person"),
    ("insurance", "greeting", "我是他妈妈", "wrong_person"),
    ("insurance", "greeting", "有什么事吗", "affirm"),
    ("education", "greeting", "我是他妈妈", "affirm"),
    ("education", "offer", "孩子成绩不好", "affirm"),
    ("real_estate", "visit", "周四上午吧", "affirm"),
    ("real_estate", "visit", "周末没空", "busy"),
    ("real_estate", "visit", "这周末没空，下周一吧", "affirm"),
    ("real_estate", "offer", "周四上午吧", "default"),
    ("after_sales", "satisfy", "挺满意的", "affirm"),
    ("after_sales", "satisfy", "不太满意", "deny"),
    ("after_sales", "satisfy", "物流太慢了", "deny"),
    ("after_sales", "satisfy", "怎么退货", "kb.return"),
    ("appointment", "confirm", "能不能改到后天", "deny"),
    ("appointment", "confirm", "会准时到的", "affirm"),
    ("appointment", "reschedule", "下周三下午", "affirm"),
    # a day named with a call back puts the call off; a day needs an availability word,
    # so everyday talk with a day or a number in it stays unmatched
    ("real_estate", "visit", "周六再联系吧", "call_later"),
    ("education", "trial", "后天打给我", "call_later"),
    ("appointment", "reschedule", "下周一再打过来", "call_later"),
    ("real_estate", "visit", "周六吧你再打给我", "call_later"),
    ("real_estate", "visit", "礼拜天下午", "affirm"),
    ("education", "trial", "明天下午三点", "affirm"),
    ("education", "trial", "今天菜市场人好多", "default"),
    ("real_estate", "visit", "明天要下雨了", "default"),
    ("education", "trial", "三楼的灯坏了", "default"),
    ("real_estate", "visit", "周末要下雨", "default"),
    ("appointment", "reschedule", "十点了该吃饭了", "default"),
    ("appointment", "reschedule", "十五号上午", "affirm"),
    # busy and so not coming is a refusal of the visit
    ("real_estate", "visit", "那周末我去不了", "deny"),
    ("appointment", "confirm", "明天我有事来不了", "deny"),
    ("real_estate", "visit", "周末加班来不了", "deny"),
    # knowledge-base questions after a yes-word, and topic words in refusals
    ("real_estate", "greeting", "是的你是哪个店", "kb.who"),
    ("appointment", "greeting", "对你是哪家诊所的", "kb.who"),
    ("insurance", "greeting", "好的你们是哪家的", "kb.who"),
    ("insurance", "greeting", "你是保险公司的吗", "kb.who"),
    ("real_estate", "offer", "你们是中介还是开发商", "kb.who"),
    ("real_estate", "visit", "你们在哪个区", "kb.address"),
    ("insurance", "offer", "可以啊那一年得交多少", "kb.price"),
    ("real_estate", "offer", "房价多少一平", "kb.price"),
    ("real_estate", "offer", "价格这么贵我不考虑", "deny"),
    ("insurance", "offer", "理赔太麻烦了不想买", "deny"),
    ("education", "offer", "不是网课吧", "kb.online"),
    ("insurance", "offer", "价格不贵吧", "kb.price"),
    # a relative's number, things had already, a stop request beside a threat
    ("insurance", "greeting", "这是我爸的号", "wrong_person"),
    ("insurance", "greeting", "你找的是我妈吧", "wrong_person"),
    ("insurance", "greeting", "这个号是我女儿的", "wrong_person"),
    ("insurance", "greeting", "他出差了不在", "wrong_person"),
    ("insurance", "greeting", "这是我老婆的手机她在洗澡", "wrong_person"),
    ("insurance", "offer", "我们全家都配齐了", "already_have"),
    ("insurance", "offer", "前两天刚续完", "already_have"),
    ("appointment", "confirm", "我昨天已经去过了", "already_have"),
    ("appointment", "confirm", "上周已经做过了不用再去了", "already_have"),
    ("insurance", "offer", "车险寿险都配全了", "already_have"),
    ("insurance", "offer", "别打了再打我就投诉", "dnc"),
    ("insurance", "offer", "我要举报你们骚扰", "complaint"),
    ("insurance", "offer", "我正好想给我爸买一份", "affirm"),
    # faults and promises not kept at a satisfaction question
    ("after_sales", "satisfy", "洗衣机有杂音", "deny"),
    ("after_sales", "satisfy", "安装师傅到现在还没来", "deny"),
]


@pytest.mark.parametrize(("name", "node", "reply", "expected"), AT_NODES)
def test_reply_at_node(
    scripts: dict[str, Script],
    classifiers: dict[str, Classifier],
    name: str,
    node: str,
    reply: str,
    expected: str,
) -> None:
    script = scripts[name]
    decision = classify_reply(script, classifiers[name], script.nodes[node], reply)
    assert decision.intent == expected, decision.match


# ───────────────────────────── the evaluation node map ─────────────────────────────


def test_eval_nodes_name_a_node_per_context(scripts: dict[str, Script]) -> None:
    with NODES_FILE.open("rb") as file:
        mapping = tomllib.load(file)
    assert set(mapping) == set(TEMPLATES)
    for name, contexts in CONTEXTS.items():
        assert tuple(mapping[name]) == contexts, name
        script = scripts[name]
        for context, node in mapping[name].items():
            assert node in script.nodes and not script.nodes[node].end, (name, context)
            heard = {script.class_of(n) for n in script.allowed(script.nodes[node])}
            # the evaluation may expect any standard class at any question
            assert set(STANDARD_CLASSES) | set(STANDARD_KB) <= heard, (name, context)


# ───────────────────────────── the class library ─────────────────────────────


def _library() -> dict:
    with LIBRARY.open("rb") as file:
        return tomllib.load(file)


def test_library_holds_the_standard_classes_with_examples() -> None:
    library = _library()
    assert set(library) == {"intents", "kb"}
    assert tuple(library["intents"]) == STANDARD_CLASSES
    assert {f"kb.{k}" for k in library["kb"]} == set(STANDARD_KB)
    for name, table in library["intents"].items():
        examples = table["examples"]
        assert MIN_EXAMPLES <= len(examples) <= MAX_EXAMPLES, name
        assert len(set(examples)) == len(examples), name


def test_library_claims_each_word_once() -> None:
    owners: dict[str, list[str]] = {}
    seen_examples: Counter[str] = Counter()
    for section, tables in _library().items():
        for name, table in tables.items():
            for keyword in table.get("keywords", []):
                word = keyword if isinstance(keyword, str) else keyword["word"]
                owners.setdefault(word, []).append(f"{section}.{name}")
            seen_examples.update(table.get("examples", []))
    assert {w: o for w, o in owners.items() if len(o) > 1} == {}
    assert [e for e, n in seen_examples.items() if n > 1] == []


def test_library_negation_hands_words_to_their_opposites() -> None:
    affirm = _library()["intents"]["affirm"]
    negated = {k["word"]: k.get("negated") for k in affirm["keywords"] if isinstance(k, dict)}
    assert affirm["negated"] == "deny"
    assert negated["感兴趣"] == "deny"
    assert negated["需要"] == "deny"
    assert negated["方便"] == "busy"
    assert negated["是我"] == "wrong_person"
    assert _library()["intents"]["deny"]["negated"] == "affirm"


def test_library_is_included_from_a_script_anywhere(tmp_path: Path) -> None:
    """A script outside the templates' folder takes the library in by its relative path."""
    elsewhere = tmp_path / "campaigns" / "spring"
    elsewhere.mkdir(parents=True)
    include = os.path.relpath(LIBRARY, elsewhere)
    kb = "".join(f'[kb.{k.removeprefix("kb.")}]\nsay = [{{ text = "答" }}]\n' for k in STANDARD_KB)
    (elsewhere / "spring.toml").write_text(
        f"""
[script]
start = "ask"
include = [{include!r}]
priority = ["kb", "busy", "deny", "affirm"]
always = ["dnc", "complaint"]

[nodes.ask]
say = [{{ text = "您好，您有兴趣了解一下吗？" }}]

[nodes.ask.on]
affirm = "bye"
deny = "bye"
busy = "bye"
dnc = "bye"
complaint = "bye"
default = "bye"

[nodes.bye]
say = [{{ text = "再见" }}]
end = true

[intents.affirm]
keywords = ["来一份"]
{kb}""",
        encoding="utf-8",
    )
    script = load_script(elsewhere / "spring.toml", check_recordings=True)
    names = {intent.name for intent in script.intents}
    assert set(STANDARD_CLASSES) | set(STANDARD_KB) <= names
    affirm = next(intent for intent in script.intents if intent.name == "affirm")
    words = [k.text for k in affirm.keywords]
    assert words[0] == "来一份" and "感兴趣" in words  # the script's own words come first
