"""A call record's lifecycle, and the call path that drives it.

Storage is the real SQLite plugin on a file in tmp_path (wrapped only to keep
every snapshot it was asked to save); events go through a real ``EventBus``.
The call-path tests (``place_call``) use a trunk and a speech recogniser
with no network and no model — ``FakeTrunk``, ``FakeLeg``, ``FakeAsr`` below
— because no SIP peer or vosk model can run inside a unit test; the real
ones are exercised end to end in ``test_e2e_calls.py``. They implement the
real ``waihu.api`` protocols and register through the real hooks
(``Fakes``), so other tests (dispatcher, control handlers) use them too.

The calls run on trio's real clock: the media clock ticks while storage
works in its thread, and a mock clock would jump past every deadline then.
Nothing asserted depends on how long anything took; a call of the one-line
script lasts about ``HELLO_SECONDS``.
"""

from __future__ import annotations

import json
import logging
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import pytest
import trio

from waihu.api import (
    EVENT_KINDS,
    AsrResult,
    CallEvent,
    CallFailed,
    CallRecord,
    Codec,
    HangupSide,
    Provider,
    ProviderContext,
    TrunkError,
    Turn,
    hookimpl,
)
from waihu.call import CANCELLED_ERROR, CallServices, place_call
from waihu.call_lifecycle import (
    TRANSITIONS,
    CallLifecycle,
    IllegalTransition,
    reconcile_unfinished,
    reconciled,
    record_as_dict,
)
from waihu.config import CallConfig, MediaConfig
from waihu.control.render import render_call
from waihu.dialog.library import LoadedScript, ScriptLibrary, SpeechCache
from waihu.events import EventBus
from waihu.media.media_clock import MediaClock
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu_espeak.espeak import EspeakSynthesizer
from waihu_sqlite.storage import SqliteStorage

TIMEOUT = 30  # seconds of real time; the machine is shared
T0 = 1_795_000_000.0  # a fixed wall-clock start for records built by hand


# ───────────────────────── stand-ins for a SIP trunk and a recogniser ─────────────────────────


class FakeLeg:
    """An answered call with no network (``waihu.api.CallLeg``).

    The callee never says anything (no RTP arrives); what the robot sends is
    counted. ``hangup`` ends it from our side; ``callee_hangs_up`` from theirs.
    """

    def __init__(self) -> None:
        self.call_id = "fake-leg"
        self.codec = Codec("PCMU", 0)
        self.dtmf_payload_type: int | None = None
        self.ended = trio.Event()
        self.ended_by: HangupSide | None = None
        self.sent = 0
        self.hangups = 0

    def send_media(self, datagram: bytes) -> None:
        self.sent += 1

    async def receive_media(self) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def hangup(self) -> None:
        self.hangups += 1
        if not self.ended.is_set():
            self.ended_by = "robot"
            self.ended.set()

    def callee_hangs_up(self) -> None:
        self.ended_by = "callee"
        self.ended.set()

    async def send_dtmf(self, digits: str) -> None:
        raise NotImplementedError

    async def transfer(self, target: str) -> None:
        raise NotImplementedError


class FakeTrunk(Provider):
    """A trunk with no network (``waihu.api.Trunk``); the target says what happens.

    ``busy…`` answers 486, ``down…`` fails as a trunk error, ``hold…`` rings
    until ``let_go(target)`` (then 480) or until cancelled (``holding`` counts
    those ringing now), anything else rings once and answers with a
    ``FakeLeg`` (kept in ``legs``).
    """

    type_name: ClassVar[str] = "fake"

    @attrs.frozen(kw_only=True)
    class Config:
        pass

    def __init__(self, config: Any, context: ProviderContext) -> None:
        super().__init__(config, context)
        self.dialled: list[tuple[str, str | None, float]] = []
        self.legs: list[FakeLeg] = []
        self.holding = 0
        self._held: dict[str, trio.Event] = {}

    def let_go(self, target: str) -> None:
        """Let a ``hold…`` call give up ringing (480)."""
        self._held.setdefault(target, trio.Event()).set()

    async def dial(
        self,
        target: str,
        *,
        caller_id: str | None = None,
        ring_timeout: float = 60.0,
        on_progress: Any = None,
        on_early_media: Any = None,
    ) -> FakeLeg:
        self.dialled.append((target, caller_id, ring_timeout))
        await trio.sleep(0)
        if target.startswith("busy"):
            raise CallFailed(486, "Busy Here")
        if target.startswith("down"):
            raise TrunkError("no response from 127.0.0.1:5999")
        if on_progress is not None:
            on_progress(180, "Ringing")
        if target.startswith("hold"):
            self.holding += 1
            try:
                await self._held.setdefault(target, trio.Event()).wait()
            finally:
                self.holding -= 1
            raise CallFailed(480, "Temporarily Unavailable")
        leg = FakeLeg()
        self.legs.append(leg)
        return leg


