"""The call dispatcher: admission, lines per trunk and per daemon, pacing, live calls, drain.

Lines and pacing are tested on a dispatcher that is not running (nothing but
semaphores and a token bucket is involved), on trio's mock clock. Calls run
for real — real SQLite storage, real scripts, the real media clock and event
bus — through the trunk of ``test_call_lifecycle`` that needs no network
(no SIP peer can run in a unit test; ``test_e2e_*`` dial real ones); they run
on the real clock, because storage works in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from test_call_lifecycle import Fakes, FakeTrunk, write_hello_script

from waihu.api import CallEvent, CallRecord, hookimpl
from waihu.config import Config, load_config
from waihu.dialog.library import ScriptLibrary
from waihu.dispatcher import CallDispatcher, CallRequest, DispatchRefused, Line, new_call_id
from waihu.events import EventBus
from waihu.media.media_clock import MediaClock
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu.providers import Providers

TIMEOUT = 30  # seconds; generous, the machine is shared

CONFIG = """
[daemon]
max_calls = 3
state_dir = "{tmp}"
scripts_dir = "{tmp}/scripts"

[media]
record = false

[call]
caller_id = "02000000000"

[trunk.office]
type = "fake"
lines = 2
calls_per_minute = 60

[trunk.branch]
type = "fake"

[asr.default]
type = "fake"

[nlu.default]
type = "keywords"

