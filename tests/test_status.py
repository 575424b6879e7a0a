"""``waihuctl status``: what the daemon gathers, how it reads, and both against a real waihud.

The rendering is tested as exact text on fixed results, in a fixed time zone.
What the daemon gathers is tested on its real parts — a SQLite file, the
script library, the dispatcher, the media clock — with a trunk of this file
that reports whatever state it is told (the SIP trunk reports only some of
the states, and only against real peers); the end-to-end test places calls
through the real ``waihud`` against sipp and reads ``status`` with the real
``waihuctl``, as text and as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import trio
from test_call_lifecycle import Fakes, FakeTrunk, write_hello_script
from test_dispatcher import until
from test_sqlite_storage import make_storage
from test_sqlite_storage import running as running_storage

from waihu.api import TRUNK_STATES, CallRecord, Provider, TrunkStatus, hookimpl
from waihu.config import load_config
from waihu.control.protocol import STATUS_EXAMPLE
from waihu.control.render import render_status
from waihu.control.status import gather_status, local_midnight
from waihu.dialog.library import ScriptLibrary
from waihu.dispatcher import CallDispatcher, CallRequest
from waihu.events import EventBus
from waihu.media.media_clock import MediaClock
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu.providers import Providers
from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import sipp_peer

TIMEOUT = 30  # seconds; generous, the machine is shared
E2E_TIMEOUT = 180  # the real daemon loads a speech model and places two calls
T = 1_795_000_000.0  # 2026-11-18 19:06:40 in Shanghai
ZONE = "Asia/Shanghai"  # UTC+8 all year: the times of day below are fixed


@pytest.fixture
def shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is Shanghai's for the test (and back to the machine's after it)."""
    monkeypatch.setenv("TZ", ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# ───────────────────────── the text ─────────────────────────


def full_status() -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "pid": 4242,
        "now": T,
        "started_at": T - 8040,
        "uptime": 8040.0,
        "draining": False,
        "live_calls": 3,
        "trunks": [
            {"name": "office", "type": "sip", "state": "failing", "since": T - 185,
             "detail": "no answer to 3 OPTIONS probes", "live_calls": 2, "lines": 10},
            {"name": "branch", "type": "sip", "state": "registered", "since": T - 30_000,
             "detail": "", "live_calls": 1, "lines": 4},
        ],
        "today": {
            "since": T - 68_800,
            "calls": 120,
            "outcomes": {"busy": 12, "answered": 64, "no_answer": 30, "failed": 10},
            "grades": {"C": 40, "A": 5, "B": 12},
        },
        "campaigns": {"draft": 2, "running": 1, "paused": 2, "stopped": 0, "completed": 3},
        "media_clock": {"calls": 3, "ticks": 402000, "late_ticks": 3, "max_lateness_ms": 7.214,
                        "skipped": 0, "max_tick_ms": 0.081, "source_errors": 0},
        "scripts": ["demo-ko", "second"],
        "script_errors": [
            {"file": "/etc/waihu/scripts/broken.toml",
             "problems": ["/etc/waihu/scripts/broken.toml:41: nodes.ask.on.default: "
                          "no node named 'bye_unclaer'",
                          "/etc/waihu/scripts/broken.toml:50: grading[0].when: unknown tag 'x'"],
             "in_use": {"script": "broken", "loaded_at": T - 3000,
                        "script_hash": "a1b2c3d4e5f6a7b8c9d0"}},
            {"file": "/etc/waihu/scripts/new.toml", "problems": ["cannot decode x.wav"],
             "in_use": None},
        ],
    }  # fmt: skip


def test_status_reads_at_a_glance(shanghai: None) -> None:
    assert render_status(full_status()) == "\n".join(
        [
            "  version       0.1.0",
            "  pid           4242",
            "  uptime        2 h 14 min (since 2026-11-18 16:52:40)",
            "  draining      no",
            "  live calls    3 (office 2, branch 1)",
            "  today         120 calls · answered 64 · no answer 30 · busy 12 · failed 10"
            " · in progress 4",
            "  grades today  A 5 · B 12 · C 40",
            "  campaigns     1 running · 2 paused",
            "  media clock   402000 ticks · 3 late (worst 7.21 ms) · slowest tick 0.081 ms",
            "  scripts       demo-ko, second",
            "",
            "trunks",
            "  NAME    STATE       SINCE              CALLS  DETAIL",
            "  office  failing     19:03, 3 min       2/10   no answer to 3 OPTIONS probes",
            "  branch  registered  10:46, 8 h 20 min  1/4",
            "",
            "script errors",
            "  /etc/waihu/scripts/broken.toml:41: nodes.ask.on.default: no node named"
            " 'bye_unclaer'",
            "  /etc/waihu/scripts/broken.toml:50: grading[0].when: unknown tag 'x'",
            "    in use: the version of broken loaded at 18:16 (a1b2c3d4e5f6)",
            "  /etc/waihu/scripts/new.toml: cannot decode x.wav",
            "    not loaded",
        ]
    )


