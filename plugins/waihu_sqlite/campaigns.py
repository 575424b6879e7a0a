"""The campaign store's queries: campaigns, the lead queue, attempts, compliance, the outbox.

Each function here is the body of one ``waihu.api.CampaignStore`` method. It is
synchronous and takes the sqlite-utils database *inside the one transaction*
that the provider (``storage.SqliteStorage``) opens around it in its storage
thread: the provider commits when the function returns and rolls back if it
raises, so every method is all or nothing.

The lead queue keeps no state in Python. Every change is one statement whose
WHERE clause checks the state the change expects — a claim takes only pending
contacts, ``begin_attempt`` only a contact leased by the dialling node,
``finish_attempt`` only an open attempt — so two daemons sharing a store can
never both win, and the loser is told. Nothing is read first and written
after. The SQL is meant to run on PostgreSQL as it stands; where it cannot,
the PostgreSQL form is written beside it.

Error handling: a change that finds nothing in the state it expects (a second
``finish_attempt`` of one attempt, ``begin_attempt`` on a contact whose lease
was lost, ``outbox_done`` of an unknown item…) raises ``StaleChange``, a
``ProviderError`` saying what it found instead, and changes nothing. Bad
arguments (a state outside ``ContactState``, a number that is not E.164)
raise ``ValueError`` before any SQL runs. ``sqlite3`` errors pass through to
the provider, which names the file. A stored row that cannot be read back
raises ``BadRow`` naming table, row and column.

What it is not: the policy (which contact to dial when, how often to retry:
``waihu.campaign`` decides, the store commits), or the call records (the
provider's own ``calls`` queries).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlite_utils

from waihu.api import OutboxItem, ProviderError

from .rows import dump_json, outbox_from_row

__all__ = [
    "StaleChange",
    "outbox_done",
    "outbox_due",
    "outbox_put",
    "outbox_retry",
]


class StaleChange(ProviderError):
    """A change found nothing in the state it expects; nothing was changed."""


# ───────────────────────── the notification outbox ─────────────────────────


def outbox_put(
    db: sqlite_utils.Database, notifier: str, payload: Mapping[str, Any], *, due_at: float
) -> int:
    """Queue ``payload`` (JSON data) for ``notifier``, due at ``due_at``; returns its id."""
    (item_id,) = db.execute(
        "INSERT INTO outbox (notifier, payload, due_at, tries) VALUES (?, ?, ?, 0) RETURNING id",
        [notifier, dump_json(dict(payload)), due_at],
    ).fetchone()
    return item_id


def outbox_due(
    db: sqlite_utils.Database, notifier: str, *, now: float, limit: int
) -> list[OutboxItem]:
    """The items of ``notifier`` not yet done and due by ``now``, oldest due first."""
    if limit <= 0:  # SQLite reads LIMIT -1 as "no limit"
        return []
    rows = db.query(
        "SELECT * FROM outbox WHERE notifier = ? AND done_at IS NULL AND due_at <= ?"
        " ORDER BY due_at, id LIMIT ?",
        [notifier, now, limit],
    )
    return [outbox_from_row(row) for row in rows]


def outbox_done(db: sqlite_utils.Database, item_id: int, *, at: float) -> None:
    """Mark an item delivered (or given up) at ``at``; StaleChange if it was not waiting."""
    changed = db.execute(
        "UPDATE outbox SET done_at = ? WHERE id = ? AND done_at IS NULL", [at, item_id]
    ).rowcount
    if not changed:
        raise StaleChange(f"outbox item {item_id} {_outbox_found(db, item_id)}; left as it was")


def outbox_retry(db: sqlite_utils.Database, item_id: int, *, due_at: float, error: str) -> None:
    """Count a failed try of a waiting item and make it due again at ``due_at``."""
    changed = db.execute(
        "UPDATE outbox SET tries = tries + 1, due_at = ?, last_error = ?"
        " WHERE id = ? AND done_at IS NULL",
        [due_at, error, item_id],
    ).rowcount
    if not changed:
        raise StaleChange(f"outbox item {item_id} {_outbox_found(db, item_id)}; left as it was")


def _outbox_found(db: sqlite_utils.Database, item_id: int) -> str:
    row = db.execute("SELECT done_at FROM outbox WHERE id = ?", [item_id]).fetchone()
    return "does not exist" if row is None else f"was already done at {row[0]}"
