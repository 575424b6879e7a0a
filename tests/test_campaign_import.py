"""Contact list import: real CSV files in several encodings and real .xlsx workbooks;
every reject reason with its line; numbers to E.164 and back out for dialling."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from waihu.campaign.importer import (
    REPORT_COLUMNS,
    ContactFileError,
    ImportOptions,
    ImportResult,
    read_contacts,
    rejects_path,
    write_rejects,
)
from waihu.campaign.numbers import InvalidNumber, check_dial_style, format_for_dial, to_e164

CAMPAIGN = "spring"


def options(**kwargs: object) -> ImportOptions:
    return ImportOptions(campaign_id=CAMPAIGN, **kwargs)  # type: ignore[arg-type]


def write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def reasons(result: ImportResult) -> dict[int, str]:
    return {reject.line: reject.reason for reject in result.rejects}


def numbers_by_line(result: ImportResult) -> dict[int | None, str]:
    return {contact.source_line: contact.number for contact in result.contacts}


def assert_nothing_lost(result: ImportResult) -> None:
    assert len(result.contacts) + len(result.rejects) == result.rows


# ───────────────────────────── numbers ─────────────────────────────


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("13800138000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("0086-138-0013-8000", "+8613800138000"),
        ("8613800138000", "+8613800138000"),
        ("１３８００１３８０００", "+8613800138000"),
        ("010-12345678", "+861012345678"),
        ("(0755)12345678", "+8675512345678"),
        ("0755 1234 5678", "+8675512345678"),
        ("+1 650 253 0000", "+16502530000"),
    ],
)
def test_mobiles_and_landlines_become_e164(text: str, e164: str) -> None:
    assert to_e164(text, "CN") == e164


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty number"),
        ("12345", "'12345' is not a valid phone number (read as +8612345)"),
        ("138001380000", "'138001380000' is not a valid phone number"),
        ("abc", "'abc' is not a phone number"),
        ("1.38001E+10", "'1.38001E+10' is in scientific notation"),
        ("010-12345678 ext 12", "'010-12345678 ext 12' has an extension (12)"),
        ("+999 1234", "'+999 1234' has no valid country code"),
    ],
)
def test_bad_numbers_are_refused_with_their_text(text: str, reason: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        to_e164(text, "CN")
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    ("e164", "style", "region", "dialled"),
    [
        ("+8613800138000", "e164", "CN", "+8613800138000"),
        ("+8613800138000", "national", "CN", "13800138000"),
        ("+861012345678", "national", "CN", "01012345678"),
        ("+8675512345678", "national", "CN", "075512345678"),
        ("+8613800138000", "international", "CN", "008613800138000"),
        ("+861012345678", "international", "CN", "00861012345678"),
        ("+8613800138000", "international", "US", "0118613800138000"),
        # another country cannot be dialled nationally: it gets the international form
        ("+16502530000", "national", "CN", "0016502530000"),
        ("+16502530000", "national", "US", "16502530000"),
    ],
)
def test_format_for_dial_styles(e164: str, style: str, region: str, dialled: str) -> None:
    assert format_for_dial(e164, style, region) == dialled


def test_check_dial_style_tells_at_configuration_time() -> None:
    check_dial_style("international", "CN")
    check_dial_style("national", "KR")  # a Korean number dials nationally from KR
    assert format_for_dial("+82212345678", "national", "KR") == "0212345678"
    with pytest.raises(ValueError, match="'KR' has no single international prefix"):
        check_dial_style("international", "KR")
    with pytest.raises(ValueError, match="dial style must be one of e164, national"):
        check_dial_style("E164", "CN")


@pytest.mark.parametrize(
    ("e164", "style", "region", "message"),
    [
        ("+8613800138000", "sip", "CN", "dial style must be one of"),
        ("+8613800138000", "national", "XX", "unknown region 'XX'"),
        ("13800138000", "e164", "CN", "is not an E.164 number"),
        ("+8613800138000", "international", "KR", "'KR' has no single international prefix"),
        ("+8613800138000", "national", "KR", "'KR' has no single international prefix"),
    ],
)
def test_format_for_dial_refuses_bad_arguments(
    e164: str, style: str, region: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        format_for_dial(e164, style, region)


MOBILE_PREFIXES = ["130", "133", "135", "138", "139", "150", "158", "166", "177", "186", "199"]


@given(
    prefix=st.sampled_from(MOBILE_PREFIXES),
    rest=st.text(alphabet="0123456789", min_size=8, max_size=8),
    spelling=st.sampled_from(
        [
            "{d}",
            "+86{d}",
            "+86 {a} {b} {c}",
            "0086-{a}-{b}-{c}",
            "0086 {d}",
            "86{d}",
            "{a}-{b}-{c}",
            "({a}) {b} {c}",
            " {d} ",
            "+86-{d}",
        ]
    ),
)
def test_any_spelling_of_a_cn_mobile_gives_one_e164(prefix: str, rest: str, spelling: str) -> None:
    digits = prefix + rest
    text = spelling.format(d=digits, a=digits[:3], b=digits[3:7], c=digits[7:])
    assert to_e164(text, "CN") == "+86" + digits


# ───────────────────────────── encodings and formats ─────────────────────────────

CHINESE_LIST = "手机号,姓名\n13800138000,张三\n13900139000,欧阳娜娜\n"


@pytest.mark.parametrize(
    ("encoding", "reported"),
    [
        ("utf-8", "utf-8"),
        ("utf-8-sig", "utf-8-sig"),
        ("gbk", "gb18030"),  # what Excel on Chinese Windows writes
        ("gb18030", "gb18030"),
        ("utf-16", "utf-16"),  # Excel's "Unicode Text"
    ],
)
def test_encoding_is_detected_and_reported(tmp_path: Path, encoding: str, reported: str) -> None:
    path = write(tmp_path, CHINESE_LIST, encoding)
    result = read_contacts(path, options())
    assert result.encoding == reported
    assert result.columns == ("手机号", "姓名")  # no BOM stuck to the first header
    assert [c.variables for c in result.contacts] == [{"姓名": "张三"}, {"姓名": "欧阳娜娜"}]


def test_short_gbk_file_is_read_as_gb18030(tmp_path: Path) -> None:
    """Two rows are too few for charset-normalizer, which ranks Korean (cp949) first."""
    path = write(tmp_path, "电话,姓名\n13800138000,李四\n", "gbk")
    result = read_contacts(path, options())
    assert result.encoding == "gb18030"
    assert result.contacts[0].variables == {"姓名": "李四"}


@pytest.mark.parametrize(
    ("region", "encoding", "number", "name"),
    [
        ("KR", "cp949", "01012345678", "김민수"),
        ("TW", "cp950", "0912345678", "陳大文"),
        ("JP", "cp932", "09012345678", "山田太郎"),
    ],
)
def test_short_file_in_the_regions_windows_encoding(
    tmp_path: Path, region: str, encoding: str, number: str, name: str
) -> None:
    path = write(tmp_path, f"phone,name\n{number},{name}\n", encoding)
    result = read_contacts(path, options(region=region))
    assert result.encoding == encoding
    assert result.contacts[0].variables == {"name": name}


def test_latin_file_that_also_decodes_as_gb18030_is_not_read_as_it(tmp_path: Path) -> None:
    """Every accented letter here is followed by a byte GB18030 takes as a trail byte."""
    text = "phone,name\n+4930123456,Jürgen Müller\n+4930123457,Anna Schäfer\n"
    result = read_contacts(write(tmp_path, text, "cp1252"), options())
    assert result.encoding != "gb18030"
    assert [c.variables["name"] for c in result.contacts] == ["Jürgen Müller", "Anna Schäfer"]


def test_long_gbk_file_with_chinese_names(tmp_path: Path) -> None:
    names = ["王伟", "李娜", "张秀英", "刘洋", "陈静", "杨磊", "黄敏", "赵丽"]
    lines = ["电话,姓名,备注"]
    lines += [f"1380013{i:04d},{names[i % 8]},第{i}位客户" for i in range(200)]
    path = write(tmp_path, "\r\n".join(lines) + "\r\n", "gbk")
    result = read_contacts(path, options(required_variables={"姓名"}))
    assert result.encoding == "gb18030"
    assert result.rows == 200
    assert result.contacts[3].variables == {"姓名": "刘洋", "备注": "第3位客户"}
    assert result.contacts[3].source_line == 5


def test_a_damaged_line_is_refused_alone(tmp_path: Path) -> None:
    good = "".join(f"1380013{i:04d},张三{i}\n" for i in range(30))
    data = ("phone,姓名\n" + good).encode("gb18030") + b"13700137000,\x81 bad\n13600136000,ok\n"
    path = tmp_path / "list.csv"
    path.write_bytes(data)
    result = read_contacts(path, options())
    assert result.encoding == "gb18030"
    assert reasons(result) == {32: "not valid gb18030 text: undecodable bytes 0x81"}
    assert result.rejects[0].values == {"phone": "13700137000", "姓名": "\ufffd bad"}
    assert numbers_by_line(result)[33] == "+8613600136000"
    assert_nothing_lost(result)


def test_a_damaged_line_in_a_utf8_file_is_refused_alone(tmp_path: Path) -> None:
    good = "".join(f"1380013{i:04d},李{i}\n" for i in range(30))
    data = ("phone,姓名\n" + good).encode() + b"13700137000,\xe6\x9d\n"
    path = tmp_path / "list.csv"
    path.write_bytes(data)
    result = read_contacts(path, options())
    assert result.encoding == "utf-8"
    assert reasons(result) == {32: "not valid utf-8 text: undecodable bytes 0xE6 0x9D"}
    assert len(result.contacts) == 30


def test_a_damaged_header_imports_nothing(tmp_path: Path) -> None:
    good = "".join(f"1380013{i:04d},张三{i}\n" for i in range(30))
    data = b"phone,\x81 name\n" + good.encode("gb18030")
    path = tmp_path / "list.csv"
    path.write_bytes(data)
    with pytest.raises(ContactFileError, match="line 1: the header is not valid gb18030 text"):
        read_contacts(path, options())


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_comma_semicolon_and_tab_delimiters(tmp_path: Path, delimiter: str) -> None:
    rows = [["phone", "name", "city"], ["13800138000", "Li, Na", "北京"], ["010-12345678", "x", ""]]
    text = "\n".join(delimiter.join(f'"{c}"' if "," in c else c for c in r) for r in rows)
    result = read_contacts(write(tmp_path, text + "\n"), options())
    assert result.rejects == []
    assert result.contacts[0].variables == {"name": "Li, Na", "city": "北京"}
    assert result.contacts[1].number == "+861012345678"


def test_quoted_newlines_keep_line_numbers(tmp_path: Path) -> None:
    text = (
        "phone,name,address\n"  # 1
        '13800138000,张三,"北京市\n朝阳区\n某街1号"\n'  # 2–4
        "12345,李四,上海\n"  # 5
        '13900139000,"王\n五",广州\n'  # 6–7
        "bad,赵六,深圳\n"  # 8
    )
    result = read_contacts(write(tmp_path, text), options())
    assert numbers_by_line(result) == {2: "+8613800138000", 6: "+8613900139000"}
    assert result.contacts[0].variables["address"] == "北京市\n朝阳区\n某街1号"
    assert sorted(reasons(result)) == [5, 8]


def test_crlf_line_endings_count_one_line_each(tmp_path: Path) -> None:
    text = "phone\r\n13800138000\r\n\r\n12345\r\n"
    result = read_contacts(write(tmp_path, text), options())
    assert numbers_by_line(result) == {2: "+8613800138000"}
    assert list(reasons(result)) == [4]
    assert result.blank == 1


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def test_xlsx_numeric_cells_come_out_as_digits(tmp_path: Path) -> None:
    path = tmp_path / "list.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["手机号码", "姓名", "时区"])
    sheet.append([13800138000, "张三", "Asia/Shanghai"])  # 2: an integer cell
    sheet.append([13900139000.0, "李四", None])  # 3: a float cell
    sheet.append([8613700137000, "王五"])  # 4
    sheet.append(["010-12345678", "赵六"])  # 5: text cell
    sheet["A7"] = 13600136000.0  # 6 left empty
    sheet["A7"].number_format = "0.00E+00"  # shown as 1.36E+10 in Excel
    sheet["B7"] = "钱七"
    sheet["A8"] = 12345
    sheet["B8"] = "孙八"
    workbook.create_sheet("second").append(["phone", "13500135000"])  # not read
    workbook.save(path)

    result = read_contacts(path, options())
    assert result.encoding == "xlsx"
    assert result.columns == ("手机号码", "姓名", "时区")
    assert result.timezone_column == "时区"
    assert numbers_by_line(result) == {
        2: "+8613800138000",
        3: "+8613900139000",
        4: "+8613700137000",
        5: "+861012345678",
        7: "+8613600136000",
    }
    assert result.contacts[0].timezone == "Asia/Shanghai"
    assert result.contacts[1].timezone is None
    assert reasons(result) == {8: "'12345' is not a valid phone number (read as +8612345)"}
    assert result.blank == 1
    assert_nothing_lost(result)


def patch_sheet(path: Path, *replacements: tuple[bytes, bytes]) -> None:
    """Rewrite the first sheet's XML the way another spreadsheet writer would have."""
    with zipfile.ZipFile(path) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    for old, new in replacements:
        assert old in parts["xl/worksheets/sheet1.xml"]
        parts["xl/worksheets/sheet1.xml"] = parts["xl/worksheets/sheet1.xml"].replace(old, new)
    with zipfile.ZipFile(path, "w") as book:
        for name, data in parts.items():
            book.writestr(name, data)


