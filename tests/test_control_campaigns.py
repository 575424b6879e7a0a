"""The operator's campaign commands, end to end: handlers, the control socket, waihuctl.

Everything is the daemon's own — a real SQLite file, the campaign service,
scheduler and dispatcher of ``test_campaign_scheduler``'s rig (its trunk
needs no network), the control handlers behind a real ``ControlServer`` on a
unix socket in tmp_path — and ``waihuctl`` is ``main([...])`` run in a worker
thread, as blocking as on a terminal. The tests that run a campaign do it on
trio's mock clock (days pass in milliseconds); the clock stands still while
waihuctl's thread works.
"""

from __future__ import annotations

import csv
import json
import os
import pwd
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import openpyxl
import pytest
import trio
import trio.testing
from test_campaign_scheduler import SIMULATED_LIMIT, T0, rig, threads_hold_the_clock
from test_control_access import NOBODY_UID, NOGROUP_GID, ask_as, needs_root

from waihu.api import CallRecord
from waihu.control import campaign_cli
from waihu.control.client import main
from waihu.control.handlers import ControlHandlers
from waihu.control.protocol import MAX_LINE_BYTES, ControlError, parse_request
from waihu.control.server import ControlServer, Peer, current_peer
from waihu.media.media_clock import MediaClock
from waihu.plugins import make_plugin_manager

__all__ = ["threads_hold_the_clock"]  # a fixture, used by name below

TIMEOUT = 30  # seconds; generous, the machine is shared
ALICE = Peer(pid=4242, uid=1000, gid=1000, user="alice")
SETTINGS = {
    "name": "spring",
    "script": "hello",
    "trunk": "office",
    "caller_id": "02000000000",
    "windows": ["daily 00:00-24:00"],
    "dial_format": "e164",
}

# SETTINGS as waihuctl flags (dial_format has none: a campaign file sets it)
FLAGS = ["--name", "spring", "--script", "hello", "--trunk", "office"]
FLAGS += ["--caller-id", "02000000000", "--window", "daily 00:00-24:00"]


@attrs.define
class Stand:
    """The daemon's control side over the rig: handlers, and the socket once served."""

    rig: Any
    handlers: ControlHandlers
    recordings: Path
    sock: Path | None = None

    def ctl(self, *argv: str) -> int:
        """waihuctl against this daemon (blocking: run it in a worker thread)."""
        assert self.sock is not None
        return main(["--socket", str(self.sock), *argv])

    async def waihuctl(self, *argv: str) -> int:
        return await trio.to_thread.run_sync(self.ctl, *argv)


@asynccontextmanager
async def stand(tmp_path: Path, *, serve: bool = False, **server: Any) -> AsyncIterator[Stand]:
    """The rig, its control handlers, and with ``serve`` a ControlServer on a socket."""
    async with rig(tmp_path) as r:
        recordings = tmp_path / "recordings"
        handlers = ControlHandlers(
            dispatcher=r.dispatcher,
            storage=r.store,
            events=r.bus,
            pm=make_plugin_manager(entry_points=False),
            clock=MediaClock(),
            stop=lambda: None,
            started_at=T0,
            campaigns=r.service,
            recordings_dir=recordings,
        )
        made = Stand(r, handlers, recordings)
        if not serve:
            yield made
            return
        made.sock = tmp_path / "control.sock"
        async with trio.open_nursery() as nursery:
            await nursery.start(ControlServer(made.sock, handlers, **server).run)
            yield made
            nursery.cancel_scope.cancel()


async def refusal(call: Any) -> ControlError:
    with pytest.raises(ControlError) as info:
        await call
    return info.value


# ───────────────────────── handlers ─────────────────────────


async def test_create_from_a_table_with_a_bad_window_names_campaign_windows(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path) as s:
            bad = {**SETTINGS, "windows": ["mon-fri 25:00-20:00"]}
            error = await refusal(s.handlers.campaign_create(bad))
            assert await s.handlers.campaign_list() == []
    assert error.code == "bad_request"
    assert "campaign.windows" in error.message and "25" in error.message


