"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1), parsed and written back.

For: the Request-URI, From/To/Contact/Route/Record-Route values, the host
and port a request is sent to, and finding what stands outside quoted strings
(``OutsideQuotes``, which ``message`` also splits header values with).
Numbers (ports) are ASCII digits only: ``str.isdigit`` also takes ``²`` and
``١٢``, which ``int`` then refuses or reads as 12 (``is_ascii_digits``).

A From or To may hold any URI scheme (RFC 4475 §3.3.4: ``isbn:…``,
``<http://…>``, and ``tel:`` from carriers): ``NameAddress.parse(…,
any_scheme=True)`` keeps such a URI as an ``AbsoluteUri``. Where we must send
to the URI (Contact, Route, Record-Route) the default stays SIP only.

What it is not: tel: URI semantics beyond the number, URI escaping rules
beyond keeping the text as it came, or header value splitting (see
``message``).

Error handling: everything malformed raises ``SipParseError`` with a one-line
reason naming the text; nothing else escapes for any input string.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import pairwise

import attrs

from waihu_sip.errors import SipParseError

__all__ = [
    "DEFAULT_SIP_PORT",
    "AbsoluteUri",
    "NameAddress",
    "OutsideQuotes",
    "SipUri",
    "is_ascii_digits",
    "parse_params",
    "parse_uri",
    "split_host_port",
]

DEFAULT_SIP_PORT = 5060  # RFC 3261 §19.1.2, UDP and TCP
MAX_PORT = 65535
# Of a value quoted in an error; above MAX_URI_CHARS of target.py (256), whose messages
# remove a " in '<text>'" suffix they expect whole.
MAX_SHOWN_CHARS = 300

_ASCII_DIGITS = re.compile(r"[0-9]+")  # [0-9], not \d: \d matches every Unicode digit
# RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# What may not stand in an unquoted display name. RFC 3261 §25.1 allows only *(token LWS);
# we refuse what changes how a header value splits or quotes (RFC 4475 §3.1.2.15: a comma
# splits a Contact list) and control characters, and let other separators ('@', ':', '(')
# and non-ASCII names through as Kamailio and most phones do.
_UNQUOTED_FORBIDDEN = frozenset(',;"\\<>' + "".join(map(chr, range(32))) + "\x7f") - {"\t"}


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut short so one bad header makes one short line."""
    if len(text) <= MAX_SHOWN_CHARS:
        return repr(text)
    return repr(text[:MAX_SHOWN_CHARS]) + f"… ({len(text)} characters)"


def is_ascii_digits(text: str) -> bool:
    """True when ``text`` is one or more ASCII digits 0-9 and nothing else.

    ``str.isdigit`` is not this: it accepts ``²`` (which ``int`` refuses) and
    ``١٢`` (which ``int`` reads as 12).
    """
    return _ASCII_DIGITS.fullmatch(text) is not None


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; the port is None when absent."""
    text = text.strip()
    if not text:
        raise SipParseError("empty host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unclosed IPv6 reference in {_shown(text)}")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {_shown(text)}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        host = host.rstrip()  # RFC 3261 §25.1: COLON = SWS ":" SWS in a Via sent-by
    elif ":" in text:
        raise SipParseError(f"IPv6 address must be in brackets: {_shown(text)}")
    else:
        return text, None
    if not host:
        raise SipParseError(f"empty host in {_shown(text)}")
    port_text = port_text.strip()
    if not is_ascii_digits(port_text) or not 0 < int(port_text) <= MAX_PORT:
        raise SipParseError(f"bad port {port_text!r} in {_shown(text)}")
    return host, int(port_text)


def format_host_port(host: str, port: int | None) -> str:
    """The inverse of ``split_host_port``: brackets an IPv6 address."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` parameters (leading ``;`` optional); names are lower-cased.

    A value may be a quoted string; its quotes are kept off. A flag maps to None.
    """
    params: dict[str, str | None] = {}
    for part in _split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise SipParseError(f"parameter without a name in {_shown(text)}")
        value = value.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1]
        params[name] = value if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """``;name=value;flag`` text for ``params`` (empty string when there are none)."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


class OutsideQuotes:
    """The characters of ``text`` outside its quoted strings (RFC 3261 §25.1), with their index.

    Iterating yields ``(index, char)``; the quote marks and everything between
    them, backslash escapes included, are passed over. After a full walk,
    ``open`` is True when the text ended inside a quoted string.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.open = False

    def __iter__(self) -> Iterator[tuple[int, str]]:
        self.open = escaped = False
        for i, ch in enumerate(self.text):
            if escaped:
                escaped = False
            elif ch == "\\" and self.open:
                escaped = True
            elif ch == '"':
                self.open = not self.open
            elif not self.open:
                yield i, ch


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text:  # the common case, without a walk per character
        return text.split(sep)
    scan = OutsideQuotes(text)
    cuts = [i for i, ch in scan if ch == sep]
    if scan.open:
        raise SipParseError(f"unterminated quoted string in {_shown(text)}")
    return [text[start + 1 : end] for start, end in pairwise([-1, *cuts, len(text)])]