def test_xlsx_float_cells_from_other_writers_come_out_as_digits(tmp_path: Path) -> None:
    """Some writers store a number cell as "1.3900139E10" or "13700137000.0", which
    openpyxl reads as a float."""
    path = write_xlsx(tmp_path / "list.xlsx", [["phone"], [1], [2]])
    patch_sheet(path, (b"<v>1</v>", b"<v>1.3900139E10</v>"), (b"<v>2</v>", b"<v>13700137000.0</v>"))
    result = read_contacts(path, options())
    assert [c.number for c in result.contacts] == ["+8613900139000", "+8613700137000"]


def test_xlsx_with_a_wrong_stored_dimension_is_read_whole(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "list.xlsx", [["phone", "name"], [13800138000, "张三"]])
    patch_sheet(path, (b'<dimension ref="A1:B2" />', b'<dimension ref="A1:A1" />'))
    result = read_contacts(path, options(required_variables={"name"}))
    assert result.contacts[0].variables == {"name": "张三"}


def test_xlsx_extra_cell_beyond_header_is_refused(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "list.xlsx",
        [["phone", "name"], [13800138000, "a", None, None], [13900139000, "b", None, "x"]],
    )
    result = read_contacts(path, options())
    assert numbers_by_line(result) == {2: "+8613800138000"}
    assert reasons(result) == {3: "more cells than the header names (2 columns): cell 4 'x'"}


