"""The campaign scheduler on trio's mock clock: windows, lines, retries, breaker, recovery.

Everything is real — the SQLite store (a file), the dispatcher, the call path,
the dialogue engine, the media clock, the event bus, the outbox — except the
trunk and the recogniser: no SIP peer can run on a mock clock, so
``NumberedTrunk`` stands in for one, registered through the real hook, and
behaves by the dialled number's last digit as the sipp switchboard does
(``test_e2e_campaign`` dials that for real). The scheduler's wall clock is
``T0 + trio.current_time()``, so days pass in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import attrs
import pytest
import trio
import trio.testing
from test_call_lifecycle import HELLO_SCRIPT, FakeAsr, FakeLeg, write_hello_script

from waihu.api import (
    Attempt,
    CallFailed,
    CallRecord,
    CampaignRow,
    Contact,
    Provider,
    ProviderContext,
    TrunkError,
    TrunkStatus,
    hookimpl,
)
from waihu.campaign.scheduler import CampaignScheduler
from waihu.campaign.service import CampaignError, CampaignService
from waihu.config import load_config
from waihu.dialog.library import ScriptLibrary
from waihu.dispatcher import CallDispatcher
from waihu.events import EventBus
from waihu.media.media_clock import MediaClock
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu.providers import Providers

DAY = 86400.0
# Thursday 2026-03-05 00:00 UTC: the US moves its clocks on Sunday 2026-03-08
T0 = dt.datetime(2026, 3, 5, tzinfo=dt.UTC).timestamp()
SIMULATED_LIMIT = 6 * DAY  # trio seconds: a test that waits longer than this is stuck


def wall() -> float:
    return T0 + trio.current_time()


class NumberedTrunk(Provider):
    """A trunk with no network: the last digit of the dialled number says what happens.

    0 answers (the callee stays silent; the script says its line and hangs
    up), 1 busy (486), 2 no answer (480), 3 declines (603), 4 does not exist
    (404), 5 the trunk fails (503), 6 no response (trunk error), 7 answers and
    hangs up at once, 8 rings for ``RING_SECONDS`` and then answers. Every dial
    is kept with its wall-clock time; ``up``/``most_up`` count calls in progress.
    ``state`` is what ``status()`` reports (a test sets it to ``down``).
    """

    type_name: ClassVar[str] = "numbered"
    RING_SECONDS: ClassVar[float] = 20.0

    @attrs.frozen(kw_only=True)
    class Config:
        pass

    def __init__(self, config: Any, context: ProviderContext) -> None:
        super().__init__(config, context)
        self.dialled: list[tuple[str, float]] = []
        self.up = 0
        self.most_up = 0
        self.state = "up"

    def status(self) -> TrunkStatus:
        return TrunkStatus(state=self.state, since=T0)  # type: ignore[arg-type]

    async def dial(
        self,
        target: str,
        *,
        caller_id: str | None = None,
        ring_timeout: float = 60.0,
        on_progress: Any = None,
        on_early_media: Any = None,
    ) -> FakeLeg:
        self.dialled.append((target, wall()))
        self.up += 1
        self.most_up = max(self.most_up, self.up)
        try:
            digit = target[-1]
            if digit == "1":
                raise CallFailed(486, "Busy Here")
            if digit == "2":
                await trio.sleep(ring_timeout)
                raise CallFailed(408, "Request Timeout")
            if digit == "3":
                raise CallFailed(603, "Decline")
            if digit == "4":
                raise CallFailed(404, "Not Found")
            if digit == "5":
                raise CallFailed(503, "Service Unavailable")
            if digit == "6":
                raise TrunkError("no response from 127.0.0.1:5999")
            if digit == "8":
                await trio.sleep(self.RING_SECONDS)
            leg = _CountedLeg(self)
            if digit == "7":
                leg.callee_hangs_up()
            return leg
        except BaseException:
            self.up -= 1
            raise


class _CountedLeg(FakeLeg):
    """A FakeLeg that tells its trunk when the call is over."""

    def __init__(self, trunk: NumberedTrunk) -> None:
        super().__init__()
        self._trunk = trunk
        self._counted = False

    def _over(self) -> None:
        if not self._counted:
            self._counted = True
            self._trunk.up -= 1

    async def hangup(self) -> None:
        await super().hangup()
        self._over()

    def callee_hangs_up(self) -> None:
        super().callee_hangs_up()
        self._over()


class Stand:
    @hookimpl
    def waihu_trunk_types(self) -> list[type[Provider]]:
        return [NumberedTrunk]

    @hookimpl
    def waihu_asr_types(self) -> list[type[Provider]]:
        return [FakeAsr]


CONFIG = """
[daemon]
max_calls = 20
state_dir = "{tmp}"
scripts_dir = "{tmp}/scripts"

