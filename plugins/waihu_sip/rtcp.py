"""RTCP (RFC 3550 §6) for one call, sans-IO: build and parse reports, keep the figures.

``RtcpSession`` is fed what the call's RTP socket sees — every datagram sent
(``sent``) and every one accepted from the far end (``received``), with the
time — and every RTCP datagram from the far end (``receive_rtcp``). It builds
our compound reports (``report``: a sender report while we send, else a
receiver report; a report block for the far end's SSRC once we heard it; SDES
CNAME; ``bye=True`` adds a BYE) and turns the far end's reports into round
trip, loss and jitter (``quality``).

Figures, as RFC 3550 defines them: received packets, expected and lost from
extended sequence numbers (A.1/A.3, with a big jump taken as a restart, where
A.1 would wait for two sequential packets: the socket's filter already made
the stream prove itself); interarrival jitter (A.8) in timestamp units;
round trip from the LSR/DLSR of the far end's report block about us (§6.4.1).

Simplified, on purpose: reports go every ``REPORT_INTERVAL`` seconds, jittered
by ±50 % (§6.2's randomisation) but without its bandwidth arithmetic, which for
a two-party call with one sender each gives about the same.

What it is not: I/O (``media_socket`` sends and receives), SRTCP, RTCP-mux,
XR or feedback messages (they are parsed over and ignored).

Error handling: a malformed RTCP datagram raises ``RtcpError`` from
``parse_compound``; ``receive_rtcp`` counts and ignores it.
"""

from __future__ import annotations

import secrets
import struct

import attrs

__all__ = [
    "REPORT_INTERVAL",
    "Bye",
    "ReceiverReport",
    "ReceiverStats",
    "ReportBlock",
    "RtcpError",
    "RtcpSession",
    "SenderReport",
    "build_bye",
    "build_report",
    "build_sdes",
    "ntp_time",
    "parse_compound",
]

RTCP_VERSION = 2
PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
SDES_CNAME = 1
REPORT_INTERVAL = 5.0  # seconds between our reports (RFC 3550 §6.2 minimum for one sender)
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
MAX_DROPOUT = 3000  # A.1: a sequence jump this far ahead is still the same stream
MAX_MISORDER = 100  # A.1: this far behind is a late packet, further is a restart
SEQ_MOD = 1 << 16
JITTER_GAIN = 16  # A.8: jitter moves 1/16 of the way to each new difference
BLOCK_SIZE = 24
MAX_BLOCKS = 31  # the report count is five bits
MAX_CUMULATIVE_LOST = 0x7FFFFF  # 24-bit signed
FRACTION_ONE = 256  # fraction lost is 8-bit fixed point
SHORT_FRACTION = 65536  # LSR/DLSR unit: 1/65536 s

_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IIIII")  # sender SSRC, NTP msw, NTP lsw, RTP timestamp, packets
_BLOCK = struct.Struct("!IIIIII")


class RtcpError(ValueError):
    """A datagram that is not a well-formed RTCP compound packet."""


@attrs.frozen
class ReportBlock:
    """One reception report (§6.4.1) about the source ``ssrc``."""

    ssrc: int
    fraction_lost: int  # 0–255: lost/expected × 256 since the previous report
    cumulative_lost: int
    highest_sequence: int  # extended (cycles × 65536 + highest)
    jitter: int  # timestamp units
    last_sr: int  # middle 32 bits of the NTP time of the last SR received from ssrc, or 0
    delay_since_last_sr: int  # 1/65536 s, or 0


@attrs.frozen
class SenderReport:
    """An SR: the sender's clock and counts, and its reports on what it receives."""

    ssrc: int
    ntp: int  # 64-bit NTP time
    rtp_timestamp: int
    packets: int
    octets: int
    blocks: tuple[ReportBlock, ...] = ()


@attrs.frozen
class ReceiverReport:
    """An RR: reports from a participant that has not sent lately."""

    ssrc: int
    blocks: tuple[ReportBlock, ...] = ()


