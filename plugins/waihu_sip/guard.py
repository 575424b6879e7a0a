"""The door of a trunk's SIP port: who may talk to it, and how fast.

``SipGuard.admit(source, now)`` is asked for every datagram that reaches the
signalling socket, before a byte of it is parsed, and says ``"accept"``,
``"drop"`` or ``"reject"`` (answer 403 Forbidden):

1. **Allowlist.** A source whose IP address is not in the trunk's
   ``allow_from`` (addresses and CIDR networks; host names are resolved by
   the trunk and handed in with ``set_resolved``), not one of the trunk's
   peers and not the far end of a live call (``set_dialog_peers``) is unknown: dropped, or
   rejected when the trunk says ``unknown_sources = "reject"``. Any port of an
   allowed address is allowed (a proxy answers from several).
2. **Flood limit.** Every source admitted so far has a token bucket
   (``flood_rate`` datagrams per second, ``flood_burst`` at once, the same
   algorithm as Kamailio's pike or iptables' hashlimit); a datagram over the
   rate is dropped. Everything accepted from sources other than the trunk's
   own peers (its proxy, registrar, outbound proxy) also spends one shared
   bucket (``SHARED_RATE`` a second): an allowed network flooding from many
   addresses at once gets no more than that in total, which bounds what is
   parsed, answered and cached for 32 s (``SHARED_RATE`` × 32 s entries at
   most from them). Rejections of unknown sources also spend a bucket, and
   all of them together at most ``REJECTS_PER_SECOND``, so a spoofed flood
   cannot turn the port into a 403 cannon.

Bounded memory: at most ``MAX_SOURCES`` (4,096) buckets and ``MAX_SOURCES``
"last logged" times are kept, each in least-recently-used order; a flood from
more distinct sources than that evicts the oldest, whose next datagram then
starts with a fresh bucket. The worst case is therefore a few hundred
kilobytes per trunk whatever an attacker sends.

Logging: a source that is dropped or rejected is logged at warning once per
``LOG_EVERY`` seconds (a minute) at most, with the count since; the totals
are in ``counts`` for status and metrics.

What it is not: I/O. It opens no socket, resolves no name and reads no clock
(the trunk passes ``now``); the transport calls it and acts on the answer.
Not a defence against spoofed source addresses either: an attacker who can
forge the proxy's address gets the proxy's budget, no more.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Literal, TypeVar

import attrs

from waihu_sip.transport import Address, Admission

__all__ = [
    "LOG_EVERY",
    "MAX_SOURCES",
    "REJECTS_PER_SECOND",
    "SHARED_BURST",
    "SHARED_RATE",
    "Admission",
    "GuardCounts",
    "SipGuard",
    "TokenBucket",
    "parse_allow_entry",
]

UnknownSources = Literal["drop", "reject"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_V = TypeVar("_V")

MAX_SOURCES = 4096  # buckets and log times kept per trunk (LRU): bounded memory under any flood
LOG_EVERY = 60.0  # seconds: a refused source is logged at most once a minute
REJECTS_PER_SECOND = 50.0  # all 403s to unknown sources together, so a flood is not answered
REJECT_BURST = 100.0
# all accepted datagrams from allow_from (not the trunk's own peers) together: far above what
# a few PBXs send, far below what parsing can take (~1,000–2,500 requests/s on one core)
SHARED_RATE = 500.0
SHARED_BURST = 1000.0


@attrs.define
class TokenBucket:
    """A token bucket: ``rate`` tokens a second up to ``burst``; each datagram takes one."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        """A bucket holding its whole burst at ``now``."""
        return cls(rate=rate, burst=burst, tokens=burst, stamp=now)

    def take(self, now: float) -> bool:
        """Refill for the time since the last call, then take one token if there is one."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@attrs.define
class GuardCounts:
    """What the guard decided so far (totals since the trunk started)."""

    accepted: int = 0
    unknown_dropped: int = 0  # not in allow_from, unknown_sources = "drop"
    unknown_rejected: int = 0  # not in allow_from, answered 403
    flood_dropped: int = 0  # over flood_rate (allowed or unknown sources)


def parse_allow_entry(text: str) -> Network | None:
    """``text`` as an address or CIDR network, or None when it is a host name to resolve.

    Raises ValueError for something that is neither (a network with host
    bits set, say ``10.0.0.1/8``).
    """
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        if any(c == "/" for c in text) or _looks_numeric(text):
            raise ValueError(
                f"{text!r} is not an address or network (write 10.0.0.0/8, not 10.0.0.1/8)"
            ) from None
        return None


def _looks_numeric(text: str) -> bool:
    return bool(text) and all(c in "0123456789." for c in text)


