"""RTCP (RFC 3550 §6): report bytes, reception figures, round trip, and a call that reports.

The byte strings were written out by hand from the packet diagrams of RFC 3550
§6.4.1 (SR), §6.5 (SDES) and §6.6 (BYE); the round-trip case is the worked
example of §6.4.1. The call test's far end is sipp echoing RTP; sipp sends no
RTCP, so the far end's RTCP port is a plain UDP socket in the test that reads
our reports and answers with a receiver report about us.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
import trio

from waihu.testing.sipp import sipp_peer
from waihu_sip.rtcp import (
    NTP_EPOCH_OFFSET,
    Bye,
    ReceiverReport,
    ReceiverStats,
    ReportBlock,
    RtcpError,
    RtcpSession,
    SenderReport,
    build_bye,
    build_report,
    build_sdes,
    ntp_time,
    parse_compound,
)

from sip_harness import running_trunk

REAL_TIME_LIMIT = 60  # seconds; the first report comes 2.5–7.5 s into the call

BLOCK = ReportBlock(
    ssrc=0x55667788,
    fraction_lost=64,
    cumulative_lost=3,
    highest_sequence=0x00010005,
    jitter=12,
    last_sr=0xB7052000,
    delay_since_last_sr=0x00054000,
)
SR = SenderReport(
    ssrc=0x11223344,
    ntp=0xE1B2C3D4_80000000,
    rtp_timestamp=160,
    packets=5,
    octets=800,
    blocks=(BLOCK,),
)
SR_BYTES = bytes.fromhex(
    "81c8000c 11223344 e1b2c3d4 80000000 000000a0 00000005 00000320"
    " 55667788 40000003 00010005 0000000c b7052000 00054000"
)


def test_sender_report_bytes() -> None:
    assert build_report(SR) == SR_BYTES
    assert parse_compound(SR_BYTES) == [SR]


def test_receiver_report_sdes_and_bye_bytes() -> None:
    rr = ReceiverReport(ssrc=0x11223344, blocks=(BLOCK,))
    rr_bytes = bytes.fromhex("81c90007 11223344") + SR_BYTES[28:]
    assert build_report(rr) == rr_bytes
    sdes = bytes.fromhex("81ca0003 11223344 01026162 00000000")
    assert build_sdes(0x11223344, "ab") == sdes
    bye = bytes.fromhex("81cb0001 11223344")
    assert build_bye(0x11223344) == bye
    assert parse_compound(rr_bytes + sdes + bye) == [rr, Bye((0x11223344,))]


def test_negative_cumulative_loss_round_trips() -> None:
    block = ReportBlock(1, 0, -2, 10, 0, 0, 0)
    data = build_report(ReceiverReport(ssrc=9, blocks=(block,)))
    assert data[12:16] == bytes.fromhex("00fffffe")
    assert parse_compound(data) == [ReceiverReport(9, (block,))]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x81\xc8", "too short"),
        (bytes.fromhex("41c80001 11223344"), "version"),
        (bytes.fromhex("81c90009 11223344"), "past the datagram"),
        (bytes.fromhex("81c90001 11223344"), "do not fit"),
        (bytes.fromhex("83cb0001 11223344"), "more sources"),
        (bytes.fromhex("80c80001 11223344"), "sender report too short"),
    ],
)
def test_malformed_rtcp_is_refused_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(RtcpError, match=why):
        parse_compound(data)


def test_unknown_packet_types_are_skipped() -> None:
    app = bytes.fromhex("80cc0002 11223344 6e616d65")  # APP "name"
    assert parse_compound(app + build_bye(7)) == [Bye((7,))]


def test_loss_from_sequence_numbers_and_the_interval_fraction() -> None:
    stats = ReceiverStats(clock_rate=8000)
    for seq in (0, 1, 2, 4, 5):
        stats.update(1, seq, seq * 160, seq * 0.02)
    assert (stats.expected, stats.received, stats.lost) == (6, 5, 1)
    assert stats.interval_fraction() == 1 * 256 // 6
    for seq in (6, 7):
        stats.update(1, seq, seq * 160, seq * 0.02)
    assert stats.interval_fraction() == 0  # nothing lost since the last report


def test_sequence_wrap_and_restart() -> None:
    stats = ReceiverStats(clock_rate=8000)
    for i, seq in enumerate((65534, 65535, 0, 1)):
        stats.update(1, seq, i * 160, i * 0.02)
    assert stats.extended_max == 65536 + 1 and stats.expected == 4 and stats.lost == 0
    stats.update(1, 30000, 4 * 160, 0.08)  # a jump far ahead: the sender restarted
    assert stats.expected == 1 and stats.received == 1
    stats.update(2, 7, 0, 0.1)  # a new SSRC starts over too
    assert stats.ssrc == 2 and stats.expected == 1


def test_jitter_follows_rfc_3550_a8() -> None:
    stats = ReceiverStats(clock_rate=8000)
    stats.update(1, 0, 0, 0.0)
    stats.update(1, 1, 160, 0.02)
    assert stats.jitter == 0
    stats.update(1, 2, 320, 0.05)  # 10 ms late: D = 80 timestamp units
    assert stats.jitter == pytest.approx(80 / 16)
    stats.update(1, 3, 480, 0.06)  # on time again: D = 80 once more
    assert stats.jitter == pytest.approx(5 + (80 - 5) / 16)


def test_round_trip_from_lsr_and_dlsr_as_in_rfc_3550() -> None:
    """§6.4.1's example: A = 0xb710:8000, LSR = 0xb705:2000, DLSR = 0x0005:4000 → 6.125 s."""
    wall = 60_000 * 65536 + 0xB710 + 0.5 - NTP_EPOCH_OFFSET  # an NTP time whose middle is A
    assert (ntp_time(wall) >> 16) & 0xFFFFFFFF == 0xB7108000
    session = RtcpSession(clock_rate=8000, ssrc=0x55667788)
    session.receive_rtcp(build_report(ReceiverReport(ssrc=42, blocks=(BLOCK,))), 0.0, wall)
    assert session.rtt == pytest.approx(6.125)
    assert session.remote_fraction_lost == 0.25 and session.remote_jitter == 12


