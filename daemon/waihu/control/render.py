"""How ``waihuctl`` shows each command's result to a person (``--json`` bypasses this).

Each ``render_*`` function takes the ``result`` of one control method, exactly
as it came off the socket (plain JSON values), and returns the text to print;
``render_event`` does the same for one pushed event of ``watch``. Results and
events may carry keys these functions do not know (a newer daemon): they are
shown generically, never dropped. ``emit`` prints such text on any terminal.

What it is not: the protocol (``protocol``) or the socket client (``client``).
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

__all__ = [
    "emit",
    "progress_bar",
    "render_audit",
    "render_call",
    "render_call_placed",
    "render_calls",
    "render_campaign",
    "render_campaign_created",
    "render_campaign_summary",
    "render_campaigns",
    "render_contacts_moved",
    "render_dnc_added",
    "render_dnc_list",
    "render_dnc_removed",
    "render_event",
    "render_plugins",
    "render_pruned",
    "render_shutdown",
    "render_status",
    "render_value",
    "render_watching",
]

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # local time: operators read calls in their own day
CLOCK_FORMAT = "%H:%M:%S"  # a live event's time of day; milliseconds are added
NONE = "-"  # how a missing value is shown in tables and headers
CALL_ID_WIDTH = len("20261125-150001-a1b2c3")  # ids the daemon makes; keeps columns aligned
KIND_WIDTH = len("utterance")  # the longest event kind
BAR_WIDTH = 20  # characters of a progress bar: 5 % each
SCRIPT_HASH_SHOWN = 12  # hex digits of a script's sha256 shown: enough to tell versions apart
BAR_DONE, BAR_LEFT = "#", "-"  # ASCII: a bar reads the same in any terminal and in a pipe
FINISHED_STATES = ("done", "skipped", "cancelled")  # contacts a campaign is through with
BYTE_UNITS = ("B", "kB", "MB", "GB", "TB")  # powers of 1000, as disk tools print sizes


def emit(text: str, stream: TextIO) -> None:
    """Write ``text`` and a newline; characters the stream cannot encode are escaped."""
    try:
        stream.write(text + "\n")
    except UnicodeEncodeError:
        # a terminal that cannot show Korean/Chinese still gets every character, escaped
        encoding = stream.encoding or "ascii"
        stream.write((text + "\n").encode(encoding, "backslashreplace").decode(encoding))


def render_status(result: Mapping[str, Any]) -> str:
    """``status``: the daemon at a glance — facts, then trunks, then script errors.

    Spans are counted to the daemon's ``now``; times of day are local. Keys
    this function does not know are shown generically after the facts.
    """
    now = result.get("now")
    now = now if isinstance(now, int | float) else time.time()
    trunks = result.get("trunks")
    table = isinstance(trunks, list) and all(isinstance(t, Mapping) for t in trunks)
    facts: list[tuple[str, str]] = []
    for key, value in result.items():
        if key in _STATUS_SHOWN:
            facts += _STATUS_SHOWN[key](value, result, now)
        elif key not in _STATUS_ELSEWHERE or (key == "trunks" and not table):
            facts.append((key.replace("_", " "), _value(value)))  # (an older daemon's trunks)
    lines = [_fields(facts)]
    if table and trunks:
        lines += ["", "trunks", _indent(_trunk_table(trunks, now))]
    errors = result.get("script_errors")
    if errors:
        lines += ["", "script errors", *_script_error_lines(errors, now)]
    return "\n".join(lines)


STATUS_SEPARATOR = " · "  # between the parts of one status line: counts read as a list
TIME_OF_DAY = "%H:%M"  # "failing since 14:02": the day is today's unless said
DAY_AND_TIME = "%Y-%m-%d %H:%M"
MS_WHOLE = 100.0  # lateness at or above this many ms is shown without decimals
SPAN_MINUTE, SPAN_HOUR, SPAN_DAY = 60, 3600, 86400  # seconds, for "2 h 14 min"

_Facts = list[tuple[str, str]]


def _span(seconds: float) -> str:
    """A coarse span for people: ``42 s``, ``3 min``, ``2 h 14 min``, ``3 d 4 h``."""
    whole = max(0, int(seconds))
    if whole < SPAN_MINUTE:
        return f"{whole} s"
    if whole < SPAN_HOUR:
        return f"{whole // SPAN_MINUTE} min"
    if whole < SPAN_DAY:
        return f"{whole // SPAN_HOUR} h {whole % SPAN_HOUR // SPAN_MINUTE:02d} min"
    return f"{whole // SPAN_DAY} d {whole % SPAN_DAY // SPAN_HOUR} h"


def _at(timestamp: float, now: float) -> str:
    """``14:02`` on the day of ``now``, else ``2026-03-04 14:02`` (local time)."""
    then, today = time.localtime(timestamp), time.localtime(now)
    same_day = then[:3] == today[:3]
    return time.strftime(TIME_OF_DAY if same_day else DAY_AND_TIME, then)


def _since(timestamp: Any, now: float) -> str:
    """``14:02, 3 min``: when, and how long ago."""
    if not isinstance(timestamp, int | float):
        return NONE
    return f"{_at(timestamp, now)}, {_span(now - timestamp)}"


def _ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return NONE
    return f"{value:.0f} ms" if value >= MS_WHOLE else f"{value:.3g} ms"


def _joined(parts: Iterable[str]) -> str:
    return STATUS_SEPARATOR.join(parts)


def _status_uptime(value: Any, result: Mapping[str, Any], now: float) -> _Facts:
    shown = _span(value) if isinstance(value, int | float) else _value(value)
    started = result.get("started_at")
    if isinstance(started, int | float):
        shown += f" (since {_when(started)})"
    return [("uptime", shown)]


def _status_live(value: Any, result: Mapping[str, Any], now: float) -> _Facts:
    trunks = result.get("trunks") or []
    per_trunk = [
        f"{t.get('name', NONE)} {t['live_calls']}"
        for t in trunks
        if isinstance(t, Mapping) and t.get("live_calls")
    ]
    return [("live calls", f"{value} ({', '.join(per_trunk)})" if per_trunk else str(value))]


def _status_today(value: Any, result: Mapping[str, Any], now: float) -> _Facts:
    if not isinstance(value, Mapping):
        return [("today", _value(value))]
    calls = value.get("calls", 0)
    if not calls:
        return [("today", "no calls yet")]
    outcomes = value.get("outcomes") or {}
    parts = [f"{calls} call{'s' if calls != 1 else ''}"]
    parts += [f"{k.replace('_', ' ')} {n}" for k, n in _largest_first(outcomes)]
    in_progress = calls - sum(outcomes.values())
    if in_progress > 0:
        parts.append(f"in progress {in_progress}")
    grades = value.get("grades") or {}
    shown = _joined(f"{g} {n}" for g, n in sorted(grades.items())) or "none yet"
    return [("today", _joined(parts)), ("grades today", shown)]


def _largest_first(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _status_campaigns(value: Any, result: Mapping[str, Any], now: float) -> _Facts:
    if value is None:
        return [("campaigns", "none (this storage keeps no campaigns)")]
    if not isinstance(value, Mapping):
        return [("campaigns", _value(value))]
    active = [f"{value[s]} {s}" for s in ("running", "paused") if value.get(s)]
    return [("campaigns", _joined(active) or "none running")]


def _status_clock(value: Any, result: Mapping[str, Any], now: float) -> _Facts:
    if not isinstance(value, Mapping):
        return [("media clock", _value(value))]
    late = value.get("late_ticks", 0)
    parts = [f"{value.get('ticks', 0)} ticks"]
    if late:
        parts.append(f"{late} late (worst {_ms(value.get('max_lateness_ms'))})")
    else:
        parts.append("none late")
    if value.get("skipped"):
        parts.append(f"{value['skipped']} skipped")
    parts.append(f"slowest tick {_ms(value.get('max_tick_ms'))}")
    if value.get("source_errors"):
        parts.append(f"{value['source_errors']} call(s) dropped for errors")
    return [("media clock", _joined(parts))]


def _status_plain(label: str, show: Callable[[Any], str]) -> Callable[..., _Facts]:
    return lambda value, result, now: [(label, show(value))]


# status keys shown as facts, each by its function of (value, the whole result, now)
_STATUS_SHOWN: dict[str, Callable[[Any, Mapping[str, Any], float], _Facts]] = {
    "version": _status_plain("version", str),
    "pid": _status_plain("pid", str),
    "uptime": _status_uptime,
    "draining": _status_plain("draining", lambda v: "yes (no new calls)" if v else "no"),
    "live_calls": _status_live,
    "today": _status_today,
    "campaigns": _status_campaigns,
    "media_clock": _status_clock,
    "scripts": _status_plain("scripts", lambda v: _listing(v) if isinstance(v, list) else str(v)),
}
# status keys shown by another line, or in a section of their own
_STATUS_ELSEWHERE = {"now", "started_at", "trunks", "script_errors"}


def _trunk_table(trunks: Sequence[Mapping[str, Any]], now: float) -> str:
    rows = [
        [
            t.get("name", NONE),
            t.get("state", NONE),
            _since(t.get("since"), now),
            f"{t.get('live_calls', 0)}/{t['lines']}" if t.get("lines") else NONE,
            t.get("detail") or "",
        ]
        for t in trunks
    ]
    return _table(["NAME", "STATE", "SINCE", "CALLS", "DETAIL"], rows)


def _script_error_lines(errors: Any, now: float) -> list[str]:
    """Each problem as ``FILE:LINE: KEY: MESSAGE``, then what serves calls meanwhile."""
    if not isinstance(errors, list):  # an older daemon: {file: problems}
        return [_indent(_value(errors))]
    lines: list[str] = []
    for error in errors:
        file = str(error.get("file", NONE))
        for problem in error.get("problems") or []:
            problem = str(problem)
            lines.append("  " + (problem if problem.startswith(file) else f"{file}: {problem}"))
        kept = error.get("in_use")
        if isinstance(kept, Mapping) and isinstance(kept.get("loaded_at"), int | float):
            version = str(kept.get("script_hash") or "")[:SCRIPT_HASH_SHOWN]
            lines.append(
                f"    in use: the version of {kept.get('script', NONE)} loaded at "
                f"{_at(kept['loaded_at'], now)}" + (f" ({version})" if version else "")
            )
        else:
            lines.append("    not loaded")
    return lines


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def render_plugins(result: Sequence[Mapping[str, Any]]) -> str:
    """``plugins``: a table of name, distribution, version and hooks."""
    rows = [
        [
            p.get("name", NONE),
            p.get("distribution") or NONE,
            p.get("version") or NONE,
            ", ".join(p.get("hooks") or ()) or NONE,
        ]
        for p in result
    ]
    return _table(["NAME", "DISTRIBUTION", "VERSION", "HOOKS"], rows) if rows else "no plugins"


def render_trunks(result: Sequence[Mapping[str, Any]]) -> str:
    """``trunks``: one line per trunk — state, since, calls in use of its lines, registration
    (``until 14:03``, ``failed at 14:02``, ``registering``, ``not registering``), detail."""
    if not result:
        return "no trunks"
    now = time.time()
    rows = [
        [
            t.get("name", NONE),
            t.get("state", NONE),
            _since(t.get("since"), now),
            f"{t.get('live_calls', 0)}/{t['lines']}" if t.get("lines") else NONE,
            _registration(t.get("registration"), now),
            "; ".join(part for part in (t.get("detail") or "", _guard(t.get("guard"))) if part),
        ]
        for t in result
    ]
    return _table(["NAME", "STATE", "SINCE", "CALLS", "REGISTRATION", "DETAIL"], rows)


def _guard(guard: Any) -> str:
    """What a trunk's guard turned away, when it turned anything away."""
    if not isinstance(guard, Mapping):
        return ""
    refused = int(guard.get("unknown_dropped", 0)) + int(guard.get("unknown_rejected", 0))
    flood = int(guard.get("flood_dropped", 0))
    parts = [f"{refused} from unknown sources refused"] if refused else []
    parts += [f"{flood} over the flood limit dropped"] if flood else []
    return ", ".join(parts)