[storage]
type = "sqlite"
path = "calls.db"
"""


@attrs.define
class Rig:
    """A dispatcher with everything it needs, and what happened around it."""

    dispatcher: CallDispatcher
    providers: Providers
    events: list[CallEvent]  # every event published, as a plugin observes them
    bus: EventBus
    clock: MediaClock

    def trunk(self, name: str) -> FakeTrunk:
        return self.providers.get("trunk", name)  # type: ignore[no-any-return]


def make_config(tmp_path: Path, extra: str = "") -> tuple[Config, Providers, EventBus, list]:
    write_hello_script(tmp_path / "scripts")
    path = tmp_path / "waihud.toml"
    path.write_text(CONFIG.format(tmp=tmp_path) + extra, encoding="utf-8")
    seen: list[CallEvent] = []

    class Observer:
        @hookimpl
        def waihu_call_event(self, event: CallEvent) -> None:
            seen.append(event)

    pm = make_plugin_manager(extra=[Fakes(), Observer()])
    types = collect_provider_types(pm)
    config = load_config(path, types)
    providers = Providers(config, types, state_dir=tmp_path, cpu_limiter=trio.CapacityLimiter(2))
    return config, providers, EventBus(pm), seen


def idle_dispatcher(tmp_path: Path) -> CallDispatcher:
    """A dispatcher that is not running: for lines, pacing and lookups only."""
    config, providers, bus, _ = make_config(tmp_path)
    library = ScriptLibrary(tmp_path / "scripts", lambda: providers.build("nlu", "default"))
    return CallDispatcher(config, providers, library, clock=MediaClock(), events=bus)


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[Rig]:
    config, providers, bus, seen = make_config(tmp_path)
    async with trio.open_nursery() as nursery:
        await providers.start_all(nursery)
        clock = MediaClock()
        await nursery.start(clock.run)
        library = ScriptLibrary(tmp_path / "scripts", lambda: providers.build("nlu", "default"))
        await library.load()
        dispatcher = CallDispatcher(config, providers, library, clock=clock, events=bus)
        await nursery.start(dispatcher.run)
        yield Rig(dispatcher=dispatcher, providers=providers, events=seen, bus=bus, clock=clock)
        await dispatcher.drain(0)  # calls still up are filed while storage is open
        nursery.cancel_scope.cancel()


def refused(call: object, *args: object, **kwargs: object) -> DispatchRefused:
    with pytest.raises(DispatchRefused) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value


async def until(condition: object) -> None:
    while not condition():  # type: ignore[operator]
        await trio.sleep(0.001)


# ───────────────────────── lookups ─────────────────────────


def test_trunks_and_scripts_are_looked_up_with_the_known_ones_listed(tmp_path: Path) -> None:
    dispatcher = idle_dispatcher(tmp_path)
    assert dispatcher.trunks == ["office", "branch"]
    assert dispatcher.resolve_trunk("branch") == "branch"
    unknown = refused(dispatcher.resolve_trunk, "home")
    assert (unknown.code, unknown.message) == (
        "not_found", "no trunk named 'home' (known: office, branch)"
    )  # fmt: skip
    ambiguous = refused(dispatcher.resolve_trunk, None)
    assert (ambiguous.code, ambiguous.message) == (
        "bad_request", "say which trunk (configured: office, branch)"
    )  # fmt: skip
    no_script = refused(dispatcher.script, "hello")  # nothing loaded yet
    assert (no_script.code, no_script.message) == (
        "not_found", "no script named 'hello' (none loaded)"
    )  # fmt: skip


def test_the_default_trunk_is_calls_or_the_only_one(tmp_path: Path) -> None:
    config, providers, bus, _ = make_config(tmp_path)
    with_default = attrs.evolve(config, call=attrs.evolve(config.call, trunk="branch"))
    library = ScriptLibrary(tmp_path, lambda: providers.build("nlu", "default"))
    dispatcher = CallDispatcher(with_default, providers, library, clock=MediaClock(), events=bus)
    assert dispatcher.resolve_trunk(None) == "branch"
    only = attrs.evolve(config, providers=tuple(p for p in config.providers if p.name != "branch"))
    dispatcher = CallDispatcher(only, providers, library, clock=MediaClock(), events=bus)
    assert dispatcher.resolve_trunk(None) == "office"


def test_call_ids_start_with_the_local_time(tmp_path: Path) -> None:
    first, second = new_call_id(1_795_000_000.0), new_call_id(1_795_000_000.0)
    assert first[:16] == second[:16] and first != second
    assert len(first) == len("20261125-150001-a1b2c3")


# ───────────────────────── lines ─────────────────────────


def test_a_trunk_gives_its_lines_then_refuses(tmp_path: Path) -> None:
    dispatcher = idle_dispatcher(tmp_path)
    lines = [dispatcher.try_acquire_line("office") for _ in range(2)]
    busy = refused(dispatcher.try_acquire_line, "office")
    assert (busy.code, busy.message) == ("unavailable", "trunk office: all 2 lines busy; try later")
    lines[0].release()
    lines[0].release()  # idempotent: gives back one line, not two
    again = dispatcher.try_acquire_line("office")
    assert refused(dispatcher.try_acquire_line, "office").code == "unavailable"
    assert again.trunk == "office" and again.held and not lines[0].held


def test_the_daemons_max_calls_binds_across_trunks(tmp_path: Path) -> None:
    dispatcher = idle_dispatcher(tmp_path)
    held = [dispatcher.try_acquire_line(t) for t in ("office", "office", "branch")]
    full = refused(dispatcher.try_acquire_line, "branch")
    assert full.message == "all 3 lines busy (daemon.max_calls); try later"
    held[0].release()  # an office line: the daemon has room again, for either trunk
    assert dispatcher.try_acquire_line("branch").trunk == "branch"
    # the branch line taken before the daemon-wide refusal was given back: branch has 3
    assert refused(dispatcher.try_acquire_line, "branch").message.startswith("all 3 lines")


async def test_waiters_for_a_line_are_served_first_come_first_served(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    dispatcher = idle_dispatcher(tmp_path)
    held = [dispatcher.try_acquire_line("office") for _ in range(2)]
    served: list[tuple[str, Line]] = []

    async def wait(name: str) -> None:
        served.append((name, await dispatcher.acquire_line("office")))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for name in ("first", "second", "third"):
                nursery.start_soon(wait, name)
                await trio.sleep(1)  # in this order
            assert served == []
            # a caller that does not wait cannot jump the queue
            assert refused(dispatcher.try_acquire_line, "office").code == "unavailable"
            held[1].release()
            await trio.sleep(1)
            assert [name for name, _ in served] == ["first"]
            held[0].release()
            await trio.sleep(1)
            served[0][1].release()
    assert [name for name, _ in served] == ["first", "second", "third"]


async def test_a_waiter_cancelled_while_the_daemon_is_full_keeps_no_trunk_line(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    dispatcher = idle_dispatcher(tmp_path)
    held = [dispatcher.try_acquire_line(t) for t in ("branch", "branch", "branch")]
    with trio.fail_after(TIMEOUT):
        with trio.move_on_after(5):
            await dispatcher.acquire_line("office")  # gets an office line, then waits for one
    held[0].release()
    both = [dispatcher.try_acquire_line("office")]
    held[1].release()
    both.append(dispatcher.try_acquire_line("office"))  # office still has both its lines
    assert all(line.held for line in both)


# ───────────────────────── pacing ─────────────────────────


async def test_a_trunk_starts_calls_at_its_pace_and_waiters_take_turns(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    dispatcher = idle_dispatcher(tmp_path)
    times: dict[str, list[float]] = {"office": [], "branch": []}
    order: list[str] = []

    async def paced(trunk: str, name: str) -> None:
        await dispatcher.pace(trunk)
        times[trunk].append(trio.current_time())
        order.append(name)

    with trio.fail_after(TIMEOUT):
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(paced, "office", f"office-{n}")
                await trio.sleep(0)
            for n in range(3):
                nursery.start_soon(paced, "branch", f"branch-{n}")
    assert [t - start for t in times["office"]] == [0.0, 1.0, 2.0]  # 60 a minute
    assert [round(t - start, 6) for t in times["branch"]] == [0.0, 0.1, 0.2]  # 600 a minute
    assert [n for n in order if n.startswith("office")] == ["office-0", "office-1", "office-2"]


# ───────────────────────── starting calls ─────────────────────────


async def test_start_returns_the_dialing_record_and_the_call_is_live_until_filed(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            request = CallRequest(
                target=" hold-1 ", script="hello", trunk="office", campaign_id="spring",
                call_id="chosen-1", ring_timeout=9.0, variables={"name": "김"},
            )  # fmt: skip
            record = rig.dispatcher.start(request)
            assert (record.id, record.status, record.number) == ("chosen-1", "dialing", "hold-1")
            assert (record.trunk, record.campaign_id) == ("office", "spring")
            assert rig.dispatcher.live == {"chosen-1": record}
            await until(lambda: rig.trunk("office").holding == 1)
            assert rig.trunk("office").dialled == [("hold-1", "02000000000", 9.0)]
            rig.trunk("office").let_go("hold-1")
            await until(lambda: not rig.dispatcher.live)
            stored = await rig.providers.storage.get_call("chosen-1")
    assert (stored.status, stored.outcome, stored.sip_status) == ("failed", "no_answer", 480)
    assert {e.campaign for e in rig.events} == {"spring"}


async def test_start_refuses_at_once_and_holds_nothing(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            start = rig.dispatcher.start

            def code(**request: str | None) -> tuple[str, str]:
                exc = refused(start, CallRequest(**{"target": "1", "script": "hello", **request}))
                return exc.code, exc.message

            assert code(script="nope") == ("not_found", "no script named 'nope' (known: hello)")
            assert code(trunk="home")[0] == "not_found"
            assert code(trunk=None)[0] == "bad_request"  # two trunks and no [call] trunk
            assert code(target="  ", trunk="office") == (
                "bad_request", "target must be a number or SIP URI"
            )  # fmt: skip
            start(CallRequest(target="hold-a", script="hello", trunk="office", call_id="a"))
            assert code(trunk="branch", call_id="a") == ("bad_request", "call a is already live")
            start(CallRequest(target="hold-b", script="hello", trunk="office"))
            assert code(trunk="office") == (
                "unavailable", "trunk office: all 2 lines busy; try later"
            )  # fmt: skip
            assert len(rig.dispatcher.live) == 2
            for target in ("hold-a", "hold-b"):
                rig.trunk("office").let_go(target)
            await until(lambda: not rig.dispatcher.live)
            # every refused request left its line: office has both again
            lines = [rig.dispatcher.try_acquire_line("office") for _ in range(2)]
            for line in lines:
                line.release()


GREET_SCRIPT = """
[script]
name = "greet"
start = "hello"

