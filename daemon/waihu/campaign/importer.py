"""Reads a campaign's contact list from a CSV or Excel file and reports every row it refuses.

``read_contacts`` turns a file into ``Contact`` values ready for the campaign
store, plus one ``Reject`` per refused row; ``write_rejects`` writes those into a
CSV file next to the source (``rejects_path``) that the operator can correct and
import again. It is synchronous and touches only the one file: ``waihuctl`` runs
it locally (in a worker thread if its caller is async) and sends the contacts on.

File formats
------------
``.csv`` (also ``.tsv`` and ``.txt``): delimited text. The encoding is found in
this order: a byte-order mark (UTF-8, UTF-16, UTF-32); strict UTF-8; the encoding
Excel on Windows uses in the import's region, if ``charset-normalizer`` finds the
file could be in it or in one it contains — GB18030 for CN (it reads GBK and
GB2312), CP949 for KR, CP950 for TW, Big5-HKSCS for HK, CP932 for JP; UTF-8 or
that encoding if all but a few lines decode (those lines are refused, see below);
then charset-normalizer's best guess. ``ImportResult.encoding`` says which was
used. The delimiter is a comma unless the first lines clearly use tabs or
semicolons. Quoted fields may hold commas, quotes (doubled) and line breaks.

``.xlsx``: the first worksheet of the workbook; formulas count by their saved
value. Numeric cells come out as their digits (``13800138000.0`` or a cell shown
as ``1.38E+10`` is ``13800138000``); dates as ``2024-05-01``.

The first non-blank line is the header. Its cells are the column names (spaces
around them are ignored); two columns with the same name are an error. One
column holds the number: the one given by ``ImportOptions.number_column``, or
else the one named (any case) ``number``, ``phone``, ``mobile``, ``tel``,
``telephone``, 电话, 手机, 手机号, 手机号码, 号码, 电话号码 or 联系电话. A column
named ``timezone``, ``tz``, ``time_zone`` or 时区 is optional and gives the
contact's IANA time zone (empty: the campaign's). Every other named column is a
script variable, keyed by its header text: a column ``name`` fills ``{name}``.
The two columns a rejects file adds (``rejected_line``, ``reject_reason``) are
skipped, so a corrected rejects file imports like the original.

Numbers are read with ``phonenumbers`` and stored as E.164 (``+8613800138000``);
a number without a country code is taken to be in ``ImportOptions.region``.
Mobiles (``13800138000``, ``+86 138 0013 8000``, ``0086-138…``, ``86138…``) and
landlines with their area code (``010-12345678``, ``(0755)12345678``) are read.

Errors in the whole file
------------------------
``ContactFileError``, naming the file, and nothing is imported: an unknown file
type; a file that cannot be read or is not a workbook; an encoding that cannot
be told; no header; duplicate column names; no number column (the message lists
the headers found and the names accepted), or several that could be it; a
column the script needs (``required_variables``) that the file does not have.

Rows refused
------------
Each ``Reject`` has the row's line in the file (the first line of the file is
line 1, normally the header; a row whose quoted field spans lines is counted
from its first line, and the rows after it keep their true line numbers), the
number as written, the row's values and the reason, one of:

- the row is not valid text in the file's encoding (a damaged line): the reason
  names the bytes;
- a malformed CSV row (a quote closed in the middle of a field, or never);
- more cells than the header names: a value beyond the last column, or under a
  column with no name — usually an unquoted comma that shifted the row;
- empty number;
- not a number, too short or too long, with an extension, or not a valid number
  for its country (``phonenumbers.is_valid_number``); a number in scientific
  notation (``1.38E+10``: the spreadsheet dropped digits);
- duplicate: the same number was already accepted from an earlier line (named);
- already in the campaign (``ImportOptions.existing``);
- on the do-not-call list (``ImportOptions.dnc``);
- a time zone that ``zoneinfo`` does not know (``Asia/Shangai``, ``UTC+8``);
- an empty value in a column the script needs (``required_variables``).

The first three end the checks of a row; of the others a row gets every one
that applies, separated by "; " (a number on the do-not-call list whose
``name`` is empty besides). Nothing is dropped silently: ``len(contacts) +
len(rejects) == rows``; rows whose cells are all empty are skipped and counted
in ``blank``.

Rejects file
------------
``write_rejects`` writes CSV in UTF-8 with a byte-order mark (so that Excel shows
Chinese): ``rejected_line``, ``reject_reason``, the file's columns, then any cells
of a row that were outside them. Corrected and imported again, it is read like
the original. Note that Excel shows an 11-digit number as ``1.38E+10`` and, saved
again as CSV, keeps only those digits: such a row is refused again, saying so.

What it is not: the campaign store or the daemon link (``waihuctl`` sends the
contacts on), nor a deduplicator across campaigns (the do-not-call list and the
caller's ``existing`` numbers are what it checks against).

Error handling: problems with a row become a ``Reject``; problems with the file
raise ``ContactFileError``; a bad ``ImportOptions`` raises ``ValueError`` when built.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import itertools
import re
import zipfile
import zoneinfo
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import charset_normalizer
import openpyxl
import phonenumbers
from openpyxl.utils.exceptions import InvalidFileException

from waihu.api import Contact, WaihuError, check
from waihu.campaign.numbers import InvalidNumber, to_e164

__all__ = [
    "NUMBER_ALIASES",
    "REGION_ENCODINGS",
    "REPORT_COLUMNS",
    "TIMEZONE_ALIASES",
    "ContactFileError",
    "ImportOptions",
    "ImportResult",
    "Progress",
    "Reject",
    "read_contacts",
    "rejects_path",
    "write_rejects",
]

NUMBER_ALIASES = frozenset(
    {"number", "phone", "mobile", "tel", "telephone"}
    | {"电话", "手机", "手机号", "手机号码", "号码", "电话号码", "联系电话"}
)
TIMEZONE_ALIASES = frozenset({"timezone", "tz", "time_zone", "时区"})
# The columns write_rejects puts before the original ones; skipped on import.
REPORT_COLUMNS: tuple[str, str] = ("rejected_line", "reject_reason")

CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
XLSX_SUFFIXES = frozenset({".xlsx"})
CSV_DELIMITERS = ",\t;"  # the only delimiters sniffed; anything else is read as comma
SNIFF_LINES = 20  # lines of the file the dialect is guessed from
PROGRESS_EVERY = 1000  # rows between progress reports: often enough for a bar, cheap

# Byte-order marks, longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# The encoding Excel on Windows saves a CSV in, by the language of a region, with the
# encodings it is a superset of (Python's names). An import prefers the one of its
# region among charset-normalizer's candidates: for short files that ranking is
# unreliable between the East Asian double-byte encodings (GBK ranked as Korean).
REGION_ENCODINGS: Mapping[str, tuple[str, frozenset[str]]] = {
    "CN": ("gb18030", frozenset({"gb18030", "gbk", "gb2312", "hz"})),
    "TW": ("cp950", frozenset({"cp950", "big5"})),
    "HK": ("big5hkscs", frozenset({"big5hkscs", "cp950", "big5"})),
    "KR": ("cp949", frozenset({"cp949", "euc_kr"})),
    "JP": ("cp932", frozenset({"cp932", "shift_jis"})),
}
# A file is taken to be in UTF-8 (or its region's encoding) with damaged lines if
# some, but at most this share, of its non-ASCII lines fail to decode: a file in
# another encoding fails on most of them; a damaged file loses a line or two.
MAX_DAMAGED_SHARE = 0.05

# What the surrogateescape error handler leaves for a byte that did not decode.
UNDECODABLE = re.compile("[\udc80-\udcff]")


class ContactFileError(WaihuError):
    """A contact list that cannot be imported at all; the message names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@attrs.frozen(kw_only=True)
