"""RTP packet parsing/building and the RFC 4733 telephone-event payload."""

from __future__ import annotations

import random
import struct

import pytest

from waihu.media.rtp import RtpError, RtpPacket, RtpSender, build_rtp, parse_rtp
from waihu.media.telephone_event import (
    TelephoneEvent,
    TelephoneEventError,
    build_telephone_event,
    parse_telephone_event,
)


def test_parse_minimal_packet_by_hand() -> None:
    data = bytes([0x80, 0x00]) + struct.pack("!HII", 1234, 56789, 0xDEADBEEF) + b"\xff" * 160
    packet = parse_rtp(data)
    assert packet == RtpPacket(
        payload_type=0, sequence=1234, timestamp=56789, ssrc=0xDEADBEEF, payload=b"\xff" * 160
    )


def test_parse_all_header_features() -> None:
    header = bytes([0x80 | 0x20 | 0x10 | 2, 0x80 | 8]) + struct.pack("!HII", 65535, 2**32 - 1, 7)
    csrcs = struct.pack("!II", 11, 22)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    payload = b"abcd"
    padding = b"\x00\x00\x03"
    packet = parse_rtp(header + csrcs + extension + payload + padding)
    assert packet.marker is True
    assert packet.payload_type == 8
    assert packet.sequence == 65535
    assert packet.timestamp == 2**32 - 1
    assert packet.csrcs == (11, 22)
    assert packet.extension == (0xBEDE, b"\x10\xaa\x00\x00")
    assert packet.payload == b"abcd"
    assert packet.padding == 3


def test_build_is_inverse_of_parse() -> None:
    rng = random.Random(3550)
    for _ in range(500):
        packet = RtpPacket(
            payload_type=rng.randrange(0, 64),
            sequence=rng.randrange(1 << 16),
            timestamp=rng.randrange(1 << 32),
            ssrc=rng.randrange(1 << 32),
            payload=rng.randbytes(rng.randrange(0, 200)),
            marker=rng.random() < 0.5,
            csrcs=tuple(rng.randrange(1 << 32) for _ in range(rng.randrange(0, 16))),
            extension=(rng.randrange(1 << 16), rng.randbytes(4 * rng.randrange(0, 5)))
            if rng.random() < 0.5
            else None,
            padding=rng.choice((0, 0, 1, 4, 255)),
        )
        assert parse_rtp(build_rtp(packet)) == packet


@pytest.mark.parametrize(
    ("data", "kind", "words"),
    [
        (b"", "too_short", "0 bytes"),
        (b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00", "too_short", "11 bytes"),
        (bytes([0x40, 0]) + bytes(10), "bad_version", "version 1"),
        (bytes([0x00, 0]) + bytes(10), "bad_version", "version 0"),
        (bytes([0x83, 0]) + bytes(10) + bytes(8), "truncated_csrc", "3 CSRCs"),
        (bytes([0x90, 0]) + bytes(10) + b"\x00\x00", "truncated_extension", "extension"),
        (
            bytes([0x90, 0]) + bytes(10) + b"\x00\x00\x00\x02" + bytes(4),
            "truncated_extension",
            "2 words",
        ),
        (bytes([0xA0, 0]) + bytes(10) + b"ab\x00", "bad_padding", "count is 0"),
        (bytes([0xA0, 0]) + bytes(10) + b"ab\x09", "bad_padding", "count 9 exceeds"),
        (bytes([0x80, 200]) + bytes(10) + bytes(8), "rtcp", "RTCP"),
    ],
)
def test_parse_names_what_is_wrong(data: bytes, kind: str, words: str) -> None:
    with pytest.raises(RtpError, match=words) as info:
        parse_rtp(data)
    assert info.value.kind == kind


def test_padding_may_fill_whole_payload() -> None:
    packet = parse_rtp(bytes([0xA0, 0]) + bytes(10) + b"\x00\x00\x03")
    assert packet.payload == b""
    assert packet.padding == 3


def test_random_bytes_raise_only_rtp_error() -> None:
    rng = random.Random(20240601)
    valid = build_rtp(RtpPacket(0, 1, 2, 3, payload=bytes(160)))
    parsed = 0
    for i in range(20000):
        if i % 2:
            data = rng.randbytes(rng.randrange(0, 80))
            if rng.random() < 0.7 and data:
                data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]  # mostly version 2
        else:
            mutated = bytearray(valid[: rng.randrange(0, len(valid) + 1)])
            for _ in range(rng.randrange(1, 4)):
                if mutated:
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        try:
            packet = parse_rtp(data)
        except RtpError as exc:
            assert exc.kind
            assert str(exc)
        else:
            parsed += 1
            assert len(packet.payload) <= len(data)
    assert parsed > 1000  # the fuzzing reached the successful path too


def test_sender_numbers_consecutive_frames() -> None:
    sender = RtpSender(8, ssrc=0x1234, sequence=65534, timestamp=2**32 - 160)
    packets = [parse_rtp(sender.next_packet(bytes(160), 160, marker=i == 0)) for i in range(4)]
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1]
    assert [p.timestamp for p in packets] == [2**32 - 160, 0, 160, 320]
    assert [p.marker for p in packets] == [True, False, False, False]
    assert {p.ssrc for p in packets} == {0x1234}
    assert {p.payload_type for p in packets} == {8}
    assert sender.packets_sent == 4
    assert sender.octets_sent == 640


def test_sender_starting_values_are_random() -> None:
    senders = [RtpSender(0) for _ in range(8)]
    assert len({s.ssrc for s in senders}) > 1
    assert len({s.sequence for s in senders}) > 1
    assert len({s.timestamp for s in senders}) > 1
    with pytest.raises(ValueError, match="payload type 128"):
        RtpSender(128)


def test_telephone_event_round_trip() -> None:
    event = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    payload = build_telephone_event(event)
    assert payload == bytes([11, 0x80 | 10]) + struct.pack("!H", 800)
    assert parse_telephone_event(payload) == event
    assert event.digit == "#"
    assert TelephoneEvent(5, False, 0, 0).digit == "5"
    assert TelephoneEvent(16, False, 0, 0).digit is None  # flash
    with pytest.raises(TelephoneEventError, match="3 bytes"):
        parse_telephone_event(b"\x01\x02\x03")
