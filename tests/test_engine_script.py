"""The dialogue engine on full (v2) scripts, driven as text on trio's mock clock.

Each test writes a small Chinese script as TOML, loads it through the real
loader, fits the real ``keywords`` classifier to it and plays a callee
against the engine: replies, silences and keys at set times on the mock
clock. Where the time lines take matters (the silence window, lines that may
not be cut, the ignore policy, a callee hanging up mid-line) the robot speaks
through ``TimedSpeaker``, whose lines last a given number of seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import pytest
import trio

from waihu.api import ProviderContext, Turn
from waihu.dialog.chat import TextSpeaker, TimedSpeaker
from waihu.dialog.engine import (
    DialogueEngine,
    Dtmf,
    Ending,
    SpeechBegan,
    Step,
    Utterance,
    classify_reply,
)
from waihu.dialog.script import Script, Variant, load_script

from conftest import REPO

SILENCE = 5.0  # the scripts' silence window (seconds)
REPLY_AFTER = 0.5  # the callee starts speaking this long after the robot's line
SPEAKING = 1.0  # and speaks this long
MIN_CONFIDENCE = 0.3  # the recogniser confidence below which a reply counts as unmatched

BASE = """
[script]
name = "offer"
language = "zh"
start = "offer"
priority = ["kb", "affirm", "deny", "busy"]
always = ["dnc"]
refusals = ["deny", "dnc"]
silence_timeout = 5.0
short_reply = 2
default_grade = "D"
{script_extra}

[variables]
company = "平安"

[handlers.no_input]
limit = 3
counting = "consecutive"
scope = "call"
then = "bye_silence"
{handlers_extra}

[intents.affirm]
keywords = ["好的", "可以", "行", "感兴趣", "兴趣"]

[intents.deny]
keywords = ["不需要", "不用了"]

[intents.busy]
keywords = ["在开车", "在忙"]

[intents.dnc]
keywords = ["别再打", "不要再打"]

[intents.repeat]
keywords = ["再讲一遍", "再说一遍", "没听清"]

[kb.robot]
keywords = ["机器人"]
say = [{{ text = "我是{{company}}的智能客服。" }}, {{ text = "我是智能语音助理。" }}]
then = "listen"
limit = 2
on_limit = {{ say = [{{ text = "我帮您转人工。" }}], transfer = "sales" }}

[kb.who]
keywords = ["哪家公司", "你是谁"]
say = [{{ text = "我们是{{company}}保险。" }}]
then = "repeat"

[nodes.offer]
say = [
  {{ text = "您好{{name}}，我是{{company}}的客服，您对这个有兴趣吗？" }},
  {{ text = "我们{{company}}有个新产品，您感兴趣吗？" }},
]
reprompt = [{{ text = "喂，您还在吗？" }}]
on.affirm = "book"
on.deny = "bye_no"
on.dnc = "bye_dnc"
on.short = "offer_again"
on.long = "explain"
on.default = "offer_again"
{offer_on}
{offer_extra}

[nodes.offer_again]
say = [{{ text = "不好意思，您对这个有兴趣吗？" }}]
on = {{ affirm = "book", deny = "bye_no", dnc = "bye_dnc", default = "bye_unclear" }}

[nodes.explain]
say = [{{ text = "简单说，就是每月十元的保障。" }}]
on = {{ affirm = "book", deny = "bye_no", dnc = "bye_dnc", default = "bye_unclear" }}

[nodes.book]
say = [{{ text = "好的，稍后专员联系您。" }}]
end = true
grade = "A"
tags = ["interested"]

[nodes.bye_no]
say = [{{ text = "好的，打扰了。" }}]
end = true
grade = "C"

[nodes.bye_dnc]
say = [{{ text = "好的，以后不再打扰您。" }}]
end = true
grade = "F"
dnc = true

[nodes.bye_unclear]
say = [{{ text = "那先不打扰了，再见。" }}]
end = true
grade = "B"

