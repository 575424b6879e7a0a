"""The answered call against a real far end: sipp (Debian ``sip-tester``) on 127.0.0.1 refreshes
the session by UPDATE or stops refreshing it, presses keys by SIP INFO and takes ours, and
takes, rejects or fails our blind transfers (REFER + NOTIFY sipfrag).

Each test starts its own sipp on free ports with a scenario from contrib/sipp/ (each
scenario documents its keys) and a trunk bound to port 0 (sip_harness.py). sipp checks what
it receives (Session-Expires in our answers, the INFO body, Refer-To); ``result.check()``
fails the test with sipp's logs unless the scenario passed. Real time: short session
intervals (``min_se`` lowered to 2 s, which only test labs do) and generous deadlines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from waihu.testing.sipp import sipp_peer

from sip_harness import LOGGER, running_trunk

REAL_TIME_LIMIT = 60  # seconds per test; generous, the machine is shared
SESSION_SE = 8  # seconds: short, yet BYE comes 5.3 s after a refresh, far beyond load jitter


async def test_far_end_refreshing_by_update_keeps_the_call(tmp_path: Path) -> None:
    keys = {"wait": "200", "se": str(SESSION_SE), "refresh_ms": str(SESSION_SE * 375)}
    refreshes = Refreshes()
    log = logging.getLogger(LOGGER)
    log.addHandler(refreshes)
    log.setLevel(logging.DEBUG)
    try:
        await _refreshed_call(tmp_path, keys, refreshes)
    finally:
        log.removeHandler(refreshes)
        log.setLevel(logging.NOTSET)


async def _refreshed_call(tmp_path: Path, keys: dict[str, str], refreshes: Refreshes) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("session_update.xml", tmp_path, keys=keys) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport, min_se=2) as trunk:
                leg = await trunk.dial("1001")
                # three refreshes 3 s apart: the last comes 6 s after the first, past the 5.3 s
                # after which the first alone would have ended the call
                while refreshes.count < 3 and not leg.ended.is_set():
                    await trio.sleep(0.05)
                assert not leg.ended.is_set(), "the session expired despite the refreshes"
                await leg.hangup()
                result = await peer.wait()
        result.check()  # every 200 said Session-Expires: 8;refresher=uac; no early BYE


async def test_far_end_that_never_refreshes_gets_our_bye(tmp_path: Path) -> None:
    keys = {"wait": "200", "se": str(SESSION_SE), "bye_wait_ms": "20000"}
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("session_silent.xml", tmp_path, keys=keys) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport, min_se=2) as trunk:
                leg = await trunk.dial("1001")
                await leg.ended.wait()  # nobody hangs up here: the session timer must
                assert leg.ended_by == "robot"
                result = await peer.wait()
        result.check()  # sipp got our BYE and answered it


async def test_dtmf_by_info_both_ways(tmp_path: Path) -> None:
    keys = {"wait": "200", "digit": "7"}
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("info_dtmf.xml", tmp_path, keys=keys) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial("1001")
                assert [await leg.receive_dtmf(), await leg.receive_dtmf()] == ["5", "#"]
                await leg.send_dtmf("7")
                await leg.hangup()
                result = await peer.wait()
        result.check()  # sipp saw Signal=7 in application/dtmf-relay


async def test_blind_transfer_accepted(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("refer_accepted.xml", tmp_path, keys={"refer_user": "8001"}) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial("1001")
                result = await leg.transfer("8001")
                assert (result.mode, result.outcome, result.status) == ("refer", "transferred", 200)
                assert leg.ended.is_set() and leg.ended_by == "callee"  # it left by itself
                sipp = await peer.wait()
        sipp.check()


async def test_blind_transfer_to_a_busy_agent_keeps_the_call(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("refer_busy.xml", tmp_path, keys={"refer_user": "8001"}) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial("1001")
                result = await leg.transfer("8001")
                assert (result.outcome, result.status) == ("agent_busy", 486)
                assert not leg.ended.is_set()
                await leg.hangup()
                sipp = await peer.wait()
        sipp.check()


async def test_blind_transfer_refused(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("refer_refused.xml", tmp_path, keys={"refer_user": "8001"}) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial("1001")
                result = await leg.transfer("8001")
                assert (result.outcome, result.status) == ("failed", 403)
                assert not leg.ended.is_set()
                await leg.hangup()
                sipp = await peer.wait()
        sipp.check()


class Refreshes(logging.Handler):
    """Counts the session timers the trunk's log reports agreed (one per refresh answered)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "session timer" in record.getMessage() and "they refresh" in record.getMessage():
            self.count += 1