async def test_an_unknown_campaign_is_not_found_and_the_campaigns_are_listed(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path) as s:
            await s.handlers.campaign_create(SETTINGS)
            await s.handlers.campaign_create({**SETTINGS, "name": "autumn"})
            errors = [
                await refusal(s.handlers.campaign_show("winter")),
                await refusal(s.handlers.campaign_start("winter")),
                await refusal(s.handlers.calls(campaign="winter")),
                await refusal(s.handlers.watch(campaign="winter")),
            ]
    for error in errors:
        assert (error.code, error.message) == (
            "not_found", "no campaign 'winter' (campaigns: autumn, spring)"
        )  # fmt: skip


async def test_start_without_contacts_is_refused_and_the_campaign_stays_a_draft(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path) as s:
            made = await s.handlers.campaign_create(SETTINGS)
            error = await refusal(s.handlers.campaign_start("spring"))
            pause = await refusal(s.handlers.campaign_pause(made["id"]))
            (listed,) = await s.handlers.campaign_list()
    assert (error.code, error.message) == (
        "bad_request", "campaign spring has no contacts; import some first"
    )  # fmt: skip
    assert pause.code == "bad_request" and "pause applies to running" in pause.message
    assert (listed["state"], listed["contacts"]) == ("draft", {})


async def test_the_audit_log_names_the_unix_user_who_asked(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path) as s:
            token = current_peer.set(ALICE)
            try:
                made = await s.handlers.campaign_create(SETTINGS)
                await s.handlers.dnc_add(["+8613900139000"], "complained")
            finally:
                current_peer.reset(token)
            await s.handlers.campaign_clone("spring", "spring-2")  # no peer: nobody to name
            entries = await s.handlers.audit(limit=10)
            newest = await s.handlers.audit(limit=1)
    assert [(e["user"], e["action"]) for e in entries] == [
        ("unknown", "campaign.clone"),
        ("alice", "dnc.add"),
        ("alice", "campaign.create"),
    ]
    assert entries[2]["params"] == {"id": made["id"], "name": "spring"}
    assert newest == entries[:1]


async def test_without_a_campaign_store_campaign_commands_are_unavailable(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path) as s:
            s.handlers.campaigns = None
            errors = [
                await refusal(s.handlers.campaign_list()),
                await refusal(s.handlers.dnc_list()),
                await refusal(s.handlers.calls(campaign="spring")),
            ]
            assert await s.handlers.calls() == []  # the rest works
    assert {(e.code, e.message) for e in errors} == {
        ("unavailable", "this storage keeps no campaigns")
    }


def filed(call_id: str, created_at: float, **fields: Any) -> CallRecord:
    return CallRecord(
        id=call_id, number="+8613800138000", script="hello", trunk="office",
        status="ended", created_at=created_at, **fields,
    )  # fmt: skip


@pytest.fixture
def in_shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time is Asia/Shanghai (UTC+8, no DST) for the test."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_calls_filter_by_campaign_grade_outcome_and_dates(
    tmp_path: Path, in_shanghai: None
) -> None:
    day = 86400.0
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path) as s:
            made = await s.handlers.campaign_create(SETTINGS)
            cid = made["id"]
            storage = s.rig.store
            await storage.save_call(filed("a", T0, campaign_id=cid, grade="A", outcome="answered"))
            await storage.save_call(filed("b", T0 + 60, campaign_id=cid, grade="B"))
            await storage.save_call(filed("c", T0 + day, campaign_id=cid, grade="A"))
            await storage.save_call(filed("d", T0 + 120, grade="A", outcome="answered"))
            await storage.save_call(filed("e", T0 + 180, campaign_id=cid, outcome="busy"))
            h = s.handlers
            by_name = await h.calls(campaign="spring", grade="A")
            by_outcome = await h.calls(outcome="answered")
            # T0 is 2026-03-05 08:00 in Shanghai; a date is the daemon's local day, whole
            first_day = await h.calls(since="2026-03-05", until="2026-03-05")
            next_day = await h.calls(since="2026-03-06")
            before = await h.calls(until="2026-03-05T00:01:00+00:00")
            local = await h.calls(since="2026-03-05T08:01:30", until="2026-03-05T08:03")
            bad_outcome = await refusal(h.calls(outcome="happy"))
            bad_date = await refusal(h.calls(since="last tuesday"))
    assert [c["id"] for c in by_name] == ["c", "a"]
    assert by_name[1]["campaign_id"] == cid and by_name[1]["outcome"] == "answered"
    assert [c["id"] for c in by_outcome] == ["d", "a"]
    assert [c["id"] for c in first_day] == ["e", "d", "b", "a"]
    assert [c["id"] for c in next_day] == ["c"]
    assert [c["id"] for c in before] == ["a"]  # until is exclusive: not b, at 00:01:00
    assert [c["id"] for c in local] == ["d"]  # a date-time without offset is local
    assert bad_outcome.code == "bad_request" and "busy" in bad_outcome.message
    assert bad_date.message.startswith("param 'since' must be a date YYYY-MM-DD")


