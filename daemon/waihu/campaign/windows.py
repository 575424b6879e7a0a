"""Calling windows: the local hours in which a contact may be called.

A window is written ``DAYS HH:MM-HH:MM``, for example ``mon-fri 09:00-20:00``:

- DAYS is ``daily``, a day (``mon tue wed thu fri sat sun``), a range
  (``mon-fri``; ranges may wrap, ``sat-mon`` is sat, sun, mon) or a comma list
  of those (``mon,wed,fri``, ``mon-wed,sat``); upper case is accepted;
- HH:MM-HH:MM is a 24-hour start and end; the end may be ``24:00`` (the end of
  the day) and must be after the start. A window across midnight is written as
  two: ``fri 22:00-24:00`` and ``sat 00:00-02:00``.

The times are wall-clock times in the *contact's* time zone, so 09:00 stays
09:00 local across a daylight-saving change. On each local date a window is
open over the instants [start, end). An edge that falls in a DST gap (02:30 on
a spring-forward day in America/New_York) is taken as the first instant that
exists after it (03:00 EDT); an edge that falls in an overlap (01:30 on a
fall-back day) is its first occurrence (``fold=0``).

Every method takes the instant as a float (seconds since the epoch) and never
reads a clock, so tests and the scheduler decide what "now" is.

What it is not: the campaign's start/end dates (``settings``), or any
knowledge of public holidays.

Error handling: ``parse_window`` raises ValueError quoting the text and saying
what is wrong with it; ``CallingWindows.next_open`` raises ValueError when no
window opens within ``SEARCH_DAYS``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from typing import NoReturn

import attrs

__all__ = [
    "DAY_NAMES",
    "SEARCH_DAYS",
    "CallingWindows",
    "Window",
    "local_instant",
    "parse_window",
]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
DAILY = "daily"
MINUTES_PER_DAY = 24 * 60
# a weekly schedule repeats after 7 days; one more covers a window that opens
# later on the same weekday as today
SEARCH_DAYS = 8
INSTANT_CACHE_SIZE = 4096  # (date, minute, zone) → instant; a few campaigns × zones × weeks
EXAMPLE = "'mon-fri 09:00-20:00'"

_TIMES = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")


@attrs.frozen
class Window:
    """One parsed window: weekdays (0 = Monday) and local minutes of the day [start, end)."""

    days: frozenset[int]
    start: int  # minutes after local midnight, 0–1439
    end: int  # minutes after local midnight, start+1–1440
    text: str = attrs.field(default="", eq=False)  # as written, for messages

    def __str__(self) -> str:
        if self.text:
            return self.text
        days = ",".join(DAY_NAMES[day] for day in sorted(self.days))
        return f"{days} {_clock(self.start)}-{_clock(self.end)}"


def _clock(minute: int) -> str:
    return f"{minute // 60:02}:{minute % 60:02}"


def parse_window(text: str) -> Window:
    """Parse one window such as ``mon-fri 09:00-20:00``; ValueError says what is wrong."""

    def fail(problem: str) -> NoReturn:
        raise ValueError(f"{text!r}: {problem}")

    parts = text.split()
    if len(parts) != 2:
        fail(f"expected DAYS HH:MM-HH:MM, e.g. {EXAMPLE}")
    days = _parse_days(parts[0].lower(), fail)
    start, end = _parse_times(parts[1], fail)
    return Window(days=days, start=start, end=end, text=text)


def _day(name: str, fail: Callable[[str], NoReturn]) -> int:
    if name not in DAY_NAMES:
        fail(f"unknown day {name!r} ({' '.join(DAY_NAMES)})")
    return DAY_NAMES.index(name)


def _parse_days(spec: str, fail: Callable[[str], NoReturn]) -> frozenset[int]:
    days: set[int] = set()
    for item in spec.split(","):
        if not item:
            fail(f"empty day in the list {spec!r}")
        if item == DAILY:
            days.update(range(len(DAY_NAMES)))
            continue
        first, dash, last = item.partition("-")
        if not dash:
            days.add(_day(item, fail))
            continue
        if not first or not last:
            fail(f"day range {item!r} needs a day on each side of '-'")
        low, high = _day(first, fail), _day(last, fail)
        span = (high - low) % len(DAY_NAMES)  # a range may wrap past sunday
        days.update((low + i) % len(DAY_NAMES) for i in range(span + 1))
    return frozenset(days)


def _parse_times(spec: str, fail: Callable[[str], NoReturn]) -> tuple[int, int]:
    found = _TIMES.fullmatch(spec)
    if found is None:
        fail(f"times must be HH:MM-HH:MM (24-hour), not {spec!r}")
    start_h, start_m, end_h, end_m = (int(g) for g in found.groups())
    start_text, end_text = spec.split("-")
    for hour, minute, label in ((start_h, start_m, start_text), (end_h, end_m, end_text)):
        if minute > 59:
            fail(f"minute {minute} in {label!r} is not 00–59")
        if hour > 24 or (hour == 24 and minute > 0):
            fail(f"hour {hour} in {label!r} is not 00–23 (24:00 may only end a window)")
    if start_h == 24:
        fail("a window cannot start at 24:00")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if end <= start:
        fail(
            f"end {end_text} is not after start {start_text}"
            " (write a window across midnight as two, e.g. 'fri 22:00-24:00' and"
            " 'sat 00:00-02:00')"
        )
    return start, end


@functools.lru_cache(maxsize=INSTANT_CACHE_SIZE)
def local_instant(day: date, minute: int, tz: tzinfo) -> float:
    """The instant (epoch seconds) at which ``tz``'s wall clock first reads ``minute``
    (0–1440) on local date ``day``.

    A wall time in an overlap is its first occurrence; one in a gap (it never
    exists) is the first instant after it, the moment the clock jumps.
    """
    if minute == MINUTES_PER_DAY:
        day, minute = day + timedelta(days=1), 0
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    first = wall.replace(tzinfo=tz).timestamp()  # fold=0: the first occurrence
    if _wall_clock(first, tz) == wall:
        return first
    # ``wall`` falls in a gap. fold=0 and fold=1 map it to instants either side of
    # the jump (one with each offset); the jump is the first instant whose wall
    # time is past ``wall``. Zone transitions are at whole seconds.
    other = wall.replace(tzinfo=tz, fold=1).timestamp()
    before, after = int(min(first, other)), int(max(first, other))
    while after - before > 1:
        middle = (before + after) // 2
        if _wall_clock(middle, tz) > wall:
            after = middle
        else:
            before = middle
    return float(after)


def _wall_clock(at: float, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(at, tz).replace(tzinfo=None)


class CallingWindows:
    """A set of windows, asked whether calling is allowed at an instant in a time zone."""

    def __init__(self, windows: Sequence[Window]) -> None:
        self.windows = tuple(windows)

    def __repr__(self) -> str:
        return f"CallingWindows({[str(w) for w in self.windows]!r})"

    def _intervals(self, at: float, tz: tzinfo, days_ahead: int) -> list[tuple[float, float]]:
        """Open intervals [start, end) of every window on the local dates from the day
        before ``at``'s to ``days_ahead`` days after it, sorted."""
        today = datetime.fromtimestamp(at, tz).date()
        found = []
        for offset in range(-1, days_ahead + 1):
            day = today + timedelta(days=offset)  # calendar arithmetic: DST-proof
            weekday = day.weekday()
            for window in self.windows:
                if weekday in window.days:
                    start = local_instant(day, window.start, tz)
                    end = local_instant(day, window.end, tz)
                    if end > start:  # a window wholly inside a DST gap is shut that day
                        found.append((start, end))
        found.sort()
        return found

    def is_open(self, at: float, tz: tzinfo) -> bool:
        """Whether a window is open at instant ``at`` in time zone ``tz``."""
        return any(start <= at < end for start, end in self._intervals(at, tz, 0))

    def next_open(self, at: float, tz: tzinfo) -> float:
        """The first instant ≥ ``at`` at which a window is open (``at`` itself when open).

        Raises ValueError when none opens within SEARCH_DAYS days.
        """
        for start, end in self._intervals(at, tz, SEARCH_DAYS):
            if end > at:
                return max(start, at)
        raise ValueError(
            f"no window ever opens (searched {SEARCH_DAYS} days from {at} in {tz}:"
            f" {', '.join(str(w) for w in self.windows) or 'no windows'})"
        )

    def closes_at(self, at: float, tz: tzinfo) -> float | None:
        """When the open period containing ``at`` ends, or None if no window is open at ``at``.

        Windows that touch or overlap make one period (``mon 09:00-12:00`` and
        ``mon 12:00-20:00`` close at 20:00). A schedule open round the clock
        reports the end of the SEARCH_DAYS horizon.
        """
        closes: float | None = None
        for start, end in self._intervals(at, tz, SEARCH_DAYS):
            if closes is None:
                if start <= at < end:
                    closes = end
            elif start <= closes:
                closes = max(closes, end)
            else:
                break
        return closes
