"""A campaign's settings: what to dial with, how fast, when, and how often to retry.

The settings come from a TOML table — a campaign file beside the scripts
(``load_campaign_file``), or ``waihuctl`` flags turned into the same table —
and are structured strictly by ``waihu.config.structure_strict``: an unknown
key, a wrong type or a value the validators refuse is an error naming the
file and the key (``campaign.windows: 'mon-fri 25:00-20:00': hour 25 …``).
A campaign file::

    name = "spring-promo"
    script = "promo.toml"
    caller_id = "+861088886666"
    lines = 4
    calls_per_minute = 30
    timezone = "Asia/Shanghai"
    windows = ["mon-fri 09:00-12:00", "mon-fri 14:00-20:00", "sat 10:00-16:00"]
    start_date = 2026-03-02          # a TOML date or "2026-03-02"; inclusive
    end_date = "2026-03-31"          # inclusive; after it the campaign completes

    [retry.busy]                     # each [retry.OUTCOME] gives both keys
    delay_minutes = 20
    max_attempts = 3

    [[notify]]
    notifier = "sales"               # a [notify.sales] section of waihud.toml
    grades = ["A", "B"]
    mode = "immediate"               # or "digest": one message at the campaign's end

The store keeps the settings as JSON: ``to_table()`` gives plain data that
structures back to equal settings.

What it is not: the scheduler that acts on them, or the check that the
script, trunk and notifiers named exist (the daemon knows those).

Error handling: every fault raises ``waihu.config.ConfigError`` with lines
``FILE: campaign.KEY: what is wrong``.
"""

from __future__ import annotations

import difflib
import functools
import re
import tomllib
import unicodedata
import zoneinfo
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import phonenumbers

from waihu.api import CampaignRow, at_least, between, check, one_of, positive
from waihu.campaign.retry import DEFAULT_MAX_ATTEMPTS, DEFAULT_RULES, RetryPolicy, RetryRule
from waihu.campaign.windows import CallingWindows, local_instant, parse_window
from waihu.config import ConfigError, structure_strict

__all__ = [
    "CAMPAIGN_KEY",
    "CampaignSettings",
    "NotifyRule",
    "RetryRuleSettings",
    "RetrySettings",
    "load_campaign_file",
    "settings_from_row",
    "settings_from_table",
]

CAMPAIGN_KEY = "campaign"  # the key path messages start with: "campaign.windows: …"
NAME_MAX_CHARS = 64  # fits a terminal table column and a WeChat message title
LINES_LIMIT = 1000  # concurrent calls; far beyond one daemon's media capacity
RING_TIMEOUT_RANGE = (5, 300)  # seconds: below 5 s nobody can pick up; 5 min is absurd
ATTEMPTS_LIMIT = 20  # per contact; more is harassment whatever the outcome
DIAL_FORMATS = ("e164", "national", "international")
NOTIFY_MODES = ("immediate", "digest")
DEFAULT_NOTIFY_GRADES = ("A",)  # the hottest leads, as waihu.notify.leads assumes
DATE_KEYS = ("start_date", "end_date")
MINUTE = 60.0  # seconds
DEFAULT_WINDOWS = ("mon-fri 09:00-12:00", "mon-fri 14:00-20:00")
# RFC 3261 ``user``: unreserved, user-unreserved and %-escapes; a number (+861088886666) is one
CALLER_ID = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# characters that would break a name in a terminal, a log line or a message title
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


# ───────────────────────── validators ─────────────────────────
# Each message starts with the attribute's name: structure_strict puts it at
# the full key path.