def _registration(registration: Any, now: float) -> str:
    """A trunk's registration in a few words, for the ``trunks`` table."""
    if not isinstance(registration, Mapping):
        return "not registering"
    state = str(registration.get("state", NONE))
    expires_at = registration.get("expires_at")
    if state == "registered" and isinstance(expires_at, int | float):
        return f"until {_at(expires_at, now)}"
    at = registration.get("at")
    if state == "failing" and isinstance(at, int | float):
        return f"failed at {_at(at, now)}"
    return state


def render_call_placed(result: Mapping[str, Any]) -> str:
    """``call``: the new call's id alone, so that ``id=$(waihuctl call …)`` works."""
    return str(result.get("call_id", _value(result)))


def render_calls(result: Sequence[Mapping[str, Any]]) -> str:
    """``calls``: one line per call, newest first."""
    if not result:
        return "no calls"
    rows = [
        [
            c.get("id", NONE),
            _when(c.get("created_at")),
            c.get("number", NONE),
            c.get("script", NONE),
            c.get("status", NONE),
            _value(c.get("outcome")),
            _value(c.get("sip_status")),
            _value(c.get("grade")),
            _duration(c["duration"]) if c.get("duration") is not None else NONE,
            _value(c.get("campaign_id")),
        ]
        for c in result
    ]
    headers = [
        "ID", "CREATED", "NUMBER", "SCRIPT", "STATUS", "OUTCOME", "SIP", "GRADE", "TALK",
        "CAMPAIGN",
    ]  # fmt: skip
    return _table(headers, rows)