def test_xlsx_dates_and_booleans_become_text(tmp_path: Path) -> None:
    import datetime as dt

    path = write_xlsx(
        tmp_path / "list.xlsx",
        [["phone", "due", "vip"], [13800138000, dt.datetime(2024, 5, 1), True]],
    )
    result = read_contacts(path, options())
    assert result.contacts[0].variables == {"due": "2024-05-01", "vip": "True"}


# ───────────────────────────── rows refused ─────────────────────────────

EVERY_REASON = (
    "phone,name,tz,note\n"  # 1
    "13800138000,张三,Asia/Shanghai,\n"  # 2 accepted
    "+86 138 0013 8000,李四,,\n"  # 3 duplicate of line 2
    "13900139000,王五,,\n"  # 4 do-not-call
    "13700137000,赵六,,\n"  # 5 already in the campaign
    "12345,钱七,,\n"  # 6 bad number
    ",孙八,,\n"  # 7 empty number
    "13600136000,周九,Asia/Shangai,\n"  # 8 bad time zone
    "13500135000,,,\n"  # 9 empty {name}
    "\n"  # 10 blank
    ",,,\n"  # 11 blank
    "13400134000,吴十,,ok,extra\n"  # 12 more cells than headers
    "1.38E+10,郑,,\n"  # 13 scientific notation
    "13300133000,冯,UTC+8,\n"  # 14 bad zone and ...
    "010-12345678, 陈 ,Europe/Berlin,  note \n"  # 15 accepted, landline
    "13300133001,,Mars/Base,\n"  # 16 two problems
)


