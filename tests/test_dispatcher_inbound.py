"""The dispatcher's inbound path: which calls it answers, with what, and how they are filed.

The dispatcher runs for real (real SQLite storage, scripts, media clock and
event bus; see ``test_dispatcher``). The inbound call is ``FakeIncomingCall``, a
stand-in implementing ``waihu.api.IncomingCall`` with no network (no SIP peer
can run in a unit test; ``test_sip_incoming`` and ``test_e2e_inbound`` run
the SIP trunk against sipp), handed over through the same ``incoming`` handler
a trunk gets in its ``ProviderContext``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from test_call_lifecycle import FakeLeg
from test_dispatcher import Rig, make_config

from waihu.api import CallFailed, CallLeg, CallRecord, ProviderError
from waihu.config import ConfigError, InboundConfig
from waihu.dialog.library import ScriptLibrary
from waihu.dispatcher import CallDispatcher
from waihu.media.media_clock import MediaClock

TIMEOUT = 30  # seconds; generous, the machine is shared
CALLER = "13900001111"


class FakeIncomingCall:
    """An inbound call with no network (``waihu.api.IncomingCall``).

    ``answer`` returns a ``FakeLeg`` (after ``hold`` is set, when one is
    given); the first final answer — ``rejected`` or 200 — is kept, as a SIP
    transaction keeps its first; ``cancel`` is the caller giving up (487).
    """

    def __init__(
        self, number: str, *, caller: str = CALLER, trunk: str = "office", hold: bool = False
    ) -> None:
        self.call_id = f"sip-{number}-{caller}"
        self.number = number
        self.caller = caller
        self.trunk = trunk
        self.cancelled = trio.Event()
        self.leg = FakeLeg()
        self.final: int | None = None
        self.finished = trio.Event()  # a final answer went out
        self.hold = trio.Event()
        if not hold:
            self.hold.set()

    async def answer(self) -> CallLeg:
        await self.hold.wait()
        if self.final is not None:
            raise CallFailed(487, "Request Terminated")
        self._final(200)
        return self.leg

    async def reject(self, status: int = 480, reason: str | None = None) -> None:
        self._final(status)

    def cancel(self) -> None:
        self._final(487)
        self.cancelled.set()

    def _final(self, status: int) -> None:
        if self.final is None:
            self.final = status
            self.finished.set()


INBOUND = """
[inbound]
{options}
[inbound.numbers]
"4001" = "hello"
"4002" = "missing"
"""


@asynccontextmanager
async def inbound_rig(tmp_path: Path, options: str = "") -> AsyncIterator[Rig]:
    """A running dispatcher whose config has ``[inbound]`` with ``options``."""
    config, providers, bus, seen = make_config(tmp_path, INBOUND.format(options=options))
    async with trio.open_nursery() as nursery:
        await providers.start_all(nursery)
        clock = MediaClock()
        await nursery.start(clock.run)
        library = ScriptLibrary(tmp_path / "scripts", lambda: providers.build("nlu", "default"))
        await library.load()
        dispatcher = CallDispatcher(config, providers, library, clock=clock, events=bus)
        await nursery.start(dispatcher.run)
        yield Rig(dispatcher=dispatcher, providers=providers, events=seen, bus=bus, clock=clock)
        await dispatcher.drain(0)
        nursery.cancel_scope.cancel()


def ring(rig: Rig, call: FakeIncomingCall) -> None:
    """Hand ``call`` to the core exactly as the trunk does: through its context's handler."""
    handler = rig.trunk(call.trunk).context.incoming
    assert handler is not None
    handler(call)


async def filed(rig: Rig) -> list[CallRecord]:
    """Every call filed, once none is live any more."""
    while rig.dispatcher.live:
        await trio.sleep(0.01)
    return await rig.providers.storage.recent_calls()


