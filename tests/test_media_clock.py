"""The media clock under trio's MockClock: cadence, no drift, stalls, add/remove, errors."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import trio
import trio.testing

from waihu.media.media_clock import MediaClock

PERIOD = 0.020


class Recorder:
    """A tick source that notes the (virtual) time of every tick."""

    def __init__(
        self, stop_after: int | None = None, on_tick: Callable[[int], None] | None = None
    ) -> None:
        self.times: list[float] = []
        self.skips: list[tuple[int, float]] = []  # (frames, time) of every skip it was told of
        self.stop_after = stop_after
        self.on_tick = on_tick
        self.enough = trio.Event()

    def tick(self) -> None:
        self.times.append(trio.current_time())
        if self.on_tick is not None:
            self.on_tick(len(self.times))
        if self.stop_after is not None and len(self.times) >= self.stop_after:
            self.enough.set()

    def skipped(self, frames: int) -> None:
        self.skips.append((frames, trio.current_time()))


async def run_until(clock: MediaClock, done: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        await done.wait()
        nursery.cancel_scope.cancel()


async def test_ten_thousand_ticks_without_drift(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        clock = MediaClock()
        source = Recorder(stop_after=10_000)
        clock.add(source)
        await run_until(clock, source.enough)
    t0 = source.times[0]
    assert len(source.times) == 10_000
    worst = max(abs(t - (t0 + k * PERIOD)) for k, t in enumerate(source.times))
    assert worst < 1e-6  # tick k lands on start + k * period: no accumulated drift
    gaps = {round(b - a, 9) for a, b in zip(source.times, source.times[1:], strict=False)}
    assert gaps == {PERIOD}
    assert clock.stats.ticks == 10_000
    assert clock.stats.late_ticks == 0
    assert clock.stats.skipped == 0


async def test_short_stall_catches_up_without_skipping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def stall(n: int) -> None:
        if n == 50:
            autojump_clock.jump(0.050)  # a 50 ms hiccup inside one tick

    with trio.fail_after(100):
        clock = MediaClock()
        source = Recorder(stop_after=100, on_tick=stall)
        clock.add(source)
        await run_until(clock, source.enough)
    t0 = source.times[0]
    assert clock.stats.skipped == 0
    assert source.skips == []
    assert clock.stats.late_ticks == 2  # the two deadlines that passed during the stall
    assert clock.stats.max_lateness == pytest.approx(0.050 - PERIOD, abs=1e-6)
    # after the catch-up burst, ticks are back on the original grid
    assert source.times[-1] == pytest.approx(t0 + 99 * PERIOD, abs=1e-6)


async def test_long_stall_skips_ahead_instead_of_bursting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def stall(n: int) -> None:
        if n == 10:
            autojump_clock.jump(0.5)  # the process was stopped for half a second

    with trio.fail_after(100):
        clock = MediaClock()
        source = Recorder(stop_after=40, on_tick=stall)
        clock.add(source)
        await run_until(clock, source.enough)
    t0 = source.times[0]
    # tick 10 at t0+0.18 stalled until t0+0.68: the deadline t0+0.20 is 0.48 s late,
    # 24 frames behind; those are skipped and the tick runs once, on the grid
    assert clock.stats.skipped == 24
    # the source is told, before the tick that follows the skip, to take what came in
    assert source.skips == [(24, pytest.approx(t0 + 0.68, abs=1e-6))]
    assert source.times[10] == pytest.approx(t0 + 0.68, abs=1e-6)
    assert source.times[11] - source.times[10] == pytest.approx(PERIOD, abs=1e-6)
    assert all(
        abs(t - t0 - round((t - t0) / PERIOD) * PERIOD) < 1e-6 for t in source.times
    )  # still on the 20 ms grid
    assert clock.stats.late_ticks == 1


async def test_add_and_remove_during_a_tick(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        clock = MediaClock()
        late_comer = Recorder()
        victim = Recorder()
        leaver = Recorder()

        def act(n: int) -> None:
            if n == 3:
                clock.remove(victim)  # ticks after `first` in the same tick: must be skipped
                clock.add(late_comer)  # joins from the next tick
                clock.remove(leaver)

        first = Recorder(stop_after=6, on_tick=act)
        for source in (first, victim, leaver):
            clock.add(source)
        await run_until(clock, first.enough)
    assert len(first.times) == 6
    assert len(victim.times) == 2
    assert len(leaver.times) == 2
    assert late_comer.times == first.times[3:]
    assert victim not in clock
    assert len(clock) == 2


async def test_source_removing_itself(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        clock = MediaClock()
        once = Recorder(on_tick=lambda n: clock.remove(once))
        steady = Recorder(stop_after=5)
        clock.add(once)
        clock.add(steady)
        await run_until(clock, steady.enough)
    assert len(once.times) == 1
    assert len(steady.times) == 5


class Broken(Recorder):
    """Raises when told of a skip."""

    def skipped(self, frames: int) -> None:
        raise RuntimeError("codec on fire")


@pytest.mark.parametrize("when", ["ticking", "catching up"])
async def test_failing_source_is_removed_and_clock_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    def explode(n: int) -> None:
        if n == 2:
            if when == "ticking":
                raise RuntimeError("codec on fire")
            autojump_clock.jump(0.5)  # a stall: the clock skips, and Broken raises

    with trio.fail_after(100), caplog.at_level(logging.ERROR, "waihu.media.clock"):
        clock = MediaClock()
        bad = Broken(on_tick=explode)
        good = Recorder(stop_after=10)
        clock.add(bad)
        clock.add(good)
        await run_until(clock, good.enough)
    assert len(bad.times) == 2
    assert len(good.times) == 10
    assert len(good.skips) == (when == "catching up")
    assert bad not in clock
    assert clock.stats.source_errors == 1
    assert "codec on fire" in caplog.text
    assert "no longer ticks" in caplog.text


async def test_one_run_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(10):
        clock = MediaClock()
        async with trio.open_nursery() as nursery:
            await nursery.start(clock.run)
            with pytest.raises(RuntimeError, match="already running"):
                await clock.run()
            nursery.cancel_scope.cancel()
        # after the first run ended, the clock may run again
        async with trio.open_nursery() as nursery:
            await nursery.start(clock.run)
            nursery.cancel_scope.cancel()


async def test_with_no_source_the_clock_sleeps_then_starts_a_fresh_grid(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10_000):
        clock = MediaClock()
        source = Recorder(stop_after=3)
        async with trio.open_nursery() as nursery:
            await nursery.start(clock.run)
            await trio.sleep(3600)  # an idle hour
            assert clock.stats.ticks == 0  # not 180,000 idle wake-ups
            added_at = trio.current_time()
            clock.add(source)
            await source.enough.wait()
            nursery.cancel_scope.cancel()
    assert source.times[0] == pytest.approx(added_at, abs=1e-6)
    assert source.times[2] - source.times[0] == pytest.approx(2 * PERIOD, abs=1e-6)
    assert clock.stats.late_ticks == 0 and clock.stats.skipped == 0
