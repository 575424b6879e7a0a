"""``waihuctl``'s own steps for campaigns and the do-not-call list: files here, requests there.

Some operator commands work on a file on the operator's machine and send the
daemon only what it needs, so that a contact list of a million rows is read,
checked and reported where the operator can see and fix it:

- ``campaign create`` reads a campaign file (TOML) and/or flags into the
  settings table, checks it as the daemon will (every problem names the file
  and the key), and sends ``campaign.create``;
- ``campaign import CAMPAIGN FILE`` asks ``campaign.import_info`` what the
  campaign needs (the region of numbers without a country code, the script's
  variables), reads the CSV or .xlsx file with ``importer.read_contacts``
  (a progress bar on a terminal), sends the accepted contacts in batches of
  ``campaign.add_contacts`` that each fit a request line, merges the daemon's
  refusals (already in the campaign, on the do-not-call list) with the file's,
  writes them all to the rejects file beside the source and prints a summary;
- ``campaign export CAMPAIGN FILE`` pages through ``campaign.attempts`` twice —
  once for the contacts' columns, once to write — into CSV or .xlsx
  (``export.ExportWriter``);
- ``dnc import FILE`` and ``dnc export FILE`` move the do-not-call list in and out.

Each step is a function of ``local.LOCAL_COMMANDS``, called with a
``local.DaemonLink`` (one connection, opened at the first request) and the
command's params; it prints a text summary, or its JSON with ``--json``, and
returns the exit status.

Error handling: a file that cannot be read or written, or settings that do
not hold, raise ``ControlError("bad_request", ...)`` naming the file (and the
line or key): ``waihuctl`` prints it as it prints the daemon's errors, and
exits 1. Rows refused are not errors: they are reported, written to the
rejects file, and the import exits 0.

What it is not: the file formats (``waihu.campaign.importer``,
``waihu.campaign.export``), the daemon's checks (``waihu.campaign.service``),
or the command line (``client``).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from waihu.api import Contact
from waihu.campaign.export import ExportWriter
from waihu.campaign.importer import (
    ContactFileError,
    ImportOptions,
    ImportResult,
    Reject,
    read_contacts,
    rejects_path,
    write_rejects,
)
from waihu.campaign.settings import settings_from_table
from waihu.config import ConfigError
from waihu.control.protocol import ATTEMPTS_PAGE, MAX_LINE_BYTES, ControlError
from waihu.control.render import emit, render_campaign_created

if TYPE_CHECKING:
    from waihu.control.local import DaemonLink

__all__ = [
    "BATCH_CONTACTS",
    "create_campaign",
    "export_attempts",
    "export_dnc",
    "import_contacts",
    "import_dnc",
    "reject_kind",
]

PROG = "waihuctl"
BATCH_CONTACTS = 2000  # contacts per request: a few hundred kB, answered in well under a second
# room left in a request line for its envelope (id, method, campaign) around the contacts
ENVELOPE_BYTES = 4096
SHOWN_REJECTS = 20  # rejects listed in the summary; the rejects file has them all
PLAIN_PROGRESS_STEP = 10  # percent between progress lines when stderr is not a terminal
DNC_CAMPAIGN = "do-not-call"  # the import's campaign id for a do-not-call file: not stored
DATE_KEYS = ("start_date", "end_date")  # a campaign file may write these as TOML dates
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # local time, as the results export writes it
CREATE_SOURCE = "waihuctl campaign create"  # how problems name settings given as flags

# A reject's reason, by what it says first, as a kind to count: importer and service
# reasons name numbers and lines, which would make every reason a kind of its own.
REJECT_KINDS: tuple[tuple[str, str], ...] = (
    ("duplicate", "duplicate in the file"),
    ("already in", "already in the campaign"),
    ("do-not-call", "on the do-not-call list"),
    ("time zone", "unknown time zone"),
    ("needed by the script", "empty value the script needs"),
    ("more cells", "more cells than the header"),
    ("malformed", "malformed CSV row"),
    ("undecodable", "damaged text"),
    ("empty number", "empty number"),
    ("scientific notation", "number in scientific notation"),
)
OTHER_NUMBER_PROBLEM = "not a valid number"


def reject_kind(reason: str) -> str:
    """What kind of problem a reject's ``reason`` is, by its first problem."""
    first = reason.split("; ")[0]
    for marker, kind in REJECT_KINDS:
        if marker in first:
            return kind
    return OTHER_NUMBER_PROBLEM


