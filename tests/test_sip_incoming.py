"""The SIP trunk taking inbound calls: sipp on 127.0.0.1 calls one of the trunk's numbers.

sipp runs as the caller (a UAC: ``contrib/sipp/call_in*.xml`` against the trunk's
port); the trunk is built the way the core builds providers, with an
``incoming`` handler that hands each call to the test. Where sipp cannot do what
a test needs (never ACK a 200, repeat an INVITE on purpose), the caller is a plain
UDP socket in the test, and the test's docstring says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import waihu.api
from waihu.api import CallFailed, IncomingCall
from waihu.testing.sipp import SippPeer, UdpPeer, sipp_peer
from waihu_sip.message import Headers, SipRequest, SipResponse, make_response
from waihu_sip.sdp import parse_sdp
from waihu_sip.trunk import SipTrunk

REAL_TIME_LIMIT = 60  # seconds per real-time test; generous, the machine is shared
NUMBER = "4001"  # the trunk's number in these tests
CALLER = "13900001111"  # the caller's user in contrib/sipp/call_in*.xml
LOGGER = "waihu.test.sip.incoming"
UNUSED_PROXY = "127.0.0.1:9"  # the trunk dials nothing here; its proxy is never used


class Inbox:
    """The ``incoming`` handler of the trunk under test: each call goes to the test."""

    def __init__(self) -> None:
        self.send, self.calls = trio.open_memory_channel[IncomingCall](8)
        self.count = 0

    def __call__(self, call: IncomingCall) -> None:
        self.count += 1
        self.send.send_nowait(call)


@asynccontextmanager
async def inbound_trunk(
    tmp_path: Path, inbox: Inbox | None, **config: object
) -> AsyncIterator[SipTrunk]:
    """A started SipTrunk on a free port taking calls for NUMBER (unless ``numbers`` given)."""
    config.setdefault("numbers", [NUMBER])
    cfg = SipTrunk.Config(proxy=UNUSED_PROXY, local_port=0, probe_interval=0, **config)
    context = waihu.api.ProviderContext(
        name="office",
        state_dir=tmp_path,
        log=logging.getLogger(LOGGER),
        cpu_limiter=trio.CapacityLimiter(1),
        incoming=inbox,
    )
    trunk = SipTrunk(cfg, context)
    async with trio.open_nursery() as nursery:
        await nursery.start(trunk.run)
        yield trunk
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def caller(
    scenario: str, tmp_path: Path, trunk: SipTrunk, number: str = NUMBER, **keys: str
) -> AsyncIterator[SippPeer]:
    """sipp calling ``number`` at the trunk with ``scenario`` (one call)."""
    assert trunk.local_address is not None
    host, port = trunk.local_address
    keys.setdefault("formats", "0 8 101")
    async with sipp_peer(
        scenario, tmp_path, keys=keys, extra_args=[f"{host}:{port}", "-s", number]
    ) as peer:
        yield peer


async def test_answered_call_rings_then_talks_and_the_robot_hangs_up(tmp_path: Path) -> None:
    inbox = Inbox()
    with trio.fail_after(REAL_TIME_LIMIT):
        async with inbound_trunk(tmp_path, inbox) as trunk:
            async with caller("call_in.xml", tmp_path, trunk) as peer:
                call = await inbox.calls.receive()
                assert (call.number, call.caller, call.trunk) == (NUMBER, CALLER, "office")
                assert not call.cancelled.is_set()
                leg = await call.answer()
                assert leg.codec.name == "PCMU" and leg.codec.payload_type == 0
                assert leg.dtmf_payload_type == 101  # telephone-event echoed
                assert leg.remote_rtp == ("127.0.0.1", peer.media_port)
                await leg.hangup()
                assert leg.ended_by == "robot"
                result = await peer.wait()
            result.check()  # sipp saw 180, then 200, and our BYE


async def test_the_answer_follows_the_offers_order_among_our_codecs(tmp_path: Path) -> None:
    inbox = Inbox()
    with trio.fail_after(REAL_TIME_LIMIT):
        async with inbound_trunk(tmp_path, inbox) as trunk:
            async with caller("call_in.xml", tmp_path, trunk, formats="18 8 0") as peer:
                call = await inbox.calls.receive()
                leg = await call.answer()
                assert leg.codec.name == "PCMA"  # G.729 is not ours; PCMA came before PCMU
                assert leg.dtmf_payload_type is None  # none offered, none answered
                await leg.hangup()
                (await peer.wait()).check()


async def test_caller_who_cancels_while_ringing_gets_487(tmp_path: Path) -> None:
    inbox = Inbox()
    with trio.fail_after(REAL_TIME_LIMIT):
        async with inbound_trunk(tmp_path, inbox) as trunk:
            async with caller("call_in_cancel.xml", tmp_path, trunk, cancel_after_ms="300") as peer:
                call = await inbox.calls.receive()
                await call.cancelled.wait()
                with pytest.raises(CallFailed) as failure:
                    await call.answer()
                assert failure.value.status == 487
                await call.reject(480)  # too late: nothing more is sent
                result = await peer.wait()
            result.check()  # 200 to the CANCEL, 487 to the INVITE, then sipp's ACK
            await _until_forgotten(trunk)


@pytest.mark.parametrize("status", [486, 603])
async def test_rejected_call_gets_the_status_and_its_ack_is_absorbed(
    tmp_path: Path, status: int
) -> None:
    inbox = Inbox()
    with trio.fail_after(REAL_TIME_LIMIT):
        async with inbound_trunk(tmp_path, inbox) as trunk:
            async with caller("call_in_refused.xml", tmp_path, trunk, status=str(status)) as peer:
                call = await inbox.calls.receive()
                await call.reject(status)
                result = await peer.wait()
            result.check()
            await _until_forgotten(trunk)  # the ACK ended the transaction before Timer H


async def test_a_number_not_the_trunks_gets_404_and_the_core_never_hears(tmp_path: Path) -> None:
    inbox = Inbox()
    with trio.fail_after(REAL_TIME_LIMIT):
        async with inbound_trunk(tmp_path, inbox) as trunk:
            async with caller(
                "call_in_refused.xml", tmp_path, trunk, number="4002", status="404"
            ) as peer:
                result = await peer.wait()
            result.check()
    assert inbox.count == 0


async def test_an_offer_without_our_codecs_gets_488(tmp_path: Path) -> None:
    inbox = Inbox()
    with trio.fail_after(REAL_TIME_LIMIT):
        async with inbound_trunk(tmp_path, inbox, codecs=["PCMU"]) as trunk:
            async with caller(
                "call_in_refused.xml", tmp_path, trunk, formats="18 8 101", status="488"
            ) as peer:
                result = await peer.wait()
            result.check()
    assert inbox.count == 0


@pytest.mark.parametrize("numbers, handler", [([], True), ([NUMBER], False)])
async def test_no_numbers_or_no_core_handler_means_480(
    tmp_path: Path, numbers: list[str], handler: bool
) -> None:
    inbox = Inbox()
    with trio.fail_after(REAL_TIME_LIMIT):
        async with inbound_trunk(tmp_path, inbox if handler else None, numbers=numbers) as trunk:
            async with caller("call_in_refused.xml", tmp_path, trunk, status="480") as peer:
                result = await peer.wait()
            result.check()
    assert inbox.count == 0


async def test_number_matches_without_visual_separators(tmp_path: Path) -> None:
    inbox = Inbox()
    with trio.fail_after(REAL_TIME_LIMIT):
        async with inbound_trunk(tmp_path, inbox, numbers=["400-1"]) as trunk:
            async with caller("call_in_refused.xml", tmp_path, trunk, status="486") as peer:
                call = await inbox.calls.receive()
                assert call.number == "400-1"  # as the config spells it
                await call.reject(486)
                (await peer.wait()).check()


# ───────────── what sipp cannot do: a raw UDP caller ─────────────


def _invite(
    trunk: SipTrunk,
    peer: UdpPeer,
    *,
    branch: str = "z9hG4bK-raw-1",
    user: str = NUMBER,
    with_sdp: bool = True,
) -> SipRequest:
    """An INVITE for NUMBER (in To; in the Request-URI too unless ``user`` says otherwise)."""
    assert trunk.local_address is not None
    host, port = trunk.local_address
    sdp = (
        b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {peer.address()};branch={branch}"),
            ("From", f"<sip:{CALLER}@{peer.address()}>;tag=raw1"),
            ("To", f"<sip:{NUMBER}@{host}:{port}>"),
            ("Call-ID", "raw-call-1"),
            ("CSeq", "7 INVITE"),
            ("Contact", f"<sip:{CALLER}@{peer.address()}>"),
            ("Record-Route", f"<sip:{peer.address()};lr>"),  # a proxy's, here the peer itself
            ("Max-Forwards", "70"),
            ("Content-Type", "application/sdp"),
        ]
    )
    body = sdp if with_sdp else b""
    return SipRequest(headers=headers, body=body, method="INVITE", uri=f"sip:{user}@{host}:{port}")


def _ack(invite: SipRequest, answer: SipResponse, *, branch: str, body: bytes = b"") -> SipRequest:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {invite.top_via.host}:{invite.top_via.port};branch={branch}"),
            ("From", invite.headers.get("From") or ""),
            ("To", answer.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} ACK"),
        ]
    )
    return SipRequest(headers=headers, body=body, method="ACK", uri=invite.uri)


async def test_200_is_resent_until_the_ack_and_a_repeated_invite_rings_again(
    tmp_path: Path,
) -> None:
    """The caller is a raw UDP socket: it repeats its INVITE and holds back its ACK."""
    inbox = Inbox()
    peer = UdpPeer()
    await peer.bind()
    try:
        with trio.fail_after(REAL_TIME_LIMIT):
            async with inbound_trunk(tmp_path, inbox) as trunk:
                assert trunk.local_address is not None
                invite = _invite(trunk, peer)
                await peer.send(invite, trunk.local_address)
                assert (await peer.receive_response()).status == 100
                ringing = await peer.receive_response()
                assert ringing.status == 180 and ringing.to.tag
                await peer.send(invite, trunk.local_address)  # a retransmission while it rings
                again = await peer.receive_response()
                assert again.status == 180 and again.to.tag == ringing.to.tag
                call = await inbox.calls.receive()
                assert inbox.count == 1  # the repeat was no second call
                async with trio.open_nursery() as nursery:
                    legs: list[object] = []

                    async def answer() -> None:
                        legs.append(await call.answer())

                    nursery.start_soon(answer)
                    ok = await peer.receive_response()
                    first_at = trio.current_time()
                    assert ok.status == 200 and ok.to.tag == ringing.to.tag
                    route = f"<sip:{peer.address()};lr>"
                    assert ok.headers.get("Contact")
                    assert ok.headers.get_all("Record-Route") == [route]  # §12.1.1
                    sdp = parse_sdp(ok.body)
                    assert sdp.formats == (0, 101) and sdp.port > 0
                    resent = await peer.receive_response()
                    assert resent.status == 200 and resent.to_bytes() == ok.to_bytes()
                    assert trio.current_time() - first_at >= 0.4  # after T1, not at once
                    await peer.send(_ack(invite, ok, branch="z9hG4bK-raw-ack"), trunk.local_address)
                assert legs  # answer() returned once the ACK came
                with trio.move_on_after(1.5) as quiet:  # > T1·2: a retransmission would be due
                    late = await peer.receive_response()
                    pytest.fail(f"200 resent after the ACK: {late.status}")
                assert quiet.cancelled_caught
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(legs[0].hangup)  # type: ignore[attr-defined]
                    bye, source, _ = await peer.receive_request()
                    assert bye.method == "BYE" and bye.to.tag == "raw1"
                    assert bye.from_.tag == ringing.to.tag
                    assert bye.headers.get_all("Route") == [route]  # the dialog's route set
                    await peer.send(make_response(bye, 200), source)
    finally:
        peer.close()


async def test_a_200_never_acked_fails_408_and_is_hung_up(
    tmp_path: Path, autojump_clock: object
) -> None:
    """The caller is a raw UDP socket that never ACKs; time is virtual."""
    inbox = Inbox()
    peer = UdpPeer()
    await peer.bind()
    try:
        with trio.fail_after(200):
            async with inbound_trunk(tmp_path, inbox) as trunk:
                assert trunk.local_address is not None
                invite = _invite(trunk, peer)
                await peer.send(invite, trunk.local_address)
                call = await inbox.calls.receive()
                seen: list[tuple[str, float]] = []

                async def listen() -> None:
                    while True:
                        message, _, at = await peer.receive()
                        kind = (
                            str(message.status)
                            if isinstance(message, SipResponse)
                            else message.method
                        )
                        seen.append((kind, at))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(listen)
                    start = trio.current_time()
                    with pytest.raises(CallFailed) as failure:
                        await call.answer()
                    assert failure.value.status == 408
                    assert math.isclose(trio.current_time() - start, 32.0, abs_tol=0.1)
                    await trio.sleep(1)
                    nursery.cancel_scope.cancel()
                oks = [round(at - start, 1) for kind, at in seen if kind == "200"]
                assert oks[:5] == [0, 0.5, 1.5, 3.5, 7.5]  # T1 doubling to T2 (§13.3.1.4)
                assert oks[5] - oks[4] == pytest.approx(4.0, abs=0.1)  # capped at T2
                assert "BYE" in [kind for kind, _ in seen]
    finally:
        peer.close()


async def test_the_number_may_come_in_to_when_the_request_uri_names_a_gateway(
    tmp_path: Path,
) -> None:
    """The caller is a raw UDP socket: sipp's scenarios put the number in both places."""
    inbox = Inbox()
    peer = UdpPeer()
    await peer.bind()
    try:
        with trio.fail_after(REAL_TIME_LIMIT):
            async with inbound_trunk(tmp_path, inbox) as trunk:
                assert trunk.local_address is not None
                await peer.send(_invite(trunk, peer, user="gateway"), trunk.local_address)
                call = await inbox.calls.receive()
                assert call.number == NUMBER
                await call.reject(603)
                statuses = [(await peer.receive_response()).status for _ in range(3)]
                assert statuses == [100, 180, 603]
    finally:
        peer.close()


