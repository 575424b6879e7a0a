"""The media clock: one trio task that ticks every call's media every 20 ms.

The daemon runs exactly one ``MediaClock``; each live call registers a source
(its ``CallMedia``) with ``add`` and leaves with ``remove``. On every tick the
clock calls ``tick()`` on each source, which sends that call's next outgoing
frame and consumes its next incoming one. Hundreds of calls thus cost fifty
wake-ups a second, not fifty per call.

With no source the clock sleeps until one is added (an idle daemon costs no
wake-ups), then starts a fresh grid at that moment.

Deadlines are absolute (``start + n * period``), so timer slack never
accumulates into drift. When the clock wakes a little late it catches up by
ticking back to back; when it has fallen more than ``max_behind`` frames
behind (the process was stopped, the machine stalled), it skips the missed
ticks and counts them rather than bursting out a pile of packets at once —
but tells each source (``skipped``), which takes the audio that came in over
them: what a callee said during a stall is heard late, not lost.

Error handling: a source whose ``tick`` raises is logged with its traceback
and removed; the clock and every other call carry on.

What it is not: a scheduler for anything but fixed-rate media frames, or a
place for slow work — every ``tick`` runs on the trio thread and must take
microseconds.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import attrs
import trio

from waihu.api import FRAME_MS

__all__ = ["ClockStats", "MediaClock", "TickSource"]

log = logging.getLogger("waihu.media.clock")

MAX_BEHIND_FRAMES = 3  # behind by more than this many frames: skip ahead instead of bursting
LATE_TOLERANCE_FRAMES = 0.25  # a tick this far past its deadline counts as late (5 ms at 20 ms)
_EPSILON = 1e-9  # seconds: keeps float rounding from miscounting whole frames


class TickSource(Protocol):
    """Anything the clock drives: one call's media."""

    def tick(self) -> None:
        """Do this frame's work; must not block."""
        ...

    def skipped(self, frames: int) -> None:
        """The clock skipped ``frames`` ticks: take what came in over them, send nothing."""
        ...


@attrs.define
class ClockStats:
    """Figures about the clock's pacing.

    ``ticks`` ticks ran; ``late_ticks`` of them started more than the late
    tolerance after their deadline; ``max_lateness`` is the worst such delay
    in seconds; ``skipped`` counts deadlines dropped to catch up after a
    stall; ``max_tick_seconds`` is the longest time all sources of one tick
    took (wall clock, ``time.perf_counter``); ``source_errors`` counts sources
    removed for raising.
    """

    ticks: int = 0
    late_ticks: int = 0
    max_lateness: float = 0.0
    skipped: int = 0
    max_tick_seconds: float = 0.0
    source_errors: int = 0


class MediaClock:
    """Ticks every registered source once per frame period on absolute deadlines."""

    def __init__(
        self,
        *,
        period: float = FRAME_MS / 1000,
        max_behind: int = MAX_BEHIND_FRAMES,
        late_tolerance: float | None = None,
    ) -> None:
        if period <= 0:
            raise ValueError(f"clock period must be positive, not {period}")
        self.period = period
        self.max_behind = max_behind
        self.late_tolerance = (
            period * LATE_TOLERANCE_FRAMES if late_tolerance is None else late_tolerance
        )
        self.stats = ClockStats()
        # a dict keeps insertion order (calls tick in the order they joined) and
        # gives O(1) membership for removal during a tick
        self._sources: dict[TickSource, None] = {}
        self._running = False
        self._woken: trio.Event | None = None  # set by add() while the clock sleeps idle

    def add(self, source: TickSource) -> None:
        """Start ticking ``source`` from the next tick; safe to call during a tick."""
        self._sources[source] = None
        if self._woken is not None:
            self._woken.set()

    def remove(self, source: TickSource) -> None:
        """Stop ticking ``source`` (also within the current tick); unknown sources are ignored."""
        self._sources.pop(source, None)

    def __contains__(self, source: object) -> bool:
        return source in self._sources

    def __len__(self) -> int:
        return len(self._sources)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until cancelled. Only one ``run`` per clock at a time."""
        if self._running:
            raise RuntimeError("this media clock is already running")
        self._running = True
        try:
            start = trio.current_time()
            n = 0
            task_status.started()
            while True:
                if not self._sources:
                    self._woken = trio.Event()
                    await self._woken.wait()
                    self._woken = None
                    start, n = trio.current_time(), 0  # a fresh grid from the first source
                deadline = start + n * self.period
                await trio.sleep_until(deadline)
                lateness = trio.current_time() - deadline
                if lateness > self.late_tolerance:
                    self.stats.late_ticks += 1
                    self.stats.max_lateness = max(self.stats.max_lateness, lateness)
                    behind = int((lateness + _EPSILON) // self.period)
                    if behind > self.max_behind:
                        n += behind
                        self.stats.skipped += behind
                        log.warning(
                            "media clock fell %.0f ms behind; skipped %d frames",
                            lateness * 1000,
                            behind,
                        )
                        self._each("skipped", behind)
                self._tick_all()
                n += 1
        finally:
            self._running = False

    def _tick_all(self) -> None:
        began = time.perf_counter()
        self.stats.ticks += 1
        self._each("tick")
        elapsed = time.perf_counter() - began
        if elapsed > self.stats.max_tick_seconds:
            self.stats.max_tick_seconds = elapsed

    def _each(self, method: str, *args: int) -> None:
        """Call ``method`` on every source; one that raises is logged and removed."""
        # a snapshot, so sources may add or remove (themselves or others) meanwhile
        for source in tuple(self._sources):
            if source not in self._sources:
                continue  # removed earlier in this tick
            try:
                getattr(source, method)(*args)
            except Exception:
                self.stats.source_errors += 1
                self._sources.pop(source, None)
                log.exception("media source %r failed; it no longer ticks", source)
