"""Script loading and validation: the shipped v1 scripts load unchanged, every key of the v2
format reaches the model, and every mistake is named by file, line and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from waihu.api import Intent, Keyword
from waihu.dialog.script import (
    Action,
    Counter,
    Script,
    ScriptError,
    Variant,
    load_script,
)

from conftest import SCRIPTS


def test_demo_script_loads() -> None:
    script = load_script(SCRIPTS / "demo-ko.toml")
    assert script.name == "demo-ko"
    greeting = script.nodes["greeting"]
    assert greeting.barge_in and not script.nodes["bye_declined"].barge_in
    # knowledge base first, then the script's priority order
    assert script.allowed(greeting) == ["kb.price", "kb.who", "affirm", "deny"]
    # the recogniser is told what to expect: intents routed on plus the kb questions
    assert "네" in greeting.phrases and "가격이 얼마 예요" in greeting.phrases
    assert all(p.is_file() for p in script.recordings())


@pytest.mark.parametrize("path", [SCRIPTS / "demo-ko.toml", SCRIPTS / "zh" / "demo-zh.toml"])
def test_v1_silence_keys_become_the_no_input_handler(path: Path) -> None:
    # silence_retries = 1, on_silence = "bye_silence": one re-prompt, the second silence ends
    script = load_script(path, check_recordings=False)
    assert script.handlers.no_input == Counter(
        limit=2, counting="consecutive", scope="node", then=Action(goto="bye_silence")
    )
    assert script.handlers.no_match is None and script.handlers.repeat is None
    assert script.silence_timeout == 5.0 and script.default_grade == "D"
    # v1 nodes: "on" strings are gotos, reprompt defaults to say, kb re-asks the node
    greeting = script.nodes["greeting"]
    assert greeting.on["default"] == Action(goto="ask_again")
    assert script.nodes["ask_again"].reprompt == script.nodes["ask_again"].say
    assert script.kb["kb.price"].then == Action(resume="repeat")
    assert script.kb["kb.price"].limit is None and script.kb["kb.price"].on_limit is None
    # the default negation pairs affirm and deny
    negated = {i.name: i.negated for i in script.intents}
    assert negated == {"affirm": "deny", "deny": "affirm", "kb.price": None, "kb.who": None}
    assert script.refusals == ("deny",)
    assert script.sources["nodes.greeting"] < script.sources["nodes.greeting.on"]


@pytest.fixture
def script_copy(tmp_path: Path) -> Path:
    shutil.copytree(SCRIPTS / "prompts", tmp_path / "prompts")
    target = tmp_path / "s.toml"
    shutil.copy(SCRIPTS / "demo-ko.toml", target)
    return target


def broken(path: Path, old: str, new: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ScriptError) as info:
        load_script(path)
    return info.value.problems


def test_unknown_intent_named(script_copy: Path) -> None:
    found = broken(
        script_copy,
        'on = { affirm = "bye_interested", deny = "bye_declined", default = "ask_again" }',
        'on = { afirm = "bye_interested", deny = "bye_declined", default = "ask_again" }',
    )
    assert f"{script_copy}:29: nodes.greeting.on.afirm: unknown class 'afirm'" in found


def test_unknown_target_node(script_copy: Path) -> None:
    found = broken(script_copy, 'default = "bye_unclear"', 'default = "bye_unclaer"')
    assert f"{script_copy}:35: nodes.ask_again.on.default: no node named 'bye_unclaer'" in found
    # the node the typo orphaned is reported too
    assert any("nodes.bye_unclear: is unreachable" in p for p in found)


def test_missing_recording(script_copy: Path) -> None:
    found = broken(script_copy, "prompts/demo-ko/price.wav", "prompts/demo-ko/prize.wav")
    assert any("kb.price.say[0].recording: file not found" in p and "prize.wav" in p for p in found)


def test_node_with_no_way_out(script_copy: Path) -> None:
    found = broken(script_copy, 'end = true\ngrade = "B"', 'grade = "B"')
    assert (
        f"{script_copy}:53: nodes.bye_unclear: has no way out: give it 'on' routes or make it "
        "an end node" in found
    )


def test_loop_with_no_exit(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    path = tmp_path / "loop.toml"
    path.write_text(
        """