def test_every_reject_reason_names_its_line(tmp_path: Path) -> None:
    result = read_contacts(
        write(tmp_path, EVERY_REASON),
        options(
            required_variables={"name"},
            existing={"+8613700137000"},
            dnc={"+8613900139000"},
        ),
    )
    assert reasons(result) == {
        3: "duplicate: +8613800138000 is already on line 2",
        4: "+8613900139000 is on the do-not-call list",
        5: "+8613700137000 is already in campaign spring",
        6: "'12345' is not a valid phone number (read as +8612345)",
        7: "empty number",
        8: "time zone 'Asia/Shangai' is not an IANA time zone name (such as Asia/Shanghai)",
        9: "empty name (needed by the script)",
        12: "more cells than the header names (4 columns): cell 5 'extra'",
        13: "'1.38E+10' is in scientific notation: the spreadsheet has rounded away digits"
        " (format the column as text and export again)",
        14: "time zone 'UTC+8' is not an IANA time zone name (such as Asia/Shanghai)",
        16: "time zone 'Mars/Base' is not an IANA time zone name (such as Asia/Shanghai);"
        " empty name (needed by the script)",
    }
    assert numbers_by_line(result) == {2: "+8613800138000", 15: "+861012345678"}
    assert result.rows == 13
    assert result.blank == 2
    assert_nothing_lost(result)