@attrs.frozen
class SipUri:
    """A ``sip:`` or ``sips:`` URI: ``sip:user@host:port;params?headers``."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = attrs.field(factory=dict, hash=False)
    headers: str = ""  # the part after '?', kept verbatim

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a URI; raises ``SipParseError`` naming what is wrong."""
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise SipParseError(f"not a sip: URI: {_shown(text)}")
        user: str | None = None
        if "@" in rest:
            # '@' is only the userinfo delimiter: params and headers must escape it (§25.1),
            # while the user part may hold '?' and ';' (RFC 4475 §3.1.1.2, §3.1.1.9)
            userinfo, _, rest = rest.partition("@")
            user = userinfo.partition(":")[0]  # a password in a URI is never used
            if not user:
                raise SipParseError(f"empty user part in {_shown(text)}")
        rest, _, headers = rest.partition("?")
        hostport, _, param_text = rest.partition(";")
        host, port = split_host_port(hostport)
        return cls(
            host=host,
            user=user,
            port=port,
            scheme=scheme,
            params=parse_params(param_text),
            headers=headers,
        )

    @property
    def loose_route(self) -> bool:
        """True when the URI carries ``lr`` (RFC 3261 §16.12 loose routing)."""
        return "lr" in self.params

    def transport_address(self) -> tuple[str, int]:
        """Host and port to send to (RFC 3263 resolution is reduced to A records here)."""
        return self.host, self.port or DEFAULT_SIP_PORT

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        headers = f"?{self.headers}" if self.headers else ""
        hostport = format_host_port(self.host, self.port)
        return f"{self.scheme}:{user}{hostport}{format_params(self.params)}{headers}"


@attrs.frozen
class AbsoluteUri:
    """A URI of a scheme other than sip:/sips: (``tel:``, ``http:``, ``isbn:``…), kept as text.

    Nothing is ever sent to one; it is carried so that a From or To written
    with it (RFC 4475 §3.3.4) does not cost the message.
    """

    scheme: str  # lower-cased
    rest: str  # everything after the first ':', as written

    @classmethod
    def parse(cls, text: str) -> AbsoluteUri:
        """Parse ``scheme:rest``; raises ``SipParseError`` naming what is wrong."""
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME.fullmatch(scheme):
            raise SipParseError(f"not a URI (no scheme): {_shown(text)}")
        if not rest or any(c.isspace() or c in '<>"' for c in rest):
            raise SipParseError(f"malformed {scheme}: URI {_shown(text)}")
        return cls(scheme=scheme.lower(), rest=rest)

    @property
    def user(self) -> str | None:
        """The number of a ``tel:`` URI (RFC 3966), so a caller's number reads like a SIP user."""
        if self.scheme != "tel":
            return None
        return self.rest.partition(";")[0] or None

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


def parse_uri(text: str) -> SipUri | AbsoluteUri:
    """A ``SipUri`` for sip:/sips:, an ``AbsoluteUri`` for any other scheme."""
    scheme = text.strip().partition(":")[0].lower()
    return SipUri.parse(text) if scheme in ("sip", "sips") else AbsoluteUri.parse(text)


@attrs.frozen
class NameAddress:
    """A From/To/Contact/Route value: optional display name, a URI, header parameters.

    ``uri`` is a ``SipUri`` unless the value was parsed with ``any_scheme=True``
    and carries another scheme (then an ``AbsoluteUri``).
    """

    uri: SipUri | AbsoluteUri
    display: str | None = None
    params: dict[str, str | None] = attrs.field(factory=dict, hash=False)

    @classmethod
    def parse(cls, text: str, *, any_scheme: bool = False) -> NameAddress:
        """Parse ``"Name" <uri>;p=v``, ``Name <uri>`` or a bare ``uri;p=v``.

        Raises ``SipParseError`` for an unterminated quote, a missing ``>``, an
        unquoted display name holding a comma, semicolon, quote, backslash or
        control character (``Bell, Alexander <sip:…>``, RFC 4475 §3.1.2.15), a
        bare URI with ``?headers`` (RFC 3261 §20.10 requires <> then, RFC 4475
        §3.1.2.14) or a URI that does not parse. A scheme other than sip:/sips:
        is refused unless ``any_scheme``.
        """
        text = text.strip()
        read_uri = parse_uri if any_scheme else SipUri.parse
        scan = OutsideQuotes(text)
        if '"' in text:
            lt = next((i for i, ch in scan if ch == "<"), -1)
        else:  # the common case, without a walk per character
            lt = text.find("<")
        if lt < 0 and scan.open:
            raise SipParseError(f"unterminated quoted string in {_shown(text)}")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"missing '>' in {_shown(text)}")
            display = text[:lt].strip()
            if display.startswith('"'):
                if not display.endswith('"') or len(display) < 2:
                    raise SipParseError(f"bad quoted display name in {_shown(text)}")
                display = re.sub(r"\\(.)", r"\1", display[1:-1], flags=re.DOTALL)
            elif any(c in _UNQUOTED_FORBIDDEN for c in display):
                raise SipParseError(f"display name {display!r} must be quoted in {_shown(text)}")
            uri = read_uri(text[lt + 1 : gt])
            params = parse_params(text[gt + 1 :].strip())
            return cls(uri=uri, display=display or None, params=params)
        # addr-spec form: parameters after the URI belong to the header (§20)
        uri_text, _, param_text = text.partition(";")
        if "?" in uri_text:
            raise SipParseError(f"a URI with ?headers must be in <> in {_shown(text)}")
        return cls(uri=read_uri(uri_text), params=parse_params(param_text))

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter of a From or To value."""
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddress:
        """A copy carrying ``tag``."""
        return attrs.evolve(self, params={**self.params, "tag": tag})

    def __str__(self) -> str:
        display = ""
        if self.display:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{format_params(self.params)}"
