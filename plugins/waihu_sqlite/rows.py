"""Converting ``CallRecord``/``Turn`` to and from rows of the ``calls`` and ``turns`` tables.

Written by hand rather than with cattrs: the mapping is flat, and reading a row
back checks what a hand-edited or damaged file could contain (a status outside
the known set, tags that are not a JSON list of strings), naming the row and
the column in the error.

What it is not: the SQL (``storage``) or the table definitions (``schema``).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from waihu.api import CallRecord, CallStatus, HangupSide, Turn

__all__ = ["BadRow", "call_row", "record_from_rows", "turn_rows"]

_STATUSES = frozenset(typing.get_args(CallStatus))
_SIDES = frozenset(typing.get_args(HangupSide))


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
        # ensure_ascii=False keeps Korean/Chinese tags readable in the sqlite3 shell
        "tags": json.dumps(list(record.tags), ensure_ascii=False),
        "recording": record.recording,
        "error": record.error,
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
        }
        for seq, turn in enumerate(record.turns)
    ]


def record_from_rows(call: Mapping[str, Any], turns: Iterable[Mapping[str, Any]]) -> CallRecord:
    """Rebuild a record from its ``calls`` row and its ``turns`` rows (in ``seq`` order).

    Raises BadRow naming the call, the column and what is wrong with it.
    """
    call_id = call["id"]

    def bad(column: str, problem: str) -> BadRow:
        return BadRow(f"calls row {call_id!r}: {column} {problem}")

    if call["status"] not in _STATUSES:
        raise bad("status", f"is {call['status']!r}, not one of {', '.join(sorted(_STATUSES))}")
    if call["hangup_by"] is not None and call["hangup_by"] not in _SIDES:
        raise bad("hangup_by", f"is {call['hangup_by']!r}, not robot or callee")
    try:
        tags = json.loads(call["tags"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise bad("tags", f"is not JSON ({exc})") from None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise bad("tags", "is not a JSON list of strings")
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
    )


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
    )
