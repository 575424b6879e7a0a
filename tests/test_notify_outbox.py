"""The outbox delivery loop with a real SQLite store, under trio's mock clock.

The loop's ``now`` follows the trio clock (``BASE + trio.current_time()``),
so "an hour later" costs no real time. The scenario test uses the real
webhook notifier against a real local HTTP server; the others use
``ScriptedNotifier``, a notifier (``waihu.api.Notifier``) whose every answer
the test decides, to reach failures a real endpoint gives only by chance.
Tests wait for what they expect on ``Progress`` (woken at each try), never
by polling.

Keeping the mock clock honest around real I/O. The clock jumps to the next
deadline once every task has waited ``REAL_IDLE_S`` of real time, so a
request in flight on a real socket is not overtaken by a jump to its own
timeout. A task waiting for SQLite's worker thread waits too, though, and a
slow query (opening the file and creating the schema takes tens of ms)
would let the clock leap to the nearest deadline — often the test's
``fail_after``. So the store runs as ``ClockHeldStore``: the real
``SqliteStorage``, each call (and its opening and closing) made with
``clock_held()``, which keeps a deadline ``HOLD_STEP_S`` ahead while SQLite
works. It changes no result, only how far the clock can move meanwhile.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import outcome
import pytest
import trio
import trio.testing
from test_sqlite_storage import make_storage

from waihu.api import DeliveryFailed, Notification, Notifier, ProviderContext, ProviderError
from waihu.notify.leads import notification_to_json
from waihu.notify.outbox import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    DELIVER_DEADLINE_S,
    IDLE_CHECK_S,
    OutboxDelivery,
    retry_delay,
)
from waihu.testing.http_receiver import HttpReceiver, ReceivedRequest, Reply
from waihu_sqlite.storage import SqliteStorage
from waihu_webhook.webhook import WebhookNotifier

BASE = 1_714_630_000.0  # the epoch time at trio time 0
TIMEOUT = 6 * 3600  # trio seconds: the longest scenario spans a few simulated hours
REAL_IDLE_S = 0.002  # nothing here waits on a thread unheld: a short idle is a real one
HOLD_STEP_S = 0.001  # while SQLite works, the clock moves at most this far per jump
HOUR = 3600.0
T = TypeVar("T")


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=REAL_IDLE_S)


def now() -> float:
    return BASE + trio.current_time()


def note(n: int | str) -> Notification:
    return Notification(
        id=f"lead-c{n}-crm",
        kind="lead",
        campaign_id="may",
        campaign_name="五月回访",
        calls=({"call_id": f"c{n}", "masked_number": "138****8000", "grade": "A"},),
        created_at=BASE,
    )


# ───────────────────────── test harness ─────────────────────────


async def clock_held(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """``await fn(...)`` while keeping a deadline HOLD_STEP_S ahead, as a plain call would.

    The ticker is shielded (a cancelled call may still wait for its thread)
    and the result or exception comes out as it is, not in an exception group.
    """
    ticker = trio.CancelScope(shield=True)

    async def tick() -> None:
        with ticker:
            while True:
                await trio.sleep(HOLD_STEP_S)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        try:
            result = await outcome.acapture(fn, *args, **kwargs)
        finally:
            ticker.cancel()
    return result.unwrap()


class ClockHeldStore:
    """The real SqliteStorage; every call made with the clock held (see the module docstring)."""

    def __init__(self, storage: SqliteStorage) -> None:
        self.storage = storage
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.storage, name)

        async def held(*args: Any, **kwargs: Any) -> Any:
            return await clock_held(method, *args, **kwargs)

        return held

    async def start(self, nursery: trio.Nursery | None = None) -> None:
        """Open the file (as the daemon starts its storage), again in the same nursery."""
        self._nursery = nursery or self._nursery
        assert self._nursery is not None
        self._scope = await clock_held(self._nursery.start, self._run)

    async def _run(self, *, task_status: Any) -> None:
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.storage.run)
                    task_status.started(scope)
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Close the file and wait until it is closed."""
        assert self._scope is not None
        self._scope.cancel()
        await clock_held(self._stopped.wait)


