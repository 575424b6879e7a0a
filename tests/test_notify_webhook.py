"""The generic webhook notifier against a real local HTTP server: body, signature, answers."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from waihu.api import CallRecord, DeliveryFailed, Notification, ProviderContext
from waihu.config import ConfigError, structure_strict
from waihu.notify.leads import lead_from_call, lead_notification, notification_to_json
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu.testing.http_receiver import HttpReceiver, ReceivedRequest, Reply
from waihu_webhook.webhook import MAX_RETRY_AFTER_S, WebhookNotifier, retry_after

TIMEOUT = 600  # trio seconds: generous, the mock clock makes them cheap
REAL_IDLE_S = 0.01  # the clock jumps only after this much real idleness: see test_notify_wechat
SECRET = "s3cret-鍵"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=REAL_IDLE_S)


def a_lead(call_id: str = "c-7f3a", campaign_id: str = "may") -> Notification:
    record = CallRecord(
        id=call_id,
        number="+8613800138000",
        script="may",
        trunk="office",
        status="ended",
        answered_at=100.0,
        ended_at=165.0,
        grade="A",
        tags=["价格"],
    )
    call = lead_from_call(
        record, variables={"name": "张三"}, campaign_id=campaign_id, campaign_name="五月回访"
    )
    return lead_notification(call, notifier="crm", created_at=170.0)


@asynccontextmanager
async def endpoint(
    policy: Any = None, **options: Any
) -> AsyncIterator[tuple[HttpReceiver, WebhookNotifier]]:
    """A running webhook notifier posting to a running local endpoint."""
    receiver = HttpReceiver(policy or (lambda _request: Reply(204)))
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        config = WebhookNotifier.Config(url=receiver.url("/hooks/waihu?token=t0k"), **options)
        context = ProviderContext(
            name="crm",
            state_dir=Path("."),
            log=logging.getLogger("waihu.notify.crm"),
            cpu_limiter=trio.CapacityLimiter(1),
        )
        notifier = WebhookNotifier(config, context)
        await nursery.start(notifier.run)
        yield receiver, notifier
        nursery.cancel_scope.cancel()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """The receiver's check, as the module docstring shows it."""
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


async def test_posts_the_notification_as_signed_utf8_json(clock: trio.testing.MockClock) -> None:
    note = a_lead()
    with trio.fail_after(TIMEOUT):
        async with endpoint(secret=SECRET, headers={"Authorization": "Bearer abc"}) as (r, n):
            before = int(time.time())
            await n.deliver(note)
            after = int(time.time())
    (request,) = r.requests
    assert (request.method, request.target) == ("POST", "/hooks/waihu?token=t0k")
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["authorization"] == "Bearer abc"
    assert request.headers["x-waihu-delivery"] == "lead-c-7f3a-crm"
    assert before <= int(request.headers["x-waihu-timestamp"]) <= after
    assert "张三" in request.body.decode("utf-8")  # ensure_ascii=False
    assert request.json() == notification_to_json(note)
    timestamp, signature = (
        request.headers["x-waihu-timestamp"],
        request.headers["x-waihu-signature"],
    )
    assert verify(SECRET.encode(), timestamp, request.body, signature)
    assert not verify(b"another secret", timestamp, request.body, signature)
    assert not verify(SECRET.encode(), str(int(timestamp) + 1), request.body, signature)
    assert not verify(SECRET.encode(), timestamp, request.body + b" ", signature)


async def test_without_a_secret_nothing_is_signed(clock: trio.testing.MockClock) -> None:
    with trio.fail_after(TIMEOUT):
        async with endpoint() as (receiver, notifier):
            await notifier.deliver(a_lead())
    (request,) = receiver.requests
    assert "x-waihu-signature" not in request.headers
    assert "x-waihu-timestamp" in request.headers