class ImportOptions:
    """What an import checks against: the campaign, the default region of numbers
    written without a country code, the variables the script needs, the numbers the
    campaign already has, the do-not-call list, and optionally the number column."""

    campaign_id: str
    region: str = attrs.field(
        default="CN",
        converter=str.upper,
        validator=check(
            lambda r: r in phonenumbers.SUPPORTED_REGIONS,
            "must be a region code such as CN, not {value!r}",
        ),
    )
    required_variables: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    existing: Container[str] = frozenset()  # E.164 numbers already in the campaign
    dnc: Container[str] = frozenset()  # E.164 numbers never to be called
    number_column: str | None = None  # the header of the number column, when not an alias


@attrs.frozen
class Reject:
    """A row not imported: its line in the file, the number as written, why, and the
    row's values by column (to write into the rejects file). ``extra`` holds the cells
    outside the named columns of a row refused for having them."""

    line: int
    number: str
    reason: str
    values: Mapping[str, str]
    extra: tuple[str, ...] = ()


@attrs.frozen
class ImportResult:
    """The contacts read and the rows refused, with what was learnt about the file.

    ``rows`` counts data rows (``len(contacts) + len(rejects)``), ``blank`` the rows
    skipped as empty; ``encoding`` is the CSV's text encoding (``"xlsx"`` for a
    workbook); ``columns`` the named columns in file order.
    """

    contacts: list[Contact]
    rejects: list[Reject]
    encoding: str
    rows: int
    blank: int
    columns: tuple[str, ...]
    number_column: str
    timezone_column: str | None


