"""The campaign scheduler: hands out contacts under every limit and files each attempt.

One ``CampaignRunner`` task per running campaign dials its contacts through
the ``CallDispatcher`` (the one place calls start). For each dial it takes,
in order: a line of the campaign (``lines``), a line of the trunk (FIFO, so
campaigns sharing a trunk take turns), a pacing token of the campaign and
one of the trunk (``calls_per_minute``), and only then claims one due
contact from the store. The contact is checked at dial time against its
calling windows (in its own time zone), the do-not-call list and the
frequency cap; a closed window puts it back with ``next_at`` = the window's
next opening, so it never blocks the contacts behind it.

Crash safety — every state change is committed before the step it allows:
the claim (a lease) before the checks, the attempt row (``begin_attempt``,
with the call id chosen here) before the INVITE, the outcome
(``finish_attempt``) before the line is given back. After ``kill -9`` and a
restart, ``reconcile`` finishes every attempt left open by this node from
what the call record says (answered → ``answered``; never dialled or cut
off while ringing → ``interrupted``, retried by the policy after its delay)
— it never redials blindly, and no result is lost. Leases held by a daemon
are renewed by its heartbeat; a lease that runs out (a dead daemon) returns
its contact to the queue.

A trunk's circuit breaker counts consecutive trunk faults (5xx, timeouts,
transport errors) across every campaign using it; when it trips, those
campaigns pause and say why, instead of burning the list.

A campaign completes by itself when no contact is pending, leased or being
called; then digests are sent. Past its end date it completes too, saying
how many contacts were never called.

Error handling: a storage failure while dialling is logged and the runner
backs off and tries again; one that loses an attempt's outcome leaves the
attempt open, and the next start-up reconciles it (the contact is never
dialled again meanwhile: it stays ``calling``). A notifier's failure is the
outbox's to retry. Nothing a campaign does can stop the daemon or another
campaign.

What it is not: the operator's commands (``service``), the rules themselves
(``windows``, ``retry``, ``pacing``, ``breaker``, ``outcomes``), or the store
(a ``waihu.api.CampaignStore`` plugin).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import trio

from waihu.api import (
    Attempt,
    CallRecord,
    CampaignRow,
    CampaignStore,
    Contact,
    ProviderError,
    Storage,
    trunk_status,
)
from waihu.call import DNC_TAG, TRUNK_ERROR_PREFIX
from waihu.campaign.breaker import CircuitBreaker
from waihu.campaign.numbers import format_for_dial
from waihu.campaign.outcomes import outcome_for
from waihu.campaign.pacing import TokenBucket
from waihu.campaign.settings import settings_from_row
from waihu.config import ConfigError
from waihu.dialog.library import missing_variables
from waihu.dispatcher import (
    CallDispatcher,
    CallRequest,
    DispatchRefused,
    Line,
    TargetRefused,
    new_call_id,
)
from waihu.events import EventBus
from waihu.notify.leads import NotifyRule, digest_notification, lead_from_call, lead_notification
from waihu.notify.outbox import OutboxDelivery

__all__ = ["CampaignRunner", "CampaignScheduler"]

log = logging.getLogger("waihu.campaign")

LEASE_SECONDS = 600.0  # a claim not renewed for this long returns to the queue (dead daemon)
HEARTBEAT_SECONDS = 120.0  # a live daemon renews its leases this often (well inside the lease)
IDLE_MAX_SECONDS = 300.0  # a dry campaign looks again this often (another daemon may add contacts)
STORE_BACKOFF_SECONDS = 5.0  # after a storage failure, before trying again
BREAKER_THRESHOLD = 10  # consecutive trunk faults that pause the trunk's campaigns
# A trunk that is down (its proxy does not resolve, its socket cannot be bound) fails every
# dial at once; its campaigns look again this often instead of spending contacts' attempts
TRUNK_DOWN_POLL_SECONDS = 5.0

Now = Callable[[], float]


class _Slot:
    """A campaign line and a trunk line held for one dial; released once, by whoever ends it."""

    def __init__(self, campaign_lines: trio.Semaphore, line: Line) -> None:
        self._campaign_lines = campaign_lines
        self.line = line
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.line.release()
            self._campaign_lines.release()


class CampaignScheduler:
    """Runs every campaign whose state is ``running``; owns the trunks' breakers.

    ``now`` gives wall-clock time (seconds since the epoch); tests derive it
    from trio's clock so that windows, retries and pacing run on a fake clock.
    """

    def __init__(
        self,
        *,
        store: CampaignStore,
        calls: Storage,
        dispatcher: CallDispatcher,
        events: EventBus,
        outboxes: Mapping[str, OutboxDelivery],
        node: str,
        frequency_cap_hours: float = 24.0,
        now: Now = time.time,
    ) -> None:
        self.store = store
        self.calls = calls
        self.dispatcher = dispatcher
        self.events = events
        self.outboxes = outboxes
        self.node = node
        self.frequency_cap = frequency_cap_hours * 3600.0
        self.now = now
        self.breakers: dict[str, CircuitBreaker] = {}
        # a campaign's own lines outlive its runner: calls still up after a pause keep
        # theirs, so a resumed campaign never exceeds its ``lines``
        self.campaign_lines: dict[str, trio.Semaphore] = {}
        self._runners: dict[str, CampaignRunner] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile what a crash left open, start the running campaigns, renew leases."""
        await self.reconcile()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for row in await self.store.list_campaigns():
                if row.state == "running":
                    self._start_runner(row)
            nursery.start_soon(self._heartbeat)
            task_status.started()
            await trio.sleep_forever()

    # ───────────────────────── state changes (from the service) ─────────────────────────

    async def set_state(self, row: CampaignRow, state: str, reason: str | None) -> CampaignRow:
        """Commit a campaign's new state, publish it, then start or stop its runner."""
        now = self.now()
        changes: dict[str, Any] = {"state": state, "reason": reason}
        if state == "running" and row.started_at is None:
            changes["started_at"] = now
        if state in ("stopped", "completed"):
            changes["ended_at"] = now
        elif state == "running":
            changes["ended_at"] = None
        row = attrs.evolve(row, **changes)
        await self.store.update_campaign(row)
        self.events.publish(None, "campaign", campaign=row.id, state=state, reason=reason)
        log.info("campaign %s (%s): %s%s", row.id, row.name, state, f": {reason}" if reason else "")
        if state == "running":
            if row.settings.get("trunk"):
                breaker = self.breakers.get(str(row.settings["trunk"]))
                if breaker is not None and breaker.tripped:
                    breaker.reset()  # the operator resumes: give the trunk another chance
            self._start_runner(row)
        else:
            runner = self._runners.pop(row.id, None)
            if runner is not None:
                runner.halt()
        return row

    def wake(self, campaign_id: str) -> None:
        """New contacts or a redial: let a waiting runner look again now."""
        runner = self._runners.get(campaign_id)
        if runner is not None:
            runner.wake()

    def running(self, campaign_id: str) -> bool:
        return campaign_id in self._runners

    def _start_runner(self, row: CampaignRow) -> None:
        if self._nursery is None or row.id in self._runners:
            return
        runner = CampaignRunner(self, row)
        self._runners[row.id] = runner
        self._nursery.start_soon(runner.run)

    async def trunk_failing(self, trunk: str, reason: str) -> None:
        """The trunk's breaker tripped: pause every running campaign that uses it."""
        for campaign_id, runner in list(self._runners.items()):
            if runner.trunk == trunk:
                row = await self.store.get_campaign(campaign_id)
                if row is not None and row.state == "running":
                    await self.set_state(row, "paused", f"trunk {trunk} failing: {reason}")

    # ───────────────────────── leases and crash recovery ─────────────────────────

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(HEARTBEAT_SECONDS)
            now = self.now()
            try:
                await self.store.renew_leases(owner=self.node, lease_until=now + LEASE_SECONDS)
                await self.store.expire_leases(now=now)
            except ProviderError as exc:
                log.error("cannot renew campaign leases: %s", exc)

    async def reconcile(self) -> int:
        """Finish the attempts this daemon left open when it stopped; returns how many.

        Runs before any campaign dials. The call records have been reconciled
        first (the daemon does that at start-up), so each open attempt's record
        says how far its call got.
        """
        now = self.now()
        await self.store.expire_leases(now=now)
        opened = await self.store.open_attempts(node=self.node)
        by_campaign: dict[str, int] = {}
        for attempt in opened:
            row = await self.store.get_campaign(attempt.campaign_id)
            settings = settings_from_row(row) if row is not None else None
            record = await self.calls.get_call(attempt.call_id)
            outcome, note = _reconciled_outcome(record)
            if settings is not None:
                state, next_at = settings.retry_policy().decide(outcome, attempt.seq, now)
            else:
                state, next_at = "done", now
            finished = _finished_attempt(attempt, record, outcome, now, note=note)
            await self.store.finish_attempt(finished, contact_state=state, next_at=next_at)
            log.warning(
                "campaign %s: attempt %d to %s (call %s) %s; outcome %s, contact %s",
                attempt.campaign_id, attempt.id, attempt.number, attempt.call_id, note,
                outcome, state,
            )  # fmt: skip
            by_campaign[attempt.campaign_id] = by_campaign.get(attempt.campaign_id, 0) + 1
        for campaign_id, count in by_campaign.items():
            row = await self.store.get_campaign(campaign_id)
            self.events.publish(
                None,
                "campaign",
                campaign=campaign_id,
                state=row.state if row else "unknown",
                reason=f"reconciled {count} attempt(s) left open by a stop of the daemon",
            )
        return len(opened)