async def test_watch_campaign_pushes_only_that_campaigns_events(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path) as s:
            spring = (await s.handlers.campaign_create(SETTINGS))["id"]
            autumn = (await s.handlers.campaign_create({**SETTINGS, "name": "autumn"}))["id"]
            watched = await s.handlers.watch(campaign="spring")
            bus = s.rig.bus
            bus.publish("c-1", "ringing", campaign=autumn, status=180, reason="Ringing")
            bus.publish("c-2", "ringing", campaign=spring, status=180, reason="Ringing")
            bus.publish("c-3", "ringing", status=183, reason="Session Progress")  # no campaign
            bus.publish(None, "campaign", campaign=autumn, state="paused", reason=None)
            bus.publish(None, "campaign", campaign=spring, state="paused", reason="by you")
            seen = [await watched.events.__anext__() for _ in range(2)]
            watched.events.close()
    assert watched.result == {"call_id": None, "campaign": spring, "live_calls": []}
    assert [(m["event"], m["call_id"], m["campaign"]) for m in seen] == [
        ("ringing", "c-2", spring),
        ("campaign", None, spring),
    ]


# ───────────────────────── waihuctl through the socket ─────────────────────────

GBK_CONTACTS = (
    "姓名,手机号,时区,备注\n"
    "张三,13800138000,,老客户\n"
    "李四,12345,,坏号码\n"
    "王五,138 0013 8000,,重复\n"
    "赵六,13900139000,Asia/Urumqi,在黑名单\n"
    "钱七,+86 137 0013 7000,,新客户\n"
)


async def test_import_a_gbk_file_reports_each_reject_with_its_line_and_writes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contacts = tmp_path / "客户.csv"
    contacts.write_bytes(GBK_CONTACTS.encode("gbk"))
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path, serve=True) as s:
            assert await s.waihuctl("campaign", "create", "--json", *FLAGS) == 0
            cid = json.loads(capsys.readouterr().out)["id"]
            assert await s.waihuctl("dnc", "add", "+8613900139000", "--reason", "投诉") == 0
            capsys.readouterr()
            assert await s.waihuctl("campaign", "import", "spring", str(contacts)) == 0
            first = capsys.readouterr()
            rejects = contacts.with_name("客户.rejects.csv").read_text(encoding="utf-8-sig")
            numbers = await s.rig.store.campaign_numbers(cid)
            # the same file again: the two accepted are in the campaign now
            assert await s.waihuctl("--json", "campaign", "import", cid, str(contacts)) == 0
            again = json.loads(capsys.readouterr().out)
            audit = await s.handlers.audit()
    # no terminal: progress as plain lines
    assert first.err == "waihuctl: reading 客户.csv: 100%\nwaihuctl: sending contacts: 100%\n"
    assert first.out.splitlines() == [
        f"{contacts} → campaign {cid} spring",
        "  encoding   gb18030",
        "  rows       5",
        "  added      2",
        "  rejected   3 (not a valid number 1, duplicate in the file 1, on the do-not-call list 1)",
        f"  rejects    {contacts.with_name('客户.rejects.csv')}",
        "  line 3: 12345: '12345' is not a valid phone number (read as +8612345)",
        "  line 4: 138 0013 8000: duplicate: +8613800138000 is already on line 2",
        "  line 5: +8613900139000: on the do-not-call list",
    ]
    assert numbers == {"+8613800138000", "+8613700137000"}
    assert list(csv.reader(rejects.splitlines())) == [
        ["rejected_line", "reject_reason", "姓名", "手机号", "时区", "备注"],
        [
            "3",
            "'12345' is not a valid phone number (read as +8612345)",
            "李四",
            "12345",
            "",
            "坏号码",
        ],
        [
            "4",
            "duplicate: +8613800138000 is already on line 2",
            "王五",
            "138 0013 8000",
            "",
            "重复",
        ],
        ["5", "on the do-not-call list", "赵六", "+8613900139000", "Asia/Urumqi", "在黑名单"],
    ]
    assert (again["added"], again["rejected"]) == (0, 5)
    assert again["rejected_by_reason"]["already in the campaign"] == 2
    assert [r["line"] for r in again["rejects"]] == [2, 3, 4, 5, 6]
    assert [e["action"] for e in audit[:2]] == ["campaign.import", "campaign.import"]
    assert audit[1]["user"] == pwd.getpwuid(os.getuid()).pw_name  # the kernel's word for it


