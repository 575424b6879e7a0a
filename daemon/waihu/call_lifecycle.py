"""One call record's lifecycle: its status, its events and its filing, in one owner.

A ``CallLifecycle`` is the only code that changes a call record's status. The
status moves only along ``TRANSITIONS``::

    dialing ──▶ ringing ──▶ answered ──▶ ended
       │  ╲                    ▲
       │   ╰───────────────────╯           (a trunk that reports no 18x)
       ╰──────▶ failed ◀── ringing

so an answered call always ends as ``ended`` and any other as ``failed`` —
whether it finished by itself, failed, or was cancelled (drain deadline,
shutdown, a bug). The final transition (``end``) sets ``status``,
``ended_at``, ``outcome`` and ``hangup_by`` in one synchronous step, so no
save can catch a record "ended" without its end time; it files the record
and then publishes ``ended`` or ``failed``. A ``failed`` record always says
why in ``error``: what the call was told, else its final SIP answer and what
that means (``failure_reason``: ``484 Address Incomplete: too few digits``).

Every event of a call is published through its lifecycle, with exactly the
fields ``waihu.api.EVENT_KINDS`` lists and the call's ``campaign``. Every
change that should reach storage marks the record changed; a filing loop
(``keep_filed``) saves the newest state, one save at a time, coalescing
changes that arrive during a save.

Timings go to the event bus's listeners (``EventBus.timed``, for the
metrics): the recogniser's time for each utterance as the call reports it,
and, when the call ends, each turn's latency from the transcript
(``reply_latencies``: the robot lines' times are those they were really
heard, which the engine settles before the end).

``reconciled`` is the same table applied after a crash: a record found
dialing, ringing or answered at start-up ends as the daemon left it.

Error handling: a move the table does not allow raises ``IllegalTransition``
(a bug in the caller). A failed save (database locked past its timeout, disk
full) is logged and retried at the next change; the call goes on. If the
final save fails, the whole record goes to the log as JSON, so the result is
not lost even when storage is.

What it is not: the call itself (``waihu.call`` dials, talks and hangs up and
tells its lifecycle what happened), or the campaign's view of an attempt
(``waihu.campaign``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs
import cattrs
import trio

from waihu.api import (
    AnsweredBy,
    CallRecord,
    CallStatus,
    HangupSide,
    Storage,
    TransferResult,
    Turn,
)
from waihu.campaign.outcomes import OUTCOME_TABLE, outcome_for
from waihu.dialog.engine import IGNORED_INTENT
from waihu.events import EventBus

__all__ = [
    "FINAL_SAVE_SECONDS",
    "FINAL_STATUSES",
    "TRANSITIONS",
    "CallLifecycle",
    "IllegalTransition",
    "failure_reason",
    "last_known_time",
    "reconcile_unfinished",
    "reconciled",
    "record_as_dict",
    "reply_latencies",
]

log = logging.getLogger("waihu.call")

# status → the statuses it may move to; the final ones move nowhere
TRANSITIONS: Mapping[CallStatus, frozenset[CallStatus]] = {
    "dialing": frozenset({"ringing", "answered", "failed"}),
    "ringing": frozenset({"answered", "failed"}),
    "answered": frozenset({"ended"}),
    "ended": frozenset(),
    "failed": frozenset(),
}
FINAL_STATUSES: frozenset[CallStatus] = frozenset({"ended", "failed"})
RINGING_STATUSES = range(180, 190)  # 180 Ringing, 181 forwarded, 182 queued, 183 progress
FINAL_SAVE_SECONDS = 30.0  # the last save of a record may outlast a cancelled call this long
INTERRUPTED = "interrupted"  # outcome of a call the daemon stopped before any final answer
NO_ANSWER_ERROR = "no final SIP answer, and no other reason known"  # never expected; never null

_unstructure = cattrs.Converter().unstructure


def record_as_dict(record: CallRecord) -> dict[str, Any]:
    """A call record as plain JSON-ready data (control socket replies, the log)."""
    return _unstructure(record)


def reply_latencies(turns: Iterable[Turn]) -> list[float]:
    """Seconds from the end of each callee reply to the start of the robot's answer to it.

    An answer is the robot line right after a callee turn; a reply the engine
    ignored (``IGNORED_INTENT``: it came while a line played on) has none, and
    neither has one followed by another callee turn or by nothing.
    """
    latencies = []
    previous: Turn | None = None
    for turn in turns:
        if (
            previous is not None
            and previous.speaker == "callee"
            and previous.intent != IGNORED_INTENT
            and turn.speaker == "robot"
            and previous.ended_at is not None
            and turn.started_at is not None
        ):
            latencies.append(max(0.0, turn.started_at - previous.ended_at))
        previous = turn
    return latencies


def failure_reason(
    sip_status: int | None, sip_reason: str | None, detail: str | None = None
) -> str:
    """Why an unanswered call failed, for its ``error``: the final SIP answer, then
    ``detail`` (what the trunk or the call knows: the target's fault, the ring
    timeout), else what the answer means (``waihu.campaign.outcomes``):
    ``484 Address Incomplete: too few digits``, ``486 Busy Here``,
    ``408 Request Timeout: no answer within 60 s``. With no SIP answer at all,
    ``detail`` alone.
    """
    if sip_status is None:
        return detail or NO_ANSWER_ERROR
    answer = f"{sip_status} {sip_reason or ''}".strip()
    explanation = detail or _meaning(sip_status)
    return f"{answer}: {explanation}" if explanation else answer


def _meaning(sip_status: int) -> str:
    """The outcome table's explanation of a status ("too few digits"); empty where the
    table only repeats the standard phrase ("Busy Here")."""
    rule = OUTCOME_TABLE.get(sip_status) or OUTCOME_TABLE.get(f"{sip_status // 100}xx")
    if rule is None:
        return ""
    _phrase, colon, explanation = rule.meaning.partition(": ")
    return explanation if colon else ""


class IllegalTransition(ValueError):
    """A status change the table does not allow: a bug in the code driving the call."""


def _final_status(record: CallRecord) -> CallStatus:
    return "ended" if record.answered_at is not None else "failed"


def _check_move(record: CallRecord, to: CallStatus) -> None:
    if to not in TRANSITIONS[record.status]:
        raise IllegalTransition(f"call {record.id}: cannot go from {record.status} to {to}")


class _Filing:
    """Saves the record whenever it changed, one save at a time, newest state last."""

    def __init__(self, storage: Storage, record: CallRecord) -> None:
        self.storage = storage
        self.record = record
        self._changed = trio.Event()
        self._one_at_a_time = trio.Lock()  # FIFO: a later snapshot is never saved first

    def changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            await self.flush()

    async def flush(self, *, final: bool = False) -> bool:
        """Save the record as it is now; False (and logged) if storage failed."""
        snapshot = attrs.evolve(
            self.record, turns=list(self.record.turns), tags=list(self.record.tags)
        )
        async with self._one_at_a_time:
            try:
                await self.storage.save_call(snapshot)
            except Exception as exc:
                log.error("call %s: cannot save its record: %s", self.record.id, exc)
                if final:
                    log.error(
                        "call %s: unsaved record: %s",
                        self.record.id,
                        json.dumps(record_as_dict(snapshot), ensure_ascii=False),
                    )
                return False
        return True


class CallLifecycle:
    """Owns one call record: moves its status, publishes its events, files it.

    ``now`` gives wall-clock time (seconds since the epoch) for the times it
    sets (``answered_at``, ``ended_at``).
    """

    def __init__(
        self,
        record: CallRecord,
        *,
        storage: Storage,
        events: EventBus,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.record = record
        self._events = events
        self._now = now
        self._filing = _Filing(storage, record)
        self._machine_outcome: str | None = None  # who_answered's outcome, filed at the end

    @property
    def status(self) -> CallStatus:
        return self.record.status

    @property
    def over(self) -> bool:
        """The final transition has been made."""
        return self.record.status in FINAL_STATUSES

    def publish(self, kind: str, **data: Any) -> None:
        """Publish one event of this call (fields as ``EVENT_KINDS`` lists them)."""
        self._events.publish(self.record.id, kind, campaign=self.record.campaign_id, **data)

    # ───────────────────────── filing ─────────────────────────

    async def begin(self) -> None:
        """File the new record (``dialing``), then say so: the INVITE goes next."""
        if self.record.status != "dialing":
            raise IllegalTransition(f"call {self.record.id}: begins as {self.record.status}")
        await self._filing.flush()
        self.publish(
            "dialing", number=self.record.number, script=self.record.script, trunk=self.record.trunk
        )

    async def keep_filed(self) -> None:
        """Save every change as it comes, until cancelled (run it beside the call)."""
        await self._filing.run()

    def changed(self) -> None:
        """Something other than the status changed (grade, recording…): file it."""
        self._filing.changed()

    # ───────────────────────── the call's progress ─────────────────────────

    def progress(self, status: int, reason: str) -> None:
        """A provisional answer: published; 18x moves a dialing call to ringing.

        The signature of ``waihu.api.ProgressCallback``, for ``Trunk.dial``.
        """
        if status in RINGING_STATUSES and self.record.status == "dialing":
            self._move("ringing")
            self._filing.changed()
        self.publish("ringing", status=status, reason=reason)

    def answered(self, codec: str) -> None:
        """200 OK: media flows."""
        self._move("answered")
        record = self.record
        record.answered_at = self._now()
        record.sip_status, record.sip_reason = 200, "OK"
        self._filing.changed()
        self.publish("answered", codec=codec)

    def turn(self, turn: Turn) -> None:
        """One transcript line, robot or callee: kept, filed and published."""
        self.record.turns.append(turn)
        self._filing.changed()
        self.publish(
            "turn", speaker=turn.speaker, text=turn.text, node=turn.node, intent=turn.intent
        )

    def node(self, node: str) -> None:
        self.publish("node", node=node)

    def utterance(
        self, text: str, confidence: float, *, decode_seconds: float | None = None
    ) -> None:
        """The recogniser's final result; ``decode_seconds`` is how long it took."""
        self.publish("utterance", text=text, confidence=confidence)
        if decode_seconds is not None:
            self._events.timed("asr", decode_seconds)

    def barge_in(self) -> None:
        self.publish("barge_in")

    def hangup(self, by: HangupSide) -> None:
        """The call was hung up (first side to do so is kept), and published."""
        self.record.hangup_by = self.record.hangup_by or by
        self.publish("hangup", by=self.record.hangup_by)

    def graded(
        self, grade: str | None, tags: Iterable[str] = (), reason: str | None = None
    ) -> None:
        """The script's verdict: the grade, tags added once each, and why (the grading
        rule's reason; None when no rule gave the grade)."""
        self.record.grade = grade
        self.record.grade_reason = reason
        self.record.tags.extend(t for t in tags if t not in self.record.tags)
        self._filing.changed()

    def transferred(self, result: TransferResult) -> None:
        """How handing the call to a person went: kept, filed and published (``transfer``)."""
        self.record.transfer = result
        self._filing.changed()
        self.publish(
            "transfer",
            target=result.target,
            mode=result.mode,
            outcome=result.outcome,
            status=result.status,
            detail=result.detail,
        )

    def screened(self, answered_by: AnsweredBy, evidence: str, outcome: str | None) -> None:
        """Who answered (``waihu.who_answered``): filed now; a machine's ``outcome``
        (switched_off, voicemail…) is the call's outcome at the end, instead of
        ``answered`` or what its SIP answer means."""
        self.record.answered_by = answered_by
        self.record.answered_by_evidence = evidence
        self._machine_outcome = outcome
        self._filing.changed()
        self.publish("screened", answered_by=answered_by, evidence=evidence, outcome=outcome)

    def recorded(self, path: str | None) -> None:
        """Where the call's recording is (None: there is none after all)."""
        self.record.recording = path
        self._filing.changed()

    # ───────────────────────── the end ─────────────────────────

    async def end(
        self,
        *,
        sip_status: int | None = None,
        sip_reason: str | None = None,
        error: str | None = None,
        trunk_error: bool = False,
        hangup_by: HangupSide | None = None,
        interrupted: bool = False,
    ) -> CallRecord:
        """The final transition: file the finished record, then publish ``ended``/``failed``.

        An answered call ends ``ended`` (outcome ``answered``, hung up by
        ``hangup_by`` or whoever did first, else the robot); any other call
        ``failed``, its outcome from ``sip_status`` and ``trunk_error`` (see
        ``waihu.campaign.outcomes``), or ``interrupted`` when the daemon cut
        it off before a final answer. ``error`` is kept if none was set yet; a
        failed call with none gets ``failure_reason`` of its SIP answer.
        The last save is shielded from cancellation (up to
        ``FINAL_SAVE_SECONDS``), so a cancelled call is still filed.
        """
        record = self.record
        to = _final_status(record)
        self._move(to)
        answered = record.answered_at is not None
        if sip_status is not None:
            record.sip_status, record.sip_reason = sip_status, sip_reason
        record.error = record.error or error
        if to == "failed" and not record.error:
            record.error = failure_reason(record.sip_status, record.sip_reason)
        if answered:
            record.hangup_by = record.hangup_by or hangup_by or "robot"
            record.outcome = outcome_for(answered=True, sip_status=record.sip_status)
        elif interrupted:
            record.outcome = INTERRUPTED
        else:
            record.outcome = outcome_for(
                answered=False, sip_status=record.sip_status, trunk_error=trunk_error
            )
        if self._machine_outcome is not None and not interrupted:
            record.outcome = self._machine_outcome  # what the machine said beats the SIP answer
        record.ended_at = self._now()
        with trio.CancelScope(shield=True), trio.move_on_after(FINAL_SAVE_SECONDS):
            await self._filing.flush(final=True)
        self.publish(
            to,
            outcome=record.outcome,
            grade=record.grade,
            tags=list(record.tags),
            sip_status=record.sip_status,
            hangup_by=record.hangup_by,
            error=record.error,
        )
        for latency in reply_latencies(record.turns):
            self._events.timed("turn_latency", latency)
        return record

    def _move(self, to: CallStatus) -> None:
        _check_move(self.record, to)
        self.record.status = to


