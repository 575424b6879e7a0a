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

import re
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import sqlite_utils

from waihu.api import (
    Attempt,
    AuditEntry,
    CampaignRow,
    CampaignStats,
    Contact,
    OutboxItem,
    ProviderError,
)

from .rows import (
    ATTEMPT_COLUMNS,
    CONTACT_COLUMNS,
    CONTACT_STATES,
    attempt_from_row,
    attempt_row,
    audit_from_row,
    audit_row,
    campaign_from_row,
    campaign_row,
    contact_from_row,
    contact_row,
    dump_json,
    funnel_nodes,
    outbox_from_row,
)

__all__ = [
    "CLAIM_SQL",
    "StaleChange",
    "add_contacts",
    "answered_since",
    "audit",
    "audit_entries",
    "begin_attempt",
    "campaign_attempts",
    "campaign_contacts",
    "campaign_numbers",
    "campaign_stats",
    "claim_contacts",
    "contact_counts",
    "create_campaign",
    "dnc_add",
    "dnc_contains",
    "dnc_numbers",
    "dnc_remove",
    "expire_leases",
    "finish_attempt",
    "get_campaign",
    "list_campaigns",
    "next_due",
    "open_attempts",
    "outbox_done",
    "outbox_due",
    "outbox_put",
    "outbox_retry",
    "release_contact",
    "renew_leases",
    "set_contacts_state",
    "skip_contact",
    "update_campaign",
]

# ITU-T E.164: "+", a country code that never starts with 0, at most 15 digits in all
E164 = re.compile(r"\+[1-9][0-9]{1,14}")

# Leased and calling are entered only through claim_contacts and begin_attempt, which set
# the lease; every other move goes to one of these and clears it.
SETTABLE_STATES = CONTACT_STATES - {"leased", "calling"}


class StaleChange(ProviderError):
    """A change found nothing in the state it expects; nothing was changed."""


# ───────────────────────── campaigns ─────────────────────────


def create_campaign(db: sqlite_utils.Database, row: CampaignRow) -> None:
    """Insert a campaign; ProviderError if its id or its name is taken."""
    values = campaign_row(row)
    try:
        _insert(db, "campaigns", values)
    except sqlite3.IntegrityError as exc:
        raise ProviderError(f"cannot create campaign {row.name!r} (id {row.id}): {exc}") from None


def update_campaign(db: sqlite_utils.Database, row: CampaignRow) -> None:
    """Write every field of an existing campaign; ProviderError if there is none or the
    new name is another campaign's."""
    values = campaign_row(row)
    del values["id"]
    assignments = ", ".join(f"{column} = ?" for column in values)
    try:
        changed = db.execute(
            f"UPDATE campaigns SET {assignments} WHERE id = ?", [*values.values(), row.id]
        ).rowcount
    except sqlite3.IntegrityError as exc:
        raise ProviderError(f"cannot rename campaign {row.id} to {row.name!r}: {exc}") from None
    if not changed:
        raise ProviderError(f"no campaign {row.id} to update")


def get_campaign(db: sqlite_utils.Database, campaign_id: str) -> CampaignRow | None:
    """The campaign with this id, or None."""
    rows = list(db.query("SELECT * FROM campaigns WHERE id = ?", [campaign_id]))
    return campaign_from_row(rows[0]) if rows else None


def list_campaigns(db: sqlite_utils.Database) -> list[CampaignRow]:
    """Every campaign, oldest first."""
    rows = db.query("SELECT * FROM campaigns ORDER BY created_at, id")
    return [campaign_from_row(row) for row in rows]


# ───────────────────────── contacts ─────────────────────────


