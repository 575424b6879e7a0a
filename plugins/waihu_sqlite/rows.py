"""Converting waihu's value types to and from table rows.

``CallRecord``/``Turn`` ↔ ``calls``/``turns``; ``CampaignRow``, ``Contact``,
``Attempt``, ``OutboxItem`` and ``AuditEntry`` ↔ ``campaigns``, ``contacts``,
``attempts``, ``outbox`` and ``audit``.

Written by hand rather than with cattrs: the mapping is flat, and reading a row
back checks what a hand-edited or damaged file could contain (a status or state
outside the known set, tags that are not a JSON list of strings, settings that
are not a JSON object), naming the table, the row and the column in the error.
JSON is written with ``ensure_ascii=False`` so that Korean/Chinese text stays
readable in the sqlite3 shell.

What it is not: the SQL (``storage``) or the table definitions (``schema``).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from waihu.api import (
    ANSWERED_BY,
    Attempt,
    AuditEntry,
    CallRecord,
    CallStatus,
    CampaignRow,
    CampaignState,
    Contact,
    ContactState,
    Direction,
    HangupSide,
    MediaQuality,
    OutboxItem,
    TransferResult,
    Turn,
)

__all__ = [
    "ATTEMPT_COLUMNS",
    "CONTACT_COLUMNS",
    "CONTACT_STATES",
    "BadRow",
    "attempt_from_row",
    "attempt_row",
    "audit_from_row",
    "audit_row",
    "call_row",
    "campaign_from_row",
    "campaign_row",
    "contact_from_row",
    "contact_row",
    "dump_json",
    "funnel_columns",
    "funnel_nodes",
    "outbox_from_row",
    "record_from_rows",
    "turn_rows",
]

_STATUSES = frozenset(typing.get_args(CallStatus))
_DIRECTIONS = frozenset(typing.get_args(Direction))
_V = typing.TypeVar("_V")
_SIDES = frozenset(typing.get_args(HangupSide))
_CAMPAIGN_STATES = frozenset(typing.get_args(CampaignState))
CONTACT_STATES = frozenset(typing.get_args(ContactState))

# every column of the two tables, in table order (for a join that must tell them apart)
CONTACT_COLUMNS = (
    "id",
    "campaign_id",
    "number",
    "variables",
    "timezone",
    "source_line",
    "state",
    "attempts",
    "next_at",
    "last_outcome",
    "lease_owner",
    "lease_until",
)
ATTEMPT_COLUMNS = (
    "id",
    "campaign_id",
    "contact_id",
    "number",
    "call_id",
    "seq",
    "node",
    "started_at",
    "script_hash",
    "ended_at",
    "outcome",
    "sip_status",
    "grade",
    "tags",
    "note",
)


class BadRow(ValueError):
    """A stored row cannot be read back as a record; the message names row and column."""


def call_row(record: CallRecord) -> dict[str, Any]:
    """The ``calls`` row of a record (its turns go to ``turn_rows``)."""
    return {
        "id": record.id,
        "number": record.number,
        "script": record.script,
        "trunk": record.trunk,
        "status": record.status,
        "created_at": record.created_at,
        "answered_at": record.answered_at,
        "ended_at": record.ended_at,
        "sip_status": record.sip_status,
        "sip_reason": record.sip_reason,
        "hangup_by": record.hangup_by,
        "grade": record.grade,
        "tags": dump_json(list(record.tags)),
        "recording": record.recording,
        "error": record.error,
        "campaign_id": record.campaign_id,
        "outcome": record.outcome,
        "grade_reason": record.grade_reason,
        "script_hash": record.script_hash,
        "direction": record.direction,
        "transfer": None if record.transfer is None else dump_json(attrs.asdict(record.transfer)),
        "media_quality": (
            None if record.media_quality is None else dump_json(attrs.asdict(record.media_quality))
        ),
        "answered_by": record.answered_by,
        "answered_by_evidence": record.answered_by_evidence,
        **funnel_columns(record.turns),
    }


def funnel_columns(turns: Sequence[Turn]) -> dict[str, Any]:
    """What a campaign's node funnel needs of one call's transcript (see ``schema``): the
    nodes the robot spoke at (each once, in order), and the node of the last turn and of
    the robot's last turn."""
    robot = [turn.node for turn in turns if turn.speaker == "robot"]
    return {
        "robot_nodes": dump_json(list(dict.fromkeys(robot))),
        "last_node": turns[-1].node if turns else None,
        "last_robot_node": robot[-1] if robot else None,
    }