def _sdp_answer(formats: str, port: int) -> bytes:
    return (
        f"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {formats}\r\na=rtpmap:101 telephone-event/8000\r\n"
    ).encode()


@pytest.mark.parametrize("formats, codec", [("8 101", "PCMA"), ("18", None)])
async def test_a_late_offer_gets_ours_in_the_200_and_the_ack_answers_it(
    tmp_path: Path, formats: str, codec: str | None
) -> None:
    """The caller is a raw UDP socket: its INVITE has no SDP and its ACK carries the answer
    (RFC 3261 §13.2.1); none of sipp's scenarios here sends a late offer."""
    inbox = Inbox()
    peer = UdpPeer()
    await peer.bind()
    try:
        with trio.fail_after(REAL_TIME_LIMIT):
            async with inbound_trunk(tmp_path, inbox) as trunk:
                assert trunk.local_address is not None
                invite = _invite(trunk, peer, with_sdp=False)
                await peer.send(invite, trunk.local_address)
                call = await inbox.calls.receive()
                async with trio.open_nursery() as nursery:
                    outcome: list[object] = []

                    async def answer() -> None:
                        try:
                            outcome.append(await call.answer())
                        except CallFailed as exc:
                            outcome.append(exc.status)

                    nursery.start_soon(answer)
                    while (ok := await peer.receive_response()).status != 200:
                        pass
                    offer = parse_sdp(ok.body)
                    assert offer.formats == (0, 8, 101)  # our codecs, then telephone-event
                    body = _sdp_answer(formats, 40002)
                    ack = _ack(invite, ok, branch="z9hG4bK-raw-ack", body=body)
                    await peer.send(ack, trunk.local_address)
                (result,) = outcome
                if codec is None:
                    assert result == 488
                    bye, source, _ = await peer.receive_request()  # hung up at once
                    assert bye.method == "BYE"
                    await peer.send(make_response(bye, 200), source)
                else:
                    assert result.codec.name == codec  # type: ignore[attr-defined]
                    assert result.dtmf_payload_type == 101  # type: ignore[attr-defined]
                    assert result.remote_rtp == ("127.0.0.1", 40002)  # type: ignore[attr-defined]
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(result.hangup)  # type: ignore[attr-defined]
                        bye, source, _ = await peer.receive_request()
                        await peer.send(make_response(bye, 200), source)
    finally:
        peer.close()


