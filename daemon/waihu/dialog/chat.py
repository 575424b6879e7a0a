"""Talking to a script as text: speakers whose lines are printed or timed, not played.

The dialogue engine does not care whether its lines become audio. ``TextSpeaker``
makes a script testable by typing (``waihuctl script chat`` builds on it):
each line is finished the moment it is said. ``TimedSpeaker`` is what a test
uses when it matters that a line takes time: lines last a given number of
seconds on the trio clock (the mock clock in tests), queue one after another
like the call's prompt player, and can be cut by ``barge_in``.

What it is not: audio. The voice speaker lives in ``waihu.call``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import attrs
import trio

from waihu.dialog.script import Variant

__all__ = ["SaidLine", "TextSpeaker", "TimedSpeaker"]


@attrs.define
class SaidLine:
    """A line said as text, and when it was heard (the ``PromptHandle`` of the engine)."""

    text: str
    variant: Variant | None = None
    interruptible: bool = True
    done: trio.Event = attrs.Factory(trio.Event)
    interrupted: bool = False
    started_at: float | None = None
    ended_at: float | None = None


class TextSpeaker:
    """Collects (and optionally echoes) the robot's lines; each is finished at once.

    ``lines`` holds the texts said, ``said`` the lines themselves (with the
    variant each came from, so a test can tell a replay from a new variant).
    """

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.lines: list[str] = []
        self.said: list[SaidLine] = []
        self.echo = echo

    def say(self, variant: Variant, text: str, *, interruptible: bool) -> SaidLine:
        """Print the line (when echoing) and record it, finished."""
        line = self._record(variant, text, interruptible)
        now = time.time()
        line.started_at = line.ended_at = now
        line.done.set()
        return line

    def _record(self, variant: Variant, text: str, interruptible: bool) -> SaidLine:
        self.lines.append(text)
        if self.echo is not None:
            self.echo(text)
        line = SaidLine(text, variant=variant, interruptible=interruptible)
        self.said.append(line)
        return line


class TimedSpeaker(TextSpeaker):
    """Lines that last ``seconds`` each (or ``seconds(text)``) on the trio clock.

    Lines queue and play one at a time, as the prompt player does, in a task
    of ``nursery``; ``started_at``/``ended_at`` are trio clock times.
    ``barge_in`` does what the callee's voice does to the player: it cuts the
    line playing and those queued, except lines that may not be interrupted.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        seconds: float | Callable[[str], float],
        echo: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(echo)
        self._nursery = nursery
        self._seconds = seconds
        self._queue: deque[SaidLine] = deque()
        self._current: SaidLine | None = None
        self._current_scope: trio.CancelScope | None = None
        self._running = False  # a task is playing the queue

    def say(self, variant: Variant, text: str, *, interruptible: bool) -> SaidLine:
        """Queue the line; it plays once those before it have ended."""
        line = self._record(variant, text, interruptible)
        self._queue.append(line)
        if not self._running:
            self._running = True
            self._nursery.start_soon(self._play)
        return line

    @property
    def playing(self) -> SaidLine | None:
        """The line being heard now, if any."""
        return self._current

    def barge_in(self) -> int:
        """Cut the playing and queued lines that may be interrupted; how many were cut."""
        cut = 0
        if self._current is not None and self._current.interruptible:
            assert self._current_scope is not None
            self._current_scope.cancel()
            cut += 1
        for line in [q for q in self._queue if q.interruptible]:
            self._queue.remove(line)
            self._end(line, interrupted=True)
            cut += 1
        return cut

    async def _play(self) -> None:
        while self._queue:
            line = self._current = self._queue.popleft()
            line.started_at = trio.current_time()
            seconds = self._seconds(line.text) if callable(self._seconds) else self._seconds
            with trio.CancelScope() as scope:
                self._current_scope = scope
                await trio.sleep(seconds)
            self._current, self._current_scope = None, None
            self._end(line, interrupted=scope.cancelled_caught)
        self._running = False

    @staticmethod
    def _end(line: SaidLine, *, interrupted: bool) -> None:
        line.interrupted = interrupted
        line.ended_at = trio.current_time()
        line.done.set()