async def test_delivery_id_is_the_same_on_every_try(clock: trio.testing.MockClock) -> None:
    answers = iter([Reply(500), Reply(200)])
    with trio.fail_after(TIMEOUT):
        async with endpoint(lambda _r: next(answers)) as (receiver, notifier):
            note = a_lead(campaign_id="五月")
            with pytest.raises(DeliveryFailed):
                await notifier.deliver(note)
            await notifier.deliver(note)
    ids = [r.headers["x-waihu-delivery"] for r in receiver.requests]
    assert ids == ["lead-c-7f3a-crm"] * 2
    assert [r.json()["campaign_id"] for r in receiver.requests] == ["五月"] * 2
    digest_id = "digest-五月-crm"
    plain = Notification(
        id=digest_id, kind="digest", campaign_id="五月", campaign_name=None, calls=(), created_at=1
    )
    with trio.fail_after(TIMEOUT):
        async with endpoint() as (receiver, notifier):
            await notifier.deliver(plain)  # a non-ASCII id travels percent-encoded
    assert receiver.requests[0].headers["x-waihu-delivery"] == "digest-%E4%BA%94%E6%9C%88-crm"


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("reply", "retry", "permanent"),
    [
        (Reply(200), None, None),
        (Reply(202, {"queued": True}), None, None),
        (Reply(429, headers={"Retry-After": "120"}), 120.0, False),
        (Reply(503, headers={"Retry-After": "7"}), 7.0, False),
        (Reply(429), None, False),  # no Retry-After: the outbox backs off
        (Reply(503, headers={"Retry-After": "soon"}), None, False),
        (Reply(429, headers={"Retry-After": "99999"}), MAX_RETRY_AFTER_S, False),
        (Reply(500, headers={"Retry-After": "120"}), None, False),  # only 429/503 say when
        (Reply(502), None, False),
        (Reply(408), None, False),
        (Reply(400), None, True),
        (Reply(401), None, True),
        (Reply(404), None, True),
        (Reply(410), None, True),
        (Reply(301, headers={"Location": "https://new.example/hook"}), None, True),
    ],
)
async def test_answers_decide_delivered_retry_or_give_up(
    clock: trio.testing.MockClock, reply: Reply, retry: float | None, permanent: bool | None
) -> None:
    with trio.fail_after(TIMEOUT):
        async with endpoint(lambda _request: reply) as (_receiver, notifier):
            if permanent is None:
                await notifier.deliver(a_lead())
                return
            with pytest.raises(DeliveryFailed) as failed:
                await notifier.deliver(a_lead())
    assert (failed.value.retry_after, failed.value.permanent) == (retry, permanent)
    assert "t0k" not in str(failed.value)  # the URL's query (often a token) is never shown


async def test_retry_after_as_an_http_date(clock: trio.testing.MockClock) -> None:
    with trio.fail_after(TIMEOUT):
        reply = Reply(503, headers={"Retry-After": http_date(90)})
        async with endpoint(lambda _request: reply) as (_receiver, notifier):
            with pytest.raises(DeliveryFailed) as failed:
                await notifier.deliver(a_lead())
    assert failed.value.retry_after == pytest.approx(90, abs=2)


def test_retry_after_values() -> None:
    now = time.time()
    assert retry_after("0", now=now) == 0
    assert retry_after(" 30 ", now=now) == 30
    assert retry_after(email.utils.formatdate(now - 50, usegmt=True), now=now) == 0  # past
    assert retry_after("-5", now=now) is None
    assert retry_after("", now=now) is None
    assert retry_after(None, now=now) is None


async def test_endpoint_down_or_silent_is_retryable(clock: trio.testing.MockClock) -> None:
    async def silent(_request: ReceivedRequest) -> Reply:
        await trio.sleep(1000)
        return Reply(200)

    with trio.fail_after(TIMEOUT):
        async with endpoint(silent, timeout=4) as (receiver, notifier):
            start = trio.current_time()
            with pytest.raises(DeliveryFailed, match=r"no answer within 4 s") as slow:
                await notifier.deliver(a_lead())
            assert trio.current_time() - start == pytest.approx(4, abs=0.1)
            await receiver.stop_listening()
            with pytest.raises(DeliveryFailed) as down:
                await notifier.deliver(a_lead())
    for failed in (slow, down):
        assert failed.value.retry_after is None and not failed.value.permanent


# ───────────────────────── configuration and registration ─────────────────────────


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"url": "crm.example.com/hook"}, "notify.crm.url: must be an http"),
        ({"url": "https://c/h", "secret": ""}, "notify.crm.secret: must not be empty"),
        ({"url": "https://c/h", "timeout": -1}, "notify.crm.timeout: must be greater than 0"),
        ({"url": "https://c/h", "headers": {"X-Waihu-Signature": "x"}}, "headers: may not set"),
        ({"url": "https://c/h", "headers": {"X-Name": "张三"}}, "headers: names and values must"),
        ({"url": "https://c/h", "headers": {"X-N": 1}}, "must be a string, not an integer"),
        ({"url": "https://c/h", "sekret": "x"}, "notify.crm: unknown key sekret"),
    ],
)
def test_config_errors_name_the_key(table: Mapping[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        structure_strict(WebhookNotifier.Config, table, file="waihud.toml", key="notify.crm")


def test_registered_as_webhook_through_its_entry_point() -> None:
    types = collect_provider_types(make_plugin_manager())
    assert types["notify"]["webhook"] is WebhookNotifier