[script]
start = "a"
on_silence = "bye"
[intents.affirm]
keywords = ["yes"]
[nodes.a]
say = [{ text = "A?", recording = "a.wav" }]
on = { affirm = "b", default = "a" }
[nodes.b]
say = [{ text = "B?", recording = "a.wav" }]
on = { affirm = "a", default = "b" }
[nodes.bye]
say = [{ text = "bye", recording = "a.wav" }]
end = true
""",
        encoding="utf-8",
    )
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert any("nodes.a: loops with no exit" in p for p in info.value.problems)


def test_wrong_type_and_unknown_key(script_copy: Path) -> None:
    found = broken(script_copy, "silence_timeout = 5.0", 'silence_timeout = "5s"\nsilense = 1')
    assert any("script.silence_timeout: must be a number, not a string" in p for p in found)
    assert any("script: unknown key silense" in p for p in found)


def test_bad_grade(script_copy: Path) -> None:
    found = broken(script_copy, 'grade = "A"', 'grade = "Z"')
    assert any("nodes.bye_interested.grade: must be one of A, B, C, D, E, F" in p for p in found)


def test_placeholders_and_content_hash_identify_what_a_script_needs(tmp_path: Path) -> None:
    """A campaign checks contacts against the script's {fields}, and files which version spoke."""
    path = tmp_path / "s.toml"
    text = (
        '[script]\nstart = "a"\non_silence = "b"\n'
        '[intents.affirm]\nkeywords = ["네"]\n[intents.deny]\nkeywords = ["아니요"]\n'
        '[nodes.a]\nsay = [{ text = "{name}님, {company.x} 입니다", recording = "a.wav" }]\n'
        'on = { affirm = "b", default = "b" }\n'
        '[nodes.b]\nsay = [{ text = "{{literal}} 안녕히", recording = "b.wav" }]\nend = true\n'
        "dnc = true\n"
    )
    path.write_text(text, encoding="utf-8")
    script = load_script(path, check_recordings=False)
    assert script.placeholders == {"name", "company"}
    assert script.nodes["b"].dnc and not script.nodes["a"].dnc
    first = script.content_hash
    path.write_text(text.replace("안녕히", "안녕"), encoding="utf-8")
    assert len(first) == 64 and load_script(path, check_recordings=False).content_hash != first


def test_dnc_on_a_node_that_is_not_an_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[script]\nstart = "a"\non_silence = "b"\n'
        '[nodes.a]\nsay = [{ text = "x", recording = "a.wav" }]\n'
        'on = { default = "b" }\ndnc = true\n'
        '[nodes.b]\nsay = [{ text = "y", recording = "b.wav" }]\nend = true\n',
        encoding="utf-8",
    )
    with pytest.raises(ScriptError) as err:
        load_script(path, check_recordings=False)
    assert any("nodes.a.dnc: only an end node" in p for p in err.value.problems)


# ───────────────────────────── the v2 format ─────────────────────────────

COMMON = """\
# shared classes: merged into every script that includes this file
[intents.affirm]
keywords = ["可以", "行"]
patterns = ["(明天|下午).{0,6}(打|联系)"]
examples = ["可以啊"]
description = "from the library"
sound_alike = false

[intents.deny]
keywords = ["不需要"]

[intents.dnc]
keywords = ["别再打"]
patterns = ["(别|不要).{0,3}(打|联系)"]

[intents.repeat]
keywords = ["再说一遍"]

[kb.robot]
keywords = ["机器人"]
say = [{ text = "我是智能助理。" }]
"""

BASE = """\
[script]
name = "insurance"
description = "保险推荐"
language = "zh"
start = "greeting"
include = ["common/zh.toml"]
priority = ["kb", "affirm", "deny", "default"]
always = ["dnc"]
refusals = ["deny", "dnc"]
silence_timeout = 7.0
short_reply = 3
turn_cap = 20
on_turn_cap = "bye_turns"
kb_limit = 3
on_kb_limit = { say = [{ text = "我帮您转人工" }], transfer = "sales" }
default_grade = "E"

[variables]
company = "平安"

[handlers.no_input]
limit = 3
counting = "total"
scope = "call"
then = "bye"

[handlers.no_match]
limit = 2
then = { hangup = true, tags = ["unclear"] }

[handlers]
repeat = "repeat"

[handlers.dtmf]
"0" = { transfer = "sales" }
"9" = "bye"

[handlers.on]
dnc = { say = [{ text = "好的，不再打扰" }], dnc = true, hangup = true }

[intents.affirm]
keywords = ["好的", { word = "感兴趣", negated = "deny", sound_alike = true }]
examples = ["那你说说看"]
exclusions = ["不好说"]
description = "同意"
negated = "deny"

[intents.busy]
keywords = ["在开车"]

[nodes.greeting]
say = [
  { text = "您好{name}，我是{company}的", recording = "greeting.wav" },
  { text = "您好" },
]
reprompt = [{ text = "喂？" }]
priority = ["affirm", "deny", "kb", "busy"]
keywords = { affirm = ["是我", { word = "对", sound_alike = false }] }
patterns = { affirm = ["我就是"] }
barge_in = false
ignore = "refusal"
silence_timeout = 8.0
phrases = ["是我", "不是"]
set = { stage = "greeting" }

[nodes.greeting.on]
affirm = "offer"
deny = { say = [{ text = "好的" }], hangup = true }
busy = { goto = "bye", tags = ["busy"], set = { why = "busy" } }
default = "offer"
short = "repeat"

[nodes.offer]
say = [{ text = "有兴趣吗" }]
on = { affirm = "bye", short = "listen", long = "bye" }
ignore = ["dnc", "deny"]

[nodes.bye]
say = [{ text = "再见" }]
end = true
grade = "A"
tags = ["done"]
transfer = "sales"

[nodes.bye_turns]
say = [{ text = "不打扰了" }]
end = true
dnc = true
barge_in = true

[kb.price]
keywords = ["多少钱"]
say = [{ text = "十元" }]
then = { goto = "offer", tags = ["asked-price"] }
limit = 2
on_limit = "bye"

[kb.who]
keywords = ["你是谁"]
say = [{ text = "平安的" }]
then = "listen"

[[grading]]
grade = "A"
tags = ["hot"]
reason = "asked the price and agreed"
when = { reached = ["bye"], heard = { "kb.price" = 2 }, said = { greeting = ["好"] } }

[[grading]]
tags = ["refused"]
when = { refusals = 1, hangup_by = "callee", completed = false, min_talk_seconds = 2.5 }
"""


