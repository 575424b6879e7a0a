"""RTP from anyone but the far end gets nowhere: latching, SSRC and payload-type checks, and the
RTP-bleed attack (Asterisk AST-2017-005).

The far end is a real sipp callee echoing our RTP (``answer.xml`` with
``-rtp_echo``): what we send with a given SSRC, sequence or payload type comes
back from its media port exactly so. The attacker is a plain UDP socket in the
test on the same host, as an attacker's packets would look after any NAT.
``RtpFilter``'s rules are also tested alone, with the time passed in.
"""

from __future__ import annotations

import struct
from pathlib import Path

import trio

from waihu.testing.sipp import sipp_peer
from waihu_sip.leg import SipCallLeg
from waihu_sip.media_socket import LATCH_PACKETS, LATCH_SECONDS, RtpFilter

from sip_harness import running_trunk

REAL_TIME_LIMIT = 60  # seconds per real-time test; generous, the machine is shared
PCMU = 0
PCMA = 8
DTMF = 101
OUR_SSRC = 0x1234
ATTACKER_SSRC = 0xBAD
SDP = ("192.0.2.10", 30000)


def rtp(seq: int, ssrc: int = OUR_SSRC, payload_type: int = PCMU, tag: bytes = b"") -> bytes:
    """An RTP packet whose payload says who made it (``tag``) and its number."""
    header = struct.pack("!BBHII", 0x80, payload_type, seq & 0xFFFF, seq * 160, ssrc)
    return header + (tag + b"%05d" % seq).ljust(160, b"\x00")


# ─────────────── the rules, no sockets ───────────────


def fresh_filter(payload_types: tuple[int, ...] = (PCMU, DTMF)) -> RtpFilter:
    rtp_filter = RtpFilter()
    rtp_filter.set_remote(SDP)
    rtp_filter.payload_types = frozenset(payload_types)
    return rtp_filter


def test_packets_from_the_sdp_address_pass_and_lock_the_ssrc() -> None:
    f = fresh_filter()
    assert f.check(rtp(1), SDP, 0.0) is None
    assert f.ssrc == OUR_SSRC
    assert f.check(rtp(2, ssrc=ATTACKER_SSRC), SDP, 0.02) == "ssrc"
    assert f.check(rtp(3), SDP, 0.04) is None


def test_another_host_is_never_accepted() -> None:
    f = fresh_filter()
    for seq in range(5):
        assert f.check(rtp(seq), ("192.0.2.11", SDP[1]), seq * 0.02) == "foreign_host"
    assert f.remote == SDP


def test_a_nat_port_is_latched_after_two_packets_in_sequence() -> None:
    f = fresh_filter()
    nat = (SDP[0], 41234)
    assert f.check(rtp(7), nat, 0.0) == "probation"
    assert f.check(rtp(8), nat, 0.02) is None
    assert f.remote == nat and f.ssrc == OUR_SSRC
    assert f.check(rtp(9), SDP, 0.04) == "probation"  # the old port must prove itself again
    assert f.check(rtp(20, ssrc=5), SDP, LATCH_SECONDS) == "foreign_port"  # window over


def test_packets_out_of_sequence_or_from_two_ports_do_not_move_the_latch() -> None:
    f = fresh_filter()
    a, b = (SDP[0], 41000), (SDP[0], 42000)
    assert f.check(rtp(1), a, 0.0) == "probation"
    assert f.check(rtp(3), a, 0.02) == "probation"  # a gap: starts over
    assert f.check(rtp(4), b, 0.04) == "probation"  # another port: starts over
    assert f.check(rtp(4, ssrc=9), a, 0.06) == "probation"  # another SSRC: starts over
    assert f.remote == SDP


def test_the_window_closes_after_ten_packets() -> None:
    f = fresh_filter()
    for seq in range(LATCH_PACKETS):
        assert f.check(rtp(seq), SDP, seq * 0.02) is None
    assert not f.latching
    other = (SDP[0], 41000)
    assert f.check(rtp(100, ssrc=ATTACKER_SSRC), other, 1.0) == "foreign_port"
    assert f.check(rtp(101, ssrc=ATTACKER_SSRC), other, 1.02) == "foreign_port"
    assert f.remote == SDP


def test_the_window_closes_after_two_seconds() -> None:
    f = fresh_filter()
    assert f.check(rtp(1), SDP, 0.0) is None
    other = (SDP[0], 41000)
    assert f.check(rtp(100), other, LATCH_SECONDS) == "foreign_port"
    assert f.check(rtp(101), other, LATCH_SECONDS + 0.02) == "foreign_port"


