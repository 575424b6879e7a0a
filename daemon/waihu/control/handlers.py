"""The daemon's answers to control commands: one short async method per command.

``ControlHandlers`` is what the control server calls: for each ``Command`` of
``protocol.COMMANDS``, the method the command names in its ``handler``
field, with the command's params as keyword arguments. Each method asks the
part of the daemon that knows (the dispatcher for live calls and new ones,
storage for filed calls, the event bus for ``watch``) and returns plain JSON
values.

Error handling: expected failures are ``ControlError`` with a fixed code —
a ``DispatchRefused`` becomes the error of the same code, an unknown call id
is ``not_found``. Anything else is left to the server, which answers
``internal`` and logs it.

What it is not: the socket server (``server``), the protocol (``protocol``),
or the daemon's life cycle (``waihu.daemon`` builds this object and asks it
nothing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from importlib.metadata import version
from typing import Any

import attrs
import pluggy

from waihu.api import CallRecord, Storage
from waihu.call_lifecycle import record_as_dict
from waihu.control.monitor import Monitor
from waihu.control.protocol import ControlError
from waihu.control.server import EventStream
from waihu.dispatcher import CallDispatcher, CallRequest, DispatchRefused
from waihu.events import EventBus
from waihu.media.media_clock import MediaClock
from waihu.plugins import plugin_info

__all__ = ["ControlHandlers", "call_summary", "daemon_version"]


def daemon_version() -> str:
    """The installed waihu version, or ``unknown`` when run from a bare source tree."""
    try:
        return version("waihu")
    except Exception:
        return "unknown"


def call_summary(record: CallRecord) -> dict[str, Any]:
    """One row of ``calls``: the record without its transcript, with the talk time."""
    duration = None
    if record.answered_at and record.ended_at:
        duration = round(record.ended_at - record.answered_at, 1)
    return {
        "id": record.id,
        "number": record.number,
        "script": record.script,
        "status": record.status,
        "sip_status": record.sip_status,
        "grade": record.grade,
        "created_at": record.created_at,
        "duration": duration,
        "hangup_by": record.hangup_by,
    }


class ControlHandlers:
    """Answers the control socket's commands for one daemon.

    ``stop`` asks the daemon to drain and exit (what ``shutdown`` does);
    ``started_at`` is when the daemon started (seconds since the epoch).
    """

    def __init__(
        self,
        *,
        dispatcher: CallDispatcher,
        storage: Storage,
        events: EventBus,
        pm: pluggy.PluginManager,
        clock: MediaClock,
        stop: Callable[[], None],
        started_at: float,
    ) -> None:
        self.dispatcher = dispatcher
        self.storage = storage
        self.events = events
        self.pm = pm
        self.clock = clock
        self._stop = stop
        self.started_at = started_at

    async def status(self) -> dict[str, Any]:
        scripts = self.dispatcher.scripts
        return {
            "version": daemon_version(),
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 1),
            "draining": self.dispatcher.draining,
            "live_calls": len(self.dispatcher.live),
            "trunks": self.dispatcher.trunks,
            "scripts": sorted(scripts.scripts),
            "script_errors": scripts.problems,
            "media_clock": attrs.asdict(self.clock.stats),
        }

    async def plugins(self) -> list[dict[str, Any]]:
        return plugin_info(self.pm)

    async def call(
        self,
        target: str,
        script: str,
        trunk: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        request = CallRequest(target=target, script=script, trunk=trunk, variables=variables or {})
        try:
            record = self.dispatcher.start(request)
        except DispatchRefused as exc:
            raise ControlError(exc.code, exc.message) from None
        return {"call_id": record.id}

    async def calls(self, limit: int = 20) -> list[dict[str, Any]]:
        return [call_summary(r) for r in await self.storage.recent_calls(limit)]

    async def call_show(self, id: str) -> dict[str, Any]:
        record = self.dispatcher.live.get(id) or await self.storage.get_call(id)
        if record is None:
            raise ControlError("not_found", f"no call with id {id!r}")
        return record_as_dict(record)

    async def watch(self, call_id: str | None = None) -> EventStream:
        # subscribe before looking: a call live now cannot end unseen in between
        monitor = Monitor(self.events, call_id)
        live = self.dispatcher.live
        if call_id is not None and call_id not in live:
            monitor.close()
            if await self.storage.get_call(call_id) is not None:
                raise ControlError(
                    "not_found", f"call {call_id!r} has ended; 'call show {call_id}' shows it"
                )
            raise ControlError("not_found", f"no call with id {call_id!r}")
        watched = sorted(i for i in live if call_id in (None, i))
        return EventStream(result={"call_id": call_id, "live_calls": watched}, events=monitor)

    async def shutdown(self) -> dict[str, Any]:
        self._stop()
        return {"draining": True, "live_calls": len(self.dispatcher.live)}
