"""Campaign settings: defaults, a sample file, JSON round trip, errors naming file and key."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from waihu.api import CampaignRow
from waihu.campaign import settings as settings_module
from waihu.campaign.settings import (
    CampaignSettings,
    NotifyRule,
    load_campaign_file,
    settings_from_row,
    settings_from_table,
)
from waihu.config import ConfigError, structure_strict

REQUIRED = {"name": "spring-promo", "script": "promo.toml", "caller_id": "+861088886666"}
FILE = "campaign.toml"


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()


def build(**overrides: object) -> CampaignSettings:
    return structure_strict(CampaignSettings, {**REQUIRED, **overrides}, file=FILE, key="campaign")


def problems(**overrides: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build(**overrides)
    return info.value.problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "promo.campaign.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ───────────────────────── defaults and methods ─────────────────────────


def test_defaults_fill_in() -> None:
    settings = build()
    assert settings.trunk is None
    assert settings.lines == 2
    assert settings.calls_per_minute == 20.0
    assert settings.zone() == ZoneInfo("Asia/Shanghai")
    assert settings.windows == ("mon-fri 09:00-12:00", "mon-fri 14:00-20:00")
    assert settings.ring_timeout == 45.0
    assert settings.region == "CN" and settings.dial_format == "national"
    assert settings.notify == ()


def test_default_windows_are_weekday_office_hours_with_a_lunch_break() -> None:
    settings = build()
    calling, tz = settings.calling_windows(), settings.zone()
    monday = datetime(2026, 3, 9, tzinfo=tz)
    assert calling.is_open(monday.replace(hour=11, minute=59).timestamp(), tz)
    assert not calling.is_open(monday.replace(hour=12, minute=30).timestamp(), tz)
    assert calling.is_open(monday.replace(hour=19, minute=59).timestamp(), tz)
    assert not calling.is_open(datetime(2026, 3, 14, 10, tzinfo=tz).timestamp(), tz)  # Saturday


def test_default_retry_policy() -> None:
    policy = build().retry_policy()
    assert policy.decide("busy", 1, 0.0) == ("pending", 30 * 60.0)
    assert policy.decide("no_answer", 2, 0.0) == ("pending", 60 * 60.0)
    assert policy.decide("unreachable", 1, 0.0) == ("pending", 120 * 60.0)
    assert policy.decide("unreachable", 2, 0.0) == ("done", 0.0)
    assert policy.decide("failed", 1, 0.0) == ("pending", 10 * 60.0)
    assert policy.decide("interrupted", 2, 0.0) == ("pending", 10 * 60.0)
    assert policy.decide("no_answer", 3, 0.0) == ("done", 0.0)


def test_retry_tables_and_the_campaign_cap_make_the_policy() -> None:
    settings = build(
        max_attempts=4,
        retry={"busy": {"delay_minutes": 20, "max_attempts": 6}},
    )
    policy = settings.retry_policy()
    assert policy.decide("busy", 3, 100.0) == ("pending", 100.0 + 20 * 60)
    assert policy.decide("busy", 4, 100.0) == ("done", 100.0)  # the campaign's cap
    assert policy.decide("failed", 1, 100.0) == ("pending", 100.0 + 10 * 60)  # default kept


def test_dates_are_whole_days_in_the_campaigns_zone() -> None:
    settings = build(start_date="2026-03-02", end_date="2026-03-31")
    # Asia/Shanghai is UTC+8: 2026-03-02 00:00 local is 2026-03-01 16:00 UTC
    assert settings.before_start(utc(2026, 3, 1, 15, 59, 59))
    assert not settings.is_within_dates(utc(2026, 3, 1, 15, 59, 59))
    assert not settings.before_start(utc(2026, 3, 1, 16))
    assert settings.is_within_dates(utc(2026, 3, 1, 16))
    assert settings.is_within_dates(utc(2026, 3, 31, 15, 59, 59))  # inclusive end
    assert not settings.after_end(utc(2026, 3, 31, 15, 59, 59))
    assert settings.after_end(utc(2026, 3, 31, 16))
    assert not settings.is_within_dates(utc(2026, 3, 31, 16))


def test_no_dates_means_always_within() -> None:
    settings = build()
    assert settings.is_within_dates(0.0) and settings.is_within_dates(utc(2100, 1, 1))
    assert not settings.before_start(0.0) and not settings.after_end(utc(2100, 1, 1))


def test_a_one_day_campaign() -> None:
    settings = build(timezone="America/New_York", start_date="2026-03-08", end_date="2026-03-08")
    assert settings.is_within_dates(utc(2026, 3, 8, 5))  # 00:00 EST
    assert not settings.is_within_dates(utc(2026, 3, 8, 4, 59))
    assert settings.is_within_dates(utc(2026, 3, 9, 3, 59))  # 23:59 EDT
    assert not settings.is_within_dates(utc(2026, 3, 9, 4))


def test_start_time_is_local_midnight_of_the_start_date() -> None:
    assert build(start_date="2026-03-02").start_time() == utc(2026, 3, 1, 16)
    assert build(start_date="2026-03-08", timezone="America/New_York").start_time() == utc(
        2026, 3, 8, 5
    )
    assert build().start_time() == 0.0


def test_start_time_skips_a_midnight_dst_gap() -> None:
    # Chile moves its clocks from 24:00 to 01:00: 2026-09-06 00:00 never happens
    settings = build(timezone="America/Santiago", start_date="2026-09-06")
    assert settings.start_time() == utc(2026, 9, 6, 4)  # 01:00 -03
    assert not settings.before_start(settings.start_time())
    assert settings.before_start(settings.start_time() - 1)


def test_notify_rules_default_to_grade_a_immediately() -> None:
    (rule,) = build(notify=[{"notifier": "sales"}]).notify
    assert rule == NotifyRule(notifier="sales", grades=("A",), tags=(), mode="immediate")
    (tagged,) = build(notify=[{"notifier": "crm", "grades": [], "tags": ["callback"]}]).notify
    assert tagged.grades == () and tagged.tags == ("callback",)


def test_stored_rows_give_back_their_settings() -> None:
    settings = build(lines=7, windows=["daily 10:00-11:00"])
    row = CampaignRow(id="a1b2c3", name=settings.name, settings=settings.to_table())
    assert settings_from_row(row) == settings
    broken = CampaignRow(id="a1b2c3", name="old", settings={**settings.to_table(), "lines": 0})
    with pytest.raises(ConfigError) as info:
        settings_from_row(broken)
    assert info.value.problems == ["campaign old: campaign.lines: must be 1–1000, not 0"]


# ───────────────────────── files and the JSON round trip ─────────────────────────

SAMPLE = """
    name = "spring-promo"
    script = "promo.toml"
    trunk = "office"
    caller_id = "+861088886666"
    lines = 4
    calls_per_minute = 30
    timezone = "Asia/Shanghai"
    windows = ["mon-fri 09:00-12:00", "mon-fri 14:00-20:00", "sat 10:00-16:00"]
    ring_timeout = 40
    max_attempts = 5
    region = "CN"
    dial_format = "e164"
    start_date = 2026-03-02
    end_date = "2026-03-31"

    [retry.busy]
    delay_minutes = 20
    max_attempts = 4

    [retry.unreachable]
    delay_minutes = 240.5
    max_attempts = 1

    [[notify]]
    notifier = "sales"
    grades = ["A", "B"]

    [[notify]]
    notifier = "manager"
    tags = ["complaint"]
    mode = "digest"
