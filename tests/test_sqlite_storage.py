"""The SQLite call store against real database files in tmp_path."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from importlib.metadata import entry_points
from pathlib import Path

import attrs
import pytest
import sqlite_utils
import trio

from waihu.api import (
    CallRecord,
    CampaignRow,
    MediaQuality,
    ProviderContext,
    ProviderError,
    Storage,
    TransferResult,
    Turn,
)
from waihu.config import ConfigError, structure_strict
from waihu_sqlite.rows import call_row, turn_rows
from waihu_sqlite.schema import _MIGRATIONS, SCHEMA_VERSION
from waihu_sqlite.storage import SqliteStorage

TIMEOUT = 30  # seconds; generous, the machine is shared


def make_storage(state_dir: Path, path: str = "waihu.db", **options: object) -> SqliteStorage:
    context = ProviderContext(
        name="storage",
        state_dir=state_dir,
        log=logging.getLogger("waihu.storage"),
        cpu_limiter=trio.CapacityLimiter(2),
    )
    return SqliteStorage(SqliteStorage.Config(path=path, **options), context)


@asynccontextmanager
async def running(storage: SqliteStorage) -> AsyncIterator[SqliteStorage]:
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)
        yield storage
        nursery.cancel_scope.cancel()


def sample_call(call_id: str = "c1", *, created_at: float = 1_700_000_000.0) -> CallRecord:
    return CallRecord(
        id=call_id,
        number="01012345678",
        script="demo-ko",
        trunk="office",
        status="ended",
        created_at=created_at,
        answered_at=created_at + 3.5,
        ended_at=created_at + 40.25,
        sip_status=200,
        sip_reason="OK",
        hangup_by="callee",
        grade="A",
        tags=["가격 문의", "hot"],
        turns=[
            Turn(
                "robot",
                "안녕하세요, 잠시 통화 괜찮으세요?",
                "greeting",
                started_at=created_at + 4,
                ended_at=created_at + 7,
                interrupted=True,
            ),
            Turn(
                "callee",
                "네 괜찮아요",
                "greeting",
                intent="affirm",
                confidence=0.93,
                started_at=created_at + 6.5,
                ended_at=created_at + 8,
            ),
            Turn("robot", "감사합니다", "bye", started_at=created_at + 9),
        ],
        recording="recordings/c1.wav",
        error=None,
    )


async def test_round_trip_keeps_every_field_and_turn(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            assert isinstance(storage, Storage)
            record = sample_call()
            await storage.save_call(record)
            assert await storage.get_call("c1") == record
            assert await storage.get_call("nope") is None


async def test_save_again_replaces_the_record_and_its_turns(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            first = sample_call()
            await storage.save_call(first)
            second = attrs.evolve(
                first,
                status="failed",
                grade=None,
                tags=[],
                turns=first.turns[:1],
                error="trunk went away",
            )
            await storage.save_call(second)
            assert await storage.get_call("c1") == second
        with sqlite3.connect(tmp_path / "waihu.db") as conn:
            assert conn.execute("SELECT count(*) FROM turns").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM calls").fetchone() == (1,)


async def test_file_is_wal_with_schema_version_and_indexes(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            await storage.save_call(sample_call())
            conn = sqlite3.connect(tmp_path / "waihu.db")
            try:
                assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
                assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
                indexes = {row[1] for row in conn.execute("PRAGMA index_list(calls)")}
                assert {"calls_created_at", "calls_number"} <= indexes
            finally:
                conn.close()


@pytest.mark.parametrize(("mode", "pragma_value"), [("normal", 1), ("full", 2)])
async def test_synchronous_mode_is_the_configured_one(
    tmp_path: Path, mode: str, pragma_value: int
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path, synchronous=mode)) as storage:
            # the setting belongs to the storage's own connection, so ask through it
            found = await storage._in_thread(
                lambda db: db.execute("PRAGMA synchronous").fetchone()[0]
            )
            assert found == pragma_value


async def test_record_is_readable_while_the_writer_never_closed(tmp_path: Path) -> None:
    """As after a crash: a second storage opens the file the first still holds open."""
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as writer:
            await writer.save_call(sample_call())
            async with running(make_storage(tmp_path)) as reader:
                assert await reader.get_call("c1") == sample_call()


async def test_record_survives_kill_9_of_the_writing_process(tmp_path: Path) -> None:
    writer = textwrap.dedent(
        """
        import logging, os, signal, sys
        from pathlib import Path
        import trio
        from waihu.api import CallRecord, ProviderContext
        from waihu_sqlite.storage import SqliteStorage

        async def main():
            context = ProviderContext(name="storage", state_dir=Path(sys.argv[1]),
                                      log=logging.getLogger("w"),
                                      cpu_limiter=trio.CapacityLimiter(1))
            storage = SqliteStorage(SqliteStorage.Config(path="waihu.db"), context)
            async with trio.open_nursery() as nursery:
                await nursery.start(storage.run)
                await storage.save_call(CallRecord(id="k9", number="1001", script="s",
                                                   trunk="t", status="ended", created_at=5.0))
                os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint

        trio.run(main)
        """
    )
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            [sys.executable, "-c", writer, str(tmp_path)],
            check=False,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert done.returncode == -signal.SIGKILL
        async with running(make_storage(tmp_path)) as storage:
            found = await storage.get_call("k9")
            assert found is not None and found.status == "ended"


async def test_recent_calls_are_newest_first_and_limited(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            for call_id, created in [("b", 20.0), ("a", 10.0), ("d", 40.0), ("c", 30.0)]:
                await storage.save_call(sample_call(call_id, created_at=created))
            recent = await storage.recent_calls(3)
            assert [r.id for r in recent] == ["d", "c", "b"]
            assert [len(r.turns) for r in recent] == [3, 3, 3]
            assert recent[0].turns[1].text == "네 괜찮아요"
            assert await storage.recent_calls(0) == []


async def test_concurrent_saves_all_land(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            async with trio.open_nursery() as nursery:
                for n in range(40):
                    nursery.start_soon(storage.save_call, sample_call(f"c{n}", created_at=n))
            recent = await storage.recent_calls(100)
            assert sorted(r.id for r in recent) == sorted(f"c{n}" for n in range(40))


async def test_unreadable_row_is_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            await storage.save_call(sample_call("good", created_at=1.0))
            await storage.save_call(sample_call("bad", created_at=2.0))
            with sqlite3.connect(tmp_path / "waihu.db") as conn:  # a hand edit gone wrong
                conn.execute("UPDATE calls SET tags = 'hot, cold' WHERE id = 'bad'")
            conn.close()
            with caplog.at_level(logging.WARNING, logger="waihu.storage"):
                recent = await storage.recent_calls(10)
            assert [r.id for r in recent] == ["good"]
            assert "calls row 'bad': tags is not JSON" in caplog.text
            with pytest.raises(ProviderError, match="calls row 'bad': tags"):
                await storage.get_call("bad")


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "waihu.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with trio.fail_after(TIMEOUT):
        with pytest.RaisesGroup(pytest.RaisesExc(ProviderError, match="newer than this waihu")):
            async with running(make_storage(tmp_path)):
                pass


async def test_unopenable_file_is_a_provider_error(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a directory")
    with trio.fail_after(TIMEOUT):
        with pytest.RaisesGroup(pytest.RaisesExc(ProviderError, match="cannot open")):
            async with running(make_storage(tmp_path, "plain-file/waihu.db")):
                pass


async def test_a_file_that_is_not_a_database_is_a_provider_error(tmp_path: Path) -> None:
    (tmp_path / "waihu.db").write_bytes(b"call log, not SQLite\n" * 100)
    with trio.fail_after(TIMEOUT):
        with pytest.RaisesGroup(pytest.RaisesExc(ProviderError, match="cannot use .* database")):
            async with running(make_storage(tmp_path)):
                pass


async def test_closed_storage_refuses_work(tmp_path: Path) -> None:
    storage = make_storage(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            pass
        with pytest.raises(ProviderError, match="not open"):
            await storage.save_call(sample_call())


def test_relative_path_is_under_state_dir_and_absolute_stays(tmp_path: Path) -> None:
    assert make_storage(tmp_path, "db/calls.db").path == tmp_path / "db" / "calls.db"
    elsewhere = tmp_path.parent / "elsewhere.db"
    assert make_storage(tmp_path, str(elsewhere)).path == elsewhere


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as found:
        structure_strict(
            SqliteStorage.Config,
            {"path": "w.db", "synchronous": "fast"},
            file="waihud.toml",
            key="storage",
        )
    assert found.value.problems == [
        "waihud.toml: storage.synchronous: must be one of normal, full, not 'fast'"
    ]
    with pytest.raises(ConfigError, match=r"storage\.path: required key is missing"):
        structure_strict(SqliteStorage.Config, {}, file="waihud.toml", key="storage")


def test_registered_through_the_entry_point() -> None:
    (point,) = entry_points(group="waihu", name="sqlite")
    assert point.load().waihu_storage_types() == [SqliteStorage]
    assert SqliteStorage.type_name == "sqlite"


async def test_saves_after_a_locked_database_are_kept(tmp_path: Path) -> None:
    """Another process locks the file: that save fails loudly; later saves land for real."""
    with trio.fail_after(30):
        async with running(make_storage(tmp_path, busy_timeout_ms=100)) as storage:
            locker = sqlite3.connect(storage.path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(ProviderError, match="database is locked"):
                await storage.save_call(sample_call("locked-out"))
            locker.execute("ROLLBACK")
            locker.close()
            await storage.save_call(sample_call("after"))
            assert (await storage.get_call("after")) is not None
            other = sqlite3.connect(storage.path)
            try:
                ids = [row[0] for row in other.execute("SELECT id FROM calls")]
            finally:
                other.close()
            assert ids == ["after"]


async def test_heartbeats_keep_the_latest_time_per_node(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            assert await storage.last_alive("node-a") is None
            await storage.set_alive("node-a", 100.0)
            await storage.set_alive("node-b", 50.0)
            await storage.set_alive("node-a", 110.5)
            assert await storage.last_alive("node-a") == 110.5
            assert await storage.last_alive("node-b") == 50.0
        async with running(make_storage(tmp_path)) as storage:
            assert await storage.last_alive("node-a") == 110.5


def old_turn_rows(record: CallRecord) -> list[dict[str, object]]:
    """The turn rows of a file before v5 (no ``played_ms``)."""
    return [{k: v for k, v in row.items() if k != "played_ms"} for row in turn_rows(record)]


def write_v1_file(path: Path, record: CallRecord) -> None:
    """A database as waihu with schema v1 left it, holding one call."""
    db = sqlite_utils.Database(sqlite3.connect(path))
    try:
        with db.atomic():
            _MIGRATIONS[0](db)
            db.execute("PRAGMA user_version = 1")
            v1_columns = {
                "id", "number", "script", "trunk", "status", "created_at", "answered_at",
                "ended_at", "sip_status", "sip_reason", "hangup_by", "grade", "tags",
                "recording", "error",
            }  # fmt: skip
            row = {k: v for k, v in call_row(record).items() if k in v1_columns}
            db.table("calls").insert(row)
            db.table("turns").insert_all(old_turn_rows(record))
    finally:
        db.close()


async def test_a_v1_file_is_upgraded_in_place_with_its_calls(tmp_path: Path) -> None:
    write_v1_file(tmp_path / "waihu.db", sample_call())
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            assert await storage.get_call("c1") == sample_call()  # no campaign, no outcome
            await storage.create_campaign(CampaignRow(id="k1", name="first"))
            await storage.save_call(attrs.evolve(sample_call("c2"), campaign_id="k1"))
            assert [r.id for r in await storage.find_calls(campaign_id="k1")] == ["c2"]
        with closing(sqlite3.connect(tmp_path / "waihu.db")) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            assert {
                "campaigns",
                "contacts",
                "attempts",
                "dnc",
                "audit",
                "outbox",
                "alive",
            } <= tables


async def test_an_upgrade_that_fails_leaves_the_file_at_v1(tmp_path: Path) -> None:
    write_v1_file(tmp_path / "waihu.db", sample_call())
    with closing(sqlite3.connect(tmp_path / "waihu.db")) as conn, conn:
        conn.execute("CREATE TABLE outbox (x)")  # v2 cannot create its own outbox
    with trio.fail_after(TIMEOUT):
        with pytest.RaisesGroup(pytest.RaisesExc(ProviderError, match="outbox already exists")):
            async with running(make_storage(tmp_path)):
                pass
    with closing(sqlite3.connect(tmp_path / "waihu.db")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}
        assert "campaign_id" not in columns  # the ALTERs before the failure were rolled back
        assert conn.execute("SELECT id FROM calls").fetchall() == [("c1",)]


async def test_the_grade_reason_and_script_hash_are_kept(tmp_path: Path) -> None:
    record = attrs.evolve(
        sample_call(), grade_reason="asked the price twice and agreed", script_hash="ab" * 32
    )
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            await storage.save_call(record)
            assert await storage.get_call("c1") == record
            await storage.save_call(attrs.evolve(record, grade_reason=None))
            assert (await storage.get_call("c1")).grade_reason is None


def write_v2_file(path: Path, record: CallRecord) -> None:
    """A database as waihu with schema v2 left it, holding one call of a campaign."""
    db = sqlite_utils.Database(sqlite3.connect(path))
    try:
        with db.atomic():
            _MIGRATIONS[0](db)
            _MIGRATIONS[1](db)
            db.execute("PRAGMA user_version = 2")
            db.execute(
                "INSERT INTO campaigns (id, name, state, settings, created_at)"
                " VALUES ('k1', 'first', 'running', '{}', 0)"
            )
            row = call_row(record)
            later = (
                "grade_reason", "script_hash", "direction", "transfer", "media_quality",
                "answered_by", "answered_by_evidence",
            )  # fmt: skip
            row = {k: v for k, v in row.items() if k not in later}
            db.table("calls").insert(row)
            db.table("turns").insert_all(old_turn_rows(record))
    finally:
        db.close()


async def test_a_v2_file_is_upgraded_in_place_keeping_its_calls(tmp_path: Path) -> None:
    old = attrs.evolve(sample_call(), campaign_id="k1", outcome="answered")
    write_v2_file(tmp_path / "waihu.db", old)
    with closing(sqlite3.connect(tmp_path / "waihu.db")) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}
        assert "grade_reason" not in columns  # really a v2 file
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            found = await storage.get_call("c1")
            assert found == old
            assert (found.grade_reason, found.script_hash) == (None, None)
            assert [r.id for r in await storage.find_calls(campaign_id="k1")] == ["c1"]
            await storage.save_call(
                attrs.evolve(old, id="c2", grade_reason="hot", script_hash="f0")
            )
        async with running(make_storage(tmp_path)) as storage:
            again = await storage.get_call("c2")
            assert (again.grade_reason, again.script_hash) == ("hot", "f0")
    with closing(sqlite3.connect(tmp_path / "waihu.db")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (5,)


async def test_direction_transfer_and_media_quality_round_trip(tmp_path: Path) -> None:
    """v4 columns: an inbound call with a transfer result and RTCP figures comes back equal;
    an old file's calls read back as outbound with neither."""
    old = attrs.evolve(sample_call(), campaign_id="k1", outcome="answered")
    write_v2_file(tmp_path / "waihu.db", old)
    record = attrs.evolve(
        sample_call("c2"),
        direction="inbound",
        transfer=TransferResult(
            target="sip:1002@127.0.0.1", mode="bridge", outcome="agent_busy", status=486,
            detail="agent busy", started_at=5.0, ended_at=6.5,
        ),
        media_quality=MediaQuality(
            packets_sent=1500, packets_received=1490, packets_lost=10, loss_fraction=0.0067,
            jitter_ms=3.25, rtt_ms=41.0, remote_loss_fraction=0.0, remote_jitter_ms=None,
        ),
    )  # fmt: skip
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            found = await storage.get_call("c1")
            assert (found.direction, found.transfer, found.media_quality) == (
                "outbound", None, None,
            )  # fmt: skip
            await storage.save_call(record)
        async with running(make_storage(tmp_path)) as storage:
            assert await storage.get_call("c2") == record


