"""``SqliteStorage``: the embedded call and campaign store, one SQLite file (sqlite-utils).

It is both ``waihu.api.Storage`` (call records, the daemons' heartbeats) and
``waihu.api.CampaignStore`` (campaigns, the lead queue, attempts, do-not-call,
audit, the notification outbox). The call queries are here; the campaign
store's are in ``campaigns``, each run here as one transaction.

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
by two threads at once and the trio thread never waits on disk. Every method
is one transaction, committed before it returns.

Error handling: any ``sqlite3`` error (disk full, file locked by another
process for longer than ``busy_timeout_ms``…) reaches the caller as
``ProviderError`` naming the file, and the connection is replaced (a failed
transaction was seen to leave it dropping later writes); a constraint
violation (a campaign name taken, a contact imported twice) keeps the
connection. A lead-queue change that finds another state than it expects (a
second finish of one attempt…) raises ``campaigns.StaleChange``, a
``ProviderError``, and changes nothing; arguments that would break the books
(a contact moved to ``calling`` in bulk, a number that is not E.164) raise
``ValueError`` before any SQL runs. A stored call row that cannot be read
back is logged, naming the row and column, and left out of lists;
``get_call`` of such a row, or any unreadable campaign-store row, raises
``ProviderError``.

What it is not: the campaign policy (``waihu.campaign``), or a query API for
reports (read the file with any SQLite tool).
"""

from __future__ import annotations

import functools
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs
import sqlite_utils
import trio

from waihu.api import (
    Attempt,
    AuditEntry,
    CallCounts,
    CallRecord,
    CampaignRow,
    CampaignStats,
    Contact,
    ContactState,
    OutboxItem,
    Provider,
    ProviderContext,
    ProviderError,
    one_of,
    positive,
)

from . import campaigns
from .rows import BadRow, call_row, record_from_rows, turn_rows
from .schema import ALIVE, CALLS, TURNS, UNFINISHED_CALLS, SchemaTooNew, ensure_schema

__all__ = ["SqliteStorage"]

T = TypeVar("T")

SYNCHRONOUS_MODES = ("normal", "full")  # see the module docstring for what each survives


