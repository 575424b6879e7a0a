"""What operators do to campaigns and the do-not-call list, as the control socket asks.

Each method takes plain values and returns plain JSON data, so the control
handlers only forward. A campaign is named by its id or its name. Settings
arrive as a table (from a campaign TOML file or from ``waihuctl`` flags) and
are validated by ``CampaignSettings`` before anything is stored; the script
and trunk they name must exist in the running daemon.

State changes an operator may ask for, and from where::

    start   draft, stopped, completed → running
    pause   running → paused
    resume  paused → running
    stop    running, paused → stopped   (live calls finish; nothing more is dialled)
    cancel  pending contacts → cancelled (the campaign keeps its state)
    redial  done contacts with given outcomes → pending (history kept)
    reset   every contact not in a call → pending, attempts counted from zero (history kept)

Contacts come from ``waihuctl campaign import``: the file is read and checked
on the operator's side (``importer``), and the accepted rows arrive here in
batches; this side refuses numbers already in the campaign or on the
do-not-call list, each reject with its line.

Error handling: a wrong request (unknown campaign, a state change that does
not apply, bad settings) raises ``CampaignError`` with a code the control
socket passes on and a message naming what is wrong. Storage failures come up
as ``ProviderError``.

What it is not: the dialling (``scheduler``) or the file reading
(``importer``); nor the wire format (``waihu.control``).
"""

from __future__ import annotations

import difflib
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from waihu.api import (
    OUTCOMES,
    AuditEntry,
    CampaignRow,
    CampaignStore,
    Contact,
    Storage,
    WaihuError,
)
from waihu.campaign.scheduler import CampaignScheduler
from waihu.campaign.settings import CampaignSettings, settings_from_row, settings_from_table
from waihu.config import ConfigError
from waihu.dialog.library import required_variables
from waihu.dispatcher import CallDispatcher, DispatchRefused

__all__ = ["CampaignError", "CampaignService"]

ID_BYTES = 3  # campaign ids are 6 hex digits: short enough to type
E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # ITU-T E.164: a country code, at most 15 digits
EXPORT_PAGE = 1000  # attempts per page of an export
# outcomes whose call may say who answered (waihu.who_answered): answered ones, and those a
# machine's words or tones filed
SCREENED_OUTCOMES = frozenset(
    {"answered", "voicemail", "switched_off", "invalid_number", "busy", "unreachable"}
)
TRANSITIONS: Mapping[str, tuple[tuple[str, ...], str]] = {
    # action → (states it applies to, state it leads to)
    "start": (("draft", "stopped", "completed"), "running"),
    "pause": (("running",), "paused"),
    "resume": (("paused",), "running"),
    "stop": (("running", "paused"), "stopped"),
}