@attrs.frozen
class Bye:
    """The sources in ``ssrcs`` leave the session."""

    ssrcs: tuple[int, ...]


def ntp_time(unix_seconds: float) -> int:
    """Unix time as a 64-bit NTP timestamp (32.32 fixed point from 1900)."""
    return int((unix_seconds + NTP_EPOCH_OFFSET) * (1 << 32)) & ((1 << 64) - 1)


def _middle(ntp: int) -> int:
    return (ntp >> 16) & 0xFFFFFFFF


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    return _HEADER.pack((RTCP_VERSION << 6) | count, packet_type, body_len // 4)


def _block_bytes(block: ReportBlock) -> bytes:
    lost = max(-0x800000, min(MAX_CUMULATIVE_LOST, block.cumulative_lost)) & 0xFFFFFF
    return _BLOCK.pack(
        block.ssrc,
        (block.fraction_lost & 0xFF) << 24 | lost,
        block.highest_sequence & 0xFFFFFFFF,
        block.jitter & 0xFFFFFFFF,
        block.last_sr & 0xFFFFFFFF,
        block.delay_since_last_sr & 0xFFFFFFFF,
    )


def build_report(report: SenderReport | ReceiverReport) -> bytes:
    """An SR or RR packet (at most 31 blocks)."""
    blocks = b"".join(_block_bytes(b) for b in report.blocks[:MAX_BLOCKS])
    count = min(len(report.blocks), MAX_BLOCKS)
    if isinstance(report, SenderReport):
        body = (
            _SR_INFO.pack(
                report.ssrc,
                report.ntp >> 32,
                report.ntp & 0xFFFFFFFF,
                report.rtp_timestamp & 0xFFFFFFFF,
                report.packets & 0xFFFFFFFF,
            )
            + struct.pack("!I", report.octets & 0xFFFFFFFF)
            + blocks
        )
        return _header(count, PT_SR, len(body)) + body
    body = struct.pack("!I", report.ssrc) + blocks
    return _header(count, PT_RR, len(body)) + body


def build_sdes(ssrc: int, cname: str) -> bytes:
    """An SDES packet with one chunk: ``ssrc``'s CNAME (§6.5.1), padded to 32 bits."""
    text = cname.encode()[:255]
    chunk = struct.pack("!IBB", ssrc, SDES_CNAME, len(text)) + text + b"\x00"  # end of list
    chunk += b"\x00" * (-len(chunk) % 4)
    return _header(1, PT_SDES, len(chunk)) + chunk


def build_bye(ssrc: int) -> bytes:
    """A BYE for ``ssrc`` (no reason text)."""
    body = struct.pack("!I", ssrc)
    return _header(1, PT_BYE, len(body)) + body


def _parse_blocks(data: bytes, offset: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    if offset + count * BLOCK_SIZE > end:
        raise RtcpError(f"{count} report blocks do not fit in the packet")
    blocks = []
    for i in range(count):
        ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(
            data, offset + i * BLOCK_SIZE
        )
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def parse_compound(data: bytes) -> list[SenderReport | ReceiverReport | Bye]:
    """The SRs, RRs and BYEs in one RTCP datagram (other packet types are skipped).

    Raises ``RtcpError`` when the datagram is not RTCP or a length is wrong.
    """
    packets: list[SenderReport | ReceiverReport | Bye] = []
    offset = 0
    if len(data) < _HEADER.size:
        raise RtcpError(f"too short for RTCP: {len(data)} bytes")
    while offset < len(data):
        if offset + _HEADER.size > len(data):
            raise RtcpError(f"truncated RTCP header at byte {offset}")
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        if first >> 6 != RTCP_VERSION:
            raise RtcpError(f"bad RTCP version {first >> 6} at byte {offset}")
        end = offset + 4 + words * 4
        if end > len(data):
            raise RtcpError(f"RTCP packet at byte {offset} runs past the datagram")
        count = first & 0x1F
        body = offset + 4
        if packet_type == PT_SR:
            if body + _SR_INFO.size + 4 > end:
                raise RtcpError("sender report too short")
            ssrc, msw, lsw, rtp_ts, sent = _SR_INFO.unpack_from(data, body)
            (octets,) = struct.unpack_from("!I", data, body + _SR_INFO.size)
            blocks = _parse_blocks(data, body + _SR_INFO.size + 4, count, end)
            packets.append(SenderReport(ssrc, msw << 32 | lsw, rtp_ts, sent, octets, blocks))
        elif packet_type == PT_RR:
            if body + 4 > end:
                raise RtcpError("receiver report too short")
            (ssrc,) = struct.unpack_from("!I", data, body)
            packets.append(ReceiverReport(ssrc, _parse_blocks(data, body + 4, count, end)))
        elif packet_type == PT_BYE:
            if body + 4 * count > end:
                raise RtcpError("BYE lists more sources than it holds")
            packets.append(Bye(struct.unpack_from(f"!{count}I", data, body)))
        offset = end
    return packets


@attrs.define
class ReceiverStats:
    """What we received from one source (RFC 3550 A.1, A.3, A.8)."""

    clock_rate: int
    ssrc: int | None = None
    base_seq: int = 0
    max_seq: int = 0
    cycles: int = 0
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    transit: float | None = None
    jitter: float = 0.0  # timestamp units

    def update(self, ssrc: int, sequence: int, timestamp: int, arrival: float) -> None:
        """Count one packet that arrived at ``arrival`` (seconds, any steady clock)."""
        if ssrc != self.ssrc:
            self._restart(ssrc, sequence)
        else:
            delta = (sequence - self.max_seq) % SEQ_MOD
            if 0 < delta < MAX_DROPOUT:
                if sequence < self.max_seq:
                    self.cycles += SEQ_MOD
                self.max_seq = sequence
            elif MAX_DROPOUT <= delta <= SEQ_MOD - MAX_MISORDER:
                self._restart(ssrc, sequence)  # the sender restarted its numbering
            # else a duplicate or a late packet: counted, the highest stays
        self.received += 1
        transit = arrival * self.clock_rate - timestamp
        if self.transit is not None:
            difference = abs(transit - self.transit)
            self.jitter += (difference - self.jitter) / JITTER_GAIN
        self.transit = transit

    def _restart(self, ssrc: int, sequence: int) -> None:
        self.ssrc = ssrc
        self.base_seq = self.max_seq = sequence
        self.cycles = self.received = self.expected_prior = self.received_prior = 0
        self.transit = None
        self.jitter = 0.0

    @property
    def extended_max(self) -> int:
        """The highest sequence number with its wrap count."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets the sequence numbers say were sent."""
        return self.extended_max - self.base_seq + 1 if self.ssrc is not None else 0

    @property
    def lost(self) -> int:
        """Expected minus received (negative with duplicates, as A.3 allows)."""
        return self.expected - self.received

    def interval_fraction(self) -> int:
        """Fraction lost since the last call (A.3), 0–255; moves the interval on."""
        expected = self.expected - self.expected_prior
        received = self.received - self.received_prior
        self.expected_prior, self.received_prior = self.expected, self.received
        lost = expected - received
        if expected <= 0 or lost <= 0:
            return 0
        return min(FRACTION_ONE - 1, lost * FRACTION_ONE // expected)


@attrs.define
class RtcpSession:
    """One call's RTCP state (see the module docstring)."""

    clock_rate: int
    cname: str = attrs.field(factory=lambda: f"waihu-{secrets.token_hex(6)}")
    ssrc: int = attrs.field(factory=lambda: secrets.randbits(32))  # until we send RTP
    packets_sent: int = 0
    octets_sent: int = 0
    last_rtp_timestamp: int = 0
    last_sent_at: float | None = None  # steady-clock time of our last RTP packet
    sent_since_report: bool = False
    remote: ReceiverStats = attrs.field(init=False)
    last_sr_middle: int = 0  # of the far end's last SR
    last_sr_arrival: float | None = None  # steady-clock time it arrived
    rtt: float | None = None  # seconds, from its latest block about us
    remote_fraction_lost: float | None = None
    remote_jitter: float | None = None  # timestamp units, as the far end measured us
    remote_left: bool = False  # the far end sent BYE
    malformed: int = 0

    def __attrs_post_init__(self) -> None:
        self.remote = ReceiverStats(self.clock_rate)

    def sent(self, ssrc: int, timestamp: int, payload_octets: int, now: float) -> None:
        """One RTP packet of ours went out at ``now`` (steady clock)."""
        self.ssrc = ssrc
        self.packets_sent += 1
        self.octets_sent += payload_octets
        self.last_rtp_timestamp = timestamp
        self.last_sent_at = now
        self.sent_since_report = True

    def received(self, ssrc: int, sequence: int, timestamp: int, now: float) -> None:
        """One RTP packet from the far end was accepted at ``now`` (steady clock)."""
        self.remote.update(ssrc, sequence, timestamp, now)

    def report(self, now: float, wall: float, *, bye: bool = False) -> bytes:
        """Our compound report at steady time ``now`` and Unix time ``wall``."""
        blocks: tuple[ReportBlock, ...] = ()
        stats = self.remote
        if stats.ssrc is not None and stats.received:
            dlsr = 0
            if self.last_sr_arrival is not None:
                dlsr = int((now - self.last_sr_arrival) * SHORT_FRACTION)
            blocks = (
                ReportBlock(
                    ssrc=stats.ssrc,
                    fraction_lost=stats.interval_fraction(),
                    cumulative_lost=stats.lost,
                    highest_sequence=stats.extended_max,
                    jitter=int(stats.jitter),
                    last_sr=self.last_sr_middle,
                    delay_since_last_sr=dlsr,
                ),
            )
        report: SenderReport | ReceiverReport
        if self.sent_since_report and self.last_sent_at is not None:
            # the RTP timestamp that corresponds to "now" on our media clock (§6.4.1)
            elapsed = int((now - self.last_sent_at) * self.clock_rate)
            report = SenderReport(
                ssrc=self.ssrc,
                ntp=ntp_time(wall),
                rtp_timestamp=self.last_rtp_timestamp + elapsed,
                packets=self.packets_sent,
                octets=self.octets_sent,
                blocks=blocks,
            )
        else:
            report = ReceiverReport(ssrc=self.ssrc, blocks=blocks)
        self.sent_since_report = False
        data = build_report(report) + build_sdes(self.ssrc, self.cname)
        return data + build_bye(self.ssrc) if bye else data

    def receive_rtcp(self, data: bytes, now: float, wall: float) -> None:
        """Take in one RTCP datagram from the far end, arrived at ``now``/``wall``."""
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.malformed += 1
            return
        for packet in packets:
            if isinstance(packet, Bye):
                self.remote_left = self.remote_left or self.remote.ssrc in packet.ssrcs
                continue
            if isinstance(packet, SenderReport):
                self.last_sr_middle = _middle(packet.ntp)
                self.last_sr_arrival = now
            for block in packet.blocks:
                if block.ssrc == self.ssrc:
                    self._about_us(block, wall)

    def _about_us(self, block: ReportBlock, wall: float) -> None:
        self.remote_fraction_lost = block.fraction_lost / FRACTION_ONE
        self.remote_jitter = float(block.jitter)
        if block.last_sr:
            # §6.4.1: A − LSR − DLSR, all in 1/65536 s, modulo 2^32
            arrival = _middle(ntp_time(wall))
            round_trip = (arrival - block.last_sr - block.delay_since_last_sr) & 0xFFFFFFFF
            if round_trip < 0x80000000:  # a negative result (clock steps) is no figure
                self.rtt = round_trip / SHORT_FRACTION