class FakeStream:
    """A recogniser that hears nothing (``waihu.api.AsrStream``)."""

    def set_phrases(self, phrases: Any) -> None:
        pass

    async def accept(self, pcm: np.ndarray) -> None:
        pass

    async def finish(self) -> AsrResult:
        return AsrResult("", 0.0)

    def close(self) -> None:
        pass


class FakeAsr(Provider):
    """A speech recogniser with no model (``waihu.api.AsrEngine``)."""

    type_name: ClassVar[str] = "fake"

    @attrs.frozen(kw_only=True)
    class Config:
        pass

    def open_stream(self, *, sample_rate: int) -> FakeStream:
        return FakeStream()


class Fakes:
    """Registers the stand-ins through the real hooks."""

    @hookimpl
    def waihu_trunk_types(self) -> list[type[Provider]]:
        return [FakeTrunk]

    @hookimpl
    def waihu_asr_types(self) -> list[type[Provider]]:
        return [FakeAsr]


def context(tmp_path: Path, name: str = "test") -> ProviderContext:
    return ProviderContext(
        name=name,
        state_dir=tmp_path,
        log=logging.getLogger(f"waihu.test.{name}"),
        cpu_limiter=trio.CapacityLimiter(2),
    )


# ───────────────────────── a script that ends at once ─────────────────────────

HELLO_SCRIPT = """
[script]
name = "hello"
start = "hello"
on_silence = "hello"
priority = ["default"]
default_grade = "D"

[nodes.hello]
say = [{ text = "안녕하세요", recording = "hello.wav" }]
end = true
grade = "B"
tags = ["greeted"]
"""
HELLO_SECONDS = 0.2  # length of the hello recording


def write_hello_script(directory: Path) -> Path:
    """A one-node script (says hello, grade B) with its recording; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    rate = 8000
    t = np.arange(int(rate * HELLO_SECONDS)) / rate
    tone = (3000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(directory / "hello.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(tone.tobytes())
    path = directory / "hello.toml"
    path.write_text(HELLO_SCRIPT, encoding="utf-8")
    return path


async def load_hello(tmp_path: Path) -> LoadedScript:
    write_hello_script(tmp_path / "scripts")
    keywords = collect_provider_types(make_plugin_manager())["nlu"]["keywords"]
    library = ScriptLibrary(
        tmp_path / "scripts",
        lambda: keywords(keywords.Config(), context(tmp_path, "nlu")),
    )
    await library.load()
    assert library.problems == {}
    loaded = library.get("hello")
    assert loaded is not None
    return loaded


# ───────────────────────── storage that remembers every save ─────────────────────────


class KeepingStorage(SqliteStorage):
    """The real SQLite storage, keeping a copy of every record it was asked to save."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.saved: list[CallRecord] = []

    async def save_call(self, record: CallRecord) -> None:
        self.saved.append(attrs.evolve(record, turns=list(record.turns), tags=list(record.tags)))
        await super().save_call(record)


@asynccontextmanager
async def storage_in(tmp_path: Path) -> AsyncIterator[KeepingStorage]:
    storage = KeepingStorage(SqliteStorage.Config(path="calls.db"), context(tmp_path, "storage"))
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)
        yield storage
        nursery.cancel_scope.cancel()


def new_record(call_id: str = "c1", *, campaign: str | None = None) -> CallRecord:
    return CallRecord(
        id=call_id,
        number="01012345678",
        script="hello",
        trunk="office",
        created_at=T0,
        campaign_id=campaign,
    )


