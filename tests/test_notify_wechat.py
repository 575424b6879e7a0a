"""The WeChat Work group robot notifier against a real local HTTP server playing the API.

The server (``waihu.testing.http_receiver``) runs in the test's trio run, so
its policies and the notifier's pacing follow trio's mock clock. The clock
jumps only after ``REAL_IDLE_S`` of real idleness: a request in flight on a
real socket is never overtaken by a jump to its own timeout.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from waihu.api import CallRecord, DeliveryFailed, Notification, ProviderContext, Turn
from waihu.config import ConfigError, structure_strict
from waihu.notify.leads import digest_notification, lead_from_call, lead_notification
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu.testing.http_receiver import WECHAT_OK, HttpReceiver, ReceivedRequest, Reply
from waihu_wechat.message import MAX_MARKDOWN_BYTES, fit, lead_markdown, markdown
from waihu_wechat.robot import WeChatWorkRobot

TIMEOUT = 600  # trio seconds: generous, the mock clock makes them cheap
REAL_IDLE_S = 0.01
KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
ENDED = 1_714_630_980.0


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=REAL_IDLE_S)


def call_record(call_id: str = "c-7f3a", replies: list[str] | None = None) -> CallRecord:
    turns = []
    for text in replies or ["嗯，你们价格怎么算？", "可以先试用吗"]:
        turns += [Turn("robot", "您好", "pitch"), Turn("callee", text, "pitch")]
    return CallRecord(
        id=call_id,
        number="+8613800138000",
        script="may",
        trunk="office",
        status="ended",
        answered_at=ENDED - 65,
        ended_at=ENDED,
        grade="A",
        tags=["价格", "想试用"],
        turns=turns,
    )


def lead_call(record: CallRecord | None = None, **variables: str) -> dict[str, Any]:
    return lead_from_call(
        record or call_record(),
        variables=variables or {"name": "张三"},
        campaign_id="may",
        campaign_name="五月回访",
    )


def a_lead(record: CallRecord | None = None, **variables: str) -> Notification:
    return lead_notification(lead_call(record, **variables), notifier="sales", created_at=ENDED)


def content(request: ReceivedRequest) -> str:
    return request.json()["markdown"]["content"]


def errcode(code: int, message: str) -> Reply:
    return Reply(200, {"errcode": code, "errmsg": message})


@asynccontextmanager
async def robot_api(
    policy: Any = None, **options: Any
) -> AsyncIterator[tuple[HttpReceiver, WeChatWorkRobot]]:
    """A running robot notifier posting to a running local stand-in for the API."""
    receiver = HttpReceiver(policy)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        config = WeChatWorkRobot.Config(
            webhook_url=receiver.url(f"/cgi-bin/webhook/send?key={KEY}"), **options
        )
        context = ProviderContext(
            name="sales",
            state_dir=Path("."),
            log=logging.getLogger("waihu.notify.sales"),
            cpu_limiter=trio.CapacityLimiter(1),
        )
        robot = WeChatWorkRobot(config, context)
        await nursery.start(robot.run)
        yield receiver, robot
        nursery.cancel_scope.cancel()


# ───────────────────────── the message ─────────────────────────


def test_lead_shows_masked_number_grade_name_tags_replies_and_call_id() -> None:
    text = lead_markdown(a_lead())
    assert "`138****8000`" in text
    assert "13800138000" not in text and "8613800138000" not in text
    assert text.startswith("## 意向客户 · 五月回访\n")
    assert '<font color="warning">A</font>' in text
    assert "> 客户：张三" in text
    assert "价格, 想试用" in text
    assert "> 嗯，你们价格怎么算？\n> 可以先试用吗" in text
    assert "1分05秒" in text
    assert "`waihuctl call show c-7f3a`" in text


def test_many_long_replies_are_cut_to_the_last_five_within_the_limit() -> None:
    replies = [f"第{i}句：" + "我们公司想了解一下这个产品的价格" * 20 for i in range(200)]
    text = lead_markdown(a_lead(call_record(replies=replies)))
    assert len(text.encode("utf-8")) <= MAX_MARKDOWN_BYTES
    reply_lines = [line for line in text.splitlines() if line.startswith("> 第")]
    assert [line.split("：")[0] for line in reply_lines] == [f"> 第{i}句" for i in range(195, 200)]
    assert all(len(line) <= 2 + 60 and line.endswith("…") for line in reply_lines)
    assert "（最后 5 句，共 20 句）" in text  # lead_from_call keeps the last 20


def test_an_over_long_message_is_cut_at_a_character_and_says_so() -> None:
    note = a_lead()
    huge = Notification(
        id=note.id,
        kind="lead",
        campaign_id="may",
        campaign_name="五月回访" * 2000,  # nothing else bounds a campaign's name
        calls=note.calls,
        created_at=note.created_at,
    )
    text = markdown(huge)
    assert len(text.encode("utf-8")) <= MAX_MARKDOWN_BYTES
    assert text.endswith("（内容过长，已截断）")
    # within a line: the cut falls between characters, never inside one
    assert fit("中" * 2000, 100).startswith("中" * 10)
    assert len(fit("中" * 2000, 100).encode()) <= 100
    short = "## 标题\n> 一行"
    assert fit(short) == short


def test_outside_text_cannot_inject_markup_or_lines() -> None:
    text = lead_markdown(a_lead(name='王五<font color="info">!</font>'))
    assert '<font color="info">' not in text and "> 客户：王五" in text
    text = lead_markdown(a_lead(name="王五\n## 假标题"))
    assert "\n## 假标题" not in text and "> 客户：王五 ＃＃ 假标题\n" in text
    text = lead_markdown(a_lead(call_record(replies=["**很**感兴趣 `x`"])))
    assert "> ＊＊很＊＊感兴趣 ｀x｀" in text


def test_digest_lists_calls_compactly_and_counts_the_rest() -> None:
    calls = [lead_call(call_record(f"call-{i:04d}")) for i in range(300)]
    digest = digest_notification("may", "五月回访", calls, notifier="sales", created_at=ENDED)
    text = markdown(digest)
    assert len(text.encode("utf-8")) <= MAX_MARKDOWN_BYTES
    assert text.startswith("## 意向客户汇总 · 五月回访\n共 300 通\n")
    shown = [line for line in text.splitlines() if "`call-" in line]
    assert shown[0].startswith("> `138****8000` · 张三 · ")
    assert "13800138000" not in text
    rest = int(text.rsplit("及另外 ", 1)[1].split(" ")[0])
    assert len(shown) + rest == 300 and len(shown) > 10
    few = digest_notification("may", "五月回访", calls[:3], notifier="s", created_at=ENDED)
    assert "及另外" not in markdown(few) and markdown(few).count("`call-") == 3


# ───────────────────────── the API ─────────────────────────


async def test_delivered_as_markdown_to_the_webhook(clock: trio.testing.MockClock) -> None:
    with trio.fail_after(TIMEOUT):
        async with robot_api() as (receiver, robot):
            note = a_lead()
            await robot.deliver(note)
    (request,) = receiver.requests
    assert request.method == "POST"
    assert request.target == f"/cgi-bin/webhook/send?key={KEY}"
    assert request.headers["content-type"].startswith("application/json")
    assert request.json() == {"msgtype": "markdown", "markdown": {"content": markdown(note)}}
    assert "张三" in request.body.decode("utf-8")  # UTF-8 as it is, not \\u escapes


@pytest.mark.parametrize(
    ("reply", "retry_after", "permanent"),
    [
        (errcode(45009, "api freq out of limit"), 60.0, False),
        (Reply(429), 60.0, False),
        (errcode(93000, "invalid webhook url"), None, True),
        (errcode(40058, "markdown.content exceed max length"), None, True),
        (errcode(-1, "system busy"), None, False),
        (errcode(60020, "not allow to access from your ip"), None, False),
        (Reply(500), None, False),
        (Reply(502, {"error": "bad gateway"}), None, False),
        (Reply(404), None, True),
        (Reply(200, {"unexpected": "shape"}), None, False),
    ],
)
async def test_api_answers_become_delivery_failures(
    clock: trio.testing.MockClock, reply: Reply, retry_after: float | None, permanent: bool
) -> None:
    with trio.fail_after(TIMEOUT):
        async with robot_api(lambda _request: reply) as (_receiver, robot):
            with pytest.raises(DeliveryFailed) as failed:
                await robot.deliver(a_lead())
    assert (failed.value.retry_after, failed.value.permanent) == (retry_after, permanent)
    assert KEY not in str(failed.value) and "key=***" in str(failed.value)


async def test_after_45009_nothing_is_sent_for_a_minute(clock: trio.testing.MockClock) -> None:
    answers = iter([errcode(45009, "api freq out of limit"), WECHAT_OK])
    with trio.fail_after(TIMEOUT):
        async with robot_api(lambda _request: next(answers)) as (receiver, robot):
            with pytest.raises(DeliveryFailed):
                await robot.deliver(a_lead())
            await robot.deliver(a_lead(call_record("c2")))
    first, second = receiver.requests
    assert second.at - first.at >= 60


async def test_server_down_is_retryable_and_up_again_delivers(
    clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with robot_api() as (receiver, robot):
            await robot.deliver(a_lead(call_record("c1")))  # a pooled connection now exists
            await receiver.stop_listening()
            with pytest.raises(DeliveryFailed) as failed:
                await robot.deliver(a_lead(call_record("c2")))
            assert failed.value.retry_after is None and not failed.value.permanent
            await receiver.start_listening()
            await robot.deliver(a_lead(call_record("c3")))
    assert ["c1" in content(r) or "c3" in content(r) for r in receiver.requests] == [True, True]


async def test_no_answer_within_timeout_is_retryable(clock: trio.testing.MockClock) -> None:
    async def never_in_time(_request: ReceivedRequest) -> Reply:
        await trio.sleep(300)
        return WECHAT_OK

    with trio.fail_after(TIMEOUT):
        async with robot_api(never_in_time, timeout=7.5) as (_receiver, robot):
            start = trio.current_time()
            with pytest.raises(DeliveryFailed, match=r"no answer within 7\.5 s"):
                await robot.deliver(a_lead())
            assert trio.current_time() - start == pytest.approx(7.5, abs=0.1)


async def test_25_leads_keep_to_20_a_minute(clock: trio.testing.MockClock) -> None:
    with trio.fail_after(TIMEOUT):
        async with robot_api() as (receiver, robot):
            start = trio.current_time()
            for i in range(25):
                await robot.deliver(a_lead(call_record(f"c{i}")))
            assert trio.current_time() - start >= 60
    times = [r.at for r in receiver.requests]
    assert len(times) == 25
    # in any 60 s the API could count, at most 20 messages
    assert all(times[i + 20] - times[i] >= 60 for i in range(len(times) - 20))
    assert times[19] - times[0] < 1  # the first 20 are not held back


async def test_per_minute_can_be_lower(clock: trio.testing.MockClock) -> None:
    with trio.fail_after(TIMEOUT):
        async with robot_api(per_minute=2) as (receiver, robot):
            for i in range(3):
                await robot.deliver(a_lead(call_record(f"c{i}")))
    times = [r.at for r in receiver.requests]
    assert times[1] - times[0] < 1 and times[2] - times[0] >= 60


async def test_mentions_follow_as_a_text_message(clock: trio.testing.MockClock) -> None:
    with trio.fail_after(TIMEOUT):
        async with robot_api(mention_mobiles=["13800001111", "@all"]) as (receiver, robot):
            await robot.deliver(a_lead())
    markdown_request, mention = receiver.requests
    assert markdown_request.json()["msgtype"] == "markdown"
    assert mention.json() == {
        "msgtype": "text",
        "text": {
            "content": "新的意向客户 138****8000，请跟进",
            "mentioned_mobile_list": ["13800001111", "@all"],
        },
    }


async def test_a_failed_mention_does_not_repeat_the_lead(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    def markdown_only(request: ReceivedRequest) -> Reply:
        return WECHAT_OK if request.json()["msgtype"] == "markdown" else Reply(500)

    with trio.fail_after(TIMEOUT):
        async with robot_api(markdown_only, mention_mobiles=["13800001111"]) as (_r, robot):
            await robot.deliver(a_lead())  # no exception: the lead itself was delivered
    assert "lead-c-7f3a-sales delivered, but the mention failed" in caplog.text


async def test_deliver_before_run_is_retryable() -> None:
    config = WeChatWorkRobot.Config(webhook_url=f"https://qyapi.weixin.qq.com/x?key={KEY}")
    context = ProviderContext("sales", Path("."), logging.getLogger("t"), trio.CapacityLimiter(1))
    with pytest.raises(DeliveryFailed, match="not running") as failed:
        await WeChatWorkRobot(config, context).deliver(a_lead())
    assert not failed.value.permanent and KEY not in str(failed.value)


# ───────────────────────── configuration and registration ─────────────────────────


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"webhook_url": "qyapi.weixin.qq.com/send"}, "notify.sales.webhook_url: must be"),
        ({"webhook_url": "https://q/x", "per_minute": 30}, "per_minute: must be 1–20, not 30"),
        ({"webhook_url": "https://q/x", "per_minute": 0}, "per_minute: must be 1–20, not 0"),
        ({"webhook_url": "https://q/x", "timeout": 0}, "timeout: must be greater than 0"),
        ({"webhook_url": "https://q/x", "mention_mobiles": ["张三"]}, "mention_mobiles: must"),
        ({"webhook_url": "https://q/x", "mention": ["1"]}, "unknown key mention"),
        ({}, "notify.sales.webhook_url: required key is missing"),
    ],
)
def test_config_errors_name_the_key(table: Mapping[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        structure_strict(WeChatWorkRobot.Config, table, file="waihud.toml", key="notify.sales")


def test_config_defaults() -> None:
    config = structure_strict(
        WeChatWorkRobot.Config, {"webhook_url": "https://q/x"}, file="f", key="notify.sales"
    )
    assert (config.mention_mobiles, config.per_minute, config.timeout) == ([], 20, 10.0)


def test_registered_as_wechat_through_its_entry_point() -> None:
    types = collect_provider_types(make_plugin_manager())
    assert types["notify"]["wechat"] is WeChatWorkRobot