def add_contacts(db: sqlite_utils.Database, contacts: Sequence[Contact]) -> int:
    """Insert new contacts (their ``id`` is ignored: the store assigns one); returns how many.

    A new contact holds no lease. ValueError names a contact whose number is not
    E.164 or whose state is leased or calling; ProviderError one already in its
    campaign (or of an unknown campaign). Either way nothing is inserted.
    """
    for contact in contacts:
        if not E164.fullmatch(contact.number):
            raise ValueError(f"contact {_named(contact)}: the number is not E.164 (+ and digits)")
        if contact.state not in SETTABLE_STATES:
            raise ValueError(f"contact {_named(contact)}: a new contact cannot be {contact.state}")
    for contact in contacts:
        values = contact_row(contact)
        values["lease_owner"] = values["lease_until"] = None
        try:
            _insert(db, "contacts", values)
        except sqlite3.IntegrityError as exc:
            raise ProviderError(f"contact {_named(contact)} not added: {exc}") from None
    return len(contacts)


def _named(contact: Contact) -> str:
    line = "" if contact.source_line is None else f" (line {contact.source_line})"
    return f"{contact.number}{line} of campaign {contact.campaign_id}"


def campaign_numbers(db: sqlite_utils.Database, campaign_id: str) -> set[str]:
    """Every number in the campaign, whatever its state."""
    sql = "SELECT number FROM contacts WHERE campaign_id = ?"
    return {number for (number,) in db.execute(sql, [campaign_id])}


def campaign_contacts(
    db: sqlite_utils.Database, campaign_id: str, *, after_id: int = 0, limit: int = 1000
) -> list[Contact]:
    """Up to ``limit`` of the campaign's contacts with ids above ``after_id``, in id order."""
    if limit <= 0:  # SQLite reads LIMIT -1 as "no limit"
        return []
    rows = db.query(
        "SELECT * FROM contacts WHERE campaign_id = ? AND id > ? ORDER BY id LIMIT ?",
        [campaign_id, after_id, limit],
    )
    return [contact_from_row(row) for row in rows]


def contact_counts(db: sqlite_utils.Database, campaign_id: str) -> dict[str, int]:
    """The campaign's contacts by state (states with none are left out)."""
    sql = "SELECT state, count(*) FROM contacts WHERE campaign_id = ? GROUP BY state"
    return dict(db.execute(sql, [campaign_id]).fetchall())


def next_due(db: sqlite_utils.Database, campaign_id: str) -> float | None:
    """The earliest ``next_at`` of the campaign's pending contacts, or None."""
    sql = "SELECT min(next_at) FROM contacts WHERE campaign_id = ? AND state = 'pending'"
    return db.execute(sql, [campaign_id]).fetchone()[0]


# ───────────────────────── the lead queue ─────────────────────────

# One statement: the subquery picks the due contacts, the UPDATE leases them, and no
# other writer can come between (SQLite has one writer at a time). PostgreSQL runs it
# as it stands with the rows locked and skipped by concurrent claimers:
#     ... ORDER BY next_at, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *
CLAIM_SQL = """
UPDATE contacts SET state = 'leased', lease_owner = ?, lease_until = ?
WHERE id IN (
    SELECT id FROM contacts
    WHERE campaign_id = ? AND state = 'pending' AND next_at <= ?
    ORDER BY next_at, id
    LIMIT ?
)
RETURNING *
"""


