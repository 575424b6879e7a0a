"""Writing a campaign's results as a spreadsheet people open: CSV for Excel, or .xlsx.

``waihuctl campaign export`` fetches the campaign's attempts page by page
and hands each page to an ``ExportWriter``. One row per attempt (a redialled
contact has several), with the contact's own columns, the outcome, who answered, the SIP
status, the grade and tags, the talk time, the call id and a column pointing
at the call's recording.

CSV is written as UTF-8 with a byte-order mark: without it, Excel on Chinese
Windows reads UTF-8 as the local code page and shows the names as mojibake.
Times are local to the machine running ``waihuctl``, as ``YYYY-MM-DD
HH:MM:SS``, which both Excel and people read.

What it is not: the query (the control socket's ``campaign.attempts``) or the
importer (``importer``).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import openpyxl

__all__ = ["FIXED_COLUMNS", "ExportWriter", "export_row"]

FIXED_COLUMNS = (
    "number",
    "attempt",
    "started",
    "outcome",
    "answered_by",
    "sip_status",
    "grade",
    "tags",
    "talk_seconds",
    "call_id",
    "recording",
    "note",
)
FORMATS = ("csv", "xlsx")


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def export_row(item: Mapping[str, Any], variables: Sequence[str]) -> list[Any]:
    """One spreadsheet row for one attempt as ``campaign.attempts`` returns it."""
    talk = item.get("talk_seconds")
    values = dict(item.get("variables") or {})
    return [
        item.get("number", ""),
        item.get("seq", ""),
        _when(item.get("started_at")),
        item.get("outcome") or "",
        item.get("answered_by") or "",  # who answered: person, voicemail, announcement…
        item.get("sip_status") or "",
        item.get("grade") or "",
        " ".join(item.get("tags") or ()),
        round(talk, 1) if isinstance(talk, int | float) else "",
        item.get("call_id", ""),
        item.get("recording") or "",
        item.get("note") or "",
        *(values.get(name, "") for name in variables),
    ]


class ExportWriter:
    """Writes attempt rows to ``path`` as CSV (UTF-8 with BOM) or .xlsx, by its suffix.

    The contact columns (``variables``) follow the fixed ones, in the order
    given. Use as a context manager; the file is complete when it exits.
    Raises ValueError for another suffix, OSError if the file cannot be written.
    """

    def __init__(self, path: Path, variables: Sequence[str]) -> None:
        self.path = Path(path)
        self.format = self.path.suffix.lower().lstrip(".")
        if self.format not in FORMATS:
            raise ValueError(f"{self.path}: export as .csv or .xlsx, not {self.path.suffix!r}")
        self.variables = list(variables)
        self.rows = 0
        self._file: Any = None
        self._csv: Any = None
        self._book: Any = None
        self._sheet: Any = None

    def __enter__(self) -> ExportWriter:
        header = [*FIXED_COLUMNS, *self.variables]
        if self.format == "csv":
            self._file = self.path.open("w", encoding="utf-8-sig", newline="")
            self._csv = csv.writer(self._file)
            self._csv.writerow(header)
        else:
            self._book = openpyxl.Workbook(write_only=True)  # streams rows: big exports fit
            self._sheet = self._book.create_sheet("results")
            self._sheet.append(header)
        return self

    def write(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Append one page of attempts."""
        for item in items:
            row = export_row(item, self.variables)
            if self._csv is not None:
                self._csv.writerow(row)
            else:
                self._sheet.append(row)
            self.rows += 1

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
        if self._book is not None:
            self._book.save(self.path)