def render_call(result: Mapping[str, Any]) -> str:
    """``call.show``: header lines, then the transcript, one line per turn."""
    answered, ended = result.get("answered_at"), result.get("ended_at")
    end = _when(ended)
    if answered is not None and ended is not None:
        end += f"  (talked {_duration(ended - answered)})"
    sip = " ".join(str(v) for v in (result.get("sip_status"), result.get("sip_reason")) if v)
    script = _value(result.get("script"))
    if result.get("script_hash"):  # which version of the file spoke
        script += f"  (version {str(result['script_hash'])[:SCRIPT_HASH_SHOWN]})"
    grade = _value(result.get("grade"))
    if result.get("grade_reason"):
        grade += f"  ({result['grade_reason']})"
    header = [
        ("number", _value(result.get("number"))),
        ("direction", _value(result.get("direction"))),  # inbound: the number called us
        ("script", script),
        ("trunk", _value(result.get("trunk"))),
        ("created", _when(result.get("created_at"))),
        ("answered", _when(answered)),
        ("ended", end),
        ("sip", sip or NONE),
        ("hung up by", _value(result.get("hangup_by"))),
        ("grade", grade),
        ("tags", _listing(result.get("tags") or [])),
        ("recording", _value(result.get("recording"))),
    ]
    if result.get("direction") == "inbound":
        header.insert(0, ("direction", "inbound (the number called us)"))
    if result.get("transfer"):  # the script handed the call to a person
        header.append(("transfer", _transfer(result["transfer"])))
    if result.get("answered_by"):  # who answered, as the screen decided
        machine = result.get("outcome") if result.get("outcome") != "answered" else None
        shown = {**result, "evidence": result.get("answered_by_evidence"), "outcome": machine}
        header.append(("answered by", _screened(shown)))
    quality = result.get("media_quality")
    if quality:
        header.append(("media", _media_quality(quality)))
    if result.get("error"):
        header.append(("error", str(result["error"])))
    lines = [f"call {result.get('id', NONE)}  {result.get('status', NONE)}", _fields(header)]
    turns = result.get("turns") or []
    lines.append("")
    lines.append("transcript" if turns else "transcript: nothing said")
    start = answered if answered is not None else result.get("created_at")
    lines += [_turn(turn, start) for turn in turns]
    return "\n".join(lines)