def write_v4_file(path: Path, record: CallRecord) -> None:
    """A database as waihu with schema v4 left it, holding one answered call."""
    db = sqlite_utils.Database(sqlite3.connect(path))
    try:
        with db.atomic():
            for step in _MIGRATIONS[:4]:
                step(db)
            db.execute("PRAGMA user_version = 4")
            row = call_row(record)
            row = {k: v for k, v in row.items() if not k.startswith("answered_by")}
            db.table("calls").insert(row)
            db.table("turns").insert_all(old_turn_rows(record))
    finally:
        db.close()


async def test_a_v4_file_gains_who_answered_and_keeps_its_calls(tmp_path: Path) -> None:
    """v5 columns: an old call reads back as never screened; a screened voicemail call and a
    person's call come back equal, evidence and all."""
    old = attrs.evolve(sample_call(), outcome="answered")
    write_v4_file(tmp_path / "waihu.db", old)
    voicemail = attrs.evolve(
        sample_call("c2"), outcome="voicemail", grade=None, answered_by="voicemail",
        answered_by_evidence="said '来电秘书'",
    )  # fmt: skip
    person = attrs.evolve(sample_call("c3"), answered_by="person", answered_by_evidence="said '喂'")
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            found = await storage.get_call("c1")
            assert found == old
            assert (found.answered_by, found.answered_by_evidence) == (None, "")
            await storage.save_call(voicemail)
            await storage.save_call(person)
        async with running(make_storage(tmp_path)) as storage:
            assert await storage.get_call("c2") == voicemail
            assert await storage.get_call("c3") == person
    with closing(sqlite3.connect(tmp_path / "waihu.db")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (5,)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}
        assert {"answered_by", "answered_by_evidence"} <= columns
        assert "played_ms" in {row[1] for row in conn.execute("PRAGMA table_info(turns)")}