[nodes.bye_silence]
say = [{{ text = "听不到您的声音，先挂了。" }}]
end = true
grade = "D"
tags = ["no-answer"]
{extra}
"""


def script_text(
    *, script: str = "", handlers: str = "", offer: str = "", offer_on: str = "", extra: str = ""
) -> str:
    """The base script with lines added to its [script], [handlers…], [nodes.offer] tables,
    routes added to the offer node, and tables of its own at the end."""
    return BASE.format(
        script_extra=script,
        handlers_extra=handlers,
        offer_extra=offer,
        offer_on=offer_on,
        extra=extra,
    )


@pytest.fixture
def make(tmp_path: Path, provider_types: dict) -> Callable[..., tuple[Script, object]]:
    """Load a script from TOML text and fit the real keyword classifier to it."""

    def make(text: str | None = None, **parts: str) -> tuple[Script, object]:
        path = tmp_path / "offer.toml"
        path.write_text(text if text is not None else script_text(**parts), encoding="utf-8")
        script = load_script(path, check_recordings=False)
        cls = provider_types["nlu"]["keywords"]
        context = ProviderContext(
            name="default",
            state_dir=tmp_path,
            log=logging.getLogger("t"),
            cpu_limiter=trio.CapacityLimiter(1),
        )
        classifier = cls(cls.Config(), context)
        classifier.fit(script.intents)
        return script, classifier

    return make


# ───────────────────────── the callee ─────────────────────────


@attrs.frozen
class Silent:
    """The callee says nothing for ``seconds``."""

    seconds: float = SILENCE + 0.25  # one silence window, and a little more


@attrs.frozen
class Say:
    """The callee says ``text`` (after REPLY_AFTER, taking SPEAKING)."""

    text: str
    confidence: float = 0.9


@attrs.frozen
class Press:
    """The callee presses a key."""

    digit: str


@attrs.frozen
class Noise:
    """Speech that recognised as nothing."""


SILENT = Silent()
Callee = Sequence[Silent | Say | Press | Noise | str]


@attrs.define
class Call:
    """What a conversation came to."""

    engine: DialogueEngine
    speaker: TextSpeaker
    turns: list[Turn]
    steps: list[Step]
    ending: Ending | None = None

    @property
    def intents(self) -> list[str | None]:
        return [t.intent for t in self.turns if t.speaker == "callee"]

    @property
    def path(self) -> list[str]:
        return list(self.engine.facts.nodes)


async def talk(
    script: Script,
    classifier: object,
    callee: Callee,
    *,
    variables: dict[str, str] | None = None,
    hang_up: bool = False,
    line_seconds: float | None = None,
    min_confidence: float = MIN_CONFIDENCE,
) -> Call:
    """Play ``callee`` (plain strings are replies) against the engine.

    Without ``hang_up`` the call runs until the engine ends it; with it the callee
    hangs up (the engine is cancelled) when its part is over. ``line_seconds``
    makes each robot line last that long (``TimedSpeaker``).
    """
    send, receive = trio.open_memory_channel[object](16)
    turns: list[Turn] = []
    steps: list[Step] = []
    with trio.fail_after(3600):
        async with trio.open_nursery() as lines:
            speaker = TextSpeaker() if line_seconds is None else TimedSpeaker(lines, line_seconds)
            engine = DialogueEngine(
                script,
                classifier,  # type: ignore[arg-type]
                speaker,
                receive,  # type: ignore[arg-type]
                on_turn=turns.append,
                on_step=steps.append,
                variables={"name": "王先生", **(variables or {})},
                min_confidence=min_confidence,
                now=trio.current_time,
            )
            call = Call(engine, speaker, turns, steps)
            async with trio.open_nursery() as nursery:

                async def robot() -> None:
                    call.ending = await engine.run()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(robot)
                await play(send, callee)
                if hang_up:
                    nursery.cancel_scope.cancel()
            lines.cancel_scope.cancel()
    return call


async def play(send: trio.MemorySendChannel[object], callee: Callee) -> None:
    for item in callee:
        if isinstance(item, str):
            item = Say(item)
        if isinstance(item, Silent):
            await trio.sleep(item.seconds)
        elif isinstance(item, Press):
            await trio.sleep(REPLY_AFTER)
            await send.send(Dtmf(item.digit))
        elif isinstance(item, Noise):
            await trio.sleep(REPLY_AFTER)
            await send.send(SpeechBegan())
            await trio.sleep(SPEAKING)
            await send.send(Utterance("", 0.0))
        else:
            await trio.sleep(REPLY_AFTER)
            await send.send(SpeechBegan())
            started = trio.current_time()
            await trio.sleep(SPEAKING)
            await send.send(Utterance(item.text, item.confidence, started, trio.current_time()))


def texts(script: Script, node: str) -> list[str]:
    return [v.text for v in script.nodes[node].say]


# ───────────────────────── classification ─────────────────────────


async def test_a_reply_takes_its_class_and_the_node_route(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(script, classifier, ["好的"])
    assert call.path == ["offer", "book"]
    assert call.intents == ["affirm"]
    assert call.ending is not None
    assert (call.ending.node, call.ending.grade, call.ending.reason) == ("book", "A", "end")
    assert call.ending.tags == ("interested",)
    assert call.steps[0].decision is not None
    assert call.steps[0].decision.route == "affirm"
    assert call.steps[0].chain == ("affirm", "goto:book")
    assert call.steps[0].line == "好的，稍后专员联系您。"


async def test_not_interested_is_deny_and_a_double_negation_affirm(make) -> None:
    script, classifier = make()
    node = script.nodes["offer"]
    assert classify_reply(script, classifier, node, "我对这个不感兴趣").intent == "deny"
    assert classify_reply(script, classifier, node, "倒也不是没兴趣").intent == "affirm"


async def test_confidence_at_the_floor_is_trusted_and_below_it_unmatched(make) -> None:
    script, classifier = make()
    node = script.nodes["offer"]
    at = classify_reply(script, classifier, node, "好的", 0.3, min_confidence=0.3)
    below = classify_reply(script, classifier, node, "好的", 0.29, min_confidence=0.3)
    assert (at.intent, at.route) == ("affirm", "affirm")
    assert (below.intent, below.route, below.match) == ("default", "short", None)


async def test_short_and_long_unmatched_replies(make, autojump_clock) -> None:
    script, classifier = make()
    node = script.nodes["offer"]
    assert classify_reply(script, classifier, node, "嗯").route == "short"
    # punctuation and spaces do not count toward the length
    assert classify_reply(script, classifier, node, "嗯， 啊？").route == "short"
    assert classify_reply(script, classifier, node, "嗯嗯啊").route == "long"
    call = await talk(script, classifier, ["嗯"], hang_up=True)
    assert call.path == ["offer", "offer_again"]
    call = await talk(script, classifier, ["今天天气真不错啊"], hang_up=True)
    assert call.path == ["offer", "explain"]
    assert call.intents == ["default"]
    # a node without short/long sends both to default
    assert classify_reply(script, classifier, script.nodes["explain"], "嗯").route == "default"


async def test_always_tier_wins_over_the_knowledge_base(make, autojump_clock) -> None:
    script, classifier = make()
    node = script.nodes["offer"]
    decision = classify_reply(script, classifier, node, "以后别再打了，你们哪家公司的")
    assert (decision.intent, decision.route) == ("dnc", "dnc")
    call = await talk(script, classifier, ["以后别再打了，你们哪家公司的"])
    assert call.ending is not None
    assert (call.ending.node, call.ending.dnc, call.ending.grade) == ("bye_dnc", True, "F")
    assert call.speaker.lines[-1] == "好的，以后不再打扰您。"
    assert call.engine.facts.refusals == 1


# ───────────────────────── knowledge base ─────────────────────────


async def test_kb_answer_then_the_asking_node_routes_the_next_reply(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(script, classifier, ["你是不是机器人啊", "行"])
    assert call.intents == ["kb.robot", "affirm"]
    assert call.path == ["offer", "book"]
    assert call.speaker.lines[1] == "我是平安的智能客服。"
    assert call.steps[0].chain == ("kb.robot", "resume:listen")
    assert call.steps[0].node == "offer"


async def test_kb_past_its_limit_takes_the_exceed_action(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(script, classifier, ["你是机器人吗", "机器人吧", "真是机器人啊"])
    assert call.ending is not None
    assert (call.ending.reason, call.ending.transfer) == ("transfer", "sales")
    # two answers, rotating variants, then the exceed line instead of a third answer
    assert call.speaker.lines[1:] == [
        "我是平安的智能客服。",
        "我是智能语音助理。",
        "我帮您转人工。",
    ]
    assert call.steps[-1].chain == ("kb.robot", "kb_limit", "transfer:sales")
    assert call.engine.facts.heard["kb.robot"] == 3


async def test_kb_then_repeat_asks_the_node_again(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(script, classifier, ["你是谁", "可以"])
    assert call.speaker.lines[1:3] == ["我们是平安保险。", "我们平安有个新产品，您感兴趣吗？"]
    assert call.steps[0].chain == ("kb.who", "resume:repeat")
    assert call.path == ["offer", "book"]


async def test_say_that_again_replays_the_same_variant_and_counts_nothing(
    make, autojump_clock
) -> None:
    script, classifier = make(script='turn_cap = 3\non_turn_cap = "bye_unclear"')
    call = await talk(
        script, classifier, ["你是机器人吗", "麻烦再讲一遍", "没听清", "机器人吧"], hang_up=True
    )
    # answer, the same answer twice again (same Variant objects, so the same audio), then the
    # second answer: the replays counted neither against the kb limit nor the turn cap
    said = call.speaker.said
    assert [s.text for s in said[1:]] == [
        "我是平安的智能客服。",
        "我是平安的智能客服。",
        "我是平安的智能客服。",
        "我是智能语音助理。",
    ]
    assert said[2].variant is said[1].variant and said[3].variant is said[1].variant
    assert call.intents == ["kb.robot", "repeat", "repeat", "kb.robot"]
    assert [s.chain for s in call.steps[1:3]] == [("repeat",), ("repeat",)]
    assert call.engine.facts.no_matches == 0
    assert call.ending is None  # the third routed reply would have hit the cap


async def test_repeat_after_a_node_line_replays_that_line(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(script, classifier, ["再说一遍"], hang_up=True)
    assert (
        call.speaker.lines == [texts(script, "offer")[0].format(name="王先生", company="平安")] * 2
    )
    assert call.speaker.said[1].variant is call.speaker.said[0].variant


# ───────────────────────── silence ─────────────────────────


async def test_silences_counted_consecutively_are_reset_by_a_reply(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(
        script, classifier, [SILENT, SILENT, "你是机器人吗", SILENT, SILENT], hang_up=True
    )
    assert call.ending is None  # never three in a row
    assert call.engine.facts.silences == 4
    assert [s.event for s in call.steps] == [
        "no_input",
        "no_input",
        "reply",
        "no_input",
        "no_input",
    ]
    assert call.speaker.lines.count("喂，您还在吗？") == 4


async def test_three_silences_in_a_row_go_to_the_closing_node(make, autojump_clock) -> None:
    script, classifier = make()
    start = trio.current_time()
    call = await talk(script, classifier, [])
    assert call.ending is not None
    assert (call.ending.node, call.ending.reason, call.ending.grade) == (
        "bye_silence",
        "silence",
        "D",
    )
    assert call.ending.tags == ("no-answer",)
    assert call.speaker.lines[1:3] == ["喂，您还在吗？", "喂，您还在吗？"]
    assert trio.current_time() - start == pytest.approx(3 * SILENCE)
    assert call.steps[-1].chain == ("no_input:limit", "goto:bye_silence")


async def test_silences_counted_in_total_hang_up_despite_replies(make, autojump_clock) -> None:
    text = script_text().replace('counting = "consecutive"', 'counting = "total"')
    script, classifier = make(text)
    call = await talk(script, classifier, [SILENT, "你是机器人吗", SILENT, SILENT])
    assert call.ending is not None
    assert call.ending.node == "bye_silence"


async def test_node_scope_restarts_the_count_on_a_new_node(make, autojump_clock) -> None:
    # counted in total, so only the new node resets the count, not the reply
    text = (
        script_text()
        .replace('scope = "call"', 'scope = "node"')
        .replace('counting = "consecutive"', 'counting = "total"')
    )
    script, classifier = make(text)
    call = await talk(script, classifier, [SILENT, SILENT, "嗯", SILENT, SILENT], hang_up=True)
    assert call.ending is None
    assert call.path == ["offer", "offer_again"]
    call = await talk(script, classifier, [SILENT, SILENT, "嗯", SILENT, SILENT, SILENT])
    assert call.ending is not None and call.ending.node == "bye_silence"


async def test_noise_restarts_the_silence_window(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(script, classifier, [Silent(4.0), Noise(), Silent(4.0), "好的"])
    assert call.engine.facts.silences == 0
    assert call.path == ["offer", "book"]


# ───────────────────────── no match and the turn cap ─────────────────────────


NO_MATCH = """
[handlers.no_match]
limit = 2
counting = "consecutive"
scope = "call"
then = { say = [{ text = "信号不好，先挂了。" }], hangup = true }
"""


async def test_no_match_limit_takes_its_then(make, autojump_clock) -> None:
    script, classifier = make(handlers=NO_MATCH)
    call = await talk(script, classifier, ["今天天气真不错啊", "我想吃饭了呢"])
    assert call.ending is not None
    assert (call.ending.node, call.ending.reason) == ("explain", "no_match")
    assert call.speaker.lines[-1] == "信号不好，先挂了。"
    assert call.engine.facts.no_matches == 2


async def test_a_matched_reply_resets_a_consecutive_no_match_count(make, autojump_clock) -> None:
    script, classifier = make(handlers=NO_MATCH)
    call = await talk(script, classifier, ["今天天气真不错啊", "你是机器人吗", "我想吃饭了呢"])
    assert call.ending is not None
    assert (call.ending.node, call.ending.reason) == ("bye_unclear", "end")


async def test_turn_cap_ends_at_the_closing_line(make, autojump_clock) -> None:
    script, classifier = make(
        script='turn_cap = 2\non_turn_cap = "bye_turns"',
        extra='[nodes.bye_turns]\nsay = [{ text = "时间关系先到这里。" }]\nend = true\ngrade = "C"',
    )
    call = await talk(script, classifier, ["你是机器人吗", "你是谁", "好的"])
    assert call.ending is not None
    assert (call.ending.node, call.ending.reason, call.ending.grade) == (
        "bye_turns",
        "turn_cap",
        "C",
    )
    assert call.speaker.lines[-1] == "时间关系先到这里。"
    assert call.intents == ["kb.robot", "kb.who"]


# ───────────────────────── actions ─────────────────────────


async def test_variants_rotate_without_an_immediate_repeat(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(script, classifier, [SILENT, SILENT], hang_up=True)
    first, second = [t.format(name="王先生", company="平安") for t in texts(script, "offer")]
    assert call.speaker.lines == [first, "喂，您还在吗？", "喂，您还在吗？"]
    call = await talk(script, classifier, ["你是谁", "你是谁", "你是谁"], hang_up=True)
    offers = [line for line in call.speaker.lines if "您感兴趣吗" in line or "有兴趣吗" in line]
    assert offers == [first, second, first, second]


async def test_set_and_tags_actions_and_variables(make, autojump_clock) -> None:
    script, classifier = make(
        offer_on='on.busy = { set = { company = "安心" }, tags = ["busy", "callback"], '
        'resume = "repeat" }'
    )
    # an empty contact value leaves the script's default; the action's `set` changes it
    call = await talk(script, classifier, ["我在开车", "好的"], variables={"company": ""})
    assert call.speaker.lines[:2] == [
        "您好王先生，我是平安的客服，您对这个有兴趣吗？",
        "我们安心有个新产品，您感兴趣吗？",
    ]
    assert call.steps[0].chain == ("busy", "set:company", "tags:busy,callback", "resume:repeat")
    assert call.ending is not None
    assert call.ending.tags == ("busy", "callback", "interested")


async def test_contact_variables_win_over_script_defaults(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(script, classifier, [], variables={"company": "太平"}, hang_up=True)
    assert call.speaker.lines == ["您好王先生，我是太平的客服，您对这个有兴趣吗？"]


async def test_dtmf_keys_route_by_the_handlers(make, autojump_clock) -> None:
    script, classifier = make(
        extra='[handlers.dtmf]\n"0" = { transfer = "sales" }\n"9" = "bye_dnc"\n'
    )
    call = await talk(script, classifier, [Press("5"), Press("0")])
    assert call.ending is not None
    assert (call.ending.reason, call.ending.transfer, call.ending.node) == (
        "transfer",
        "sales",
        "offer",
    )
    assert [s.event for s in call.steps] == ["dtmf:5", "dtmf:0"]
    call = await talk(script, classifier, [Press("9")])
    assert call.ending is not None
    assert (call.ending.node, call.ending.dnc) == ("bye_dnc", True)


async def test_a_transfer_end_node(make, autojump_clock) -> None:
    script, classifier = make(
        text=script_text().replace(
            'grade = "A"\ntags = ["interested"]',
            'grade = "A"\ntags = ["interested"]\ntransfer = "sales"',
        )
    )
    call = await talk(script, classifier, ["可以"])
    assert call.ending is not None
    assert (call.ending.node, call.ending.reason, call.ending.transfer) == (
        "book",
        "transfer",
        "sales",
    )
    assert call.engine.facts.completed


# ───────────────────────── grading ─────────────────────────


GRADING = """
[[grading]]
grade = "A"
tags = ["hot"]
reason = "asked who we are and agreed"
when = { reached = ["book"], heard = { "kb.who" = 1 } }

