"""Talking to a script as text: a speaker whose lines are printed, not played.

The dialogue engine does not care whether its lines become audio; this
speaker makes a script testable by typing (``waihuctl script chat`` builds on
it) and is what the engine's own tests drive it with.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import trio

from waihu.dialog.script import Variant

__all__ = ["SaidLine", "TextSpeaker"]


@attrs.define
class SaidLine:
    """A line said as text: finished at once, never interrupted."""

    text: str
    done: trio.Event = attrs.Factory(trio.Event)
    interrupted: bool = False
    started_at: float | None = None
    ended_at: float | None = None


class TextSpeaker:
    """Collects (and optionally echoes) the robot's lines."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.lines: list[str] = []
        self.echo = echo

    def say(self, variant: Variant, text: str, *, interruptible: bool) -> SaidLine:
        self.lines.append(text)
        if self.echo is not None:
            self.echo(text)
        now = time.time()
        line = SaidLine(text, started_at=now, ended_at=now)
        line.done.set()
        return line