async def test_create_from_a_campaign_file_with_flags_over_it_and_file_errors_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "spring.toml"
    good.write_text(
        'name = "draft name"\nscript = "hello"\ntrunk = "office"\ncaller_id = "02000000000"\n'
        'windows = ["mon-fri 09:00-12:00"]\nstart_date = 2026-03-09\n'
        "[retry.busy]\ndelay_minutes = 30\nmax_attempts = 2\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(
        good.read_text(encoding="utf-8").replace("[retry.busy]", "[retry.bsy]"), encoding="utf-8"
    )
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path, serve=True) as s:
            made = await s.waihuctl("campaign", "create", "--file", str(good), "--name", "春季")
            created = capsys.readouterr().out
            refused = await s.waihuctl("campaign", "create", "--file", str(bad))
            refusal_text = capsys.readouterr()
            as_json = await s.waihuctl("--json", "campaign", "create", "--name", "x")
            json_error = json.loads(capsys.readouterr().out)
            (row,) = await s.rig.store.list_campaigns()
    assert made == 0 and refused == 1 and as_json == 1
    assert created.splitlines() == [
        f"campaign {row.id} 春季: draft",
        f"next: waihuctl campaign import {row.id} CONTACTS.csv, then waihuctl campaign start "
        f"{row.id}",
    ]
    settings = row.settings
    assert (settings["start_date"], settings["retry"]["busy"]["max_attempts"]) == ("2026-03-09", 2)
    assert settings["region"] == "CN"  # the daemon's default, as the file gave none
    assert refusal_text.err == f"waihuctl: {bad}: campaign.retry: unknown key bsy\n"
    assert json_error["ok"] is False and json_error["error"]["code"] == "bad_request"
    assert "waihuctl campaign create: campaign.script" in json_error["error"]["message"]


CONTACTS_CSV = "number,name,city\n13800138000,张三,上海\n13800138003,李四,北京\n13800138004,王五,\n"


async def test_a_campaign_run_shown_listed_and_exported_to_csv_and_xlsx(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    threads_hold_the_clock: trio.testing.MockClock,
) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(CONTACTS_CSV, encoding="utf-8")
    with trio.fail_after(SIMULATED_LIMIT):
        async with stand(tmp_path, serve=True) as s:
            cid = (await s.handlers.campaign_create(SETTINGS))["id"]
            assert await s.waihuctl("campaign", "import", "spring", str(contacts)) == 0
            assert await s.waihuctl("campaign", "start", "spring") == 0
            await s.rig.until_state(cid, "completed")
            capsys.readouterr()
            assert await s.waihuctl("campaign", "show", "spring") == 0
            shown = capsys.readouterr().out.splitlines()
            assert await s.waihuctl("campaign", "list") == 0
            listed = capsys.readouterr().out.splitlines()
            for name in ("results.csv", "results.xlsx"):
                assert await s.waihuctl("campaign", "export", "spring", str(tmp_path / name)) == 0
            exported = capsys.readouterr().out.splitlines()
            assert await s.waihuctl("campaign", "export", "spring", str(tmp_path / "r.ods")) == 1
            wrong_suffix = capsys.readouterr().err
    assert shown[0] == f"campaign {cid} spring  completed"
    fields = {line.split("  ")[1]: line for line in shown if line.startswith("  ")}
    assert fields["progress"].endswith("[####################] 100%  3/3")
    assert fields["outcomes"].endswith("answered 1, invalid_number 1, rejected 1")
    assert fields["grades"].endswith("B 1")
    funnel = shown[shown.index("funnel: answered calls at each node of the script") + 1 :]
    assert [line.split() for line in funnel] == [
        ["NODE", "REACHED", "ENDED", "THERE", "HUNG", "UP", "THERE", "HUNG", "UP", "%"],
        ["hello", "1", "1", "0", "0%"],
    ]
    assert listed[0].split() == ["ID", "NAME", "STATE", "PROGRESS", "REASON"]
    assert listed[1].startswith(f"{cid}  spring  completed  [####################] 100%  3/3")
    assert exported == [
        f"wrote 3 attempt(s) of campaign spring to {tmp_path / 'results.csv'}",
        f"wrote 3 attempt(s) of campaign spring to {tmp_path / 'results.xlsx'}",
    ]
    with (tmp_path / "results.csv").open(encoding="utf-8-sig", newline="") as f:
        from_csv = list(csv.DictReader(f))
    book = openpyxl.load_workbook(tmp_path / "results.xlsx", read_only=True)
    header, *rows = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    from_xlsx = [dict(zip(header, row, strict=True)) for row in rows]
    book.close()
    for read in (from_csv, from_xlsx):
        by_number = {r["number"]: r for r in read}
        assert set(by_number) == {"+8613800138000", "+8613800138003", "+8613800138004"}
        assert (by_number["+8613800138000"]["outcome"], by_number["+8613800138000"]["grade"]) == (
            "answered", "B"
        )  # fmt: skip
        assert by_number["+8613800138003"]["outcome"] == "rejected"
        assert (by_number["+8613800138000"]["name"], by_number["+8613800138000"]["city"]) == (
            "张三", "上海"
        )  # fmt: skip
        assert list(read[0])[-2:] == ["name", "city"]  # the contact's columns, first seen order
    assert "export as .csv or .xlsx" in wrong_suffix


