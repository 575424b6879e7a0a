"""The tables of the SQLite call and campaign store, and how a file is brought up to date.

A database carries its schema version in ``PRAGMA user_version``: 0 is a new
(empty) file, ``SCHEMA_VERSION`` is what this code writes. Each step in
``_MIGRATIONS`` takes a database from one version to the next inside one
transaction, so an interrupted upgrade leaves the file at the old version.
A step, once released, is never edited: files out there were made by it.

- v1: ``calls`` and their ``turns``.
- v2: calls get ``campaign_id``, ``outcome`` and their node-funnel columns;
  the campaign store (``campaigns``, ``contacts``, ``attempts``), compliance
  (``dnc``, ``audit``), the notification ``outbox`` and the daemons'
  heartbeats (``alive``). Every query the campaign store runs on a table that
  grows with the calls made has an index of its own; the partial ones hold
  only the few rows asked for (open attempts, leases, unfinished calls).
- v3: calls get ``grade_reason`` (the grading rule's reason) and
  ``script_hash`` (the content hash of the script version that spoke); NULL
  for calls filed before.
- v4: calls get ``direction``, ``transfer`` and ``media_quality``.
- v5: calls get ``answered_by`` (person, announcement, voicemail, unsure; NULL
  for a call never screened) and ``answered_by_evidence`` (why; empty before);
  turns get ``played_ms`` (how much of a robot line cut by barge-in was heard).

The v2 tables are plain SQL DDL, written to read the same on PostgreSQL where
that costs nothing (``REAL`` is ``double precision`` there, ``INTEGER PRIMARY
KEY AUTOINCREMENT`` an identity column). JSON columns are TEXT.

What it is not: row conversion (``rows``), the queries (``storage`` for calls,
``campaigns`` for the rest) or the provider that runs them (``storage``).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

__all__ = [
    "ALIVE",
    "ATTEMPTS",
    "AUDIT",
    "CALLS",
    "CAMPAIGNS",
    "CONTACTS",
    "DNC",
    "OUTBOX",
    "SCHEMA_VERSION",
    "TURNS",
    "UNFINISHED_CALLS",
    "SchemaTooNew",
    "ensure_schema",
]

SCHEMA_VERSION = 5  # bump with a new step in _MIGRATIONS

CALLS = "calls"
TURNS = "turns"
CAMPAIGNS = "campaigns"
CONTACTS = "contacts"
ATTEMPTS = "attempts"
DNC = "dnc"
AUDIT = "audit"
OUTBOX = "outbox"
ALIVE = "alive"

# Calls not seen to their end. A query must say exactly this for SQLite to use the
# calls_unfinished partial index; it is part of migration v2, so it never changes.
UNFINISHED_CALLS = "status IN ('dialing', 'ringing', 'answered')"


class SchemaTooNew(Exception):
    """The file was written by a newer waihu; this one must not touch it."""


def _create_v1(db: sqlite_utils.Database) -> None:
    db.table(CALLS).create(
        {
            "id": str,
            "number": str,
            "script": str,
            "trunk": str,
            "status": str,
            "created_at": float,
            "answered_at": float,
            "ended_at": float,
            "sip_status": int,
            "sip_reason": str,
            "hangup_by": str,
            "grade": str,
            "tags": str,  # JSON array of strings
            "recording": str,
            "error": str,
        },
        pk="id",
        not_null={"number", "script", "trunk", "status", "created_at", "tags"},
    )
    db.table(CALLS).create_index(["created_at"], index_name="calls_created_at")
    db.table(CALLS).create_index(["number"], index_name="calls_number")
    db.table(TURNS).create(
        {
            "call_id": str,
            "seq": int,  # position in the transcript, from 0
            "speaker": str,
            "text": str,
            "node": str,
            "intent": str,
            "confidence": float,
            "started_at": float,
            "ended_at": float,
            "interrupted": int,  # 0 or 1
        },
        pk=("call_id", "seq"),
        not_null={"speaker", "text", "node", "interrupted"},
        foreign_keys=[("call_id", CALLS, "id")],
    )


# Ids handed out to callers (contacts, attempts, outbox items) are AUTOINCREMENT: never
# reused, and increasing, so an export can page by "id > last seen".
_V2_STATEMENTS = (
    "ALTER TABLE calls ADD COLUMN campaign_id TEXT",  # None for a single call
    "ALTER TABLE calls ADD COLUMN outcome TEXT",  # one of waihu.api.OUTCOMES once over
    # A campaign's node funnel, kept per call by save_call from the turns it writes, so that
    # the figures for a million calls are one index scan rather than a join over their turns.
    # NULL for calls filed before v2 (which belong to no campaign).
    "ALTER TABLE calls ADD COLUMN robot_nodes TEXT",  # JSON array: nodes the robot spoke at
    "ALTER TABLE calls ADD COLUMN last_node TEXT",  # the node of the last turn
    "ALTER TABLE calls ADD COLUMN last_robot_node TEXT",  # the node of the robot's last turn
    "CREATE INDEX calls_campaign ON calls (campaign_id, created_at)",
    """
    CREATE INDEX calls_funnel
    ON calls (campaign_id, outcome, robot_nodes, last_node, last_robot_node, hangup_by)
    WHERE outcome = 'answered'
    """,
    # a handful among millions, listed at start-up to reconcile after a crash
    f"CREATE INDEX calls_unfinished ON calls (created_at) WHERE {UNFINISHED_CALLS}",
    """
    CREATE TABLE campaigns (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        reason TEXT,
        settings TEXT NOT NULL,  -- JSON object, kept as the core validated it
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL
    )
    """,
    """
    CREATE TABLE contacts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        campaign_id TEXT NOT NULL REFERENCES campaigns (id),
        number TEXT NOT NULL,  -- E.164
        variables TEXT NOT NULL,  -- JSON object of strings
        timezone TEXT,
        source_line INTEGER,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_at REAL NOT NULL,
        last_outcome TEXT,
        lease_owner TEXT,  -- set exactly while the state is leased or calling
        lease_until REAL,
        UNIQUE (campaign_id, number)
    )
    """,
    # the lead queue: a campaign's pending contacts in next_at order
    "CREATE INDEX contacts_queue ON contacts (campaign_id, state, next_at)",
    # a campaign's contacts in id order, a page at a time (clones, exports)
    "CREATE INDEX contacts_campaign ON contacts (campaign_id, id)",
    # Leases are few (the contacts in flight) among millions: partial indexes keep
    # expire_leases ("lease_until < ?") and renew_leases ("lease_owner = ?") from scanning.
    "CREATE INDEX contacts_lease_until ON contacts (lease_until) WHERE lease_until IS NOT NULL",
    "CREATE INDEX contacts_lease_owner ON contacts (lease_owner) WHERE lease_owner IS NOT NULL",
    """
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        campaign_id TEXT NOT NULL REFERENCES campaigns (id),
        contact_id INTEGER NOT NULL REFERENCES contacts (id),
        number TEXT NOT NULL,
        call_id TEXT NOT NULL UNIQUE,
        seq INTEGER NOT NULL,
        node TEXT NOT NULL,
        started_at REAL NOT NULL,
        script_hash TEXT NOT NULL,
        ended_at REAL,
        outcome TEXT,  -- NULL while the attempt is open
        sip_status INTEGER,
        grade TEXT,
        tags TEXT NOT NULL,  -- JSON array of strings
        note TEXT
    )
    """,
    "CREATE INDEX attempts_campaign ON attempts (campaign_id, id)",
    # campaign_stats: outcomes and grades counted from the index alone
    "CREATE INDEX attempts_outcomes ON attempts (campaign_id, outcome, grade)",
    # campaign_stats: the few attempts with a note (reconciled after a crash, refused…)
    "CREATE INDEX attempts_noted ON attempts (campaign_id) WHERE note IS NOT NULL",
    # the frequency cap: answered calls to one number since a time, across campaigns
    "CREATE INDEX attempts_number ON attempts (number, outcome, started_at)",
    # open attempts are a handful among millions; found at start-up to reconcile
    # (on id: the planner then takes it for "all open ones in id order" too)
    "CREATE INDEX attempts_open ON attempts (id) WHERE outcome IS NULL",
    """
    CREATE TABLE dnc (
        number TEXT PRIMARY KEY,  -- E.164
        reason TEXT NOT NULL,
        added_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        "user" TEXT NOT NULL,  -- quoted: a reserved word in PostgreSQL
        action TEXT NOT NULL,
        params TEXT NOT NULL  -- JSON object
    )
    """,
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        notifier TEXT NOT NULL,
        payload TEXT NOT NULL,  -- JSON object: a Notification
        due_at REAL NOT NULL,
        tries INTEGER NOT NULL,
        last_error TEXT,
        done_at REAL  -- NULL while waiting
    )
    """,
    "CREATE INDEX outbox_due ON outbox (notifier, done_at, due_at)",
    """
    CREATE TABLE alive (
        node TEXT PRIMARY KEY,
        at REAL NOT NULL
    )
    """,
)