def test_the_man_pages_example_is_what_waihuctl_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    status = full_status()
    status["trunks"][0]["detail"] += " in a row"
    status["trunks"][1]["since"] = T - 8000
    status["today"]["grades"]["D"] = 7
    status["script_errors"] = status["script_errors"][:1]
    status["script_errors"][0]["problems"] = [
        "/etc/waihu/scripts/broken.toml:41: nodes.ask_again.on.default: no node named 'bye_unclaer'"
    ]
    monkeypatch.setenv("TZ", "UTC")  # the example's times of day
    time.tzset()
    try:
        assert render_status(status) == STATUS_EXAMPLE
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_quiet_day_a_draining_daemon_and_an_idle_clock(shanghai: None) -> None:
    status = full_status()
    status.update(
        draining=True,
        live_calls=0,
        uptime=42.9,
        started_at=T - 42.9,
        trunks=[],
        today={"since": T - 68_800, "calls": 0, "outcomes": {}, "grades": {}},
        campaigns=None,
        media_clock={"calls": 0, "ticks": 0, "late_ticks": 0, "max_lateness_ms": 0.0,
                     "skipped": 0, "max_tick_ms": 0.0, "source_errors": 0},
        scripts=[],
        script_errors=[],
    )  # fmt: skip
    assert render_status(status) == "\n".join(
        [
            "  version      0.1.0",
            "  pid          4242",
            "  uptime       42 s (since 2026-11-18 19:05:57)",
            "  draining     yes (no new calls)",
            "  live calls   0",
            "  today        no calls yet",
            "  campaigns    none (this storage keeps no campaigns)",
            "  media clock  0 ticks · none late · slowest tick 0 ms",
            "  scripts      none",
        ]
    )


def test_a_troubled_clock_and_calls_of_one_kind(shanghai: None) -> None:
    status = full_status()
    status.update(
        uptime=3 * 86400 + 4 * 3600 + 59,
        today={"since": T - 68_800, "calls": 1, "outcomes": {"busy": 1}, "grades": {}},
        campaigns={"draft": 1, "running": 0, "paused": 0, "stopped": 2, "completed": 0},
        media_clock={"calls": 1, "ticks": 900, "late_ticks": 12, "max_lateness_ms": 1234.5,
                     "skipped": 61, "max_tick_ms": 2.5, "source_errors": 1},
    )  # fmt: skip
    lines = render_status(status).splitlines()
    assert lines[2] == "  uptime        3 d 4 h (since 2026-11-18 16:52:40)"
    assert lines[5:9] == [
        "  today         1 call · busy 1",
        "  grades today  none yet",
        "  campaigns     none running",
        "  media clock   900 ticks · 12 late (worst 1234 ms) · 61 skipped · slowest tick 2.5 ms"
        " · 1 call(s) dropped for errors",
    ]


def test_a_trunk_in_its_state_since_another_day(shanghai: None) -> None:
    status = full_status()
    status["trunks"] = [
        {"name": "office", "type": "sip", "state": "down", "since": T - 2 * 86400,
         "detail": "proxy sip.example.invalid does not resolve; retrying", "live_calls": 0,
         "lines": None},
    ]  # fmt: skip
    table = render_status(status).split("\n\n")[1]
    assert table == "\n".join(
        [
            "trunks",
            "  NAME    STATE  SINCE                      CALLS  DETAIL",
            "  office  down   2026-11-16 19:06, 2 d 0 h  -      proxy sip.example.invalid"
            " does not resolve; retrying",
        ]
    )