class Clock:
    """Wall-clock time for a lifecycle, moved by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def observed() -> tuple[EventBus, list[CallEvent]]:
    seen: list[CallEvent] = []

    class Observer:
        @hookimpl
        def waihu_call_event(self, event: CallEvent) -> None:
            seen.append(event)

    return EventBus(make_plugin_manager(entry_points=False, extra=[Observer()])), seen


def assert_matches_event_kinds(events: list[CallEvent]) -> None:
    for event in events:
        assert tuple(event.data) == EVENT_KINDS[event.kind], event


# ───────────────────────── the lifecycle alone ─────────────────────────


async def test_an_answered_call_goes_through_every_transition(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, seen = observed
    clock = Clock()
    with trio.fail_after(TIMEOUT):
        async with storage_in(tmp_path) as storage, trio.open_nursery() as nursery:
            life = CallLifecycle(
                new_record(campaign="spring"), storage=storage, events=bus, now=clock
            )
            await life.begin()
            nursery.start_soon(life.keep_filed)
            life.progress(100, "Trying")  # not a ring: published, status unchanged
            assert life.status == "dialing"
            life.progress(180, "Ringing")
            assert life.status == "ringing"
            clock.now = T0 + 3
            life.answered("PCMU")
            life.node("greeting")
            life.turn(Turn(speaker="robot", text="안녕하세요", node="greeting"))
            life.barge_in()
            life.utterance("네", 0.9)
            life.turn(Turn(speaker="callee", text="네", node="greeting", intent="affirm"))
            life.graded("A", ["interested", "interested", "hot"])
            life.hangup("callee")
            life.hangup("robot")  # the first side to hang up is the one kept
            clock.now = T0 + 40
            record = await life.end(hangup_by="robot")
            nursery.cancel_scope.cancel()
        stored = await _stored(tmp_path, record.id)
    assert [e.kind for e in seen] == [
        "dialing", "ringing", "ringing", "answered", "node", "turn", "barge_in", "utterance",
        "turn", "hangup", "hangup", "ended",
    ]  # fmt: skip
    assert_matches_event_kinds(seen)
    assert {e.campaign for e in seen} == {"spring"} and {e.call_id for e in seen} == {"c1"}
    assert seen[0].data == {"number": "01012345678", "script": "hello", "trunk": "office"}
    assert seen[-1].data == {
        "outcome": "answered",
        "grade": "A",
        "tags": ["interested", "hot"],
        "sip_status": 200,
        "hangup_by": "callee",
        "error": None,
    }
    assert (record.status, record.answered_at, record.ended_at) == ("ended", T0 + 3, T0 + 40)
    assert (record.sip_status, record.sip_reason, record.outcome) == (200, "OK", "answered")
    assert stored == record
    assert storage.saved[0].status == "dialing"  # filed before it was announced


async def test_no_record_is_ever_final_without_its_end_time_and_outcome(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _ = observed
    with trio.fail_after(TIMEOUT):
        async with storage_in(tmp_path) as storage, trio.open_nursery() as nursery:
            life = CallLifecycle(new_record(), storage=storage, events=bus)
            await life.begin()
            nursery.start_soon(life.keep_filed)
            life.answered("PCMA")
            for n in range(20):  # changes during a save coalesce; the newest state wins
                life.turn(Turn(speaker="robot", text=f"line {n}", node="n"))
                await trio.sleep(0)
            await life.end()
            nursery.cancel_scope.cancel()
    final = [s for s in storage.saved if s.status in ("ended", "failed")]
    assert final and all(s.ended_at is not None and s.outcome for s in final)
    assert len(storage.saved[-1].turns) == 20 and storage.saved[-1].status == "ended"
    assert len(storage.saved) < 2 + 20  # coalesced, not one save per change


# a failed call always says why: what it was told, else its SIP answer and what that means
FAILURE_REASONS = {
    486: "486 Busy Here",
    603: "603 Decline: the callee refused the call",
}


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        ({"sip_status": 486, "sip_reason": "Busy Here"}, ("failed", "busy", 486, None)),
        ({"sip_status": 603, "sip_reason": "Decline"}, ("failed", "rejected", 603, None)),
        ({"error": "trunk: no response", "trunk_error": True}, ("failed", "failed", None, None)),
        ({"error": "cancelled", "interrupted": True}, ("failed", "interrupted", None, None)),
        ({"error": "ValueError: bug"}, ("failed", "failed", None, None)),
    ],
)
async def test_an_unanswered_call_fails_with_the_outcome_of_its_answer(
    tmp_path: Path,
    observed: tuple[EventBus, list[CallEvent]],
    ending: dict[str, Any],
    expected: tuple[Any, ...],
) -> None:
    bus, seen = observed
    with trio.fail_after(TIMEOUT):
        async with storage_in(tmp_path) as storage:
            life = CallLifecycle(new_record(), storage=storage, events=bus)
            await life.begin()
            record = await life.end(**ending)
    assert (record.status, record.outcome, record.sip_status, record.hangup_by) == expected
    assert record.error == ending.get("error", FAILURE_REASONS.get(record.sip_status))
    assert record.error and record.ended_at is not None
    assert seen[-1].kind == "failed" and seen[-1].data["outcome"] == expected[1]
    assert_matches_event_kinds(seen)


async def test_a_cancelled_answered_call_ends_answered_hung_up_by_the_robot(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _ = observed
    with trio.fail_after(TIMEOUT):
        async with storage_in(tmp_path) as storage:
            life = CallLifecycle(new_record(), storage=storage, events=bus)
            await life.begin()
            life.answered("PCMU")
            with trio.CancelScope() as scope:
                scope.cancel()  # the final save is shielded: it happens anyway
                record = await life.end(error="cancelled", interrupted=True)
            assert (await storage.get_call("c1")) == record
    assert (record.status, record.outcome, record.hangup_by) == ("ended", "answered", "robot")


async def test_moves_the_table_does_not_allow_are_refused(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _ = observed
    assert TRANSITIONS["answered"] == {"ended"} and not TRANSITIONS["failed"]
    with trio.fail_after(TIMEOUT):
        async with storage_in(tmp_path) as storage:
            life = CallLifecycle(new_record(), storage=storage, events=bus)
            await life.begin()
            life.answered("PCMU")
            with pytest.raises(IllegalTransition, match="from answered to answered"):
                life.answered("PCMU")
            life.progress(180, "Ringing")  # late news: published, the call stays answered
            assert life.status == "answered"
            await life.end()
            with pytest.raises(IllegalTransition, match="from ended to ended"):
                await life.end()
            with pytest.raises(IllegalTransition, match="begins as ended"):
                await life.begin()


async def test_a_final_save_that_fails_puts_the_whole_record_in_the_log(
    tmp_path: Path,
    observed: tuple[EventBus, list[CallEvent]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus, seen = observed
    storage = SqliteStorage(SqliteStorage.Config(path="calls.db"), context(tmp_path))  # not open
    life = CallLifecycle(new_record(), storage=storage, events=bus)
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.ERROR, logger="waihu.call"):
        await life.begin()  # logged, and the call goes on
        record = await life.end(sip_status=486, sip_reason="Busy Here")
    (line,) = [r.getMessage() for r in caplog.records if "unsaved record: " in r.getMessage()]
    assert json.loads(line.split("unsaved record: ", 1)[1])["outcome"] == "busy"
    assert record.status == "failed" and seen[-1].kind == "failed"


# ───────────────────────── after a crash ─────────────────────────


def test_a_record_left_answered_ends_at_the_last_heartbeat() -> None:
    record = attrs.evolve(
        new_record(), status="answered", answered_at=T0 + 3, sip_status=200, sip_reason="OK"
    )
    record.turns.append(Turn(speaker="robot", text="hi", node="n", started_at=T0 + 4))
    done = reconciled(record, last_alive=T0 + 20)
    assert (done.status, done.outcome, done.ended_at, done.hangup_by) == (
        "ended", "answered", T0 + 20, "robot"
    )  # fmt: skip
    when = datetime.fromtimestamp(T0 + 20).astimezone().isoformat(timespec="seconds")
    assert done.error == f"interrupted: waihud stopped (last known alive {when})"
    assert record.status == "answered"  # the original is left as it was


def test_a_record_left_ringing_fails_interrupted_at_its_own_last_time() -> None:
    record = attrs.evolve(new_record(), status="ringing")
    done = reconciled(record, last_alive=None)
    assert (done.status, done.outcome, done.ended_at, done.hangup_by) == (
        "failed", "interrupted", T0, None
    )  # fmt: skip
    # a heartbeat older than the call (it was placed between two beats) does not end it early
    answered = attrs.evolve(new_record(), status="answered", answered_at=T0 + 2)
    answered.turns.append(Turn(speaker="callee", text="네", node="n", ended_at=T0 + 9))
    assert reconciled(answered, last_alive=T0 - 1).ended_at == T0 + 9
    final = attrs.evolve(new_record(), status="failed", ended_at=T0 + 1, outcome="busy")
    assert reconciled(final, last_alive=T0 + 50) is final


async def test_unfinished_calls_in_storage_are_reconciled_and_filed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with storage_in(tmp_path) as storage:
            await storage.save_call(attrs.evolve(new_record("a"), status="dialing"))
            await storage.save_call(
                attrs.evolve(new_record("b"), status="answered", answered_at=T0 + 1)
            )
            busy = attrs.evolve(
                new_record("c"), status="failed", ended_at=T0 + 2, outcome="busy", sip_status=486
            )
            await storage.save_call(busy)
            await storage.set_alive("node-1", T0 + 30)
            await storage.set_alive("node-2", T0 + 99)  # another daemon's beat is not ours
            with caplog.at_level(logging.WARNING, logger="waihu.call"):
                done = await reconcile_unfinished(storage, "node-1")
            assert await storage.unfinished_calls() == []
            a, b, c = [await storage.get_call(i) for i in "abc"]
            assert await reconcile_unfinished(storage, "node-1") == []
    assert sorted(r.id for r in done) == ["a", "b"]
    assert (a.status, a.outcome, a.ended_at) == ("failed", "interrupted", T0 + 30)
    assert (b.status, b.outcome, b.ended_at) == ("ended", "answered", T0 + 30)
    assert c == busy
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("reconciled 2 call(s) left unfinished when waihud stopped: ")
    assert "a (01012345678, failed, interrupted)" in warning


# ───────────────────────── the call path, with a trunk that needs no network ─────────────────


@asynccontextmanager
async def call_services(tmp_path: Path, bus: EventBus) -> AsyncIterator[CallServices]:
    async with storage_in(tmp_path) as storage, trio.open_nursery() as nursery:
        clock = MediaClock()
        await nursery.start(clock.run)
        yield CallServices(
            storage=storage,
            asr=FakeAsr(FakeAsr.Config(), context(tmp_path, "asr")),
            clock=clock,
            events=bus,
            media=MediaConfig(),
            call=CallConfig(caller_id="02012345678", ring_timeout=30.0),
            recordings_dir=tmp_path / "recordings",
        )
        nursery.cancel_scope.cancel()


async def test_place_call_files_grade_tags_answer_time_and_recording(
    tmp_path: Path,
    observed: tuple[EventBus, list[CallEvent]],
) -> None:
    bus, seen = observed
    loaded = await load_hello(tmp_path)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            record = await place_call(services, trunk, new_record(), loaded, ring_timeout=12.0)
            stored = await services.storage.get_call(record.id)
    assert trunk.dialled == [("01012345678", "02012345678", 12.0)]  # caller id from [call]
    assert (record.status, record.outcome, record.grade, record.tags) == (
        "ended", "answered", "B", ["greeted"]
    )  # fmt: skip
    assert record.answered_at is not None and record.answered_at <= record.ended_at
    assert (record.hangup_by, record.sip_status, record.error) == ("robot", 200, None)
    assert [(t.speaker, t.node, t.text) for t in record.turns] == [("robot", "hello", "안녕하세요")]
    assert record.recording and Path(record.recording).exists()
    assert stored == record
    (leg,) = trunk.legs
    assert leg.ended_by == "robot" and leg.sent >= HELLO_SECONDS * 50  # 20 ms packets
    kinds = [e.kind for e in seen]
    assert kinds[:3] == ["dialing", "ringing", "answered"] and kinds[-1] == "ended"
    assert "turn" in kinds and "node" in kinds
    assert_matches_event_kinds(seen)


@pytest.mark.parametrize(
    ("target", "status", "outcome", "sip", "error"),
    [
        ("busy", "failed", "busy", 486, "486 Busy Here"),
        ("down", "failed", "failed", None, "trunk: no response from 127.0.0.1:5999"),
    ],
)
async def test_place_call_files_a_failed_dial(
    tmp_path: Path,
    observed: tuple[EventBus, list[CallEvent]],
    target: str,
    status: str,
    outcome: str,
    sip: int | None,
    error: str | None,
) -> None:
    bus, seen = observed
    loaded = await load_hello(tmp_path)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            record = attrs.evolve(new_record(), number=target)
            await place_call(services, trunk, record, loaded)
    assert (record.status, record.outcome, record.sip_status, record.error) == (
        status, outcome, sip, error
    )  # fmt: skip
    assert record.answered_at is None and record.turns == [] and record.grade is None
    assert trunk.dialled == [(target, "02012345678", 30.0)]
    assert [e.kind for e in seen] == ["dialing", "failed"]


async def test_place_call_cancelled_while_ringing_is_filed_interrupted(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, seen = observed
    loaded = await load_hello(tmp_path)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    record = attrs.evolve(new_record(), number="hold")
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(place_call, services, trunk, record, loaded)
                while trunk.holding == 0:
                    await trio.sleep(0)
                nursery.cancel_scope.cancel()
            stored = await services.storage.get_call(record.id)
    assert (record.status, record.outcome, record.error) == (
        "failed", "interrupted", CANCELLED_ERROR
    )  # fmt: skip
    assert stored == record and [e.kind for e in seen] == ["dialing", "ringing", "failed"]


async def test_place_call_when_the_callee_hangs_up_first(
    tmp_path: Path,
    observed: tuple[EventBus, list[CallEvent]],
) -> None:
    bus, seen = observed
    loaded = await load_hello(tmp_path)

    class HangingUpTrunk(FakeTrunk):
        async def dial(self, target: str, **options: Any) -> FakeLeg:
            leg = await super().dial(target, **options)
            leg.callee_hangs_up()  # gone before the robot says a word
            return leg

    trunk = HangingUpTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            record = await place_call(services, trunk, new_record(), loaded)
    # graded by the engine's verdict on what happened: it entered the end node (grade B)
    assert (record.status, record.hangup_by, record.grade) == ("ended", "callee", "B")
    assert ("hangup", {"by": "callee"}) in [(e.kind, dict(e.data)) for e in seen]
    assert trunk.legs[0].hangups == 0  # nothing to hang up: the callee did


# ───────────────────────── verdicts, and lines spoken by TTS ─────────────────────────


async def test_the_grade_reason_is_filed_and_shown_with_the_grade(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _seen = observed
    with trio.fail_after(TIMEOUT):
        async with storage_in(tmp_path) as storage:
            life = CallLifecycle(new_record(), storage=storage, events=bus, now=Clock())
            await life.begin()
            life.answered("PCMU")
            life.graded("A", ["hot"], "asked the price twice and agreed")
            record = await life.end()
            stored = await storage.get_call("c1")
            life2 = CallLifecycle(new_record("c2"), storage=storage, events=bus, now=Clock())
            life2.graded("C", [], "first reason")
            life2.graded("D")  # a later verdict without a rule's reason drops the old one
    assert stored == record and stored.grade_reason == "asked the price twice and agreed"
    assert life2.record.grade_reason is None
    shown = render_call(record_as_dict(attrs.evolve(stored, script_hash="0123456789ab" + "f" * 52)))
    assert "  grade       A  (asked the price twice and agreed)" in shown.splitlines()
    assert "  script      hello  (version 0123456789ab)" in shown.splitlines()


def write_script(directory: Path, text: str) -> None:
    """A script file beside the hello recording (``hello.wav``)."""
    write_hello_script(directory)
    (directory / "hello.toml").unlink()
    (directory / "test.toml").write_text(text, encoding="utf-8")


async def load_script_text(
    tmp_path: Path, text: str, speech: SpeechCache | None = None
) -> LoadedScript:
    write_script(tmp_path / "scripts", text)
    keywords = collect_provider_types(make_plugin_manager())["nlu"]["keywords"]
    library = ScriptLibrary(
        tmp_path / "scripts",
        lambda: keywords(keywords.Config(), context(tmp_path, "nlu")),
        speech=speech,
    )
    await library.load()
    assert library.problems == {}
    (loaded,) = library.scripts.values()
    return loaded


class CountingTts:
    """The real espeak-ng synthesiser, counting the lines passed on to it."""

    def __init__(self, tmp_path: Path) -> None:
        self.inner = EspeakSynthesizer(EspeakSynthesizer.Config(), context(tmp_path, "tts"))
        self.texts: list[str] = []

    async def synthesize(self, text: str, *, language: str, sample_rate: int) -> np.ndarray:
        self.texts.append(text)
        return await self.inner.synthesize(text, language=language, sample_rate=sample_rate)


TTS_SCRIPT = """
[script]
name = "tts"
language = "ko"
start = "hello"