def write(tmp_path: Path, text: str = BASE, common: str = COMMON) -> Path:
    (tmp_path / "common").mkdir(exist_ok=True)
    (tmp_path / "common" / "zh.toml").write_text(common, encoding="utf-8")
    (tmp_path / "greeting.wav").write_bytes(b"")
    path = tmp_path / "insurance.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def script(tmp_path: Path) -> Script:
    return load_script(write(tmp_path))


def test_script_keys(script: Script) -> None:
    assert (script.name, script.description, script.language) == ("insurance", "保险推荐", "zh")
    assert script.start == "greeting" and script.default_grade == "E"
    assert script.priority == ("kb", "affirm", "deny")
    assert script.always == ("dnc",) and script.refusals == ("deny", "dnc")
    assert script.silence_timeout == 7.0 and script.short_reply == 3
    assert script.turn_cap == 20 and script.on_turn_cap == Action(goto="bye_turns")
    assert script.variables == {"company": "平安"}
    assert script.placeholders == {"name", "company"}
    assert len(script.content_hash) == 64


def test_handler_keys(script: Script) -> None:
    handlers = script.handlers
    assert handlers.no_input == Counter(
        limit=3, counting="total", scope="call", then=Action(goto="bye")
    )
    # unset keys of a handler: no_match counts in total over the call
    assert handlers.no_match == Counter(
        limit=2, counting="total", scope="call", then=Action(hangup=True, tags=("unclear",))
    )
    assert handlers.repeat == "repeat"
    assert handlers.dtmf == {"0": Action(transfer="sales"), "9": Action(goto="bye")}
    dnc = Action(say=(Variant(text="好的，不再打扰"),), dnc=True, hangup=True)
    assert handlers.on == {"dnc": dnc}
    # a script-wide route is copied into every listening node lacking one, not end nodes
    shared = handlers.on["dnc"]
    assert (
        script.nodes["greeting"].on["dnc"] is shared and script.nodes["offer"].on["dnc"] is shared
    )
    assert script.nodes["bye"].on == {}


def test_node_keys(script: Script) -> None:
    greeting = script.nodes["greeting"]
    assert greeting.say == (
        Variant(text="您好{name}，我是{company}的", recording="greeting.wav"),
        Variant(text="您好", recording=None),
    )
    assert greeting.reprompt == (Variant(text="喂？"),)
    assert greeting.on["affirm"] == Action(goto="offer")
    assert greeting.on["deny"] == Action(say=(Variant(text="好的"),), hangup=True)
    assert greeting.on["busy"] == Action(goto="bye", tags=("busy",), set={"why": "busy"})
    assert greeting.on["short"] == Action(resume="repeat")
    assert greeting.priority == ("affirm", "deny", "kb", "busy", "dnc", "repeat")
    assert not greeting.barge_in and greeting.ignore == "refusal"
    assert greeting.silence_timeout == 8.0 and greeting.phrases == ("是我", "不是")
    assert greeting.set == {"stage": "greeting"} and not greeting.end
    offer = script.nodes["offer"]
    assert offer.on["short"] == Action(resume="listen") and "default" not in offer.on
    assert offer.ignore == ("dnc", "deny") and offer.barge_in
    assert offer.silence_timeout == 7.0  # the script's
    bye = script.nodes["bye"]
    assert (bye.end, bye.grade, bye.tags, bye.transfer, bye.dnc) == (
        True,
        "A",
        ("done",),
        "sales",
        False,
    )
    assert not bye.barge_in  # end nodes default to not interruptible
    assert script.nodes["bye_turns"].dnc and script.nodes["bye_turns"].barge_in


def test_kb_keys_and_script_defaults(script: Script) -> None:
    price, who, robot = script.kb["kb.price"], script.kb["kb.who"], script.kb["kb.robot"]
    assert list(script.kb) == ["kb.price", "kb.who", "kb.robot"]  # script's, then included
    assert (price.name, price.intent, price.say) == ("price", "kb.price", (Variant(text="十元"),))
    assert price.then == Action(goto="offer", tags=("asked-price",))
    assert price.limit == 2 and price.on_limit == Action(goto="bye")
    assert who.then == Action(resume="listen")
    # [script] kb_limit / on_kb_limit apply where the entry says nothing
    assert robot.limit == 3 and robot.then == Action(resume="repeat")
    assert robot.on_limit == Action(say=(Variant(text="我帮您转人工"),), transfer="sales")


def test_grading_keys(script: Script) -> None:
    first, second = script.grading
    assert (first.grade, first.tags, first.reason) == ("A", ("hot",), "asked the price and agreed")
    assert first.when.reached == ("bye",) and first.when.heard == {"kb.price": 2}
    assert first.when.said == {"greeting": ("好",)}
    assert second.grade is None and second.tags == ("refused",)
    assert (second.when.refusals, second.when.hangup_by, second.when.completed) == (
        1,
        "callee",
        False,
    )
    assert second.when.min_talk_seconds == 2.5