def test_an_older_daemons_answer_and_unknown_keys_are_shown_not_dropped() -> None:
    older = {
        "version": "0.0.9",
        "uptime": 3725.0,
        "trunks": ["office"],
        "script_errors": {"/s/broken.toml": ["/s/broken.toml:3: x: bad"]},
        "queue_depth": 7,
    }
    assert render_status(older) == "\n".join(
        [
            "  version      0.0.9",
            "  uptime       1 h 02 min",
            "  trunks       office",
            "  queue depth  7",
            "",
            "script errors",
            "  /s/broken.toml=/s/broken.toml:3: x: bad",
        ]
    )


# ───────────────────────── what storage counts ─────────────────────────


def call(call_id: str, created_at: float, **fields: Any) -> CallRecord:
    return CallRecord(  # type: ignore[arg-type]
        id=call_id,
        number="01012345678",
        script="hello",
        trunk="office",
        created_at=created_at,
        **{"status": "ended", **fields},
    )


async def test_storage_counts_calls_of_a_span_by_outcome_and_grade(tmp_path: Path) -> None:
    calls = [
        call("before", T - 1, outcome="answered", grade="A"),  # the span starts at T
        call("a1", T, outcome="answered", grade="A"),
        call("a2", T + 10, outcome="answered", grade="B"),
        call("a3", T + 20, outcome="answered", grade="A"),
        call("b1", T + 30, status="failed", outcome="busy"),
        call("live", T + 40, status="answered"),  # not over: no outcome, no grade yet
        call("after", T + 100, outcome="no_answer"),  # the span ends before it
    ]
    with trio.fail_after(TIMEOUT):
        async with running_storage(make_storage(tmp_path)) as storage:
            for record in calls:
                await storage.save_call(record)
            span = await storage.call_counts(since=T, until=T + 100)
            onwards = await storage.call_counts(since=T)
            nothing = await storage.call_counts(since=T + 1000)
    assert (span.calls, span.outcomes, span.grades) == (
        5, {"answered": 3, "busy": 1}, {"A": 2, "B": 1}
    )  # fmt: skip
    assert (onwards.calls, onwards.outcomes["no_answer"]) == (6, 1)
    assert (nothing.calls, nothing.outcomes, nothing.grades) == (0, {}, {})


def test_today_starts_at_local_midnight(shanghai: None) -> None:
    midnight = T - (19 * 3600 + 6 * 60 + 40)  # 19:06:40 in Shanghai
    assert local_midnight(T) == midnight
    assert local_midnight(midnight) == midnight
    assert local_midnight(midnight - 1) == midnight - 86400


# ───────────────────────── what the daemon gathers ─────────────────────────

CONFIG = """
[daemon]
max_calls = 3
state_dir = "{tmp}"
scripts_dir = "{tmp}/scripts"

[media]
record = false

[trunk.office]
type = "told"
lines = 2

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


class ToldTrunk(FakeTrunk):
    """The no-network trunk of ``test_call_lifecycle``, in whatever state it is told."""

    type_name: ClassVar[str] = "told"
    told = TrunkStatus(state="starting", since=0.0)

    def status(self) -> TrunkStatus:
        return self.told


class ToldTrunks:
    @hookimpl
    def waihu_trunk_types(self) -> list[type[Provider]]:
        return [ToldTrunk]


@attrs.define
class Daemonish:
    """The daemon's parts that ``status`` asks, running."""

    dispatcher: CallDispatcher
    providers: Providers
    library: ScriptLibrary
    clock: MediaClock
    started_at: float

    async def status(self) -> dict[str, Any]:
        return await gather_status(
            dispatcher=self.dispatcher,
            storage=self.providers.storage,
            clock=self.clock,
            started_at=self.started_at,
            version="9.9",
        )


def parts(tmp_path: Path) -> tuple[Providers, ScriptLibrary, CallDispatcher, MediaClock]:
    write_hello_script(tmp_path / "scripts")
    path = tmp_path / "waihud.toml"
    path.write_text(CONFIG.format(tmp=tmp_path), encoding="utf-8")
    pm = make_plugin_manager(extra=[Fakes(), ToldTrunks()])
    types = collect_provider_types(pm)
    config = load_config(path, types)
    providers = Providers(config, types, state_dir=tmp_path, cpu_limiter=trio.CapacityLimiter(2))
    library = ScriptLibrary(tmp_path / "scripts", lambda: providers.build("nlu", "default"))
    clock = MediaClock()
    dispatcher = CallDispatcher(config, providers, library, clock=clock, events=EventBus(pm))
    return providers, library, dispatcher, clock


