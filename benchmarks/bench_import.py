"""Contact import figures: rows per second for a large CSV and an Excel workbook.

Run: ``.venv/bin/python benchmarks/bench_import.py [--csv-rows 100000] [--xlsx-rows 20000]``.

Generates, in a temporary directory, a contact list the way operators send
them — Chinese names, numbers written in several spellings (mobiles and
landlines), a time-zone column, about 1% bad or duplicate rows — as a UTF-8
CSV, the same list as a GB18030 CSV (so encoding detection runs), and as an
.xlsx with numeric number cells. Prints, for each, the rows per second of
``read_contacts`` (best of ``--repeat`` runs) by wall clock and by process CPU
time (steadier on a busy machine), the share of the CPU time that number
parsing alone takes, and the accepted/rejected counts.

What it is not: a test; nothing here asserts.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import openpyxl

from waihu.campaign.importer import ImportOptions, ImportResult, read_contacts
from waihu.campaign.numbers import InvalidNumber, to_e164

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚"
MOBILE_PREFIXES = ("130", "135", "138", "139", "150", "158", "186", "188", "199")
AREA_CODES = ("010", "021", "0755", "0571")
TIMEZONES = ("", "", "", "Asia/Shanghai", "Asia/Urumqi")
BAD_SHARE = 0.01  # rows written with a bad number or as a duplicate


def spell(rng: random.Random, index: int) -> str:
    """A distinct number in one of the spellings people use."""
    if index % 10 == 9:  # one row in ten is a landline (8-digit local numbers)
        area = rng.choice(AREA_CODES)
        local = f"{20_000_000 + index}"
        return rng.choice((f"{area}-{local}", f"({area}){local}", f"{area} {local}"))
    digits = f"{MOBILE_PREFIXES[index % len(MOBILE_PREFIXES)]}{index:08d}"
    return rng.choice(
        (
            digits,
            digits,
            f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}",
            f"0086-{digits}",
            f"86{digits}",
        )
    )


def rows(count: int, seed: int = 1) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(("", *GIVEN))
        number = spell(rng, index)
        if rng.random() < BAD_SHARE:
            number = rng.choice(("12345", "", "1.38E+10")) if rng.random() < 0.5 else out[0][0]
        out.append((number, name, rng.choice(TIMEZONES)))
    return out


def write_csv(path: Path, data: list[tuple[str, str, str]], encoding: str) -> None:
    lines = ["手机号,姓名,时区"] + [",".join(row) for row in data]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))


def write_xlsx(path: Path, data: list[tuple[str, str, str]]) -> None:
    # Not write_only: that stores inline strings, which read slower than the shared
    # strings Excel writes.
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["手机号", "姓名", "时区"])
    for number, name, timezone in data:
        digits = number.replace(" ", "").replace("-", "").replace("+", "")
        # Numbers typed into Excel are numeric cells unless someone formatted them as text.
        cell: str | int = int(digits) if digits.isdigit() and number[0] != "0" else number
        sheet.append([cell, name, timezone])
    workbook.save(path)


def best_of(repeat: int, run: Callable[[], ImportResult]) -> tuple[float, float, ImportResult]:
    """The best wall-clock and process CPU seconds of ``repeat`` runs, and a result."""
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    assert result is not None
    return best_wall, best_cpu, result


def number_parsing_seconds(data: list[tuple[str, str, str]]) -> float:
    """CPU seconds of ``to_e164`` alone over the list's numbers."""
    start = time.process_time()
    for number, _, _ in data:
        try:
            to_e164(number, "CN")
        except InvalidNumber:
            pass
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv-rows", type=int, default=100_000)
    parser.add_argument("--xlsx-rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    options = ImportOptions(campaign_id="bench", required_variables={"姓名"})

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        csv_data = rows(args.csv_rows)
        xlsx_data = rows(args.xlsx_rows, seed=2)
        files = [
            ("csv utf-8", directory / "utf8.csv", csv_data),
            ("csv gb18030", directory / "gbk.csv", csv_data),
            ("xlsx", directory / "list.xlsx", xlsx_data),
        ]
        write_csv(files[0][1], csv_data, "utf-8")
        write_csv(files[1][1], csv_data, "gb18030")
        write_xlsx(files[2][1], xlsx_data)
        parsing = {id(csv_data): number_parsing_seconds(csv_data)}
        parsing[id(xlsx_data)] = number_parsing_seconds(xlsx_data)

        for label, path, data in files:
            size_mb = path.stat().st_size / 1e6
            wall, cpu, result = best_of(args.repeat, lambda path=path: read_contacts(path, options))
            print(
                f"{label:11} {result.rows:6d} rows ({size_mb:4.1f} MB, {result.encoding:8}) "
                f"{wall:6.2f} s {result.rows / wall:6.0f} rows/s; "
                f"CPU {cpu:6.2f} s {result.rows / cpu:6.0f} rows/s, "
                f"number parsing {parsing[id(data)] / cpu:.0%} of it; "
                f"accepted {len(result.contacts)}, rejected {len(result.rejects)}"
            )


if __name__ == "__main__":
    main()
