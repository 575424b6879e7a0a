"""The ``[trunk.NAME]`` table of a ``type = "sip"`` trunk, validated when the config loads.

Every validator names its key first (``local_port: must be …``) so the core can
report the full key path and file. Not for: runtime state of the trunk.
"""

from __future__ import annotations

import ipaddress

import attrs

from waihu.api import check
from waihu_sip.address import split_host_port
from waihu_sip.errors import SipParseError
from waihu_sip.guard import parse_allow_entry
from waihu_sip.sdp import KNOWN_CODECS
from waihu_sip.session_timer import ABSOLUTE_MIN_SE, DEFAULT_MIN_SE, DEFAULT_SESSION_EXPIRES

__all__ = ["SipTrunkConfig"]

DEFAULT_USER_AGENT = "waihu"
DEFAULT_PROBE_INTERVAL = 30.0  # seconds between OPTIONS probes (Asterisk qualifies every 60 s)
MIN_PROBE_INTERVAL = 1.0  # seconds; anything shorter floods the proxy for no news
MAX_PROBE_INTERVAL = 86400.0  # a day: a longer gap says nothing about the trunk now
DEFAULT_PROBE_FAILURES = 3  # unanswered probes (or calls) in a row before the trunk is failing
MAX_PROBE_FAILURES = 100
TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_SIPS_PORT = 5061  # RFC 3261 §26.2.2: TLS
MAX_SESSION_EXPIRES = 86400  # a day: a session timer longer than that guards nothing
DEFAULT_REGISTER_EXPIRES = 3600  # seconds asked of the registrar (RFC 3261 §10.2.1.1 default)
MIN_REGISTER_EXPIRES = 1  # 0 would be an unregistration, not a binding
MAX_REGISTER_EXPIRES = 2**31 - 1  # RFC 3261 §20.19: delta-seconds up to 2**32-1; kept signed
# Flood limits per source address. A busy trunk's proxy sends a few requests and responses per
# call set-up; 100 calls set up within a second stay well under 400 datagrams, while one
# flooding source is cut to this rate before any parsing (guard.py).
DEFAULT_FLOOD_RATE = 200.0  # datagrams per second per source
DEFAULT_FLOOD_BURST = 400.0  # datagrams at once from one source


def _is_host_port(text: str) -> bool:
    try:
        split_host_port(text)
    except SipParseError:
        return False
    return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_port_range(value: tuple[int, ...]) -> bool:
    return (
        len(value) == 2
        and 1024 <= value[0] < value[1] <= 65535
        and value[1] - value[0] >= 2  # room for at least one even port and its RTCP neighbour
    )


def _is_allow_entry(text: object) -> bool:
    if not isinstance(text, str) or not _no_space(text.replace("/", "")):
        return False
    try:
        parse_allow_entry(text)
    except ValueError:
        return False
    return True


def _no_space(text: str) -> bool:
    return bool(text) and not any(c.isspace() or c in '<>@;:"' for c in text)


