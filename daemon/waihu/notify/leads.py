"""Hot leads: which finished calls people must hear of, and the notifications that tell them.

A campaign's settings name notify rules; at runtime each is a ``NotifyRule``:
"tell notifier ``sales`` about calls graded A, or tagged 价格", immediately
or in the campaign's end-of-run digest. When a call ends, the core turns the
``CallRecord`` into the per-call mapping every notifier reads
(``lead_from_call``: the masked number for group chats, the callee's lines,
the contact's variables…), and wraps it in a ``Notification`` for each
matching immediate rule (``lead_notifications``); at the campaign's end the
matching calls go into one digest per notifier (``digest_notification``).

Notification ids are stable — ``lead-{call_id}-{notifier}``,
``digest-{campaign_id}-{notifier}`` — so a retried or re-queued notification
keeps its id and an endpoint can drop duplicates by it.

The outbox keeps notifications as JSON data: ``notification_to_json`` and
``notification_from_json`` are the two directions of that format.

Error handling: ``notification_from_json`` raises ValueError naming the key
that is missing or of the wrong type; everything else here is pure
computation on values the core made.

What it is not: the campaign's notify settings as written in its file (the
campaign settings module validates those and converts them to ``NotifyRule``),
the outbox that delivers (``waihu.notify.outbox``), or any message format —
each notifier renders the mapping its own way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
import phonenumbers

from waihu.api import CallRecord, Notification, one_of

__all__ = [
    "MAX_REPLIES",
    "NotifyRule",
    "digest_notification",
    "lead_from_call",
    "lead_notification",
    "lead_notifications",
    "mask_number",
    "matching_calls",
    "notification_from_json",
    "notification_to_json",
]

NOTIFY_MODES = ("immediate", "digest")
MAX_REPLIES = 20  # callee lines kept per call (the last ones): enough for any message, bounded
KEEP_HEAD = 3  # digits shown before the mask: the mobile operator prefix (138…)
KEEP_TAIL = 4  # digits shown after it: what people say aloud to tell numbers apart
SHORT_TAIL = 2  # a number too short for head and tail keeps only this many digits


def _tuple_of_str(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):  # "A" would otherwise become ("A",) by accident of iteration
        return (value,)
    return tuple(value)


@attrs.frozen
class NotifyRule:
    """Tell ``notifier`` about a call whose grade is in ``grades`` or that has a tag in ``tags``.

    An empty tuple matches nothing on its side. ``mode`` is ``immediate`` (a
    lead notification as the call ends) or ``digest`` (the call is listed in
    the campaign's digest at its end).
    """

    notifier: str
    grades: tuple[str, ...] = attrs.field(default=("A",), converter=_tuple_of_str)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    mode: Literal["immediate", "digest"] = attrs.field(
        default="immediate", validator=one_of(*NOTIFY_MODES)
    )

    def matches(self, grade: str | None, tags: Iterable[str]) -> bool:
        """Whether a call with this grade and these tags is one to tell about."""
        return (grade is not None and grade in self.grades) or any(t in self.tags for t in tags)


# ───────────────────────── one call ─────────────────────────


def mask_number(number: str) -> str:
    """The number with its middle hidden, for group chats: ``+8613800138000`` → ``138****8000``.

    The national number keeps its first 3 and last 4 digits. A number that is
    not E.164 is masked the same way over its digits; one shorter than 8
    digits keeps only its last 2; one with no digits at all is all stars.
    """
    try:
        digits = phonenumbers.national_significant_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        digits = re.sub(r"\D", "", number)
    if len(digits) > KEEP_HEAD + KEEP_TAIL:
        hidden = len(digits) - KEEP_HEAD - KEEP_TAIL
        return digits[:KEEP_HEAD] + "*" * hidden + digits[-KEEP_TAIL:]
    if len(digits) > SHORT_TAIL:
        return "*" * (len(digits) - SHORT_TAIL) + digits[-SHORT_TAIL:]
    return "****"


def lead_from_call(
    record: CallRecord,
    *,
    variables: Mapping[str, str],
    campaign_id: str | None,
    campaign_name: str | None,
) -> dict[str, Any]:
    """The per-call mapping of ``Notification.calls`` for a finished call (JSON data).

    Keys: ``call_id``, ``number`` (as dialled, E.164 for campaign calls),
    ``masked_number``, ``grade``, ``tags``, ``replies`` (the callee's
    non-empty lines in order, the last ``MAX_REPLIES`` of them),
    ``variables`` (the contact's columns), ``duration`` (seconds answered,
    None if never answered), ``ended_at``, and ``campaign_id`` and
    ``campaign_name`` so that a lead knows its campaign on its own.
    """
    replies = [t.text.strip() for t in record.turns if t.speaker == "callee" and t.text.strip()]
    duration = None
    if record.answered_at is not None and record.ended_at is not None:
        duration = round(max(0.0, record.ended_at - record.answered_at), 1)
    return {
        "call_id": record.id,
        "number": record.number,
        "masked_number": mask_number(record.number),
        "grade": record.grade,
        "tags": list(record.tags),
        "replies": replies[-MAX_REPLIES:],
        "variables": dict(variables),
        "duration": duration,
        "ended_at": record.ended_at,
        "campaign_id": campaign_id,
        "campaign_name": campaign_name,
    }


def lead_notification(
    call: Mapping[str, Any],
    *,
    notifier: str,
    campaign_id: str | None = None,
    campaign_name: str | None = None,
    created_at: float | None = None,
) -> Notification:
    """The ``lead`` notification of one call (a ``lead_from_call`` mapping) for ``notifier``.

    The campaign is the call's own unless given; ``created_at`` is now unless given.
    """
    return Notification(
        id=f"lead-{call['call_id']}-{notifier}",
        kind="lead",
        campaign_id=campaign_id if campaign_id is not None else call.get("campaign_id"),
        campaign_name=campaign_name if campaign_name is not None else call.get("campaign_name"),
        calls=(call,),
        created_at=time.time() if created_at is None else created_at,
    )


def lead_notifications(
    call: Mapping[str, Any], rules: Iterable[NotifyRule], *, created_at: float | None = None
) -> list[Notification]:
    """One lead notification per notifier whose immediate rules match the call.

    Two rules naming the same notifier give one notification (same id), not two.
    """
    notifiers: dict[str, None] = {}  # ordered, without repeats
    for rule in rules:
        if rule.mode == "immediate" and rule.matches(call.get("grade"), call.get("tags", ())):
            notifiers[rule.notifier] = None
    return [lead_notification(call, notifier=n, created_at=created_at) for n in notifiers]


# ───────────────────────── a campaign's digest ─────────────────────────


def matching_calls(
    calls: Iterable[Mapping[str, Any]], rules: Iterable[NotifyRule], *, notifier: str
) -> list[Mapping[str, Any]]:
    """The calls any of ``notifier``'s digest rules match, in the order given."""
    mine = [r for r in rules if r.notifier == notifier and r.mode == "digest"]
    return [c for c in calls if any(r.matches(c.get("grade"), c.get("tags", ())) for r in mine)]


def digest_notification(
    campaign_id: str,
    campaign_name: str | None,
    calls: Sequence[Mapping[str, Any]],
    *,
    notifier: str,
    created_at: float | None = None,
) -> Notification:
    """The ``digest`` notification of a campaign's matching calls for ``notifier`` (now, unless
    ``created_at`` is given)."""
    return Notification(
        id=f"digest-{campaign_id}-{notifier}",
        kind="digest",
        campaign_id=campaign_id,
        campaign_name=campaign_name,
        calls=tuple(calls),
        created_at=time.time() if created_at is None else created_at,
    )


# ───────────────────────── the outbox's JSON format ─────────────────────────


def notification_to_json(notification: Notification) -> dict[str, Any]:
    """The notification as JSON data (what the outbox stores and webhooks receive)."""
    return {
        "id": notification.id,
        "kind": notification.kind,
        "campaign_id": notification.campaign_id,
        "campaign_name": notification.campaign_name,
        "calls": [dict(call) for call in notification.calls],
        "created_at": notification.created_at,
    }


def notification_from_json(data: Mapping[str, Any]) -> Notification:
    """The notification ``notification_to_json`` made; ValueError naming a bad or missing key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a notification must be a JSON object, not {type(data).__name__}")

    def field(key: str, types: tuple[type, ...], *, optional: bool = False) -> Any:
        if key not in data:
            raise ValueError(f"notification: {key}: required key is missing")
        value = data[key]
        if value is None and optional:
            return None
        # bool is an int to Python, never a time in this format
        if not isinstance(value, types) or isinstance(value, bool):
            names = " or ".join(t.__name__ for t in types)
            raise ValueError(f"notification: {key}: must be {names}, not {type(value).__name__}")
        return value

    kind = field("kind", (str,))
    if kind not in ("lead", "digest"):
        raise ValueError(f"notification: kind: must be lead or digest, not {kind!r}")
    calls = field("calls", (list, tuple))
    for i, call in enumerate(calls):
        if not isinstance(call, Mapping):
            raise ValueError(f"notification: calls[{i}]: must be an object")
    return Notification(
        id=field("id", (str,)),
        kind=kind,
        campaign_id=field("campaign_id", (str,), optional=True),
        campaign_name=field("campaign_name", (str,), optional=True),
        calls=tuple(dict(call) for call in calls),
        created_at=float(field("created_at", (int, float))),
    )