[nodes.hello]
say = [{ text = "{name}님" }]
end = true
grade = "B"
"""


async def test_a_line_with_a_variable_is_rendered_while_the_call_rings(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _seen = observed
    tts = CountingTts(tmp_path)
    speech = SpeechCache(tts)
    loaded = await load_script_text(tmp_path, TTS_SCRIPT, speech)
    assert tts.texts == []  # nothing the same in every call: nothing spoken at load

    class RingingTrunk(FakeTrunk):
        async def dial(self, target: str, **options: Any) -> FakeLeg:
            # answers only once the greeting has been rendered: rendering began before
            while speech.peek("김님", language="ko", sample_rate=8000) is None:
                await trio.sleep(0.001)
            return await super().dial(target, **options)

    trunk = RingingTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            services = attrs.evolve(services, speech=speech)
            record = await place_call(
                services, trunk, new_record(), loaded, variables={"name": "김"}
            )
    assert [(t.speaker, t.text) for t in record.turns] == [("robot", "김님")]
    assert tts.texts == ["김님"]  # rendered once, ahead; the call took it
    assert (speech.misses, speech.hits) == (1, 0)  # ready when said: not waited for
    audio = speech.peek("김님", language="ko", sample_rate=8000)
    assert audio is not None and audio.size > 8000 // 5
    (leg,) = trunk.legs
    assert leg.sent >= audio.size // 160  # every 20 ms frame of it went out
    assert (record.grade, record.error) == ("B", None)


async def test_a_line_set_mid_call_is_synthesised_when_said_and_then_played(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _seen = observed
    tts = CountingTts(tmp_path)
    speech = SpeechCache(tts)
    text = TTS_SCRIPT.replace(
        'say = [{ text = "{name}님" }]',
        'say = [{ text = "{stage}요" }]\nset = { stage = "네" }',
    )
    loaded = await load_script_text(tmp_path, text, speech)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            services = attrs.evolve(services, speech=speech)
            record = await place_call(services, trunk, new_record(), loaded)
    # "{stage}" is set by the script on entering the node: it cannot be rendered ahead
    assert tts.texts == ["네요"]
    assert [(t.speaker, t.text) for t in record.turns] == [("robot", "네요")]
    audio = speech.peek("네요", language="ko", sample_rate=8000)
    assert audio is not None and trunk.legs[0].sent >= audio.size // 160
    assert (record.grade, record.error) == ("B", None)


ORDER_SCRIPT = """
[script]
name = "order"
language = "ko"
start = "hello"

