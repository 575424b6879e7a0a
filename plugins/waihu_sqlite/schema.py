"""The tables of the SQLite call store, and how a database file is brought up to date.

A database carries its schema version in ``PRAGMA user_version``: 0 is a new
(empty) file, ``SCHEMA_VERSION`` is what this code writes. Each step in
``_MIGRATIONS`` takes a database from one version to the next inside one
transaction, so an interrupted upgrade leaves the file at the old version.

What it is not: row conversion (``rows``) or the provider that runs queries
(``storage``).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

__all__ = ["SCHEMA_VERSION", "SchemaTooNew", "ensure_schema"]

SCHEMA_VERSION = 1  # bump with a new step in _MIGRATIONS

CALLS = "calls"
TURNS = "turns"


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


# _MIGRATIONS[n] takes a database at version n to version n + 1
_MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_create_v1]
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
