"""Session descriptions (RFC 4566) for one audio stream, and the offer/answer rules (RFC 3264).

We always offer: G.711 in the configured order plus RFC 4733 telephone-event,
20 ms packets, sendrecv. From the answer we take the media address, the codec
(the first format of the answer that we offered) and the telephone-event
payload type.

Numbers (ports, payload types, clock rates, ptime, o= session id and
version) are ASCII digits only: ``str.isdigit`` also takes ``²`` and ``١٢``.
A connection address must be an IP address of the family its c= line names:
host names are not resolved here, and anything else would only fail later,
mid-call, at the RTP socket.

Error handling: ``parse_sdp`` raises ``SdpError`` naming the line and the
problem ("line 6: media port '²' is not a number 0-65535") and nothing else,
for any bytes.

Not for: video, several media streams, ICE, SRTP or answering offers other
than a re-INVITE's (where the same rules pick the codec).
"""

from __future__ import annotations

import ipaddress

import attrs

from waihu.api import FRAME_MS, Codec
from waihu_sip.address import is_ascii_digits
from waihu_sip.errors import SdpError

__all__ = [
    "KNOWN_CODECS",
    "TELEPHONE_EVENT_PT",
    "SessionDescription",
    "answer_direction",
    "build_offer",
    "build_sdp",
    "choose_codec",
    "parse_sdp",
]

# RFC 3551 static payload types for the codecs this release speaks.
KNOWN_CODECS: dict[str, Codec] = {
    "PCMU": Codec("PCMU", 0, 8000),
    "PCMA": Codec("PCMA", 8, 8000),
}
TELEPHONE_EVENT_PT = 101  # dynamic payload type we offer for RFC 4733 DTMF events
TELEPHONE_EVENT_FMTP = "0-16"  # digits 0-9, *, #, A-D and flash
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_PORT = 65535
MAX_PAYLOAD_TYPE = 127  # RFC 3550 §5.1: PT is 7 bits
MAX_CLOCK_RATE = 2**32 - 1  # the RTP timestamp is 32 bits
MAX_PTIME = 1000  # ms; RFC 4566 §6 sets no bound, a second of audio per packet is absurd
ORIGIN_FIELDS = (
    6  # RFC 4566 §5.2: o=<username> <sess-id> <sess-version> <nettype> <addrtype> <addr>
)


@attrs.frozen
class SessionDescription:
    """The parts of an SDP body that matter for one audio call."""

    host: str  # connection address of the audio stream
    port: int  # 0 means the stream was rejected
    formats: tuple[int, ...]  # payload types of the m=audio line, in preference order
    rtpmap: dict[int, tuple[str, int]] = attrs.field(factory=dict, hash=False)
    direction: str = "sendrecv"
    ptime: int | None = None
    session_version: int | None = None  # o= sess-version: a re-offer that keeps it changes nothing
    fmtp: dict[int, str] = attrs.field(factory=dict, hash=False)  # a=fmtp parameters by format

    def encoding_of(self, payload_type: int) -> tuple[str, int] | None:
        """(encoding name upper-cased, clock rate) of a format, static or mapped."""
        if payload_type in self.rtpmap:
            return self.rtpmap[payload_type]
        for codec in KNOWN_CODECS.values():
            if codec.payload_type == payload_type:
                return codec.name, codec.clock_rate
        return None

    @property
    def telephone_event_pt(self) -> int | None:
        """The payload type of telephone-event/8000 among the formats, if any."""
        for pt in self.formats:
            if self.rtpmap.get(pt) == ("TELEPHONE-EVENT", 8000):
                return pt
        return None


def build_offer(
    *,
    host: str,
    port: int,
    codecs: list[str],
    session_id: int,
    version: int = 1,
) -> bytes:
    """Our SDP offer: the named G.711 codecs in order, then telephone-event, sendrecv."""
    return build_sdp(
        host=host,
        port=port,
        codecs=[KNOWN_CODECS[name] for name in codecs],
        dtmf_payload_type=TELEPHONE_EVENT_PT,
        session_id=session_id,
        version=version,
    )