def _campaigns_v2(db: sqlite_utils.Database) -> None:
    for statement in _V2_STATEMENTS:
        db.execute(statement)


_V3_STATEMENTS = (
    "ALTER TABLE calls ADD COLUMN grade_reason TEXT",  # why the grade, for people reading it
    "ALTER TABLE calls ADD COLUMN script_hash TEXT",  # sha256 of the script file that spoke
)


def _grade_reason_v3(db: sqlite_utils.Database) -> None:
    for statement in _V3_STATEMENTS:
        db.execute(statement)


_V4_STATEMENTS = (
    # inbound: the callee called us; existing rows are all outbound
    "ALTER TABLE calls ADD COLUMN direction TEXT NOT NULL DEFAULT 'outbound'",
    "ALTER TABLE calls ADD COLUMN transfer TEXT",  # JSON object: waihu.api.TransferResult
    "ALTER TABLE calls ADD COLUMN media_quality TEXT",  # JSON object: waihu.api.MediaQuality
)


def _direction_transfer_quality_v4(db: sqlite_utils.Database) -> None:
    for statement in _V4_STATEMENTS:
        db.execute(statement)


_V5_STATEMENTS = (
    "ALTER TABLE calls ADD COLUMN answered_by TEXT",  # waihu.api.AnsweredBy; NULL: not screened
    "ALTER TABLE calls ADD COLUMN answered_by_evidence TEXT NOT NULL DEFAULT ''",  # why
    "ALTER TABLE turns ADD COLUMN played_ms INTEGER",  # a cut robot line: ms heard; else NULL
)


def _answered_by_v5(db: sqlite_utils.Database) -> None:
    for statement in _V5_STATEMENTS:
        db.execute(statement)


# _MIGRATIONS[n] takes a database at version n to version n + 1
_MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _create_v1,
    _campaigns_v2,
    _grade_reason_v3,
    _direction_transfer_quality_v4,
    _answered_by_v5,
]
assert len(_MIGRATIONS) == SCHEMA_VERSION


def ensure_schema(db: sqlite_utils.Database) -> tuple[int, int]:
    """Create or upgrade the tables; returns (version found, version now).

    Raises SchemaTooNew when the file's version is above SCHEMA_VERSION.
    """
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {found} is newer than this waihu understands"
            f" ({SCHEMA_VERSION}); upgrade waihu or use another file"
        )
    for version in range(found, SCHEMA_VERSION):
        with db.atomic():
            _MIGRATIONS[version](db)
            # PRAGMA takes no parameters; the value is our own integer
            db.execute(f"PRAGMA user_version = {version + 1}")
    return found, SCHEMA_VERSION