def _media_quality(quality: Mapping[str, Any]) -> str:
    """RTCP figures in one line: what we received, then what the far end reported."""
    parts = [
        f"received {quality.get('packets_received', 0)} packets, "
        f"lost {quality.get('packets_lost', 0)} ({100 * quality.get('loss_fraction', 0):.1f} %), "
        f"jitter {quality.get('jitter_ms', 0):.1f} ms"
    ]
    if quality.get("rtt_ms") is not None:
        parts.append(f"round trip {quality['rtt_ms']:.0f} ms")
    if quality.get("remote_loss_fraction") is not None:
        parts.append(f"far end lost {100 * quality['remote_loss_fraction']:.1f} %")
    return "; ".join(parts)


def render_shutdown(result: Mapping[str, Any]) -> str:
    """``shutdown``: what the daemon is now doing."""
    live = result.get("live_calls", 0)
    return f"waihud is shutting down; {live} live call(s) may finish first"


def render_watching(result: Mapping[str, Any]) -> str:
    """``watch``: what is being followed (the events themselves are ``render_event``'s)."""
    live = result.get("live_calls") or []
    if result.get("call_id"):
        return f"watching call {result['call_id']}; Ctrl-C to stop"
    if result.get("campaign"):
        return (
            f"watching campaign {result['campaign']} ({len(live)} live call(s) now); Ctrl-C to stop"
        )
    return f"watching all calls ({len(live)} live now); Ctrl-C to stop"


