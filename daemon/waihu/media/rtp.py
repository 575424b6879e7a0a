"""RTP packets (RFC 3550): parse received datagrams, build outgoing ones.

``parse_rtp`` turns a datagram into an ``RtpPacket`` or raises ``RtpError``
naming what is wrong with it (its ``kind`` is a short fixed slug, so callers
can count and log each kind of damage once). ``RtpSender`` numbers the
packets of one outgoing stream: one SSRC, consecutive sequence numbers, a
timestamp advancing by the samples each packet carries.

What it is not: RTCP, SRTP, or pacing — the media clock decides when a packet
leaves; this module only says what its bytes are.
"""

from __future__ import annotations

import secrets
import struct

import attrs

__all__ = ["RTP_VERSION", "RtpError", "RtpPacket", "RtpSender", "build_rtp", "parse_rtp"]

RTP_VERSION = 2
HEADER_SIZE = 12  # fixed part of every RTP header
CSRC_SIZE = 4
EXTENSION_HEADER_SIZE = 4  # profile-defined 16 bits + length in 32-bit words
MAX_CSRC = 15
MAX_PAYLOAD_TYPE = 127
SEQUENCE_MODULO = 1 << 16
TIMESTAMP_MODULO = 1 << 32
# With rtcp-mux (RFC 5761) RTCP arrives on the RTP port; its packet types
# 192–223 sit where RTP keeps the marker bit and payload types 64–95, which
# RTP must not use for that reason.
RTCP_PACKET_TYPES = range(192, 224)

_FIXED = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram is not a usable RTP packet.

    ``kind`` is one of ``too_short``, ``bad_version``, ``truncated_csrc``,
    ``truncated_extension``, ``bad_padding``, ``rtcp``; the message says the details.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@attrs.frozen