# ───────────────────────── output ─────────────────────────


def _report(link: DaemonLink, result: Mapping[str, Any], text: str) -> None:
    """The step's result: its JSON with --json, else ``text``."""
    if link.as_json:
        emit(json.dumps(result, ensure_ascii=False, indent=2), sys.stdout)
    else:
        emit(text, sys.stdout)


class _Progress:
    """Progress on stderr: a rich bar on a terminal, else a plain line every 10 %."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        if sys.stderr.isatty():
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
        self._task: Any = None
        self._label = ""
        self._said = -1  # the last 10 % step printed

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def begin(self, label: str, total: int | None) -> None:
        """A new phase (``reading contacts.csv``), ``total`` items or None if unknown."""
        self._label, self._said = label, -1
        if self._bar is not None:
            self._task = self._bar.add_task(label, total=total)

    def update(self, done: int, total: int | None) -> None:
        """``done`` items of the current phase are through."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        if not total:
            return
        step = min(100, 100 * done // total) // PLAIN_PROGRESS_STEP
        if step > self._said:
            self._said = step
            emit(f"{PROG}: {self._label}: {step * PLAIN_PROGRESS_STEP}%", sys.stderr)


# ───────────────────────── campaign create ─────────────────────────


def _campaign_file(path: Path) -> dict[str, Any]:
    """A campaign file's table as written (a default the daemon fills stays unset)."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ControlError("bad_request", f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ControlError("bad_request", f"{path}: not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ControlError("bad_request", f"{path}: {exc}") from None
    for key in DATE_KEYS:
        if type(table.get(key)) is dt.date:  # a TOML date: JSON has none, send its text
            table[key] = table[key].isoformat()
    return table


def create_campaign(link: DaemonLink, file: str | None = None, **flags: Any) -> int:
    """``campaign create``: the file's settings, overridden by the flags given, checked here
    first (problems name the file and key), then sent."""
    table = _campaign_file(Path(file)) if file is not None else {}
    table.update({key: value for key, value in flags.items() if value is not None})
    try:
        settings_from_table(table, file=file or CREATE_SOURCE)
    except ConfigError as exc:
        raise ControlError("bad_request", "\n".join(exc.problems)) from None
    result = link.request("campaign.create", {"settings": table})
    _report(link, result, render_campaign_created(result))
    return 0


# ───────────────────────── contact files ─────────────────────────


def _read(path: Path, options: ImportOptions, progress: _Progress) -> ImportResult:
    progress.begin(f"reading {path.name}", None)
    try:
        return read_contacts(path, options, progress=progress.update)
    except ContactFileError as exc:
        raise ControlError("bad_request", str(exc)) from None


def _options(**kwargs: Any) -> ImportOptions:
    try:
        return ImportOptions(**kwargs)
    except ValueError as exc:
        raise ControlError("bad_request", str(exc)) from None


def _batches(items: Sequence[Any]) -> Iterator[list[Any]]:
    """``items`` in lists of at most BATCH_CONTACTS whose JSON fits one request line."""
    budget = MAX_LINE_BYTES - ENVELOPE_BYTES
    batch: list[Any] = []
    size = 0
    for item in items:
        # as protocol._line encodes: compact, UTF-8; +1 for the comma between items
        item_size = len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        if batch and (len(batch) == BATCH_CONTACTS or size + item_size > budget):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


def _contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "number": contact.number,
        "variables": dict(contact.variables),
        "timezone": contact.timezone,
        "line": contact.source_line,
    }


def _write_rejects(path: Path, rejects: Sequence[Reject], columns: Sequence[str]) -> Path | None:
    if not rejects:
        return None
    target = rejects_path(path)
    try:
        write_rejects(target, rejects, columns)
    except ContactFileError as exc:
        raise ControlError("bad_request", str(exc)) from None
    return target


def _rejects_summary(rejects: Sequence[Reject]) -> dict[str, int]:
    kinds = Counter(reject_kind(r.reason) for r in rejects)
    return dict(kinds.most_common())


def _summary_text(head: str, summary: Mapping[str, Any], rows: Iterable[tuple[str, str]]) -> str:
    lines = [head, *(f"  {label:<10} {value}" for label, value in rows)]
    listed = summary["rejects"][:SHOWN_REJECTS]
    lines += [f"  line {r['line']}: {r['number'] or '-'}: {r['reason']}" for r in listed]
    if len(summary["rejects"]) > len(listed):
        more = len(summary["rejects"]) - len(listed)
        lines.append(f"  … and {more} more in {summary['rejects_file']}")
    return "\n".join(lines)


def _reject_rows(rejects: Sequence[Reject]) -> list[dict[str, Any]]:
    return [{"line": r.line, "number": r.number, "reason": r.reason} for r in rejects]


def _rejected_text(summary: Mapping[str, Any]) -> str:
    kinds = ", ".join(f"{kind} {n}" for kind, n in summary["rejected_by_reason"].items())
    return f"{summary['rejected']}" + (f" ({kinds})" if kinds else "")


def _rows_text(result: ImportResult) -> str:
    return f"{result.rows}" + (f" ({result.blank} blank skipped)" if result.blank else "")


# ───────────────────────── campaign import ─────────────────────────


@attrs.define
class _Sent:
    added: int = 0
    rejects: list[Reject] = attrs.Factory(list)


def _send_contacts(
    link: DaemonLink, campaign_id: str, result: ImportResult, progress: _Progress
) -> _Sent:
    """Send the accepted contacts in batches; the daemon's refusals as rejects of their line."""
    by_line = {c.source_line: c for c in result.contacts}
    sent = _Sent()
    done = 0
    progress.begin("sending contacts", len(result.contacts))
    for batch in _batches([_contact_json(c) for c in result.contacts]):
        reply = link.request("campaign.add_contacts", {"campaign": campaign_id, "contacts": batch})
        sent.added += reply["added"]
        for refused in reply["rejects"]:
            contact = by_line.get(refused.get("line"))
            values = _row_values(result, contact) if contact is not None else {}
            sent.rejects.append(
                Reject(refused.get("line") or 0, refused["number"], refused["reason"], values)
            )
        done += len(batch)
        progress.update(done, len(result.contacts))
    return sent


def _row_values(result: ImportResult, contact: Contact) -> dict[str, str]:
    """An accepted contact as its row's values, for the rejects file."""
    values = {result.number_column: contact.number, **contact.variables}
    if result.timezone_column is not None:
        values[result.timezone_column] = contact.timezone or ""
    return values


def import_contacts(
    link: DaemonLink, campaign: str, file: str, number_column: str | None = None
) -> int:
    """``campaign import``: read and check ``file`` here, send what passes, report the rest."""
    path = Path(file)
    info = link.request("campaign.import_info", {"campaign": campaign})
    options = _options(
        campaign_id=info["id"],
        region=info["region"],
        required_variables=info["required_variables"],
        number_column=number_column,
    )
    with _Progress() as progress:
        result = _read(path, options, progress)
        sent = _send_contacts(link, info["id"], result, progress)
    rejects = sorted([*result.rejects, *sent.rejects], key=lambda r: r.line)
    rejects_file = _write_rejects(path, rejects, result.columns)
    summary = {
        "file": str(path),
        "campaign": info["id"],
        "name": info["name"],
        "encoding": result.encoding,
        "rows": result.rows,
        "blank": result.blank,
        "added": sent.added,
        "rejected": len(rejects),
        "rejected_by_reason": _rejects_summary(rejects),
        "rejects_file": str(rejects_file) if rejects_file else None,
        "rejects": _reject_rows(rejects),
    }
    rows = [
        ("encoding", result.encoding),
        ("rows", _rows_text(result)),
        ("added", str(sent.added)),
        ("rejected", _rejected_text(summary)),
    ]
    if rejects_file is not None:
        rows.append(("rejects", str(rejects_file)))
    head = f"{path} → campaign {info['id']} {info['name']}"
    _report(link, summary, _summary_text(head, summary, rows))
    return 0


# ───────────────────────── campaign export ─────────────────────────


def _pages(link: DaemonLink, campaign: str, last: int | None) -> Iterator[list[dict[str, Any]]]:
    """The campaign's attempts page by page, up to attempt ``last`` if given."""
    after = 0
    while True:
        page = link.request(
            "campaign.attempts", {"campaign": campaign, "after": after, "limit": ATTEMPTS_PAGE}
        )
        rows = [r for r in page["rows"] if last is None or r["attempt"] <= last]
        if rows:
            yield rows
        if page["next"] is None or (last is not None and page["next"] >= last):
            return
        after = page["next"]


def export_attempts(link: DaemonLink, campaign: str, file: str) -> int:
    """``campaign export``: every attempt so far, one row each, to CSV or .xlsx.

    A first pass collects the contacts' variable names (the columns after the
    fixed ones, in the order first seen) and the last attempt; the second
    writes up to that attempt, so calls made meanwhile do not add rows the
    columns were not chosen for.
    """
    path = Path(file)
    try:
        ExportWriter(path, ())  # refuses a suffix other than .csv/.xlsx before any request
    except ValueError as exc:
        raise ControlError("bad_request", str(exc)) from None
    variables: dict[str, None] = {}  # an ordered set
    last = 0
    for rows in _pages(link, campaign, None):
        for row in rows:
            variables.update(dict.fromkeys(row.get("variables") or {}))
        last = rows[-1]["attempt"]
    try:
        with ExportWriter(path, list(variables)) as writer:
            for rows in _pages(link, campaign, last) if last else ():
                writer.write(rows)
    except OSError as exc:
        raise ControlError("bad_request", f"{path}: cannot write: {exc.strerror}") from None
    summary = {"file": str(path), "campaign": campaign, "rows": writer.rows}
    summary["columns"] = list(variables)
    _report(link, summary, f"wrote {writer.rows} attempt(s) of campaign {campaign} to {path}")
    return 0


# ───────────────────────── do-not-call ─────────────────────────


def import_dnc(
    link: DaemonLink,
    file: str,
    reason: str | None = None,
    region: str = "CN",
    number_column: str | None = None,
) -> int:
    """``dnc import``: every valid number of a contact-style file onto the do-not-call list."""
    path = Path(file)
    options = _options(campaign_id=DNC_CAMPAIGN, region=region, number_column=number_column)
    with _Progress() as progress:
        result = _read(path, options, progress)
        numbers = [c.number for c in result.contacts]
        added = done = 0
        progress.begin("sending numbers", len(numbers))
        for batch in _batches(numbers):
            params = {"numbers": batch, "reason": reason or f"imported from {path.name}"}
            added += link.request("dnc.add", params)["added"]
            done += len(batch)
            progress.update(done, len(numbers))
    rejects_file = _write_rejects(path, result.rejects, result.columns)
    summary = {
        "file": str(path),
        "encoding": result.encoding,
        "rows": result.rows,
        "blank": result.blank,
        "numbers": len(numbers),
        "added": added,
        "rejected": len(result.rejects),
        "rejected_by_reason": _rejects_summary(result.rejects),
        "rejects_file": str(rejects_file) if rejects_file else None,
        "rejects": _reject_rows(result.rejects),
    }
    already = len(numbers) - added
    rows = [
        ("encoding", result.encoding),
        ("rows", _rows_text(result)),
        ("added", f"{added}" + (f" ({already} already listed)" if already else "")),
        ("rejected", _rejected_text(summary)),
    ]
    if rejects_file is not None:
        rows.append(("rejects", str(rejects_file)))
    _report(link, summary, _summary_text(f"{path} → the do-not-call list", summary, rows))
    return 0


def export_dnc(link: DaemonLink, file: str) -> int:
    """``dnc export``: the do-not-call list as CSV (UTF-8 with BOM, for Excel)."""
    path = Path(file)
    if path.suffix.lower() != ".csv":
        raise ControlError("bad_request", f"{path}: export the do-not-call list as .csv")
    entries = link.request("dnc.list")
    try:
        with path.open("w", encoding="utf-8-sig", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["number", "reason", "added"])
            for entry in entries:
                added = time.strftime(TIME_FORMAT, time.localtime(entry["added_at"]))
                writer.writerow([entry["number"], entry["reason"] or "", added])
    except OSError as exc:
        raise ControlError("bad_request", f"{path}: cannot write: {exc.strerror}") from None
    summary = {"file": str(path), "numbers": len(entries)}
    _report(link, summary, f"wrote {len(entries)} do-not-call number(s) to {path}")
    return 0
