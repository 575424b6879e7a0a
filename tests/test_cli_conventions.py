"""waihuctl's conventions, run as an operator runs it: the real ``waihuctl`` process, and
where a daemon answers, a real ``waihud`` with a real SQLite file.

``--version``; completion scripts for bash (run in a real bash) and zsh; call
ids shortened to a unique prefix, resolved by the daemon (ambiguous, unique,
none, too short); "did you mean" for commands, campaigns and script files;
with ``--json``, every error as JSON on stdout with its exit status.

The calls the prefixes are tried on are filed into the daemon's SQLite file
before it starts, by the SQLite storage plugin itself: the look-up under test
is the daemon's, not how the calls got there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import trio

from waihu.api import CallRecord, ProviderContext
from waihu.control.client import waihuctl_commands
from waihu.testing.daemon import REPO, DaemonUnderTest, running_waihud, write_config
from waihu_sqlite.storage import SqliteStorage

TIMEOUT = 180  # seconds: a daemon start loads the speech model; the machine is shared
UNUSED_PEER = "127.0.0.1:5999"  # the trunk's far end: nothing is dialled here
CALL_IDS = (
    "20261125-150001-a1b2c3",
    "20261125-150002-d4e5f6",
    "20261126-090000-0a0b0c",
)
EXIT_FAILED, EXIT_USAGE = 1, 2


def waihuctl(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    """Run the real waihuctl; the finished process (stdout, stderr as text)."""
    return subprocess.run(
        [sys.executable, "-m", "waihu.control.client", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


async def waihuctl_at(daemon: DaemonUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    """waihuctl against this daemon's socket, run in a worker thread."""
    return await trio.to_thread.run_sync(lambda: waihuctl("--socket", str(daemon.socket), *args))


def storage_at(state_dir: Path) -> SqliteStorage:
    context = ProviderContext(
        name="storage",
        state_dir=state_dir,
        log=logging.getLogger("waihu.storage"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    return SqliteStorage(SqliteStorage.Config(path="waihu.db"), context)


def filed_call(call_id: str) -> CallRecord:
    return CallRecord(
        id=call_id,
        number="01012345678",
        script="demo-ko",
        trunk="loopback",
        status="ended",
        created_at=1_795_000_000.0,
        answered_at=1_795_000_003.0,
        ended_at=1_795_000_040.0,
        sip_status=200,
        hangup_by="callee",
        outcome="answered",
    )


async def file_calls(state_dir: Path, ids: Sequence[str]) -> None:
    """File ended calls with these ids into the SQLite file at state_dir/waihu.db."""
    storage = storage_at(state_dir)
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)
        for call_id in ids:
            await storage.save_call(filed_call(call_id))
        nursery.cancel_scope.cancel()


def json_error(stdout: str) -> tuple[str, str]:
    """The (code, message) of a --json error on stdout, checking its shape."""
    reply = json.loads(stdout)
    assert reply["ok"] is False and set(reply["error"]) == {"code", "message"}, reply
    return reply["error"]["code"], reply["error"]["message"]


# ───────────────────────── version and completion ─────────────────────────


def test_version_is_printed_by_both_programs() -> None:
    ctl = waihuctl("--version")
    assert (ctl.returncode, ctl.stdout, ctl.stderr) == (0, f"waihuctl {version('waihu')}\n", "")
    daemon = subprocess.run(
        [sys.executable, "-m", "waihu.daemon", "--version"], capture_output=True, text=True
    )
    assert (daemon.returncode, daemon.stdout) == (0, f"waihud {version('waihu')}\n")


BASH_COMPLETES = r"""
source "$1"
complete -p waihuctl
try() {
    COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
    _shtab_waihuctl waihuctl "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
    echo "${COMPREPLY[*]}"
}
try waihuctl ca
try waihuctl campaign st
try waihuctl call ''
try waihuctl call fetch ID --f
try waihuctl completion ''
try waihuctl --js
try waihuctl campaign redial spring --outcome no
try waihuctl script validate "$2/de"
"""


def test_bash_completion_completes_commands_subcommands_options_and_files(
    tmp_path: Path,
) -> None:
    made = waihuctl("completion", "bash")
    assert made.returncode == 0, made.stderr
    script = tmp_path / "waihuctl.bash"
    script.write_text(made.stdout, encoding="utf-8")
    scripts = REPO / "etc" / "waihu" / "scripts"
    run = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", BASH_COMPLETES, "bash", str(script), str(scripts)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "complete -o bashdefault -F _shtab_waihuctl waihuctl",
        "call calls campaign",
        "start stop",
        "show hangup dtmf fetch play",  # after `call`, its subcommands (a TARGET is free text)
        "--force",
        "bash zsh",
        "--json",
        "no_answer",
        f"{scripts}/demo-ko.toml",
    ]