def turn_rows(record: CallRecord) -> list[dict[str, Any]]:
    """The ``turns`` rows of a record, numbered from 0 in transcript order."""
    return [
        {
            "call_id": record.id,
            "seq": seq,
            "speaker": turn.speaker,
            "text": turn.text,
            "node": turn.node,
            "intent": turn.intent,
            "confidence": turn.confidence,
            "started_at": turn.started_at,
            "ended_at": turn.ended_at,
            "interrupted": int(turn.interrupted),
            "played_ms": turn.played_ms,
        }
        for seq, turn in enumerate(record.turns)
    ]


def record_from_rows(call: Mapping[str, Any], turns: Iterable[Mapping[str, Any]]) -> CallRecord:
    """Rebuild a record from its ``calls`` row and its ``turns`` rows (in ``seq`` order).

    Raises BadRow naming the call, the column and what is wrong with it.
    """
    call_id = call["id"]
    bad = _bad_factory("calls", call_id)
    if call["status"] not in _STATUSES:
        raise bad("status", f"is {call['status']!r}, not one of {', '.join(sorted(_STATUSES))}")
    if call["direction"] not in _DIRECTIONS:
        raise bad("direction", f"is {call['direction']!r}, not outbound or inbound")
    if call["answered_by"] is not None and call["answered_by"] not in ANSWERED_BY:
        raise bad("answered_by", f"is {call['answered_by']!r}, not one of {', '.join(ANSWERED_BY)}")
    if call["hangup_by"] is not None and call["hangup_by"] not in _SIDES:
        raise bad("hangup_by", f"is {call['hangup_by']!r}, not robot or callee")
    tags = _string_list(call["tags"], bad)
    return CallRecord(
        id=call_id,
        number=call["number"],
        script=call["script"],
        trunk=call["trunk"],
        status=call["status"],
        created_at=call["created_at"],
        answered_at=call["answered_at"],
        ended_at=call["ended_at"],
        sip_status=call["sip_status"],
        sip_reason=call["sip_reason"],
        hangup_by=call["hangup_by"],
        grade=call["grade"],
        tags=tags,
        turns=[_turn(call_id, row) for row in turns],
        recording=call["recording"],
        error=call["error"],
        campaign_id=call["campaign_id"],
        outcome=call["outcome"],
        grade_reason=call["grade_reason"],
        script_hash=call["script_hash"],
        direction=call["direction"],
        transfer=_value_object(call["transfer"], TransferResult, "transfer", bad),
        media_quality=_value_object(call["media_quality"], MediaQuality, "media_quality", bad),
        answered_by=call["answered_by"],
        answered_by_evidence=call["answered_by_evidence"],
    )


def _value_object(text: str | None, kind: type[_V], column: str, bad: Any) -> _V | None:
    """A JSON object column read back as the attrs value ``kind`` (None stays None)."""
    if text is None:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return kind(**data)
    except (ValueError, TypeError) as exc:
        raise bad(column, f"is not a {kind.__name__} ({exc})") from None