def build_sdp(
    *,
    host: str,
    port: int,
    codecs: list[Codec],
    dtmf_payload_type: int | None,
    session_id: int,
    version: int,
    direction: str = "sendrecv",
) -> bytes:
    """An SDP body with one audio stream of ``codecs`` (+ telephone-event when given)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    family = "IP6" if _is_ipv6(host) else "IP4"
    formats = [c.payload_type for c in codecs]
    if dtmf_payload_type is not None:
        formats.append(dtmf_payload_type)
    lines = [
        "v=0",
        f"o=waihu {session_id} {version} IN {family} {host}",
        "s=waihu",
        f"c=IN {family} {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt in formats)}",
    ]
    lines.extend(f"a=rtpmap:{c.payload_type} {c.name}/{c.clock_rate}" for c in codecs)
    if dtmf_payload_type is not None:
        lines.append(f"a=rtpmap:{dtmf_payload_type} telephone-event/8000")
        lines.append(f"a=fmtp:{dtmf_payload_type} {TELEPHONE_EVENT_FMTP}")
    lines.append(f"a=ptime:{FRAME_MS}")
    lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def answer_direction(offered: str) -> str:
    """The direction that answers ``offered`` (RFC 3264 §6.1): send-only ↔ receive-only."""
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offered, offered)


@attrs.define
class _AudioSection:
    """The first m=audio section while it is being read."""

    port: int
    formats: tuple[int, ...]
    host: str | None = None
    rtpmap: dict[int, tuple[str, int]] = attrs.field(factory=dict)
    fmtp: dict[int, str] = attrs.field(factory=dict)
    direction: str | None = None
    ptime: int | None = None


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse the first audio stream of an SDP body; raises ``SdpError`` naming the problem."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    session_host: str | None = None
    session_direction = "sendrecv"
    audio: _AudioSection | None = None
    in_audio = False  # inside the audio section we keep (not a later m= section)
    seen_version = False
    session_version: int | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {number} is not type=value: {line[:40]!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "v":
            if value != "0":
                raise SdpError(f"line {number}: unsupported SDP version {value[:20]!r}")
            seen_version = True
        elif kind == "o":
            session_version = _parse_origin(value, number)
        elif kind == "m":
            in_audio = audio is None and value.startswith("audio ")
            if in_audio:
                audio = _parse_media_line(value, number)
        elif kind == "c":
            host = _parse_connection(value, number)
            if in_audio and audio is not None:
                audio.host = host
            elif audio is None:
                session_host = host
        elif kind == "a":
            name, _, arg = value.partition(":")
            if in_audio and audio is not None:
                _apply_media_attribute(audio, name, arg, number)
            elif audio is None and name in DIRECTIONS:
                session_direction = name
    if not seen_version:
        raise SdpError("no v= line")
    if audio is None:
        raise SdpError("no m=audio stream")
    host = audio.host or session_host
    if host is None:
        raise SdpError("no c= connection address for the audio stream")
    return SessionDescription(
        host=host,
        port=audio.port,
        formats=audio.formats,
        rtpmap=audio.rtpmap,
        direction=audio.direction or session_direction,
        ptime=audio.ptime,
        session_version=session_version,
        fmtp=audio.fmtp,
    )


def choose_codec(answer: SessionDescription, offered: list[str]) -> Codec | None:
    """The first format of ``answer`` that is one of the ``offered`` codec names (RFC 3264 §6.1).

    The answer's own payload type number is kept (a peer may remap); None when
    nothing matches or the stream was rejected (port 0).
    """
    if answer.port == 0:
        return None
    for pt in answer.formats:
        encoding = answer.encoding_of(pt)
        if encoding is None:
            continue
        name, rate = encoding
        if name in offered and rate == KNOWN_CODECS[name].clock_rate:
            return Codec(name, pt, rate)
    return None


def _number(text: str, what: str, highest: int, number: int) -> int:
    """``text`` as an int 0..``highest``; raises ``SdpError`` naming the line and field."""
    if not is_ascii_digits(text) or int(text) > highest:
        raise SdpError(f"line {number}: {what} {text[:20]!r} is not a number 0-{highest}")
    return int(text)


def _parse_origin(value: str, number: int) -> int:
    """The sess-version of an o= line (sess-id is checked, not kept)."""
    parts = value.split()
    if len(parts) != ORIGIN_FIELDS:
        raise SdpError(f"line {number}: o= needs 6 fields, not {value[:60]!r}")
    for field, text in (("session id", parts[1]), ("session version", parts[2])):
        if not is_ascii_digits(text):
            raise SdpError(f"line {number}: o= {field} {text[:20]!r} is not a number")
    return int(parts[2])


def _parse_media_line(value: str, number: int) -> _AudioSection:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"line {number}: m= needs media, port, proto and formats")
    port = _number(parts[1].partition("/")[0], "media port", MAX_PORT, number)
    if not parts[2].upper().startswith("RTP/"):
        raise SdpError(f"line {number}: unsupported media protocol {parts[2][:20]!r}")
    formats = tuple(_number(f, "RTP payload type", MAX_PAYLOAD_TYPE, number) for f in parts[3:])
    return _AudioSection(port=port, formats=formats)


def _parse_connection(value: str, number: int) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"line {number}: bad c= line {value[:60]!r}")
    address = parts[2].partition("/")[0]  # a multicast TTL suffix is not ours to use
    family = ipaddress.IPv4Address if parts[1] == "IP4" else ipaddress.IPv6Address
    try:
        family(address)
    except ValueError:
        raise SdpError(
            f"line {number}: c= address {address[:40]!r} is not an {parts[1]} address"
        ) from None
    return address


def _apply_media_attribute(audio: _AudioSection, name: str, arg: str, number: int) -> None:
    if name in DIRECTIONS:
        audio.direction = name
    elif name == "rtpmap":
        pt_text, _, encoding = arg.partition(" ")
        enc_parts = encoding.strip().split("/")
        if len(enc_parts) < 2:
            raise SdpError(f"line {number}: rtpmap {arg[:40]!r} is not 'type name/rate'")
        pt = _number(pt_text, "rtpmap payload type", MAX_PAYLOAD_TYPE, number)
        rate = _number(enc_parts[1], "rtpmap clock rate", MAX_CLOCK_RATE, number)
        audio.rtpmap[pt] = (enc_parts[0].upper(), rate)
    elif name == "fmtp":
        pt_text, _, params = arg.partition(" ")
        audio.fmtp[_number(pt_text, "fmtp payload type", MAX_PAYLOAD_TYPE, number)] = params.strip()
    elif name == "ptime":
        # a hint only (RFC 4566 §6): one we cannot read is left out rather than cost the call
        if is_ascii_digits(arg.strip()) and int(arg.strip()) <= MAX_PTIME:
            audio.ptime = int(arg.strip())


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False