@attrs.frozen(kw_only=True)
class SipTrunkConfig:
    """Settings of one SIP trunk (all IPv4, UDP).

    ``proxy``: host[:port] every new INVITE is sent to (the trunk or an
    outbound proxy); in-dialog requests follow Record-Route/Contact.
    ``domain``: host part of the Request-URI for a bare number (default: the
    proxy host). ``local_host``/``local_port``: where the signalling socket
    binds (port 0 = any free port; host 0.0.0.0 = every interface).
    ``public_host``: the address written into Via, Contact and SDP when it is
    not ``local_host`` (NAT, or a 0.0.0.0 bind: then the default is the
    address the kernel routes toward the proxy from). ``username``/``password``:
    digest credentials, both or neither. ``from_user``/``display_name``: our
    From when no caller ID is given. ``rtp_host``: where RTP sockets bind
    (default ``local_host``). ``rtp_ports``: [low, high] range for RTP ports
    (default: any free even port). ``codecs``: G.711 codecs in preference order.
    ``probe_interval``: seconds between SIP OPTIONS probes of the proxy (0 = no
    probing; the trunk is then ``up`` rather than ``reachable``).
    ``probe_failures``: how many probes in a row without an answer, or calls in
    a row that got no answer at all from the proxy, make the trunk ``failing``.
    ``transport``: ``udp`` (default), ``tcp`` or ``tls`` for all signalling
    (a ``tls`` proxy port defaults to 5061). ``tcp_fallback`` (UDP only,
    default true): requests over 1300 bytes go by TCP (RFC 3261 §18.1.1).
    ``tls_verify`` (default true): check the proxy's certificate against
    ``tls_ca`` (a PEM file; default the system's trust store) and the name
    ``tls_server_name`` (default the proxy host). ``tls_cert``/``tls_key``: our
    certificate and key (PEM), for a proxy that asks for a client certificate
    and for accepting TLS connections; ``tls_key`` may be left out when the
    certificate file holds the key. The ``tls_*`` keys need ``transport = "tls"``.
    ``session_expires``: the RFC 4028 session interval in seconds asked for on
    our INVITEs (0 = no session timer: none asked for, the far end's ignored);
    ``min_se``: the shortest interval we accept (a shorter one gets 422).
    ``register``: keep a registration with the registrar (RFC 3261 §10) as
    ``sip:username@domain``. ``registrar``: host[:port] of the registrar
    (default: the proxy). ``register_expires``: seconds of binding asked for;
    the registrar's answer decides. ``outbound_proxy``: host[:port] every
    out-of-dialog request (REGISTER, INVITE, OPTIONS) is sent to first, with a
    ``Route: <sip:outbound;lr>`` (§8.1.2). ``auth_username``: the digest user
    name when it is not ``username``. ``contact_user``: the user part of our
    Contact (default ``from_user``).
    ``numbers``: our numbers or SIP users this trunk takes inbound calls for
    (the INVITE's Request-URI user, else its To user; empty: no inbound calls).
    ``allow_from``: addresses, CIDR networks and host names (resolved at
    start-up and again every few minutes) that may send SIP to the trunk, on
    top of the proxy's own addresses, which are always allowed.
    ``unknown_sources``: what others get: ``"drop"`` (silence, the default)
    or ``"reject"`` (403 Forbidden). ``flood_rate``/``flood_burst``: datagrams
    per second, and at once, accepted from one source address; more are dropped
    unread. ``rtcp``: send and read RTCP reports on the port above each call's
    RTP port (RFC 3550).
    """

    proxy: str = attrs.field(
        validator=check(_is_host_port, "must be host or host:port, not {value!r}")
    )
    domain: str | None = attrs.field(
        default=None, validator=check(_no_space, "must be a host name, not {value!r}")
    )
    local_host: str = attrs.field(
        default="127.0.0.1", validator=check(_is_ip, "must be an IPv4 address, not {value!r}")
    )
    local_port: int = attrs.field(
        default=5060, validator=check(lambda v: 0 <= v <= 65535, "must be 0–65535, not {value}")
    )
    public_host: str | None = attrs.field(
        default=None, validator=check(_no_space, "must be a host name or address, not {value!r}")
    )
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    from_user: str = attrs.field(
        default="waihu", validator=check(_no_space, "must be a SIP user name, not {value!r}")
    )
    display_name: str | None = None
    rtp_host: str | None = attrs.field(
        default=None, validator=check(_is_ip, "must be an IPv4 address, not {value!r}")
    )
    rtp_ports: tuple[int, ...] | None = attrs.field(
        default=None,
        converter=attrs.converters.optional(tuple),
        validator=check(
            _is_port_range,
            "must be [low, high] with 1024 ≤ low < high ≤ 65535 and high - low ≥ 2, not {value}",
        ),
    )
    codecs: list[str] = attrs.field(
        factory=lambda: ["PCMU", "PCMA"],
        validator=check(
            lambda v: bool(v) and len(set(v)) == len(v) and all(c in KNOWN_CODECS for c in v),
            f"must be a non-empty list of distinct names from {', '.join(KNOWN_CODECS)}, "
            "not {value}",
        ),
    )
    user_agent: str = DEFAULT_USER_AGENT
    probe_interval: float = attrs.field(
        default=DEFAULT_PROBE_INTERVAL,
        validator=check(
            lambda v: v == 0 or MIN_PROBE_INTERVAL <= v <= MAX_PROBE_INTERVAL,
            f"must be 0 (no probing) or {MIN_PROBE_INTERVAL:g}–{MAX_PROBE_INTERVAL:g} seconds, "
            "not {value}",
        ),
    )
    probe_failures: int = attrs.field(
        default=DEFAULT_PROBE_FAILURES,
        validator=check(
            lambda v: 1 <= v <= MAX_PROBE_FAILURES, f"must be 1–{MAX_PROBE_FAILURES}, not {{value}}"
        ),
    )
    # registration (waihu_sip.registration) and the outbound proxy
    register: bool = False
    registrar: str | None = attrs.field(
        default=None, validator=check(_is_host_port, "must be host or host:port, not {value!r}")
    )
    register_expires: int = attrs.field(
        default=DEFAULT_REGISTER_EXPIRES,
        validator=check(
            lambda v: MIN_REGISTER_EXPIRES <= v <= MAX_REGISTER_EXPIRES,
            f"must be {MIN_REGISTER_EXPIRES}–{MAX_REGISTER_EXPIRES} seconds, not {{value}}",
        ),
    )
    outbound_proxy: str | None = attrs.field(
        default=None, validator=check(_is_host_port, "must be host or host:port, not {value!r}")
    )
    auth_username: str | None = attrs.field(
        default=None, validator=check(_no_space, "must be a user name, not {value!r}")
    )
    contact_user: str | None = attrs.field(
        default=None, validator=check(_no_space, "must be a SIP user name, not {value!r}")
    )

    transport: str = attrs.field(
        default="udp",
        validator=check(lambda v: v in TRANSPORTS, f"must be one of {', '.join(TRANSPORTS)}, "
                        "not {value!r}"),
    )  # fmt: skip
    tcp_fallback: bool = True
    tls_verify: bool = True
    tls_ca: str | None = attrs.field(
        default=None, validator=check(bool, "must be the path of a PEM file, not {value!r}")
    )
    tls_cert: str | None = attrs.field(
        default=None, validator=check(bool, "must be the path of a PEM file, not {value!r}")
    )
    tls_key: str | None = attrs.field(
        default=None, validator=check(bool, "must be the path of a PEM file, not {value!r}")
    )
    tls_server_name: str | None = attrs.field(
        default=None, validator=check(_no_space, "must be a host name, not {value!r}")
    )
    # RFC 4028 session timers (waihu_sip.session_timer): the interval we ask for (0 = no
    # session timer) and the shortest we accept; below 90 s only for test labs
    min_se: int = attrs.field(
        default=DEFAULT_MIN_SE,
        validator=check(
            lambda v: ABSOLUTE_MIN_SE <= v <= MAX_SESSION_EXPIRES,
            f"must be {ABSOLUTE_MIN_SE}–{MAX_SESSION_EXPIRES} seconds (RFC 4028 asks for at "
            "least 90), not {value}",
        ),
    )
    session_expires: int = attrs.field(
        default=DEFAULT_SESSION_EXPIRES,
        validator=check(
            lambda v: v == 0 or ABSOLUTE_MIN_SE <= v <= MAX_SESSION_EXPIRES,
            f"must be 0 (no session timer) or up to {MAX_SESSION_EXPIRES} seconds, not {{value}}",
        ),
    )

    # our numbers (or SIP users) this trunk takes inbound calls for; empty: none (480)
    numbers: list[str] = attrs.field(
        factory=list,
        validator=check(
            lambda v: all(_no_space(n) for n in v) and len(set(v)) == len(v),
            "must be a list of distinct numbers or SIP user names, not {value}",
        ),
    )

    allow_from: list[str] = attrs.field(
        factory=list,
        validator=check(
            lambda v: isinstance(v, list) and all(_is_allow_entry(e) for e in v),
            "must be a list of addresses, networks (10.0.0.0/8) or host names, not {value}",
        ),
    )
    unknown_sources: str = attrs.field(
        default="drop",
        validator=check(
            lambda v: v in ("drop", "reject"), 'must be "drop" or "reject", not {value!r}'
        ),
    )
    flood_rate: float = attrs.field(
        default=DEFAULT_FLOOD_RATE,
        validator=check(
            lambda v: v > 0, "must be greater than 0 (datagrams per second), not {value}"
        ),
    )
    flood_burst: float = attrs.field(
        default=DEFAULT_FLOOD_BURST,
        validator=check(lambda v: v >= 1, "must be at least 1 (datagrams), not {value}"),
    )
    rtcp: bool = True

    def __attrs_post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("username: username and password go together; set both or neither")
        if self.transport != "tls":
            for key in ("tls_ca", "tls_cert", "tls_key", "tls_server_name"):
                if getattr(self, key) is not None:
                    raise ValueError(f'{key}: only for transport = "tls" (transport is '
                                     f'"{self.transport}")')  # fmt: skip
            if not self.tls_verify:
                raise ValueError('tls_verify: only for transport = "tls"')
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key: goes with tls_cert; set tls_cert too")
        if self.register and self.username is None:
            raise ValueError(
                "register: registering needs an address of record: set username (and password)"
            )

    @property
    def proxy_host_port(self) -> tuple[str, int]:
        """The proxy as (host, port), port defaulting to 5060 (5061 for TLS)."""
        host, port = split_host_port(self.proxy)
        return host, port or self.default_port

    @property
    def default_port(self) -> int:
        """5061 for a TLS trunk (RFC 3261 §26.2.2), else 5060."""
        return DEFAULT_SIPS_PORT if self.transport == "tls" else 5060

    @property
    def registrar_host_port(self) -> tuple[str, int]:
        """Where REGISTER is addressed (its Request-URI): ``registrar``, else the proxy."""
        host, port = split_host_port(self.registrar or self.proxy)
        return host, port or self.default_port

    @property
    def outbound_host_port(self) -> tuple[str, int] | None:
        """The outbound proxy as (host, port), or None when requests go straight out."""
        if self.outbound_proxy is None:
            return None
        host, port = split_host_port(self.outbound_proxy)
        return host, port or self.default_port
