"""``waihuctl call`` against a real waihud: a target the trunk cannot dial is refused with the
reason and nothing is filed; an unknown trunk or script names the closest; ``--wait`` exits
by how the call ended (sipp's switchboard as the callee), showing its progress on a terminal.

Every ``waihuctl`` here is a real process, talking to the real daemon's socket.
"""

from __future__ import annotations

import json
import os
import pty
import re
import sys
from pathlib import Path

import attrs
import pytest
import trio

from waihu.testing.daemon import DaemonUnderTest, running_waihud, write_config
from waihu.testing.sipp import SWITCHBOARD, switchboard_peer

pytestmark = pytest.mark.e2e

DEADLINE = 240  # seconds of real time for a whole test: a daemon start, real calls, a busy box
GOOD = "dial a number (digits 0-9, * and #, a leading + for E.164) or a SIP URI (sip:user@host)"
NO_PEER = "127.0.0.1:9"  # the discard port: a trunk that is never dialled needs no peer
CALL_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")


@attrs.frozen
class Ran:
    """What one waihuctl process did."""

    status: int
    out: str
    err: str


async def waihuctl(daemon: DaemonUnderTest, *argv: str) -> Ran:
    """Run ``waihuctl --socket … ARGV`` as a process; stdout and stderr are pipes."""
    done = await trio.run_process(
        [sys.executable, "-m", "waihu.control.client", "--socket", str(daemon.socket), *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode())


async def waihuctl_on_a_terminal(daemon: DaemonUnderTest, *argv: str) -> Ran:
    """Run waihuctl with its stderr on a pseudo-terminal, as an operator sees it."""
    controller, terminal = pty.openpty()
    try:
        done = await trio.run_process(
            [sys.executable, "-m", "waihu.control.client", "--socket", str(daemon.socket), *argv],
            capture_stdout=True,
            stderr=terminal,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed and everything was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    return Ran(done.returncode, done.stdout.decode(), seen.decode())


async def test_a_target_that_cannot_be_dialled_is_refused_and_nothing_is_filed(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "waihud", proxy=NO_PEER)
    with trio.fail_after(DEADLINE):
        async with running_waihud(config) as daemon:
            abc = await waihuctl(daemon, "call", "abc", "--script", "demo-ko")
            angled = await waihuctl(
                daemon, "--json", "call", "010<1234>;x=1", "--script", "demo-ko", "--wait"
            )
            empty_user = await waihuctl(daemon, "call", "sip:@", "--script", "demo-ko", "--wait")
            typo_trunk = await waihuctl(
                daemon, "call", "1001", "--script", "demo-ko", "--trunk", "loopbak"
            )
            scripts = (await daemon.request("status"))["scripts"]
            typo_script = await waihuctl(daemon, "call", "1001", "--script", "demo-k")
            filed = await daemon.request("calls")
            assert await daemon.stop() == 0
    assert (abc.status, abc.out) == (1, "")
    assert abc.err == (
        "waihuctl: 'abc' is not a phone number or SIP URI "
        f"('a' does not belong in a phone number): {GOOD}\n"
    )
    assert angled.status == 1
    assert json.loads(angled.out) == {
        "ok": False,
        "error": {
            "code": "bad_request",
            "message": "'010<1234>;x=1' is not a phone number or SIP URI "
            f"('<' does not belong in a phone number): {GOOD}",
        },
    }
    assert (empty_user.status, empty_user.err) == (
        1,
        f"waihuctl: 'sip:@' is not a SIP URI to dial (empty user part): {GOOD}\n",
    )
    assert (typo_trunk.status, typo_trunk.err) == (
        1,
        "waihuctl: no trunk named 'loopbak' (did you mean 'loopback'? known: loopback)\n",
    )
    assert (typo_script.status, typo_script.err) == (
        1,
        "waihuctl: no script named 'demo-k' "
        f"(did you mean 'demo-ko'? known: {', '.join(scripts)})\n",
    )
    assert filed == []  # no id was issued, nothing was dialled or filed
    assert "dialling" not in daemon.log_text()


async def test_call_wait_exits_by_how_the_call_ended_and_call_show_says_why(
    tmp_path: Path,
) -> None:
    answers, busy, missing = SWITCHBOARD[7], SWITCHBOARD[1], SWITCHBOARD[4]
    with trio.fail_after(DEADLINE):
        # 7 rings a while, answers, and hangs up itself; the last call is to a user with no
        # last digit, which the switchboard answers 484
        async with switchboard_peer(tmp_path, 4, keys={"ring_ms": "2500"}) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as daemon:
                talked = await waihuctl(
                    daemon, "call", answers.number(), "--script", "demo-ko", "--wait"
                )
                engaged = await waihuctl(
                    daemon, "call", busy.number(), "--script", "demo-ko", "--wait"
                )
                nobody = await waihuctl(
                    daemon, "--json", "call", missing.number(), "--script", "demo-ko", "--wait"
                )
                incomplete = await waihuctl(
                    daemon, "call", peer.uri("callee"), "--script", "demo-ko", "--wait"
                )
                (incomplete_id,) = CALL_ID.findall(incomplete.err.splitlines()[-1])
                shown = json.loads(
                    (await waihuctl(daemon, "--json", "call", "show", incomplete_id)).out
                )
                assert await daemon.stop() == 0
    # answered: 0
    assert talked.status == 0, talked
    assert talked.out.startswith(f"call {CALL_ID.findall(talked.out)[0]}  ended\n")
    assert "\x1b" not in talked.err  # not a terminal: plain lines
    # busy: the callee did not take it
    assert engaged.status == 3, engaged
    assert engaged.err.splitlines()[-1].endswith(" failed (busy): 486 Busy Here")
    assert "\x1b" not in engaged.err  # not a terminal: plain lines
    # no such number: it could not be put through; --json shows the record as call show does
    assert nobody.status == 4, nobody
    record = json.loads(nobody.out)
    assert (record["outcome"], record["sip_status"]) == ("invalid_number", 404)
    assert record["error"] == "404 Not Found: no such number"
    # 484 from the far end: the error is filed, not null
    assert incomplete.status == 4, incomplete
    assert (shown["status"], shown["sip_status"], shown["outcome"]) == (
        "failed",
        484,
        "invalid_number",
    )
    assert shown["error"] == "484 Address Incomplete: too few digits"
    assert incomplete.err.splitlines()[-1] == (
        f"waihuctl: call {incomplete_id} failed (invalid_number): "
        "484 Address Incomplete: too few digits"
    )


def pseudo_terminals() -> bool:
    """Whether this machine can open a pseudo-terminal (a bare chroot without devpts cannot)."""
    try:
        controller, terminal = pty.openpty()
    except OSError:
        return False
    os.close(controller)
    os.close(terminal)
    return True


async def test_call_wait_on_a_terminal_rewrites_one_line_while_it_rings_and_talks(
    tmp_path: Path,
) -> None:
    if not pseudo_terminals():
        pytest.skip("no pseudo-terminal can be opened here (devpts is not mounted)")
    answers = SWITCHBOARD[7]
    with trio.fail_after(DEADLINE):
        async with switchboard_peer(tmp_path, 4, keys={"ring_ms": "2500"}) as peer:
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as daemon:
                talked = await waihuctl_on_a_terminal(
                    daemon, "call", answers.number(), "--script", "demo-ko", "--wait"
                )
                assert await daemon.stop() == 0
    assert talked.status == 0, talked
    assert f"\r\x1b[Kwaihuctl: dialling {answers.number()} · ringing · " in talked.err
    assert f"\r\x1b[Kwaihuctl: {answers.number()} answered · " in talked.err
    assert re.search(r"\r\x1b\[Kwaihuctl: call \S+ ended\r?\n$", talked.err), talked.err