async def test_a_configured_number_is_answered_with_its_script_and_filed_inbound(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with inbound_rig(tmp_path) as rig:
            call = FakeIncomingCall("4001")
            ring(rig, call)
            (live,) = rig.dispatcher.live.values()
            assert (live.direction, live.number, live.trunk) == ("inbound", CALLER, "office")
            (record,) = await filed(rig)
    assert call.final == 200 and call.leg.hangups >= 1  # the robot said hello and hung up
    assert (record.direction, record.number, record.script, record.trunk) == (
        "inbound", CALLER, "hello", "office",
    )  # fmt: skip
    assert (record.status, record.grade, record.hangup_by) == ("ended", "B", "robot")
    assert [t.node for t in record.turns] == ["hello"]
    kinds = [e.kind for e in rig.events if e.call_id == record.id]
    assert kinds[:3] == ["dialing", "ringing", "answered"] and kinds[-1] == "ended"


@pytest.mark.parametrize("options, status", [("", 404), ("unknown_status = 480", 480)])
async def test_a_number_without_a_script_is_refused_and_nothing_filed(
    tmp_path: Path, options: str, status: int
) -> None:
    with trio.fail_after(TIMEOUT):
        async with inbound_rig(tmp_path, options) as rig:
            call = FakeIncomingCall("4999")
            ring(rig, call)
            await call.finished.wait()
            assert rig.dispatcher.live == {}
            assert await filed(rig) == []
    assert call.final == status


async def test_the_default_script_answers_the_other_numbers_and_a_silent_caller(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with inbound_rig(tmp_path, 'script = "hello"') as rig:
            call = FakeIncomingCall("4999", caller="")
            ring(rig, call)
            (record,) = await filed(rig)
    assert call.final == 200
    assert (record.script, record.number) == ("hello", "anonymous")


async def test_a_script_that_is_not_loaded_gets_480_and_an_error_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with inbound_rig(tmp_path) as rig:
            (at_start,) = [r.message for r in caplog.records if r.levelname == "ERROR"]
            assert "inbound.numbers.4002: script 'missing' is not loaded" in at_start
            call = FakeIncomingCall("4002")
            ring(rig, call)
            await call.finished.wait()
            assert await filed(rig) == []
    assert call.final == 480
    assert any("'missing'" in r.message and r.levelname == "ERROR" for r in caplog.records)


async def test_over_inbound_max_calls_the_caller_hears_busy(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with inbound_rig(tmp_path, "max_calls = 1") as rig:
            first = FakeIncomingCall("4001", hold=True)
            ring(rig, first)
            second = FakeIncomingCall("4001", caller="13900002222")
            ring(rig, second)
            await second.finished.wait()
            assert second.final == 486 and len(rig.dispatcher.live) == 1
            first.hold.set()
            await filed(rig)
            third = FakeIncomingCall("4001", caller="13900003333")  # the line is free again
            ring(rig, third)
            records = await filed(rig)
    assert third.final == 200 and len(records) == 2


async def test_inbound_calls_take_the_trunks_lines(tmp_path: Path) -> None:
    """[trunk.office] has 2 lines: a third inbound call on it is busy."""
    with trio.fail_after(TIMEOUT):
        async with inbound_rig(tmp_path) as rig:
            held = [FakeIncomingCall("4001", caller=f"1390000000{i}", hold=True) for i in range(2)]
            for call in held:
                ring(rig, call)
            third = FakeIncomingCall("4001", caller="13900009999")
            ring(rig, third)
            await third.finished.wait()
            assert third.final == 486
            for call in held:
                call.hold.set()
            await filed(rig)


async def test_a_caller_who_hangs_up_while_it_rings_is_filed_487_by_the_callee(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with inbound_rig(tmp_path, "answer_after = 20") as rig:
            call = FakeIncomingCall("4001")
            ring(rig, call)
            (live,) = rig.dispatcher.live.values()
            while live.status != "ringing":
                await trio.sleep(0.01)
            call.cancel()
            (record,) = await filed(rig)
    assert (record.status, record.sip_status, record.hangup_by) == ("failed", 487, "callee")
    assert record.answered_at is None
    assert record.error == "487 Request Terminated: the caller hung up before it was answered"


async def test_while_draining_inbound_calls_get_503(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with inbound_rig(tmp_path) as rig:
            rig.dispatcher.draining = True
            call = FakeIncomingCall("4001")
            ring(rig, call)
            await call.finished.wait()
    assert call.final == 503


async def test_a_call_the_drain_deadline_cuts_off_while_ringing_is_refused_503(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with inbound_rig(tmp_path, "answer_after = 20") as rig:
            call = FakeIncomingCall("4001")
            ring(rig, call)
            await rig.dispatcher.drain(0)
            (record,) = await rig.providers.storage.recent_calls()
    assert call.final == 503  # not left ringing
    assert (record.status, record.outcome) == ("failed", "interrupted")


async def test_trunks_get_a_handler_only_with_inbound_numbers_and_only_while_it_runs(
    tmp_path: Path,
) -> None:
    _config, providers, _bus, _ = make_config(tmp_path)
    assert providers.build("trunk", "office").context.incoming is None  # no [inbound]
    _config, providers, _bus, _ = make_config(tmp_path, INBOUND.format(options=""))
    handler = providers.build("trunk", "office").context.incoming
    assert handler is not None
    with pytest.raises(ProviderError, match="not taking calls"):
        handler(FakeIncomingCall("4001"))  # no dispatcher yet: the trunk refuses (480)
    async with inbound_rig(tmp_path) as rig:
        handler = rig.trunk("office").context.incoming
        assert handler is not None
    with pytest.raises(ProviderError, match="not taking calls"):
        handler(FakeIncomingCall("4001"))  # the dispatcher has stopped


def test_inbound_config_errors_name_file_and_key(tmp_path: Path) -> None:
    bad = INBOUND.format(options="unknown_status = 500\nanswer_after = -1\nmax_calls = 0")
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, bad + '"4003" = " "\n')
    where = f"{tmp_path / 'waihud.toml'}: inbound."
    found = sorted(p.removeprefix(where).split(":")[0] for p in info.value.problems)
    assert found == ["answer_after", "max_calls", "numbers", "unknown_status"], info.value.problems
    assert all(p.startswith(where) for p in info.value.problems)


def test_the_script_for_a_number_ignores_visual_separators() -> None:
    inbound = InboundConfig(numbers={"+86 10 5555-0100": "service"}, script="callback")
    assert inbound.script_for("+861055550100") == "service"
    assert inbound.script_for("(+86) 10.5555.0100") == "service"
    assert inbound.script_for("4001") == "callback"
    assert InboundConfig(numbers={"4001": "x"}).script_for("4002") is None
    assert not InboundConfig().enabled and InboundConfig(script="x").enabled