[[grading]]
grade = "E"
tags = ["hung-up"]
reason = "hung up while the robot spoke"
when = { hangup_by = "callee" }
"""


async def test_grading_rules_give_grade_tags_and_reason(make, autojump_clock) -> None:
    script, classifier = make(extra=GRADING)
    call = await talk(script, classifier, ["你是谁", "好的"])
    assert call.ending is not None
    assert (call.ending.grade, call.ending.grade_reason) == ("A", "asked who we are and agreed")
    assert set(call.ending.tags) == {"interested", "hot"}
    facts = call.engine.facts
    assert facts.heard["kb.who"] == 1 and facts.heard["affirm"] == 1
    assert facts.turns == 2
    assert facts.talk_seconds == pytest.approx(2 * SPEAKING)
    assert facts.said == [("offer", "你是谁"), ("offer", "好的")]
    assert facts.last_node == "book" and facts.completed


async def test_hang_up_mid_line_still_gets_a_verdict(make, autojump_clock) -> None:
    script, classifier = make(extra=GRADING)
    # each line lasts 3 s; the callee asks and hangs up while the answer plays
    call = await talk(script, classifier, ["你是谁", Silent(3.0)], hang_up=True, line_seconds=3.0)
    assert call.ending is None
    verdict = call.engine.verdict(hangup_by="callee")
    assert (verdict.grade, verdict.reason) == ("E", "hung up while the robot spoke")
    assert "hung-up" in verdict.tags
    assert not call.engine.facts.completed
    # and before anything was said back
    call = await talk(script, classifier, [], hang_up=True, line_seconds=3.0)
    assert call.engine.verdict(hangup_by="callee").grade == "E"
    assert call.engine.verdict().grade == "D"  # no rule: the script's default grade


# ───────────────────────── time: lines that last ─────────────────────────


async def test_silence_window_opens_only_when_the_line_has_ended(make, autojump_clock) -> None:
    script, classifier = make()
    start = trio.current_time()
    call = await talk(script, classifier, [], line_seconds=4.0)
    # three lines of 4 s then a window of 5 s each, and the closing line
    assert trio.current_time() - start == pytest.approx(3 * (4.0 + SILENCE) + 4.0)
    assert call.ending is not None and call.ending.node == "bye_silence"


@pytest.mark.parametrize(("barge_in", "book_at"), [(False, 4.0), (True, REPLY_AFTER + SPEAKING)])
async def test_next_node_waits_for_a_line_that_may_not_be_cut(
    make, autojump_clock, barge_in: bool, book_at: float
) -> None:
    script, classifier = make(offer=f"barge_in = {str(barge_in).lower()}")
    start = trio.current_time()
    call = await talk(script, classifier, ["好的"], line_seconds=4.0)
    # the reply came at 1.5 s while the 4 s offer played: the engine moves on at once only
    # when the line may be cut (the player would cut it); else once it has been said
    book = next(t for t in call.turns if t.node == "book")
    assert book.started_at == pytest.approx(start + book_at)
    assert call.speaker.said[0].interruptible is barge_in
    assert call.speaker.said[1].interruptible is False  # an end node's line is heard to its end


async def test_ignore_all_while_the_line_plays(make, autojump_clock) -> None:
    script, classifier = make(offer='ignore = "all"\nbarge_in = false')
    call = await talk(script, classifier, ["不需要", Silent(3.0), "好的"], line_seconds=4.0)
    # "不需要" came while the offer played: written down, not answered, counted for nothing
    assert call.intents == ["ignored", "affirm"]
    assert call.steps[0].decision is not None and call.steps[0].decision.route == "ignored"
    assert call.engine.facts.refusals == 0 and call.engine.facts.turns == 1
    assert call.path == ["offer", "book"]


async def test_ignore_refusal_lets_refusals_through(make, autojump_clock) -> None:
    script, classifier = make(offer='ignore = "refusal"\nbarge_in = false')
    call = await talk(script, classifier, ["好的", "别再打了"], line_seconds=4.0)
    assert call.intents == ["ignored", "dnc"]
    assert call.ending is not None and call.ending.node == "bye_dnc"


async def test_ignore_named_classes(make, autojump_clock) -> None:
    script, classifier = make(offer='ignore = ["deny"]\nbarge_in = false')
    call = await talk(script, classifier, ["你是谁", "不需要"], line_seconds=4.0)
    assert call.intents == ["ignored", "deny"]
    assert call.ending is not None and call.ending.node == "bye_no"


COMPLAINT = """
[intents.complaint]
keywords = ["投诉", "举报"]

