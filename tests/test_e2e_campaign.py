"""Campaigns end to end: a real waihud dials a list through one SIP trunk to sipp.

The far end is the sipp "switchboard" (``contrib/sipp/switchboard.xml``): the
last digit of the dialled number says whether the callee answers and stays
silent (0), is busy (1), never picks up (2), declines (3), does not exist (4)
or answers and hangs up at once (7). The daemon is driven over its control
socket, as ``waihuctl`` does.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from waihu.testing.daemon import DaemonUnderTest, running_waihud, write_config
from waihu.testing.sipp import switchboard_peer

pytestmark = pytest.mark.e2e

EXPECTED = {  # last digit → outcome filed
    "0": "answered",
    "1": "busy",
    "2": "no_answer",
    "3": "rejected",
    "4": "invalid_number",
    "7": "answered",
}


def settings(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "e2e",
        "script": "demo-ko",
        "caller_id": "02160000000",
        "windows": ["daily 00:00-24:00"],
        "ring_timeout": 5.0,
        "max_attempts": 1,
        "calls_per_minute": 600.0,
        **overrides,
    }


async def add(daemon: DaemonUnderTest, campaign: str, numbers: list[str]) -> dict[str, Any]:
    contacts = [
        {"number": n, "variables": {"name": f"客户{i}"}, "timezone": None, "line": i + 2}
        for i, n in enumerate(numbers)
    ]
    return await daemon.request("campaign.add_contacts", campaign=campaign, contacts=contacts)  # type: ignore[no-any-return]


async def until_state(daemon: DaemonUnderTest, campaign: str, *states: str) -> dict[str, Any]:
    while True:
        shown = await daemon.request("campaign.show", campaign=campaign)
        if shown["state"] in states:
            return shown  # type: ignore[no-any-return]
        await trio.sleep(0.5)


async def test_a_campaign_dials_every_contact_once_within_its_lines_and_files_outcomes(
    tmp_path: Path,
) -> None:
    numbers = [f"+86138001380{i}{d}" for i in range(2) for d in EXPECTED]
    with trio.fail_after(240):
        async with switchboard_peer(
            tmp_path / "sipp", len(numbers), keys={"hangup_ms": "500"}, timeout=200
        ) as board:
            config = write_config(tmp_path / "waihud", proxy=board.hostport)
            async with running_waihud(config) as daemon:
                made = await daemon.request("campaign.create", settings=settings(lines=2))
                added = await add(daemon, made["id"], numbers)
                assert added["added"] == len(numbers) and added["rejects"] == []
                await daemon.request("campaign.start", campaign=made["id"])
                most_live = 0
                while (shown := await daemon.request("campaign.show", campaign=made["id"]))[
                    "state"
                ] == "running":
                    most_live = max(most_live, len(shown["live_calls"]))
                    await trio.sleep(0.2)
                assert shown["state"] == "completed"
                page = await daemon.request("campaign.attempts", campaign=made["id"])
                assert await daemon.stop() == 0
            (await board.wait()).check()  # every call the switchboard took ended properly
    assert most_live <= 2
    assert shown["contacts"] == {"done": len(numbers)}
    rows = page["rows"]
    assert sorted(r["number"] for r in rows) == sorted(numbers)  # each dialled exactly once
    for row in rows:
        assert row["outcome"] == EXPECTED[row["number"][-1]], row
    assert shown["outcomes"] == {
        "answered": 4,
        "busy": 2,
        "no_answer": 2,
        "rejected": 2,
        "invalid_number": 2,
    }


async def test_kill_9_mid_dial_and_mid_call_is_reconciled_and_nothing_is_dialled_twice(
    tmp_path: Path,
) -> None:
    """SIGKILL while one call rings and one is answered: after the restart both attempts
    are finished from what their call records say, and neither number is dialled again."""
    ringing, talking = "+8613800138002", "+8613800138010"
    with trio.fail_after(240):
        async with switchboard_peer(tmp_path / "sipp", 2, timeout=200) as board:
            config = write_config(tmp_path / "waihud", proxy=board.hostport)
            async with running_waihud(config) as first:
                made = await first.request(
                    "campaign.create",
                    settings=settings(lines=2, ring_timeout=120.0, max_attempts=3),
                )
                campaign = made["id"]
                await add(first, campaign, [ringing, talking])
                await first.request("campaign.start", campaign=campaign)
                with trio.fail_after(60):
                    while True:
                        shown = await first.request("campaign.show", campaign=campaign)
                        live = [await first.request("call.show", id=i) for i in shown["live_calls"]]
                        states = sorted(c["status"] for c in live)
                        if states == ["answered", "ringing"]:
                            break
                        await trio.sleep(0.2)
                first.process.kill()  # SIGKILL: nothing is hung up or filed
                first.process.wait()
            assert first.process.returncode == -signal.SIGKILL
            async with running_waihud(config) as second:
                shown = await second.request("campaign.show", campaign=campaign)
                page = await second.request("campaign.attempts", campaign=campaign)
                await trio.sleep(3)  # the campaign runs on: nothing is due for its retry delay
                again = await second.request("campaign.attempts", campaign=campaign)
                assert await second.stop() == 0
    by_number = {r["number"]: r for r in page["rows"]}
    assert len(page["rows"]) == 2 and len(again["rows"]) == 2  # no second dial of either
    assert by_number[talking]["outcome"] == "answered"  # a person talked: never called again
    assert by_number[ringing]["outcome"] == "interrupted"  # retried only after its delay
    assert all(r["note"].startswith("reconciled") for r in page["rows"])
    assert shown["reconciled"] == 2
    assert shown["contacts"] == {"done": 1, "pending": 1}
    log = second.log_text()
    assert "reconciled" in log and ringing in log