def test_reject_keeps_the_number_as_written_and_the_row(tmp_path: Path) -> None:
    result = read_contacts(write(tmp_path, EVERY_REASON), options())
    duplicate = result.rejects[0]
    assert duplicate.line == 3
    assert duplicate.number == "+86 138 0013 8000"
    assert duplicate.values == {"phone": "+86 138 0013 8000", "name": "李四", "tz": "", "note": ""}


def test_accepted_contacts_carry_variables_timezone_and_line(tmp_path: Path) -> None:
    result = read_contacts(write(tmp_path, EVERY_REASON), options())
    landline = next(c for c in result.contacts if c.source_line == 15)
    assert landline.campaign_id == CAMPAIGN
    assert landline.variables == {"name": "陈", "note": "note"}
    assert landline.timezone == "Europe/Berlin"


def test_a_duplicate_of_a_refused_row_is_accepted(tmp_path: Path) -> None:
    """Only accepted numbers count as taken: the corrected later row gets through."""
    text = "phone,name\n13800138000,\n13800138000,张三\n13800138000,李四\n"
    result = read_contacts(write(tmp_path, text), options(required_variables={"name"}))
    assert numbers_by_line(result) == {3: "+8613800138000"}
    assert reasons(result) == {
        2: "empty name (needed by the script)",
        4: "duplicate: +8613800138000 is already on line 3",
    }


def test_value_under_an_unnamed_column_is_refused(tmp_path: Path) -> None:
    text = "phone,,name\n13800138000,,张三\n13900139000,oops,李四\n"
    result = read_contacts(write(tmp_path, text), options())
    assert result.columns == ("phone", "name")
    assert numbers_by_line(result) == {2: "+8613800138000"}
    assert reasons(result) == {3: "more cells than the header names (2 columns): cell 2 'oops'"}


def test_short_rows_read_missing_cells_as_empty(tmp_path: Path) -> None:
    text = "phone,name,tz\n13800138000\n"
    result = read_contacts(write(tmp_path, text), options())
    assert result.contacts[0].variables == {"name": ""}
    assert result.contacts[0].timezone is None


def test_malformed_csv_row_is_refused_and_reading_goes_on(tmp_path: Path) -> None:
    text = 'phone,name\n13800138000,"张"三\n13900139000,李四\n'
    result = read_contacts(write(tmp_path, text), options())
    assert numbers_by_line(result) == {3: "+8613900139000"}
    assert list(reasons(result)) == [2]
    assert reasons(result)[2].startswith("malformed CSV row:")


def test_unclosed_quote_is_refused_naming_the_lines_it_swallowed(tmp_path: Path) -> None:
    text = 'phone,name\n13800138000,张三\n13900139000,"李四\n13700137000,王五\n'
    result = read_contacts(write(tmp_path, text), options())
    assert numbers_by_line(result) == {2: "+8613800138000"}
    assert reasons(result)[3].endswith("(lines 3–4)")


# ───────────────────────────── header and file errors ─────────────────────────────


@pytest.mark.parametrize(
    "header",
    ["Phone", "MOBILE", "tel", "Telephone", "电话", "手机", "号码", "联系电话", " number "],
)
def test_number_column_is_found_by_alias(tmp_path: Path, header: str) -> None:
    result = read_contacts(write(tmp_path, f"{header},name\n13800138000,x\n"), options())
    assert result.number_column == header.strip()
    assert result.contacts[0].variables == {"name": "x"}


def test_number_column_given_by_the_caller(tmp_path: Path) -> None:
    text = "客户,主叫号码,phone_backup\n张三,13800138000,13900139000\n"
    result = read_contacts(write(tmp_path, text), options(number_column="主叫号码"))
    assert result.number_column == "主叫号码"
    assert result.contacts[0].number == "+8613800138000"
    assert result.contacts[0].variables == {"客户": "张三", "phone_backup": "13900139000"}