async def _until_forgotten(trunk: SipTrunk) -> None:
    """Wait (a little) until the trunk has no inbound transaction left."""
    with trio.fail_after(5):  # well under Timer H (32 s): only an absorbed ACK ends it so soon
        while trunk._incoming:  # the trunk's transaction table is what is tested
            await trio.sleep(0.05)


async def test_the_callers_session_timer_is_agreed_or_refused_422(tmp_path: Path) -> None:
    """RFC 4028 on calls we answer: the caller's Session-Expires comes back in our 200 with a
    refresher; an interval under our min_se (90 s) gets 422 with Min-SE."""
    inbox = Inbox()
    peer = UdpPeer()
    await peer.bind()
    try:
        with trio.fail_after(REAL_TIME_LIMIT):
            async with inbound_trunk(tmp_path, inbox) as trunk:
                assert trunk.local_address is not None
                for n, (interval, status) in enumerate([(60, 422), (600, 200)]):
                    invite = _invite(trunk, peer, branch=f"z9hG4bK-st-{n}")
                    invite.headers.set("Call-ID", f"st-call-{n}")
                    invite.headers.add("Supported", "timer")
                    invite.headers.add("Session-Expires", str(interval))
                    await peer.send(invite, trunk.local_address)
                    call = await inbox.calls.receive()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_answer_quietly, call)
                        final = await peer.receive_response()
                        while final.status < 200:
                            final = await peer.receive_response()
                        assert final.status == status
                        if status == 422:
                            assert final.headers.get("Min-SE") == "90"
                        else:
                            assert (final.headers.get("Session-Expires") or "").startswith("600")
                            assert "refresher=" in (final.headers.get("Session-Expires") or "")
                        # a non-2xx is ACKed on the INVITE's branch (§17.1.1.3), a 2xx on a new one
                        branch = f"z9hG4bK-st-{n}" if status == 422 else f"z9hG4bK-st-ack-{n}"
                        await peer.send(_ack(invite, final, branch=branch), trunk.local_address)
    finally:
        peer.close()


async def _answer_quietly(call: object) -> None:
    try:
        await call.answer()  # type: ignore[attr-defined]
    except Exception:
        pass  # the 422 case: answer() raises, as it says