def test_intents_merge_includes_and_apply_negation(script: Script) -> None:
    intents = {i.name: i for i in script.intents}
    assert [i.name for i in script.intents] == [
        "affirm",
        "busy",
        "deny",
        "dnc",
        "repeat",
        "kb.price",
        "kb.who",
        "kb.robot",
        "greeting/affirm",
    ]
    affirm = intents["affirm"]
    # lists are concatenated, the script's own first; scalars from the script win
    assert affirm.keywords == (
        Keyword("好的"),
        Keyword("感兴趣", negated="deny", sound_alike=True),
        Keyword("可以"),
        Keyword("行"),
    )
    assert affirm.examples == ("那你说说看", "可以啊")
    assert affirm.patterns == ("(明天|下午).{0,6}(打|联系)",)
    assert affirm.exclusions == ("不好说",)
    assert affirm.negated == "deny"
    assert affirm.sound_alike is False  # only the library says it; the script is silent
    # default negation: affirm ↔ deny (both exist); other classes negate to nothing
    assert intents["deny"].negated == "affirm" and intents["dnc"].negated is None
    # node-scoped extras: the node's words with the class's negation and exclusions
    assert intents["greeting/affirm"] == Intent(
        name="greeting/affirm",
        keywords=(Keyword("是我"), Keyword("对", sound_alike=False)),
        patterns=("我就是",),
        exclusions=("不好说",),
        negated="deny",
        sound_alike=False,
    )


def test_allowed_order(script: Script) -> None:
    # always tier first; then the node's order with "kb" expanded in script order, the
    # node-scoped name before its class, classes routed on but not listed, the repeat class
    assert script.allowed(script.nodes["greeting"]) == [
        "dnc",
        "greeting/affirm",
        "affirm",
        "deny",
        "kb.price",
        "kb.who",
        "kb.robot",
        "busy",
        "repeat",
    ]
    # offer uses the script's order; it does not route on deny or busy, so they are left out
    assert script.allowed(script.nodes["offer"]) == [
        "dnc",
        "kb.price",
        "kb.who",
        "kb.robot",
        "affirm",
        "repeat",
    ]
    assert "default" not in script.allowed(script.nodes["greeting"])
    assert Script.class_of("greeting/affirm") == "affirm"
    assert Script.class_of("kb.price") == "kb.price" and Script.class_of("affirm") == "affirm"


def test_without_a_priority_ties_break_by_script_order(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[script]\nstart = "a"\n'
        '[intents.zeta]\nkeywords = ["z"]\n[intents.deny]\nkeywords = ["n"]\n'
        '[intents.alpha]\nkeywords = ["a"]\n[intents.affirm]\nkeywords = ["y"]\n'
        '[kb.b]\nkeywords = ["b"]\nsay = [{ text = "b" }]\n'
        '[kb.a]\nkeywords = ["a"]\nsay = [{ text = "a" }]\n'
        '[nodes.a]\nsay = [{ text = "?" }]\n'
        'on = { alpha = "z", zeta = "z", affirm = "z", deny = "z", default = "z" }\n'
        '[nodes.z]\nsay = [{ text = "." }]\nend = true\n',
        encoding="utf-8",
    )
    script = load_script(path)
    # v1's default order (kb, affirm, deny), then every other class as the file lists it
    assert script.priority == ("kb", "affirm", "deny", "zeta", "alpha")
    assert script.allowed(script.nodes["a"]) == ["kb.b", "kb.a", "affirm", "deny", "zeta", "alpha"]
    # no no_input handler, no v1 keys: one re-prompt, then hang up
    assert script.handlers.no_input == Counter(
        limit=2, counting="consecutive", scope="node", then=Action(hangup=True)
    )
    assert script.name == "s" and script.turn_cap is None and script.grading == ()


def test_variants_list_every_line_with_its_key(script: Script, tmp_path: Path) -> None:
    keys = [key for key, _v in script.variants()]
    assert "nodes.greeting.say[1]" in keys and "nodes.greeting.reprompt[0]" in keys
    assert "nodes.greeting.on.deny.say[0]" in keys and "kb.robot.on_limit.say[0]" in keys
    assert "handlers.on.dnc.say[0]" in keys
    assert "nodes.offer.on.dnc.say[0]" not in keys  # a copy of the script-wide route
    assert "nodes.offer.reprompt[0]" not in keys  # same as its say
    # only variants with a recording are files to check
    assert script.recordings() == {tmp_path / "greeting.wav"}


def test_recordings_checked_only_where_given(tmp_path: Path) -> None:
    path = write(tmp_path)
    (tmp_path / "greeting.wav").unlink()
    with pytest.raises(ScriptError) as info:
        load_script(path)
    line = line_of(BASE, 'say = [\n  { text = "您好{name}')
    assert info.value.problems == [
        f"{path}:{line}: nodes.greeting.say[0].recording: file not found: "
        f"{tmp_path / 'greeting.wav'}"
    ]
    assert load_script(path, check_recordings=False).nodes["greeting"].say[0].recording