async def test_recordings_prune_reports_first_then_deletes_with_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path, serve=True) as s:
            old = s.recordings / "20200101"
            old.mkdir(parents=True)
            (old / "a.wav").write_bytes(b"x" * 1500)
            (old / "b.wav").write_bytes(b"x" * 500)
            today = s.recordings / time.strftime("%Y%m%d")
            today.mkdir()
            (today / "c.wav").write_bytes(b"x")
            assert await s.waihuctl("recordings", "prune", "30") == 0
            dry = capsys.readouterr().out
            still_there = old.exists()
            assert await s.waihuctl("--json", "recordings", "prune", "30", "--apply") == 0
            applied = json.loads(capsys.readouterr().out)
            assert await s.waihuctl("recordings", "prune", "30", "--apply") == 0
            nothing = capsys.readouterr().out
            entries = await s.handlers.audit()
    assert dry.splitlines() == [
        "would delete 1 day folder(s) (20200101): 2 file(s), 2.0 kB",
        "a dry run: nothing was deleted; --apply deletes them",
    ]
    assert still_there and not old.exists() and today.exists()
    assert applied == {
        "directory": str(s.recordings), "days": ["20200101"], "files": 2, "bytes": 2000,
        "dry_run": False, "errors": [],
    }  # fmt: skip
    assert nothing == "no recordings older than that\n"
    assert [e["action"] for e in entries] == ["recordings.prune", "recordings.prune"]
    assert entries[1]["params"] == {"files": 2, "bytes": 2000, "days": 30}


@needs_root
async def test_a_user_outside_the_admin_group_reads_but_is_forbidden_to_change(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o711)  # as test_control_access: only the socket's own rights decide
    with trio.fail_after(TIMEOUT):
        # the socket in nobody's group; only root's group may change state
        async with stand(tmp_path, serve=True, group="nogroup", admin_group="root") as s:
            await s.handlers.campaign_create(SETTINGS)
            assert s.sock is not None
            _, replies = await ask_as(
                s.sock,
                NOBODY_UID,
                NOGROUP_GID,
                "campaign.list",
                ("campaign.start", {"campaign": "spring"}),
                ("dnc.add", {"numbers": ["+8613900139000"]}),
            )
            (row,) = await s.rig.store.list_campaigns()
            dnc = await s.handlers.dnc_list()
    assert replies[0]["ok"] is True and replies[0]["result"][0]["name"] == "spring"
    for refused in replies[1:]:
        assert refused["error"]["code"] == "forbidden"
        assert "only members of group 'root'" in refused["error"]["message"]
    assert row.state == "draft" and dnc == []