async def test_a_damaged_answered_by_column_is_named(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            await storage.save_call(sample_call("c1"))
    with closing(sqlite3.connect(tmp_path / "waihu.db")) as conn, conn:
        conn.execute("UPDATE calls SET answered_by = 'robot'")
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            with pytest.raises(Exception, match=r"c1.*answered_by.*'robot'"):
                await storage.get_call("c1")


async def test_a_damaged_transfer_column_is_named(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            await storage.save_call(sample_call("c1"))
    with closing(sqlite3.connect(tmp_path / "waihu.db")) as conn, conn:
        conn.execute("UPDATE calls SET transfer = '[1]', direction = 'inbound'")
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            with pytest.raises(Exception, match=r"c1.*transfer.*TransferResult"):
                await storage.get_call("c1")


async def test_find_calls_applies_every_filter_given(tmp_path: Path) -> None:
    calls = [
        attrs.evolve(sample_call("a", created_at=10.0), campaign_id="k1", grade="A",
                     outcome="answered"),
        attrs.evolve(sample_call("b", created_at=20.0), campaign_id="k1", grade="B",
                     outcome="answered"),
        attrs.evolve(sample_call("c", created_at=30.0), campaign_id="k1", grade=None,
                     outcome="busy", turns=[]),
        attrs.evolve(sample_call("d", created_at=40.0), campaign_id="k2", grade="A",
                     outcome="answered"),
        attrs.evolve(sample_call("e", created_at=50.0), grade="A", outcome="answered"),
    ]  # fmt: skip
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            for record in calls:
                await storage.save_call(record)

            async def ids(**filters: object) -> list[str]:
                return [r.id for r in await storage.find_calls(**filters)]  # type: ignore[arg-type]

            assert await ids() == ["e", "d", "c", "b", "a"]
            assert await ids(campaign_id="k1") == ["c", "b", "a"]
            assert await ids(grade="A") == ["e", "d", "a"]
            assert await ids(outcome="busy") == ["c"]
            assert await ids(campaign_id="k1", grade="A") == ["a"]
            assert await ids(since=20.0, until=40.0) == ["c", "b"]  # [since, until)
            assert await ids(grade="A", since=10.0, limit=2) == ["e", "d"]
            assert await ids(limit=0) == []
            (found,) = await storage.find_calls(campaign_id="k2")
            assert found == calls[3]  # with its turns


async def test_unfinished_calls_are_those_not_seen_to_their_end(tmp_path: Path) -> None:
    statuses = ["dialing", "ringing", "answered", "ended", "failed"]
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            for n, status in enumerate(statuses):
                record = attrs.evolve(sample_call(status, created_at=float(n)), status=status)
                await storage.save_call(record)
            found = await storage.unfinished_calls()
            assert [r.id for r in found] == ["answered", "ringing", "dialing"]
            assert len(found[0].turns) == 3
            await storage.save_call(attrs.evolve(found[0], status="ended"))
            assert [r.id for r in await storage.unfinished_calls()] == ["ringing", "dialing"]


async def test_where_barge_in_cut_a_line_round_trips(tmp_path: Path) -> None:
    """A robot turn cut by barge-in keeps how much of it was heard (v5 ``played_ms``)."""
    record = sample_call()
    record.turns[0] = attrs.evolve(record.turns[0], interrupted=True, played_ms=1240)
    with trio.fail_after(TIMEOUT):
        async with running(make_storage(tmp_path)) as storage:
            await storage.save_call(record)
        async with running(make_storage(tmp_path)) as storage:
            found = await storage.get_call(record.id)
    assert found is not None
    assert found.turns[0].played_ms == 1240
    assert found.turns[1].played_ms is None
