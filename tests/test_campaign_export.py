"""Campaign exports as people open them: CSV that Excel reads as UTF-8, and .xlsx."""

from __future__ import annotations

import csv
from pathlib import Path

import openpyxl
import pytest

from waihu.campaign.export import FIXED_COLUMNS, ExportWriter

ROWS = [
    {
        "number": "+8613800138000",
        "seq": 1,
        "started_at": 1795000000.0,
        "outcome": "answered",
        "sip_status": 200,
        "grade": "A",
        "tags": ["price", "hot"],
        "talk_seconds": 42.26,
        "call_id": "20261130-090000-abcdef",
        "recording": "/var/lib/waihu/recordings/20261130/20261130-090000-abcdef.wav",
        "note": None,
        "variables": {"name": "张三", "city": "上海"},
    },
    {
        "number": "+8613900139000",
        "seq": 2,
        "started_at": 1795000100.0,
        "outcome": "busy",
        "sip_status": 486,
        "grade": None,
        "tags": [],
        "call_id": "20261130-090140-123456",
        "variables": {"name": "李四"},
    },
]


def test_csv_has_a_bom_the_contact_columns_and_a_recording_column(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with ExportWriter(path, ["name", "city"]) as writer:
        writer.write(ROWS)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel on Chinese Windows needs it to read UTF-8
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert rows[0] == [*FIXED_COLUMNS, "name", "city"]
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["name"] == "张三" and first["grade"] == "A" and first["tags"] == "price hot"
    assert first["recording"].endswith("20261130-090000-abcdef.wav")
    assert first["talk_seconds"] == "42.3"
    second = dict(zip(rows[0], rows[2], strict=True))
    assert (second["outcome"], second["city"], second["recording"]) == ("busy", "", "")
    assert writer.rows == 2


def test_xlsx_holds_the_same_rows(tmp_path: Path) -> None:
    path = tmp_path / "results.xlsx"
    with ExportWriter(path, ["name"]) as writer:
        writer.write(ROWS)
    sheet = openpyxl.load_workbook(path, read_only=True).active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows[0] == [*FIXED_COLUMNS, "name"]
    assert rows[1][0] == "+8613800138000" and rows[1][-1] == "张三"
    assert rows[2][3] == "busy" and len(rows) == 3


def test_another_suffix_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"results\.txt"):
        ExportWriter(tmp_path / "results.txt", [])