def render_value(result: Any) -> str:
    """Any result, readably: ``key  value`` lines for an object, a line per item for a list."""
    if isinstance(result, Mapping):
        return _fields([(str(k).replace("_", " "), _value(v)) for k, v in result.items()])
    if isinstance(result, list):
        return "\n".join(_value(item) for item in result) or "none"
    return _value(result)


# ───────────────────────── campaigns ─────────────────────────


def progress_bar(done: int, total: int) -> str:
    """``[########------------]  40%  400/1000``; ``no contacts`` when there are none."""
    if total <= 0:
        return "no contacts"
    filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
    percent = 100 * done // total  # floor: 100 % only when all are through
    bar = BAR_DONE * filled + BAR_LEFT * (BAR_WIDTH - filled)
    return f"[{bar}] {percent:3d}%  {done}/{total}"


def _progress(contacts: Mapping[str, int]) -> str:
    done = sum(contacts.get(state, 0) for state in FINISHED_STATES)
    return progress_bar(done, sum(contacts.values()))


def _named(result: Mapping[str, Any]) -> str:
    return f"campaign {result.get('id', NONE)} {result.get('name', NONE)}"


def render_campaign_summary(result: Mapping[str, Any]) -> str:
    """A campaign's state after a change: ``campaign 3f2a1c spring: paused (by the operator)``."""
    reason = f" ({result['reason']})" if result.get("reason") else ""
    return f"{_named(result)}: {result.get('state', NONE)}{reason}"


def render_campaign_created(result: Mapping[str, Any]) -> str:
    """``campaign create``/``clone``: the new campaign, and what to do next."""
    return (
        f"{render_campaign_summary(result)}\n"
        f"next: waihuctl campaign import {result.get('id', NONE)} CONTACTS.csv, "
        f"then waihuctl campaign start {result.get('id', NONE)}"
    )