# progress(rows_done, rows_total): called every PROGRESS_EVERY rows and at the end;
# the total is None when the file does not say it up front.
Progress = Callable[[int, int | None], None]

# One record of the file: its first line, its cells, or why it could not be parsed.
Record = tuple[int, Sequence[str], str | None]


def read_contacts(
    path: Path | str, options: ImportOptions, *, progress: Progress | None = None
) -> ImportResult:
    """Read the contact list at ``path`` (``.csv``/``.tsv``/``.txt`` or ``.xlsx``).

    Blocks on file I/O and CPU (about 70 µs a row, most of it in phonenumbers); an
    async caller runs it in a worker thread. Raises ``ContactFileError`` for a file
    that cannot be imported.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _read_csv(path, options, progress)
    if suffix in XLSX_SUFFIXES:
        return _read_xlsx(path, options, progress)
    raise ContactFileError(
        path,
        f"unknown file type {suffix or '(no extension)'!r}: a contact list is .csv or .xlsx"
        " (save an .xls workbook as .xlsx)",
    )


def write_rejects(path: Path | str, rejects: Iterable[Reject], columns: Sequence[str]) -> None:
    """Write ``rejects`` as CSV: ``rejected_line``, ``reject_reason``, then ``columns``,
    then a row's ``extra`` cells (so that a row refused for them is refused again
    until corrected).

    UTF-8 with a byte-order mark, so that Excel shows Chinese text. Raises
    ``ContactFileError`` if the file cannot be written.
    """
    path = Path(path)
    try:
        with path.open("w", encoding="utf-8-sig", newline="") as out:
            writer = csv.writer(out)
            writer.writerow([*REPORT_COLUMNS, *columns])
            for reject in rejects:
                values = [reject.values.get(column, "") for column in columns]
                writer.writerow([reject.line, reject.reason, *values, *reject.extra])
    except OSError as exc:
        raise ContactFileError(path, f"cannot write the rejects file: {exc.strerror}") from None


def rejects_path(source: Path | str) -> Path:
    """Where the rejects of ``source`` go: ``contacts.xlsx`` → ``contacts.rejects.csv``."""
    source = Path(source)
    return source.with_name(f"{source.stem}.rejects.csv")


# ───────────────────────────── CSV ─────────────────────────────


def _read_csv(path: Path, options: ImportOptions, progress: Progress | None) -> ImportResult:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ContactFileError(path, f"cannot read: {exc.strerror}") from None
    encoding = _detect_encoding(path, data, options.region)
    # Bytes that do not decode become lone surrogates, found again per row: a damaged
    # line is refused on its own instead of failing the whole file.
    text = data.decode(encoding, errors="surrogateescape")
    records = _csv_records(text)
    return _import(
        path,
        records,
        len(records),
        encoding,
        options,
        progress,
        damaged=UNDECODABLE.search(text) is not None,
    )


def _detect_encoding(path: Path, data: bytes, region: str) -> str:
    """The text encoding of ``data``, by the order the module docstring gives."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return encoding
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    matches = charset_normalizer.from_bytes(data)
    local, family = REGION_ENCODINGS.get(region, ("", frozenset()))
    if any(_codec_name(match.encoding) in family for match in matches):
        return local
    # A damaged line makes charset-normalizer settle for a single-byte encoding that
    # reads anything (the rest as gibberish): look for the few lines first.
    for encoding in ("utf-8", local) if local else ("utf-8",):
        if _damaged_lines_only(data, encoding):
            return encoding
    best = matches.best()
    if best is None:
        raise ContactFileError(
            path, "cannot tell the text encoding; save the file as CSV UTF-8 and import again"
        )
    return _superset(_codec_name(best.encoding))


