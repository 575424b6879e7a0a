"""SIP messages (RFC 3261 §7, §20): parse a datagram, build and serialise requests and responses.

Parsing is forgiving where RFC 3261 asks for it (compact header forms such as
``i``/``f``/``t``/``v``/``m``/``l``/``c``, header names in any case, folded
continuation lines, bare LF line ends, several Via values on one line or many)
and strict where a wrong guess would harm a call: a message missing Via,
From, To, Call-ID or CSeq, with a CSeq method that disagrees with the request
line, or with a body shorter than its Content-Length raises ``SipParseError``
naming the problem. Bytes that are not UTF-8 survive a round trip untouched
(surrogate escapes), so a display name in another encoding never loses a call.

Not for: transactions, dialogs or transport — this module only turns bytes
into values and back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import attrs

from waihu_sip.address import (
    NameAddress,
    OutsideQuotes,
    format_host_port,
    format_params,
    parse_params,
    split_host_port,
)
from waihu_sip.errors import SipParseError

__all__ = [
    "BRANCH_MAGIC",
    "REASON_PHRASES",
    "CSeq",
    "Headers",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "Via",
    "canonical_name",
    "parse_message",
]

SIP_VERSION = "SIP/2.0"
BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 §8.1.1.7: marks a branch as globally unique
ENCODING = "utf-8"
ERRORS = "surrogateescape"  # keep bytes that are not UTF-8 instead of failing on them
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: CSeq numbers are below 2**31

# RFC 3261 §7.3.3 and later RFCs' compact header names.
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Names whose usual spelling is not plain Title-Case-With-Dashes.
_SPECIAL_SPELLINGS = {
    name.lower(): name
    for name in (
        "Call-ID",
        "CSeq",
        "WWW-Authenticate",
        "MIME-Version",
        "RSeq",
        "RAck",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
    )
}

# Headers whose values may be joined with commas on one line (RFC 3261 §7.3.1).
_LIST_HEADERS = frozenset(
    {
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
    }
)

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_HEADER_END = re.compile(rb"\r?\n\r?\n")

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    603: "Decline",
}


def canonical_name(name: str) -> str:
    """The usual spelling of a header name: expands compact forms, fixes case."""
    lower = name.strip().lower()
    if lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    if lower in _SPECIAL_SPELLINGS:
        return _SPECIAL_SPELLINGS[lower]
    return "-".join(part.capitalize() for part in lower.split("-"))


def split_list_value(value: str) -> list[str]:
    """Split a comma-joined header value, leaving commas inside quotes and <> alone."""
    parts: list[str] = []
    start = angle = 0
    for i, ch in OutsideQuotes(value):
        if ch == "<":
            angle += 1
        elif ch == ">":
            angle = max(0, angle - 1)
        elif ch == "," and angle == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


class Headers:
    """An ordered list of header fields with case-insensitive, compact-aware names.

    Names are stored in canonical spelling; order is kept because Via, Route and
    Record-Route order carries meaning.
    """

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in fields]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    def get(self, name: str) -> str | None:
        """The first value of ``name`` as written (not split), or None."""
        wanted = canonical_name(name)
        for n, v in self._fields:
            if n == wanted:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; comma-joined list headers are split."""
        wanted = canonical_name(name)
        values: list[str] = []
        for n, v in self._fields:
            if n == wanted:
                values.extend(split_list_value(v) if wanted in _LIST_HEADERS else [v])
        return values

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        self._fields.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` with one, kept at the first one's place."""
        wanted = canonical_name(name)
        fields: list[tuple[str, str]] = []
        placed = False
        for field in self._fields:
            if field[0] != wanted:
                fields.append(field)
            elif not placed:
                fields.append((wanted, value))
                placed = True
        if not placed:
            fields.append((wanted, value))
        self._fields = fields

    def remove(self, name: str) -> None:
        """Drop every field called ``name``."""
        wanted = canonical_name(name)
        self._fields = [f for f in self._fields if f[0] != wanted]

    def copy(self) -> Headers:
        """A shallow copy."""
        return Headers(self._fields)


@attrs.frozen
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=…;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = attrs.field(factory=dict, hash=False)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via value; raises ``SipParseError``."""
        protocol, _, rest = text.strip().partition(" ")
        pieces = [p.strip() for p in protocol.split("/")]
        if len(pieces) != 3 or pieces[0].upper() != "SIP" or pieces[1] != "2.0":
            raise SipParseError(f"bad Via protocol {protocol!r}")
        sent_by, _, param_text = rest.strip().partition(";")
        host, port = split_host_port(sent_by)
        return cls(
            transport=pieces[2].upper(), host=host, port=port, params=parse_params(param_text)
        )

    @property
    def branch(self) -> str | None:
        """The transaction's branch parameter."""
        return self.params.get("branch")

    def __str__(self) -> str:
        hostport = format_host_port(self.host, self.port)
        return f"{SIP_VERSION}/{self.transport} {hostport}{format_params(self.params)}"


@attrs.frozen
class CSeq:
    """A CSeq value: sequence number and method."""

    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse ``"314159 INVITE"``; raises ``SipParseError``."""
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN.match(parts[1]):
            raise SipParseError(f"bad CSeq {text!r}")
        number = int(parts[0])
        if number > MAX_CSEQ:
            raise SipParseError(f"CSeq number {number} too large")
        return cls(number, parts[1].upper())

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@attrs.define
class SipMessage:
    """What requests and responses share: headers, body and accessors for core headers."""

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        return self._required("Call-ID")

    @property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        return CSeq.parse(self._required("CSeq"))

    @property
    def from_(self) -> NameAddress:
        """The parsed From value."""
        return NameAddress.parse(self._required("From"))

    @property
    def to(self) -> NameAddress:
        """The parsed To value."""
        return NameAddress.parse(self._required("To"))

    @property
    def vias(self) -> list[Via]:
        """Every Via, topmost first."""
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        """The topmost Via (the sender's own)."""
        values = self.headers.get_all("Via")
        if not values:
            raise SipParseError("missing Via")
        return Via.parse(values[0])

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name}")
        return value.strip()

    def _serialise(self, start_line: str) -> bytes:
        lines = [start_line]
        lines.extend(f"{n}: {v}" for n, v in self.headers if n != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode(ENCODING, ERRORS) + self.body


@attrs.define
class SipRequest(SipMessage):
    """A SIP request; ``uri`` is the Request-URI as text."""

    method: str = ""
    uri: str = ""

    def to_bytes(self) -> bytes:
        """The datagram to send; Content-Length is computed from the body."""
        return self._serialise(f"{self.method} {self.uri} {SIP_VERSION}")


@attrs.define
class SipResponse(SipMessage):
    """A SIP response."""

    status: int = 0
    reason: str = ""

    def to_bytes(self) -> bytes:
        """The datagram to send; Content-Length is computed from the body."""
        return self._serialise(f"{SIP_VERSION} {self.status} {self.reason}")

    @property
    def provisional(self) -> bool:
        """1xx."""
        return 100 <= self.status < 200

    @property
    def success(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response to ``request`` (RFC 3261 §8.2.6): Via, From, To, Call-ID, CSeq copied.

    ``to_tag`` is added to To unless the request's To already has a tag.
    """
    headers = Headers()
    for value in request.headers.get_all("Via"):
        headers.add("Via", value)
    headers.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    if to_tag and NameAddress.parse(to).tag is None:
        to = f"{to};tag={to_tag}"
    headers.add("To", to)
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", request.headers.get("CSeq") or "")
    for name, value in extra:
        headers.add(name, value)
    return SipResponse(
        headers=headers,
        body=body,
        status=status,
        reason=reason or REASON_PHRASES.get(status, "Unknown"),
    )


def is_keepalive(data: bytes) -> bool:
    """True for a CRLF keep-alive (RFC 5626 §4.4.1): nothing but line ends."""
    return not data.strip(b"\r\n")


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one datagram into a request or response; raises ``SipParseError``."""
    data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: ignore empty lines before the start line
    if not data:
        raise SipParseError("empty message")
    end = _HEADER_END.search(data)
    if end is None:
        raise SipParseError("no blank line after the headers")
    head = data[: end.start()].decode(ENCODING, ERRORS)
    body = data[end.end() :]
    lines = head.replace("\r\n", "\n").split("\n")
    start_line, header_lines = lines[0].strip(), lines[1:]
    headers = _parse_header_lines(header_lines)

    length_text = headers.get("Content-Length")
    if length_text is not None:
        if not length_text.strip().isdigit():
            raise SipParseError(f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > len(body):
            raise SipParseError(f"body is {len(body)} bytes, Content-Length says {length}")
        body = body[:length]  # RFC 3261 §18.3: bytes beyond Content-Length are discarded

    message: SipRequest | SipResponse
    if start_line.startswith(SIP_VERSION + " ") or start_line.upper().startswith("SIP/"):
        message = _parse_status_line(start_line, headers, body)
    else:
        message = _parse_request_line(start_line, headers, body)
    _check_core_headers(message)
    return message


def _parse_header_lines(lines: list[str]) -> Headers:
    fields: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):  # folded continuation of the previous field (§7.3.1)
            if not fields:
                raise SipParseError("continuation line before any header")
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            raise SipParseError(f"bad header line {line[:60]!r}")
        fields.append((name, value.strip()))
    return Headers(fields)


def _parse_status_line(line: str, headers: Headers, body: bytes) -> SipResponse:
    parts = line.split(" ", 2)
    if len(parts) < 2 or parts[0] != SIP_VERSION:
        raise SipParseError(f"bad status line {line[:60]!r}")
    if not (parts[1].isdigit() and len(parts[1]) == 3 and 100 <= int(parts[1]) <= 699):
        raise SipParseError(f"bad status code in {line[:60]!r}")
    reason = parts[2].strip() if len(parts) == 3 else ""
    return SipResponse(headers=headers, body=body, status=int(parts[1]), reason=reason)


def _parse_request_line(line: str, headers: Headers, body: bytes) -> SipRequest:
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        raise SipParseError(f"bad request line {line[:60]!r}")
    if parts[2] != SIP_VERSION:
        raise SipParseError(f"unsupported version {parts[2][:20]!r}")
    return SipRequest(headers=headers, body=body, method=parts[0].upper(), uri=parts[1])


def _check_core_headers(message: SipRequest | SipResponse) -> None:
    """Parse the headers every message needs, so a bad one is refused here, not mid-call."""
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if message.headers.get(name) is None:
            raise SipParseError(f"missing {name}")
    cseq = message.cseq
    for value in (message.headers.get("From"), message.headers.get("To")):
        NameAddress.parse(value or "")
    for value in message.headers.get_all("Via"):
        Via.parse(value)
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError(f"CSeq method {cseq.method} differs from request {message.method}")