def render_campaigns(result: Sequence[Mapping[str, Any]]) -> str:
    """``campaign list``: one line per campaign with its progress."""
    if not result:
        return "no campaigns yet"
    rows = [
        [
            c.get("id", NONE),
            c.get("name", NONE),
            c.get("state", NONE),
            _progress(c.get("contacts") or {}),
            c.get("reason") or "",
        ]
        for c in result
    ]
    return _table(["ID", "NAME", "STATE", "PROGRESS", "REASON"], rows)


def _counts(counts: Mapping[str, Any]) -> str:
    """``done 500, pending 400``: largest first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k} {v}" for k, v in ordered) or "none"


def _settings_lines(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    pace = settings.get("calls_per_minute")
    dates = [settings.get("start_date"), settings.get("end_date")]
    lines = [
        ("script", _value(settings.get("script"))),
        ("trunk", _value(settings.get("trunk"))),
        ("caller id", _value(settings.get("caller_id"))),
        ("lines", _value(settings.get("lines"))),
        ("pace", f"{pace:g} calls a minute" if isinstance(pace, int | float) else NONE),
        ("time zone", _value(settings.get("timezone"))),
        ("windows", _listing(settings.get("windows") or [])),
        ("dates", " to ".join(d or "any" for d in dates) if any(dates) else "any day"),
        ("ring timeout", f"{settings['ring_timeout']:g} s" if "ring_timeout" in settings else NONE),
        ("max attempts", _value(settings.get("max_attempts"))),
        ("region", _value(settings.get("region"))),
    ]
    notify = settings.get("notify") or []
    lines += [
        (
            "notify",
            f"{n.get('notifier')} ({n.get('mode')}): grades {_listing(n.get('grades') or [])}",
        )
        for n in notify
        if isinstance(n, Mapping)
    ]
    return lines


def render_campaign(result: Mapping[str, Any]) -> str:
    """``campaign show``: settings, progress, counts, the node funnel, live calls."""
    contacts = result.get("contacts") or {}
    header = [
        *_settings_lines(result.get("settings") or {}),
        ("created", _when(result.get("created_at"))),
        ("started", _when(result.get("started_at"))),
        ("ended", _when(result.get("ended_at"))),
    ]
    if result.get("reason"):
        header.append(("reason", str(result["reason"])))
    attempts = f"{result.get('attempts', 0)}"
    if result.get("reconciled"):
        attempts += f" ({result['reconciled']} closed at start-up after a crash)"
    counts = [
        ("progress", _progress(contacts)),
        ("contacts", _counts(contacts)),
        ("attempts", attempts),
        ("outcomes", _counts(result.get("outcomes") or {})),
        ("grades", _counts(result.get("grades") or {})),
        ("live calls", _listing(result.get("live_calls") or [])),
    ]
    lines = [f"{_named(result)}  {result.get('state', NONE)}", _fields(header), "", _fields(counts)]
    funnel = result.get("funnel") or []
    lines.append("")
    if not funnel:
        lines.append("funnel: no answered calls yet")
        return "\n".join(lines)
    lines.append("funnel: answered calls at each node of the script")
    rows = [
        [
            row.get("node", NONE),
            row.get("reached", 0),
            row.get("ended", 0),
            row.get("hung_up", 0),
            _share(row.get("hung_up", 0), row.get("reached", 0)),
        ]
        for row in funnel
    ]
    table = _table(["NODE", "REACHED", "ENDED THERE", "HUNG UP THERE", "HUNG UP %"], rows)
    lines += ["  " + line for line in table.splitlines()]
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else NONE


_MOVED = {"cancelled": "cancelled", "requeued": "queued again", "reset": "back to pending"}


def render_contacts_moved(result: Mapping[str, Any]) -> str:
    """``campaign cancel``/``redial``/``reset``: how many contacts moved, and where."""
    for key, where in _MOVED.items():
        if key in result:
            return f"campaign {result.get('id', NONE)}: {result[key]} contact(s) {where}"
    return render_value(result)


# ───────────────────────── do-not-call, audit, recordings ─────────────────────────


def render_dnc_added(result: Mapping[str, Any]) -> str:
    """``dnc add``: how many were new to the list."""
    added, given = result.get("added", 0), result.get("given", 0)
    already = f"; {given - added} already on it" if given > added else ""
    return f"added {added} number(s) to the do-not-call list{already}"


def render_dnc_removed(result: Mapping[str, Any]) -> str:
    """``dnc remove``: how many were taken off."""
    return f"removed {result.get('removed', 0)} number(s) from the do-not-call list"


def render_dnc_list(result: Sequence[Mapping[str, Any]]) -> str:
    """``dnc list``: one line per number."""
    if not result:
        return "the do-not-call list is empty"
    rows = [
        [r.get("number", NONE), r.get("reason") or NONE, _when(r.get("added_at"))] for r in result
    ]
    return _table(["NUMBER", "REASON", "ADDED"], rows)


def render_audit(result: Sequence[Mapping[str, Any]]) -> str:
    """``audit``: one line per operator action, newest first."""
    if not result:
        return "no operator actions recorded yet"
    rows = [
        [_when(e.get("at")), e.get("user", NONE), e.get("action", NONE), _value(e.get("params"))]
        for e in result
    ]
    return _table(["WHEN", "USER", "ACTION", "PARAMS"], rows)


def render_pruned(result: Mapping[str, Any]) -> str:
    """``recordings prune``: the day folders that went (or, dry, would go)."""
    days = list(result.get("days") or [])
    if not days:
        return "no recordings older than that"
    span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    what = f"{len(days)} day folder(s) ({span}): {result.get('files', 0)} file(s), "
    what += _size(result.get("bytes", 0))
    if result.get("dry_run"):
        return f"would delete {what}\na dry run: nothing was deleted; --apply deletes them"
    lines = [f"deleted {what}"]
    lines += [f"could not delete {error}" for error in result.get("errors") or []]
    return "\n".join(lines)


def _size(count: float) -> str:
    unit = 0
    while count >= 1000 and unit < len(BYTE_UNITS) - 1:
        count /= 1000
        unit += 1
    return f"{count:.0f} B" if unit == 0 else f"{count:.1f} {BYTE_UNITS[unit]}"


# one pushed event kind → the fields its line shows, and how
_EventDetail = tuple[tuple[str, ...], Callable[[Mapping[str, Any]], str]]


def _ended(f: Mapping[str, Any]) -> str:
    labels = (("grade", "grade "), ("sip_status", "sip "), ("hangup_by", "hung up by "))
    parts = [str(f["outcome"])] if f.get("outcome") else []
    parts += [label + str(f[key]) for key, label in labels if f.get(key) is not None]
    if f.get("tags"):
        parts.append("tags " + _listing(f["tags"]))
    if f.get("error"):
        parts.append(f"error: {f['error']}")
    return ", ".join(parts)


def _campaign(f: Mapping[str, Any]) -> str:
    return str(f.get("state")) + (f": {f['reason']}" if f.get("reason") else "")


def _screened(f: Mapping[str, Any]) -> str:
    """``voicemail (said '来电秘书') → voicemail``: who answered, why, what is filed."""
    text = f"{f.get('answered_by')}"
    if f.get("evidence"):
        text += f" ({f['evidence']})"
    if f.get("outcome"):
        text += f" → {f['outcome']}"
    return text


def _transfer(f: Mapping[str, Any]) -> str:
    status = f" (sip {f['status']})" if f.get("status") is not None else ""
    detail = f": {f['detail']}" if f.get("detail") else ""
    return f"{f.get('outcome')} to {f.get('target')} by {f.get('mode')}{status}{detail}"


def _turn_event(f: Mapping[str, Any]) -> str:
    label = f.get("intent") if f.get("speaker") == "callee" else f.get("node")
    return f"{f.get('speaker', '?')} [{label or NONE}]: {f.get('text', '')}"


def _heard(f: Mapping[str, Any]) -> str:
    confidence = f.get("confidence")
    shown = f" ({confidence:.2f})" if isinstance(confidence, int | float) else ""
    return f"{f.get('text', '')!r}{shown}"


_EVENT_DETAILS: dict[str, _EventDetail] = {
    "dialing": (
        ("number", "script", "trunk"),
        lambda f: (
            f"{f.get('number')} (script {f.get('script')}"
            + (f", trunk {f['trunk']})" if f.get("trunk") else ")")
        ),
    ),
    "ringing": (("status", "reason"), lambda f: f"{f.get('status')} {f.get('reason', '')}"),
    "answered": (("codec",), lambda f: f"codec {f.get('codec')}"),
    "turn": (("speaker", "node", "intent", "text"), _turn_event),
    "utterance": (("text", "confidence"), _heard),
    "barge_in": ((), lambda f: ""),
    "node": (("node",), lambda f: str(f.get("node"))),
    "hangup": (("by",), lambda f: f"by {f.get('by')}"),
    "ended": (("outcome", "grade", "tags", "sip_status", "hangup_by", "error"), _ended),
    "failed": (("outcome", "grade", "tags", "sip_status", "hangup_by", "error"), _ended),
    "campaign": (("state", "reason"), _campaign),
    "transfer": (("target", "mode", "outcome", "status", "detail"), _transfer),
    "screened": (("answered_by", "evidence", "outcome"), _screened),
    "dropped": (
        ("count",),
        lambda f: f"{f.get('count')} event(s) lost here: this monitor fell behind",
    ),
}


def render_event(message: Mapping[str, Any]) -> str:
    """One pushed event of ``watch`` as one line: time, call, kind, what happened.

    The campaign a call belongs to is shown last (``campaign=spring``), and
    not at all for a single call.
    """
    head = ("event", "call_id", "at", "campaign")
    fields = {k: v for k, v in message.items() if k not in head}
    if message.get("campaign") is not None:
        fields["campaign"] = message["campaign"]
    kind = str(message.get("event", "?"))
    used, detail = _EVENT_DETAILS.get(kind, ((), lambda f: ""))
    text = detail(fields)
    rest = ", ".join(f"{k}={_value(v)}" for k, v in fields.items() if k not in used)
    at = message.get("at")
    when = _time_of_day(at) if isinstance(at, int | float) else NONE
    call = _pad(str(message.get("call_id") or NONE), CALL_ID_WIDTH)
    return " ".join(
        part for part in (f"{when}  {call}  {kind.ljust(KIND_WIDTH)}", text, rest) if part
    ).rstrip()


# ───────────────────────── pieces ─────────────────────────


def _time_of_day(timestamp: float) -> str:
    millis = int(timestamp * 1000) % 1000
    return time.strftime(CLOCK_FORMAT, time.localtime(timestamp)) + f".{millis:03d}"


def _turn(turn: Mapping[str, Any], start: float | None) -> str:
    at = turn.get("started_at")
    offset = _clock(at - start) if at is not None and start is not None else "    "
    speaker = turn.get("speaker", "?")
    if speaker == "callee":
        label = turn.get("intent") or NONE
        if turn.get("confidence") is not None:
            label += f" {turn['confidence']:.2f}"
    else:
        label = turn.get("node") or NONE
    cut = " (cut off)" if turn.get("interrupted") else ""
    return f"  {offset}  {speaker} [{label}]{cut}: {turn.get('text', '')}"


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60:2d}:{seconds % 60:02d}"


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return NONE
    return time.strftime(TIME_FORMAT, time.localtime(timestamp))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def _listing(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values) or "none"


def _value(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return _listing(_value(v) for v in value)
    return str(value)


def _width(text: str) -> int:
    """Columns a terminal gives ``text``: Korean and Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max((_width(label) for label, _ in pairs), default=0)
    return "\n".join(f"  {_pad(label, width)}  {value}" for label, value in pairs)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(_width(r[i]) for r in [list(headers), *cells]) for i in range(len(headers))]
    lines = [
        "  ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [list(headers), *cells]
    ]
    return "\n".join(lines)