def _codec_name(encoding: str) -> str:
    """Python's canonical name for an encoding (``utf_16`` → ``utf-16``, cp936 → gbk)."""
    return codecs.lookup(encoding).name


def _superset(encoding: str) -> str:
    """The encoding of REGION_ENCODINGS that reads all of ``encoding`` (gbk → gb18030)."""
    for local, family in REGION_ENCODINGS.values():
        if encoding in family:
            return local
    return encoding


def _damaged_lines_only(data: bytes, encoding: str) -> bool:
    """Whether some, but at most MAX_DAMAGED_SHARE, of the non-ASCII lines of ``data``
    fail to decode as ``encoding``: a file in it, damaged here and there."""
    non_ascii = damaged = 0
    # b"\n" is never part of a character in the encodings tried (ASCII-compatible).
    for line in data.split(b"\n"):
        if line.isascii():
            continue
        non_ascii += 1
        try:
            line.decode(encoding)
        except UnicodeDecodeError:
            damaged += 1
    return 0 < damaged <= non_ascii * MAX_DAMAGED_SHARE


def _csv_records(text: str) -> list[Record]:
    """Every record of the CSV text with the line it starts on."""
    sample = "".join(itertools.islice(io.StringIO(text, newline=""), SNIFF_LINES))
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","  # one column, or nothing consistent: the default
    # strict: a quote closed mid-field or never closed is an error for that record,
    # instead of silently swallowing the lines after it.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[Record] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            span = f" (lines {start}–{reader.line_num})" if reader.line_num > start else ""
            records.append((start, (), f"malformed CSV row: {exc}{span}"))
            continue
        records.append((start, cells, None))
    return records


# ───────────────────────────── Excel ─────────────────────────────

# What openpyxl raises for a file that is not a readable workbook (SyntaxError
# covers the XML parser's ParseError).
XLSX_ERRORS = (OSError, zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, SyntaxError)


def _read_xlsx(path: Path, options: ImportOptions, progress: Progress | None) -> ImportResult:
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except XLSX_ERRORS as exc:
        raise ContactFileError(path, f"not a readable .xlsx workbook ({exc})") from None
    try:
        if not workbook.worksheets:
            raise ContactFileError(path, "the workbook has no worksheet")
        sheet = workbook.worksheets[0]
        total = sheet.max_row  # from the sheet's stored dimension, for progress only
        # The stored dimension can be wrong (some writers store A1:A1), and read-only
        # mode would cut rows to it: read every cell that is there instead.
        sheet.reset_dimensions()
        records = _sheet_records(path, sheet.iter_rows(values_only=True))
        return _import(path, records, total, "xlsx", options, progress, damaged=False)
    finally:
        workbook.close()


def _sheet_records(path: Path, rows: Iterator[tuple[Any, ...]]) -> Iterator[Record]:
    """The sheet's rows as text records; the sheet is parsed lazily, so a damaged
    workbook can fail here, half-way."""
    line = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except XLSX_ERRORS as exc:
            raise ContactFileError(
                path, f"not a readable .xlsx workbook after row {line} ({exc})"
            ) from None
        line += 1
        yield line, [_cell_text(value) for value in row], None


def _cell_text(value: Any) -> str:
    """A cell's value as the text a CSV export would hold, numbers as their digits."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        # A phone number typed into a numeric cell: 13800138000.0, not "1.38e+10".
        return str(int(value))
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


# ───────────────────────────── rows ─────────────────────────────


@attrs.frozen
class _Header:
    """Where each named column is among a row's cells."""

    columns: tuple[str, ...]  # named columns in file order
    named: tuple[tuple[int, str], ...]  # (cell index, column) of every named column
    unnamed: tuple[int, ...]  # cell indices under an empty header
    width: int  # cells in the header row
    number: tuple[int, str]
    timezone: tuple[int, str] | None
    variables: tuple[tuple[int, str], ...]
    required: tuple[str, ...]  # required variables, in column order