class SqliteStorage(Provider):
    """Calls and campaigns in a SQLite file (``waihu.api.Storage`` and ``CampaignStore``)."""

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
            except BadRow as exc:
                raise ProviderError(f"{self.path}: {exc}") from None
            except sqlite3.IntegrityError as exc:
                # a refused row (name taken, duplicate number): the connection is fine
                raise ProviderError(f"{self.path}: {exc}") from None
            except sqlite3.Error as exc:
                # After a failed transaction (e.g. "database is locked") this connection was
                # seen to drop every later write without an error: start afresh.
                self._reopen(db)
                raise ProviderError(f"{self.path}: {exc}") from None

        return await trio.to_thread.run_sync(guarded, limiter=self._limiter)

    async def _atomic(self, work: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``work`` as one transaction in the storage thread: committed, or rolled back."""

        def transaction(db: sqlite_utils.Database) -> T:
            with db.atomic():
                return work(db)

        return await self._in_thread(transaction)

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
            db.table(CALLS).upsert(call, pk="id")
            db.table(TURNS).delete_where("call_id = ?", [record.id])
            if turns:
                db.table(TURNS).insert_all(turns)

        await self._atomic(save)

    async def get_call(self, call_id: str) -> CallRecord | None:
        """The record with this id, or None."""

        def get(db: sqlite_utils.Database) -> CallRecord | None:
            rows = list(db.query(f"SELECT * FROM {CALLS} WHERE id = ?", [call_id]))
            if not rows:
                return None
            turns = self._turns(db, "call_id = ?", [call_id])
            return record_from_rows(rows[0], turns.get(call_id, []))  # BadRow: ProviderError

        return await self._atomic(get)  # one snapshot for the call and its turns

    async def recent_calls(self, limit: int = 20) -> list[CallRecord]:
        """Up to ``limit`` records, newest ``created_at`` first; unreadable rows are skipped."""
        return await self._atomic(lambda db: self._select_calls(db, "1", [], limit))

    async def find_calls(
        self,
        *,
        campaign_id: str | None = None,
        grade: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 20,
    ) -> list[CallRecord]:
        """Up to ``limit`` records matching every filter given (``created_at`` in
        [since, until)), newest first; unreadable rows are skipped."""
        terms = [
            ("campaign_id = ?", campaign_id),
            ("grade = ?", grade),
            ("outcome = ?", outcome),
            ("created_at >= ?", since),
            ("created_at < ?", until),
        ]
        given = [(term, value) for term, value in terms if value is not None]
        where = " AND ".join(term for term, _ in given) or "1"
        params = [value for _, value in given]
        return await self._atomic(lambda db: self._select_calls(db, where, params, limit))

    async def unfinished_calls(self) -> list[CallRecord]:
        """Every record still dialing, ringing or answered (after a crash), newest first."""
        return await self._atomic(lambda db: self._select_calls(db, UNFINISHED_CALLS, [], None))

    def _select_calls(
        self, db: sqlite_utils.Database, where: str, params: list[Any], limit: int | None
    ) -> list[CallRecord]:
        if limit is not None and limit <= 0:  # SQLite reads LIMIT -1 as "no limit"
            return []
        selected = f"SELECT * FROM {CALLS} WHERE {where} ORDER BY created_at DESC, id DESC"
        if limit is not None:
            selected += " LIMIT ?"
            params = [*params, limit]
        rows = list(db.query(selected, params))
        # a subquery, not a list of ids: no limit on SQL variables to run into
        turns = self._turns(db, f"call_id IN (SELECT id FROM ({selected}))", params)
        records = []
        for row in rows:
            try:
                records.append(record_from_rows(row, turns.get(row["id"], [])))
            except BadRow as exc:
                self.context.log.warning("%s: skipped: %s", self.path, exc)
        return records

    @staticmethod
    def _turns(
        db: sqlite_utils.Database, where: str, params: list[object]
    ) -> dict[str, list[dict]]:
        by_call: dict[str, list[dict]] = {}
        sql = f"SELECT * FROM {TURNS} WHERE {where} ORDER BY call_id, seq"
        for row in db.query(sql, params):
            by_call.setdefault(row["call_id"], []).append(row)
        return by_call

    async def call_counts(self, *, since: float, until: float | None = None) -> CallCounts:
        """Calls created in [since, until) by outcome and by grade: one grouped scan of the
        ``created_at`` index (a day of calls is counted without reading a record)."""
        where = "created_at >= ?" + (" AND created_at < ?" if until is not None else "")
        params = [since] if until is None else [since, until]
        counted = (
            f"SELECT outcome, grade, count(*) FROM {CALLS} WHERE {where} GROUP BY outcome, grade"
        )

        def count(db: sqlite_utils.Database) -> CallCounts:
            calls = 0
            outcomes: dict[str, int] = {}
            grades: dict[str, int] = {}
            for outcome, grade, n in db.execute(counted, params).fetchall():
                calls += n
                if outcome is not None:  # NULL: the call is not over yet
                    outcomes[outcome] = outcomes.get(outcome, 0) + n
                if grade is not None:
                    grades[grade] = grades.get(grade, 0) + n
            return CallCounts(calls=calls, outcomes=outcomes, grades=grades)

        return await self._atomic(count)

    # ───────────────────────── waihu.api.Storage: heartbeats ─────────────────────────

    async def set_alive(self, node: str, at: float) -> None:
        """Record that the daemon ``node`` was alive at ``at`` (its heartbeat)."""

        def beat(db: sqlite_utils.Database) -> None:
            db.execute(
                f"INSERT INTO {ALIVE} (node, at) VALUES (?, ?)"
                " ON CONFLICT (node) DO UPDATE SET at = excluded.at",
                [node, at],
            )

        await self._atomic(beat)

    async def last_alive(self, node: str) -> float | None:
        """When ``node`` last said it was alive, or None if it never did."""

        def last(db: sqlite_utils.Database) -> float | None:
            row = db.execute(f"SELECT at FROM {ALIVE} WHERE node = ?", [node]).fetchone()
            return None if row is None else row[0]

        return await self._atomic(last)

    async def call_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` call ids starting with ``prefix``, in id order.

        A range on the primary key (``prefix <= id < prefix'``, where ``prefix'``
        is ``prefix`` with its last character bumped), so SQLite searches the
        id's index; ``LIKE`` would not (it is case-insensitive, the index is not),
        and ``GLOB`` would read ``*``/``?`` in the prefix as wildcards.
        """
        if not prefix or limit <= 0 or ord(prefix[-1]) == sys.maxunicode:
            return []  # the last: no character sorts after it, and no call id holds it
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        sql = f"SELECT id FROM {CALLS} WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
        rows = await self._atomic(lambda db: db.execute(sql, [prefix, upper, limit]).fetchall())
        return [row[0] for row in rows]

    # ───────────────────────── waihu.api.CampaignStore ─────────────────────────
    # The SQL is in ``campaigns``; each method is one transaction (``_atomic``).

    async def create_campaign(self, row: CampaignRow) -> None:
        """Insert a campaign; ProviderError if its id or name is taken."""
        await self._atomic(functools.partial(campaigns.create_campaign, row=row))

    async def update_campaign(self, row: CampaignRow) -> None:
        """Write every field of an existing campaign; ProviderError if there is none."""
        await self._atomic(functools.partial(campaigns.update_campaign, row=row))

    async def get_campaign(self, campaign_id: str) -> CampaignRow | None:
        """The campaign with this id, or None."""
        return await self._atomic(
            functools.partial(campaigns.get_campaign, campaign_id=campaign_id)
        )

    async def list_campaigns(self) -> list[CampaignRow]:
        """Every campaign, oldest first."""
        return await self._atomic(campaigns.list_campaigns)

    async def add_contacts(self, contacts: Sequence[Contact]) -> int:
        """Insert contacts, all or none (ids assigned); returns how many."""
        return await self._atomic(functools.partial(campaigns.add_contacts, contacts=contacts))

    async def campaign_numbers(self, campaign_id: str) -> set[str]:
        """Every number in the campaign."""
        return await self._atomic(
            functools.partial(campaigns.campaign_numbers, campaign_id=campaign_id)
        )

    async def campaign_contacts(
        self, campaign_id: str, *, after_id: int = 0, limit: int = 1000
    ) -> list[Contact]:
        """The campaign's contacts with ids above ``after_id``, in id order, ``limit`` at most."""
        return await self._atomic(
            functools.partial(
                campaigns.campaign_contacts, campaign_id=campaign_id, after_id=after_id, limit=limit
            )
        )

    async def claim_contacts(
        self, campaign_id: str, *, now: float, limit: int, owner: str, lease_until: float
    ) -> list[Contact]:
        """Lease up to ``limit`` due pending contacts to ``owner`` in one statement."""
        return await self._atomic(
            functools.partial(
                campaigns.claim_contacts,
                campaign_id=campaign_id,
                now=now,
                limit=limit,
                owner=owner,
                lease_until=lease_until,
            )
        )

    async def release_contact(self, contact_id: int, *, next_at: float) -> None:
        """A leased contact back to pending at ``next_at``; StaleChange if it is not leased."""
        await self._atomic(
            functools.partial(campaigns.release_contact, contact_id=contact_id, next_at=next_at)
        )

    async def skip_contact(self, contact_id: int, *, outcome: str) -> None:
        """A leased contact to skipped; StaleChange if it is not leased."""
        await self._atomic(
            functools.partial(campaigns.skip_contact, contact_id=contact_id, outcome=outcome)
        )

    async def begin_attempt(self, attempt: Attempt) -> Attempt:
        """Insert the attempt, its contact calling; returns it with the store's id and seq.

        StaleChange if the contact is no longer leased by ``attempt.node``.
        """
        return await self._atomic(functools.partial(campaigns.begin_attempt, attempt=attempt))

    async def finish_attempt(
        self, attempt: Attempt, *, contact_state: ContactState, next_at: float
    ) -> None:
        """File the outcome of an open attempt and move its contact, atomically.

        A second finish of the same attempt raises StaleChange and changes nothing.
        """
        await self._atomic(
            functools.partial(
                campaigns.finish_attempt,
                attempt=attempt,
                contact_state=contact_state,
                next_at=next_at,
            )
        )

    async def open_attempts(self, *, node: str | None = None) -> list[Attempt]:
        """Attempts begun and never finished (of ``node``, or of all), oldest first."""
        return await self._atomic(functools.partial(campaigns.open_attempts, node=node))

    async def expire_leases(self, *, now: float) -> int:
        """Leased (not calling) contacts whose lease ran out back to pending; how many."""
        return await self._atomic(functools.partial(campaigns.expire_leases, now=now))

    async def renew_leases(self, *, owner: str, lease_until: float) -> None:
        """Extend every lease ``owner`` holds, leased and calling contacts alike."""
        await self._atomic(
            functools.partial(campaigns.renew_leases, owner=owner, lease_until=lease_until)
        )

    async def set_contacts_state(
        self,
        campaign_id: str,
        *,
        from_states: Sequence[str],
        to_state: ContactState,
        outcomes: Sequence[str] | None = None,
        reset_attempts: bool = False,
        next_at: float | None = None,
    ) -> int:
        """Move contacts in bulk (never calling ones); returns how many moved."""
        return await self._atomic(
            functools.partial(
                campaigns.set_contacts_state,
                campaign_id=campaign_id,
                from_states=from_states,
                to_state=to_state,
                outcomes=outcomes,
                reset_attempts=reset_attempts,
                next_at=next_at,
            )
        )

    async def campaign_stats(self, campaign_id: str) -> CampaignStats:
        """Contacts, attempts, grades and the node funnel of one campaign."""
        return await self._atomic(
            functools.partial(campaigns.campaign_stats, campaign_id=campaign_id)
        )

    async def contact_counts(self, campaign_id: str) -> Mapping[str, int]:
        """The campaign's contacts by state (from an index: cheap)."""
        return await self._atomic(
            functools.partial(campaigns.contact_counts, campaign_id=campaign_id)
        )

    async def next_due(self, campaign_id: str) -> float | None:
        """The earliest ``next_at`` of the campaign's pending contacts, or None."""
        return await self._atomic(functools.partial(campaigns.next_due, campaign_id=campaign_id))

    async def campaign_attempts(
        self, campaign_id: str, *, after_id: int = 0, limit: int = 1000
    ) -> list[tuple[Attempt, Contact]]:
        """The campaign's attempts above ``after_id`` with their contacts, in id order."""
        return await self._atomic(
            functools.partial(
                campaigns.campaign_attempts, campaign_id=campaign_id, after_id=after_id, limit=limit
            )
        )

    async def dnc_add(self, numbers: Sequence[str], *, reason: str, at: float) -> int:
        """List E.164 numbers as do-not-call (re-listing updates); returns how many are new."""
        return await self._atomic(
            functools.partial(campaigns.dnc_add, numbers=numbers, reason=reason, at=at)
        )

    async def dnc_remove(self, numbers: Sequence[str]) -> int:
        """Take numbers off the do-not-call list; returns how many were on it."""
        return await self._atomic(functools.partial(campaigns.dnc_remove, numbers=numbers))

    async def dnc_contains(self, number: str) -> bool:
        """Whether ``number`` is on the do-not-call list."""
        return await self._atomic(functools.partial(campaigns.dnc_contains, number=number))

    async def dnc_numbers(self) -> list[tuple[str, str, float]]:
        """Every do-not-call entry: (number, reason, added at), oldest first."""
        return await self._atomic(campaigns.dnc_numbers)

    async def answered_since(self, number: str, since: float) -> int:
        """Answered attempts to ``number`` since ``since``, in any campaign."""
        return await self._atomic(
            functools.partial(campaigns.answered_since, number=number, since=since)
        )

    async def audit(self, entry: AuditEntry) -> None:
        """Append one operator action to the audit log."""
        await self._atomic(functools.partial(campaigns.audit, entry=entry))

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]:
        """The latest ``limit`` operator actions, newest first."""
        return await self._atomic(functools.partial(campaigns.audit_entries, limit=limit))

    # ───────────────────────── waihu.api.CampaignStore: the outbox ─────────────────────────

    async def outbox_put(self, notifier: str, payload: Mapping[str, Any], *, due_at: float) -> int:
        """Queue a notification's JSON data for ``notifier``; returns the item's id."""
        return await self._atomic(
            functools.partial(
                campaigns.outbox_put, notifier=notifier, payload=payload, due_at=due_at
            )
        )

    async def outbox_due(self, notifier: str, *, now: float, limit: int) -> list[OutboxItem]:
        """Up to ``limit`` waiting items of ``notifier`` due by ``now``, oldest due first."""
        return await self._atomic(
            functools.partial(campaigns.outbox_due, notifier=notifier, now=now, limit=limit)
        )

    async def outbox_done(self, item_id: int, *, at: float) -> None:
        """Mark a waiting item done; ``StaleChange`` if it is unknown or already done."""
        await self._atomic(functools.partial(campaigns.outbox_done, item_id=item_id, at=at))

    async def outbox_retry(self, item_id: int, *, due_at: float, error: str) -> None:
        """Count a failed try and make the item due again; ``StaleChange`` as ``outbox_done``."""
        await self._atomic(
            functools.partial(campaigns.outbox_retry, item_id=item_id, due_at=due_at, error=error)
        )