class SipGuard:
    """Allowlist and per-source flood limit of one trunk (see the module docstring)."""

    def __init__(
        self,
        *,
        networks: Iterable[Network] = (),
        unknown_sources: UnknownSources = "drop",
        flood_rate: float,
        flood_burst: float,
        log: logging.Logger,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        if flood_rate <= 0 or flood_burst < 1:
            raise ValueError("flood_rate must be positive and flood_burst at least 1")
        self._static = tuple(networks)
        self._resolved: frozenset[str] = frozenset()
        self._peers: frozenset[str] = frozenset()
        self._dialog_peers: frozenset[str] = frozenset()
        self._shared: TokenBucket | None = None
        self._networks: tuple[Network, ...] = self._static
        self._allowed_cache: OrderedDict[str, bool] = OrderedDict()
        self.unknown_sources: UnknownSources = unknown_sources
        self.flood_rate = flood_rate
        self.flood_burst = flood_burst
        self._log = log
        self._max_sources = max_sources
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._logged: OrderedDict[str, tuple[float, int]] = OrderedDict()  # ip → (when, since)
        self._rejects: TokenBucket | None = None
        self.counts = GuardCounts()

    # ─────────────── configuration ───────────────

    def set_resolved(self, addresses: Iterable[str], peers: Iterable[str] = ()) -> None:
        """Allow these resolved addresses (the proxy's, and ``allow_from`` host names'), in
        place of the ones set before: called at start-up and after each re-resolution.

        ``peers`` (allowed too) are the trunk's own proxy, registrar and outbound proxy:
        only their per-source bucket limits them, not the shared one.
        """
        self._peers = frozenset(peers)
        resolved = frozenset(addresses) | self._peers
        if resolved != self._resolved:
            self._resolved = resolved
            self._allowed_cache.clear()

    def set_dialog_peers(self, addresses: Iterable[str]) -> None:
        """Also allow these addresses, in place of the ones set before: where the live calls'
        in-dialog requests go (a far end that did not Record-Route sends its BYE from its
        own Contact address, not through the proxy)."""
        self._dialog_peers = frozenset(addresses)

    def is_allowed(self, ip: str) -> bool:
        """True when ``ip`` is a resolved allowed address, a live call's far end or inside an
        allowed network."""
        if ip in self._resolved or ip in self._dialog_peers:
            return True
        cached = self._allowed_cache.get(ip)
        if cached is None:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                cached = False
            else:
                cached = any(address in network for network in self._networks)
            self._remember(self._allowed_cache, ip, cached)
        return cached

    @property
    def sources_tracked(self) -> int:
        """Sources with a flood bucket now (never more than ``MAX_SOURCES``)."""
        return len(self._buckets)

    # ─────────────── deciding ───────────────

    def admit(self, source: Address, now: float) -> Admission:
        """What to do with one datagram from ``source`` arriving at ``now`` (seconds)."""
        ip = source[0]
        known = self.is_allowed(ip)
        if not self._within_rate(ip, now):
            self.counts.flood_dropped += 1
            self._note(ip, now, "over the flood limit" if known else "not in allow_from")
            return "drop"
        if known:
            own = ip in self._peers or ip in self._dialog_peers
            if not own and not self._within_shared_rate(now):
                self.counts.flood_dropped += 1
                self._note(ip, now, "over the flood limit of allow_from together")
                return "drop"
            self.counts.accepted += 1
            return "accept"
        if self.unknown_sources == "reject" and self._may_reject(now):
            self.counts.unknown_rejected += 1
            self._note(ip, now, "not in allow_from (answered 403)")
            return "reject"
        self.counts.unknown_dropped += 1
        self._note(ip, now, "not in allow_from")
        return "drop"

    def _within_rate(self, ip: str, now: float) -> bool:
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = TokenBucket.full(self.flood_rate, self.flood_burst, now)
            self._remember(self._buckets, ip, bucket)
        else:
            self._buckets.move_to_end(ip)
        return bucket.take(now)

    def _within_shared_rate(self, now: float) -> bool:
        if self._shared is None:
            self._shared = TokenBucket.full(SHARED_RATE, SHARED_BURST, now)
        return self._shared.take(now)

    def _may_reject(self, now: float) -> bool:
        if self._rejects is None:
            self._rejects = TokenBucket.full(REJECTS_PER_SECOND, REJECT_BURST, now)
        return self._rejects.take(now)

    def _note(self, ip: str, now: float, why: str) -> None:
        """Log a refused source at most once per LOG_EVERY seconds, with what was missed."""
        last = self._logged.get(ip)
        if last is not None and now - last[0] < LOG_EVERY:
            self._logged[ip] = (last[0], last[1] + 1)
            return
        missed = last[1] if last is not None else 0
        more = f" ({missed} more since the last notice)" if missed else ""
        self._log.warning(
            "refused SIP from %s: %s%s; next notice for it in %d s at the earliest",
            ip,
            why,
            more,
            LOG_EVERY,
        )
        self._remember(self._logged, ip, (now, 0))

    def _remember(self, table: OrderedDict[str, _V], key: str, value: _V) -> None:
        """Insert ``key`` as most recent, evicting the least recent beyond ``max_sources``."""
        table[key] = value
        table.move_to_end(key)
        while len(table) > self._max_sources:
            table.popitem(last=False)
