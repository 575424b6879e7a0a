"""Calling windows: the syntax, local wall-clock hours across DST changes, gaps and overlaps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waihu.campaign.windows import CallingWindows, Window, parse_window

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
SHANGHAI = ZoneInfo("Asia/Shanghai")
MINUTE = 60


def utc(*fields: int) -> float:
    """An instant written in UTC: independent of the code under test."""
    return datetime(*fields, tzinfo=UTC).timestamp()


def local(tz: ZoneInfo, *fields: int) -> float:
    return datetime(*fields, tzinfo=tz).timestamp()


def windows(*texts: str) -> CallingWindows:
    return CallingWindows([parse_window(text) for text in texts])


# ───────────────────────── syntax ─────────────────────────


@pytest.mark.parametrize(
    ("text", "days", "start", "end"),
    [
        ("mon-fri 09:00-20:00", {0, 1, 2, 3, 4}, 9 * 60, 20 * 60),
        ("sat-mon 10:30-12:15", {5, 6, 0}, 10 * 60 + 30, 12 * 60 + 15),
        ("mon,wed,fri 00:00-24:00", {0, 2, 4}, 0, 24 * 60),
        ("daily 08:00-08:01", set(range(7)), 8 * 60, 8 * 60 + 1),
        ("mon-wed,sat 9:00-17:00", {0, 1, 2, 5}, 9 * 60, 17 * 60),
        ("Sun 23:00-24:00", {6}, 23 * 60, 24 * 60),
        ("fri-fri 12:00-13:00", {4}, 12 * 60, 13 * 60),
        ("  tue   07:00-09:00 ", {1}, 7 * 60, 9 * 60),
    ],
)
def test_parses_days_ranges_lists_and_times(text: str, days: set, start: int, end: int) -> None:
    window = parse_window(text)
    assert window == Window(days=frozenset(days), start=start, end=end)
    assert str(window) == text


def test_a_window_built_in_code_prints_in_the_syntax() -> None:
    window = Window(days=frozenset({4, 0, 2}), start=9 * 60 + 5, end=24 * 60)
    assert str(window) == "mon,wed,fri 09:05-24:00"
    assert parse_window(str(window)) == window


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("mon-fry 09:00-20:00", "unknown day 'fry' (mon tue wed thu fri sat sun)"),
        ("weekdays 09:00-20:00", "unknown day 'weekdays'"),
        ("mon,,fri 09:00-20:00", "empty day in the list 'mon,,fri'"),
        ("mon- 09:00-20:00", "day range 'mon-' needs a day on each side of '-'"),
        ("mon-fri", "expected DAYS HH:MM-HH:MM, e.g. 'mon-fri 09:00-20:00'"),
        ("mon-fri 09:00 - 20:00", "expected DAYS HH:MM-HH:MM"),
        ("mon-fri 9-17", "times must be HH:MM-HH:MM (24-hour), not '9-17'"),
        ("mon-fri 25:00-20:00", "hour 25 in '25:00' is not 00–23"),
        ("mon-fri 09:00-24:30", "hour 24 in '24:30' is not 00–23 (24:00 may only end a window)"),
        ("mon-fri 09:60-20:00", "minute 60 in '09:60' is not 00–59"),
        ("mon-fri 24:00-24:00", "a window cannot start at 24:00"),
        ("mon-fri 20:00-09:00", "end 09:00 is not after start 20:00 (write a window across"),
        ("mon-fri 09:00-09:00", "end 09:00 is not after start 09:00"),
    ],
)
def test_bad_window_message_quotes_text_and_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_window(text)
    assert str(info.value).startswith(f"{text!r}: {problem}")


# ───────────────────────── wall-clock hours across DST ─────────────────────────


@pytest.mark.parametrize(
    ("tz", "change"),
    [
        (NEW_YORK, date(2026, 3, 8)),  # spring forward: 02:00 EST → 03:00 EDT
        (NEW_YORK, date(2026, 11, 1)),  # fall back: 02:00 EDT → 01:00 EST
        (LONDON, date(2026, 3, 29)),
        (LONDON, date(2026, 10, 25)),
        (SHANGHAI, date(2026, 3, 8)),  # no DST: the control
        (SHANGHAI, date(2026, 11, 1)),
    ],
    ids=lambda v: str(v),
)
def test_open_minutes_over_a_fortnight_are_local_hours_9_to_19(tz: ZoneInfo, change: date) -> None:
    calling = windows("daily 09:00-20:00")
    first = change - timedelta(days=7)
    at = local(tz, first.year, first.month, first.day)
    open_minutes = 0
    for _ in range(14 * 24 * 60):
        hour = datetime.fromtimestamp(at, tz).hour
        assert calling.is_open(at, tz) == (9 <= hour < 20), datetime.fromtimestamp(at, tz)
        open_minutes += calling.is_open(at, tz)
        at += MINUTE
    assert open_minutes == 14 * 11 * 60  # eleven local hours every one of the 14 days


@pytest.mark.parametrize(
    ("tz", "saturday", "monday_9_utc"),
    [
        (NEW_YORK, (2026, 2, 28), (2026, 3, 2, 14)),  # EST both days
        (NEW_YORK, (2026, 3, 7), (2026, 3, 9, 13)),  # Saturday EST, Monday EDT
        (NEW_YORK, (2026, 10, 24), (2026, 10, 26, 13)),  # EDT both days
        (NEW_YORK, (2026, 10, 31), (2026, 11, 2, 14)),  # Saturday EDT, Monday EST
        (LONDON, (2026, 3, 28), (2026, 3, 30, 8)),  # Monday BST
        (LONDON, (2026, 10, 24), (2026, 10, 26, 9)),  # Monday GMT
        (SHANGHAI, (2026, 3, 7), (2026, 3, 9, 1)),
    ],
)
def test_next_open_from_saturday_evening_is_monday_nine_local(
    tz: ZoneInfo, saturday: tuple[int, int, int], monday_9_utc: tuple[int, int, int, int]
) -> None:
    calling = windows("mon-fri 09:00-20:00")
    at = local(tz, *saturday, 19, 30)
    assert not calling.is_open(at, tz)
    opens = calling.next_open(at, tz)
    assert opens == utc(*monday_9_utc)
    assert calling.closes_at(opens, tz) == utc(*monday_9_utc) + 11 * 3600


def test_next_open_is_now_when_open_and_edges_are_start_inclusive_end_exclusive() -> None:
    calling = windows("mon-fri 09:00-20:00")
    monday_9 = local(SHANGHAI, 2026, 3, 9, 9)
    assert calling.next_open(monday_9 + 0.25, SHANGHAI) == monday_9 + 0.25
    assert calling.is_open(monday_9, SHANGHAI)
    assert not calling.is_open(monday_9 - 0.001, SHANGHAI)
    assert calling.next_open(monday_9 - 0.001, SHANGHAI) == monday_9
    monday_20 = monday_9 + 11 * 3600
    assert calling.is_open(monday_20 - 0.001, SHANGHAI)
    assert not calling.is_open(monday_20, SHANGHAI)
    assert calling.next_open(monday_20, SHANGHAI) == monday_9 + 24 * 3600  # Tuesday 09:00
    assert calling.closes_at(monday_20, SHANGHAI) is None


def test_next_open_finds_a_window_a_week_away() -> None:
    calling = windows("sun 09:00-10:00")
    sunday_10 = local(SHANGHAI, 2026, 3, 8, 10)
    assert calling.next_open(sunday_10, SHANGHAI) == local(SHANGHAI, 2026, 3, 15, 9)


def test_no_window_ever_opens() -> None:
    with pytest.raises(ValueError, match="no window ever opens"):
        CallingWindows([]).next_open(utc(2026, 3, 8), SHANGHAI)


def test_touching_and_overlapping_windows_close_together() -> None:
    calling = windows("mon 09:00-12:00", "mon 11:00-12:30", "mon 12:30-14:00", "mon 15:00-16:00")
    monday_10 = local(SHANGHAI, 2026, 3, 9, 10)
    assert calling.closes_at(monday_10, SHANGHAI) == local(SHANGHAI, 2026, 3, 9, 14)
    assert calling.closes_at(local(SHANGHAI, 2026, 3, 9, 15), SHANGHAI) == local(
        SHANGHAI, 2026, 3, 9, 16
    )


def test_a_window_to_midnight_joins_the_next_days_from_midnight() -> None:
    calling = windows("fri 22:00-24:00", "sat 00:00-02:00")
    friday_23 = local(SHANGHAI, 2026, 3, 13, 23)
    assert calling.is_open(local(SHANGHAI, 2026, 3, 14, 0), SHANGHAI)
    assert calling.closes_at(friday_23, SHANGHAI) == local(SHANGHAI, 2026, 3, 14, 2)


# ───────────────────────── edges in DST gaps and overlaps ─────────────────────────
# 2026-03-08 (a Sunday) in New York: 02:00 EST is followed by 03:00 EDT (07:00 UTC).
# 2026-11-01 (a Sunday): 02:00 EDT is followed by 01:00 EST (06:00 UTC).


def test_window_opening_in_the_spring_gap_opens_when_the_clock_jumps() -> None:
    calling = windows("sun 02:30-04:00")
    saturday = local(NEW_YORK, 2026, 3, 7, 20)
    assert calling.next_open(saturday, NEW_YORK) == utc(2026, 3, 8, 7)  # 03:00 EDT
    assert not calling.is_open(utc(2026, 3, 8, 7) - 1, NEW_YORK)  # 01:59:59 EST
    assert calling.is_open(utc(2026, 3, 8, 7), NEW_YORK)
    assert calling.closes_at(utc(2026, 3, 8, 7), NEW_YORK) == utc(2026, 3, 8, 8)  # 04:00 EDT


def test_window_ending_in_the_spring_gap_closes_when_the_clock_jumps() -> None:
    calling = windows("sun 01:00-02:30")
    assert calling.closes_at(utc(2026, 3, 8, 6, 30), NEW_YORK) == utc(2026, 3, 8, 7)
    assert not calling.is_open(utc(2026, 3, 8, 7), NEW_YORK)


def test_window_wholly_inside_the_gap_is_shut_that_day() -> None:
    calling = windows("sun 02:10-02:50")
    saturday = local(NEW_YORK, 2026, 3, 7, 20)
    # the next Sunday, in EDT
    assert calling.next_open(saturday, NEW_YORK) == utc(2026, 3, 15, 6, 10)


def test_window_opening_in_the_autumn_overlap_opens_at_the_first_occurrence() -> None:
    calling = windows("sun 01:30-03:00")
    saturday = local(NEW_YORK, 2026, 10, 31, 20)
    assert calling.next_open(saturday, NEW_YORK) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert calling.closes_at(utc(2026, 11, 1, 5, 30), NEW_YORK) == utc(2026, 11, 1, 8)  # 03:00 EST
    assert calling.is_open(utc(2026, 11, 1, 6, 45), NEW_YORK)  # 01:45 EST, the second pass


def test_a_30_minute_dst_shift_is_handled_like_an_hour() -> None:
    lord_howe = ZoneInfo("Australia/Lord_Howe")  # +10:30 ↔ +11:00; 2026-10-04 02:00 → 02:30
    calling = windows("sun 02:10-03:00")
    assert calling.next_open(local(lord_howe, 2026, 10, 3, 12), lord_howe) == local(
        lord_howe, 2026, 10, 4, 2, 30
    )


# ───────────────────────── property ─────────────────────────

ZONES = [
    "America/New_York",
    "Europe/London",
    "Asia/Shanghai",
    "Australia/Lord_Howe",
    "America/Santiago",  # changes at midnight
    "Asia/Kathmandu",  # +05:45
]
TRANSITIONS = [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6), utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)]
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@st.composite
def window_texts(draw: st.DrawFn) -> str:
    days = draw(st.sets(st.sampled_from(DAY_NAMES), min_size=1, max_size=7))
    start = draw(st.integers(0, 24 * 4 - 1)) * 15
    end = draw(st.integers(start // 15 + 1, 24 * 4)) * 15
    return f"{','.join(sorted(days))} {start // 60:02}:{start % 60:02}-{end // 60:02}:{end % 60:02}"


instants = st.one_of(
    st.floats(utc(2025, 12, 1), utc(2027, 1, 31)),
    st.builds(
        lambda base, offset: base + offset,
        st.sampled_from(TRANSITIONS),
        st.floats(-3 * 86400, 3 * 86400),
    ),
)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(window_texts(), min_size=1, max_size=3), st.sampled_from(ZONES), instants)
def test_next_open_is_open_and_no_earlier_minute_is(texts: list[str], zone: str, at: float) -> None:
    tz = ZoneInfo(zone)
    calling = windows(*texts)
    opens = calling.next_open(at, tz)
    assert opens >= at
    assert calling.is_open(opens, tz)
    minute = at
    while minute < opens:
        assert not calling.is_open(minute, tz), datetime.fromtimestamp(minute, tz)
        minute = (minute // MINUTE + 1) * MINUTE
    closes = calling.closes_at(opens, tz)
    assert closes is not None and closes > opens
    assert calling.is_open(closes - 0.5, tz)
    if closes < at + 7 * 86400:  # a schedule open all week runs to the search horizon
        assert not calling.is_open(closes, tz)
