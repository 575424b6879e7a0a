"""DTMF over SIP INFO: the body formats (``waihu_sip.info_dtmf``), and the leg receiving and
sending digits.

The leg tests' far end is a ``UdpPeer`` scripted by hand over real sockets on 127.0.0.1
(``sip_leg_peer``): it sends odd bodies and refuses INFO on purpose. test_sip_leg_sipp.py
plays INFO both ways against sipp.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from waihu.api import TrunkError, leg_dtmf
from waihu_sip.info_dtmf import BadDtmfBody, UnsupportedInfo, read_digits, relay_body

from sip_leg_peer import answered_call

TIME_LIMIT = 30  # seconds per test; generous, the machine is shared
RELAY = "application/dtmf-relay"


@pytest.mark.parametrize(
    ("content_type", "body", "digits"),
    [
        (RELAY, b"Signal=5\r\nDuration=160\r\n", "5"),
        ("Application/DTMF-Relay; charset=x", b"signal= #\nduration=100", "#"),
        (RELAY, b"Signal=10\r\nDuration=160\r\n", "*"),
        (RELAY, b"Signal=11\r\n", "#"),
        (RELAY, b"Duration=160\r\nSignal=d\r\n", "D"),
        ("application/dtmf", b"7", "7"),
        ("application/dtmf", b"11\r\n", "#"),
        (None, b"", ""),  # an empty INFO (a keep-alive) carries no digit
        (RELAY, b"  \r\n", ""),
    ],
)
def test_info_bodies_are_read(content_type: str | None, body: bytes, digits: str) -> None:
    assert read_digits(content_type, body) == digits


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("application/media_control+xml", b"<x/>", UnsupportedInfo),
        (None, b"Signal=5", UnsupportedInfo),
        (RELAY, b"Duration=160", BadDtmfBody),
        (RELAY, b"Signal=E", BadDtmfBody),
        (RELAY, b"Signal=16", BadDtmfBody),
        ("application/dtmf", b"55", BadDtmfBody),
        ("application/dtmf", "５".encode(), BadDtmfBody),  # a full-width digit is no key
    ],
)
def test_bad_info_bodies_are_refused(
    content_type: str | None, body: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        read_digits(content_type, body)


def test_relay_body_is_what_pbxs_send() -> None:
    assert relay_body("5") == b"Signal=5\r\nDuration=160\r\n"
    assert relay_body("a", 250) == b"Signal=A\r\nDuration=250\r\n"
    with pytest.raises(ValueError, match="DTMF digit"):
        relay_body("x")
    with pytest.raises(ValueError, match="duration"):
        relay_body("1", 0)


async def test_info_digits_reach_receive_dtmf_in_order(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            receive = leg_dtmf(callee.leg)
            assert receive is not None
            for content_type, body in (
                (RELAY, b"Signal=5\r\nDuration=160\r\n"),
                ("application/dtmf", b"#"),
            ):
                info = callee.request("INFO", headers=[("Content-Type", content_type)], body=body)
                assert (await callee.ask(info)).status == 200
            assert [await receive(), await receive()] == ["5", "#"]


async def test_unknown_and_bad_info_bodies_are_answered_and_queue_nothing(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            xml = callee.request(
                "INFO", headers=[("Content-Type", "application/media_control+xml")], body=b"<x/>"
            )
            refused = await callee.ask(xml)
            assert refused.status == 415
            assert RELAY in (refused.headers.get("Accept") or "")
            bad = callee.request("INFO", headers=[("Content-Type", RELAY)], body=b"Signal=Z")
            assert (await callee.ask(bad)).status == 400
            empty = callee.request("INFO")
            assert (await callee.ask(empty)).status == 200
            with trio.move_on_after(0.2):
                digit = await callee.leg.receive_dtmf()
                pytest.fail(f"nothing should be queued, got {digit!r}")
            assert not callee.leg.ended.is_set()


async def test_send_dtmf_sends_one_info_per_digit(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            got: list[bytes] = []

            async def far_end() -> None:
                for _ in range(3):
                    info = await callee.answer_next()
                    assert info.method == "INFO"
                    assert info.headers.get("Content-Type") == RELAY
                    assert info.to.tag == "callee1"
                    got.append(info.body)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(far_end)
                await callee.leg.send_dtmf("1*9")
            assert got == [relay_body("1"), relay_body("*"), relay_body("9")]


async def test_send_dtmf_refused_or_bad_is_an_error(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            with pytest.raises(ValueError, match="DTMF digits"):
                await callee.leg.send_dtmf("12x")  # checked before anything is sent
            async with trio.open_nursery() as nursery:
                nursery.start_soon(callee.answer_next, 405)
                with pytest.raises(TrunkError, match="refused DTMF INFO: 405"):
                    await callee.leg.send_dtmf("1")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(callee.answer_next)  # our BYE
                await callee.leg.hangup()
            with pytest.raises(TrunkError, match="has ended"):
                await callee.leg.send_dtmf("2")