def test_zsh_completion_names_every_command() -> None:
    made = waihuctl("completion", "zsh")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("#compdef waihuctl\n")
    for command in waihuctl_commands():
        assert f"{command.words[-1]}:" in made.stdout, command.name
    if shutil.which("zsh") is None:
        return  # zsh is not installed here: the script is checked as text only
    checked = subprocess.run(["zsh", "-n"], input=made.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_completion_for_another_shell_names_the_ones_there_are() -> None:
    run = waihuctl("completion", "fish")
    assert (run.returncode, run.stdout) == (EXIT_FAILED, "")
    assert run.stderr == "waihuctl: no shell 'fish' (shells: bash, zsh)\n"


# ───────────────────────── did you mean, and JSON errors ─────────────────────────


def test_an_unknown_command_lists_the_commands_and_the_closest() -> None:
    run = waihuctl("stauts")
    assert (run.returncode, run.stdout) == (EXIT_USAGE, "")
    assert run.stderr.splitlines()[-1] == (
        "waihuctl: error: unknown command 'stauts'; did you mean 'status'? (commands: status, "
        "trunks, plugins, call, calls, watch, campaign, dnc, audit, recordings, shutdown, "
        "script, completion)"
    )
    run = waihuctl("campaign", "strat", "spring")
    assert run.returncode == EXIT_USAGE
    assert run.stderr.splitlines()[-1] == (
        "waihuctl: error: campaign: invalid choice: 'strat'; did you mean 'start'? (campaign "
        "commands: create, list, show, clone, start, pause, resume, stop, cancel, redial, "
        "reset, import, export)"
    )
    nothing_close = waihuctl("zzz")
    assert "unknown command 'zzz' (commands: status," in nothing_close.stderr


def test_a_missing_script_file_is_matched_to_the_scripts_beside_it(tmp_path: Path) -> None:
    (tmp_path / "spring-sale.toml").write_text("", encoding="utf-8")
    (tmp_path / "winter.toml").write_text("", encoding="utf-8")
    run = waihuctl("script", "validate", str(tmp_path / "spring-sal.toml"))
    assert run.returncode == EXIT_FAILED
    assert run.stderr == (
        f"waihuctl: {tmp_path}/spring-sal.toml: no such file; did you mean "
        f"'{tmp_path}/spring-sale.toml'? (scripts in {tmp_path}/: spring-sale.toml, "
        "winter.toml)\n"
    )
    assert run.stdout == f"{tmp_path}/spring-sal.toml: cannot read: No such file or directory\n"


def test_with_json_usage_errors_are_json_on_stdout_with_status_2() -> None:
    for args, message in [
        (("--json", "stauts"), "unknown command 'stauts'; did you mean 'status'?"),
        (("calls", "--limit", "x", "--json"), "argument --limit: not an integer: 'x'"),
        (("--json",), "the following arguments are required: COMMAND"),
    ]:
        run = waihuctl(*args)
        assert (run.returncode, run.stderr) == (EXIT_USAGE, ""), args
        code, text = json_error(run.stdout)
        assert code == "usage" and text.startswith(message), (args, text)


def test_with_json_a_daemon_that_cannot_be_reached_is_a_json_error(tmp_path: Path) -> None:
    socket = tmp_path / "control.sock"
    run = waihuctl("--json", "--socket", str(socket), "status")
    assert (run.returncode, run.stderr) == (EXIT_FAILED, "")
    assert json_error(run.stdout) == (
        "unreachable",
        f"cannot connect to {socket}: No such file or directory (is waihud running?)",
    )
    local = waihuctl("--json", "completion", "fish")  # a local command's failure too
    assert (local.returncode, json_error(local.stdout)[0]) == (EXIT_FAILED, "bad_request")


# ───────────────────────── short call ids, against a real daemon ─────────────────────────


def test_storage_finds_call_ids_by_prefix_with_the_id_index(tmp_path: Path) -> None:
    async def main() -> list[list[str]]:
        storage = storage_at(tmp_path)
        async with trio.open_nursery() as nursery:
            await nursery.start(storage.run)
            for call_id in (*CALL_IDS, "2026%wild", "2026_wild"):
                await storage.save_call(filed_call(call_id))
            found = [
                await storage.call_ids_with_prefix("20261125-", 10),
                await storage.call_ids_with_prefix("20261125-", 1),
                await storage.call_ids_with_prefix("2026%", 10),  # no LIKE wildcard
                await storage.call_ids_with_prefix("2026_", 10),
                await storage.call_ids_with_prefix("20261127", 10),
                await storage.call_ids_with_prefix("20261126-090000-0a0b0c", 10),
            ]
            nursery.cancel_scope.cancel()
        return found

    assert trio.run(main) == [
        list(CALL_IDS[:2]),
        [CALL_IDS[0]],
        ["2026%wild"],
        ["2026_wild"],
        [],
        [CALL_IDS[2]],
    ]
    db = sqlite3.connect(tmp_path / "waihu.db")
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM calls WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
        ["2026", "2027", 5],
    ).fetchall()
    db.close()
    assert "USING COVERING INDEX" in plan[0][3] and "(id>? AND id<?)" in plan[0][3], plan