def test_a_new_ssrc_from_the_locked_source_passes_after_probation() -> None:
    f = fresh_filter()
    for seq in range(20):
        assert f.check(rtp(seq), SDP, seq * 0.02) is None
    assert f.check(rtp(500, ssrc=77), SDP, 1.0) == "ssrc"
    assert f.check(rtp(501, ssrc=77), SDP, 1.02) is None  # a sequence restart: the new stream
    assert f.ssrc == 77
    assert f.check(rtp(21), SDP, 1.04) == "ssrc"


def test_the_locked_stream_going_on_resets_a_rivals_probation() -> None:
    f = fresh_filter()
    assert f.check(rtp(1), SDP, 0.0) is None
    assert f.check(rtp(50, ssrc=77), SDP, 0.01) == "ssrc"
    assert f.check(rtp(2), SDP, 0.02) is None
    assert f.check(rtp(51, ssrc=77), SDP, 0.03) == "ssrc"  # interleaved: never two in a row


def test_payload_types_not_negotiated_are_dropped() -> None:
    f = fresh_filter()
    assert f.check(rtp(1, payload_type=PCMA), SDP, 0.0) == "payload_type"
    assert f.check(rtp(2, payload_type=DTMF), SDP, 0.02) is None
    assert f.check(rtp(3, payload_type=13), SDP, 0.04) == "payload_type"  # comfort noise
    assert f.check(b"\x80\x00\x00", SDP, 0.06) == "malformed"
    assert f.drops["payload_type"] == 2


def test_a_new_sdp_address_rearms_the_latch() -> None:
    f = fresh_filter()
    for seq in range(LATCH_PACKETS):
        f.check(rtp(seq), SDP, seq * 0.02)
    moved = (SDP[0], 30010)
    f.set_remote(moved)
    assert f.latching and f.ssrc is None
    assert f.check(rtp(1, ssrc=55), moved, 5.0) is None


# ─────────────── against a real far end ───────────────


async def test_rtp_bleed_from_another_port_mid_call_gets_nothing(tmp_path: Path) -> None:
    """The attack: once the call is under way, packets from another port of the far end's
    host, with their own SSRC and a tidy sequence, aimed at our RTP port. None may reach
    ``receive_media``, and our RTP must keep going to the real far end (its echo returns)."""
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("answer.xml", tmp_path, rtp_echo=True) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial(peer.uri("echo"))
                far_end = leg.remote_rtp
                received = await talk(leg, count=15)  # the window closes on the way
                attacker = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
                with attacker:
                    await attacker.bind(("127.0.0.1", 0))
                    for seq in range(40):
                        await attacker.sendto(
                            rtp(1000 + seq, ssrc=ATTACKER_SSRC, tag=b"attacker"), leg.local_rtp
                        )
                    received += await talk(leg, count=15, first=15)
                assert leg.remote_rtp == far_end
                assert not [p for p in received if b"attacker" in p]
                assert sorted(p[12:17] for p in received)[-1] == b"robot"
                assert len(received) == 30  # every echo of ours came back, nothing else
                await leg.hangup()
                result = await peer.wait()
    result.check()


async def talk(leg: SipCallLeg, *, count: int, first: int = 0, **kw: object) -> list[bytes]:
    """Send ``count`` packets of ours, 20 ms apart, and collect what comes back meanwhile."""
    received: list[bytes] = []
    with trio.move_on_after(count * 0.02 + 2.0):  # the last echo's way back, generously
        async with trio.open_nursery() as nursery:

            async def collect() -> None:
                while True:
                    received.append(await leg.receive_media())

            nursery.start_soon(collect)
            for seq in range(first, first + count):
                leg.send_media(rtp(seq, tag=b"robot", **kw))  # type: ignore[arg-type]
                await trio.sleep(0.02)
            while len(received) < count:
                await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    return received


async def test_payload_types_and_ssrcs_not_agreed_are_dropped_from_the_far_end(
    tmp_path: Path,
) -> None:
    """Our own packets, echoed: PCMA on a PCMU call comes back and is dropped; a one-packet
    SSRC change is dropped; a sequence-restarted new SSRC is taken after probation."""
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("answer.xml", tmp_path, rtp_echo=True) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport, codecs=["PCMU"]) as trunk:
                leg = await trunk.dial(peer.uri("echo"))
                assert len(await talk(leg, count=12)) == 12
                assert await talk(leg, count=3, first=12, payload_type=PCMA) == []
                leg.send_media(rtp(600, ssrc=99, tag=b"lone"))
                assert len(await talk(leg, count=3, first=15)) == 3
                restarted = await talk(leg, count=5, first=0, ssrc=77)
                assert len(restarted) == 4  # the first waits on probation
                assert all(p[8:12] == (77).to_bytes(4, "big") for p in restarted)
                await leg.hangup()
                result = await peer.wait()
    result.check()