[variables]
company = "평안"

[nodes.hello]
say = [{ text = "{name}님, {company}입니다. {stage}", recording = "hello.wav" }]
set = { stage = "인사" }
end = true
"""


async def test_a_call_that_would_leave_a_placeholder_empty_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "greet.toml").write_text(GREET_SCRIPT, encoding="utf-8")
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:

            def code(**variables: str) -> tuple[str, str]:
                request = CallRequest(
                    target="1", script="greet", trunk="office", variables=variables
                )
                exc = refused(rig.dispatcher.start, request)
                return exc.code, exc.message

            needs_name = (
                "bad_request",
                "script 'greet' needs variable 'name' (nodes.hello.say[0])",
            )
            assert code() == needs_name
            assert code(name="  ", company="삼성") == needs_name  # blank is empty
            assert not rig.dispatcher.live
            # company has a [variables] default and stage is set by the script itself
            record = rig.dispatcher.start(
                CallRequest(target="hold", script="greet", trunk="office", variables={"name": "김"})
            )
            loaded = rig.dispatcher.script("greet")
            assert (
                record.script_hash == loaded.script.content_hash and len(record.script_hash) == 64
            )
            rig.trunk("office").let_go("hold")
            await until(lambda: not rig.dispatcher.live)
            stored = await rig.providers.storage.get_call(record.id)
    assert stored.script_hash == record.script_hash


async def test_a_line_passed_in_is_used_and_kept_by_the_caller_on_refusal(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            line = await rig.dispatcher.acquire_line("office")
            bad = CallRequest(target="busy", script="nope", trunk="office")
            assert refused(rig.dispatcher.start, bad, line=line).code == "not_found"
            assert line.held  # still the caller's
            with pytest.raises(ValueError, match="line of trunk office"):
                rig.dispatcher.start(
                    CallRequest(target="busy", script="hello", trunk="branch"), line=line
                )
            record = rig.dispatcher.start(
                CallRequest(target="busy", script="hello", trunk="office"), line=line
            )
            await until(lambda: not line.held)  # given back once the call was filed
    assert record.status == "failed" and record.sip_status == 486


async def test_on_end_sees_the_filed_record_before_the_line_is_given_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, CallRecord | None, bool]] = []
    proceed = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            line = rig.dispatcher.try_acquire_line("office")

            async def on_end(record: CallRecord) -> None:
                stored = await rig.providers.storage.get_call(record.id)
                seen.append((record.status, stored, line.held))
                await proceed.wait()
                raise RuntimeError("campaign store on fire")

            record = rig.dispatcher.start(
                CallRequest(target="busy", script="hello", trunk="office"),
                line=line,
                on_end=on_end,
            )
            await until(lambda: seen)
            assert record.id not in rig.dispatcher.live  # filed: no longer live
            assert line.held  # but its line is held until on_end returns
            with caplog.at_level(logging.ERROR, logger="waihu.dispatcher"):
                proceed.set()
                await until(lambda: not line.held)
    ((status, stored, held),) = seen
    assert status == "failed" and held
    assert stored is not None and (stored.status, stored.outcome) == ("failed", "busy")
    assert f"call {record.id}: on_end failed" in caplog.text


async def test_drain_refuses_new_calls_then_hangs_up_the_rest_and_files_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ended: list[CallRecord] = []

    async def on_end(record: CallRecord) -> None:
        await trio.sleep(0)  # runs, although the call was cancelled
        ended.append(record)

    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            dispatcher = rig.dispatcher
            record = dispatcher.start(
                CallRequest(target="hold", script="hello", trunk="branch"), on_end=on_end
            )
            await until(lambda: rig.trunk("branch").holding == 1)
            with caplog.at_level(logging.INFO, logger="waihu.dispatcher"):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(dispatcher.drain, 0.05)
                    await until(lambda: dispatcher.draining)
                    late = refused(dispatcher.start, CallRequest(target="1", script="hello"))
                    assert late.code == "unavailable" and "shutting down" in late.message
            assert dispatcher.live == {} and ended == [record]
            stored = await rig.providers.storage.get_call(record.id)
    assert (stored.status, stored.outcome) == ("failed", "interrupted")
    assert "cancelled" in stored.error
    assert "draining: 1 live call(s)" in caplog.text
    assert "drain deadline: hanging up 1 call(s)" in caplog.text


async def test_drain_with_calls_that_finish_in_time_hangs_up_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            rig.dispatcher.start(CallRequest(target="hold", script="hello", trunk="office"))
            await until(lambda: rig.trunk("office").holding == 1)
            with caplog.at_level(logging.INFO, logger="waihu.dispatcher"):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(rig.dispatcher.drain, TIMEOUT)
                    await until(lambda: rig.dispatcher.draining)
                    rig.trunk("office").let_go("hold")
            assert rig.dispatcher.live == {}
    assert "drain deadline" not in caplog.text


def test_a_dispatcher_not_running_yet_takes_no_call(tmp_path: Path) -> None:
    dispatcher = idle_dispatcher(tmp_path)
    early = refused(dispatcher.start, CallRequest(target="1", script="hello", trunk="office"))
    assert (early.code, early.message) == ("unavailable", "waihud is not taking calls yet")