class CampaignError(WaihuError):
    """An operator's request about a campaign cannot be done; ``code`` as the control socket's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CampaignService:
    """Campaign and do-not-call operations over the store, the scheduler and the dispatcher."""

    def __init__(
        self,
        *,
        store: CampaignStore,
        calls: Storage,
        scheduler: CampaignScheduler,
        dispatcher: CallDispatcher,
        default_region: str = "CN",
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.calls = calls
        self.scheduler = scheduler
        self.dispatcher = dispatcher
        self.default_region = default_region
        self.now = now

    # ───────────────────────── campaigns ─────────────────────────

    async def create(self, settings: Mapping[str, Any], *, user: str) -> dict[str, Any]:
        """Validate the settings and store a new campaign in state ``draft``."""
        table = {"region": self.default_region, **settings}
        parsed = self._settings(table, source="campaign")
        if await self._find(parsed.name) is not None:
            raise CampaignError("bad_request", f"a campaign named {parsed.name!r} exists already")
        row = CampaignRow(
            id=secrets.token_hex(ID_BYTES),
            name=parsed.name,
            settings=parsed.to_table(),
            created_at=self.now(),
        )
        await self.store.create_campaign(row)
        await self._audit(user, "campaign.create", {"id": row.id, "name": row.name})
        return self._summary(row)

    async def clone(self, campaign: str, name: str, *, user: str) -> dict[str, Any]:
        """A new draft campaign with the same settings and contact list, fresh states."""
        source = await self._get(campaign)
        table = {**source.settings, "name": name}
        parsed = self._settings(table, source="clone")
        if await self._find(name) is not None:
            raise CampaignError("bad_request", f"a campaign named {name!r} exists already")
        row = CampaignRow(
            id=secrets.token_hex(ID_BYTES),
            name=name,
            settings=parsed.to_table(),
            created_at=self.now(),
        )
        await self.store.create_campaign(row)
        copied: list[Contact] = []
        after = 0
        while page := await self.store.campaign_contacts(source.id, after_id=after):
            after = page[-1].id
            copied.extend(
                Contact(
                    campaign_id=row.id,
                    number=c.number,
                    variables=dict(c.variables),
                    timezone=c.timezone,
                    source_line=c.source_line,
                )
                for c in page
            )
        if copied:
            await self.store.add_contacts(copied)
        await self._audit(
            user, "campaign.clone", {"id": row.id, "from": source.id, "contacts": len(copied)}
        )
        return self._summary(row)

    async def list(self) -> list[dict[str, Any]]:
        """Every campaign with its state and progress, newest first."""
        rows = sorted(await self.store.list_campaigns(), key=lambda r: -r.created_at)
        out = []
        for row in rows:
            counts = await self.store.contact_counts(row.id)
            out.append({**self._summary(row), "contacts": dict(counts)})
        return out

    async def show(self, campaign: str) -> dict[str, Any]:
        """Settings, state, contacts by state, outcomes, grades and the per-node funnel."""
        row = await self._get(campaign)
        stats = await self.store.campaign_stats(row.id)
        return {
            **self._summary(row),
            "settings": dict(row.settings),
            "contacts": dict(stats.contacts),
            "outcomes": dict(stats.outcomes),
            "grades": dict(stats.grades),
            "attempts": stats.attempts,
            "reconciled": stats.reconciled,
            "funnel": _funnel(stats.reached, stats.last_node, stats.hangups),
            "live_calls": sorted(
                r.id for r in self.dispatcher.live.values() if r.campaign_id == row.id
            ),
        }

    async def change(self, campaign: str, action: str, *, user: str) -> dict[str, Any]:
        """start, pause, resume or stop (see the module docstring for what applies when)."""
        row = await self._get(campaign)
        allowed, target = TRANSITIONS[action]
        if row.state not in allowed:
            raise CampaignError(
                "bad_request",
                f"campaign {row.name} is {row.state}; {action} applies to "
                f"{' or '.join(allowed)} campaigns",
            )
        if target == "running":
            self._check_runnable(row)
            counts = await self.store.contact_counts(row.id)
            if not sum(counts.values()):
                raise CampaignError(
                    "bad_request", f"campaign {row.name} has no contacts; import some first"
                )
        reason = "by the operator" if action in ("pause", "stop") else None
        row = await self.scheduler.set_state(row, target, reason)
        await self._audit(user, f"campaign.{action}", {"id": row.id})
        return self._summary(row)

    def _check_runnable(self, row: CampaignRow) -> None:
        """A campaign starts only with valid settings and a script and trunk that exist."""
        settings = self._settings(dict(row.settings), source=f"campaign {row.name}")
        try:
            self.dispatcher.script(settings.script)
            self.dispatcher.resolve_trunk(settings.trunk)
        except DispatchRefused as exc:
            raise CampaignError(exc.code, f"campaign {row.name}: {exc.message}") from None

    async def cancel(self, campaign: str, *, user: str) -> dict[str, Any]:
        """Cancel every pending contact: they will not be dialled."""
        row = await self._get(campaign)
        moved = await self.store.set_contacts_state(
            row.id, from_states=("pending",), to_state="cancelled"
        )
        await self._audit(user, "campaign.cancel", {"id": row.id, "contacts": moved})
        return {"id": row.id, "cancelled": moved}

    async def redial(self, campaign: str, outcomes: Sequence[str], *, user: str) -> dict[str, Any]:
        """Put finished contacts whose last outcome is one of ``outcomes`` back in the queue."""
        row = await self._get(campaign)
        unknown = sorted(set(outcomes) - set(OUTCOMES))
        if unknown or not outcomes:
            raise CampaignError(
                "bad_request",
                f"redial needs outcomes among: {', '.join(OUTCOMES)}"
                + (f" (not {', '.join(unknown)})" if unknown else ""),
            )
        if "opted_out" in outcomes:
            raise CampaignError("bad_request", "callees who opted out are never called again")
        moved = await self.store.set_contacts_state(
            row.id,
            from_states=("done", "skipped", "cancelled"),
            to_state="pending",
            outcomes=list(outcomes),
            reset_attempts=True,
            next_at=self.now(),
        )
        self.scheduler.wake(row.id)
        await self._audit(
            user, "campaign.redial", {"id": row.id, "outcomes": list(outcomes), "contacts": moved}
        )
        return {"id": row.id, "requeued": moved}

    async def reset(self, campaign: str, *, user: str) -> dict[str, Any]:
        """Every contact not in a call back to pending with its attempts counted afresh."""
        row = await self._get(campaign)
        if row.state == "running":
            raise CampaignError("bad_request", f"pause campaign {row.name} before resetting it")
        moved = await self.store.set_contacts_state(
            row.id,
            from_states=("pending", "done", "skipped", "cancelled"),
            to_state="pending",
            reset_attempts=True,
            next_at=self.now(),
        )
        await self._audit(user, "campaign.reset", {"id": row.id, "contacts": moved})
        return {"id": row.id, "reset": moved}

    # ───────────────────────── contacts ─────────────────────────

    async def import_info(self, campaign: str) -> dict[str, Any]:
        """What ``waihuctl campaign import`` needs to check a file before sending it."""
        row = await self._get(campaign)
        settings = settings_from_row(row)
        try:
            # a placeholder with a [variables] default, or one the script sets, needs no column
            script = self.dispatcher.script(settings.script).script
            placeholders = sorted(required_variables(script))
        except DispatchRefused as exc:
            raise CampaignError(exc.code, exc.message) from None
        return {
            "id": row.id,
            "name": row.name,
            "region": settings.region,
            "timezone": settings.timezone,
            "required_variables": placeholders,
        }

    async def add_contacts(
        self, campaign: str, contacts: Sequence[Mapping[str, Any]], *, user: str
    ) -> dict[str, Any]:
        """Store a batch of checked contacts; refuse those already in it or on the DNC list.

        Each contact is ``{"number": E.164, "variables": {...}, "timezone": str|None,
        "line": int}``. Returns ``{"added": n, "rejects": [{"line", "number", "reason"}]}``.
        """
        row = await self._get(campaign)
        existing = await self.store.campaign_numbers(row.id)
        accepted: list[Contact] = []
        rejects: list[dict[str, Any]] = []
        for item in contacts:
            number = str(item.get("number", ""))
            line = item.get("line")
            if not E164.fullmatch(number):
                rejects.append({"line": line, "number": number, "reason": "not an E.164 number"})
            elif number in existing:
                rejects.append(
                    {"line": line, "number": number, "reason": "already in this campaign"}
                )
            elif await self.store.dnc_contains(number):
                rejects.append(
                    {"line": line, "number": number, "reason": "on the do-not-call list"}
                )
            else:
                existing.add(number)
                variables = item.get("variables") or {}
                accepted.append(
                    Contact(
                        campaign_id=row.id,
                        number=number,
                        variables={str(k): str(v) for k, v in dict(variables).items()},
                        timezone=item.get("timezone") or None,
                        source_line=line if isinstance(line, int) else None,
                        next_at=0.0,
                    )
                )
        if accepted:
            await self.store.add_contacts(accepted)
            self.scheduler.wake(row.id)
        await self._audit(
            user,
            "campaign.import",
            {"id": row.id, "added": len(accepted), "rejected": len(rejects)},
        )
        return {"id": row.id, "added": len(accepted), "rejects": rejects}

    async def attempts(self, campaign: str, after: int = 0, limit: int = EXPORT_PAGE) -> dict:
        """One page of the campaign's attempts with their contacts and calls, for export."""
        row = await self._get(campaign)
        page = await self.store.campaign_attempts(row.id, after_id=after, limit=limit)
        rows = []
        for attempt, contact in page:
            # only answered calls have a recording and a talk time worth a look-up, and
            # only they and those a carrier's announcement filed say who answered
            record = (
                await self.calls.get_call(attempt.call_id)
                if attempt.outcome in SCREENED_OUTCOMES
                else None
            )
            talk = None
            if record is not None and record.answered_at and record.ended_at:
                talk = record.ended_at - record.answered_at
            rows.append(
                {
                    "attempt": attempt.id,
                    "number": attempt.number,
                    "seq": attempt.seq,
                    "call_id": attempt.call_id,
                    "started_at": attempt.started_at,
                    "ended_at": attempt.ended_at,
                    "outcome": attempt.outcome,
                    "sip_status": attempt.sip_status,
                    "grade": attempt.grade,
                    "tags": list(attempt.tags),
                    "note": attempt.note,
                    "talk_seconds": talk,
                    "recording": record.recording if record is not None else None,
                    "answered_by": record.answered_by if record is not None else None,
                    "variables": dict(contact.variables),
                    "contact_state": contact.state,
                }
            )
        return {
            "id": row.id,
            "name": row.name,
            "rows": rows,
            "next": rows[-1]["attempt"] if len(rows) == limit else None,
        }

    # ───────────────────────── do-not-call ─────────────────────────

    async def dnc_add(self, numbers: Sequence[str], reason: str, *, user: str) -> dict[str, Any]:
        """Add E.164 numbers to the global do-not-call list."""
        bad = [n for n in numbers if not E164.fullmatch(n)]
        if bad:
            raise CampaignError("bad_request", f"not E.164 numbers: {', '.join(bad[:5])}")
        added = await self.store.dnc_add(list(numbers), reason=reason, at=self.now())
        await self._audit(user, "dnc.add", {"count": len(numbers), "reason": reason})
        return {"added": added, "given": len(numbers)}

    async def dnc_remove(self, numbers: Sequence[str], *, user: str) -> dict[str, Any]:
        removed = await self.store.dnc_remove(list(numbers))
        await self._audit(user, "dnc.remove", {"numbers": list(numbers)})
        return {"removed": removed}

    async def dnc_list(self) -> list[dict[str, Any]]:
        return [
            {"number": number, "reason": reason, "added_at": at}
            for number, reason, at in await self.store.dnc_numbers()
        ]

    async def audit_list(self, limit: int = 100) -> list[dict[str, Any]]:
        return [attrs.asdict(e) for e in await self.store.audit_entries(limit=limit)]

    # ───────────────────────── helpers ─────────────────────────

    async def _audit(self, user: str, action: str, params: Mapping[str, Any]) -> None:
        await self.store.audit(AuditEntry(at=self.now(), user=user, action=action, params=params))

    async def _find(self, campaign: str) -> CampaignRow | None:
        row = await self.store.get_campaign(campaign)
        if row is not None:
            return row
        for row in await self.store.list_campaigns():
            if row.name == campaign:
                return row
        return None

    async def _get(self, campaign: str) -> CampaignRow:
        row = await self._find(campaign)
        if row is None:
            names = sorted(r.name for r in await self.store.list_campaigns())
            close = difflib.get_close_matches(campaign, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CampaignError(
                "not_found",
                f"no campaign {campaign!r}{hint} (campaigns: {', '.join(names) or 'none'})",
            )
        return row

    @staticmethod
    def _settings(table: Mapping[str, Any], *, source: str) -> CampaignSettings:
        try:
            return settings_from_table(dict(table), file=source)
        except ConfigError as exc:
            raise CampaignError("bad_request", "\n".join(exc.problems)) from None

    @staticmethod
    def _summary(row: CampaignRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "name": row.name,
            "state": row.state,
            "reason": row.reason,
            "script": row.settings.get("script"),
            "trunk": row.settings.get("trunk"),
            "created_at": row.created_at,
            "started_at": row.started_at,
            "ended_at": row.ended_at,
        }


def _funnel(
    reached: Mapping[str, int], last_node: Mapping[str, int], hangups: Mapping[str, int]
) -> list[dict[str, Any]]:
    """One row per node, most reached first: how many got there, ended there, hung up there."""
    nodes = sorted(set(reached) | set(last_node), key=lambda n: (-reached.get(n, 0), n))
    return [
        {
            "node": node,
            "reached": reached.get(node, 0),
            "ended": last_node.get(node, 0),
            "hung_up": hangups.get(node, 0),
        }
        for node in nodes
    ]