@pytest.mark.parametrize(
    ("text", "opts", "message"),
    [
        ("phone,name,phone\n1,2,3\n", {}, "duplicate column names in the header: phone"),
        (
            "客户,地址\n张三,北京\n",
            {},
            "no number column; the first line must be a header naming it one of .*"
            "手机号码.*; columns found: 客户, 地址",
        ),
        ("13800138000,张三\n", {}, "columns found: 13800138000, 张三"),
        ("phone,name\n", {"number_column": "cell"}, "no column 'cell' for the number"),
        ("电话,手机\n1,2\n", {}, "several columns could hold the number: 电话, 手机"),
        ("phone,tz,时区\n1,2,3\n", {}, "several time-zone columns: tz, 时区"),
        (
            "phone,姓名\n13800138000,张三\n",
            {"required_variables": {"name", "company"}},
            r"the script uses \{company\}, \{name\} but the file has no such column",
        ),
        ("\n\n", {}, "no header row: the file is empty"),
    ],
)
def test_file_level_errors_import_nothing(
    tmp_path: Path, text: str, opts: dict[str, object], message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ContactFileError, match=message) as caught:
        read_contacts(path, options(**opts))
    assert str(caught.value).startswith(f"{path}: ")


def test_unknown_extension_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, CHINESE_LIST, name="list.xls")
    with pytest.raises(ContactFileError, match=r"list.xls: unknown file type '.xls'"):
        read_contacts(path, options())


def test_missing_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ContactFileError, match=r"nothere.csv: cannot read"):
        read_contacts(tmp_path / "nothere.csv", options())
    bad = write(tmp_path, "not a zip", name="list.xlsx")
    with pytest.raises(ContactFileError, match=r"list.xlsx: not a readable .xlsx workbook"):
        read_contacts(bad, options())


def test_bad_region_is_refused_when_options_are_built() -> None:
    with pytest.raises(ValueError, match="region: must be a region code"):
        options(region="ZZ")
    assert options(region="us").region == "US"


def test_region_applies_to_numbers_without_country_code(tmp_path: Path) -> None:
    path = write(tmp_path, "phone\n(650) 253-0000\n+8613800138000\n")
    result = read_contacts(path, options(region="US"))
    assert [c.number for c in result.contacts] == ["+16502530000", "+8613800138000"]


# ───────────────────────────── reports and progress ─────────────────────────────


def test_rejects_file_is_excel_friendly_and_imports_again(tmp_path: Path) -> None:
    source = write(tmp_path, EVERY_REASON, name="contacts.csv")
    first = read_contacts(source, options(required_variables={"name"}))
    report = rejects_path(source)
    assert report == tmp_path / "contacts.rejects.csv"
    write_rejects(report, first.rejects, first.columns)

    assert report.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: Excel reads it as UTF-8
    with report.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [*REPORT_COLUMNS, "phone", "name", "tz", "note"]
    assert rows[1] == [
        "3",
        "duplicate: +8613800138000 is already on line 2",
        "+86 138 0013 8000",
        "李四",
        "",
        "",
    ]
    assert len(rows) == 1 + len(first.rejects)

    # Imported again as it is, the same rows are refused for the same reasons, except
    # the duplicate whose first row is no longer in the file.
    again = read_contacts(report, options(required_variables={"name"}))
    assert again.encoding == "utf-8-sig"
    assert again.columns == ("phone", "name", "tz", "note")  # report columns skipped
    assert [c.variables["name"] for c in again.contacts] == ["李四"]
    assert [r.reason.split(":")[0] for r in again.rejects] == [
        r.reason.split(":")[0] for r in first.rejects[1:]
    ]
    assert again.rejects[4].reason.endswith("cell 7 'extra'")  # cells of the rejects file


def test_rejects_path_for_a_workbook() -> None:
    assert rejects_path(Path("/srv/lists/may.xlsx")) == Path("/srv/lists/may.rejects.csv")


def test_progress_is_reported_every_thousand_rows_and_at_the_end(tmp_path: Path) -> None:
    lines = ["phone"] + [f"1380013{i:04d}" for i in range(2500)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    seen: list[tuple[int, int | None]] = []
    result = read_contacts(path, options(), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1000, 2500), (2000, 2500), (2500, 2500)]
    assert result.rows == 2500


def test_xlsx_progress_total_comes_from_the_sheet(tmp_path: Path) -> None:
    rows: list[list[object]] = [["phone"]] + [[13800130000 + i] for i in range(1200)]
    path = write_xlsx(tmp_path / "list.xlsx", rows)
    seen: list[tuple[int, int | None]] = []
    read_contacts(path, options(), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1000, 1200), (1200, 1200)]