[handlers.no_input]
limit = 1
then = { say = [{ text = "{stage}요" }], goto = "bye" }

[nodes.hello]
say = [{ text = "안녕하세요", recording = "hello.wav" }]
set = { stage = "네" }
silence_timeout = 0.2
on = { default = "bye" }

[nodes.bye]
say = [{ text = "감사합니다", recording = "hello.wav" }]
end = true
"""


async def test_a_recorded_line_waits_behind_one_still_being_synthesised(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _seen = observed
    speech = SpeechCache(CountingTts(tmp_path))
    loaded = await load_script_text(tmp_path, ORDER_SCRIPT, speech)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            services = attrs.evolve(services, speech=speech)
            record = await place_call(services, trunk, new_record(), loaded)
    said = [(t.text, t.started_at, t.ended_at) for t in record.turns if t.speaker == "robot"]
    assert [text for text, _start, _end in said] == ["안녕하세요", "네요", "감사합니다"]
    # the silence handler's line was synthesised when said; the recording after it waited
    (_, _, hello_end), (_, line_start, line_end), (_, bye_start, _) = said
    assert hello_end <= line_start < line_end <= bye_start


async def test_a_fixed_line_plays_what_the_script_loaded_whatever_the_cache_dropped(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _seen = observed
    tts = CountingTts(tmp_path)
    speech = SpeechCache(tts, max_bytes=1)  # keeps nothing
    text = TTS_SCRIPT.replace('"{name}님"', '"네"')
    loaded = await load_script_text(tmp_path, text, speech)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            services = attrs.evolve(services, speech=speech)
            record = await place_call(services, trunk, new_record(), loaded)
    assert tts.texts == ["네"]  # at load only
    assert len(speech) == 0
    assert [(t.speaker, t.text) for t in record.turns] == [("robot", "네")]
    assert trunk.legs[0].sent >= loaded.speech["네"].size // 160


async def test_a_callee_hanging_up_during_a_dnc_closing_line_is_still_opted_out(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _seen = observed
    text = """