def _read_header(path: Path, cells: Sequence[str], options: ImportOptions) -> _Header:
    """Check the header row and place its columns, or raise ContactFileError."""
    names = [cell.strip() for cell in cells]
    named = tuple(
        (index, name) for index, name in enumerate(names) if name and name not in REPORT_COLUMNS
    )
    unnamed = tuple(index for index, name in enumerate(names) if not name)
    columns = tuple(name for _, name in named)
    found = ", ".join(columns) or "(none)"
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise ContactFileError(
            path, f"duplicate column names in the header: {', '.join(duplicates)}"
        )

    if options.number_column is not None:
        wanted = options.number_column.strip().casefold()
        numbers = [(index, name) for index, name in named if name.casefold() == wanted]
        if not numbers:
            raise ContactFileError(
                path, f"no column {options.number_column!r} for the number; columns: {found}"
            )
    else:
        numbers = [(index, name) for index, name in named if name.casefold() in NUMBER_ALIASES]
        if not numbers:
            raise ContactFileError(
                path,
                f"no number column; the first line must be a header naming it one of "
                f"{', '.join(sorted(NUMBER_ALIASES))}; columns found: {found}",
            )
    if len(numbers) > 1:
        raise ContactFileError(
            path,
            f"several columns could hold the number: {', '.join(n for _, n in numbers)};"
            " say which one holds the number to dial",
        )
    timezones = [
        (i, n) for i, n in named if n.casefold() in TIMEZONE_ALIASES and (i, n) != numbers[0]
    ]
    if len(timezones) > 1:
        raise ContactFileError(
            path, f"several time-zone columns: {', '.join(n for _, n in timezones)}"
        )
    timezone = timezones[0] if timezones else None
    variables = tuple(item for item in named if item != numbers[0] and item != timezone)
    variable_names = {name for _, name in variables}
    missing = sorted(options.required_variables - variable_names)
    if missing:
        raise ContactFileError(
            path,
            f"the script uses {', '.join('{' + name + '}' for name in missing)} but the file"
            f" has no such column; columns: {found}",
        )
    return _Header(
        columns=columns,
        named=named,
        unnamed=unnamed,
        width=len(names),
        number=numbers[0],
        timezone=timezone,
        variables=variables,
        required=tuple(name for _, name in variables if name in options.required_variables),
    )


def _is_blank(cells: Sequence[str]) -> bool:
    return not "".join(cells).strip()