[handlers.on]
complaint.say = [{ text = "非常抱歉，我们会记录您的意见。" }]
complaint.dnc = true
complaint.tags = ["complaint"]
complaint.hangup = true
"""


async def test_a_script_wide_route_for_an_always_class_at_every_node(make, autojump_clock) -> None:
    text = script_text(extra=COMPLAINT).replace('always = ["dnc"]', 'always = ["dnc", "complaint"]')
    script, classifier = make(text)
    # "可以" would be affirm, but the always tier comes first: say the line, list, hang up
    call = await talk(script, classifier, ["嗯", "可以，不过我要投诉你们"])
    assert call.path == ["offer", "offer_again"]
    assert call.intents == ["default", "complaint"]
    assert call.ending is not None
    ending = call.ending
    assert (ending.node, ending.reason, ending.dnc, ending.grade) == (
        "offer_again",
        "hangup",
        True,
        "D",
    )
    assert ending.tags == ("complaint",)
    assert call.speaker.lines[-1] == "非常抱歉，我们会记录您的意见。"
    assert call.speaker.said[-1].interruptible is False  # a closing line is heard to its end
    assert call.steps[-1].chain == ("complaint", "tags:complaint", "dnc", "hangup")


async def test_a_node_sets_variables_on_entering(make, autojump_clock) -> None:
    text = script_text().replace(
        '[nodes.explain]\nsay = [{ text = "简单说，就是每月十元的保障。" }]',
        '[nodes.explain]\nset = { plan = "十元" }\n'
        'say = [{ text = "简单说，就是每月{plan}的保障。" }]',
    )
    script, classifier = make(text)
    call = await talk(script, classifier, ["今天天气真不错啊"], hang_up=True)
    assert call.speaker.lines[-1] == "简单说，就是每月十元的保障。"
    assert call.engine.variables["plan"] == "十元"


async def test_a_key_pressed_resets_consecutive_silences(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(
        script, classifier, [SILENT, SILENT, Press("5"), SILENT, SILENT], hang_up=True
    )
    assert call.ending is None
    assert call.engine.facts.silences == 4


async def test_timed_speaker_barge_in_cuts_only_what_may_be_cut(autojump_clock) -> None:
    variant = Variant(text="…")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            speaker = TimedSpeaker(nursery, 4.0)
            start = trio.current_time()
            first = speaker.say(variant, "一", interruptible=True)
            notice = speaker.say(variant, "二", interruptible=False)
            last = speaker.say(variant, "三", interruptible=True)
            await trio.sleep(1.0)
            assert speaker.playing is first
            assert speaker.barge_in() == 2
            await trio.sleep(1.0)
            assert speaker.playing is notice
            assert speaker.barge_in() == 0  # a notice that may not be cut plays on
            await notice.done.wait()
    assert (first.interrupted, notice.interrupted, last.interrupted) == (True, False, True)
    assert first.ended_at == pytest.approx(start + 1.0)
    assert (notice.started_at, notice.ended_at) == pytest.approx((start + 1.0, start + 5.0))
    assert last.started_at is None


async def test_turns_settle_with_the_times_lines_were_heard(make, autojump_clock) -> None:
    script, classifier = make()
    call = await talk(script, classifier, ["你是谁", Silent(7.0)], hang_up=True, line_seconds=4.0)
    call.engine.settle_turns()
    robot = [t for t in call.turns if t.speaker == "robot"]
    # the offer (0–4 s) and the answer (4–8 s) were heard; the offer again is still queued
    assert [(t.started_at, t.ended_at) for t in robot[:2]] == [(0.0, 4.0), (4.0, 8.0)]
    assert robot[2].ended_at is None


async def test_do_not_call_stands_when_the_callee_hangs_up_during_the_closing_line(
    make, autojump_clock
) -> None:
    script, classifier = make()
    call = await talk(script, classifier, ["别再打了", Silent(1.0)], hang_up=True, line_seconds=4.0)
    assert call.ending is None  # cut off while "好的，以后不再打扰您。" was queued or playing
    assert call.engine.dnc
    verdict = call.engine.verdict(hangup_by="callee")
    assert verdict.grade == "F"  # the end node reached gives the grade
    assert verdict.reason == "no grading rule matched; grade of node bye_dnc"


# ───────────────── the scenarios on the shared Chinese classes ─────────────────

LIBRARY = REPO / "etc" / "waihu" / "scripts" / "zh" / "common" / "zh-intents.toml"

WITH_LIBRARY = """
[script]
start = "interest"
include = ["{library}"]
priority = ["kb", "affirm", "deny"]
always = ["dnc", "complaint"]
silence_timeout = 5.0
kb_limit = 2
on_kb_limit = {{ say = [{{ text = "我帮您转人工。" }}], transfer = "sales" }}