@asynccontextmanager
async def daemonish(tmp_path: Path) -> AsyncIterator[Daemonish]:
    providers, library, dispatcher, clock = parts(tmp_path)
    async with trio.open_nursery() as nursery:
        await providers.start_all(nursery)
        await nursery.start(clock.run)
        await library.load()
        await nursery.start(dispatcher.run)
        yield Daemonish(dispatcher, providers, library, clock, started_at=T)
        await dispatcher.drain(0)
        nursery.cancel_scope.cancel()


async def test_every_trunk_state_is_reported_with_its_since_detail_and_lines(
    tmp_path: Path,
) -> None:
    seen = []
    with trio.fail_after(TIMEOUT):
        async with daemonish(tmp_path) as daemon:
            office = daemon.providers.get("trunk", "office")
            request = CallRequest(target="hold-1", script="hello", trunk="office")
            placed = daemon.dispatcher.start(request)
            await until(lambda: office.holding == 1)
            for n, state in enumerate(TRUNK_STATES):
                office.told = TrunkStatus(state=state, since=T + n, detail=f"detail {n}")
                seen.append(await daemon.status())
            office.let_go("hold-1")
            await until(lambda: not daemon.dispatcher.live)
    for n, (state, status) in enumerate(zip(TRUNK_STATES, seen, strict=True)):
        office_row, branch_row = status["trunks"]
        assert office_row == {
            "name": "office", "type": "told", "state": state, "since": T + n,
            "detail": f"detail {n}", "live_calls": 1, "lines": 2,
        }  # fmt: skip
        # a trunk without status(): up since the daemon started; lines: daemon.max_calls
        assert branch_row == {
            "name": "branch", "type": "fake", "state": "up", "since": T,
            "detail": "", "live_calls": 0, "lines": 3,
        }  # fmt: skip
        row = render_status(status).split("\n\n")[1].splitlines()[2]
        assert row.split()[:2] == ["office", state] and row.endswith(f"1/2    detail {n}")
    assert seen[0]["live_calls"] == 1 and placed.trunk == "office"


async def test_a_trunk_that_is_not_running_is_down(tmp_path: Path) -> None:
    _providers, _library, dispatcher, clock = parts(tmp_path / "idle")
    with trio.fail_after(TIMEOUT):
        async with running_storage(make_storage(tmp_path)) as storage:
            status = await gather_status(
                dispatcher=dispatcher, storage=storage, clock=clock, started_at=T, version="9.9"
            )
    assert [(t["name"], t["state"], t["since"], t["detail"]) for t in status["trunks"]] == [
        ("office", "down", T, "configured but not running"),
        ("branch", "down", T, "configured but not running"),
    ]


