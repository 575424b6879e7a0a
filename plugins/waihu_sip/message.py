"""SIP messages (RFC 3261 §7, §20): parse a datagram, build and serialise requests and responses.

Parsing is forgiving where RFC 3261 asks for it (compact header forms such as
``i``/``f``/``t``/``v``/``m``/``l``/``c``, header names in any case, folded
continuation lines, bare LF line ends, several Via values on one line or many,
LWS inside a Via's ``SIP / 2.0 / UDP``, ``sip/2.0`` in lower case, a From or
To of any URI scheme) and strict where a wrong guess would harm a call: a
message missing Via, From, To, Call-ID or CSeq, with two of Call-ID, CSeq,
From, To, Max-Forwards or Content-Length, with a CSeq method that disagrees
with the request line, a Request-URI in <> or carrying ?headers, a number that
is not ASCII digits, or a body shorter than its Content-Length raises
``SipParseError`` naming the line and the problem ("line 4: Content-Length
'x' is not a number"). Bytes that are not UTF-8 survive a round trip
untouched (surrogate escapes), so a display name in another encoding never
loses a call. ``tests/test_sip_torture.py`` holds every RFC 4475 message to
these rules.

Error handling: ``parse_message`` raises ``SipParseError`` and nothing else,
for any bytes. When a malformed *request* still names where an answer would
go (a request line, a top Via that parses, a CSeq), the error carries the
answer a UAS owes it (``SipParseError.response``: 400 Bad Request, or 505 for
another SIP version); the receive loop sends it. A response, an ACK, or a
request without those never gets one (RFC 3261 §17.2.1, §18.3): it is dropped.

Not for: transactions, dialogs or transport — this module only turns bytes
into values and back.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Iterable, Iterator

import attrs

from waihu_sip.address import (
    NameAddress,
    OutsideQuotes,
    SipUri,
    format_host_port,
    format_params,
    is_ascii_digits,
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
MAX_MAX_FORWARDS = 255  # RFC 3261 §20.22: Max-Forwards is 0-255
MAX_EXPIRES = 2**32 - 1  # RFC 3261 §20.19: delta-seconds up to 2**32-1
TAG_BYTES = 4  # random bytes in the To tag of a 400 we answer a broken request with
MAX_WARNING_CHARS = 120  # of the problem text echoed in the Warning of such a 400
WARNING_MISC = 399  # RFC 3261 §20.43: miscellaneous warning
WARN_AGENT = "waihu"  # a pseudonym: the parser does not know our host name
BAD_REQUEST = 400
VERSION_NOT_SUPPORTED = 505

# Headers a message carries once (RFC 3261 §7.3.1 lists them as not comma-separated; RFC 4475
# §3.3.8, §3.3.9): two of them make the message ambiguous, so it is refused.
SINGLE_VALUED = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length")
# Headers copied into the 400 we owe a malformed request (RFC 3261 §8.2.6.2).
_ANSWER_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

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

NAME_CACHE_SIZE = 512  # header names whose canonical spelling is remembered
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# RFC 3261 §20.42: sent-protocol = protocol-name SLASH protocol-version SLASH transport, where
# SLASH = SWS "/" SWS: LWS may stand around each slash (RFC 4475 §3.1.1.1).
_VIA_PROTOCOL = re.compile(r"\s*([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/;]+)\s+(.+)", re.DOTALL)
# RFC 3986 §3.1 scheme, then anything without spaces or <>: an absoluteURI as far as a
# Request-URI of an unknown scheme can be judged (RFC 4475 §3.3.2, §3.3.3).
_REQUEST_URI = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>\"]+")
_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)

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
    505: "Version Not Supported",
    603: "Decline",
}


@functools.lru_cache(maxsize=NAME_CACHE_SIZE)  # bounded: a peer may invent any number of names
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
    if '"' not in value and "<" not in value:  # the common case, without a walk per character
        return [p for p in (part.strip() for part in value.split(",")) if p]
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
        """Parse one Via value; raises ``SipParseError``.

        LWS may stand around the slashes and before the parameters (``SIP / 2.0
        / UDP host ; branch = x``); the protocol name is case-insensitive.
        """
        match = _VIA_PROTOCOL.fullmatch(text)
        if match is None:
            raise SipParseError(f"Via {text.strip()[:60]!r} is not 'SIP/2.0/transport host'")
        name, version, transport, rest = match.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"Via protocol {name}/{version} is not SIP/2.0")
        sent_by, _, param_text = rest.strip().partition(";")
        host, port = split_host_port(sent_by)
        return cls(
            transport=transport.upper(), host=host, port=port, params=parse_params(param_text)
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
        if len(parts) != 2 or not _TOKEN.match(parts[1]):
            raise SipParseError(f"bad CSeq {text.strip()[:60]!r}: not 'number METHOD'")
        if not is_ascii_digits(parts[0]):
            raise SipParseError(
                f"bad CSeq {text.strip()[:60]!r}: {parts[0][:20]!r} is not a number"
            )
        number = int(parts[0])
        if number > MAX_CSEQ:
            raise SipParseError(f"CSeq number {number} is too large (above 2**31-1)")
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
        """The parsed From value (any URI scheme: its ``uri`` may be an ``AbsoluteUri``)."""
        return NameAddress.parse(self._required("From"), any_scheme=True)

    @property
    def to(self) -> NameAddress:
        """The parsed To value (any URI scheme: its ``uri`` may be an ``AbsoluteUri``)."""
        return NameAddress.parse(self._required("To"), any_scheme=True)

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255), None when absent; raises ``SipParseError`` when malformed."""
        return self._number("Max-Forwards", MAX_MAX_FORWARDS)

    @property
    def expires(self) -> int | None:
        """The Expires header in seconds, None when absent; ``SipParseError`` when malformed."""
        return self._number("Expires", MAX_EXPIRES)

    def _number(self, name: str, highest: int) -> int | None:
        value = self.headers.get(name)
        if value is None:
            return None
        value = value.strip()
        if not is_ascii_digits(value):
            raise SipParseError(f"{name} {value[:20]!r} is not a number")
        number = int(value)
        if number > highest:
            raise SipParseError(f"{name} {number} is above {highest}")
        return number

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
    if to_tag and NameAddress.parse(to, any_scheme=True).tag is None:
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
    """Parse one datagram into a request or response.

    Raises ``SipParseError`` (and nothing else) naming the line and the
    problem; for a request that can still be answered the error carries that
    answer in ``response`` (see the module docstring).
    """
    data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: ignore empty lines before the start line
    if not data:
        raise SipParseError("empty message")
    end = _HEADER_END.search(data)
    head = data if end is None else data[: end.start()]
    body = b"" if end is None else data[end.end() :]
    lines = head.decode(ENCODING, ERRORS).replace("\r\n", "\n").split("\n")
    start_line, header_lines = lines[0].strip(), lines[1:]
    is_response = start_line.upper().startswith("SIP/")
    try:
        if end is None:
            raise SipParseError("no blank line after the headers")
        return _parse(start_line, header_lines, body, is_response)
    except SipParseError as exc:
        if not is_response:
            exc.response = _answer_to_broken(start_line, header_lines, exc)
        raise


