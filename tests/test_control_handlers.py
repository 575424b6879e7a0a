"""The daemon's real control handlers, on a real SQLite file and a running dispatcher.

Calls go through the trunk of ``test_call_lifecycle`` that needs no network
(no SIP peer can run in a unit test); everything else — storage, scripts,
the dispatcher, the event bus and its monitor — is the daemon's own.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import trio
from test_dispatcher import Rig, running, until

from waihu.api import CallRecord, Turn
from waihu.control.handlers import ControlHandlers, call_summary
from waihu.control.protocol import COMMANDS, ControlError
from waihu.plugins import make_plugin_manager

TIMEOUT = 30  # seconds; generous, the machine is shared
T0 = 1_795_000_000.0


def handlers_for(rig: Rig, stops: list[str] | None = None) -> ControlHandlers:
    return ControlHandlers(
        dispatcher=rig.dispatcher,
        storage=rig.providers.storage,
        events=rig.bus,
        pm=make_plugin_manager(entry_points=False),
        clock=rig.clock,
        stop=lambda: (stops if stops is not None else []).append("stop"),
        started_at=T0,
    )


def filed(call_id: str, created_at: float, **fields: object) -> CallRecord:
    defaults: dict[str, object] = {"number": "01012345678", "script": "hello"}
    return CallRecord(  # type: ignore[arg-type]
        id=call_id,
        trunk="office",
        created_at=created_at,
        **{"status": "ended", **defaults, **fields},
    )


async def refusal(call: object) -> ControlError:
    with pytest.raises(ControlError) as info:
        await call  # type: ignore[misc]
    return info.value


def test_every_command_names_a_handler_taking_its_params() -> None:
    for command in COMMANDS:
        method = getattr(ControlHandlers, command.handler)
        assert inspect.iscoroutinefunction(method), command.name
        params = list(inspect.signature(method).parameters)[1:]
        assert params == [p.name for p in command.params], command.name
    assert {c.name: c.handler for c in COMMANDS}["call.show"] == "call_show"


async def test_calls_lists_newest_first_with_talk_time(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            storage = rig.providers.storage
            await storage.save_call(filed("old", T0, answered_at=T0 + 2, ended_at=T0 + 40.26))
            await storage.save_call(filed("new", T0 + 100, status="failed", sip_status=486))
            await storage.save_call(filed("mid", T0 + 50))
            handlers = handlers_for(rig)
            rows = await handlers.calls(limit=2)
            everything = await handlers.calls()
    assert [r["id"] for r in rows] == ["new", "mid"]
    assert [r["id"] for r in everything] == ["new", "mid", "old"]
    assert everything[2] == {
        "id": "old", "number": "01012345678", "script": "hello", "status": "ended",
        "sip_status": None, "grade": None, "created_at": T0, "duration": 38.3,
        "hangup_by": None, "outcome": None, "campaign_id": None, "direction": "outbound",
    }  # fmt: skip
    assert rows[0]["duration"] is None and rows[0]["sip_status"] == 486


async def test_call_show_finds_live_and_filed_calls_and_says_not_found(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            handlers = handlers_for(rig)
            record = filed("done", T0, grade="A", tags=["hot"])
            record.turns.append(Turn(speaker="robot", text="안녕하세요", node="hello"))
            await rig.providers.storage.save_call(record)
            shown = await handlers.call_show("done")
            placed = await handlers.call(target="hold-1", script="hello", trunk="office")
            live = await handlers.call_show(placed["call_id"])
            missing = await refusal(handlers.call_show("nope"))
            rig.providers.get("trunk", "office").let_go("hold-1")
    assert shown["grade"] == "A" and shown["turns"][0]["text"] == "안녕하세요"
    assert shown["tags"] == ["hot"] and shown["campaign_id"] is None
    assert live["status"] in ("dialing", "ringing") and live["number"] == "hold-1"
    assert (missing.code, missing.message) == ("not_found", "no call with id 'nope'")


async def test_call_places_through_the_dispatcher_and_translates_refusals(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            handlers = handlers_for(rig)
            placed = await handlers.call(
                target="busy", script="hello", trunk="branch", variables={"name": "김"}
            )
            await until(lambda: not rig.dispatcher.live)
            stored = await rig.providers.storage.get_call(placed["call_id"])
            no_script = await refusal(handlers.call(target="1", script="nope", trunk="office"))
            no_trunk = await refusal(handlers.call(target="1", script="hello"))
            await rig.dispatcher.drain(0)
            draining = await refusal(handlers.call(target="1", script="hello", trunk="office"))
    assert (stored.status, stored.sip_status, stored.trunk) == ("failed", 486, "branch")
    assert (no_script.code, no_trunk.code, draining.code) == (
        "not_found", "bad_request", "unavailable"
    )  # fmt: skip
    assert no_script.message == "no script named 'nope' (known: hello)"


async def test_watch_refuses_unknown_and_ended_calls_and_follows_live_ones(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            handlers = handlers_for(rig)
            await rig.providers.storage.save_call(filed("over", T0))
            ended = await refusal(handlers.watch("over"))
            unknown = await refusal(handlers.watch("nope"))
            placed = await handlers.call(target="hold-2", script="hello", trunk="office")
            call_id = placed["call_id"]
            one = await handlers.watch(call_id)
            every = await handlers.watch()
            await until(lambda: rig.providers.get("trunk", "office").holding == 1)
            rig.providers.get("trunk", "office").let_go("hold-2")
            kinds: list[str] = []
            async for message in one.events:  # waihuctl stops at the last event of the call
                kinds.append(message["event"])
                if message["event"] in ("ended", "failed"):
                    break
            one.events.close()
            every.events.close()
    assert (ended.code, ended.message) == (
        "not_found", "call 'over' has ended; 'call show over' shows it"
    )  # fmt: skip
    assert (unknown.code, unknown.message) == ("not_found", "no call with id 'nope'")
    assert one.result == {"call_id": call_id, "campaign": None, "live_calls": [call_id]}
    assert every.result == {"call_id": None, "campaign": None, "live_calls": [call_id]}
    assert kinds[-1] == "failed" and "ringing" in kinds


async def test_status_and_shutdown(tmp_path: Path) -> None:
    stops: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            handlers = handlers_for(rig, stops)
            await handlers.call(target="hold-3", script="hello", trunk="office")
            status = await handlers.status()
            stopping = await handlers.shutdown()
            rig.providers.get("trunk", "office").let_go("hold-3")
    assert status["pid"] == os.getpid() and status["uptime"] > 0
    assert (status["draining"], status["live_calls"]) == (False, 1)
    assert [t["name"] for t in status["trunks"]] == ["office", "branch"]
    assert [t["live_calls"] for t in status["trunks"]] == [1, 0]
    assert status["scripts"] == ["hello"]
    assert status["script_errors"] == [] and "ticks" in status["media_clock"]
    assert stopping == {"draining": True, "live_calls": 1} and stops == ["stop"]
    assert await handlers.plugins() == []  # no plugins in this plugin manager


def test_call_summary_of_an_unanswered_call_has_no_talk_time() -> None:
    assert call_summary(filed("x", T0, ended_at=T0 + 5))["duration"] is None