async def test_a_call_id_may_be_shortened_to_a_unique_prefix(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        config = write_config(tmp_path / "waihud", proxy=UNUSED_PEER)
        await file_calls(tmp_path / "waihud" / "state", CALL_IDS)
        async with running_waihud(config) as daemon:
            unique = await waihuctl_at(daemon, "--json", "call", "show", "20261126")
            assert unique.returncode == 0, unique.stderr
            assert json.loads(unique.stdout)["id"] == "20261126-090000-0a0b0c"
            whole = await waihuctl_at(daemon, "--json", "call", "show", CALL_IDS[0])
            assert json.loads(whole.stdout)["id"] == CALL_IDS[0]

            ambiguous = await waihuctl_at(daemon, "call", "show", "20261125-15")
            assert (ambiguous.returncode, ambiguous.stdout) == (EXIT_FAILED, "")
            assert ambiguous.stderr == (
                "waihuctl: call id '20261125-15' is ambiguous: 20261125-150001-a1b2c3, "
                "20261125-150002-d4e5f6; give more of it\n"
            )
            none = await waihuctl_at(daemon, "--json", "call", "show", "1999")
            assert none.returncode == EXIT_FAILED
            assert json_error(none.stdout) == ("not_found", "no call with id '1999'")
            short = await waihuctl_at(daemon, "--json", "call", "show", "202")
            assert json_error(short.stdout) == (
                "bad_request",
                "no call with id '202'; a shortened call id needs at least 4 characters",
            )
            # watch takes short ids too: this one names a call that has ended
            watched = await waihuctl_at(daemon, "watch", "--call", "20261126")
            assert watched.stderr == (
                "waihuctl: call '20261126-090000-0a0b0c' has ended; "
                "'call show 20261126-090000-0a0b0c' shows it\n"
            )
            # and so does fetch; this call was filed without a recording
            fetched = await waihuctl_at(daemon, "--json", "call", "fetch", "20261126")
            assert json_error(fetched.stdout) == (
                "not_found",
                "call 20261126-090000-0a0b0c has no recording (recording was off)",
            )
            assert not (tmp_path / "20261126-090000-0a0b0c.wav").exists()


async def test_a_mistyped_campaign_name_gets_the_closest_one(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        config = write_config(tmp_path / "waihud", proxy=UNUSED_PEER)
        async with running_waihud(config) as daemon:
            for name in ("spring-sale", "autumn"):
                created = await waihuctl_at(
                    daemon,
                    "campaign",
                    "create",
                    "--name",
                    name,
                    "--script",
                    "demo-ko",
                    "--caller-id",
                    "+861088886666",
                )
                assert created.returncode == 0, created.stderr
            run = await waihuctl_at(daemon, "campaign", "show", "spring-sal")
            assert run.returncode == EXIT_FAILED
            assert run.stderr == (
                "waihuctl: no campaign 'spring-sal'; did you mean 'spring-sale'? "
                "(campaigns: autumn, spring-sale)\n"
            )
            as_json = await waihuctl_at(daemon, "--json", "campaign", "start", "winter")
            assert json_error(as_json.stdout) == (
                "not_found",
                "no campaign 'winter' (campaigns: autumn, spring-sale)",
            )