def _parse(
    start_line: str, header_lines: list[str], body: bytes, is_response: bool
) -> SipRequest | SipResponse:
    headers, line_of = _parse_header_lines(header_lines)
    for name in SINGLE_VALUED:
        lines_with = line_of.get(name, [])
        if len(lines_with) > 1:
            raise SipParseError(
                f"line {lines_with[1]}: a second {name} (the first is on line {lines_with[0]})"
            )

    length_text = headers.get("Content-Length")
    if length_text is not None:
        length_text = length_text.strip()
        if not is_ascii_digits(length_text):
            raise SipParseError(
                f"line {line_of['Content-Length'][0]}: "
                f"Content-Length {length_text[:20]!r} is not a number"
            )
        length = int(length_text)
        if length > len(body):
            raise SipParseError(
                f"line {line_of['Content-Length'][0]}: "
                f"Content-Length says {length} bytes, the body has {len(body)}"
            )
        body = body[:length]  # RFC 3261 §18.3: bytes beyond Content-Length are discarded

    message: SipRequest | SipResponse
    if is_response:
        message = _parse_status_line(start_line, headers, body)
    else:
        message = _parse_request_line(start_line, headers, body)
    _check_core_headers(message, line_of)
    return message


def _parse_header_lines(lines: list[str]) -> tuple[Headers, dict[str, list[int]]]:
    """The header fields, and the line numbers (start line = 1) each name appears on."""
    fields: list[tuple[str, str]] = []
    line_of: dict[str, list[int]] = {}
    for number, line in enumerate(lines, 2):
        if line[:1] in (" ", "\t"):  # folded continuation of the previous field (§7.3.1)
            if not fields:
                raise SipParseError(f"line {number}: continuation line before any header")
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            raise SipParseError(f"line {number}: bad header line {line[:60]!r} (not 'name: value')")
        fields.append((name, value.strip()))
        line_of.setdefault(canonical_name(name), []).append(number)
    return Headers(fields), line_of


def _parse_status_line(line: str, headers: Headers, body: bytes) -> SipResponse:
    parts = line.split(" ", 2)
    if len(parts) < 2 or parts[0].upper() != SIP_VERSION:
        raise SipParseError(f"line 1: bad status line {line[:60]!r} (not 'SIP/2.0 code reason')")
    code = parts[1]
    if not (is_ascii_digits(code) and len(code) == 3 and 100 <= int(code) <= 699):
        raise SipParseError(f"line 1: status code {code[:20]!r} is not a number 100-699")
    reason = parts[2].strip() if len(parts) == 3 else ""
    return SipResponse(headers=headers, body=body, status=int(code), reason=reason)


