"""The switchboard callee (``contrib/sipp/switchboard.xml``) against the real SIP trunk.

One sipp process serves calls to numbers ending in every digit, dialled at the
same time through one ``waihu_sip`` trunk, and each call must come out the way
``SWITCHBOARD`` says: answered, busy, ringing out, rejected with its status, hung
up by the callee, talking, or never answered at all. sipp's own verdict
(``check()``) says the far end saw what it expected too (ACKs, CANCEL, BYEs).
A second test puts kamailio in between to see that the callee's own BYE follows
the dialog's route set.

Timing: the longest call here is the ringing one (``RING_TIMEOUT``); every wait
has a generous deadline, as the machine is shared.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio

from waihu.api import CallFailed, CallLeg, TrunkError
from waihu.testing.kamailio import kamailio_proxy
from waihu.testing.sipp import (
    SCENARIOS,
    SWITCHBOARD,
    SWITCHBOARD_KEYS,
    Play,
    SwitchboardLine,
    switchboard_peer,
)
from waihu_sip.trunk import SipTrunk

from sip_harness import running_trunk

pytestmark = pytest.mark.e2e

REAL_TIME_LIMIT = 60  # seconds per test; generous, the machine is shared
RING_TIMEOUT = 1.0  # seconds our dial lets a number ring before it gives up (CANCEL, 408)
NEVER_ANSWER = (2, 9)  # the digits dialled with RING_TIMEOUT; the rest may take their time
HANGUP_MS = 800  # how long the callee of a number ending in 7 talks before it hangs up
QUIET_PROBE = 0.3  # seconds the silent answerer (0) must send no audio
RTP_HEADER = 12
KEYS = {"hangup_ms": str(HANGUP_MS)}


@attrs.define
class Outcome:
    """What dialling one switchboard number came to."""

    line: SwitchboardLine
    progress: list[int] = attrs.Factory(list)
    leg: CallLeg | None = None
    failure: CallFailed | None = None
    error: TrunkError | None = None


async def dial(trunk: SipTrunk, line: SwitchboardLine, outcome: Outcome) -> None:
    """Dial the line's number and keep what came of it."""
    try:
        outcome.leg = await trunk.dial(
            line.number(),
            ring_timeout=RING_TIMEOUT if line.digit in NEVER_ANSWER else REAL_TIME_LIMIT,
            on_progress=lambda status, reason: outcome.progress.append(status),
        )
    except CallFailed as exc:
        outcome.failure = exc
    except TrunkError as exc:
        outcome.error = exc


async def dial_all(trunk: SipTrunk, lines: list[SwitchboardLine]) -> dict[int, Outcome]:
    """Dial every line at once; their outcomes by digit once every dial has returned."""
    outcomes = {line.digit: Outcome(line) for line in lines}
    async with trio.open_nursery() as nursery:
        for line in lines:
            nursery.start_soon(dial, trunk, line, outcomes[line.digit])
    return outcomes


def test_the_table_matches_the_scenario() -> None:
    assert sorted(SWITCHBOARD) == list(range(10))
    assert all(digit == line.digit for digit, line in SWITCHBOARD.items())
    assert [d for d, line in SWITCHBOARD.items() if line.answered] == [0, 7, 8]
    assert [d for d, line in SWITCHBOARD.items() if line.callee_hangs_up] == [7]
    assert SWITCHBOARD[4].number("010") == "0104"
    scenario = (SCENARIOS / "switchboard.xml").read_text()
    for line in SWITCHBOARD.values():
        if line.status not in (None, 200):
            assert f"SIP/2.0 {line.status} {line.reason}\n" in scenario
    for key in SWITCHBOARD_KEYS:
        assert f"[{key}]" in scenario