async def test_a_large_import_goes_in_batches_that_each_fit_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    count = 2 * campaign_cli.BATCH_CONTACTS + 500
    contacts = tmp_path / "many.csv"
    rows = "".join(f"138{n:08d},{'长' * 20}\n" for n in range(count))
    contacts.write_text("mobile,note\n" + rows, encoding="utf-8")
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path, serve=True) as s:
            cid = (await s.handlers.campaign_create(SETTINGS))["id"]
            assert await s.waihuctl("--json", "campaign", "import", "spring", str(contacts)) == 0
            summary = json.loads(capsys.readouterr().out)
            imports = [e for e in await s.handlers.audit() if e["action"] == "campaign.import"]
            stored = await s.rig.store.contact_counts(cid)
    assert (summary["added"], summary["rejected"], summary["rejects_file"]) == (count, 0, None)
    assert [e["params"]["added"] for e in imports] == [500, 2000, 2000]  # newest first
    assert dict(stored) == {"pending": count}
    # a batch is cut short when its JSON would not fit one request line
    big = [{"number": "+8613800138000", "variables": {"note": "x" * 300_000}}] * 7
    sizes = [len(batch) for batch in campaign_cli._batches(big)]
    assert sizes == [3, 3, 1] and 3 * 300_000 < MAX_LINE_BYTES < 4 * 300_000


async def test_dnc_import_and_export_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "blocked.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["电话", "原因"], [13900139000, "投诉"], ["010-12345678", ""], ["oops", ""]):
        sheet.append(row)
    book.save(source)
    with trio.fail_after(TIMEOUT):
        async with stand(tmp_path, serve=True) as s:
            assert await s.waihuctl("dnc", "add", "+8613900139000") == 0
            capsys.readouterr()
            assert await s.waihuctl("dnc", "import", str(source), "--reason", "客户要求") == 0
            imported = capsys.readouterr().out.splitlines()
            assert await s.waihuctl("dnc", "export", str(tmp_path / "dnc.csv")) == 0
            assert await s.waihuctl("dnc", "remove", "+861012345678") == 0
            assert await s.waihuctl("dnc", "list") == 0
            listed = capsys.readouterr().out.splitlines()
    assert imported[:5] == [
        f"{source} → the do-not-call list",
        "  encoding   xlsx",
        "  rows       3",
        "  added      1 (1 already listed)",
        "  rejected   1 (not a valid number 1)",
    ]
    assert imported[-1].startswith("  line 4: oops: ")
    with (tmp_path / "dnc.csv").open(encoding="utf-8-sig", newline="") as f:
        exported = [(r["number"], r["reason"]) for r in csv.DictReader(f)]
    assert sorted(exported) == [("+861012345678", "客户要求"), ("+8613900139000", "客户要求")]
    assert listed[-3] == "removed 1 number(s) from the do-not-call list"
    assert listed[-1].startswith("+8613900139000  客户要求  ")


# ───────────────────────── the command line and the table ─────────────────────────


def test_campaign_help_lists_its_subcommands_one_line_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["campaign", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    listing = out[out.index("subcommands:\n") :].splitlines()[1:14]
    assert [line.split()[0] for line in listing] == [
        "create", "list", "show", "clone", "start", "pause", "resume", "stop", "cancel",
        "redial", "reset", "import", "export",
    ]  # fmt: skip
    assert "import  add the contacts of a CSV or .xlsx file" in out
    with pytest.raises(SystemExit) as exited:
        main(["campaign", "import_info", "spring"])  # sent by import, not typed
    assert exited.value.code == 2
    assert "invalid choice: 'import_info'" in capsys.readouterr().err


def test_json_errors_go_to_stdout_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nobody.sock"
    assert main(["--json", "--socket", str(missing), "campaign", "list"]) == 1
    out = capsys.readouterr()
    assert out.err == ""
    assert json.loads(out.out)["error"]["code"] == "unreachable"


@pytest.mark.parametrize(
    ("request_", "names"),
    [
        (
            {"method": "campaign.create", "params": {"settings": "x"}},
            "'settings' must be an object",
        ),
        (
            {"method": "campaign.add_contacts", "params": {"campaign": "c", "contacts": ["x"]}},
            "'contacts' must be an array of objects, not an array",
        ),
        ({"method": "campaign.redial", "params": {"campaign": "c", "outcomes": []}}, "must not be"),
        ({"method": "recordings.prune", "params": {"days": 0}}, "'days' must be at least 1"),
        ({"method": "recordings.prune", "params": {"days": 3, "dry_run": 1}}, "true or false"),
    ],
)
def test_params_of_the_new_types_are_checked(request_: dict[str, Any], names: str) -> None:
    with pytest.raises(ControlError) as info:
        parse_request(request_)
    assert info.value.code == "bad_request" and names in info.value.message
