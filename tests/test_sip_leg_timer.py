"""RFC 4028 session timers: the sans-IO rules (``waihu_sip.session_timer``), then the leg
running them on trio's clock.

The leg tests use ``MockClock(autojump_threshold=0)`` (the ``autojump_clock`` fixture), so a
1800 s session passes in no time; the far end is a ``UdpPeer`` scripted by hand over real
sockets on 127.0.0.1 (``sip_leg_peer``). The sipp tests in test_sip_leg_sipp.py run short
intervals in real time against a real peer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from waihu_sip.config import SipTrunkConfig
from waihu_sip.message import Headers
from waihu_sip.session_timer import (
    Accept,
    Agreement,
    Reject,
    SessionTimer,
    SessionTimerError,
    answer_request,
    from_answer,
    invite_headers,
    parse_min_se,
    parse_session_expires,
)

from sip_leg_peer import answered_call, sdp

TIME_LIMIT = 30  # seconds of real time per test
VIRTUAL_LIMIT = 7200  # seconds of MockClock time: two hours of call


def headers(*fields: tuple[str, str]) -> Headers:
    return Headers(list(fields))


# ───────────────────────── the rules ─────────────────────────


def test_invite_headers_ask_for_a_timer_unless_off() -> None:
    assert invite_headers(1800, 90) == [
        ("Supported", "timer"),
        ("Session-Expires", "1800"),
        ("Min-SE", "90"),
    ]
    assert invite_headers(60, 90)[1] == ("Session-Expires", "90")  # never below our own Min-SE
    assert invite_headers(0, 90) == []


@pytest.mark.parametrize(
    ("value", "interval", "refresher"),
    [("1800", 1800, None), ("90;refresher=uac", 90, "uac"), (" 600 ; Refresher=UAS", 600, "uas")],
)
def test_session_expires_parses(value: str, interval: int, refresher: str | None) -> None:
    parsed = parse_session_expires(value)
    assert (parsed.interval, parsed.refresher) == (interval, refresher)


@pytest.mark.parametrize("value", ["", "abc", "0", "1800;refresher=proxy", "²", "١٢", "-5"])
def test_bad_session_expires_is_refused_by_name(value: str) -> None:
    with pytest.raises(SessionTimerError, match="Session-Expires"):
        parse_session_expires(value)


def test_min_se_ignores_parameters() -> None:
    assert parse_min_se("120;x=1") == 120
    with pytest.raises(SessionTimerError, match="Min-SE"):
        parse_min_se("ninety")


@pytest.mark.parametrize(("refresher", "we_refresh"), [("uac", True), ("uas", False), (None, True)])
def test_the_2xx_to_our_request_says_who_refreshes(refresher: str | None, we_refresh: bool) -> None:
    value = "900" + (f";refresher={refresher}" if refresher else "")
    assert from_answer(headers(("Session-Expires", value))) == Agreement(900, we_refresh)
    assert from_answer(headers()) is None  # no Session-Expires: no timer


def test_far_end_request_interval_too_small_gets_422_when_it_supports_timers() -> None:
    request = headers(("Supported", "100rel, timer"), ("Session-Expires", "60"))
    assert answer_request(request, min_se=90) == Reject(90)
    # without Supported: timer it could not act on 422: the interval is raised instead
    plain = answer_request(headers(("Session-Expires", "60")), min_se=90)
    assert isinstance(plain, Accept) and plain.agreement == Agreement(90, we_refresh=True)
    assert plain.headers == [("Session-Expires", "90;refresher=uas")]


def test_far_end_request_refresher_is_kept_or_chosen() -> None:
    theirs = answer_request(
        headers(("Session-Expires", "600;refresher=uac"), ("Supported", "timer")), min_se=90
    )
    assert isinstance(theirs, Accept)
    assert theirs.agreement == Agreement(600, we_refresh=False)
    assert ("Require", "timer") in theirs.headers
    ours = answer_request(headers(("Session-Expires", "600;refresher=uas")), min_se=90)
    assert isinstance(ours, Accept) and ours.agreement == Agreement(600, we_refresh=True)
    chosen = answer_request(headers(("Session-Expires", "600"), ("Supported", "timer")), min_se=90)
    assert isinstance(chosen, Accept) and chosen.agreement == Agreement(600, we_refresh=False)
    none = answer_request(headers(), min_se=90)
    assert isinstance(none, Accept) and none.agreement is None and none.headers == []
    off = answer_request(headers(("Session-Expires", "600")), min_se=90, enabled=False)
    assert isinstance(off, Accept) and off.agreement is None


def test_refresher_acts_at_half_the_interval() -> None:
    timer = SessionTimer(Agreement(1800, we_refresh=True), started_at=100.0)
    assert timer.deadline == 1000.0
    assert timer.due(999.9) is None
    assert timer.due(1000.0) == "refresh"
    timer.refreshed(Agreement(600, we_refresh=True), now=1000.5)
    assert timer.deadline == 1300.5


def test_non_refresher_gives_up_before_expiry() -> None:
    long = SessionTimer(Agreement(1800, we_refresh=False), started_at=0.0)
    assert long.deadline == 1800 - 32  # min(32, 1800/3)
    assert long.due(1767.9) is None and long.due(1768.0) == "bye"
    short = SessionTimer(Agreement(90, we_refresh=False), started_at=0.0)
    assert short.deadline == 60.0  # min(32, 90/3) = 30


def test_a_refused_refresh_leaves_only_the_bye() -> None:
    timer = SessionTimer(Agreement(90, we_refresh=True), started_at=0.0)
    timer.refresh_failed()
    assert timer.deadline == 60.0 and timer.due(60.0) == "bye"


def test_config_keys_have_the_rfc_defaults_and_are_checked() -> None:
    cfg = SipTrunkConfig(proxy="127.0.0.1")
    assert (cfg.session_expires, cfg.min_se) == (1800, 90)
    assert SipTrunkConfig(proxy="127.0.0.1", session_expires=0).session_expires == 0
    with pytest.raises(ValueError, match="session_expires: must be 0"):
        SipTrunkConfig(proxy="127.0.0.1", session_expires=-1)
    with pytest.raises(ValueError, match="min_se: must be"):
        SipTrunkConfig(proxy="127.0.0.1", min_se=0)


# ───────────────────────── the leg on a mock clock ─────────────────────────


async def test_as_refresher_we_update_at_half_the_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    answer = [("Session-Expires", "1800;refresher=uac"), ("Allow", "INVITE, ACK, BYE, UPDATE")]
    with trio.fail_after(VIRTUAL_LIMIT):
        async with answered_call(tmp_path, answer_headers=answer) as callee:
            start = trio.current_time()
            for n in (1, 2):
                update = await callee.answer_next(
                    headers=[("Session-Expires", "1800;refresher=uac"), ("Require", "timer")]
                )
                assert update.method == "UPDATE" and not update.body
                assert update.headers.get("Session-Expires") == "1800;refresher=uac"
                assert trio.current_time() - start == pytest.approx(900 * n, abs=1)
            assert not callee.leg.ended.is_set()


async def test_as_refresher_without_update_we_reinvite_with_the_same_sdp(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    answer = [("Session-Expires", "120;refresher=uac")]
    with trio.fail_after(VIRTUAL_LIMIT):
        async with answered_call(tmp_path, answer_headers=answer) as callee:
            first = await callee.answer_next(
                headers=[("Session-Expires", "120;refresher=uac")], body=sdp(callee.rtp_port)
            )
            second = await callee.answer_next(
                headers=[("Session-Expires", "120;refresher=uac")], body=sdp(callee.rtp_port)
            )
            assert first.method == second.method == "INVITE"
            assert first.body == second.body  # the same o= version: nothing changed
            assert await callee.media_arrives()


async def test_refresh_answered_481_ends_the_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    answer = [("Session-Expires", "120;refresher=uac"), ("Allow", "UPDATE")]
    with trio.fail_after(VIRTUAL_LIMIT):
        async with answered_call(tmp_path, answer_headers=answer) as callee:
            await callee.answer_next(481)
            refused_at = trio.current_time()
            bye = await callee.answer_next()
            assert bye.method == "BYE"
            assert trio.current_time() - refused_at < 1  # at once, not at the session's expiry
            assert callee.leg.ended.is_set() and callee.leg.ended_by == "robot"


async def test_422_to_our_refresh_raises_min_se_and_retries(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    answer = [("Session-Expires", "100;refresher=uac"), ("Allow", "UPDATE")]
    with trio.fail_after(VIRTUAL_LIMIT):
        async with answered_call(tmp_path, answer_headers=answer) as callee:
            await callee.answer_next(422, headers=[("Min-SE", "300")])
            retry = await callee.answer_next(headers=[("Session-Expires", "300;refresher=uac")])
            assert retry.headers.get("Session-Expires") == "300;refresher=uac"
            assert retry.headers.get("Min-SE") == "300"


async def test_when_they_refresh_and_stop_we_bye_before_expiry(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    answer = [("Session-Expires", "1800;refresher=uas"), ("Require", "timer")]
    with trio.fail_after(VIRTUAL_LIMIT):
        async with answered_call(tmp_path, answer_headers=answer) as callee:
            await trio.sleep(900)
            refresh = callee.request("UPDATE", headers=[("Session-Expires", "1800;refresher=uac")])
            ok = await callee.ask(refresh)
            assert ok.status == 200
            assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
            refreshed_at = trio.current_time()
            bye = await callee.answer_next()
            assert bye.method == "BYE"
            assert trio.current_time() - refreshed_at == pytest.approx(1800 - 32, abs=1)
            assert callee.leg.ended_by == "robot"


async def test_their_too_short_interval_gets_422_with_our_min_se(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        async with answered_call(tmp_path, min_se=120) as callee:
            short = callee.request(
                "UPDATE", headers=[("Session-Expires", "60"), ("Supported", "timer")]
            )
            refused = await callee.ask(short)
            assert refused.status == 422 and refused.headers.get("Min-SE") == "120"
            bad = callee.request("UPDATE", headers=[("Session-Expires", "soon")])
            assert (await callee.ask(bad)).status == 400
            assert not callee.leg.ended.is_set()


async def test_no_timer_when_turned_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    answer = [("Session-Expires", "120;refresher=uas")]
    with trio.fail_after(VIRTUAL_LIMIT):
        async with answered_call(tmp_path, answer_headers=answer, session_expires=0) as callee:
            await trio.sleep(600)  # five intervals with no refresh
            assert not callee.leg.ended.is_set()
            ok = await callee.ask(callee.request("UPDATE", headers=[("Session-Expires", "120")]))
            assert ok.status == 200 and ok.headers.get("Session-Expires") is None


async def test_a_timer_agreed_on_an_answered_invite_runs_on_the_leg(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """For inbound calls: the INVITE server agrees the timer (answer_request) and hands it
    to the leg; here the far end refreshes, so a missing refresh ends the call."""
    with trio.fail_after(VIRTUAL_LIMIT):
        async with answered_call(tmp_path) as callee:
            agreed = answer_request(
                headers(("Session-Expires", "120;refresher=uac"), ("Supported", "timer")), min_se=90
            )
            assert isinstance(agreed, Accept)
            start = trio.current_time()
            callee.leg.agree_session_timer(agreed.agreement)
            bye = await callee.answer_next()
            assert bye.method == "BYE"
            assert trio.current_time() - start == pytest.approx(120 - 32, abs=1)