def claim_contacts(
    db: sqlite_utils.Database,
    campaign_id: str,
    *,
    now: float,
    limit: int,
    owner: str,
    lease_until: float,
) -> list[Contact]:
    """Lease up to ``limit`` pending contacts due by ``now`` to ``owner``, oldest due first.

    A contact is handed out once: the claim changes only rows still pending, in
    the same statement that chose them (``CLAIM_SQL``).
    """
    if limit <= 0:  # SQLite reads LIMIT -1 as "no limit"
        return []
    cursor = db.execute(CLAIM_SQL, [owner, lease_until, campaign_id, now, limit])
    names = [column[0] for column in cursor.description]
    # RETURNING gives the rows in no promised order
    claimed = [contact_from_row(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]
    return sorted(claimed, key=lambda contact: (contact.next_at, contact.id))


def release_contact(db: sqlite_utils.Database, contact_id: int, *, next_at: float) -> None:
    """A leased contact back to pending, due at ``next_at``; StaleChange if not leased."""
    changed = db.execute(
        "UPDATE contacts SET state = 'pending', next_at = ?, lease_owner = NULL,"
        " lease_until = NULL WHERE id = ? AND state = 'leased'",
        [next_at, contact_id],
    ).rowcount
    if not changed:
        raise StaleChange(f"contact {contact_id} {_contact_found(db, contact_id)}; not released")


def skip_contact(db: sqlite_utils.Database, contact_id: int, *, outcome: str) -> None:
    """A leased contact to skipped with ``outcome`` as its last; StaleChange if not leased."""
    changed = db.execute(
        "UPDATE contacts SET state = 'skipped', last_outcome = ?, lease_owner = NULL,"
        " lease_until = NULL WHERE id = ? AND state = 'leased'",
        [outcome, contact_id],
    ).rowcount
    if not changed:
        raise StaleChange(f"contact {contact_id} {_contact_found(db, contact_id)}; not skipped")


def begin_attempt(db: sqlite_utils.Database, attempt: Attempt) -> Attempt:
    """Insert the attempt and make its contact ``calling``; returns it with ``id`` and ``seq``.

    The contact must be leased by ``attempt.node`` (StaleChange otherwise: its
    lease expired and it went back to the queue, or another daemon holds it).
    ``seq`` is the contact's attempt count after this one, whatever the caller
    put there. ProviderError if ``call_id`` was used before.
    """
    if attempt.outcome is not None:
        raise ValueError(f"attempt for call {attempt.call_id} is begun with outcome set")
    counted = db.execute(
        "UPDATE contacts SET state = 'calling', attempts = attempts + 1"
        " WHERE id = ? AND campaign_id = ? AND state = 'leased' AND lease_owner = ?"
        " RETURNING attempts",
        [attempt.contact_id, attempt.campaign_id, attempt.node],
    ).fetchall()
    if not counted:
        found = _contact_found(db, attempt.contact_id)
        raise StaleChange(
            f"contact {attempt.contact_id} of campaign {attempt.campaign_id} {found},"
            f" not leased by {attempt.node}; not dialled"
        )
    begun = attrs.evolve(attempt, seq=counted[0][0])
    try:
        attempt_id = _insert(db, "attempts", attempt_row(begun))
    except sqlite3.IntegrityError as exc:
        raise ProviderError(f"attempt for call {attempt.call_id} not begun: {exc}") from None
    return attrs.evolve(begun, id=attempt_id)


def finish_attempt(
    db: sqlite_utils.Database, attempt: Attempt, *, contact_state: str, next_at: float
) -> None:
    """File an open attempt's outcome and move its contact from calling to ``contact_state``.

    Only an attempt still open is finished: a second finish of the same attempt
    raises StaleChange and changes nothing. The contact is the one the stored
    attempt names (not ``attempt.contact_id``); it must be calling, else
    StaleChange and the attempt stays open too.
    """
    if attempt.outcome is None or attempt.ended_at is None:
        raise ValueError(f"attempt {attempt.id} is finished without an outcome and end time")
    if contact_state not in SETTABLE_STATES:
        raise ValueError(
            f"attempt {attempt.id}: its contact cannot move to {contact_state!r}"
            f" (one of {', '.join(sorted(SETTABLE_STATES))})"
        )
    finished = db.execute(
        "UPDATE attempts SET ended_at = ?, outcome = ?, sip_status = ?, grade = ?, tags = ?,"
        " note = ? WHERE id = ? AND outcome IS NULL RETURNING contact_id",
        [
            attempt.ended_at,
            attempt.outcome,
            attempt.sip_status,
            attempt.grade,
            dump_json(list(attempt.tags)),
            attempt.note,
            attempt.id,
        ],
    ).fetchall()
    if not finished:
        row = db.execute("SELECT outcome FROM attempts WHERE id = ?", [attempt.id]).fetchone()
        found = "does not exist" if row is None else f"was already finished ({row[0]})"
        raise StaleChange(f"attempt {attempt.id} (call {attempt.call_id}) {found}; left as it was")
    contact_id = finished[0][0]
    moved = db.execute(
        "UPDATE contacts SET state = ?, next_at = ?, last_outcome = ?, lease_owner = NULL,"
        " lease_until = NULL WHERE id = ? AND state = 'calling'",
        [contact_state, next_at, attempt.outcome, contact_id],
    ).rowcount
    if not moved:
        found = _contact_found(db, contact_id)
        raise StaleChange(
            f"attempt {attempt.id}: its contact {contact_id} {found}, not calling; left open"
        )


def open_attempts(db: sqlite_utils.Database, *, node: str | None = None) -> list[Attempt]:
    """Attempts begun and never finished, of ``node`` or of every node, oldest first."""
    # "outcome IS NULL" as the attempts_open partial index says it, so that it is used
    if node is None:
        rows = db.query("SELECT * FROM attempts WHERE outcome IS NULL ORDER BY id")
    else:
        sql = "SELECT * FROM attempts WHERE outcome IS NULL AND node = ? ORDER BY id"
        rows = db.query(sql, [node])
    return [attempt_from_row(row) for row in rows]


def expire_leases(db: sqlite_utils.Database, *, now: float) -> int:
    """Leased contacts whose lease ran out before ``now`` back to pending; returns how many.

    Calling contacts are left alone: their open attempt is reconciled by the
    daemon that began it (``open_attempts`` at its start-up).
    """
    return db.execute(
        "UPDATE contacts SET state = 'pending', lease_owner = NULL, lease_until = NULL"
        " WHERE state = 'leased' AND lease_until < ?",
        [now],
    ).rowcount


def renew_leases(db: sqlite_utils.Database, *, owner: str, lease_until: float) -> None:
    """Extend to ``lease_until`` every lease ``owner`` holds (leased and calling contacts)."""
    db.execute(
        "UPDATE contacts SET lease_until = ?"
        " WHERE lease_owner = ? AND state IN ('leased', 'calling')",
        [lease_until, owner],
    )


def set_contacts_state(
    db: sqlite_utils.Database,
    campaign_id: str,
    *,
    from_states: Sequence[str],
    to_state: str,
    outcomes: Sequence[str] | None = None,
    reset_attempts: bool = False,
    next_at: float | None = None,
) -> int:
    """Move the campaign's contacts in ``from_states`` (and, if given, whose last outcome is
    one of ``outcomes``) to ``to_state``, clearing any lease; returns how many moved.

    ``reset_attempts`` counts their attempts afresh (the attempt rows stay);
    ``next_at`` makes them due then. Calling contacts cannot be moved (their
    attempt is open), nor contacts moved to leased or calling: ValueError.
    """
    unknown = sorted(set(from_states) - CONTACT_STATES)
    if unknown:
        raise ValueError(f"unknown contact state(s): {', '.join(unknown)}")
    if "calling" in from_states:
        raise ValueError("calling contacts have an open attempt: finish it before moving them")
    if to_state not in SETTABLE_STATES:
        raise ValueError(f"contacts cannot be moved to {to_state!r}")
    if not from_states or (outcomes is not None and not outcomes):
        return 0  # nothing can match (and "IN ()" is not SQL everywhere)
    assignments = ["state = ?", "lease_owner = NULL", "lease_until = NULL"]
    params: list[Any] = [to_state]
    if reset_attempts:
        assignments.append("attempts = 0")
    if next_at is not None:
        assignments.append("next_at = ?")
        params.append(next_at)
    where = f"campaign_id = ? AND state IN ({_marks(from_states)})"
    params += [campaign_id, *from_states]
    if outcomes is not None:
        where += f" AND last_outcome IN ({_marks(outcomes)})"
        params += outcomes
    sql = f"UPDATE contacts SET {', '.join(assignments)} WHERE {where}"
    return db.execute(sql, params).rowcount


def _contact_found(db: sqlite_utils.Database, contact_id: int) -> str:
    row = db.execute(
        "SELECT state, lease_owner FROM contacts WHERE id = ?", [contact_id]
    ).fetchone()
    if row is None:
        return "does not exist"
    state, owner = row
    return f"is {state}" + (f" by {owner}" if owner else "")


# ───────────────────────── figures and exports ─────────────────────────


def campaign_stats(db: sqlite_utils.Database, campaign_id: str) -> CampaignStats:
    """Contacts by state; attempts by outcome (open ones count only in ``attempts``);
    graded answered attempts by grade; reconciled attempts; the node funnel of answered
    calls. Each is read from an index of its own (see ``schema``)."""
    outcomes: Counter[str] = Counter()
    grades: Counter[str] = Counter()
    total = 0
    summary = db.execute(
        "SELECT outcome, grade, count(*) FROM attempts WHERE campaign_id = ? GROUP BY 1, 2",
        [campaign_id],
    )
    for outcome, grade, count in summary:
        total += count
        if outcome is not None:
            outcomes[outcome] += count
        if outcome == "answered" and grade is not None:
            grades[grade] += count
    # "note IS NOT NULL" as the attempts_noted partial index says it, so that it is used
    (reconciled,) = db.execute(
        "SELECT count(*) FROM attempts WHERE campaign_id = ? AND note IS NOT NULL"
        " AND substr(note, 1, 10) = 'reconciled'",
        [campaign_id],
    ).fetchone()
    reached: Counter[str] = Counter()
    last_node: Counter[str] = Counter()
    hangups: Counter[str] = Counter()
    # one row per distinct path through the script: a few hundred, not a row per call
    paths = db.execute(
        "SELECT robot_nodes, last_node, last_robot_node, hangup_by, count(*) FROM calls"
        " WHERE campaign_id = ? AND outcome = 'answered' GROUP BY 1, 2, 3, 4",
        [campaign_id],
    )
    for robot_nodes, last, last_robot, hangup_by, count in paths:
        for node in funnel_nodes(robot_nodes, campaign_id=campaign_id):
            reached[node] += count
        if last is not None:
            last_node[last] += count
        if hangup_by == "callee" and last_robot is not None:
            hangups[last_robot] += count
    return CampaignStats(
        contacts=contact_counts(db, campaign_id),
        outcomes=dict(outcomes),
        grades=dict(grades),
        reached=dict(reached),
        last_node=dict(last_node),
        hangups=dict(hangups),
        attempts=total,
        reconciled=reconciled,
    )


_EXPORT_SQL = (
    "SELECT "
    + ", ".join(f"a.{column}" for column in ATTEMPT_COLUMNS)
    + ", "
    + ", ".join(f"c.{column}" for column in CONTACT_COLUMNS)
    + " FROM attempts a JOIN contacts c ON c.id = a.contact_id"
    " WHERE a.campaign_id = ? AND a.id > ? ORDER BY a.id LIMIT ?"
)


def campaign_attempts(
    db: sqlite_utils.Database, campaign_id: str, *, after_id: int = 0, limit: int = 1000
) -> list[tuple[Attempt, Contact]]:
    """Up to ``limit`` of the campaign's attempts with ids above ``after_id``, in id order,
    each with its contact as it is now."""
    if limit <= 0:  # SQLite reads LIMIT -1 as "no limit"
        return []
    split = len(ATTEMPT_COLUMNS)  # the attempt's columns, then the contact's
    return [
        (
            attempt_from_row(dict(zip(ATTEMPT_COLUMNS, row[:split], strict=True))),
            contact_from_row(dict(zip(CONTACT_COLUMNS, row[split:], strict=True))),
        )
        for row in db.execute(_EXPORT_SQL, [campaign_id, after_id, limit])
    ]


# ───────────────────────── compliance ─────────────────────────


def dnc_add(db: sqlite_utils.Database, numbers: Sequence[str], *, reason: str, at: float) -> int:
    """List E.164 numbers as do-not-call; returns how many were not listed before.

    A number already listed takes the new reason and time (the audit log keeps
    the history). ValueError names a number that is not E.164.
    """
    unique = list(dict.fromkeys(numbers))
    for number in unique:
        if not E164.fullmatch(number):
            raise ValueError(f"do-not-call: {number!r} is not an E.164 number (+ and digits)")
    # the update first, so that the insert's count is the new numbers alone
    db.conn.executemany(
        "UPDATE dnc SET reason = ?, added_at = ? WHERE number = ?",
        [(reason, at, number) for number in unique],
    )
    return db.conn.executemany(
        "INSERT INTO dnc (number, reason, added_at) VALUES (?, ?, ?)"
        " ON CONFLICT (number) DO NOTHING",
        [(number, reason, at) for number in unique],
    ).rowcount


def dnc_remove(db: sqlite_utils.Database, numbers: Sequence[str]) -> int:
    """Take numbers off the do-not-call list; returns how many were on it."""
    unique = dict.fromkeys(numbers)
    return db.conn.executemany(
        "DELETE FROM dnc WHERE number = ?", [(number,) for number in unique]
    ).rowcount


def dnc_contains(db: sqlite_utils.Database, number: str) -> bool:
    """Whether ``number`` is on the do-not-call list."""
    return db.execute("SELECT 1 FROM dnc WHERE number = ?", [number]).fetchone() is not None


def dnc_numbers(db: sqlite_utils.Database) -> list[tuple[str, str, float]]:
    """Every entry as (number, reason, added at), oldest first."""
    return db.execute(
        "SELECT number, reason, added_at FROM dnc ORDER BY added_at, number"
    ).fetchall()


def answered_since(db: sqlite_utils.Database, number: str, since: float) -> int:
    """Answered attempts to ``number`` started at or after ``since``, in any campaign."""
    return db.execute(
        "SELECT count(*) FROM attempts WHERE number = ? AND outcome = 'answered'"
        " AND started_at >= ?",
        [number, since],
    ).fetchone()[0]


def audit(db: sqlite_utils.Database, entry: AuditEntry) -> None:
    """Append one operator action to the audit log."""
    _insert(db, "audit", audit_row(entry))


def audit_entries(db: sqlite_utils.Database, *, limit: int = 100) -> list[AuditEntry]:
    """The latest ``limit`` operator actions, newest first."""
    if limit <= 0:  # SQLite reads LIMIT -1 as "no limit"
        return []
    rows = db.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", [limit])
    return [audit_from_row(row) for row in rows]


# ───────────────────────── the notification outbox ─────────────────────────


def outbox_put(
    db: sqlite_utils.Database, notifier: str, payload: Mapping[str, Any], *, due_at: float
) -> int:
    """Queue ``payload`` (JSON data) for ``notifier``, due at ``due_at``; returns its id."""
    values = {"notifier": notifier, "payload": dump_json(dict(payload)), "due_at": due_at}
    return _insert(db, "outbox", {**values, "tries": 0})


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


def _insert(db: sqlite_utils.Database, table: str, values: Mapping[str, Any]) -> Any:
    """Insert one row; returns its ``id``."""
    columns = ", ".join(f'"{column}"' for column in values)  # audit has a column named user
    sql = f"INSERT INTO {table} ({columns}) VALUES ({_marks(values)}) RETURNING id"
    return db.execute(sql, list(values.values())).fetchall()[0][0]


def _marks(values: Sequence[Any] | Mapping[str, Any]) -> str:
    return ", ".join("?" * len(values))