async def test_every_digit_at_once_through_one_trunk(tmp_path: Path) -> None:
    audio = tmp_path / "hello.ul"
    audio.write_bytes(bytes(range(256)) * 5)  # 1280 bytes: 8 packets of 20 ms
    lines = list(SWITCHBOARD.values())
    with trio.fail_after(REAL_TIME_LIMIT):
        plays = [Play(after_ms=100, audio=audio)]
        async with switchboard_peer(tmp_path, len(lines), keys=KEYS, plays=plays) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                outcomes = await dial_all(trunk, lines)

                for digit in (1, 3, 4, 5, 6):  # rejected: the callee's own answer
                    outcome = outcomes[digit]
                    assert outcome.leg is None and outcome.failure is not None, outcome
                    status = (outcome.failure.status, outcome.failure.reason)
                    assert status == (outcome.line.status, outcome.line.reason)
                    assert outcome.progress == []  # 100 Trying is not progress
                ringing = outcomes[2]
                assert ringing.failure is not None, ringing
                assert (ringing.failure.status, ringing.failure.reason) == (408, "Request Timeout")
                assert ringing.progress == [180]
                silent = outcomes[9]  # nothing came back by the ring timeout: no network
                assert silent.error is not None and "no response" in str(silent.error), silent
                assert silent.progress == []

                legs = {}
                for digit in (0, 7, 8):
                    outcome = outcomes[digit]
                    assert outcome.leg is not None and outcome.failure is None, outcome
                    assert outcome.progress == [180]
                    assert outcome.leg.codec.name == "PCMU"
                    legs[digit] = outcome.leg

                # 8 talks: the play arrives whole
                payload = b""
                while len(payload) < len(audio.read_bytes()):
                    payload += (await legs[8].receive_media())[RTP_HEADER:]
                assert payload == audio.read_bytes()
                # 0 stays silent and on the line
                with trio.move_on_after(QUIET_PROBE) as quiet:
                    await legs[0].receive_media()
                assert quiet.cancelled_caught
                assert not legs[0].ended.is_set()
                # 7 hangs up by itself
                await legs[7].ended.wait()
                assert legs[7].ended_by == "callee"
                # 0 and 8 wait for us
                for digit in (0, 8):
                    await legs[digit].hangup()
                    assert legs[digit].ended_by == "robot"
                result = await peer.wait()
        result.check()  # every call did what sipp expected: ACKs, CANCEL, BYEs answered


async def test_a_number_without_a_last_digit_fails_loudly(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with switchboard_peer(tmp_path, 1) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                with pytest.raises(CallFailed) as failure:
                    await trunk.dial(peer.uri("callee"))
                assert (failure.value.status, failure.value.reason) == (484, "Address Incomplete")
                result = await peer.wait()
        assert not result.passed  # a test that dials a wrong number finds out
        # ... and the callee did nothing else before failing the call
        messages = (peer.workdir / "messages.log").read_text().splitlines()
        assert {m for m in messages if m.startswith("SIP/2.0 ")} == {
            "SIP/2.0 484 Address Incomplete"
        }


async def test_the_callees_bye_follows_the_route_set(tmp_path: Path) -> None:
    lines = [SWITCHBOARD[7], SWITCHBOARD[1]]
    with trio.fail_after(REAL_TIME_LIMIT):
        async with switchboard_peer(tmp_path, len(lines), keys=KEYS) as peer:
            async with kamailio_proxy(tmp_path, next_hop=peer.hostport) as proxy:
                async with running_trunk(tmp_path, proxy=proxy.hostport) as trunk:
                    outcomes = await dial_all(trunk, lines)
                    busy = outcomes[1].failure
                    assert busy is not None and busy.status == 486
                    leg = outcomes[7].leg
                    assert leg is not None
                    await leg.ended.wait()
                    assert leg.ended_by == "callee"
                    result = await peer.wait()
                requests = proxy.requests()
        result.check()
        answered = next(
            r
            for r in requests
            if r.method == "INVITE" and r.uri.startswith(f"sip:{SWITCHBOARD[7].number()}@")
        )
        # (a retransmission on a busy machine is the same request again: each method once)
        ours = {r.method: r for r in requests if r.call_id == answered.call_id}
        # the callee's 200 kept the proxy on the path: our ACK went through it ...
        assert "ACK" in ours and ours["ACK"].source == answered.source, requests
        # ... and so did the callee's BYE (its Route), which the proxy relayed to us
        assert "BYE" in ours and ours["BYE"].source == peer.hostport, requests
