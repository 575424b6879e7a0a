"""The daemon's answers to control commands: one short async method per command.

``ControlHandlers`` is what the control server calls: for each ``Command`` of
``protocol.COMMANDS``, the method the command names in its ``handler``
field, with the command's params as keyword arguments. Each method asks the
part of the daemon that knows (the dispatcher for live calls and new ones,
storage for filed calls, the event bus for ``watch``; ``status`` asks them
all through ``waihu.control.status``) and returns plain JSON values.

Campaigns and the do-not-call list are the ``CampaignService``'s: those
handlers only forward, with the unix user asking (``server.current_peer``) for
its audit log. A storage that keeps no campaigns leaves ``campaigns`` None,
and those commands answer ``unavailable``.

Error handling: expected failures are ``ControlError`` with a fixed code —
a ``DispatchRefused`` or ``CampaignError`` becomes the error of the same code,
an unknown call id is ``not_found``, a date that does not parse is
``bad_request``. A call id may be a unique prefix of one (``_call_id``, live
calls and the storage's ``call_ids_with_prefix``): one that several ids start
with, or shorter than ``MIN_CALL_ID_PREFIX``, is ``bad_request``.
``call.recording`` reads the file in a worker thread: a call without one, or
whose file is gone, is ``not_found``; a live call's is ``unavailable``.
Anything else is left to the server, which answers ``internal`` and logs it.

What it is not: the socket server (``server``), the protocol (``protocol``),
or the daemon's life cycle (``waihu.daemon`` builds this object and asks it
nothing).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
import pluggy
import trio

from waihu.api import OUTCOMES, AuditEntry, CallRecord, CampaignStore, Storage
from waihu.call_control import CallNotAnswered
from waihu.call_lifecycle import record_as_dict
from waihu.campaign.service import CampaignError, CampaignService
from waihu.control.monitor import Monitor
from waihu.control.protocol import (
    ATTEMPTS_PAGE,
    AUDIT_LIMIT,
    DNC_REASON,
    ERROR_CODES,
    MIN_CALL_ID_PREFIX,
    RECORDING_CHUNK_BYTES,
    ControlError,
)
from waihu.control.server import EventStream, current_peer
from waihu.control.status import gather_status, gather_trunks
from waihu.dispatcher import CallDispatcher, CallRequest, DispatchRefused
from waihu.events import EventBus
from waihu.media.media_clock import MediaClock
from waihu.media.recorder import CHANNEL_LAYOUT
from waihu.plugins import plugin_info
from waihu.recordings import prune_recordings, read_chunk

__all__ = ["ControlHandlers", "call_summary", "daemon_version", "parse_instant"]

FINAL_CALL_STATUSES = ("ended", "failed")  # a live call in one of these is only being let go
log = logging.getLogger("waihu.control")

UNKNOWN_USER = "unknown"  # the audit log's user when the kernel named nobody
NO_CAMPAIGNS = "this storage keeps no campaigns"
DATE_LENGTH = len("2026-03-05")  # a bare date, not a date-time
AMBIGUOUS_SHOWN = 5  # calls an ambiguous call id prefix lists: enough to pick the right one


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
        "outcome": record.outcome,
        "campaign_id": record.campaign_id,
        "direction": record.direction,
    }


def parse_instant(text: str, param: str, *, end_of_day: bool = False) -> float:
    """Seconds since the epoch for a ``since``/``until`` param, in the daemon's local time.

    ``YYYY-MM-DD`` is the start of that day, or with ``end_of_day`` the start
    of the next (so that ``until`` a date includes it); an ISO date-time is
    that instant (local when it has no offset). ControlError bad_request
    naming ``param`` otherwise.
    """
    try:
        if len(text) == DATE_LENGTH:
            day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end_of_day else 0)
            return dt.datetime.combine(day, dt.time()).timestamp()  # naive: local time
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ControlError(
            "bad_request",
            f"param {param!r} must be a date YYYY-MM-DD or an ISO date-time "
            f"(2026-03-05T14:30), not {text!r}",
        ) from None


def _user() -> str:
    """The unix user whose request is being answered, for the audit log."""
    peer = current_peer.get()
    return peer.user if peer is not None else UNKNOWN_USER


@contextmanager
def _as_control_errors() -> Iterator[None]:
    """A campaign service refusal as the control error of the same code."""
    try:
        yield
    except CampaignError as exc:
        if exc.code not in ERROR_CODES:  # a code the protocol lacks is a bug of the service
            raise ControlError("internal", f"{exc.code}: {exc.message}") from None
        raise ControlError(exc.code, exc.message) from None  # type: ignore[arg-type]


class ControlHandlers:
    """Answers the control socket's commands for one daemon.

    ``stop`` asks the daemon to drain and exit (what ``shutdown`` does);
    ``started_at`` is when the daemon started (seconds since the epoch);
    ``campaigns`` answers the campaign and do-not-call commands (None: the
    storage keeps none); ``recordings_dir`` is where the recorder files calls.
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
        campaigns: CampaignService | None = None,
        recordings_dir: Path | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.storage = storage
        self.events = events
        self.pm = pm
        self.clock = clock
        self._stop = stop
        self.started_at = started_at
        self.campaigns = campaigns
        self.recordings_dir = recordings_dir

    async def status(self) -> dict[str, Any]:
        return await gather_status(
            dispatcher=self.dispatcher,
            storage=self.storage,
            clock=self.clock,
            started_at=self.started_at,
            version=daemon_version(),
        )

    async def trunks(self) -> list[dict[str, Any]]:
        return gather_trunks(self.dispatcher, self.started_at)

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

    async def calls(
        self,
        limit: int = 20,
        campaign: str | None = None,
        grade: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        if outcome is not None and outcome not in OUTCOMES:
            raise ControlError(
                "bad_request", f"no outcome {outcome!r} (outcomes: {', '.join(OUTCOMES)})"
            )
        records = await self.storage.find_calls(
            campaign_id=await self._campaign_id(campaign) if campaign is not None else None,
            grade=grade,
            outcome=outcome,
            since=parse_instant(since, "since") if since is not None else None,
            until=parse_instant(until, "until", end_of_day=True) if until is not None else None,
            limit=limit,
        )
        return [call_summary(r) for r in records]

    async def call_show(self, id: str) -> dict[str, Any]:
        id = await self._call_id(id)
        record = self.dispatcher.live.get(id) or await self.storage.get_call(id)
        if record is None:
            raise ControlError("not_found", f"no call with id {id!r}")
        return record_as_dict(record)

    async def call_hangup(self, id: str) -> dict[str, Any]:
        id = await self._call_id(id)
        record = self.dispatcher.live.get(id)
        if record is None or record.status in FINAL_CALL_STATUSES:  # filed, still being let go
            raise ControlError("unavailable", f"call {id} is over already")
        state = record.status
        self.dispatcher.control(id).hang_up()
        log.info("call %s hung up by %s (it was %s)", id, _user(), state)
        return {"call_id": id, "was": state}

    async def call_dtmf(self, id: str, digits: str) -> dict[str, Any]:
        id = await self._call_id(id)
        record = self.dispatcher.live.get(id)
        if record is None or record.status in FINAL_CALL_STATUSES:
            raise ControlError("unavailable", f"call {id} is over already")
        try:
            await self.dispatcher.control(id).send_dtmf(digits)
        except KeyError:
            raise ControlError("unavailable", f"call {id} is over already") from None
        except CallNotAnswered as exc:
            raise ControlError("unavailable", f"call {id}: {exc}") from None
        except ValueError as exc:
            raise ControlError("bad_request", str(exc)) from None
        except NotImplementedError as exc:
            raise ControlError(
                "unavailable", f"call {id}: the far end takes no DTMF ({exc})"
            ) from None
        return {"call_id": id, "digits": digits}

    async def _call_id(self, given: str) -> str:
        """The full id of the one call, live or filed, whose id is or starts with ``given``.

        ControlError bad_request for a prefix shorter than MIN_CALL_ID_PREFIX or
        one that several calls' ids start with (some of them listed), not_found
        for one that none does.
        """
        if given in self.dispatcher.live or await self.storage.get_call(given) is not None:
            return given  # a whole id, however short
        if len(given) < MIN_CALL_ID_PREFIX:
            raise ControlError(
                "bad_request",
                f"no call with id {given!r}; a shortened call id needs at least "
                f"{MIN_CALL_ID_PREFIX} characters",
            )
        found = {i for i in self.dispatcher.live if i.startswith(given)}
        # one more than shown: enough to tell "one" from "several" and to say "…"
        find = getattr(self.storage, "call_ids_with_prefix", None)  # a storage may lack it
        if find is not None:
            found.update(await find(given, AMBIGUOUS_SHOWN + 1))
        if not found:
            raise ControlError("not_found", f"no call with id {given!r}")
        if len(found) > 1:
            shown = sorted(found)[:AMBIGUOUS_SHOWN]
            more = ", …" if len(found) > AMBIGUOUS_SHOWN else ""
            raise ControlError(
                "bad_request",
                f"call id {given!r} is ambiguous: {', '.join(shown)}{more}; give more of it",
            )
        return found.pop()

    async def call_recording(self, id: str, offset: int = 0) -> dict[str, Any]:
        id = await self._call_id(id)
        live = self.dispatcher.live.get(id)
        if live is not None:
            raise ControlError(
                "unavailable", f"call {id} is still going on; its recording is written at its end"
            )
        record = await self.storage.get_call(id)
        if record is None:  # it ended between the look-ups: filed by now, or never
            raise ControlError("not_found", f"no call with id {id!r}")
        if record.recording is None:
            why = "it was not answered" if record.answered_at is None else "recording was off"
            raise ControlError("not_found", f"call {id} has no recording ({why})")
        path = Path(record.recording)
        try:
            size, chunk, digest = await trio.to_thread.run_sync(
                read_chunk, path, offset, RECORDING_CHUNK_BYTES
            )
        except FileNotFoundError:
            raise ControlError(
                "not_found", f"the recording of call {id}, {path}, is gone (pruned?)"
            ) from None
        except OSError as exc:
            raise ControlError(
                "unavailable", f"cannot read the recording of call {id}, {path}: {exc.strerror}"
            ) from None
        if offset > size:
            raise ControlError("bad_request", f"offset {offset} is past the end ({size} bytes)")
        if offset == 0:
            log.info("recording of call %s fetched by %s", id, _user())
            if isinstance(self.storage, CampaignStore):  # where the audit log is
                await self.storage.audit(
                    AuditEntry(
                        at=time.time(), user=_user(), action="call.recording", params={"id": id}
                    )
                )
        return {
            "call_id": id,
            "name": path.name,
            "size": size,
            "offset": offset,
            "data": base64.b64encode(chunk).decode("ascii"),
            "sha256": digest,
            "channels": list(CHANNEL_LAYOUT),
        }

    async def watch(self, call_id: str | None = None, campaign: str | None = None) -> EventStream:
        if call_id is not None:
            call_id = await self._call_id(call_id)
        campaign_id = await self._campaign_id(campaign) if campaign is not None else None
        # subscribe before looking: a call live now cannot end unseen in between
        monitor = Monitor(self.events, call_id, campaign=campaign_id)
        live = self.dispatcher.live
        if call_id is not None and call_id not in live:
            monitor.close()
            if await self.storage.get_call(call_id) is not None:
                raise ControlError(
                    "not_found", f"call {call_id!r} has ended; 'call show {call_id}' shows it"
                )
            raise ControlError("not_found", f"no call with id {call_id!r}")
        watched = sorted(
            i
            for i, record in live.items()
            if call_id in (None, i) and campaign_id in (None, record.campaign_id)
        )
        result = {"call_id": call_id, "campaign": campaign_id, "live_calls": watched}
        return EventStream(result=result, events=monitor)

    async def shutdown(self) -> dict[str, Any]:
        self._stop()
        return {"draining": True, "live_calls": len(self.dispatcher.live)}

    # ───────────────────────── campaigns ─────────────────────────

    def _service(self) -> CampaignService:
        if self.campaigns is None:
            raise ControlError("unavailable", NO_CAMPAIGNS)
        return self.campaigns

    async def _campaign_id(self, campaign: str) -> str:
        """The id of the campaign named by id or name; not_found listing the campaigns."""
        with _as_control_errors():
            # the service's own look-up, so that names resolve as in every campaign command
            return (await self._service()._get(campaign)).id

    async def campaign_create(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().create(settings, user=_user())

    async def campaign_list(self) -> list[dict[str, Any]]:
        with _as_control_errors():
            return await self._service().list()

    async def campaign_show(self, campaign: str) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().show(campaign)

    async def campaign_clone(self, campaign: str, name: str) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().clone(campaign, name, user=_user())

    async def _change(self, campaign: str, action: str) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().change(campaign, action, user=_user())

    async def campaign_start(self, campaign: str) -> dict[str, Any]:
        return await self._change(campaign, "start")

    async def campaign_pause(self, campaign: str) -> dict[str, Any]:
        return await self._change(campaign, "pause")

    async def campaign_resume(self, campaign: str) -> dict[str, Any]:
        return await self._change(campaign, "resume")

    async def campaign_stop(self, campaign: str) -> dict[str, Any]:
        return await self._change(campaign, "stop")

    async def campaign_cancel(self, campaign: str) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().cancel(campaign, user=_user())

    async def campaign_redial(self, campaign: str, outcomes: Sequence[str]) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().redial(campaign, outcomes, user=_user())

    async def campaign_reset(self, campaign: str) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().reset(campaign, user=_user())

    async def campaign_import_info(self, campaign: str) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().import_info(campaign)

    async def campaign_add_contacts(
        self, campaign: str, contacts: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().add_contacts(campaign, contacts, user=_user())

    async def campaign_attempts(
        self, campaign: str, after: int = 0, limit: int = ATTEMPTS_PAGE
    ) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().attempts(campaign, after=after, limit=limit)

    # ───────────────────────── do-not-call and audit ─────────────────────────

    async def dnc_add(self, numbers: Sequence[str], reason: str = DNC_REASON) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().dnc_add(numbers, reason, user=_user())

    async def dnc_remove(self, numbers: Sequence[str]) -> dict[str, Any]:
        with _as_control_errors():
            return await self._service().dnc_remove(numbers, user=_user())

    async def dnc_list(self) -> list[dict[str, Any]]:
        with _as_control_errors():
            return await self._service().dnc_list()

    async def audit(self, limit: int = AUDIT_LIMIT) -> list[dict[str, Any]]:
        with _as_control_errors():
            return await self._service().audit_list(limit)

    # ───────────────────────── recordings ─────────────────────────

    async def recordings_prune(self, days: int, dry_run: bool = True) -> dict[str, Any]:
        if self.recordings_dir is None:
            raise ControlError("unavailable", "this daemon keeps no recordings")
        prune = functools.partial(
            prune_recordings,
            self.recordings_dir,
            older_than_days=days,
            today=dt.date.today(),
            dry_run=dry_run,
        )
        report = attrs.asdict(await trio.to_thread.run_sync(prune))
        if not dry_run and isinstance(self.storage, CampaignStore):  # where the audit log is
            params = {k: report[k] for k in ("files", "bytes")} | {"days": days}
            await self.storage.audit(
                AuditEntry(at=time.time(), user=_user(), action="recordings.prune", params=params)
            )
        return {"directory": str(self.recordings_dir), **report}