[script]
start = "bye_dnc"

[nodes.bye_dnc]
say = [{ text = "다시 연락드리지 않겠습니다", recording = "hello.wav" }]
end = true
dnc = true
grade = "F"
"""
    write_script(tmp_path / "scripts", text)
    rate = 8000  # a closing line of three seconds, so the callee is gone before its end
    with wave.open(str(tmp_path / "scripts" / "hello.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((np.ones(3 * rate) * 2000).astype("<i2").tobytes())
    loaded = await load_script_text(tmp_path, text)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    record = attrs.evolve(new_record(), number="+821012345678")
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(place_call, services, trunk, record, loaded)
                await until_true(lambda: trunk.legs and trunk.legs[0].sent > 0)
                trunk.legs[0].callee_hangs_up()
            listed = await services.storage.dnc_contains("+821012345678")
    assert (record.hangup_by, record.grade) == ("callee", "F")
    assert "dnc" in record.tags
    assert listed


async def until_true(condition: Any) -> None:
    while not condition():
        await trio.sleep(0.005)


GRADED_SCRIPT = """
[script]
name = "graded"
start = "hello"

[nodes.hello]
say = [{ text = "안녕하세요", recording = "hello.wav" }]
on = { default = "bye" }

[nodes.bye]
say = [{ text = "감사합니다", recording = "hello.wav" }]
end = true
grade = "C"