def _turn(call_id: str, row: Mapping[str, Any]) -> Turn:
    if row["speaker"] not in ("robot", "callee"):
        raise BadRow(
            f"turns row ({call_id!r}, {row['seq']}): speaker is {row['speaker']!r},"
            " not robot or callee"
        )
    return Turn(
        speaker=row["speaker"],
        text=row["text"],
        node=row["node"],
        intent=row["intent"],
        confidence=row["confidence"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        interrupted=bool(row["interrupted"]),
        played_ms=row["played_ms"],
    )


# ───────────────────────── campaigns ─────────────────────────


def dump_json(value: Any) -> str:
    """``value`` as the JSON text a column holds."""
    return json.dumps(value, ensure_ascii=False)


def campaign_row(row: CampaignRow) -> dict[str, Any]:
    """The ``campaigns`` row of a campaign."""
    return {
        "id": row.id,
        "name": row.name,
        "state": row.state,
        "reason": row.reason,
        "settings": dump_json(dict(row.settings)),
        "created_at": row.created_at,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
    }


def campaign_from_row(row: Mapping[str, Any]) -> CampaignRow:
    """Read a ``campaigns`` row back; BadRow names the row and column."""
    bad = _bad_factory("campaigns", row["id"])
    if row["state"] not in _CAMPAIGN_STATES:
        raise bad("state", f"is {row['state']!r}, not one of {', '.join(sorted(_CAMPAIGN_STATES))}")
    return CampaignRow(
        id=row["id"],
        name=row["name"],
        state=row["state"],
        reason=row["reason"],
        settings=_object(row["settings"], bad, "settings"),
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
    )


def contact_row(contact: Contact) -> dict[str, Any]:
    """The ``contacts`` row of a contact, without its id (the store assigns it)."""
    return {
        "campaign_id": contact.campaign_id,
        "number": contact.number,
        "variables": dump_json(dict(contact.variables)),
        "timezone": contact.timezone,
        "source_line": contact.source_line,
        "state": contact.state,
        "attempts": contact.attempts,
        "next_at": contact.next_at,
        "last_outcome": contact.last_outcome,
        "lease_owner": contact.lease_owner,
        "lease_until": contact.lease_until,
    }


def contact_from_row(row: Mapping[str, Any]) -> Contact:
    """Read a ``contacts`` row back; BadRow names the row and column."""
    bad = _bad_factory("contacts", row["id"])
    if row["state"] not in CONTACT_STATES:
        raise bad("state", f"is {row['state']!r}, not one of {', '.join(sorted(CONTACT_STATES))}")
    variables = _object(row["variables"], bad, "variables")
    if not all(isinstance(v, str) for v in variables.values()):
        raise bad("variables", "is not a JSON object of strings")
    return Contact(
        id=row["id"],
        campaign_id=row["campaign_id"],
        number=row["number"],
        variables=variables,
        timezone=row["timezone"],
        source_line=row["source_line"],
        state=row["state"],
        attempts=row["attempts"],
        next_at=row["next_at"],
        last_outcome=row["last_outcome"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
    )


def attempt_row(attempt: Attempt) -> dict[str, Any]:
    """The ``attempts`` row of an attempt, without its id (the store assigns it)."""
    return {
        "campaign_id": attempt.campaign_id,
        "contact_id": attempt.contact_id,
        "number": attempt.number,
        "call_id": attempt.call_id,
        "seq": attempt.seq,
        "node": attempt.node,
        "started_at": attempt.started_at,
        "script_hash": attempt.script_hash,
        "ended_at": attempt.ended_at,
        "outcome": attempt.outcome,
        "sip_status": attempt.sip_status,
        "grade": attempt.grade,
        "tags": dump_json(list(attempt.tags)),
        "note": attempt.note,
    }


def attempt_from_row(row: Mapping[str, Any]) -> Attempt:
    """Read an ``attempts`` row back; BadRow names the row and column."""
    bad = _bad_factory("attempts", row["id"])
    return Attempt(
        id=row["id"],
        campaign_id=row["campaign_id"],
        contact_id=row["contact_id"],
        number=row["number"],
        call_id=row["call_id"],
        seq=row["seq"],
        node=row["node"],
        started_at=row["started_at"],
        script_hash=row["script_hash"],
        ended_at=row["ended_at"],
        outcome=row["outcome"],
        sip_status=row["sip_status"],
        grade=row["grade"],
        tags=tuple(_string_list(row["tags"], bad)),
        note=row["note"],
    )


def funnel_nodes(text: Any, *, campaign_id: str) -> list[str]:
    """A ``robot_nodes`` value of the campaign's calls read back (an empty list for NULL)."""

    def bad(column: str, problem: str) -> BadRow:
        return BadRow(f"calls of campaign {campaign_id!r}: {column} {problem}")

    return [] if text is None else _string_list(text, bad, "robot_nodes")


def outbox_from_row(row: Mapping[str, Any]) -> OutboxItem:
    """Read an ``outbox`` row back; BadRow names the row and column."""
    return OutboxItem(
        id=row["id"],
        notifier=row["notifier"],
        payload=_object(row["payload"], _bad_factory("outbox", row["id"]), "payload"),
        due_at=row["due_at"],
        tries=row["tries"],
        last_error=row["last_error"],
    )


def audit_row(entry: AuditEntry) -> dict[str, Any]:
    """The ``audit`` row of an operator action."""
    return {
        "at": entry.at,
        "user": entry.user,
        "action": entry.action,
        "params": dump_json(dict(entry.params)),
    }


def audit_from_row(row: Mapping[str, Any]) -> AuditEntry:
    """Read an ``audit`` row back; BadRow names the row and column."""
    return AuditEntry(
        at=row["at"],
        user=row["user"],
        action=row["action"],
        params=_object(row["params"], _bad_factory("audit", row["id"]), "params"),
    )


# ───────────────────────── JSON columns ─────────────────────────

BadFactory = typing.Callable[[str, str], BadRow]


def _bad_factory(table: str, key: object) -> BadFactory:
    def bad(column: str, problem: str) -> BadRow:
        return BadRow(f"{table} row {key!r}: {column} {problem}")

    return bad


def _load(text: Any, bad: BadFactory, column: str) -> Any:
    # most tags and variables are empty: skip the parser for them (exports read millions)
    if text == "[]":
        return []
    if text == "{}":
        return {}
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise bad(column, f"is not JSON ({exc})") from None


def _string_list(text: Any, bad: BadFactory, column: str = "tags") -> list[str]:
    value = _load(text, bad, column)
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise bad(column, "is not a JSON list of strings")
    return value


def _object(text: Any, bad: BadFactory, column: str) -> dict[str, Any]:
    value = _load(text, bad, column)
    if not isinstance(value, dict):
        raise bad(column, "is not a JSON object")
    return value