def test_content_hash_covers_the_includes(tmp_path: Path) -> None:
    path = write(tmp_path)
    first = load_script(path).content_hash
    write(tmp_path, common=COMMON.replace("再说一遍", "再讲一遍"))
    assert load_script(path).content_hash != first


def test_sources_map_keys_to_lines(script: Script) -> None:
    for key, needle in [
        ("script", "[script]"),
        ("script.on_kb_limit", "on_kb_limit ="),
        ("handlers.dtmf", "[handlers.dtmf]"),
        ("handlers.dtmf.0", '"0" ='),
        ("handlers", "[handlers]\n"),
        ("nodes.greeting", "[nodes.greeting]"),
        ("nodes.greeting.on", "[nodes.greeting.on]"),
        ("nodes.greeting.on.busy", "busy = {"),
        ("nodes.greeting.reprompt", "reprompt ="),
        ("kb.who.then", 'then = "listen"'),
        ("grading[0]", "[[grading]]"),
        ("grading[1].when", "when = { refusals"),
    ]:
        assert script.sources[key] == line_of(BASE, needle), key
    # the lines of a multi-line array are not keys
    assert "nodes.greeting.say" in script.sources
    assert not any(k.endswith(".text") for k in script.sources)
    assert script.line_of("grading[1].when.hangup_by") == line_of(BASE, "when = { refusals")


def line_of(text: str, needle: str) -> int:
    assert needle in text, needle
    return text[: text.index(needle)].count("\n") + 1


def problems_of(tmp_path: Path, old: str, new: str, *, common: str = COMMON) -> list[str]:
    assert old in BASE, old
    path = write(tmp_path, BASE.replace(old, new, 1), common)
    with pytest.raises(ScriptError) as info:
        load_script(path)
    return info.value.problems


def expect(tmp_path: Path, old: str, new: str, needle: str, message: str) -> list[str]:
    """The broken script's problems include ``message`` at the line holding ``needle``."""
    found = problems_of(tmp_path, old, new)
    line = line_of(BASE.replace(old, new, 1), needle)
    assert f"{tmp_path / 'insurance.toml'}:{line}: {message}" in found, found
    return found


OFFER_ON = 'on = { affirm = "bye", short = "listen", long = "bye" }'

UNKNOWN_CLASSES = [
    (
        'affirm = "offer"',
        'afirm = "offer"',
        "afirm",
        "nodes.greeting.on.afirm: unknown class 'afirm'",
    ),
    (
        'priority = ["kb", "affirm", "deny", "default"]',
        'priority = ["kb", "affirm", "deni", "default"]',
        "priority = [",
        "script.priority[2]: unknown class 'deni'",
    ),
    ('always = ["dnc"]', 'always = ["dcn"]', "always", "script.always[0]: unknown class 'dcn'"),
    (
        'refusals = ["deny", "dnc"]',
        'refusals = ["deny", "complaint"]',
        "refusals",
        "script.refusals[1]: unknown class 'complaint'",
    ),
    (
        'default_grade = "E"',
        'default_grade = "E"\nnegation = { affirm = "deny", busy = "idle" }',
        "negation",
        "script.negation.busy: unknown class 'idle'",
    ),
    (
        'priority = ["affirm", "deny", "kb", "busy"]',
        'priority = ["affirm", "deny", "kb", "bussy"]',
        'priority = ["affirm", "deny", "kb", "bussy"]',
        "nodes.greeting.priority[3]: unknown class 'bussy'",
    ),
    (
        'keywords = { affirm = ["是我"',
        'keywords = { afirm = ["是我"',
        "keywords = { afirm",
        "nodes.greeting.keywords.afirm: unknown class 'afirm'",
    ),
    (
        'patterns = { affirm = ["我就是"] }',
        'patterns = { affrm = ["我就是"] }',
        "patterns = { affrm",
        "nodes.greeting.patterns.affrm: unknown class 'affrm'",
    ),
    (
        'heard = { "kb.price" = 2 }',
        'heard = { "kb.prize" = 2 }',
        'heard = { "kb.prize"',
        "grading[0].when.heard.kb.prize: unknown class 'kb.prize'",
    ),
    (
        'ignore = ["dnc", "deny"]',
        'ignore = ["dnc", "dny"]',
        "ignore = [",
        "nodes.offer.ignore[1]: unknown class 'dny'",
    ),
    (
        'word = "感兴趣", negated = "deny"',
        'word = "感兴趣", negated = "dney"',
        "感兴趣",
        "intents.affirm.keywords[1].negated: unknown class 'dney'",
    ),
    (
        'description = "同意"\nnegated = "deny"',
        'description = "同意"\nnegated = "nope"',
        'negated = "nope"',
        "intents.affirm.negated: unknown class 'nope'",
    ),
    ('repeat = "repeat"', 'repeat = "again"', "repeat =", "handlers.repeat: unknown class 'again'"),
    (
        "[handlers.on]\ndnc",
        "[handlers.on]\ndnk",
        "dnk =",
        "handlers.on.dnk: unknown class 'dnk'",
    ),
]