[media]
record = false

[call]
caller_id = "02000000000"

[trunk.office]
type = "numbered"
calls_per_minute = 600
lines = {trunk_lines}
{dial_format}

[asr.default]
type = "fake"

[nlu.default]
type = "keywords"

[storage]
type = "sqlite"
path = "waihu.db"
"""


@attrs.define
class Rig:
    service: CampaignService
    scheduler: CampaignScheduler
    dispatcher: CallDispatcher
    providers: Providers
    bus: EventBus

    @property
    def store(self) -> Any:
        return self.providers.storage

    @property
    def trunk(self) -> NumberedTrunk:
        return self.providers.get("trunk", "office")  # type: ignore[no-any-return]

    async def campaign(self, contacts: list[tuple[str, str | None]], **settings: Any) -> str:
        table = {
            "name": "test",
            "script": "hello",
            "trunk": "office",
            "caller_id": "02000000000",
            "windows": ["daily 00:00-24:00"],
            "dial_format": "e164",
            **settings,
        }
        made = await self.service.create(table, user="tester")
        await self.service.add_contacts(
            made["id"],
            [
                {"number": n, "timezone": tz, "line": i + 2, "variables": {}}
                for i, (n, tz) in enumerate(contacts)
            ],
            user="tester",
        )
        return str(made["id"])

    async def until_state(self, campaign_id: str, *states: str) -> CampaignRow:
        while True:
            row = await self.store.get_campaign(campaign_id)
            if row.state in states:
                return row  # type: ignore[no-any-return]
            await trio.sleep(1)


@pytest.fixture
def threads_hold_the_clock(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> trio.testing.MockClock:
    """The mock clock jumps when every task waits, and a task waiting for a worker
    thread (SQLite, script loading) waits too: without this, a jump could leap to the
    next retry or to the test's deadline while a query runs. While any thread works,
    the clock does not jump at all (it waits for the thread as a plain call would)."""
    run_sync = trio.to_thread.run_sync
    busy = 0

    async def held(fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal busy
        busy += 1
        autojump_clock.autojump_threshold = math.inf
        try:
            return await run_sync(fn, *args, **kwargs)
        finally:
            busy -= 1
            if not busy:
                autojump_clock.autojump_threshold = 0

    monkeypatch.setattr(trio.to_thread, "run_sync", held)
    return autojump_clock


@asynccontextmanager
async def rig(
    tmp_path: Path,
    *,
    frequency_cap_hours: float = 0,
    trunk_lines: int = 20,
    dial_format: str = "",
    reconcile_first: Callable[..., Any] | None = None,
) -> AsyncIterator[Rig]:
    write_hello_script(tmp_path / "scripts")
    path = tmp_path / "waihud.toml"
    path.write_text(
        CONFIG.format(tmp=tmp_path, trunk_lines=trunk_lines, dial_format=dial_format),
        encoding="utf-8",
    )
    pm = make_plugin_manager(extra=[Stand()])
    types = collect_provider_types(pm)
    config = load_config(path, types)
    providers = Providers(config, types, state_dir=tmp_path, cpu_limiter=trio.CapacityLimiter(2))
    bus = EventBus(pm)
    async with trio.open_nursery() as nursery:
        await providers.start_all(nursery)
        if reconcile_first is not None:
            await reconcile_first(providers.storage)
        clock = MediaClock()
        await nursery.start(clock.run)
        library = ScriptLibrary(tmp_path / "scripts", lambda: providers.build("nlu", "default"))
        await library.load()
        dispatcher = CallDispatcher(config, providers, library, clock=clock, events=bus)
        await nursery.start(dispatcher.run)
        scheduler = CampaignScheduler(
            store=providers.storage,
            calls=providers.storage,
            dispatcher=dispatcher,
            events=bus,
            outboxes={},
            node="test-node",
            frequency_cap_hours=frequency_cap_hours,
            now=wall,
        )
        await nursery.start(scheduler.run)
        service = CampaignService(
            store=providers.storage,
            calls=providers.storage,
            scheduler=scheduler,
            dispatcher=dispatcher,
            now=wall,
        )
        yield Rig(service, scheduler, dispatcher, providers, bus)
        await dispatcher.drain(0)
        nursery.cancel_scope.cancel()


# ───────────────────────── scenarios ─────────────────────────


async def test_two_lines_fifty_contacts_never_more_than_two_up_and_each_ends_once(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    numbers = [f"+861380013{i:03d}{d}" for i in range(10) for d in "01238"]
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path) as r:
            cid = await r.campaign([(n, None) for n in numbers], lines=2, calls_per_minute=600)
            await r.service.change(cid, "start", user="tester")
            await r.until_state(cid, "completed")
            assert r.trunk.most_up == 2
            counts = await r.store.contact_counts(cid)
            # busy and no answer are retried up to max_attempts (3), then done
            assert dict(counts) == {"done": 50}
            page = await r.store.campaign_attempts(cid, limit=1000)
            by_number: dict[str, list[Attempt]] = {}
            for attempt, _contact in page:
                by_number.setdefault(attempt.number, []).append(attempt)
                assert attempt.outcome is not None and attempt.ended_at is not None
            for number, attempts in by_number.items():
                expected = 3 if number[-1] in "12" else 1
                assert len(attempts) == expected, number
            dialled = [t for t, _ in r.trunk.dialled]
            assert len(dialled) == sum(len(a) for a in by_number.values())
            assert len(set(a.call_id for a, _ in page)) == len(page)


ATTEMPTS = 6  # busy every time: dialled this often, 5 hours apart, only inside windows


async def test_windows_in_each_contacts_zone_across_the_us_dst_change(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    new_york = ZoneInfo("America/New_York")
    contacts = [(f"+8613800138{i:02d}1", "Asia/Shanghai") for i in range(3)]
    contacts += [(f"+1212555{i:03d}1", "America/New_York") for i in range(3)]
    zones = {n: (shanghai if tz == "Asia/Shanghai" else new_york) for n, tz in contacts}
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path) as r:
            cid = await r.campaign(
                contacts,
                windows=["daily 09:00-20:00"],
                max_attempts=ATTEMPTS,
                retry={"busy": {"delay_minutes": 300, "max_attempts": ATTEMPTS}},
            )
            threads_hold_the_clock.jump(2 * DAY)  # start on Saturday 7 March, the eve of the change
            await r.service.change(cid, "start", user="tester")
            await r.until_state(cid, "completed")
    assert len(r.trunk.dialled) == 6 * ATTEMPTS
    for target, at in r.trunk.dialled:
        local = dt.datetime.fromtimestamp(at, zones[target])
        assert 9 <= local.hour < 20, (target, local)
    ny = [dt.datetime.fromtimestamp(at, new_york) for t, at in r.trunk.dialled if t[:2] == "+1"]
    # New York was dialled on both sides of its clock change, and never at night
    assert min(ny).date() < dt.date(2026, 3, 8) <= max(ny).date()
    assert {d.utcoffset() for d in ny} == {dt.timedelta(hours=-5), dt.timedelta(hours=-4)}


async def test_a_trunk_failing_everything_trips_the_breaker_and_pauses_the_campaign(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    numbers = [f"+86138001380{i:02d}5" for i in range(30)]
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path) as r:
            cid = await r.campaign([(n, None) for n in numbers], lines=1)
            await r.service.change(cid, "start", user="tester")
            row = await r.until_state(cid, "paused")
            assert row.reason is not None and "trunk office failing" in row.reason
            assert "503" in row.reason
            await trio.sleep(3600)  # an hour later: nothing more was dialled
            assert len(r.trunk.dialled) == 10
            shown = await r.service.show(cid)
            assert shown["state"] == "paused" and "503" in shown["reason"]
            counts = await r.store.contact_counts(cid)
            assert counts.get("pending", 0) == 30  # failed contacts wait for a retry
            with pytest.raises(CampaignError):
                await r.service.change(cid, "pause", user="tester")


async def test_a_trunk_that_is_down_is_waited_for_not_dialled_and_the_campaign_goes_on(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    numbers = [f"+86138001380{i:02d}0" for i in range(12)]  # more than the breaker's ten
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path) as r:
            r.trunk.state = "down"
            cid = await r.campaign([(n, None) for n in numbers], lines=2)
            await r.service.change(cid, "start", user="tester")
            await trio.sleep(3600)  # an hour down: nothing dialled, no attempt spent
            assert r.trunk.dialled == []
            row = await r.store.get_campaign(cid)
            assert row is not None and row.state == "running"
            assert (await r.store.contact_counts(cid)).get("pending", 0) == len(numbers)
            r.trunk.state = "up"  # back: the campaign goes on by itself
            await r.until_state(cid, "completed")
            assert sorted(n for n, _ in r.trunk.dialled) == sorted(numbers)


async def test_do_not_call_numbers_are_skipped_and_rejections_never_retried(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path) as r:
            cid = await r.campaign(
                [("+8613800138003", None), ("+8613800138004", None), ("+8613800138010", None)]
            )
            await r.service.dnc_add(["+8613800138010"], "asked", user="tester")
            await r.service.change(cid, "start", user="tester")
            await r.until_state(cid, "completed")
            dialled = sorted(t for t, _ in r.trunk.dialled)
            assert dialled == ["+8613800138003", "+8613800138004"]
            shown = await r.service.show(cid)
            assert shown["outcomes"] == {"rejected": 1, "invalid_number": 1}
            assert shown["contacts"] == {"done": 2, "skipped": 1}


async def test_answered_calls_are_graded_and_the_funnel_counts_their_nodes(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path) as r:
            cid = await r.campaign([("+8613800138000", None), ("+8613800138007", None)])
            await r.service.change(cid, "start", user="tester")
            await r.until_state(cid, "completed")
            shown = await r.service.show(cid)
            assert shown["outcomes"] == {"answered": 2}
            # the callee of ...7 hangs up before the line ends: the end node was reached, so
            # its grade stands (a callee hanging up on the goodbye keeps the call's grade)
            assert shown["grades"] == {"B": 2}
            funnel = {row["node"]: row for row in shown["funnel"]}
            assert funnel["hello"]["reached"] == 2
            assert funnel["hello"]["hung_up"] == 1


async def test_a_dnc_end_node_lists_the_number_before_hanging_up_and_files_opted_out(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    scripts = tmp_path / "scripts"
    write_hello_script(scripts)
    opt_out = HELLO_SCRIPT.replace('name = "hello"', 'name = "optout"') + "dnc = true\n"
    (scripts / "optout.toml").write_text(opt_out, encoding="utf-8")
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path) as r:
            cid = await r.campaign([("+8613800138000", None)], script="optout")
            await r.service.change(cid, "start", user="tester")
            await r.until_state(cid, "completed")
            assert await r.store.dnc_contains("+8613800138000")
            shown = await r.service.show(cid)
            assert shown["outcomes"] == {"opted_out": 1}
            # a second campaign never dials it
            other = await r.campaign([("+8613800138000", None)], name="again")
            assert (await r.store.contact_counts(other)) == {}
            listed = await r.service.dnc_list()
            assert [e["number"] for e in listed] == ["+8613800138000"]
            assert listed[0]["reason"].startswith("asked in call ")


async def test_a_contact_without_a_variable_the_script_now_needs_is_skipped_not_retried(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    """The contacts were imported before the script began to greet by {name}."""
    scripts = tmp_path / "scripts"
    write_hello_script(scripts)
    named = HELLO_SCRIPT.replace('name = "hello"', 'name = "named"').replace(
        'text = "안녕하세요"', 'text = "안녕하세요 {name}"'
    )
    (scripts / "named.toml").write_text(named, encoding="utf-8")
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path) as r:
            cid = await r.campaign([("+8613800138000", None)], script="named")
            await r.service.change(cid, "start", user="tester")
            await r.until_state(cid, "completed")
            assert r.trunk.dialled == []
            shown = await r.service.show(cid)
            assert shown["contacts"] == {"skipped": 1}


async def test_campaigns_sharing_a_trunk_take_its_lines_in_turn(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    """Two campaigns of 3 lines each on a trunk of 2 lines: neither starves the other."""
    first = [(f"+86138001381{i:02d}8", None) for i in range(8)]
    second = [(f"+86139001391{i:02d}8", None) for i in range(8)]
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path, trunk_lines=2) as r:
            a = await r.campaign(first, name="a", lines=3)
            b = await r.campaign(second, name="b", lines=3)
            await r.service.change(a, "start", user="tester")
            await r.service.change(b, "start", user="tester")
            await r.until_state(a, "completed")
            await r.until_state(b, "completed")
    assert r.trunk.most_up == 2
    order = ["a" if t.startswith("+86138") else "b" for t, _ in r.trunk.dialled]
    assert len(order) == 16
    # first come, first served per line: within any 4 dials both campaigns are served
    for i in range(len(order) - 3):
        window = order[i : i + 4]
        if i + 4 <= 12:  # until one list runs out
            assert set(window) == {"a", "b"}, order


async def test_the_frequency_cap_holds_back_a_number_answered_elsewhere_today(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    number = "+8613800138000"
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path, frequency_cap_hours=24) as r:
            first = await r.campaign([(number, None)], name="first")
            await r.service.change(first, "start", user="tester")
            await r.until_state(first, "completed")
            answered_at = r.trunk.dialled[0][1]
            second = await r.campaign([(number, None)], name="second")
            await r.service.change(second, "start", user="tester")
            await r.until_state(second, "completed")
    assert [t for t, _ in r.trunk.dialled] == [number, number]
    assert r.trunk.dialled[1][1] >= answered_at + 24 * 3600  # not again within 24 hours


async def test_a_trunk_that_sets_a_dial_format_gets_numbers_written_its_way(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path, dial_format='dial_format = "national"') as r:
            cid = await r.campaign([("+8613800138003", None), ("+861012345673", None)])
            await r.service.change(cid, "start", user="tester")  # the campaign says e164
            await r.until_state(cid, "completed")
    assert sorted(t for t, _ in r.trunk.dialled) == ["01012345673", "13800138003"]


async def test_a_campaign_paused_and_resumed_mid_call_keeps_to_its_lines(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path) as r:
            cid = await r.campaign([(f"+86138001380{i}8", None) for i in range(3)], lines=1)
            await r.service.change(cid, "start", user="tester")
            while r.trunk.up == 0:  # the first call rings (20 s before it is answered)
                await trio.sleep(1)
            await r.service.change(cid, "pause", user="tester")
            await r.service.change(cid, "resume", user="tester")
            await r.until_state(cid, "completed")
    assert len(r.trunk.dialled) == 3 and r.trunk.most_up == 1


async def _leave_open_attempts(store: Any) -> None:
    """What a kill -9 leaves: a running campaign with attempts begun and never finished."""
    row = CampaignRow(
        id="c0ffee",
        name="crashed",
        state="running",
        settings={
            "name": "crashed",
            "script": "hello",
            "trunk": "office",
            "caller_id": "02000000000",
            "windows": ["daily 00:00-24:00"],
            "dial_format": "e164",
        },
        created_at=T0,
    )
    await store.create_campaign(row)
    numbers = ["+8613800138000", "+8613900139000", "+8613700137000"]
    await store.add_contacts([Contact(campaign_id=row.id, number=n) for n in numbers])
    claimed = await store.claim_contacts(
        row.id, now=T0, limit=3, owner="test-node", lease_until=T0 + 60
    )
    for contact, status in zip(
        sorted(claimed, key=lambda c: c.number), ("answered", "ringing", None), strict=True
    ):
        call_id = f"call-{contact.number[-4:]}"
        await store.begin_attempt(
            Attempt(
                campaign_id=row.id,
                contact_id=contact.id,
                number=contact.number,
                call_id=call_id,
                seq=1,
                node="test-node",
                started_at=T0,
            )
        )
        if status is None:
            continue  # killed after committing the intent, before the call was filed
        record = CallRecord(
            id=call_id,
            number=contact.number,
            script="hello",
            trunk="office",
            created_at=T0,
            campaign_id=row.id,
            status="ended" if status == "answered" else "failed",
            answered_at=T0 + 5 if status == "answered" else None,
            ended_at=T0 + 30,
            outcome="answered" if status == "answered" else "interrupted",
            error="interrupted: waihud stopped",
        )
        await store.save_call(record)


async def test_attempts_left_open_by_a_crash_are_reconciled_never_redialled_blindly(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(SIMULATED_LIMIT):
        async with rig(tmp_path, reconcile_first=_leave_open_attempts) as r:
            # the scheduler reconciled at start, before dialling anything
            assert await r.store.open_attempts() == []
            page = await r.store.campaign_attempts("c0ffee", limit=100)
            first = {a.number: a for a, _ in page if a.seq == 1}
            assert first["+8613700137000"].outcome == "answered"  # talked: not called again
            assert first["+8613800138000"].outcome == "interrupted"  # never filed: not dialled
            assert first["+8613900139000"].outcome == "interrupted"
            assert all(a.note and a.note.startswith("reconciled") for a in first.values())
            await r.until_state("c0ffee", "completed")
            redialled = sorted(t for t, _ in r.trunk.dialled)
            # the interrupted ones are retried after the policy's delay; the answered one never
            assert redialled == ["+8613800138000", "+8613900139000"]
            assert min(at for _, at in r.trunk.dialled) >= T0 + 10 * 60
            stats = await r.store.campaign_stats("c0ffee")
            assert stats.reconciled == 3
