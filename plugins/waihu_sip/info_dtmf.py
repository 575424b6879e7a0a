"""DTMF in SIP INFO bodies: read the digits a far end signals, write the ones we send.

Two body formats are in use by carriers and PBXs (neither has an RFC of its
own; RFC 6086 is the INFO framework):

- ``application/dtmf-relay`` (Cisco and most PBXs)::

      Signal=5
      Duration=160

  ``Signal`` is a digit 0-9, ``*``, ``#`` or A-D; some send ``10`` for ``*``
  and ``11`` for ``#``. ``Duration`` is in milliseconds and optional;
- ``application/dtmf``: the body is the digit itself (``5``), same values.

``read_digits`` turns a body into digits; ``relay_body`` writes ours. An INFO
without a body (keep-alives some PBXs send) carries no digit and is fine.

What it is not: RFC 4733 telephone-events in RTP (the core's media layer
sends and reads those) or the INFO transaction itself (the leg).

Error handling: a content type we do not read raises ``UnsupportedInfo``
(the leg answers 415 with ``Accept``); a body of a known type that holds no
valid digit raises ``BadDtmfBody`` naming what is wrong (the leg answers 400).
"""

from __future__ import annotations

__all__ = [
    "ACCEPTED_TYPES",
    "DTMF_DIGITS",
    "DTMF_RELAY",
    "DTMF_TYPE",
    "BadDtmfBody",
    "UnsupportedInfo",
    "read_digits",
    "relay_body",
]

DTMF_RELAY = "application/dtmf-relay"
DTMF_TYPE = "application/dtmf"
ACCEPTED_TYPES = (DTMF_RELAY, DTMF_TYPE)
DTMF_DIGITS = "0123456789*#ABCD"  # the sixteen DTMF keys
EVENT_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}  # RFC 4733 §3.2
DEFAULT_DURATION_MS = 160  # a key press as most phones send it (≥ 40 ms is detectable)
MAX_DURATION_MS = 10_000  # longer is no key press: refuse rather than tell the far end nonsense


class UnsupportedInfo(ValueError):
    """An INFO body of a content type we do not read."""


class BadDtmfBody(ValueError):
    """A DTMF INFO body without a valid digit."""


def _digit(text: str, where: str) -> str:
    value = text.strip().upper()
    value = EVENT_CODES.get(value, value)
    if len(value) != 1 or value not in DTMF_DIGITS:
        raise BadDtmfBody(f"{where}: {text.strip()!r} is not a DTMF digit (0-9, *, #, A-D)")
    return value


def read_digits(content_type: str | None, body: bytes) -> str:
    """The digit(s) an INFO carries: "" for an empty body, else one digit.

    ``content_type`` is the Content-Type header as received (parameters such
    as ``;charset=`` are ignored, case too).
    """
    if not body.strip():
        return ""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise UnsupportedInfo(f"INFO body of type {media_type or '(none)'!r} is not DTMF")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise BadDtmfBody(f"{media_type} body is not ASCII") from None
    if media_type == DTMF_TYPE:
        return _digit(text, DTMF_TYPE)
    for line in text.splitlines():
        name, eq, value = line.partition("=")
        if eq and name.strip().lower() == "signal":
            return _digit(value, f"{DTMF_RELAY} Signal")
    raise BadDtmfBody(f"{DTMF_RELAY} body has no Signal= line")


def relay_body(digit: str, duration_ms: int = DEFAULT_DURATION_MS) -> bytes:
    """An ``application/dtmf-relay`` body for one key press; ValueError for a bad digit."""
    if len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
        raise ValueError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
    if not 0 < duration_ms <= MAX_DURATION_MS:
        raise ValueError(f"duration must be 1–{MAX_DURATION_MS} ms, not {duration_ms}")
    return f"Signal={digit.upper()}\r\nDuration={duration_ms}\r\n".encode("ascii")
