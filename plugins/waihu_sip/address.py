"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1), parsed and written back.

For: the Request-URI, From/To/Contact/Route/Record-Route values, the host
and port a request is sent to, and finding what stands outside quoted strings
(``OutsideQuotes``, which ``message`` also splits header values with). Not
for: tel: URIs, URI escaping rules beyond keeping the text as it came, or
header value splitting (see ``message``).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import attrs

from waihu_sip.errors import SipParseError

__all__ = [
    "DEFAULT_SIP_PORT",
    "NameAddress",
    "OutsideQuotes",
    "SipUri",
    "parse_params",
    "split_host_port",
]

DEFAULT_SIP_PORT = 5060  # RFC 3261 §19.1.2, UDP and TCP


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; the port is None when absent."""
    text = text.strip()
    if not text:
        raise SipParseError("empty host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unclosed IPv6 reference in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise SipParseError(f"junk after IPv6 reference in {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        raise SipParseError(f"IPv6 address must be in brackets: {text!r}")
    else:
        return text, None
    if not host:
        raise SipParseError(f"empty host in {text!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SipParseError(f"bad port {port_text!r} in {text!r}")
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
            raise SipParseError(f"parameter without a name in {text!r}")
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
    scan = OutsideQuotes(text)
    cuts = [i for i, ch in scan if ch == sep]
    if scan.open:
        raise SipParseError(f"unterminated quoted string in {text!r}")
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
            raise SipParseError(f"not a sip: URI: {text!r}")
        rest, _, headers = rest.partition("?")
        user: str | None = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user = userinfo.partition(":")[0]  # a password in a URI is never used
            if not user:
                raise SipParseError(f"empty user part in {text!r}")
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
class NameAddress:
    """A From/To/Contact/Route value: optional display name, a URI, header parameters."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = attrs.field(factory=dict, hash=False)

    @classmethod
    def parse(cls, text: str) -> NameAddress:
        """Parse ``"Name" <uri>;p=v``, ``Name <uri>`` or a bare ``uri;p=v``."""
        text = text.strip()
        lt = next((i for i, ch in OutsideQuotes(text) if ch == "<"), -1)
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"missing '>' in {text!r}")
            display = text[:lt].strip()
            if display.startswith('"'):
                if not display.endswith('"') or len(display) < 2:
                    raise SipParseError(f"bad quoted display name in {text!r}")
                display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            uri = SipUri.parse(text[lt + 1 : gt])
            params = parse_params(text[gt + 1 :].strip())
            return cls(uri=uri, display=display or None, params=params)
        # addr-spec form: parameters after the URI belong to the header (§20)
        uri_text, _, param_text = text.partition(";")
        return cls(uri=SipUri.parse(uri_text), params=parse_params(param_text))

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