[[grading]]
grade = "E"
tags = ["gone"]
reason = "hung up at the greeting"
when = { hangup_by = "callee", not_reached = ["bye"] }

[[grading]]
grade = "B"
reason = "heard the whole script"
when = { completed = true }
"""


async def test_a_callee_hanging_up_mid_call_is_graded_by_the_rules_with_their_reason(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, seen = observed
    loaded = await load_script_text(tmp_path, GRADED_SCRIPT)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(place_call, services, trunk, new_record(), loaded)
                await until_true(lambda: trunk.legs and trunk.legs[0].sent > 0)
                trunk.legs[0].callee_hangs_up()  # while the greeting plays
            stored = await services.storage.get_call("c1")
    assert (stored.grade, stored.tags, stored.grade_reason) == (
        "E", ["gone"], "hung up at the greeting"
    )  # fmt: skip
    assert (stored.hangup_by, stored.error) == ("callee", None)
    assert seen[-1].data["grade"] == "E"


async def test_an_ending_files_the_rules_reason_and_a_transfer_is_tagged_and_hung_up(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _seen = observed
    text = """
[script]
start = "hello"

[nodes.hello]
say = [{ text = "상담원에게 연결합니다", recording = "hello.wav" }]
end = true
grade = "C"
transfer = "sales"

[[grading]]
grade = "B"
reason = "heard the whole script"
when = { completed = true }
"""
    loaded = await load_script_text(tmp_path, text)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            record = await place_call(services, trunk, new_record(), loaded)
    assert (record.grade, record.grade_reason) == ("B", "heard the whole script")
    assert "transfer" in record.tags
    assert (record.hangup_by, trunk.legs[0].ended_by) == ("robot", "robot")


async def _stored(tmp_path: Path, call_id: str) -> CallRecord | None:
    storage = SqliteStorage(SqliteStorage.Config(path="calls.db"), context(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)
        try:
            return await storage.get_call(call_id)
        finally:
            nursery.cancel_scope.cancel()


def test_fakes_register_through_the_real_hooks() -> None:
    types = collect_provider_types(make_plugin_manager(extra=[Fakes()]))
    assert types["trunk"]["fake"] is FakeTrunk and types["asr"]["fake"] is FakeAsr
