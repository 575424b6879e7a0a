"""The SIP trunk placing real calls: sipp on 127.0.0.1 plays the far end.

Each test starts its own sipp on free ports (see waihu/testing/sipp.py) and a trunk
bound to port 0, built the way the core builds providers (see sip_harness.py).
Where sipp cannot do what a test needs (ignore a packet on purpose, stay
silent), the peer is a plain UDP socket in the test, and the test's docstring
says so.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import waihu.api
from waihu.api import CallFailed, CallLeg, TrunkError
from waihu.testing.sipp import Play, SippPeer, free_udp_port, sipp_peer
from waihu_sip.message import make_response
from waihu_sip.plugin import waihu_trunk_types
from waihu_sip.trunk import SipTrunk

from sip_harness import dialling, running_trunk, sip_trunk, trunk_and_peer

REAL_TIME_LIMIT = 60  # seconds per real-time test; generous, the machine is shared
RTP_HEADER = 12
PCMU_FRAME = 160  # bytes of μ-law in one 20 ms packet
AUTH_USER = "robot7"  # the digest user auth.xml is told to expect
PASSWORD = "s3cret pass"


@asynccontextmanager
async def digest_peer(
    tmp_path: Path, *, expects: str, sends: str | None
) -> AsyncIterator[tuple[SippPeer, SipTrunk]]:
    """sipp's auth.xml challenging for AUTH_USER with password ``expects``, and a running trunk
    that dials through it with password ``sends`` (no credentials at all when None)."""
    keys = {"user": AUTH_USER, "password": expects}
    credentials = {} if sends is None else {"username": AUTH_USER, "password": sends}
    async with sipp_peer("auth.xml", tmp_path, keys=keys) as peer:
        async with running_trunk(tmp_path, proxy=peer.hostport, **credentials) as trunk:
            yield peer, trunk


def rtp_packet(seq: int, payload: bytes, payload_type: int = 0) -> bytes:
    """A minimal RTP packet (version 2, no CSRC) for echo tests."""
    header = bytes([0x80, payload_type]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big")
    return header + b"\x00\x00\x12\x34" + payload


def test_plugin_registers_the_trunk() -> None:
    assert waihu_trunk_types() == [SipTrunk]
    assert SipTrunk.type_name == "sip"


async def test_answered_call_robot_hangs_up(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("answer.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                progress: list[tuple[int, str]] = []
                leg = await trunk.dial("1001", on_progress=lambda s, r: progress.append((s, r)))
                assert isinstance(leg, CallLeg)
                assert progress == [(180, "Ringing")]
                assert leg.codec == waihu.api.Codec("PCMU", 0, 8000)
                assert leg.dtmf_payload_type == 101
                assert leg.remote_rtp == ("127.0.0.1", peer.media_port)
                assert not leg.ended.is_set()
                await leg.hangup()
                assert leg.ended.is_set() and leg.ended_by == "robot"
                await leg.hangup()  # idempotent
                result = await peer.wait()
        result.check()
        messages = (peer.workdir / "messages.log").read_text()
        assert "ACK sip:callee@127.0.0.1" in messages  # ACK and BYE go to the Contact
        assert "BYE sip:callee@127.0.0.1" in messages


async def test_rtp_flows_both_ways_through_sipp_echo(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("answer.xml", tmp_path, rtp_echo=True) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial(peer.uri("echo"))
                sent = [rtp_packet(i, bytes([i]) * PCMU_FRAME) for i in range(10)]
                for packet in sent:
                    leg.send_media(packet)
                received = [await leg.receive_media() for _ in sent]
                assert sorted(received) == sorted(sent)
                await leg.hangup()
                leg.send_media(sent[0])  # after hang-up: dropped, no error
                result = await peer.wait()
        result.check()


async def test_receives_the_callees_audio(tmp_path: Path) -> None:
    audio = tmp_path / "hello.ul"
    audio.write_bytes(bytes(range(256)) * 5)  # 1280 bytes: 8 packets of 20 ms
    with trio.fail_after(REAL_TIME_LIMIT):
        plays = [Play(after_ms=200, audio=audio)]
        async with sipp_peer("answer.xml", tmp_path, plays=plays) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial("1001")
                payload = b""
                while len(payload) < len(audio.read_bytes()):
                    packet = await leg.receive_media()
                    assert packet[0] >> 6 == 2 and packet[1] & 0x7F == 0  # RTP v2, PCMU
                    payload += packet[RTP_HEADER:]
                assert payload == audio.read_bytes()
                await leg.hangup()
                result = await peer.wait()
        result.check()


async def test_callee_hangs_up(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("hangup_mid.xml", tmp_path, keys={"wait": "300"}) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial("1001")
                await leg.ended.wait()
                assert leg.ended_by == "callee"
                with trio.move_on_after(0.2) as scope:
                    await leg.receive_media()  # the call is over: nothing comes, no error
                assert scope.cancelled_caught
                with trio.fail_after(1):
                    await leg.hangup()  # nothing left to send
                assert leg.ended_by == "callee"
                result = await peer.wait()
        result.check()


async def test_busy_raises_call_failed_and_acks(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("busy.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                with pytest.raises(CallFailed) as failure:
                    await trunk.dial("1001")
                assert (failure.value.status, failure.value.reason) == (486, "Busy Here")
                result = await peer.wait()
        result.check()  # sipp saw the ACK


async def test_digest_challenge_then_authenticated_retry(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with digest_peer(tmp_path, expects=PASSWORD, sends=PASSWORD) as (peer, trunk):
            leg = await trunk.dial("1001")
            assert leg.codec.name == "PCMA"  # the answer listed PCMA first
            assert leg.dtmf_payload_type is None  # the answer had no telephone-event
            await leg.hangup()
            result = await peer.wait()
        result.check()


async def test_wrong_password_fails_the_call(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with digest_peer(tmp_path, expects=PASSWORD, sends="wrong") as (peer, trunk):
            with pytest.raises(CallFailed) as failure:
                await trunk.dial("1001")
            assert failure.value.status == 403
            result = await peer.wait()
        assert not result.passed  # the scenario fails a call that sent bad credentials


async def test_challenge_without_credentials_fails_with_401(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with digest_peer(tmp_path, expects=PASSWORD, sends=None) as (_, trunk):
            with pytest.raises(CallFailed) as failure:
                await trunk.dial("1001")
            assert failure.value.status == 401


async def test_ring_timeout_cancels_the_call(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("no_answer.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                started = trio.current_time()
                with pytest.raises(CallFailed) as failure:
                    await trunk.dial("1001", ring_timeout=1.0)
                assert (failure.value.status, failure.value.reason) == (408, "Request Timeout")
                assert 0.9 < trio.current_time() - started < 5
                result = await peer.wait()  # CANCEL, 200, 487, ACK all happened
        result.check()


async def test_cancelling_dial_cancels_the_call(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("no_answer.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                ringing = trio.Event()
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:

                        async def cancel_when_ringing() -> None:
                            await ringing.wait()
                            scope.cancel()

                        nursery.start_soon(cancel_when_ringing)
                        await trunk.dial("1001", on_progress=lambda s, r: ringing.set())
                assert scope.cancelled_caught
                result = await peer.wait()
        result.check()


# ───────────────────────── raw UDP peers ─────────────────────────


async def test_invite_is_retransmitted_after_t1_with_the_same_branch(tmp_path: Path) -> None:
    """The peer is a raw UDP socket: it ignores the first INVITE on purpose, which sipp cannot
    do, and answers the retransmission 486."""
    with trio.fail_after(REAL_TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            async with dialling(trunk) as outcome:
                first, _, t0 = await peer.receive_request()
                second, source, t1 = await peer.receive_request()
                assert first.method == second.method == "INVITE"
                assert second.top_via.branch == first.top_via.branch
                assert first.to_bytes() == second.to_bytes()
                assert 0.4 < t1 - t0 < 1.0  # T1 = 500 ms
                await peer.send(make_response(second, 486, to_tag="x1"), source)
                ack, _, _ = await peer.receive_request()
            assert isinstance(outcome.failure, CallFailed) and outcome.failure.status == 486
            assert ack.method == "ACK"
            assert ack.top_via.branch == first.top_via.branch  # RFC 3261 §17.1.1.3
            assert str(ack.cseq) == "1 ACK" and ack.to.tag == "x1"
            assert ack.uri == first.uri


async def test_no_response_at_all_is_a_trunk_error(tmp_path: Path, autojump_clock: object) -> None:
    """The peer is a raw UDP socket that never answers (sipp always does); time is virtual."""
    with trio.fail_after(100):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            sent_at: list[float] = []

            async def count() -> None:
                while True:
                    _, _, at = await peer.receive_request()
                    sent_at.append(at)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(count)
                start = trio.current_time()
                with pytest.raises(TrunkError, match="no response"):
                    await trunk.dial("1001")
                assert math.isclose(trio.current_time() - start, 32.0, abs_tol=0.01)  # Timer B
                nursery.cancel_scope.cancel()
            offsets = [round(t - start, 3) for t in sent_at]
            assert offsets == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # Timer A doubling


async def test_answer_without_usable_sdp_is_acked_byed_and_fails_488(tmp_path: Path) -> None:
    """The peer is a raw UDP socket answering 200 with a G.729-only SDP."""
    with trio.fail_after(REAL_TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            async with dialling(trunk) as outcome:
                invite, source, _ = await peer.receive_request()
                contact = f"<sip:callee@{peer.address()}>"
                answer = make_response(
                    invite, 200, to_tag="x2",
                    extra=[("Contact", contact), ("Content-Type", "application/sdp")],
                    body=b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 18\r\n",
                )  # fmt: skip
                await peer.send(answer, source)
                ack, _, _ = await peer.receive_request()
                bye, bye_source, _ = await peer.receive_request()
                await peer.send(make_response(bye, 200), bye_source)
            assert isinstance(outcome.failure, CallFailed)
            assert (outcome.failure.status, outcome.failure.reason) == (488, "Not Acceptable Here")
            assert ack.method == "ACK" and ack.top_via.branch != invite.top_via.branch
            assert bye.method == "BYE" and bye.to.tag == "x2"
            assert str(bye.cseq) == "2 BYE"


async def test_dial_before_run_is_a_trunk_error(tmp_path: Path) -> None:
    with pytest.raises(TrunkError, match="not running"):
        await sip_trunk(tmp_path, proxy="127.0.0.1:9").dial("1001")


async def test_bad_target_is_484(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with running_trunk(tmp_path, proxy="127.0.0.1:9") as trunk:
            for bad in ("", "10 01<>", "sip:", "sip:a@host:99999"):
                with pytest.raises(CallFailed) as failure:
                    await trunk.dial(bad)
                assert failure.value.status == 484
            assert str(trunk.target_uri("138-0013 8000")) == "sip:13800138000@127.0.0.1:9"
            assert str(trunk.target_uri("tel:+8613800138000")) == "sip:+8613800138000@127.0.0.1:9"
            assert str(trunk.target_uri("alice@example.com")) == "sip:alice@example.com"
            assert str(trunk.target_uri("*99#")) == "sip:*99%23@127.0.0.1:9"
            with pytest.raises(TrunkError, match="caller ID"):
                await trunk.dial("1001", caller_id="<bad>")
            assert str(trunk.target_uri("sip:bob@10.0.0.1:5070")) == "sip:bob@10.0.0.1:5070"


async def test_port_in_use_leaves_the_trunk_down(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        trunk = sip_trunk(tmp_path, proxy="127.0.0.1:9", local_port=port)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(trunk.run)  # started, though down: the daemon runs on
                assert trunk.status().state == "down"
                with pytest.raises(TrunkError, match=f"is down: cannot bind 127.0.0.1:{port}"):
                    await trunk.dial("1001")
                nursery.cancel_scope.cancel()


async def test_reinvite_moves_media_and_is_answered(tmp_path: Path) -> None:
    new_port = free_udp_port()
    keys = {"wait": "200", "new_media_port": str(new_port)}
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("reinvite.xml", tmp_path, keys=keys) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial("1001")
                assert leg.remote_rtp == ("127.0.0.1", peer.media_port)
                while leg.remote_rtp != ("127.0.0.1", new_port):
                    await trio.sleep(0.02)
                assert leg.codec.name == "PCMU" and not leg.ended.is_set()
                await trio.sleep(0.3)  # let sipp check the answer and ACK it
                await leg.hangup()
                result = await peer.wait()
        result.check()  # the 200 kept PCMU, said recvonly, and was ACKed


async def test_stopping_the_trunk_hangs_up_live_calls(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("answer.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial("1001")
            # the trunk is gone: its shutdown sent the BYE
            assert leg.ended.is_set() and leg.ended_by == "robot"
            with trio.fail_after(1):
                await leg.hangup()  # nothing left to do, returns at once
            result = await peer.wait()
        result.check()