async def test_today_campaigns_and_the_clock_are_counted(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with daemonish(tmp_path) as daemon:
            storage = daemon.providers.storage
            midnight = local_midnight(time.time())
            await storage.save_call(call("yesterday", midnight - 1, outcome="busy"))
            await storage.save_call(call("t1", midnight + 1, outcome="answered", grade="A"))
            await storage.save_call(call("t2", midnight + 2, outcome="rejected"))
            daemon.clock.stats.ticks, daemon.clock.stats.late_ticks = 500, 2
            daemon.clock.stats.max_lateness = 0.0071234
            daemon.clock.stats.max_tick_seconds = 0.0000812
            status = await daemon.status()
    assert status["today"] == {
        "since": midnight,
        "calls": 2,
        "outcomes": {"answered": 1, "rejected": 1},
        "grades": {"A": 1},
    }
    assert status["campaigns"] == {
        "draft": 0, "running": 0, "paused": 0, "stopped": 0, "completed": 0,
    }  # fmt: skip
    assert status["media_clock"] == {
        "calls": 0, "ticks": 500, "late_ticks": 2, "max_lateness_ms": 7.123,
        "skipped": 0, "max_tick_ms": 0.081, "source_errors": 0,
    }  # fmt: skip
    assert (status["version"], status["started_at"], status["draining"]) == ("9.9", T, False)
    assert status["uptime"] == round(status["now"] - T, 1) and status["scripts"] == ["hello"]


async def test_a_script_broken_by_a_reload_says_which_version_is_still_in_use(
    tmp_path: Path,
) -> None:
    scripts = tmp_path / "scripts"
    with trio.fail_after(TIMEOUT):
        async with daemonish(tmp_path) as daemon:
            first = daemon.library.get("hello")
            assert first is not None
            hello = scripts / "hello.toml"
            hello.write_text(
                hello.read_text(encoding="utf-8").replace('start = "hello"', 'start = "gone"'),
                encoding="utf-8",
            )
            (scripts / "fresh.toml").write_text("[script\n", encoding="utf-8")
            await daemon.library.load()
            status = await daemon.status()
    assert status["scripts"] == ["hello"]
    fresh, broken = status["script_errors"]
    assert broken["file"] == str(hello)
    assert broken["in_use"] == {
        "script": "hello",
        "loaded_at": first.loaded_at,
        "script_hash": first.script.content_hash,
    }
    assert 0 < first.loaded_at <= status["now"]
    assert broken["problems"] and all(p.startswith(f"{hello}:") for p in broken["problems"])
    assert any("script.start" in p and "'gone'" in p for p in broken["problems"])
    (problem,) = fresh["problems"]
    assert fresh["file"] == str(scripts / "fresh.toml") and fresh["in_use"] is None
    assert problem.startswith(f"{scripts / 'fresh.toml'}:1: ")
    text = render_status(status).split("script errors\n")[1].splitlines()
    assert text == [
        f"  {problem}",
        "    not loaded",
        *(f"  {p}" for p in broken["problems"]),
        f"    in use: the version of hello loaded at "
        f"{time.strftime('%H:%M', time.localtime(first.loaded_at))} "
        f"({first.script.content_hash[:12]})",
    ]


# ───────────────────────── against the real waihud ─────────────────────────


async def waihuctl(socket: Path, *args: str) -> str:
    done = await trio.run_process(
        [sys.executable, "-m", "waihu.control.client", "--socket", str(socket), *args],
        capture_stdout=True,
        capture_stderr=True,
    )
    return done.stdout.decode("utf-8")


@pytest.mark.e2e
async def test_status_of_a_real_daemon_moves_with_its_calls(tmp_path: Path) -> None:
    """Two calls through two trunks against sipp (one busy, one answered then hung up by
    the callee); ``status`` read mid-call and after, by the real waihuctl."""
    with trio.fail_after(E2E_TIMEOUT):
        async with (
            sipp_peer("busy.xml", tmp_path / "busy") as busy,
            sipp_peer("hangup_mid.xml", tmp_path / "answer", keys={"wait": "8000"}) as answer,
        ):
            config = write_config(
                tmp_path / "waihud", proxy={"answering": answer.hostport, "busy": busy.hostport}
            )
            async with running_waihud(config) as daemon:
                before = json.loads(await waihuctl(daemon.socket, "--json", "status"))
                placed = await daemon.request("call", target="1001", script="demo-ko", trunk="busy")
                refused = await daemon.wait_call(placed["call_id"])
                placed = await daemon.request("call", target="1001", script="demo-ko")
                while (await daemon.request("call.show", id=placed["call_id"]))[
                    "status"
                ] != "answered":
                    await trio.sleep(0.1)
                during = json.loads(await waihuctl(daemon.socket, "--json", "status"))
                answered = await daemon.wait_call(placed["call_id"])
                after = json.loads(await waihuctl(daemon.socket, "--json", "status"))
                text = await waihuctl(daemon.socket, "status")
                assert await daemon.stop() == 0
            (await busy.wait()).check()
            (await answer.wait()).check()
    assert (refused["outcome"], answered["outcome"]) == ("busy", "answered")
    assert before["today"]["calls"] == 0 and before["live_calls"] == 0
    assert [(t["name"], t["state"], t["live_calls"]) for t in during["trunks"]] == [
        ("answering", "up", 1), ("busy", "up", 0),
    ]  # fmt: skip
    assert during["live_calls"] == 1
    assert during["today"] == {**during["today"], "calls": 2, "outcomes": {"busy": 1}}
    grade = answered["grade"]
    assert after["today"] == {
        "since": before["today"]["since"],
        "calls": 2,
        "outcomes": {"answered": 1, "busy": 1},
        "grades": {grade: 1},
    }
    assert after["media_clock"]["ticks"] > 0 and after["campaigns"]["running"] == 0
    assert after["scripts"] == ["demo-ko"] and after["script_errors"] == []
    lines = text.splitlines()
    assert "  today         2 calls · answered 1 · busy 1" in lines
    assert f"  grades today  {grade} 1" in lines
    assert "  live calls    0" in lines
    assert any(line.split()[:2] == ["answering", "up"] for line in lines)
