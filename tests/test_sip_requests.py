"""The trunk answering what the far end sends, and a call's routing and media rules.

The far end here is ``UdpPeer``, a plain UDP socket the test scripts message by
message: these tests send malformed datagrams, repeat requests on purpose,
withhold answers and check exact bytes, none of which sipp can do on demand.
Everything runs over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path

import pytest
import trio

from waihu.testing.sipp import UdpPeer
from waihu_sip.digest import parse_auth_params
from waihu_sip.leg import SipCallLeg
from waihu_sip.message import Headers, SipRequest, SipResponse, make_response
from waihu_sip.trunk import SipTrunk

from sip_harness import LOGGER, dialling, trunk_and_peer

TIME_LIMIT = 30  # seconds per test; generous, the machine is shared
Address = tuple[str, int]


def trunk_addr(trunk: SipTrunk) -> Address:
    assert trunk.local_address is not None
    return trunk.local_address


def request(
    method: str,
    peer: UdpPeer,
    *,
    branch: str = "z9hG4bKpeer1",
    call_id: str = "peer-call-1",
    from_tag: str = "p1",
    to_tag: str | None = None,
    cseq: int = 1,
    body: bytes = b"",
) -> SipRequest:
    """A request from the peer to the trunk."""
    to = "<sip:waihu@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {peer.address()};branch={branch}"),
            ("From", f"<sip:callee@{peer.address()}>;tag={from_tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
        ]
    )
    return SipRequest(headers=headers, body=body, method=method, uri="sip:waihu@127.0.0.1")


async def no_message(peer: UdpPeer, seconds: float = 0.3) -> bool:
    """True when nothing arrives at the peer for ``seconds``."""
    with trio.move_on_after(seconds):
        await peer.receive()
        return False
    return True


# ───────────────────────── out-of-dialog requests ─────────────────────────


async def test_options_gets_200_with_allow(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            await peer.send(request("OPTIONS", peer), trunk_addr(trunk))
            response = await peer.receive_response()
            assert response.status == 200
            assert "INVITE" in (response.headers.get("Allow") or "")
            assert response.to.tag is not None
            assert response.headers.get("Server") == "waihu"


@pytest.mark.parametrize(
    ("method", "to_tag", "status"),
    [
        ("BYE", "nosuchtag", 481),
        ("BYE", None, 481),
        ("CANCEL", None, 481),
        ("INVITE", None, 480),
        ("INFO", None, 481),  # INFO is in-dialog only: no dialog, no call
        ("SUBSCRIBE", "x", 501),
    ],
)
async def test_requests_we_cannot_take(
    tmp_path: Path, method: str, to_tag: str | None, status: int
) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            await peer.send(request(method, peer, to_tag=to_tag), trunk_addr(trunk))
            response = await peer.receive_response()
            assert response.status == status
            assert response.cseq.method == method


async def test_retransmitted_request_gets_the_same_answer_and_ack_is_silent(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            invite = request("INVITE", peer)
            await peer.send(invite, trunk_addr(trunk))
            first = await peer.receive_response()
            await peer.send(invite, trunk_addr(trunk))  # the peer did not hear us: again
            second = await peer.receive_response()
            assert first.to_bytes() == second.to_bytes()  # same To tag: one transaction
            ack = request("ACK", peer, to_tag=first.to.tag)
            ack.headers.set("CSeq", "1 ACK")
            await peer.send(ack, trunk_addr(trunk))
            assert await no_message(peer)


async def test_malformed_datagrams_are_logged_and_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            peer_address = peer.address()
            garbage = [
                b"\x00\x01 not sip at all\r\n\r\n",
                b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n",  # no Via/From/To
                request("OPTIONS", peer).to_bytes().replace(b"CSeq: 1 OPTIONS", b"CSeq: x"),
                b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n",
            ]
            for data in garbage:
                await peer.send(data, trunk_addr(trunk))
            await peer.send(b"\r\n\r\n", trunk_addr(trunk))  # a keep-alive: silently ignored
            assert await no_message(peer)  # none can be answered: no Via, or a bad CSeq
            broken = request("OPTIONS", peer, branch="z9hG4bKbroken").to_bytes()
            broken = broken.replace(b"Max-Forwards: 70", b"Max-Forwards: seventy")
            await peer.send(broken, trunk_addr(trunk))
            answer = await peer.receive_response()  # addressable: 400 saying why
            assert answer.status == 400 and "Max-Forwards" in (answer.headers.get("Warning") or "")
            await peer.send(request("OPTIONS", peer, branch="z9hG4bKlater"), trunk_addr(trunk))
            assert (await peer.receive_response()).status == 200  # still serving
    warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 5
    assert all(f"from {peer_address}:" in w for w in warnings)
    assert any("missing Via" in w for w in warnings)
    assert any("bad CSeq" in w for w in warnings)


# ───────────────────────── a call with a scripted far end ─────────────────────────


def answer_sdp(port: int, host: str = "127.0.0.1") -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    ).encode()


async def answer_call(
    trunk: SipTrunk,
    peer: UdpPeer,
    *,
    media_port: int,
    record_route: str | None = None,
    contact: str | None = None,
) -> tuple[SipCallLeg, SipRequest, SipResponse, SipRequest]:
    """Dial through the peer and answer; returns the leg, INVITE, our 200 and the ACK.

    When ``record_route`` is given, the ACK is read by the caller (it goes elsewhere)
    and the returned ACK slot holds the INVITE again.
    """
    async with dialling(trunk) as outcome:
        invite, source, _ = await peer.receive_request()
        extra = [
            ("Contact", contact or f"<sip:callee@{peer.address()}>"),
            ("Content-Type", "application/sdp"),
        ]
        if record_route:
            extra.insert(0, ("Record-Route", record_route))
        ok = make_response(invite, 200, to_tag="callee1", extra=extra, body=answer_sdp(media_port))
        await peer.send(ok, source)
        ack = invite
        if record_route is None:
            ack, _, _ = await peer.receive_request()
    assert outcome.leg is not None, outcome.failure
    return outcome.leg, invite, ok, ack


def callee_request(
    method: str,
    peer: UdpPeer,
    invite: SipRequest,
    *,
    branch: str,
    cseq: int,
    from_tag: str = "callee1",
) -> SipRequest:
    """An in-dialog request from the callee: From/To swapped, our tag in To."""
    our_tag = invite.from_.tag
    assert our_tag is not None
    return request(
        method, peer, branch=branch, call_id=invite.call_id, from_tag=from_tag, to_tag=our_tag,
        cseq=cseq,
    )  # fmt: skip


async def test_callee_bye_is_answered_once_and_its_repeat_identically(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            leg, invite, _, ack = await answer_call(trunk, peer, media_port=40000)
            assert ack.method == "ACK" and str(ack.cseq) == "1 ACK"
            bye = callee_request("BYE", peer, invite, branch="z9hG4bKbye1", cseq=7)
            await peer.send(bye, trunk_addr(trunk))
            first = await peer.receive_response()
            assert first.status == 200
            await leg.ended.wait()
            assert leg.ended_by == "callee"
            await peer.send(bye, trunk_addr(trunk))  # our 200 was lost: the peer repeats
            again = await peer.receive_response()
            assert again.to_bytes() == first.to_bytes()
            other = callee_request("BYE", peer, invite, branch="z9hG4bKbye2", cseq=8)
            await peer.send(other, trunk_addr(trunk))  # a new BYE for the ended call
            assert (await peer.receive_response()).status == 481


async def test_requests_with_a_wrong_tag_do_not_touch_the_call(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            leg, invite, _, _ = await answer_call(trunk, peer, media_port=40000)
            bye = callee_request("BYE", peer, invite, branch="z9hG4bKx", cseq=2, from_tag="other")
            await peer.send(bye, trunk_addr(trunk))
            assert (await peer.receive_response()).status == 481
            options = callee_request("OPTIONS", peer, invite, branch="z9hG4bKo", cseq=3)
            await peer.send(options, trunk_addr(trunk))
            assert (await peer.receive_response()).status == 200
            assert not leg.ended.is_set()
            stale = callee_request("OPTIONS", peer, invite, branch="z9hG4bKs", cseq=3)
            await peer.send(stale, trunk_addr(trunk))  # same CSeq, new transaction
            assert (await peer.receive_response()).status == 500


async def test_retransmitted_2xx_is_acked_again(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            _, _, ok, ack = await answer_call(trunk, peer, media_port=40000)
            await peer.send(ok, trunk_addr(trunk))  # as if our ACK was lost
            again, _, _ = await peer.receive_request()
            assert again.to_bytes() == ack.to_bytes()


async def test_bye_is_retransmitted_until_answered(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            leg, _, _, _ = await answer_call(trunk, peer, media_port=40000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(leg.hangup)
                first, _, t0 = await peer.receive_request()
                second, source, t1 = await peer.receive_request()
                assert first.method == second.method == "BYE"
                assert first.to_bytes() == second.to_bytes()
                assert 0.4 < t1 - t0 < 1.0  # Timer E starts at T1
                assert leg.ended.is_set() and leg.ended_by == "robot"
                await peer.send(make_response(second, 200), source)
            assert leg.ended_by == "robot"


async def test_ack_and_bye_follow_record_route(tmp_path: Path) -> None:
    """A second raw socket plays the proxy that record-routed the call."""
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            proxy = UdpPeer()
            route = f"<sip:{await proxy.bind()};lr>"
            try:
                leg, _, _, _ = await answer_call(trunk, peer, media_port=40000, record_route=route)
                ack, _, _ = await proxy.receive_request()
                assert ack.method == "ACK"
                assert ack.uri == f"sip:callee@{peer.address()}"  # the Contact, not the To
                assert ack.headers.get_all("Route") == [route]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(leg.hangup)
                    bye, source, _ = await proxy.receive_request()
                    await proxy.send(make_response(bye, 200), source)
                assert bye.headers.get_all("Route") == [route]
                assert bye.uri == ack.uri
            finally:
                proxy.close()


async def test_media_only_from_the_far_end_host_and_latches_to_its_port(tmp_path: Path) -> None:
    """Media peers are plain sockets on 127.0.0.1 and 127.0.0.2 (both loopback on Linux)."""
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            sdp_port = 40000  # where the SDP says media comes from; nothing listens there
            leg, _, _, _ = await answer_call(trunk, peer, media_port=sdp_port)
            assert leg.remote_rtp == ("127.0.0.1", sdp_port)
            local = leg.local_rtp
            stranger = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            callee = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with stranger, callee:
                await stranger.bind(("127.0.0.2", 0))
                await callee.bind(("127.0.0.1", 0))
                # real RTP headers: the latch moves only for a steady stream (two packets of
                # one SSRC in sequence: the first waits on probation), see test_sip_security_rtp
                rtp = b"\x80\x00\x00\x01" + bytes(4) + b"\x00\x00\x00\x07"
                await stranger.sendto(rtp + b"intruder", local)
                await callee.sendto(rtp + b"callee 1", local)
                await callee.sendto(rtp[:3] + b"\x02" + rtp[4:] + b"callee 2", local)
                assert await leg.receive_media() == rtp[:3] + b"\x02" + rtp[4:] + b"callee 2"
                assert leg.remote_rtp == callee.getsockname()  # latched
                leg.send_media(b"\x80\x00robot")
                data, _ = await callee.recvfrom(100)
                assert data == b"\x80\x00robot"


async def test_reinvite_answer_is_retransmitted_until_acked(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            leg, invite, _, _ = await answer_call(trunk, peer, media_port=40000)
            reinvite = callee_request("INVITE", peer, invite, branch="z9hG4bKre", cseq=2)
            reinvite.headers.add("Content-Type", "application/sdp")
            reinvite.body = answer_sdp(40010).replace(b"RTP/AVP 0 101", b"RTP/AVP 8 0")
            reinvite.body += b"a=sendonly\r\n"
            await peer.send(reinvite, trunk_addr(trunk))
            ok = await peer.receive_response()
            assert ok.status == 200 and ok.headers.get("Contact")
            assert b"m=audio " + str(leg.local_rtp[1]).encode() + b" RTP/AVP 0\r\n" in ok.body
            assert b"a=recvonly" in ok.body and b"telephone-event" not in ok.body
            assert leg.remote_rtp == ("127.0.0.1", 40010)
            assert leg.codec.name == "PCMU"  # the call's codec never changes
            with trio.fail_after(1.0):
                again = await peer.receive_response()  # no ACK yet: the 200 comes again
            assert again.to_bytes() == ok.to_bytes()
            ack = callee_request("ACK", peer, invite, branch="z9hG4bKreack", cseq=2)
            await peer.send(ack, trunk_addr(trunk))
            assert await no_message(peer, 1.2)  # ACKed: no more 200s


async def test_session_updates_we_cannot_accept(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            leg, invite, _, _ = await answer_call(trunk, peer, media_port=40000)
            g729 = callee_request("INVITE", peer, invite, branch="z9hG4bKg729", cseq=2)
            g729.body = answer_sdp(40020).replace(b"RTP/AVP 0 101", b"RTP/AVP 18")
            await peer.send(g729, trunk_addr(trunk))
            assert (await peer.receive_response()).status == 488
            assert leg.remote_rtp == ("127.0.0.1", 40000)  # unchanged
            refresh = callee_request("UPDATE", peer, invite, branch="z9hG4bKupd", cseq=3)
            await peer.send(refresh, trunk_addr(trunk))  # a session-timer refresh, no SDP
            assert (await peer.receive_response()).status == 200
            assert not leg.ended.is_set()


async def test_proxy_challenge_is_answered_with_proxy_authorization(tmp_path: Path) -> None:
    """The peer plays a proxy sending 407: sipp can only check Authorization, not
    Proxy-Authorization, so the test checks the digest itself."""
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path, username="bot", password="pw") as (trunk, peer):
            async with dialling(trunk) as outcome:
                first, source, _ = await peer.receive_request()
                challenge = 'Digest realm="proxy.test", nonce="abc123", qop="auth", opaque="op"'
                await peer.send(
                    make_response(
                        first, 407, to_tag="px", extra=[("Proxy-Authenticate", challenge)]
                    ),
                    source,
                )
                ack, _, _ = await peer.receive_request()
                second, source, _ = await peer.receive_request()
                # a second challenge ends the call: one retry only
                await peer.send(
                    make_response(
                        second, 407, to_tag="py", extra=[("Proxy-Authenticate", challenge)]
                    ),
                    source,
                )
                await peer.receive_request()  # its ACK
            assert ack.method == "ACK" and ack.top_via.branch == first.top_via.branch
            assert second.method == "INVITE"
            assert str(second.cseq) == "2 INVITE"
            assert second.top_via.branch != first.top_via.branch
            assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
            assert second.headers.get("Authorization") is None
            value = second.headers.get("Proxy-Authorization") or ""
            params = parse_auth_params(value.removeprefix("Digest "))
            ha1 = md5("bot:proxy.test:pw")
            ha2 = md5(f"INVITE:{second.uri}")
            expected = md5(f"{ha1}:abc123:{params['nc']}:{params['cnonce']}:auth:{ha2}")
            assert params["response"] == expected
            assert (params["username"], params["uri"], params["opaque"]) == (
                "bot",
                second.uri,
                "op",
            )
            assert params["nc"] == "00000001" and params["qop"] == "auth"
            assert outcome.failure is not None and outcome.failure.status == 407


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()
