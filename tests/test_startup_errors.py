"""Operator mistakes at start-up: one line naming the key and a documented exit status,
never a traceback.

Each case starts the real ``waihud`` with a written config and asserts its exact
message and exit status: 78 for the configuration (systemd's
``RestartPreventExitStatus=78`` then stops the restart loop), 1 for a start-up
failure that is not the configuration's, 2 for a command-line mistake.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from test_check_config import DEMO_MODEL, MODELS_URL, edit, good_config, without_trunks

from waihu.testing.daemon import running_waihud, write_config

pytestmark = pytest.mark.e2e

EX_CONFIG = 78
EX_SOFTWARE = 1
EX_USAGE = 2
RUN_TIMEOUT = 180  # seconds: a start that gets as far as loading the model takes a while
MAX_SOCKET_PATH_BYTES = 107  # sun_path is 108 bytes on Linux, with its terminating NUL


def start(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run waihud in the foreground until it exits by itself."""
    return subprocess.run(
        [sys.executable, "-m", "waihu.daemon", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def errors(run: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines that are not routine log lines (info, debug), after checking there is no
    traceback."""
    assert "Traceback" not in run.stderr, run.stderr
    return [ln for ln in run.stderr.splitlines() if " INFO " not in ln and " DEBUG " not in ln]


def test_a_missing_model_exits_78_naming_the_key_before_anything_starts(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-model"
    config = good_config(tmp_path, model=str(missing))
    run = start(config)
    assert run.returncode == EX_CONFIG
    assert errors(run) == [
        f"waihud: {config}: asr.default.model: model directory {missing} does not exist:"
        f" unpack a vosk model ({MODELS_URL}) there, or set model = to where one is"
    ]
    assert not (tmp_path / "etc" / "state").exists()  # nothing ran: not even storage


def test_a_control_socket_under_a_regular_file_exits_78_naming_the_key(
    tmp_path: Path,
) -> None:
    config = good_config(tmp_path)
    (tmp_path / "run").write_text("", encoding="utf-8")
    path = tmp_path / "run" / "control.sock"
    edit(config, str(tmp_path / "etc" / "control.sock"), str(path))
    run = start(config)
    assert run.returncode == EX_CONFIG
    assert errors(run) == [
        f"waihud: {config}: daemon.control_socket: cannot create {path}:"
        f" {tmp_path / 'run'} is not a directory"
    ]


def test_a_control_socket_path_taken_by_a_file_exits_78_naming_the_key(
    tmp_path: Path,
) -> None:
    config = good_config(tmp_path)
    taken = tmp_path / "etc" / "control.sock"
    taken.write_text("someone's notes\n", encoding="utf-8")
    run = start(config)
    assert run.returncode == EX_CONFIG
    assert errors(run) == [
        f"waihud: {config}: daemon.control_socket: {taken} exists and is not a socket:"
        " remove it, or choose another path"
    ]
    assert taken.read_text(encoding="utf-8") == "someone's notes\n"  # left alone


def test_a_state_directory_under_a_regular_file_exits_78_naming_the_key(
    tmp_path: Path,
) -> None:
    config = good_config(tmp_path)
    (tmp_path / "var").write_text("", encoding="utf-8")
    state = tmp_path / "var" / "lib" / "waihu"
    edit(config, str(tmp_path / "etc" / "state"), str(state))
    run = start(config)
    assert run.returncode == EX_CONFIG
    assert errors(run) == [
        f"waihud: {config}: daemon.state_dir: cannot create {state}:"
        f" {tmp_path / 'var'} is a file, not a directory"
    ]


def test_an_unknown_control_group_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = good_config(tmp_path, daemon={"control_group": "no-such-operators"})
    run = start(config)
    assert run.returncode == EX_CONFIG
    assert errors(run) == [
        f"waihud: {config}: daemon.control_group: no group named 'no-such-operators'"
        " on this system (groupadd it, or fix the name)"
    ]


def test_an_unknown_log_level_is_a_usage_error_listing_the_levels(tmp_path: Path) -> None:
    run = start(good_config(tmp_path), "--log-level", "trace")
    assert run.returncode == EX_USAGE
    assert "Traceback" not in run.stderr
    assert run.stderr.splitlines()[-1] == (
        "waihud: error: argument --log-level: invalid choice: 'trace'"
        " (choose from 'debug', 'info', 'warning', 'error')"
    )


def test_configuration_errors_and_warnings_come_together(tmp_path: Path) -> None:
    """What --check-config would say, start-up says too, before it stops."""
    config = good_config(tmp_path, model=str(tmp_path / "no-model"))
    without_trunks(config)
    run = start(config)
    assert run.returncode == EX_CONFIG
    assert [line.split(": ", 3)[:3] for line in errors(run)] == [
        ["waihud", "warning", str(config)],
        ["waihud", str(config), "asr.default.model"],
    ]


def test_a_model_vosk_cannot_load_exits_1_in_one_line_naming_the_section(
    tmp_path: Path,
) -> None:
    """Every file is there but none holds a model: not what a check of names can see."""
    broken = tmp_path / "broken-model"
    for name in ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf", "graph/HCLG.fst"):
        (broken / name).parent.mkdir(parents=True, exist_ok=True)
        (broken / name).write_text("not a model\n", encoding="utf-8")
    config = good_config(tmp_path, model=str(broken))
    run = start(config)
    assert run.returncode == EX_SOFTWARE
    # vosk's own Kaldi lines come first on stderr; the daemon's line is the last one
    daemon_lines = [ln for ln in errors(run) if "waihu" in ln]
    assert len(daemon_lines) == 1
    assert daemon_lines[0].endswith(
        f" ERROR waihu.daemon: asr.default did not start: vosk cannot load a model from"
        f" {broken} (Failed to create a model); it should hold am/, conf/ and graph/ as"
        " unpacked from a vosk model archive"
    )


async def test_another_daemon_on_the_socket_exits_1_not_78(tmp_path: Path) -> None:
    """Not the configuration's fault: systemd may well try again later."""
    config = good_config(tmp_path)
    path = tmp_path / "etc" / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        with trio.fail_after(RUN_TIMEOUT):
            run = await trio.to_thread.run_sync(start, config)
    assert run.returncode == EX_SOFTWARE
    assert errors(run)[-1].endswith(
        f" ERROR waihu.daemon: another process is already listening on {path}"
    )


async def test_no_trunk_starts_ready_and_logs_the_warning(tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", proxy="127.0.0.1:5999", model=str(DEMO_MODEL))
    without_trunks(config)
    with trio.fail_after(RUN_TIMEOUT):
        async with running_waihud(config) as daemon:
            status = await daemon.request("status")
            assert status["scripts"] == ["demo-ko"]
            assert await daemon.stop() == 0
    warnings = [ln for ln in daemon.log_text().splitlines() if " WARNING " in ln]
    assert [ln.split(" WARNING ", 1)[1] for ln in warnings] == [
        f"waihu.daemon: {config}: trunk: no [trunk.NAME] section: the daemon runs but cannot"
        " place calls; add a trunk (see waihud.toml(5))"
    ]


def test_a_control_socket_path_too_long_for_unix_sockets_exits_78_naming_the_key(
    tmp_path: Path,
) -> None:
    """Found while the socket is set up, after the providers started: still 78 and the key."""
    config = good_config(tmp_path)
    path = tmp_path / ("x" * (MAX_SOCKET_PATH_BYTES + 1 - len(str(tmp_path)))) / "control.sock"
    edit(config, str(tmp_path / "etc" / "control.sock"), str(path))
    run = start(config)
    assert run.returncode == EX_CONFIG
    assert errors(run)[-1] == (
        f"waihud: {config}: daemon.control_socket: control socket path {path} is too long:"
        f" {path} is {len(str(path))} bytes, and a unix socket's path has at most"
        f" {MAX_SOCKET_PATH_BYTES}"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="for others /proc is not writable: preflight says so")
def test_a_state_directory_the_system_refuses_to_create_exits_78_naming_the_key(
    tmp_path: Path,
) -> None:
    """/proc looks writable to root, but no directory can be made there: only mkdir tells."""
    config = good_config(tmp_path)
    state = Path("/proc") / f"waihu-test-{tmp_path.name}"
    edit(config, str(tmp_path / "etc" / "state"), str(state))
    run = start(config)
    assert run.returncode == EX_CONFIG
    assert errors(run)[-1] == (
        f"waihud: {config}: daemon.state_dir: cannot create {state}: No such file or directory"
    )


def test_a_plugin_that_cannot_be_imported_is_named_with_how_to_block_it(tmp_path: Path) -> None:
    """A third-party distribution on the path whose module imports something missing."""
    site = tmp_path / "site"
    dist_info = site / "waihu_broken-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: waihu-broken\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(
        "[waihu]\nbroken = waihu_broken\n", encoding="utf-8"
    )
    (site / "waihu_broken.py").write_text("import no_such_dependency\n", encoding="utf-8")
    config = good_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{os.environ.get('PYTHONPATH', '')}:{site}"}
    for command in (["--check-config", str(config)], ["--config", str(config)]):
        run = subprocess.run(
            [sys.executable, "-m", "waihu.daemon", *command],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env=env,
        )
        assert run.returncode == EX_CONFIG
        assert errors(run) == [
            "waihud: plugin error: plugin broken (waihu_broken) cannot be loaded:"
            " ModuleNotFoundError: No module named 'no_such_dependency'; reinstall it,"
            " or block it with WAIHU_DISABLE_PLUGINS=broken"
        ]
    blocked = subprocess.run(
        [sys.executable, "-m", "waihu.daemon", "--check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**env, "WAIHU_DISABLE_PLUGINS": "broken"},
    )
    assert (blocked.returncode, blocked.stdout) == (0, f"{config}: OK\n"), blocked.stderr