def _check_name(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not 1 <= len(value) <= NAME_MAX_CHARS:
        raise ValueError(
            f"{attribute.name}: must be 1–{NAME_MAX_CHARS} characters, not {len(value)}"
        )
    if not value.strip():
        raise ValueError(f"{attribute.name}: must not be blank")
    for position, char in enumerate(value, start=1):
        if unicodedata.category(char) in FORBIDDEN_CATEGORIES:
            raise ValueError(
                f"{attribute.name}: must not contain control characters"
                f" ({char!r} at character {position})"
            )


@functools.cache
def _time_zones() -> frozenset[str]:
    # reads the tz database's directory once; ZoneInfo() alone also accepts
    # non-zones such as "posixrules"
    return frozenset(zoneinfo.available_timezones())


def _check_timezone(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value in _time_zones():
        return
    close = difflib.get_close_matches(value, _time_zones(), n=1)
    hint = f"did you mean {close[0]}?" if close else "an IANA name such as Asia/Shanghai"
    raise ValueError(f"{attribute.name}: unknown time zone {value!r} ({hint})")


def _check_windows(_inst: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError(
            f"{attribute.name}: must list at least one window, e.g. {DEFAULT_WINDOWS[0]!r}"
        )
    for text in value:
        try:
            parse_window(text)
        except ValueError as exc:
            raise ValueError(f"{attribute.name}: {exc}") from None


def _check_region(_inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value in phonenumbers.SUPPORTED_REGIONS:
        return
    hint = (
        f"write it in capitals: {value.upper()!r}"
        if value.upper() in phonenumbers.SUPPORTED_REGIONS
        else "a two-letter code such as CN"
    )
    raise ValueError(f"{attribute.name}: unknown region {value!r} ({hint})")


def _parse_date(name: str, value: str) -> date:
    problem = "" if ISO_DATE.fullmatch(value) else "not YYYY-MM-DD"
    if not problem:
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            problem = str(exc)
    raise ValueError(f"{name}: must be a date YYYY-MM-DD, not {value!r} ({problem})")


def _check_date(_inst: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        _parse_date(attribute.name, value)


def _check_end_date(inst: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    end = _parse_date(attribute.name, value)
    # start_date's own validator ran first (field order) and refused a bad one
    if inst.start_date is not None and end < date.fromisoformat(inst.start_date):
        raise ValueError(f"{attribute.name}: {value} is before start_date {inst.start_date}")


# ───────────────────────── the settings ─────────────────────────


@attrs.frozen(kw_only=True)
class RetryRuleSettings:
    """``[retry.OUTCOME]``: minutes before redialling, and attempts in all (both required)."""

    delay_minutes: float = attrs.field(validator=at_least(0))
    max_attempts: int = attrs.field(validator=between(1, ATTEMPTS_LIMIT))

    def rule(self) -> RetryRule:
        """The rule in seconds, as the retry policy takes it."""
        return RetryRule(self.delay_minutes * MINUTE, self.max_attempts)


def _default_rule(outcome: str) -> RetryRuleSettings:
    # one source for the defaults: the retry policy's own
    rule = DEFAULT_RULES[outcome]
    return RetryRuleSettings(delay_minutes=rule.delay / MINUTE, max_attempts=rule.max_attempts)


@attrs.frozen(kw_only=True)
class RetrySettings:
    """``[retry]``: one table per retried outcome; outcomes not here are never retried."""

    busy: RetryRuleSettings = attrs.field(factory=functools.partial(_default_rule, "busy"))
    no_answer: RetryRuleSettings = attrs.field(
        factory=functools.partial(_default_rule, "no_answer")
    )
    unreachable: RetryRuleSettings = attrs.field(
        factory=functools.partial(_default_rule, "unreachable")
    )
    failed: RetryRuleSettings = attrs.field(factory=functools.partial(_default_rule, "failed"))
    interrupted: RetryRuleSettings = attrs.field(
        factory=functools.partial(_default_rule, "interrupted")
    )
    switched_off: RetryRuleSettings = attrs.field(
        factory=functools.partial(_default_rule, "switched_off")
    )
    voicemail: RetryRuleSettings = attrs.field(
        factory=functools.partial(_default_rule, "voicemail")
    )

    def rules(self) -> dict[str, RetryRule]:
        """Outcome → rule, for ``RetryPolicy``."""
        return {field.name: getattr(self, field.name).rule() for field in attrs.fields(type(self))}


def _check_rule_matches_something(
    inst: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    if not value and not inst.grades:
        raise ValueError(f"{attribute.name}: empty, and grades too: the rule would match no call")


@attrs.frozen(kw_only=True)
class NotifyRule:
    """``[[notify]]``: which calls go to which notifier, and when.

    A call is sent when its grade is one of ``grades`` or it carries one of
    ``tags`` (an empty list matches nothing on its side; grades default to A).
    ``immediate`` sends each such call as it ends; ``digest`` lists them all
    when the campaign ends. ``waihu.notify.leads`` does the matching.
    """

    notifier: str = attrs.field(validator=check(bool, "must name a [notify.NAME] section"))
    grades: tuple[str, ...] = DEFAULT_NOTIFY_GRADES
    tags: tuple[str, ...] = attrs.field(default=(), validator=_check_rule_matches_something)
    mode: str = attrs.field(default="immediate", validator=one_of(*NOTIFY_MODES))


@attrs.frozen(kw_only=True)
class CampaignSettings:
    """The validated configuration of one campaign (see the module docstring)."""

    name: str = attrs.field(validator=_check_name)
    script: str = attrs.field(validator=check(str.strip, "must name a script"))
    trunk: str | None = attrs.field(
        default=None, validator=check(bool, "must name a [trunk.NAME] section")
    )
    caller_id: str = attrs.field(
        validator=check(
            CALLER_ID.fullmatch, "must be a number (+861088886666) or a SIP user, not {value!r}"
        )
    )
    lines: int = attrs.field(default=2, validator=between(1, LINES_LIMIT))
    calls_per_minute: float = attrs.field(default=20.0, validator=positive())
    timezone: str = attrs.field(default="Asia/Shanghai", validator=_check_timezone)
    windows: tuple[str, ...] = attrs.field(default=DEFAULT_WINDOWS, validator=_check_windows)
    ring_timeout: float = attrs.field(default=45.0, validator=between(*RING_TIMEOUT_RANGE))
    max_attempts: int = attrs.field(
        default=DEFAULT_MAX_ATTEMPTS, validator=between(1, ATTEMPTS_LIMIT)
    )
    retry: RetrySettings = attrs.field(factory=RetrySettings)
    region: str = attrs.field(default="CN", validator=_check_region)
    dial_format: str = attrs.field(default="national", validator=one_of(*DIAL_FORMATS))
    start_date: str | None = attrs.field(default=None, validator=_check_date)
    end_date: str | None = attrs.field(default=None, validator=_check_end_date)
    notify: tuple[NotifyRule, ...] = ()

    def zone(self) -> ZoneInfo:
        """The campaign's time zone: for contacts with none, and for its dates."""
        return ZoneInfo(self.timezone)

    def calling_windows(self) -> CallingWindows:
        """The windows, parsed."""
        return CallingWindows([parse_window(text) for text in self.windows])

    def retry_policy(self) -> RetryPolicy:
        """The retry rules under the campaign's ``max_attempts``."""
        return RetryPolicy(self.retry.rules(), self.max_attempts)

    def start_time(self) -> float:
        """The first instant of ``start_date`` in the campaign's zone; 0.0 without one."""
        if self.start_date is None:
            return 0.0
        return local_instant(date.fromisoformat(self.start_date), 0, self.zone())

    def _local_date(self, at: float) -> date:
        return datetime.fromtimestamp(at, self.zone()).date()

    def before_start(self, at: float) -> bool:
        """Whether instant ``at`` is on a day before ``start_date`` (campaign's zone)."""
        return self.start_date is not None and self._local_date(at) < date.fromisoformat(
            self.start_date
        )

    def after_end(self, at: float) -> bool:
        """Whether instant ``at`` is on a day after ``end_date`` (campaign's zone)."""
        return self.end_date is not None and self._local_date(at) > date.fromisoformat(
            self.end_date
        )

    def is_within_dates(self, at: float) -> bool:
        """Whether instant ``at`` is on a day from ``start_date`` to ``end_date`` inclusive."""
        return not self.before_start(at) and not self.after_end(at)

    def to_table(self) -> dict[str, Any]:
        """Plain JSON data (lists, no None) that structures back to equal settings."""
        table = attrs.asdict(self, value_serializer=_json_value)
        return {key: value for key, value in table.items() if value is not None}


def settings_from_table(
    table: Mapping[str, Any], *, file: Path | str = CAMPAIGN_KEY
) -> CampaignSettings:
    """Structure settings from a table (TOML, JSON or flags); ConfigError names file and key."""
    return structure_strict(CampaignSettings, table, file=file, key=CAMPAIGN_KEY)


def settings_from_row(row: CampaignRow) -> CampaignSettings:
    """The settings a stored campaign keeps (``to_table()`` data); ConfigError if no longer
    valid (a time zone dropped from the tz database…)."""
    return settings_from_table(row.settings, file=f"campaign {row.name}")


def _json_value(_inst: Any, _field: Any, value: Any) -> Any:
    # JSON and TOML have arrays, not tuples
    return list(value) if isinstance(value, tuple) else value


def load_campaign_file(path: Path | str) -> CampaignSettings:
    """Read a campaign file, whose top-level keys are the settings; ConfigError if unusable."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text: {exc.reason}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    for key in DATE_KEYS:
        # a TOML date (not a date-time) is the natural way to write one
        if type(raw.get(key)) is date:
            raw[key] = raw[key].isoformat()
    return settings_from_table(raw, file=path)