def test_a_report_about_someone_else_or_garbage_changes_nothing() -> None:
    session = RtcpSession(clock_rate=8000, ssrc=1)
    session.receive_rtcp(build_report(ReceiverReport(ssrc=42, blocks=(BLOCK,))), 0.0, 1e9)
    session.receive_rtcp(b"\x00garbage", 0.0, 1e9)
    assert session.rtt is None and session.remote_fraction_lost is None
    assert session.malformed == 1


def test_our_report_is_an_sr_while_sending_else_an_rr_and_carries_the_block() -> None:
    session = RtcpSession(clock_rate=8000, cname="me")
    for seq in range(3):
        session.sent(ssrc=0xAA, timestamp=seq * 160, payload_octets=160, now=seq * 0.02)
        session.received(ssrc=0xBB, sequence=seq * 2, timestamp=seq * 320, now=seq * 0.02)
    first = parse_compound(session.report(now=0.1, wall=1e9))
    sr = first[0]
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.packets, sr.octets) == (0xAA, 3, 480)
    assert sr.rtp_timestamp == 320 + 480  # 60 ms after the last packet, in samples
    (block,) = sr.blocks
    assert (block.ssrc, block.cumulative_lost, block.highest_sequence) == (0xBB, 2, 4)
    assert block.fraction_lost == 2 * 256 // 5
    second = parse_compound(session.report(now=5.1, wall=1e9 + 5, bye=True))
    assert isinstance(second[0], ReceiverReport)  # nothing sent since the last report
    assert second[-1] == Bye((0xAA,))


async def test_a_call_reports_and_files_the_far_ends_figures(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("answer.xml", tmp_path, rtp_echo=True) as peer:
            rtcp_peer = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
            await rtcp_peer.bind(("127.0.0.1", peer.media_port + 1))
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial(peer.uri("echo"))
                assert leg.local_rtp[1] % 2 == 0
                async with trio.open_nursery() as nursery:

                    async def talk() -> None:
                        for seq in range(100_000):
                            header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xC0FFEE)
                            leg.send_media(header + bytes(160))
                            await trio.sleep(0.02)

                    async def listen() -> None:
                        while True:
                            await leg.receive_media()

                    nursery.start_soon(talk)
                    nursery.start_soon(listen)
                    data, source = await rtcp_peer.recvfrom(2048)
                    got_at = time.monotonic()
                    assert source == (leg.local_rtp[0], leg.local_rtp[1] + 1)
                    packets = parse_compound(data)
                    sr = packets[0]
                    assert isinstance(sr, SenderReport) and sr.ssrc == 0xC0FFEE
                    assert sr.packets > 0 and sr.octets == sr.packets * 160
                    assert sr.blocks and sr.blocks[0].highest_sequence > 0  # our echo, heard
                    ours = ReportBlock(
                        ssrc=sr.ssrc,
                        fraction_lost=64,
                        cumulative_lost=2,
                        highest_sequence=sr.packets,
                        jitter=80,
                        last_sr=(sr.ntp >> 16) & 0xFFFFFFFF,
                        delay_since_last_sr=int((time.monotonic() - got_at) * 65536),
                    )
                    rr = build_report(ReceiverReport(ssrc=0xFEED, blocks=(ours,)))
                    await rtcp_peer.sendto(rr, source)
                    while (quality := leg.media_quality()) is None or quality.rtt_ms is None:
                        await trio.sleep(0.05)
                    nursery.cancel_scope.cancel()
                assert quality.packets_sent > 0 and quality.packets_received > 0
                assert quality.packets_lost == 0 and quality.loss_fraction == 0
                assert quality.remote_loss_fraction == 0.25
                assert quality.remote_jitter_ms == 10.0  # 80 samples at 8 kHz
                assert quality.rtt_ms is not None and 0 <= quality.rtt_ms < 1000
                await leg.hangup()
                with trio.fail_after(5):
                    last, _ = await rtcp_peer.recvfrom(2048)
                assert Bye((0xC0FFEE,)) in parse_compound(last)
                result = await peer.wait()
            rtcp_peer.close()
    result.check()


async def test_no_rtcp_port_when_rtcp_is_off(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("answer.xml", tmp_path, rtp_echo=True) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport, rtcp=False) as trunk:
                leg = await trunk.dial(peer.uri("echo"))
                probe = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
                with probe:
                    await probe.bind(("127.0.0.1", leg.local_rtp[1] + 1))  # free: not ours
                assert leg.media_quality() is not None
                await leg.hangup()
                result = await peer.wait()
    result.check()