def _reconciled_outcome(record: CallRecord | None) -> tuple[str, str]:
    """The outcome and note of an attempt found open after a restart."""
    if record is None:
        return "interrupted", "reconciled: never dialled (no call record was filed)"
    if record.answered_at is not None:
        return "answered", "reconciled: answered, then cut off by the daemon stopping"
    if record.status in ("ended", "failed") and record.outcome and record.outcome != "interrupted":
        return record.outcome, "reconciled: the call had ended before the daemon stopped"
    return "interrupted", f"reconciled: the daemon stopped while the call was {record.status}"


def _finished_attempt(
    attempt: Attempt,
    record: CallRecord | None,
    outcome: str,
    now: float,
    *,
    note: str | None = None,
) -> Attempt:
    return attrs.evolve(
        attempt,
        ended_at=(record.ended_at if record and record.ended_at else now),
        outcome=outcome,
        sip_status=record.sip_status if record else None,
        grade=record.grade if record else None,
        tags=tuple(record.tags) if record else (),
        note=note,
    )


class CampaignRunner:
    """Dials one campaign's contacts until it is halted or completes."""

    def __init__(self, scheduler: CampaignScheduler, row: CampaignRow) -> None:
        self.scheduler = scheduler
        self.row = row
        self.trunk = str(row.settings.get("trunk") or "")  # resolved when it runs
        self._cancel = trio.CancelScope()
        self._wake = trio.Event()

    def _prepare(self) -> None:
        """Read the stored settings; ConfigError or DispatchRefused if they no longer work."""
        settings = settings_from_row(self.row)
        self.settings = settings
        self.trunk = self.scheduler.dispatcher.resolve_trunk(settings.trunk)
        self.windows = settings.calling_windows()
        self.policy = settings.retry_policy()
        self.rules = tuple(
            NotifyRule(notifier=r.notifier, grades=r.grades, tags=r.tags, mode=r.mode)
            for r in settings.notify
        )
        self._lines = self.scheduler.campaign_lines.setdefault(
            self.row.id, trio.Semaphore(settings.lines)
        )
        self._bucket = TokenBucket(settings.calls_per_minute)

    @property
    def store(self) -> CampaignStore:
        return self.scheduler.store

    def halt(self) -> None:
        """Stop dialling; calls already up go on and are filed."""
        self._cancel.cancel()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        with self._cancel:
            try:
                self._prepare()
            except (ConfigError, DispatchRefused) as exc:
                reason = "\n".join(exc.problems) if isinstance(exc, ConfigError) else exc.message
                await self._pause(reason)
                return
            while True:
                try:
                    await self._dial_next()
                except ProviderError as exc:
                    log.error("campaign %s: storage: %s; retrying", self.row.id, exc)
                    await trio.sleep(STORE_BACKOFF_SECONDS)
                except DispatchRefused as exc:
                    if exc.code == "not_found":  # the script or trunk went away: say so
                        await self._pause(exc.message)
                        return
                    await trio.sleep(STORE_BACKOFF_SECONDS)  # draining, full: wait

    async def _pause(self, reason: str) -> None:
        row = await self.store.get_campaign(self.row.id)
        if row is not None and row.state == "running":
            await self.scheduler.set_state(row, "paused", reason)

    async def _dial_next(self) -> None:
        """Take the lines and tokens for one call, then dial the next contact, or idle."""
        await self._trunk_up()
        await self._lines.acquire()
        try:
            line = await self.scheduler.dispatcher.acquire_line(self.trunk)
        except BaseException:
            self._lines.release()
            raise
        slot = _Slot(self._lines, line)
        try:
            await self._pace()
            if self.scheduler.dispatcher.draining:
                slot.release()
                await trio.sleep_forever()  # the daemon is stopping: dial nothing more
            contact = await self._next_contact()
            if contact is None:
                slot.release()
                await self._idle()
                return
            await self._dial(contact, slot)
        except BaseException:
            slot.release()
            raise

    async def _trunk_up(self) -> None:
        """Wait while the campaign's trunk is ``down``.

        Its dials would fail at once: each would spend a contact's attempt and,
        ten in a row, trip the breaker and pause the campaign, although the trunk
        retries by itself and the campaign should simply go on when it is back.
        A ``failing`` trunk is still dialled: the breaker judges real answers.
        """
        said = False
        while True:
            trunk = self.scheduler.dispatcher.providers.get("trunk", self.trunk)
            status = trunk_status(trunk, started_at=0.0) if trunk is not None else None
            if status is None or status.state != "down":
                if said:
                    log.info("campaign %s: trunk %s is back; dialling", self.row.id, self.trunk)
                return
            if not said:
                log.warning(
                    "campaign %s: trunk %s is down (%s); waiting for it",
                    self.row.id,
                    self.trunk,
                    status.detail or "no detail",
                )
                said = True
            await trio.sleep(TRUNK_DOWN_POLL_SECONDS)

    async def _pace(self) -> None:
        while (wait := self._bucket.take(self.scheduler.now())) > 0:
            await trio.sleep(wait)
        await self.scheduler.dispatcher.pace(self.trunk)

    async def _next_contact(self) -> Contact | None:
        """Claim due contacts until one may be dialled now; None when none is due."""
        while True:
            now = self.scheduler.now()
            if self.settings.after_end(now):
                await self._complete(f"end date {self.settings.end_date} passed")
                return None
            claimed = await self.store.claim_contacts(
                self.row.id,
                now=now,
                limit=1,
                owner=self.scheduler.node,
                lease_until=now + LEASE_SECONDS,
            )
            if not claimed:
                return None
            contact = claimed[0]
            if await self._may_dial(contact, now):
                return contact

    async def _may_dial(self, contact: Contact, now: float) -> bool:
        """Check one leased contact at dial time; put it back or skip it if not."""
        try:
            zone = ZoneInfo(contact.timezone) if contact.timezone else self.settings.zone()
        except (ZoneInfoNotFoundError, ValueError):
            await self.store.skip_contact(contact.id, outcome="bad time zone")
            log.warning(
                "campaign %s: contact %s skipped: unknown time zone %r",
                self.row.id, contact.number, contact.timezone,
            )  # fmt: skip
            return False
        if not self.windows.is_open(now, zone):
            await self.store.release_contact(contact.id, next_at=self.windows.next_open(now, zone))
            return False
        if self.settings.before_start(now):
            await self.store.release_contact(contact.id, next_at=self.settings.start_time())
            return False
        if await self.store.dnc_contains(contact.number):
            await self.store.skip_contact(contact.id, outcome="do-not-call")
            return False
        script = self.scheduler.dispatcher.script(self.settings.script).script
        missing = missing_variables(script, contact.variables)
        if missing:
            # the script changed since the import: dialling would read a placeholder out,
            # and retrying never fills it; the contact is skipped, saying what it lacks
            name, key = missing[0]
            await self.store.skip_contact(contact.id, outcome=f"missing variable {name!r}")
            log.warning(
                "campaign %s: contact %s skipped: script %r needs variable %r (%s)",
                self.row.id, contact.number, self.settings.script, name, key,
            )  # fmt: skip
            return False
        cap = self.scheduler.frequency_cap
        if cap > 0 and await self.store.answered_since(contact.number, now - cap) > 0:
            # answered within the cap, maybe by another campaign: try again after a full cap
            await self.store.release_contact(contact.id, next_at=now + cap)
            return False
        return True

    async def _dial(self, contact: Contact, slot: _Slot) -> None:
        now = self.scheduler.now()
        dispatcher = self.scheduler.dispatcher
        loaded = dispatcher.script(self.settings.script)  # refuses before anything is committed
        attempt = await self.store.begin_attempt(
            Attempt(
                campaign_id=self.row.id,
                contact_id=contact.id,
                number=contact.number,
                call_id=new_call_id(now),
                seq=contact.attempts + 1,
                node=self.scheduler.node,
                started_at=now,
                script_hash=loaded.script.content_hash,
            )
        )
        request = CallRequest(
            target=format_for_dial(contact.number, self._dial_format(), self.settings.region),
            script=self.settings.script,
            trunk=self.trunk,
            variables=dict(contact.variables),
            caller_id=self.settings.caller_id,
            ring_timeout=self.settings.ring_timeout,
            campaign_id=self.row.id,
            call_id=attempt.call_id,
        )

        async def on_end(record: CallRecord) -> None:
            try:
                await self._finished(attempt, contact, record)
            finally:
                slot.release()
                self.wake()

        try:
            dispatcher.start(request, line=slot.line, on_end=on_end)
        except TargetRefused as exc:
            # the trunk cannot dial this number, now or later: a bad number, never retried
            end = self.scheduler.now()
            state, next_at = self.policy.decide("invalid_number", attempt.seq, end)
            await self.store.finish_attempt(
                attrs.evolve(attempt, ended_at=end, outcome="invalid_number", note=exc.message),
                contact_state=state,
                next_at=next_at,
            )
            log.warning("campaign %s: contact %s: %s", self.row.id, contact.number, exc.message)
            slot.release()
        except DispatchRefused as exc:
            # committed but never dialled: filed as such, the contact due again soon
            end = self.scheduler.now()
            await self.store.finish_attempt(
                attrs.evolve(attempt, ended_at=end, outcome="interrupted", note=exc.message),
                contact_state="pending",
                next_at=end + IDLE_MAX_SECONDS,
            )
            raise

    def _dial_format(self) -> str:
        """How the number is written for the trunk: the trunk's own format, if it sets
        one (a carrier wants what it wants), else the campaign's."""
        trunk_format = self.scheduler.dispatcher.config.trunk_limits(self.trunk).dial_format
        return trunk_format or self.settings.dial_format

    async def _finished(self, attempt: Attempt, contact: Contact, record: CallRecord) -> None:
        """File one attempt's outcome, move its contact, feed the breaker, push a lead."""
        now = self.scheduler.now()
        trunk_error = bool(record.error and record.error.startswith(TRUNK_ERROR_PREFIX))
        outcome = record.outcome or outcome_for(
            answered=record.answered_at is not None,
            sip_status=record.sip_status,
            trunk_error=trunk_error,
        )
        if DNC_TAG in record.tags:  # the script's dnc end node put the number on the list
            outcome = "opted_out"
        state, next_at = self.policy.decide(outcome, attempt.seq, now)
        await self.store.finish_attempt(
            _finished_attempt(attempt, record, outcome, now), contact_state=state, next_at=next_at
        )
        breaker = self.scheduler.breakers.setdefault(self.trunk, CircuitBreaker(BREAKER_THRESHOLD))
        if breaker.record(outcome, record.sip_status, trunk_error):
            reason = breaker.reason or "consecutive trunk failures"
            log.error("trunk %s: breaker tripped: %s", self.trunk, reason)
            await self.scheduler.trunk_failing(self.trunk, reason)
        if outcome == "answered":
            await self._push_lead(record, contact)

    async def _push_lead(self, record: CallRecord, contact: Contact) -> None:
        for rule in self.rules:
            if rule.mode != "immediate" or not rule.matches(record.grade, record.tags):
                continue
            outbox = self.scheduler.outboxes.get(rule.notifier)
            if outbox is None:
                log.error(
                    "campaign %s: no notifier %r configured for its lead rule",
                    self.row.id, rule.notifier,
                )  # fmt: skip
                continue
            lead = lead_from_call(
                record,
                variables=contact.variables,
                campaign_id=self.row.id,
                campaign_name=self.row.name,
            )
            await outbox.put(
                lead_notification(lead, notifier=rule.notifier, campaign_name=self.row.name)
            )

    async def _idle(self) -> None:
        """Nothing due now: complete if nothing is left, else wait for the next due contact."""
        counts = await self.store.contact_counts(self.row.id)
        if not any(counts.get(s, 0) for s in ("pending", "leased", "calling")):
            await self._complete(None)
            return
        now = self.scheduler.now()
        due = await self.store.next_due(self.row.id)
        wait = IDLE_MAX_SECONDS if due is None else min(max(due - now, 0.0), IDLE_MAX_SECONDS)
        self._wake = trio.Event()
        with trio.move_on_after(max(wait, 0.05)):  # never spin on a contact due right now
            await self._wake.wait()

    async def _complete(self, reason: str | None) -> None:
        row = await self.store.get_campaign(self.row.id)
        if row is None or row.state != "running":
            return
        if reason is not None:
            counts = await self.store.contact_counts(self.row.id)
            left = counts.get("pending", 0) + counts.get("leased", 0)
            reason = f"{reason}; {left} contact(s) never called" if left else reason
        await self._send_digests()
        # set_state halts this runner; its cancel scope ends the loop
        await self.scheduler.set_state(row, "completed", reason)

    async def _send_digests(self) -> None:
        rules = [r for r in self.rules if r.mode == "digest"]
        if not rules:
            return
        leads: dict[str, list[Mapping[str, Any]]] = {r.notifier: [] for r in rules}
        after = 0
        while page := await self.store.campaign_attempts(self.row.id, after_id=after):
            for attempt, contact in page:
                after = max(after, attempt.id)
                if attempt.outcome != "answered":
                    continue
                wanted = [r for r in rules if r.matches(attempt.grade, list(attempt.tags))]
                if not wanted:
                    continue
                record = await self.scheduler.calls.get_call(attempt.call_id)
                if record is None:
                    continue
                lead = lead_from_call(
                    record,
                    variables=contact.variables,
                    campaign_id=self.row.id,
                    campaign_name=self.row.name,
                )
                for rule in wanted:
                    leads[rule.notifier].append(lead)
        for notifier, calls in leads.items():
            outbox = self.scheduler.outboxes.get(notifier)
            if outbox is not None and calls:
                await outbox.put(
                    digest_notification(self.row.id, self.row.name, calls, notifier=notifier)
                )