# ───────────────────────── after a crash ─────────────────────────


def last_known_time(record: CallRecord) -> float:
    """The latest time the record itself vouches for: created, answered, or a turn's."""
    times = [record.created_at, record.answered_at or 0.0]
    for turn in record.turns:
        times += [turn.started_at or 0.0, turn.ended_at or 0.0]
    return max(times)


def reconciled(record: CallRecord, *, last_alive: float | None) -> CallRecord:
    """A record the daemon left dialing, ringing or answered when it stopped, ended as it was.

    It ends (if it was answered) or fails at ``last_alive`` — the daemon's
    last heartbeat — or at its own last known time if that is later or there
    is no heartbeat; outcome ``answered`` or ``interrupted``; ``error`` says
    the daemon stopped and when it was last known alive. A record already
    final is returned unchanged.
    """
    if record.status in FINAL_STATUSES:
        return record
    to = _final_status(record)
    _check_move(record, to)
    ended_at = max(last_alive or 0.0, last_known_time(record))
    alive = datetime.fromtimestamp(ended_at).astimezone().isoformat(timespec="seconds")
    answered = record.answered_at is not None
    return attrs.evolve(
        record,
        status=to,
        ended_at=ended_at,
        outcome="answered" if answered else INTERRUPTED,
        hangup_by=(record.hangup_by or "robot") if answered else record.hangup_by,
        error=f"interrupted: waihud stopped (last known alive {alive})",
        turns=list(record.turns),
        tags=list(record.tags),
    )


async def reconcile_unfinished(storage: Storage, node: str) -> list[CallRecord]:
    """End every call storage holds as unfinished (after a crash); returns them, filed.

    Call it once at start-up, before this daemon places a call and before its
    heartbeat writes: ``storage.last_alive(node)`` must still be the previous
    run's. A storage failure is raised (start-up cannot go on without storage).
    """
    unfinished = await storage.unfinished_calls()
    if not unfinished:
        return []
    last_alive = await storage.last_alive(node)
    done = [reconciled(record, last_alive=last_alive) for record in unfinished]
    for record in done:
        await storage.save_call(record)
    log.warning(
        "reconciled %d call(s) left unfinished when waihud stopped: %s",
        len(done),
        ", ".join(f"{r.id} ({r.number}, {r.status}, {r.outcome})" for r in done),
    )
    return done