[handlers.on]
dnc = {{ say = [{{ text = "好的，以后不再打扰您。" }}], dnc = true, hangup = true }}
complaint = {{ say = [{{ text = "非常抱歉。" }}], dnc = true, hangup = true }}

[kb.price]
say = [{{ text = "每月十元起。" }}]
[kb.who]
say = [{{ text = "我们是平安保险。" }}]
then = "repeat"
[kb.robot]
say = [{{ text = "我是智能客服。" }}]
then = "listen"
[kb.how_number]
say = [{{ text = "您的号码来自公开渠道。" }}]

[nodes.interest]
say = [{{ text = "您对这个有兴趣吗？" }}]
on = {{ affirm = "book", deny = "bye_no", default = "bye_unclear" }}

[nodes.book]
say = [{{ text = "好的，稍后联系您。" }}]
end = true
grade = "A"

[nodes.bye_no]
say = [{{ text = "打扰了。" }}]
end = true
grade = "C"

[nodes.bye_unclear]
say = [{{ text = "再见。" }}]
end = true
grade = "B"
"""


@pytest.fixture
def library_script(make) -> tuple[Script, object]:
    return make(WITH_LIBRARY.format(library=LIBRARY))


async def test_library_not_interested_and_a_double_negation(library_script) -> None:
    script, classifier = library_script
    node = script.nodes["interest"]
    assert classify_reply(script, classifier, node, "我对这个不感兴趣").intent == "deny"
    assert classify_reply(script, classifier, node, "倒也不是没兴趣").intent == "affirm"


async def test_library_do_not_call_wins_over_the_knowledge_base(
    library_script, autojump_clock
) -> None:
    script, classifier = library_script
    call = await talk(script, classifier, ["以后别再打了，你们哪家公司的"])
    assert call.intents == ["dnc"]
    assert call.ending is not None
    assert (call.ending.reason, call.ending.dnc) == ("hangup", True)
    assert call.speaker.lines[-1] == "好的，以后不再打扰您。"


async def test_library_robot_question_then_yes_at_the_asking_node(
    library_script, autojump_clock
) -> None:
    script, classifier = library_script
    call = await talk(script, classifier, ["你是不是机器人啊", "麻烦再讲一遍", "行"])
    assert call.intents == ["kb.robot", "repeat", "affirm"]
    assert call.speaker.lines == [
        "您对这个有兴趣吗？",
        "我是智能客服。",
        "我是智能客服。",
        "好的，稍后联系您。",
    ]
    assert call.ending is not None and call.ending.grade == "A"