class RtpPacket:
    """One RTP packet, header fields decoded, padding removed from ``payload``.

    ``padding`` is the number of padding octets the packet carried (0 if none);
    ``extension`` is ``(profile, data)`` of a header extension, or None.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0


def parse_rtp(data: bytes) -> RtpPacket:
    """Decode one datagram; raises ``RtpError`` naming what is wrong with it."""
    size = len(data)
    if size < HEADER_SIZE:
        raise RtpError(
            "too_short", f"too short for RTP: {size} bytes, the fixed header needs {HEADER_SIZE}"
        )
    first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError("bad_version", f"bad RTP version {version} (expected {RTP_VERSION})")
    has_padding = bool(first & 0x20)
    has_extension = bool(first & 0x10)
    csrc_count = first & 0x0F
    marker = bool(second & 0x80)
    payload_type = second & 0x7F
    if second in RTCP_PACKET_TYPES:
        raise RtpError("rtcp", f"RTCP packet (type {second}) on the RTP port; RTCP is not handled")

    offset = HEADER_SIZE
    end_of_csrcs = offset + CSRC_SIZE * csrc_count
    if size < end_of_csrcs:
        raise RtpError(
            "truncated_csrc",
            f"truncated CSRC list: {csrc_count} CSRCs need {end_of_csrcs} bytes, got {size}",
        )
    csrcs = struct.unpack_from(f"!{csrc_count}I", data, offset) if csrc_count else ()
    offset = end_of_csrcs

    extension: tuple[int, bytes] | None = None
    if has_extension:
        if size < offset + EXTENSION_HEADER_SIZE:
            raise RtpError(
                "truncated_extension", f"truncated header extension: {size} bytes in all"
            )
        profile, words = _EXT_HEADER.unpack_from(data, offset)
        offset += EXTENSION_HEADER_SIZE
        end_of_extension = offset + 4 * words
        if size < end_of_extension:
            raise RtpError(
                "truncated_extension",
                f"truncated header extension: {words} words need {end_of_extension} bytes, "
                f"got {size}",
            )
        extension = (profile, bytes(data[offset:end_of_extension]))
        offset = end_of_extension

    end = size
    padding = 0
    if has_padding:
        padding = data[-1]
        if padding == 0:
            raise RtpError("bad_padding", "bad padding: the padding bit is set but the count is 0")
        if padding > size - offset:
            raise RtpError(
                "bad_padding",
                f"bad padding: count {padding} exceeds the {size - offset} bytes after the header",
            )
        end = size - padding
    return RtpPacket(
        payload_type=payload_type,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=marker,
        csrcs=tuple(csrcs),
        extension=extension,
        padding=padding,
    )


def build_rtp(packet: RtpPacket) -> bytes:
    """Encode ``packet`` as a datagram (the inverse of ``parse_rtp``).

    Raises ``ValueError`` for fields out of range (more than 15 CSRCs, an
    extension whose data is not whole 32-bit words, padding outside 0–255).
    """
    if not 0 <= packet.payload_type <= MAX_PAYLOAD_TYPE:
        raise ValueError(f"payload type {packet.payload_type} outside 0–{MAX_PAYLOAD_TYPE}")
    if len(packet.csrcs) > MAX_CSRC:
        raise ValueError(f"{len(packet.csrcs)} CSRCs; RTP carries at most {MAX_CSRC}")
    if not 0 <= packet.padding <= 255:
        raise ValueError(f"padding {packet.padding} outside 0–255")
    first = (
        (RTP_VERSION << 6)
        | (0x20 if packet.padding else 0)
        | (0x10 if packet.extension is not None else 0)
        | len(packet.csrcs)
    )
    second = (0x80 if packet.marker else 0) | packet.payload_type
    parts = [
        _FIXED.pack(
            first,
            second,
            packet.sequence % SEQUENCE_MODULO,
            packet.timestamp % TIMESTAMP_MODULO,
            packet.ssrc,
        )
    ]
    if packet.csrcs:
        parts.append(struct.pack(f"!{len(packet.csrcs)}I", *packet.csrcs))
    if packet.extension is not None:
        profile, ext = packet.extension
        if len(ext) % 4:
            raise ValueError(f"header extension of {len(ext)} bytes is not whole 32-bit words")
        parts.append(_EXT_HEADER.pack(profile, len(ext) // 4))
        parts.append(ext)
    parts.append(packet.payload)
    if packet.padding:
        parts.append(bytes(packet.padding - 1) + bytes([packet.padding]))
    return b"".join(parts)


class RtpSender:
    """Numbers the packets of one outgoing RTP stream.

    SSRC, first sequence number and first timestamp are random unless given
    (RFC 3550 §5.1 asks for random starting values). Each ``next_packet``
    uses the current sequence number and timestamp, then advances them by one
    and by ``samples``.
    """

    def __init__(
        self,
        payload_type: int,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        if not 0 <= payload_type <= MAX_PAYLOAD_TYPE:
            raise ValueError(f"payload type {payload_type} outside 0–{MAX_PAYLOAD_TYPE}")
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.sequence = secrets.randbits(16) if sequence is None else sequence % SEQUENCE_MODULO
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp % TIMESTAMP_MODULO
        self.packets_sent = 0
        self.octets_sent = 0  # payload octets, as RTCP counts them

    def next_packet(self, payload: bytes, samples: int, marker: bool = False) -> bytes:
        """The datagram for the next ``samples`` samples of audio, encoded as ``payload``."""
        return self._packet(payload, self.payload_type, self.timestamp, marker, samples)

    def event_packet(
        self,
        payload: bytes,
        *,
        payload_type: int,
        timestamp: int,
        marker: bool = False,
        samples: int = 0,
    ) -> bytes:
        """A datagram of another payload type in this stream (an RFC 4733 telephone-event):
        the next sequence number, the given ``timestamp``; the stream's own clock then
        advances by ``samples`` (a frame's worth once per frame, 0 for a repeated report)."""
        if not 0 <= payload_type <= MAX_PAYLOAD_TYPE:
            raise ValueError(f"payload type {payload_type} outside 0–{MAX_PAYLOAD_TYPE}")
        return self._packet(payload, payload_type, timestamp, marker, samples)

    def _packet(
        self, payload: bytes, payload_type: int, timestamp: int, marker: bool, samples: int
    ) -> bytes:
        header = _FIXED.pack(
            0x80,  # version 2, no padding, no extension, no CSRCs
            (0x80 if marker else 0) | payload_type,
            self.sequence,
            timestamp % TIMESTAMP_MODULO,
            self.ssrc,
        )
        self.sequence = (self.sequence + 1) % SEQUENCE_MODULO
        self.timestamp = (self.timestamp + samples) % TIMESTAMP_MODULO
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return header + payload
