"""A small fixed-depth jitter buffer: puts received RTP packets back in order.

The call's receive task ``push``-es every packet as it arrives; the media
clock ``pop``-s once per 20 ms tick. Playout starts once ``depth`` packets
are waiting, so a packet may arrive up to about ``depth - 1`` frames late
(or out of order) and still be played in its place. Sequence numbers are
compared modulo 2**16, so the wrap from 65535 to 0 is seamless.

What it counts, and what it does with the bad ones:

- *lost*: its turn came and it was not there but later packets were — the
  slot plays as silence (``pop`` returns None) and playout moves on;
- *late*: it arrived after its turn — dropped;
- *duplicate*: the same sequence number is waiting or was just played — dropped;
- *underrun*: nothing at all to play (the far end paused, or a burst was
  lost) — playout stops and re-buffers ``depth`` packets before going on,
  which lets the delay grow by as much as the network needs;
- *overflow*: more than ``max_packets`` waiting (the far end sends faster
  than we play) — the oldest is dropped, which keeps the delay bounded;
- *reset*: a new SSRC, or a sequence jump too big to be loss (RFC 3550
  A.1's limits) — the buffer starts over with the new stream.

What it is not: an adaptive buffer with time stretching, or a decoder —
packets come out as they went in.
"""

from __future__ import annotations

from collections import deque

import attrs

from waihu.media.rtp import RtpPacket

__all__ = ["DEFAULT_DEPTH", "JitterBuffer", "JitterStats"]

DEFAULT_DEPTH = 2  # frames buffered before playout: 20–40 ms of tolerance for G.711 at 20 ms
SLACK_PACKETS = 8  # extra packets held beyond ``depth`` before the oldest is dropped
MAX_DROPOUT = 3000  # RFC 3550 A.1: a forward jump larger than this is a new numbering
MAX_MISORDER = 100  # RFC 3550 A.1: a backward jump larger than this is a new numbering
PLAYED_HISTORY = 64  # recently played numbers kept to tell duplicates from late packets
SEQUENCE_MODULO = 1 << 16


def seq_diff(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers, in -32768..32767 (wrap-around safe)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


@attrs.define
class JitterStats:
    """What the buffer saw and did, for the call's media figures."""

    received: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0
    duplicate: int = 0
    underruns: int = 0
    overflow: int = 0
    resets: int = 0


class JitterBuffer:
    """Reorders one RTP stream's packets by sequence number for playout once per tick."""

    def __init__(self, depth: int = DEFAULT_DEPTH, *, max_packets: int | None = None) -> None:
        if depth < 1:
            raise ValueError(f"jitter buffer depth must be at least 1, not {depth}")
        self.depth = depth
        self.max_packets = depth + SLACK_PACKETS if max_packets is None else max_packets
        if self.max_packets < depth:
            raise ValueError(f"max_packets {self.max_packets} is smaller than depth {depth}")
        self.stats = JitterStats()
        self._packets: dict[int, RtpPacket] = {}
        self._ssrc: int | None = None
        self._next: int | None = None  # sequence number due next; None before the first playout
        self._anchor = 0  # reference for ordering before the first playout
        self._playing = False
        self._played: deque[int] = deque(maxlen=PLAYED_HISTORY)

    @property
    def playing(self) -> bool:
        """True once ``depth`` packets were buffered, until the next underrun."""
        return self._playing

    @property
    def buffered(self) -> int:
        """Packets waiting."""
        return len(self._packets)

    def push(self, packet: RtpPacket) -> None:
        """Take one received packet; late and duplicate ones are counted and dropped."""
        self.stats.received += 1
        seq = packet.sequence
        if self._ssrc is not None and packet.ssrc != self._ssrc:
            self._reset()
        self._ssrc = packet.ssrc
        if self._next is not None:
            distance = seq_diff(seq, self._next)
            if distance < -MAX_MISORDER or distance > MAX_DROPOUT:
                self._reset()
            elif distance < 0:
                if seq in self._played:
                    self.stats.duplicate += 1
                else:
                    self.stats.late += 1
                return
        elif self._packets and abs(seq_diff(seq, self._anchor)) > MAX_DROPOUT:
            self._reset()
        if seq in self._packets:
            self.stats.duplicate += 1
            return
        if not self._packets and self._next is None:
            self._anchor = seq
        self._packets[seq] = packet
        if len(self._packets) > self.max_packets:
            self._drop_oldest()
        if not self._playing and len(self._packets) >= self.depth:
            self._start()

    def pop(self) -> RtpPacket | None:
        """The packet due this tick, or None (still buffering, lost, or underrun)."""
        if not self._playing:
            return None
        assert self._next is not None  # set when playout started
        packet = self._packets.pop(self._next, None)
        if packet is None:
            if not self._packets:
                self._playing = False
                self.stats.underruns += 1
                return None
            earliest = self._earliest()
            gap = seq_diff(earliest, self._next)
            if gap <= self.max_packets:
                self.stats.lost += 1
                self._next = (self._next + 1) % SEQUENCE_MODULO
                return None
            # far more missing than the buffer could ever hold: the sender skipped
            # numbers, so resume at what is here instead of playing a long silence
            self.stats.resets += 1
            self._next = earliest
            packet = self._packets.pop(earliest)
        self._played.append(self._next)
        self._next = (self._next + 1) % SEQUENCE_MODULO
        self.stats.played += 1
        return packet

    def _reference(self) -> int:
        return self._anchor if self._next is None else self._next

    def _earliest(self) -> int:
        reference = self._reference()
        return min(self._packets, key=lambda seq: seq_diff(seq, reference))

    def _start(self) -> None:
        earliest = self._earliest()
        if self._next is not None:
            # re-buffering after an underrun: numbers skipped meanwhile never came
            self.stats.lost += max(0, seq_diff(earliest, self._next))
        self._next = earliest
        self._playing = True

    def _drop_oldest(self) -> None:
        oldest = self._earliest()
        del self._packets[oldest]
        self.stats.overflow += 1
        if self._next is not None:
            self.stats.lost += max(0, seq_diff(oldest, self._next))
            self._next = (oldest + 1) % SEQUENCE_MODULO

    def _reset(self) -> None:
        self.stats.resets += 1
        self._packets.clear()
        self._played.clear()
        self._next = None
        self._playing = False
