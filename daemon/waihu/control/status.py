"""What ``waihuctl status`` reports, gathered from the parts of a running daemon.

``gather_status`` asks each part that knows — the dispatcher (draining, live
calls, trunks and their lines, the scripts), each trunk (``trunk_status``),
storage (today's counts, the campaigns' states), the media clock — and
returns plain JSON values: numbers as numbers, times as seconds since the
epoch, states as strings. The keys are documented in waihuctl(1) (the
``status`` entry of ``protocol.COMMANDS``); ``render.render_status`` shows
them to a person.

"Today" starts at the daemon's local midnight, as dates given to ``calls
--since`` do.

Error handling: a storage error reaches the caller (the control server
answers ``internal`` and logs it); a trunk that is configured but not running
is reported ``down`` rather than left out.

What it is not: the rendering (``render``), the command table
(``protocol``) or a metrics exporter.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import typing
from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs

from waihu.api import (
    CallCounts,
    CampaignState,
    CampaignStore,
    Storage,
    TrunkStatus,
    trunk_status,
)
from waihu.dialog.library import ScriptLibrary
from waihu.dispatcher import CallDispatcher
from waihu.media.media_clock import MediaClock

__all__ = ["gather_status", "gather_trunks", "local_midnight"]

MS = 1000.0  # milliseconds in a second: the clock's figures are shown in ms
MS_DIGITS = 3  # ms rounded to the microsecond: finer than perf_counter is worth reading
UPTIME_DIGITS = 1  # tenths of a second
NOT_RUNNING = "configured but not running"  # a trunk with no started provider


def local_midnight(now: float) -> float:
    """The start of the daemon's local day containing ``now`` (seconds since the epoch)."""
    day = dt.date.fromtimestamp(now)
    return dt.datetime.combine(day, dt.time()).timestamp()  # naive: local time


async def gather_status(
    *,
    dispatcher: CallDispatcher,
    storage: Storage,
    clock: MediaClock,
    started_at: float,
    version: str,
) -> dict[str, Any]:
    """The whole ``status`` result (see waihuctl(1) for each key)."""
    now = time.time()
    midnight = local_midnight(now)
    return {
        "version": version,
        "pid": os.getpid(),
        "now": now,
        "started_at": started_at,
        "uptime": round(now - started_at, UPTIME_DIGITS),
        "draining": dispatcher.draining,
        "live_calls": len(dispatcher.live),
        "trunks": _trunks(dispatcher, started_at),
        "today": _today(await storage.call_counts(since=midnight), midnight),
        "campaigns": await _campaigns(storage),
        "media_clock": _media_clock(clock),
        "scripts": sorted(dispatcher.scripts.scripts),
        "script_errors": _script_errors(dispatcher.scripts),
    }


def _trunks(dispatcher: CallDispatcher, started_at: float) -> list[dict[str, Any]]:
    """Each configured trunk, in config order: its state and how many of its lines are in use."""
    live = Counter(record.trunk for record in dispatcher.live.values())
    config = dispatcher.config
    trunks = []
    for name in dispatcher.trunks:
        section = config.section("trunk", name)
        trunk = dispatcher.providers.get("trunk", name)
        status = (
            trunk_status(trunk, started_at=started_at)
            if trunk is not None
            else TrunkStatus(state="down", since=started_at, detail=NOT_RUNNING)
        )
        trunks.append(
            {
                "name": name,
                "type": section.type if section is not None else None,
                "state": status.state,
                "since": status.since,
                "detail": status.detail,
                "live_calls": live[name],
                "lines": config.trunk_limits(name).lines,
            }
        )
    return trunks


def gather_trunks(dispatcher: CallDispatcher, started_at: float) -> list[dict[str, Any]]:
    """The ``trunks`` result: each trunk as ``status`` shows it, plus ``registration``.

    ``registration`` is what the trunk's optional ``registration()`` method
    says (the SIP trunk's: aor, registrar, state, at, expires_at, detail), or
    None for a trunk that does not register or has no such method; ``guard``
    what its optional ``security_counts()`` says (the SIP trunk's: accepted,
    unknown_dropped, unknown_rejected, flood_dropped since it started), or None.
    """
    trunks = _trunks(dispatcher, started_at)
    for entry in trunks:
        trunk = dispatcher.providers.get("trunk", entry["name"])
        registration = getattr(trunk, "registration", None)
        entry["registration"] = registration() if callable(registration) else None
        counts = getattr(trunk, "security_counts", None)  # the SIP trunk's guard, if any
        entry["guard"] = _plain(counts()) if callable(counts) else None
    return trunks


def _plain(value: Any) -> dict[str, Any] | None:
    """An attrs value (or a mapping) as a JSON-ready dict; None for anything else."""
    if attrs.has(type(value)):
        return attrs.asdict(value)
    return dict(value) if isinstance(value, Mapping) else None


def _today(counts: CallCounts, since: float) -> dict[str, Any]:
    return {
        "since": since,
        "calls": counts.calls,
        "outcomes": dict(counts.outcomes),
        "grades": dict(counts.grades),
    }


async def _campaigns(storage: Storage) -> dict[str, int] | None:
    """Campaigns by state (every state, zeros too); None when the storage keeps none."""
    if not isinstance(storage, CampaignStore):
        return None
    states = Counter(row.state for row in await storage.list_campaigns())
    return {state: states[state] for state in typing.get_args(CampaignState)}


def _media_clock(clock: MediaClock) -> dict[str, Any]:
    stats = clock.stats
    return {
        "calls": len(clock),
        "ticks": stats.ticks,
        "late_ticks": stats.late_ticks,
        "max_lateness_ms": round(stats.max_lateness * MS, MS_DIGITS),
        "skipped": stats.skipped,
        "max_tick_ms": round(stats.max_tick_seconds * MS, MS_DIGITS),
        "source_errors": stats.source_errors,
    }


def _script_errors(scripts: ScriptLibrary) -> list[dict[str, Any]]:
    """Each script file the last load refused, its problems, and the version still in use."""
    errors = []
    for file, problems in sorted(scripts.problems.items()):
        kept = scripts.in_use(file)
        in_use = None
        if kept is not None:
            in_use = {
                "script": kept.script.name,
                "loaded_at": kept.loaded_at,
                "script_hash": kept.script.content_hash or None,
            }
        errors.append({"file": file, "problems": list(problems), "in_use": in_use})
    return errors
