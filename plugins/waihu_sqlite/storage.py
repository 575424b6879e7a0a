"""``SqliteStorage``: the embedded call store, one SQLite file written through sqlite-utils.

The promise is that a crash of the daemon loses no finished call: ``save_call``
returns only once the record is committed. The file runs in WAL mode, which
lets other readers (an operator's ``sqlite3`` shell, a backup, a report)
read while the daemon writes. With WAL, ``synchronous = "normal"`` is durable
against a crash of the process — a committed transaction is in the WAL file,
and the kernel writes it out even if waihud dies — but the last commits may be
lost if the machine loses power; ``"full"`` fsyncs the WAL at every commit and
survives that too, at the cost of an fsync per save.

All database work runs in one worker thread at a time: a private
``CapacityLimiter(1)`` serialises every call into ``trio.to_thread.run_sync``,
so the one connection (opened with ``check_same_thread=False``) is never used
by two threads at once and the trio thread never waits on disk.

Error handling: any ``sqlite3`` error (disk full, file locked by another
process for longer than ``busy_timeout_ms``…) reaches the caller as
``ProviderError`` naming the file. A stored row that cannot be read back is
logged, naming the row and column, and left out of ``recent_calls``;
``get_call`` of such a row raises ``ProviderError``.

What it is not: a campaign or contact store (later tables), or a query API for
reports (read the file with any SQLite tool).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar

import attrs
import sqlite_utils
import trio

from waihu.api import CallRecord, Provider, ProviderContext, ProviderError, one_of, positive

from .rows import BadRow, call_row, record_from_rows, turn_rows
from .schema import CALLS, TURNS, SchemaTooNew, ensure_schema

__all__ = ["SqliteStorage"]

T = TypeVar("T")

SYNCHRONOUS_MODES = ("normal", "full")  # see the module docstring for what each survives


class SqliteStorage(Provider):
    """Call records in a SQLite file (``waihu.api.Storage``)."""

    type_name: ClassVar[str] = "sqlite"

    @attrs.frozen(kw_only=True)
    class Config:
        """``[storage]`` with ``type = "sqlite"``."""

        path: str  # the database file; a relative path is taken from daemon.state_dir
        busy_timeout_ms: int = attrs.field(default=5000, validator=positive())
        synchronous: str = attrs.field(default="normal", validator=one_of(*SYNCHRONOUS_MODES))

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)
        self.path = context.state_dir / Path(config.path)  # an absolute path stays as it is
        self._limiter = trio.CapacityLimiter(1)  # the one thread that touches the connection
        self._db: sqlite_utils.Database | None = None

    # ───────────────────────── life cycle ─────────────────────────

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the file and create or upgrade its tables; close it when cancelled."""
        self._db = await trio.to_thread.run_sync(self._open, limiter=self._limiter)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            db, self._db = self._db, None
            # shielded: the close waits behind a save already in the thread, then runs
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(db.close, limiter=self._limiter)
            self.context.log.info("closed %s", self.path)

    def _open(self) -> sqlite_utils.Database:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self.config.busy_timeout_ms / 1000,
                check_same_thread=False,  # used from whichever worker thread holds the limiter
            )
        except (OSError, sqlite3.Error) as exc:
            raise ProviderError(f"cannot open {self.path}: {exc}") from None
        db = sqlite_utils.Database(conn, execute_plugins=False)
        try:
            db.enable_wal()
            db.execute(f"PRAGMA synchronous = {self.config.synchronous.upper()}")
            db.execute(f"PRAGMA busy_timeout = {self.config.busy_timeout_ms}")
            db.execute("PRAGMA foreign_keys = ON")
            found, now = ensure_schema(db)
        except SchemaTooNew as exc:
            db.close()
            raise ProviderError(f"{self.path}: {exc}") from None
        except sqlite3.Error as exc:
            db.close()
            raise ProviderError(f"cannot use {self.path} as a database: {exc}") from None
        if found != now:
            self.context.log.info("%s: schema version %d → %d", self.path, found, now)
        self.context.log.info("opened %s (WAL, synchronous=%s)", self.path, self.config.synchronous)
        return db

    async def _in_thread(self, work: Callable[[sqlite_utils.Database], T]) -> T:
        def guarded() -> T:
            # looked up in the thread: run() may have closed the file meanwhile
            db = self._db
            if db is None:
                raise ProviderError(f"storage {self.path} is not open")
            try:
                return work(db)
            except sqlite3.Error as exc:
                # After a failed transaction (e.g. "database is locked") this connection was
                # seen to drop every later write without an error: start afresh.
                self._reopen(db)
                raise ProviderError(f"{self.path}: {exc}") from None

        return await trio.to_thread.run_sync(guarded, limiter=self._limiter)

    def _reopen(self, db: sqlite_utils.Database) -> None:
        """Replace a connection that failed with a new one (in the storage thread)."""
        try:
            db.close()
        except sqlite3.Error:
            pass
        if self._db is db:
            try:
                self._db = self._open()
            except ProviderError as exc:
                self.context.log.error("%s", exc)

    # ───────────────────────── waihu.api.Storage ─────────────────────────

    async def save_call(self, record: CallRecord) -> None:
        """Insert or replace the whole record and its transcript in one transaction."""
        call = call_row(record)
        turns = turn_rows(record)

        def save(db: sqlite_utils.Database) -> None:
            with db.atomic():
                db.table(CALLS).upsert(call, pk="id")
                db.table(TURNS).delete_where("call_id = ?", [record.id])
                if turns:
                    db.table(TURNS).insert_all(turns)

        await self._in_thread(save)

    async def get_call(self, call_id: str) -> CallRecord | None:
        """The record with this id, or None."""

        def get(db: sqlite_utils.Database) -> CallRecord | None:
            with db.atomic():  # one snapshot for the call and its turns
                rows = list(db.query(f"SELECT * FROM {CALLS} WHERE id = ?", [call_id]))
                if not rows:
                    return None
                turns = self._turns(db, "call_id = ?", [call_id])
            try:
                return record_from_rows(rows[0], turns.get(call_id, []))
            except BadRow as exc:
                raise ProviderError(f"{self.path}: {exc}") from None

        return await self._in_thread(get)

    async def recent_calls(self, limit: int = 20) -> list[CallRecord]:
        """Up to ``limit`` records, newest ``created_at`` first; unreadable rows are skipped."""
        if limit <= 0:
            return []

        def recent(db: sqlite_utils.Database) -> list[CallRecord]:
            newest = f"SELECT * FROM {CALLS} ORDER BY created_at DESC, id DESC LIMIT ?"
            with db.atomic():
                rows = list(db.query(newest, [limit]))
                # a subquery, not a list of ids: no limit on SQL variables to run into
                turns = self._turns(db, f"call_id IN (SELECT id FROM ({newest}))", [limit])
            records = []
            for row in rows:
                try:
                    records.append(record_from_rows(row, turns.get(row["id"], [])))
                except BadRow as exc:
                    self.context.log.warning("%s: skipped: %s", self.path, exc)
            return records

        return await self._in_thread(recent)

    @staticmethod
    def _turns(
        db: sqlite_utils.Database, where: str, params: list[object]
    ) -> dict[str, list[dict]]:
        by_call: dict[str, list[dict]] = {}
        sql = f"SELECT * FROM {TURNS} WHERE {where} ORDER BY call_id, seq"
        for row in db.query(sql, params):
            by_call.setdefault(row["call_id"], []).append(row)
        return by_call