class Progress:
    """Wakes whoever waits each time something happens (a try, a request)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def pulse(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._event.wait()


Answer = Callable[[Notification, int], Any]  # (notification, its try number from 1) → outcome


class ScriptedNotifier:
    """Records each try with its trio time; ``answer`` raises or returns what the test wants."""

    def __init__(self, answer: Answer = lambda _n, _try: None) -> None:
        self.answer = answer
        self.tries: list[tuple[str, float]] = []
        self.progress = Progress()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def deliver(self, notification: Notification) -> None:
        self.tries.append((notification.id, trio.current_time()))
        self.progress.pulse()
        count = sum(1 for i, _t in self.tries if i == notification.id)
        outcome = self.answer(notification, count)
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            await outcome()

    def times(self, notification_id: str) -> list[float]:
        return [t for i, t in self.tries if i == notification_id]

    def delivered(self, notification_id: str) -> bool:
        return bool(self.times(notification_id))

    async def until(self, condition: Callable[[], bool]) -> None:
        await self.progress.until(condition)


@asynccontextmanager
async def delivering(
    tmp_path: Path, notifier: Notifier
) -> AsyncIterator[tuple[ClockHeldStore, OutboxDelivery]]:
    """A running store and an outbox loop delivering notifier ``crm``'s items through it."""
    store = ClockHeldStore(make_storage(tmp_path))
    async with trio.open_nursery() as nursery:
        await store.start(nursery)
        outbox = OutboxDelivery(store, "crm", notifier, now=now)  # type: ignore[arg-type]
        async with trio.open_nursery() as loop:
            await loop.start(outbox.run)
            yield store, outbox
            loop.cancel_scope.cancel()
        await store.stop()


async def waiting(store: ClockHeldStore) -> list[Any]:
    """Items not done yet, whenever due."""
    return await store.outbox_due("crm", now=now() + 100 * HOUR, limit=100)


# ───────────────────────── the scenario ─────────────────────────


async def test_endpoint_down_for_an_hour_then_every_notification_arrives_once(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    recovers_at = HOUR
    delivered: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    progress = Progress()

    def endpoint(request: ReceivedRequest) -> Reply:
        delivery = request.headers["x-waihu-delivery"]
        progress.pulse()
        if request.at < recovers_at:
            refused[delivery] += 1
            return Reply(500, {"error": "database migration"})
        delivered[delivery] += 1
        return Reply(200)

    receiver = HttpReceiver(endpoint)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.run)
            config = WebhookNotifier.Config(url=receiver.url("/hook"), timeout=30)
            context = ProviderContext(
                "crm", tmp_path, logging.getLogger("waihu.notify.crm"), trio.CapacityLimiter(1)
            )
            webhook = WebhookNotifier(config, context)
            await nursery.start(webhook.run)
            async with delivering(tmp_path, webhook) as (store, outbox):
                for n in range(5):
                    await outbox.put(note(n))
                await trio.sleep(20 * 60)  # more leads come in while it is down
                for n in range(5, 8):
                    await outbox.put(note(n))
                await progress.until(lambda: len(delivered) == 8)
                first_success = min(r.at for r in receiver.requests if r.at >= recovers_at)
                await trio.sleep(2 * BACKOFF_MAX_S)  # and nothing more arrives
                assert await waiting(store) == []
            nursery.cancel_scope.cancel()
    assert delivered == {note(n).id: 1 for n in range(8)}
    assert all(refused[note(n).id] >= 6 for n in range(8))  # tried all along, backing off
    # the backoff is capped: a recovered endpoint hears from us within BACKOFF_MAX_S
    assert first_success - recovers_at <= BACKOFF_MAX_S
    assert outbox.delivered == 8 and outbox.given_up == 0


# ───────────────────────── retry timing ─────────────────────────


def test_retry_delay_doubles_from_10_s_up_to_10_min_with_jitter() -> None:
    firsts = [retry_delay(t, rand=lambda: 0.0) for t in range(1, 9)]
    assert firsts == [10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 600.0, 600.0]
    assert retry_delay(10_000, rand=lambda: 0.0) == BACKOFF_MAX_S
    assert retry_delay(1, rand=lambda: 1.0) == pytest.approx(0.8 * BACKOFF_FIRST_S)
    assert retry_delay(0, rand=lambda: 0.0) == BACKOFF_FIRST_S
    spread = {retry_delay(3) for _ in range(50)}
    assert len(spread) > 1 and all(32 <= d <= 40 for d in spread)


