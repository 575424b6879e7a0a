"""The SQLite campaign store against real database files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from test_sqlite_storage import TIMEOUT, make_storage, running

from waihu.api import OutboxItem
from waihu_sqlite.campaigns import StaleChange
from waihu_sqlite.storage import SqliteStorage


@pytest.fixture
def storage(tmp_path: Path) -> SqliteStorage:
    return make_storage(tmp_path)


# ───────────────────────── the outbox ─────────────────────────


async def test_outbox_hands_out_due_items_oldest_due_first(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            late = await storage.outbox_put("wechat", {"id": "n1", "text": "张三"}, due_at=20.0)
            early = await storage.outbox_put("wechat", {"id": "n2"}, due_at=10.0)
            tie = await storage.outbox_put("wechat", {"id": "n3"}, due_at=20.0)
            await storage.outbox_put("wechat", {"id": "n4"}, due_at=30.0)  # not due yet
            await storage.outbox_put("webhook", {"id": "n5"}, due_at=0.0)  # another notifier
            due = await storage.outbox_due("wechat", now=20.0, limit=10)
            assert [item.id for item in due] == [early, late, tie]
            assert due[1] == OutboxItem(
                id=late, notifier="wechat", payload={"id": "n1", "text": "张三"}, due_at=20.0
            )
            assert [i.id for i in await storage.outbox_due("wechat", now=20.0, limit=2)] == [
                early,
                late,
            ]
            assert await storage.outbox_due("wechat", now=20.0, limit=0) == []


async def test_outbox_done_items_are_not_due_again(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            first = await storage.outbox_put("wechat", {"id": "n1"}, due_at=1.0)
            second = await storage.outbox_put("wechat", {"id": "n2"}, due_at=2.0)
            await storage.outbox_done(first, at=5.0)
            assert [i.id for i in await storage.outbox_due("wechat", now=9.0, limit=9)] == [second]
            with pytest.raises(StaleChange, match=f"outbox item {first} was already done at 5.0"):
                await storage.outbox_done(first, at=6.0)
            with pytest.raises(StaleChange, match="outbox item 999 does not exist"):
                await storage.outbox_done(999, at=6.0)


async def test_outbox_retry_counts_tries_and_moves_the_item_back(storage: SqliteStorage) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            first = await storage.outbox_put("wechat", {"id": "n1"}, due_at=1.0)
            second = await storage.outbox_put("wechat", {"id": "n2"}, due_at=2.0)
            await storage.outbox_retry(first, due_at=60.0, error="429 rate limited")
            await storage.outbox_retry(first, due_at=70.0, error="timeout")
            assert [i.id for i in await storage.outbox_due("wechat", now=65.0, limit=9)] == [second]
            due = await storage.outbox_due("wechat", now=70.0, limit=9)
            assert [i.id for i in due] == [second, first]
            assert (due[1].tries, due[1].last_error, due[1].due_at) == (2, "timeout", 70.0)
            assert (due[0].tries, due[0].last_error) == (0, None)
            await storage.outbox_done(first, at=71.0)
            with pytest.raises(StaleChange, match="already done"):
                await storage.outbox_retry(first, due_at=80.0, error="late")
            assert [i.id for i in await storage.outbox_due("wechat", now=99.0, limit=9)] == [second]


async def test_outbox_survives_a_restart(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            item = await storage.outbox_put("webhook", {"calls": [{"grade": "A"}]}, due_at=3.0)
        async with running(make_storage(tmp_path)) as storage:
            (found,) = await storage.outbox_due("webhook", now=3.0, limit=5)
            assert (found.id, found.payload) == (item, {"calls": [{"grade": "A"}]})