@pytest.mark.parametrize(("old", "new", "needle", "message"), UNKNOWN_CLASSES)
def test_unknown_classes_are_named_with_line(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    expect(tmp_path, old, new, needle, message)


UNKNOWN_NODES = [
    ('"9" = "bye"', '"9" = "bey"', '"9"', "handlers.dtmf.9: no node named 'bey'"),
    ('then = "bye"', 'then = "by"', 'then = "by"', "handlers.no_input.then: no node named 'by'"),
    (
        'then = { hangup = true, tags = ["unclear"] }',
        'then = { goto = "nowhere" }',
        "nowhere",
        "handlers.no_match.then.goto: no node named 'nowhere'",
    ),
    (
        'on_turn_cap = "bye_turns"',
        'on_turn_cap = "bye_turn"',
        "on_turn_cap",
        "script.on_turn_cap: no node named 'bye_turn'",
    ),
    (
        'busy = { goto = "bye"',
        'busy = { goto = "byebye"',
        "byebye",
        "nodes.greeting.on.busy.goto: no node named 'byebye'",
    ),
    (
        'then = { goto = "offer"',
        'then = { goto = "ofer"',
        "ofer",
        "kb.price.then.goto: no node named 'ofer'",
    ),
    (
        'then = "listen"',
        'then = "resume"',
        'then = "resume"',
        "kb.who.then: no node named 'resume'",
    ),
    ('on_limit = "bye"', 'on_limit = "bey"', "on_limit", "kb.price.on_limit: no node named 'bey'"),
    ('start = "greeting"', 'start = "hello"', "start =", "script.start: no node named 'hello'"),
    (
        'reached = ["bye"]',
        'reached = ["by"]',
        'reached = ["by"]',
        "grading[0].when.reached[0]: no node named 'by'",
    ),
    (
        'said = { greeting = ["好"] }',
        'said = { greting = ["好"] }',
        "said = { greting",
        "grading[0].when.said.greting: no node named 'greting'",
    ),
]


@pytest.mark.parametrize(("old", "new", "needle", "message"), UNKNOWN_NODES)
def test_unknown_nodes_in_every_action_are_named(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    expect(tmp_path, old, new, needle, message)


OTHER_MISTAKES = [
    (
        '"0" = { transfer = "sales" }',
        '"0" = { transfer = "sales" }\n"10" = "bye"',
        '"10"',
        "handlers.dtmf.10: a key is one of 0-9 * # A B C D",
    ),
    (
        '"0" = { transfer',
        '"x" = { transfer',
        '"x"',
        "handlers.dtmf.x: a key is one of 0-9 * # A B C D",
    ),
    (
        'deny = { say = [{ text = "好的" }], hangup = true }',
        'deny = { say = [{ text = "好的" }] }',
        "deny =",
        "nodes.greeting.on.deny: needs exactly one of goto, hangup, transfer, resume",
    ),
    (
        'deny = { say = [{ text = "好的" }], hangup = true }',
        'deny = { goto = "bye", hangup = true }',
        "deny =",
        "nodes.greeting.on.deny: needs exactly one of goto, hangup, transfer, resume "
        "(has goto, hangup)",
    ),
    (
        'deny = { say = [{ text = "好的" }], hangup = true }',
        'deny = { resume = "again" }',
        "deny =",
        "nodes.greeting.on.deny.resume: must be one of repeat, listen, not 'again'",
    ),
    (
        "[nodes.bye_turns]",
        '[nodes.listen]\nsay = [{ text = "x" }]\nend = true\n\n[nodes.bye_turns]',
        "[nodes.listen]",
        "nodes.listen: a node may not be called 'listen' (a route word)",
    ),
    (
        'on_turn_cap = "bye_turns"',
        'on_turn_cap = { resume = "listen" }',
        "on_turn_cap",
        "script.on_turn_cap: cannot resume ('listen'): no node is listening here",
    ),
    (
        'grade = "A"\ntags = ["done"]',
        'grade = "G"\ntags = ["done"]',
        'grade = "G"',
        "nodes.bye.grade: must be one of A, B, C, D, E, F, not 'G'",
    ),
    (
        'grade = "A"\ntags = ["hot"]',
        'grade = "a"\ntags = ["hot"]',
        'grade = "a"',
        "grading[0].grade: must be one of A, B, C, D, E, F, not 'a'",
    ),
    (
        'reason = "asked the price and agreed"',
        'reason = ""',
        'reason = ""',
        "grading[0].reason: a rule that gives a grade needs a reason (it is filed)",
    ),
    (
        "limit = 3\ncounting",
        "limit = 0\ncounting",
        "limit = 0",
        "handlers.no_input.limit: must be at least 1, not 0",
    ),
    (
        'counting = "total"',
        'counting = "totally"',
        "counting",
        "handlers.no_input.counting: must be one of consecutive, total, not 'totally'",
    ),
    (
        'patterns = { affirm = ["我就是"] }',
        'patterns = { affirm = ["我就(是"] }',
        "patterns = {",
        "nodes.greeting.patterns.affirm[0]: bad pattern '我就(是' of class 'affirm': "
        "missing ), unterminated subpattern at position 2",
    ),
    (
        'exclusions = ["不好说"]',
        'exclusions = ["不好说", "[不"]',
        "exclusions",
        "intents.affirm.exclusions[1]: bad pattern '[不' of class 'affirm': "
        "unterminated character set at position 0",
    ),
    (
        'on = { affirm = "bye", short = "listen", long = "bye" }',
        'on = { affirm = "bye", short = "listen" }',
        'on = { affirm = "bye", short',
        "nodes.offer.on: needs a 'default' route (where a reply that matches nothing goes), "
        "or both 'short' and 'long'",
    ),
    (
        'end = true\ngrade = "A"',
        'end = true\non = { affirm = "offer" }\ngrade = "A"',
        'on = { affirm = "offer" }\ngrade',
        "nodes.bye.on: an end node routes nowhere; remove 'on' or 'end'",
    ),
    (
        'ignore = "refusal"',
        'ignore = "refusals"',
        "ignore =",
        'nodes.greeting.ignore: must be "none", "all", "refusal" or a list of classes',
    ),
    (
        "barge_in = false",
        "barge_in = false\ninterruptible = false",
        "interruptible",
        "nodes.greeting.interruptible: is the v1 name of barge_in: give one, not both",
    ),
    (
        'default_grade = "E"',
        'default_grade = "E"\nsilence_retries = 2',
        "silence_retries",
        "script.silence_retries: give [handlers.no_input] or the v1 keys "
        "silence_retries/on_silence, not both",
    ),
    (
        'set = { stage = "greeting" }',
        "set = { stage = 1 }",
        "set = {",
        "nodes.greeting.set.stage: must be a string, not an integer",
    ),
    (
        'company = "平安"',
        "company = 3",
        "company",
        "variables.company: must be a string, not an integer",
    ),
    (
        "[nodes.offer]\nsay",
        "[nodes.offer]\nsya = []\nsay",
        "[nodes.offer]",
        "nodes.offer: unknown key sya",
    ),
    (
        'say = [{ text = "十元" }]',
        'say = [{ text = "{price" }]',
        "{price",
        "kb.price.say[0].text: bad placeholder: expected '}' before end of string",
    ),
    (
        "turn_cap = 20\n",
        "",
        "on_turn_cap",
        "script.on_turn_cap: needs turn_cap (how many replies)",
    ),
    (
        'always = ["dnc"]',
        'always = ["dnc", "busy"]',
        OFFER_ON,
        "nodes.offer.on: no route for 'busy' of script.always: give nodes.offer.on.busy "
        "or [handlers.on] busy",
    ),
]


@pytest.mark.parametrize(("old", "new", "needle", "message"), OTHER_MISTAKES)
def test_mistakes_are_named_with_line(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    expect(tmp_path, old, new, needle, message)


def test_all_problems_at_once(tmp_path: Path) -> None:
    text = BASE.replace('"9" = "bye"', '"9" = "bey"').replace('on_limit = "bye"', 'on_limit = "x"')
    path = write(tmp_path, text)
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert [p.split(": ", 2)[1] for p in info.value.problems] == [
        "kb.price.on_limit",
        "handlers.dtmf.9",
    ]


def test_flow_checks_follow_actions(tmp_path: Path) -> None:
    # bye_turns is reachable only through the turn cap: without it, it is an orphan
    text = BASE.replace("turn_cap = 20\n", "").replace('on_turn_cap = "bye_turns"\n', "")
    path = write(tmp_path, text)
    with pytest.raises(ScriptError) as info:
        load_script(path)
    line = line_of(text, "[nodes.bye_turns]")
    assert info.value.problems == [
        f"{path}:{line}: nodes.bye_turns: is unreachable from the start node 'greeting'"
    ]
    # a node reachable only as a kb follow-up or a key is reachable
    text = BASE.replace('"9" = "bye"', '"9" = "bye_turns"').replace(
        'on_turn_cap = "bye_turns"', 'on_turn_cap = "bye"'
    )
    assert load_script(write(tmp_path, text)).handlers.dtmf["9"] == Action(goto="bye_turns")


def test_a_loop_left_by_a_hangup_action_or_the_no_match_handler_is_fine(tmp_path: Path) -> None:
    loop = (
        '[script]\nstart = "a"\n[intents.affirm]\nkeywords = ["y"]\n'
        '[nodes.a]\nsay = [{ text = "A?" }]\non = { affirm = "b", default = "a" EXIT}\n'
        '[nodes.b]\nsay = [{ text = "B?" }]\non = { affirm = "a", default = "b" }\n'
    )
    path = tmp_path / "loop.toml"
    path.write_text(loop.replace("EXIT", ""), encoding="utf-8")
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert info.value.problems == [
        f"{path}:5: nodes.a: loops with no exit: no path from it reaches an end node",
        f"{path}:8: nodes.b: loops with no exit: no path from it reaches an end node",
    ]
    path.write_text(loop.replace("EXIT", ", short = { hangup = true }"), encoding="utf-8")
    assert load_script(path).nodes["a"].on["short"].ends
    path.write_text(
        loop.replace("EXIT", "") + '[handlers.no_match]\nlimit = 3\nthen = { transfer = "ops" }\n',
        encoding="utf-8",
    )
    assert load_script(path).handlers.no_match is not None


def test_includes(tmp_path: Path) -> None:
    # a class of the library the script does not define arrives whole
    script = load_script(write(tmp_path))
    dnc = next(i for i in script.intents if i.name == "dnc")
    assert dnc.patterns == ("(别|不要).{0,3}(打|联系)",) and dnc.keywords == (Keyword("别再打"),)
    # a missing include is named by its key
    found = problems_of(tmp_path, 'include = ["common/zh.toml"]', 'include = ["common/zh2.toml"]')
    assert found[0] == (
        f"{tmp_path / 'insurance.toml'}:6: script.include[0]: file not found: "
        f"{tmp_path / 'common' / 'zh2.toml'}"
    )


BAD_LIB_PATTERN = 'patterns = ["((别'


def test_problems_in_an_included_file_name_that_file(tmp_path: Path) -> None:
    common = COMMON.replace('patterns = ["(别|', 'patterns = ["((别|')
    found = problems_of(tmp_path, "", "", common=common)
    lib = tmp_path / "common" / "zh.toml"
    assert found == [
        f"{lib}:{line_of(common, BAD_LIB_PATTERN)}: intents.dnc.patterns[0]: bad pattern "
        "'((别|不要).{0,3}(打|联系)' of class 'dnc': missing ), unterminated subpattern at "
        "position 0",
    ]
    common = COMMON + '\n[nodes.extra]\nsay = [{ text = "x" }]\nend = true\n'
    assert problems_of(tmp_path, "", "", common=common) == [
        f"{lib}:{line_of(common, '[nodes.extra]')}: nodes: an included file may hold only "
        "[intents.*] and [kb.*]",
    ]
    broken_toml = COMMON.replace("[intents.deny]", "[intents.deny")
    found = problems_of(tmp_path, "", "", common=broken_toml)
    assert found[0].startswith(f"{lib}:{line_of(broken_toml, '[intents.deny')}: ")
    assert "line" in found[0]


def test_a_fault_in_a_class_both_files_define_names_the_file_and_its_own_index(
    tmp_path: Path,
) -> None:
    common = COMMON.replace(
        'keywords = ["可以", "行"]', 'keywords = ["可以", { word = "行", negated = "nah" }]'
    ).replace('patterns = ["(明天', 'patterns = ["[明天')
    common += '[kb.who]\nkeywords = ["哪位"]\non_limit = "nowhere"\n'
    found = problems_of(tmp_path, "", "", common=common)
    lib = tmp_path / "common" / "zh.toml"
    keywords, patterns = line_of(common, 'keywords = ["可以"'), line_of(common, 'patterns = ["[')
    assert found == [
        f"{lib}:{keywords}: intents.affirm.keywords[1].negated: unknown class 'nah'",
        f"{lib}:{patterns}: intents.affirm.patterns[0]: bad pattern '[明天|下午).{{0,6}}(打|联系)' "
        "of class 'affirm': unterminated character set at position 0",
        f"{lib}:{line_of(common, 'on_limit')}: kb.who.on_limit: no node named 'nowhere'",
    ]


def test_a_toml_syntax_error_gives_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace('start = "greeting"', "start = greeting"))
    with pytest.raises(ScriptError) as info:
        load_script(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:5: Invalid value")


def test_the_man_page_example_loads(tmp_path: Path) -> None:
    """waihu-script(5)'s complete example is a valid script with the shipped class library."""
    page = (SCRIPTS.parent.parent.parent / "man" / "waihu-script.5").read_text(encoding="utf-8")
    example = page.split(".SH EXAMPLE\n.nf\n", 1)[1].split(".fi\n", 1)[0]
    (tmp_path / "common").mkdir()
    shutil.copy(SCRIPTS / "zh" / "common" / "zh-intents.toml", tmp_path / "common")
    path = tmp_path / "insurance.toml"
    path.write_text(example.replace("\\-", "-"), encoding="utf-8")
    script = load_script(path)
    assert script.always == ("dnc", "complaint") and script.kb["kb.who"].say
    assert script.allowed(script.nodes["greeting"])[:3] == ["dnc", "complaint", "kb.price"]


def test_default_negation_only_pairs_classes_that_exist(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[script]\nstart = "a"\n[intents.affirm]\nkeywords = ["好"]\n'
        '[nodes.a]\nsay = [{ text = "?" }]\non = { affirm = "z", default = "z" }\n'
        '[nodes.z]\nsay = [{ text = "." }]\nend = true\n',
        encoding="utf-8",
    )
    (affirm,) = load_script(path).intents
    assert affirm.negated is None  # no deny to count a negated yes for


def test_the_line_scanner_skips_what_only_looks_like_keys() -> None:
    from waihu.dialog.script import _source_lines

    text = (
        '[t]\ndescription = """\nstart = "not a key"\n"""\n'
        'rows = [\n  ["looks", "like"],\n  ["header"]\n]\n'
        "'quoted key' = 1  # [not.a.header]\n"
        "[[g]]\n[[g]]\nk = 2\n"
    )
    assert _source_lines(text) == {
        "t": 1,
        "t.description": 2,
        "t.rows": 5,
        "t.quoted key": 9,
        "g[0]": 10,
        "g[1]": 11,
        "g[1].k": 12,
    }