async def test_failures_back_off_exponentially(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    notifier = ScriptedNotifier(lambda _n, _try: DeliveryFailed("HTTP 502"))
    with trio.fail_after(TIMEOUT):
        async with delivering(tmp_path, notifier) as (store, outbox):
            await outbox.put(note(1))
            await notifier.until(lambda: len(notifier.tries) == 9)
            await trio.sleep(1)  # the ninth failure is filed
            (item,) = await waiting(store)
    gaps = [b - a for a, b in itertools.pairwise(notifier.times(note(1).id))]
    for gap, full in zip(gaps, [10, 20, 40, 80, 160, 320, 600, 600], strict=True):
        assert 0.8 * full - 0.1 <= gap <= full + 0.1
    assert item.tries == 9 and item.last_error == "HTTP 502"
    assert outbox.failed == 9


async def test_retry_after_is_honoured(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    notifier = ScriptedNotifier(
        lambda _n, tries: DeliveryFailed("rate limited", retry_after=42) if tries == 1 else None
    )
    with trio.fail_after(TIMEOUT):
        async with delivering(tmp_path, notifier) as (store, outbox):
            await outbox.put(note(1))
            await notifier.until(lambda: len(notifier.tries) == 2)
            await trio.sleep(2 * BACKOFF_MAX_S)
            assert await waiting(store) == []
    first, second = notifier.times(note(1).id)
    assert second - first == pytest.approx(42, abs=0.1)
    assert len(notifier.tries) == 2


# ───────────────────────── waking up ─────────────────────────


async def test_put_wakes_the_idle_loop_at_once(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    notifier = ScriptedNotifier()
    with trio.fail_after(TIMEOUT):
        async with delivering(tmp_path, notifier) as (_store, outbox):
            await trio.sleep(IDLE_CHECK_S / 3)  # the loop is asleep, nothing due
            put_at = trio.current_time()
            await outbox.put(note(1))
            await notifier.until(lambda: notifier.delivered(note(1).id))
    assert notifier.times(note(1).id)[0] - put_at < 0.1


async def test_items_it_never_saw_are_found_within_the_idle_check(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    notifier = ScriptedNotifier()
    with trio.fail_after(TIMEOUT):
        async with delivering(tmp_path, notifier) as (store, _outbox):
            # as another daemon sharing the store would leave it: the loop is not told
            due = trio.current_time() + 100
            await store.outbox_put("crm", notification_to_json(note(1)), due_at=BASE + due)
            await notifier.until(lambda: notifier.delivered(note(1).id))
    assert due <= notifier.times(note(1).id)[0] <= due + IDLE_CHECK_S


async def test_items_waiting_at_start_are_delivered_first_thing(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    notifier = ScriptedNotifier()
    store = ClockHeldStore(make_storage(tmp_path))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await store.start(nursery)
            for n in range(3):  # left by the daemon's previous run
                await store.outbox_put("crm", notification_to_json(note(n)), due_at=now())
            await store.outbox_put("sales", notification_to_json(note(9)), due_at=now())
            outbox = OutboxDelivery(store, "crm", notifier, now=now)  # type: ignore[arg-type]
            async with trio.open_nursery() as loop:
                started = trio.current_time()
                await loop.start(outbox.run)
                await notifier.until(lambda: len(notifier.tries) == 3)
                assert trio.current_time() - started < 0.1
                await trio.sleep(2 * BACKOFF_MAX_S)
                loop.cancel_scope.cancel()
            await store.stop()
    assert [i for i, _t in notifier.tries] == [note(n).id for n in range(3)]  # only its own


# ───────────────────────── failures that must not stop delivery ─────────────────────────


async def test_permanent_failure_is_given_up_and_logged(
    clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(n: Notification, _tries: int) -> Any:
        if n.id == note(1).id:
            return DeliveryFailed("errcode 93000: invalid webhook url", permanent=True)
        return None

    notifier = ScriptedNotifier(answer)
    with trio.fail_after(TIMEOUT):
        async with delivering(tmp_path, notifier) as (store, outbox):
            await outbox.put(note(1))
            await outbox.put(note(2))
            await notifier.until(lambda: notifier.delivered(note(2).id))
            await trio.sleep(2 * BACKOFF_MAX_S)
            assert await waiting(store) == []
    assert len(notifier.times(note(1).id)) == 1  # never tried again
    assert outbox.given_up == 1 and outbox.delivered == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "notify.crm: gave up on lead-c1-crm" in record.getMessage()
    assert "invalid webhook url" in record.getMessage()


async def test_a_buggy_notifier_is_logged_and_retried_and_others_still_go(
    clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(n: Notification, tries: int) -> Any:
        if n.id == note(1).id and tries <= 2:
            return KeyError("masked_number")  # a plugin's bug, not a DeliveryFailed
        return None

    notifier = ScriptedNotifier(answer)
    with trio.fail_after(TIMEOUT):
        async with delivering(tmp_path, notifier) as (store, _outbox):
            await store.outbox_put("crm", notification_to_json(note(1)), due_at=now())
            await store.outbox_put("crm", notification_to_json(note(2)), due_at=now() + 1)
            await notifier.until(lambda: len(notifier.times(note(1).id)) == 3)
            await trio.sleep(1)  # the third try is filed
            assert await waiting(store) == []
    assert [i for i, _t in notifier.tries[:2]] == [note(1).id, note(2).id]  # not held up
    first, second, third = notifier.times(note(1).id)
    assert 8 <= second - first <= 10.1 and 16 <= third - second <= 20.1  # backed off
    bugs = [r for r in caplog.records if "deliver raised for lead-c1-crm" in r.getMessage()]
    assert len(bugs) == 2 and bugs[0].exc_info is not None  # with its traceback


async def test_a_hung_notifier_is_abandoned_and_retried(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    notifier = ScriptedNotifier(lambda _n, tries: trio.sleep_forever if tries == 1 else None)
    with trio.fail_after(TIMEOUT):
        async with delivering(tmp_path, notifier) as (store, outbox):
            await outbox.put(note(1))
            await notifier.until(lambda: len(notifier.tries) == 2)
            await trio.sleep(1)
            assert await waiting(store) == []
    first, second = notifier.times(note(1).id)
    assert DELIVER_DEADLINE_S <= second - first <= DELIVER_DEADLINE_S + BACKOFF_FIRST_S + 0.1


async def test_a_payload_that_is_no_notification_is_logged_and_dropped(
    clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = ScriptedNotifier()
    with trio.fail_after(TIMEOUT):
        async with delivering(tmp_path, notifier) as (store, outbox):
            await store.outbox_put("crm", {"id": "x", "kind": "weekly"}, due_at=now())
            await outbox.put(note(2))
            await notifier.until(lambda: notifier.delivered(note(2).id))
            await trio.sleep(1)
            assert await waiting(store) == []
    assert [i for i, _t in notifier.tries] == [note(2).id]
    assert "dropped, notification: kind: must be lead or digest" in caplog.text
    assert "'weekly'" in caplog.text  # the payload itself is in the log, not lost
    assert outbox.given_up == 1


async def test_storage_errors_are_logged_and_the_loop_carries_on(
    clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = ScriptedNotifier()
    with trio.fail_after(TIMEOUT):
        async with delivering(tmp_path, notifier) as (store, outbox):
            await outbox.put(note(1))
            await notifier.until(lambda: notifier.delivered(note(1).id))
            await trio.sleep(1)  # and filed as done

            await store.stop()  # the database goes away
            await trio.sleep(2 * IDLE_CHECK_S)
            assert "notify.crm: outbox:" in caplog.text and "is not open" in caplog.text
            with pytest.raises(ProviderError):
                await outbox.put(note(2))  # the caller is told: nothing is lost silently

            await store.start()  # and it comes back
            await outbox.put(note(3))
            await notifier.until(lambda: notifier.delivered(note(3).id))
    assert [i for i, _t in notifier.tries] == [note(1).id, note(3).id]