class _RowChecker:
    """Turns each data row into a Contact or a Reject, remembering accepted numbers."""

    def __init__(self, header: _Header, options: ImportOptions, encoding: str, damaged: bool):
        self.header = header
        self.options = options
        self.encoding = encoding
        self.damaged = damaged  # whether any row may hold undecodable bytes
        self.contacts: list[Contact] = []
        self.rejects: list[Reject] = []
        self._accepted: dict[str, int] = {}  # E.164 → line it was accepted from
        self._timezones: dict[str, bool] = {}  # time-zone text → whether zoneinfo knows it

    def malformed(self, line: int, reason: str) -> None:
        self.rejects.append(Reject(line, "", reason, {}))

    def check(self, line: int, cells: Sequence[str]) -> None:
        """File the row starting on ``line`` as a Contact or a Reject."""
        header = self.header
        if len(cells) < header.width:  # spreadsheets drop trailing empty cells
            cells = [*cells, *[""] * (header.width - len(cells))]
        values = {name: cells[index].strip() for index, name in header.named}
        number_text = values[header.number[1]]
        if self.damaged and (reason := self._undecodable(cells)):
            clean = {name: UNDECODABLE.sub("\ufffd", value) for name, value in values.items()}
            self._reject(line, clean[header.number[1]], reason, clean)
            return
        if outside := self._outside_header(cells):
            listed = ", ".join(f"cell {index + 1} {cells[index].strip()!r}" for index in outside)
            reason = f"more cells than the header names ({len(header.columns)} columns): {listed}"
            extra = tuple(cells[index] for index in outside)
            self.rejects.append(Reject(line, number_text, reason, values, extra))
            return

        problems: list[str] = []
        number = None
        try:
            number = to_e164(number_text, self.options.region)
        except InvalidNumber as exc:
            problems.append(exc.reason)
        if number is not None:
            if (first := self._accepted.get(number)) is not None:
                problems.append(f"duplicate: {number} is already on line {first}")
            if number in self.options.existing:
                problems.append(f"{number} is already in campaign {self.options.campaign_id}")
            if number in self.options.dnc:
                problems.append(f"{number} is on the do-not-call list")
        timezone = values[header.timezone[1]] if header.timezone else ""
        if timezone and not self._known_timezone(timezone):
            problems.append(
                f"time zone {timezone!r} is not an IANA time zone name (such as Asia/Shanghai)"
            )
        if empty := [name for name in header.required if not values[name]]:
            problems.append(f"empty {', '.join(empty)} (needed by the script)")
        if problems or number is None:
            self._reject(line, number_text, "; ".join(problems), values)
            return
        self._accepted[number] = line
        self.contacts.append(
            Contact(
                campaign_id=self.options.campaign_id,
                number=number,
                variables={name: values[name] for _, name in header.variables},
                timezone=timezone or None,
                source_line=line,
            )
        )

    def _reject(self, line: int, number: str, reason: str, values: Mapping[str, str]) -> None:
        self.rejects.append(Reject(line, number, reason, values))

    def _undecodable(self, cells: Sequence[str]) -> str | None:
        for cell in cells:
            if escaped := UNDECODABLE.findall(cell):
                found = " ".join(f"0x{ord(ch) - 0xDC00:02X}" for ch in escaped)
                return f"not valid {self.encoding} text: undecodable bytes {found}"
        return None

    def _outside_header(self, cells: Sequence[str]) -> list[int]:
        """Indices of the non-empty cells under no named column."""
        header = self.header
        if not header.unnamed and len(cells) == header.width:
            return []  # the usual row: nothing to look at
        outside = [index for index in header.unnamed if cells[index].strip()]
        outside += [i for i in range(header.width, len(cells)) if cells[i].strip()]
        return outside

    def _known_timezone(self, name: str) -> bool:
        known = self._timezones.get(name)
        if known is None:
            try:
                zoneinfo.ZoneInfo(name)
            except (KeyError, ValueError, OSError):  # not found, not a key, a directory
                known = False
            else:
                known = True
            self._timezones[name] = known
        return known


def _import(
    path: Path,
    records: Iterable[Record],
    record_count: int | None,
    encoding: str,
    options: ImportOptions,
    progress: Progress | None,
    *,
    damaged: bool,
) -> ImportResult:
    """Read the header from ``records``, then check every row after it."""
    records = iter(records)
    consumed = 0
    header: _Header | None = None
    for line, cells, error in records:
        consumed += 1
        if error is not None:
            raise ContactFileError(path, f"line {line}: the header row is unreadable: {error}")
        if not _is_blank(cells):
            if damaged and any(UNDECODABLE.search(cell) for cell in cells):
                raise ContactFileError(
                    path, f"line {line}: the header is not valid {encoding} text"
                )
            header = _read_header(path, cells, options)
            break
    if header is None:
        raise ContactFileError(path, "no header row: the file is empty")

    total = None if record_count is None else max(record_count - consumed, 0)
    checker = _RowChecker(header, options, encoding, damaged)
    done = blank = 0
    for line, cells, error in records:
        if error is not None:
            checker.malformed(line, error)
        elif _is_blank(cells):
            blank += 1
        else:
            checker.check(line, cells)
        done += 1
        if progress is not None and done % PROGRESS_EVERY == 0:
            progress(done, total if total is None or done <= total else None)
    if progress is not None:
        progress(done, done)
    return ImportResult(
        contacts=checker.contacts,
        rejects=checker.rejects,
        encoding=encoding,
        rows=len(checker.contacts) + len(checker.rejects),
        blank=blank,
        columns=header.columns,
        number_column=header.number[1],
        timezone_column=header.timezone[1] if header.timezone else None,
    )