"""


def test_sample_file(tmp_path: Path) -> None:
    settings = load_campaign_file(write(tmp_path, SAMPLE))
    assert settings.name == "spring-promo" and settings.trunk == "office"
    assert settings.lines == 4 and settings.calls_per_minute == 30.0
    assert settings.ring_timeout == 40.0 and settings.max_attempts == 5
    assert settings.start_date == "2026-03-02"  # a TOML date becomes the same string
    assert settings.end_date == "2026-03-31"
    assert settings.dial_format == "e164"
    assert settings.retry.busy.delay_minutes == 20.0 and settings.retry.busy.max_attempts == 4
    assert settings.retry.unreachable.delay_minutes == 240.5
    assert settings.retry.no_answer.delay_minutes == 60.0  # untouched default
    assert settings.notify == (
        NotifyRule(notifier="sales", grades=("A", "B")),
        NotifyRule(notifier="manager", tags=("complaint",), mode="digest"),
    )
    assert settings.retry_policy().decide("unreachable", 1, 0.0) == ("done", 0.0)
    assert len(settings.calling_windows().windows) == 3


def test_the_example_in_the_module_docstring_loads(tmp_path: Path) -> None:
    doc = settings_module.__doc__ or ""
    example = doc.split("A campaign file::\n", 1)[1].split("\n\nThe store", 1)[0]
    settings = load_campaign_file(write(tmp_path, example))
    assert settings.name == "spring-promo" and settings.notify[0].notifier == "sales"


@pytest.mark.parametrize("text", [SAMPLE, ""])
def test_to_table_round_trips_through_json(tmp_path: Path, text: str) -> None:
    settings = load_campaign_file(write(tmp_path, SAMPLE)) if text else build()
    table = settings.to_table()
    assert json.loads(json.dumps(table)) == table  # plain JSON data
    assert None not in table.values()
    again = structure_strict(CampaignSettings, json.loads(json.dumps(table)), file=FILE, key="x")
    assert again == settings
    assert settings_from_table(table) == settings


def test_to_table_writes_arrays_and_nested_tables() -> None:
    table = build(notify=[{"notifier": "sales", "grades": ["A"]}]).to_table()
    assert table["windows"] == ["mon-fri 09:00-12:00", "mon-fri 14:00-20:00"]
    assert table["notify"] == [
        {"notifier": "sales", "grades": ["A"], "tags": [], "mode": "immediate"}
    ]
    assert table["retry"]["busy"] == {"delay_minutes": 30.0, "max_attempts": 3}
    assert "trunk" not in table and "start_date" not in table


def test_file_problems_name_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, SAMPLE.replace('"mon-fri 09:00-12:00"', '"mon-fri 25:00-20:00"'))
    with pytest.raises(ConfigError) as info:
        load_campaign_file(path)
    assert info.value.problems == [
        f"{path}: campaign.windows: 'mon-fri 25:00-20:00': hour 25 in '25:00' is not 00–23"
        " (24:00 may only end a window)"
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'name = "x"\nlines = \n', "Invalid value"),
        (b'name = "\xff"\n', "not UTF-8 text"),
        (None, "cannot read: No such file or directory"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "bad.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_campaign_file(path)
    (found,) = info.value.problems
    assert found.startswith(f"{path}: ") and problem in found


def test_a_date_time_is_not_a_date(tmp_path: Path) -> None:
    path = write(
        tmp_path, SAMPLE.replace("start_date = 2026-03-02", "start_date = 2026-03-02T09:00:00")
    )
    with pytest.raises(ConfigError) as info:
        load_campaign_file(path)
    (found,) = info.value.problems
    assert found.startswith(f"{path}: campaign.start_date: must be a string")


def test_unknown_key_and_missing_required_keys() -> None:
    with pytest.raises(ConfigError) as info:
        structure_strict(CampaignSettings, {"name": "x", "scrpit": "a"}, file=FILE, key="campaign")
    assert sorted(info.value.problems) == [
        f"{FILE}: campaign.caller_id: required key is missing",
        f"{FILE}: campaign.script: required key is missing",
        f"{FILE}: campaign: unknown key scrpit",
    ]


# ───────────────────────── every validator names its key ─────────────────────────


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"name": ""}, "campaign.name: must be 1–64 characters, not 0"),
        ({"name": "x" * 65}, "campaign.name: must be 1–64 characters, not 65"),
        ({"name": "   "}, "campaign.name: must not be blank"),
        (
            {"name": "a\tb"},
            "campaign.name: must not contain control characters ('\\t' at character 2)",
        ),
        ({"name": "a\u2028b"}, "campaign.name: must not contain control characters"),
        ({"script": " "}, "campaign.script: must name a script"),
        ({"trunk": ""}, "campaign.trunk: must name a [trunk.NAME] section"),
        ({"caller_id": ""}, "campaign.caller_id: must be a number (+861088886666) or a SIP user"),
        ({"caller_id": "010 8888"}, "campaign.caller_id: must be a number"),
        ({"caller_id": "robot@example.com"}, "campaign.caller_id: must be a number"),
        ({"lines": 0}, "campaign.lines: must be 1–1000, not 0"),
        ({"lines": 1001}, "campaign.lines: must be 1–1000, not 1001"),
        ({"lines": "2"}, "campaign.lines: must be an integer, not a string"),
        ({"lines": True}, "campaign.lines: must be an integer, not a boolean"),
        ({"calls_per_minute": 0}, "campaign.calls_per_minute: must be greater than 0, not 0.0"),
        (
            {"timezone": "Asia/Shangai"},
            "campaign.timezone: unknown time zone 'Asia/Shangai' (did you mean Asia/Shanghai?)",
        ),
        ({"timezone": "posixrules"}, "campaign.timezone: unknown time zone 'posixrules'"),
        ({"timezone": "../../etc/passwd"}, "campaign.timezone: unknown time zone"),
        ({"windows": ["mon-fri 25:00-20:00"]}, "campaign.windows: 'mon-fri 25:00-20:00': hour 25"),
        (
            {"windows": ["mon-fri 09:00-20:00", "mon-fry 10:00-11:00"]},
            "campaign.windows: 'mon-fry 10:00-11:00': unknown day 'fry'",
        ),
        ({"windows": []}, "campaign.windows: must list at least one window"),
        ({"windows": "mon-fri 09:00-20:00"}, "campaign.windows: must be an array, not a string"),
        ({"ring_timeout": 4.9}, "campaign.ring_timeout: must be 5–300, not 4.9"),
        ({"ring_timeout": 301}, "campaign.ring_timeout: must be 5–300, not 301.0"),
        ({"max_attempts": 0}, "campaign.max_attempts: must be 1–20, not 0"),
        ({"max_attempts": 21}, "campaign.max_attempts: must be 1–20, not 21"),
        (
            {"retry": {"busy": {"delay_minutes": -1, "max_attempts": 2}}},
            "campaign.retry.busy.delay_minutes: must be at least 0, not -1.0",
        ),
        (
            {"retry": {"no_answer": {"delay_minutes": 5, "max_attempts": 0}}},
            "campaign.retry.no_answer.max_attempts: must be 1–20, not 0",
        ),
        (
            {"retry": {"busy": {"delay_minutes": 5}}},
            "campaign.retry.busy.max_attempts: required key is missing",
        ),
        (
            {"retry": {"answered": {"delay_minutes": 5, "max_attempts": 2}}},
            "campaign.retry: unknown key answered",
        ),
        ({"region": "XX"}, "campaign.region: unknown region 'XX' (a two-letter code such as CN)"),
        ({"region": "cn"}, "campaign.region: unknown region 'cn' (write it in capitals: 'CN')"),
        (
            {"dial_format": "local"},
            "campaign.dial_format: must be one of e164, national, international, not 'local'",
        ),
        (
            {"start_date": "2026-02-30"},
            "campaign.start_date: must be a date YYYY-MM-DD, not '2026-02-30'"
            " (day is out of range for month)",
        ),
        (
            {"start_date": "20260301"},
            "campaign.start_date: must be a date YYYY-MM-DD, not '20260301' (not YYYY-MM-DD)",
        ),
        (
            {"end_date": "next week"},
            "campaign.end_date: must be a date YYYY-MM-DD, not 'next week'",
        ),
        (
            {"start_date": "2026-03-02", "end_date": "2026-03-01"},
            "campaign.end_date: 2026-03-01 is before start_date 2026-03-02",
        ),
        (
            {"notify": [{"notifier": ""}]},
            "campaign.notify.notifier: must name a [notify.NAME] section",
        ),
        (
            {"notify": [{"notifier": "sales", "mode": "later"}]},
            "campaign.notify.mode: must be one of immediate, digest, not 'later'",
        ),
        (
            {"notify": [{"notifier": "crm", "grades": []}]},
            "campaign.notify.tags: empty, and grades too: the rule would match no call",
        ),
        (
            {"notify": [{"notifier": "sales", "grades": "A"}]},
            "campaign.notify.grades: must be an array, not a string",
        ),
    ],
)
def test_every_validator_names_the_key(overrides: dict, problem: str) -> None:
    (found,) = problems(**overrides)
    assert found.startswith(f"{FILE}: {problem}")


def test_limits_themselves_are_accepted() -> None:
    settings = build(name="名" * 64, lines=1000, ring_timeout=300, max_attempts=20)
    assert len(settings.name) == 64
    assert build(lines=1, ring_timeout=5, max_attempts=1).ring_timeout == 5.0


def test_end_date_equal_to_start_date_is_a_one_day_campaign() -> None:
    assert build(start_date="2026-03-02", end_date="2026-03-02").end_date == "2026-03-02"


def test_the_shipped_example_campaign_file_is_valid() -> None:
    """etc/waihu/campaigns/example.toml is what operators copy: it must load as it is."""
    example = Path(__file__).resolve().parents[1] / "etc/waihu/campaigns/example.toml"
    settings = load_campaign_file(example)
    assert settings.lines == 20 and len(settings.notify) == 2
    assert settings.end_date == "2026-12-31" and settings.retry.busy.delay_minutes == 30
