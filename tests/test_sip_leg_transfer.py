"""Blind transfer with REFER: the sipfrag rules (``waihu_sip.refer``), and the leg following a
REFER to its outcome.

The leg tests' far end is a ``UdpPeer`` scripted by hand over real sockets on 127.0.0.1
(``sip_leg_peer``), for what sipp cannot do on demand (never NOTIFY, a bad sipfrag, stay
after a successful transfer); those waiting for a timeout run on
``MockClock(autojump_threshold=0)``. test_sip_leg_sipp.py plays REFER against sipp.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from waihu.api import TransferResult
from waihu_sip.errors import SipParseError
from waihu_sip.message import Headers
from waihu_sip.refer import (
    BadNotify,
    ReferWatch,
    outcome_of_refer_response,
    outcome_of_status,
    parse_sipfrag,
)

from sip_leg_peer import Callee, answered_call

TIME_LIMIT = 30  # seconds per real-time test
VIRTUAL_LIMIT = 600  # seconds of MockClock time


def notify_headers(state: str = "active;expires=60", event: str = "refer") -> Headers:
    return Headers(
        [("Event", event), ("Subscription-State", state), ("Content-Type", "message/sipfrag")]
    )


# ───────────────────────── the rules ─────────────────────────


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "transferred"), (202, "transferred"), (486, "agent_busy"), (600, "agent_busy"),
        (408, "no_answer"), (480, "no_answer"), (487, "no_answer"), (404, "failed"),
        (503, "failed"), (603, "failed"),
    ],
)  # fmt: skip
def test_final_status_maps_to_an_outcome(status: int, outcome: str) -> None:
    assert outcome_of_status(status) == outcome


def test_sipfrag_status_line() -> None:
    assert parse_sipfrag(b"SIP/2.0 180 Ringing\r\n") == 180
    assert parse_sipfrag(b"\r\nSIP/2.0 200 OK\r\nContact: <sip:a@b>\r\n") == 200
    for bad in (b"", b"hello", b"SIP/2.0 2OO OK", b"SIP/2.0 99 Low", b"SIP/2.0 \xd9\xa1\xd9\xa2x"):
        with pytest.raises(SipParseError):
            parse_sipfrag(bad)


def test_refer_refusal_is_failed() -> None:
    assert outcome_of_refer_response(202, "Accepted") is None
    refused = outcome_of_refer_response(403, "Forbidden")
    assert refused is not None and (refused.outcome, refused.status) == ("failed", 403)
    assert "403 Forbidden" in refused.detail
    unanswered = outcome_of_refer_response(None)
    assert unanswered is not None and unanswered.outcome == "failed"


def test_watch_follows_provisionals_to_the_final_status() -> None:
    watch = ReferWatch()
    assert watch.notify(notify_headers(), b"SIP/2.0 100 Trying\r\n") == 200
    assert watch.settled is None and watch.last_status == 100
    assert watch.notify(notify_headers("terminated;reason=noresource"), b"SIP/2.0 486 Busy") == 200
    assert watch.settled is not None
    assert (watch.settled.outcome, watch.settled.status) == ("agent_busy", 486)
    assert watch.notify(notify_headers(), b"SIP/2.0 200 OK") == 200  # late: changes nothing
    assert watch.settled.outcome == "agent_busy"


def test_watch_ends_failed_on_bad_body_or_early_termination() -> None:
    bad = ReferWatch()
    assert bad.notify(notify_headers(), b"garbage") == 400
    assert bad.settled is not None and bad.settled.outcome == "failed"
    wrong_type = ReferWatch()
    text = Headers([("Event", "refer"), ("Content-Type", "text/plain")])
    assert wrong_type.notify(text, b"SIP/2.0 200 OK") == 400
    ended = ReferWatch()
    ended.notify(notify_headers(), b"SIP/2.0 180 Ringing")
    assert ended.notify(notify_headers("terminated;reason=timeout"), b"") == 200
    assert ended.settled is not None and ended.settled.outcome == "failed"
    assert "timeout" in ended.settled.detail and ended.settled.status == 180
    with pytest.raises(BadNotify):
        ReferWatch().notify(notify_headers(event="presence"), b"")


# ───────────────────────── the leg ─────────────────────────


async def notify(callee: Callee, frag: bytes, state: str = "active;expires=60") -> int:
    request = callee.request(
        "NOTIFY",
        headers=[("Event", "refer"), ("Subscription-State", state),
                 ("Content-Type", "message/sipfrag")],
        body=frag,
    )  # fmt: skip
    return (await callee.ask(request)).status


async def test_refer_then_notify_200_is_transferred_and_we_leave(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            results: list[TransferResult] = []

            async def run() -> None:
                results.append(await callee.leg.transfer("1002"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                refer = await callee.answer_next(202)
                assert refer.method == "REFER"
                refer_to = refer.headers.get("Refer-To") or ""
                assert refer_to == f"<sip:1002@{callee.peer.address()}>"  # the dialled domain
                assert callee.invite.from_.uri.user in (refer.headers.get("Referred-By") or "")
                assert await notify(callee, b"SIP/2.0 100 Trying\r\n") == 200
                assert (
                    await notify(callee, b"SIP/2.0 200 OK\r\n", "terminated;reason=noresource")
                    == 200
                )
                bye = await callee.answer_next()  # the far end stays: we BYE after the grace
                assert bye.method == "BYE"
            (result,) = results
            assert (result.mode, result.outcome, result.status) == ("refer", "transferred", 200)
            assert result.target == "1002" and result.started_at and result.ended_at
            assert callee.leg.ended.is_set()


async def test_far_end_leaving_after_success_needs_no_bye_from_us(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            results: list[TransferResult] = []

            async def run() -> None:
                results.append(await callee.leg.transfer("sip:agent@192.0.2.7"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                refer = await callee.answer_next(202)
                assert refer.headers.get("Refer-To") == "<sip:agent@192.0.2.7>"
                await notify(callee, b"SIP/2.0 200 OK\r\n", "terminated")
                assert (await callee.ask(callee.request("BYE"))).status == 200
            assert results[0].outcome == "transferred"
            assert callee.leg.ended_by == "callee"


@pytest.mark.parametrize(
    ("frag", "outcome", "status"),
    [(b"SIP/2.0 486 Busy Here", "agent_busy", 486), (b"SIP/2.0 480 Temporarily Unavailable",
     "no_answer", 480), (b"not a sipfrag", "failed", None)],
)  # fmt: skip
async def test_unsuccessful_transfer_keeps_the_call(
    tmp_path: Path, frag: bytes, outcome: str, status: int | None
) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            results: list[TransferResult] = []

            async def run() -> None:
                results.append(await callee.leg.transfer("1002"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await callee.answer_next(202)
                await notify(callee, b"SIP/2.0 180 Ringing")
                await notify(callee, frag, "terminated")
            assert (results[0].outcome, results[0].status) == (outcome, status)
            assert not callee.leg.ended.is_set() and await callee.media_arrives()


async def test_refused_refer_is_failed_and_the_call_stays(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(callee.answer_next, 403)
                result = await callee.leg.transfer("1002")
            assert (result.outcome, result.status) == ("failed", 403)
            assert "REFER refused: 403" in result.detail
            assert not callee.leg.ended.is_set()
            late = await notify(callee, b"SIP/2.0 200 OK")
            assert late == 200  # a NOTIFY after the outcome is still answered


async def test_no_notify_is_failed_after_32_s(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with answered_call(tmp_path, session_expires=0) as callee:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(callee.answer_next, 202)
                started = trio.current_time()
                result = await callee.leg.transfer("1002")
            assert result.outcome == "failed" and "no NOTIFY within 32 s" in result.detail
            assert trio.current_time() - started == pytest.approx(32, abs=1)
            assert not callee.leg.ended.is_set()


async def test_bad_targets_and_notify_without_refer(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            assert await notify(callee, b"SIP/2.0 200 OK") == 481  # we sent no REFER
            result = await callee.leg.transfer("not a number")
            assert result.outcome == "failed" and "bad target" in result.detail
            async with trio.open_nursery() as nursery:
                nursery.start_soon(callee.answer_next, 403)
                await callee.leg.transfer("1002")
            presence = callee.request("NOTIFY", headers=[("Event", "presence")])
            assert (await callee.ask(presence)).status == 489  # not our subscription's event
