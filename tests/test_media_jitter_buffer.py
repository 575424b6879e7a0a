"""The jitter buffer: ordering, wrap-around, loss, lateness, duplicates, resets."""

from __future__ import annotations

import random

import pytest

from waihu.media.jitter_buffer import JitterBuffer, seq_diff
from waihu.media.rtp import RtpPacket

SSRC = 0x5EED


def packet(seq: int, ssrc: int = SSRC) -> RtpPacket:
    seq %= 1 << 16
    return RtpPacket(
        payload_type=0, sequence=seq, timestamp=seq * 160, ssrc=ssrc, payload=seq.to_bytes(2, "big")
    )


def played(buffer: JitterBuffer, ticks: int) -> list[int | None]:
    out = []
    for _ in range(ticks):
        p = buffer.pop()
        out.append(None if p is None else p.sequence)
    return out


def test_seq_diff_wraps() -> None:
    assert seq_diff(1, 65535) == 2
    assert seq_diff(65535, 1) == -2
    assert seq_diff(5, 5) == 0
    assert seq_diff(40000, 7000) == -32536


def test_waits_for_depth_then_plays_in_order() -> None:
    buffer = JitterBuffer(depth=3)
    buffer.push(packet(10))
    assert buffer.pop() is None
    buffer.push(packet(12))
    assert buffer.pop() is None
    assert not buffer.playing
    buffer.push(packet(11))
    assert buffer.playing
    assert played(buffer, 3) == [10, 11, 12]
    assert buffer.stats.played == 3
    assert buffer.stats.lost == 0


def test_reordering_before_first_playout_starts_at_earliest() -> None:
    buffer = JitterBuffer(depth=2)
    buffer.push(packet(101))
    buffer.push(packet(100))
    assert played(buffer, 2) == [100, 101]


def test_steady_stream_with_jitter_plays_every_packet_across_wrap() -> None:
    """Packets arrive up to one frame late, in any order within that; one pop per tick."""
    rng = random.Random(7)
    buffer = JitterBuffer(depth=2)
    start = 65500
    arrivals = sorted(
        ((i + rng.uniform(0, 0.9), start + i) for i in range(200)), key=lambda a: a[0]
    )
    out: list[int | None] = []
    pending = list(arrivals)
    for tick in range(203):
        while pending and pending[0][0] < tick:
            buffer.push(packet(pending.pop(0)[1]))
        p = buffer.pop()
        out.append(None if p is None else p.sequence)
    got = [s for s in out if s is not None]
    assert got == [(start + i) % 65536 for i in range(200)]
    assert buffer.stats.lost == 0
    assert buffer.stats.late == 0


def test_lost_packet_plays_as_gap_and_counts() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (1, 2, 4, 5):
        buffer.push(packet(seq))
    assert played(buffer, 5) == [1, 2, None, 4, 5]
    assert buffer.stats.lost == 1


def test_late_and_duplicate_are_dropped_and_counted() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (1, 2, 4):
        buffer.push(packet(seq))
    assert played(buffer, 3) == [1, 2, None]  # 3 lost
    buffer.push(packet(3))  # arrives after its turn
    buffer.push(packet(2))  # already played
    buffer.push(packet(4))  # already waiting
    assert buffer.stats.late == 1
    assert buffer.stats.duplicate == 2
    assert played(buffer, 1) == [4]


def test_underrun_rebuffers_and_counts_the_missing_as_lost() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (1, 2):
        buffer.push(packet(seq))
    assert played(buffer, 4) == [1, 2, None, None]
    assert buffer.stats.underruns == 1
    assert not buffer.playing
    buffer.push(packet(3))  # the far end paused but numbering goes on: nothing lost
    assert buffer.pop() is None  # re-buffering
    buffer.push(packet(4))
    assert played(buffer, 2) == [3, 4]
    assert buffer.stats.lost == 0
    # a burst lost during a pause: 5 and 6 never come
    assert buffer.pop() is None
    buffer.push(packet(7))
    buffer.push(packet(8))
    assert played(buffer, 2) == [7, 8]
    assert buffer.stats.lost == 2


def test_overflow_drops_oldest_and_bounds_delay() -> None:
    buffer = JitterBuffer(depth=2, max_packets=4)
    for seq in range(10):
        buffer.push(packet(seq))
    assert buffer.buffered == 4
    assert buffer.stats.overflow == 6
    assert played(buffer, 4) == [6, 7, 8, 9]


def test_new_ssrc_resets() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (1, 2, 3):
        buffer.push(packet(seq))
    assert played(buffer, 1) == [1]
    buffer.push(packet(5000, ssrc=99))
    buffer.push(packet(5001, ssrc=99))
    assert buffer.stats.resets == 1
    assert played(buffer, 2) == [5000, 5001]


def test_sequence_jump_resets_instead_of_playing_silence() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (1, 2):
        buffer.push(packet(seq))
    assert played(buffer, 1) == [1]
    buffer.push(packet(20000))  # far beyond MAX_DROPOUT: a new numbering
    buffer.push(packet(20001))
    assert played(buffer, 2) == [20000, 20001]
    assert buffer.stats.lost == 0
    # a smaller skip than a reset but more than the buffer holds: resume at once
    buffer.push(packet(20500))
    buffer.push(packet(20501))
    assert played(buffer, 2) == [20500, 20501]
    assert buffer.stats.resets == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        JitterBuffer(depth=0)
    with pytest.raises(ValueError, match="smaller than depth"):
        JitterBuffer(depth=3, max_packets=2)