def _parse_request_line(line: str, headers: Headers, body: bytes) -> SipRequest:
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        raise SipParseError(f"line 1: bad request line {line[:60]!r} (not 'METHOD uri SIP/2.0')")
    if parts[2].upper() != SIP_VERSION:
        status = VERSION_NOT_SUPPORTED if _VERSION.fullmatch(parts[2]) else BAD_REQUEST
        raise SipParseError(f"line 1: unsupported version {parts[2][:20]!r}", status=status)
    uri = parts[1]
    if not _REQUEST_URI.fullmatch(uri):
        raise SipParseError(f"line 1: Request-URI {uri[:60]!r} is not a URI")
    if uri.partition(":")[0].lower() in ("sip", "sips"):
        try:
            parsed = SipUri.parse(uri)
        except SipParseError as exc:
            raise SipParseError(f"line 1: Request-URI: {exc}") from None
        if parsed.headers:  # RFC 3261 §19.1.5: headers are not allowed in a Request-URI
            raise SipParseError(f"line 1: Request-URI {uri[:60]!r} carries ?headers")
    return SipRequest(headers=headers, body=body, method=parts[0].upper(), uri=uri)


def _check_core_headers(message: SipRequest | SipResponse, line_of: dict[str, list[int]]) -> None:
    """Parse the headers every message needs, so a bad one is refused here, not mid-call."""

    def at(name: str, exc: SipParseError) -> SipParseError:
        return SipParseError(f"line {line_of[name][0]}: {exc}")

    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if message.headers.get(name) is None:
            raise SipParseError(f"missing {name}")
    try:
        cseq = message.cseq
    except SipParseError as exc:
        raise at("CSeq", exc) from None
    for name in ("From", "To"):
        try:
            NameAddress.parse(message.headers.get(name) or "", any_scheme=True)
        except SipParseError as exc:
            raise at(name, exc) from None
    for name in ("Via", "Contact"):
        for value in message.headers.get_all(name):
            try:
                if name == "Via":
                    Via.parse(value)
                elif value != "*":  # a REGISTER's "remove every binding" (§10.2.2)
                    NameAddress.parse(value, any_scheme=True)
            except SipParseError as exc:
                raise at(name, exc) from None
    try:
        message.max_forwards  # noqa: B018 — parsed only to refuse a bad one
    except SipParseError as exc:
        raise at("Max-Forwards", exc) from None
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise at(
            "CSeq",
            SipParseError(f"CSeq method {cseq.method} differs from request {message.method}"),
        )


_CSEQ_SHAPE = re.compile(r"[0-9]+[ \t]+[A-Za-z!%*_+`'~.-]+")


def _answer_to_broken(
    start_line: str, header_lines: list[str], error: SipParseError
) -> SipResponse | None:
    """The 400 (or 505) a UAS owes a request that did not parse, or None when none can go.

    Read leniently from whatever lines still make sense: an answer needs a
    request line that is not an ACK's, a top Via that parses (where the
    client's transaction listens) and a CSeq that parses (what it matches on).
    """
    method = start_line.split(" ", 1)[0]
    if not _TOKEN.match(method) or method.upper() == "ACK":
        return None
    found: dict[str, list[str]] = {}
    name = ""
    for line in header_lines:
        if line[:1] in (" ", "\t"):
            if name in found:
                found[name][-1] += " " + line.strip()
            continue
        raw_name, colon, value = line.partition(":")
        name = canonical_name(raw_name) if colon and _TOKEN.match(raw_name.strip()) else ""
        if name in _ANSWER_HEADERS:
            found.setdefault(name, []).append(value.strip())
    vias = found.get("Via", [])  # copied as they came (§8.2.6.2), even a broken lower one
    top = split_list_value(vias[0]) if vias else []
    if not top or "CSeq" not in found:
        return None
    try:
        # a client matches the answer on its CSeq: one not even "digits METHOD" matches
        # nothing, and the answer would itself be a broken message (out of range is fine:
        # RFC 4475 §3.1.2.4 still wants the 400)
        if _CSEQ_SHAPE.fullmatch(found["CSeq"][0]) is None:
            return None
        # only where the answer goes matters here: a Via of another SIP version will do
        match = _VIA_PROTOCOL.fullmatch(top[0])
        if match is None:
            return None
        split_host_port(match.group(4).partition(";")[0])
    except SipParseError:
        return None
    headers = Headers(("Via", v) for v in vias)
    for name in ("From", "To", "Call-ID", "CSeq"):
        if name in found:
            headers.add(name, found[name][0])
    to = headers.get("To")
    if to is not None and _tagless(to):  # RFC 3261 §8.2.6.2: a UAS adds its To tag
        headers.set("To", f"{to};tag={secrets.token_hex(TAG_BYTES)}")
    problem = "".join(c if c.isascii() and c.isprintable() else "?" for c in str(error))
    problem = problem.replace("\\", "/").replace('"', "'")[:MAX_WARNING_CHARS]
    headers.add("Warning", f'{WARNING_MISC} {WARN_AGENT} "{problem}"')
    status = error.status
    return SipResponse(headers=headers, body=b"", status=status, reason=REASON_PHRASES[status])


def _tagless(to: str) -> bool:
    try:
        return NameAddress.parse(to, any_scheme=True).tag is None
    except SipParseError:
        return False  # a To we cannot read is copied as it came
