"""RFC 4733 telephone-event payloads: DTMF digits carried in RTP.

``parse_telephone_event`` decodes the four-octet payload of a
``telephone-event`` packet; ``build_telephone_event`` encodes one (used by
tests and by anything that sends digits). Mapping events to digits and
suppressing the retransmitted end packets is the caller's business.

What it is not: in-band (audio tone) DTMF detection.
"""

from __future__ import annotations

import struct

import attrs

__all__ = [
    "DTMF_EVENTS",
    "TelephoneEvent",
    "TelephoneEventError",
    "build_telephone_event",
    "parse_telephone_event",
]

PAYLOAD_SIZE = 4  # event, E/R/volume, duration (16 bits)
MAX_VOLUME = 63  # -dBm0, six bits
DTMF_EVENTS = "0123456789*#ABCD"  # event codes 0–15 of RFC 4733 §3.2

_PAYLOAD = struct.Struct("!BBH")


class TelephoneEventError(ValueError):
    """A telephone-event payload is malformed (too short)."""


@attrs.frozen
class TelephoneEvent:
    """One telephone-event report: the event code, whether it ended, volume and duration."""

    event: int
    end: bool
    volume: int
    duration: int  # in timestamp units since the event began

    @property
    def digit(self) -> str | None:
        """The DTMF character for events 0–15, None for other events (flash, tones…)."""
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Decode the payload; raises ``TelephoneEventError`` when it is shorter than 4 bytes."""
    if len(payload) < PAYLOAD_SIZE:
        raise TelephoneEventError(
            f"telephone-event payload of {len(payload)} bytes; it needs {PAYLOAD_SIZE}"
        )
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return TelephoneEvent(
        event=event, end=bool(flags & 0x80), volume=flags & MAX_VOLUME, duration=duration
    )


def build_telephone_event(event: TelephoneEvent) -> bytes:
    """Encode one report as a four-octet payload."""
    flags = (0x80 if event.end else 0) | (event.volume & MAX_VOLUME)
    return _PAYLOAD.pack(event.event, flags, event.duration & 0xFFFF)
