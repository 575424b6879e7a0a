"""How the trunk presents itself in messages: Via, Contact, User-Agent, Allow.

The Via names the transport the trunk speaks (``SIP/2.0/UDP``, ``/TCP`` or
``/TLS``) and always asks for ``rport`` (RFC 3581). The Contact of a TCP or
TLS trunk carries ``;transport=tcp``/``;transport=tls``, so the far end sends
its in-dialog requests the same way; it stays a ``sip:`` URI because the
calls we place go to ``sip:`` Request-URIs, and RFC 3261 §8.1.1.8 asks for a
``sips:`` Contact only when the Request-URI or top Route is ``sips:``.

Not for: the From identity of a call (caller ID), which ``trunk`` builds per call.
"""

from __future__ import annotations

import attrs

from waihu_sip.address import format_host_port

__all__ = ["ALLOWED_METHODS", "LocalIdentity"]

# What we accept from the far end; UPDATE and re-INVITE are answered for session refreshes,
# INFO for DTMF, NOTIFY for the outcome of our REFER. (We send REFER but take none: a robot
# is not transferred.)
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE", "INFO", "NOTIFY")


@attrs.frozen
class LocalIdentity:
    """The advertised address of the signalling socket and our product token."""

    host: str
    port: int
    user: str
    user_agent: str
    transport: str = "UDP"  # as Via writes it: UDP, TCP or TLS

    @property
    def hostport(self) -> str:
        """``host:port`` as written in Via and Contact."""
        return format_host_port(self.host, self.port)

    def via(self, branch: str) -> str:
        """A Via value for a new client transaction; ``rport`` asks for symmetric responses."""
        return f"SIP/2.0/{self.transport} {self.hostport};branch={branch};rport"

    @property
    def contact(self) -> str:
        """Our Contact value: where (and, off UDP, how) the far end sends in-dialog requests."""
        param = "" if self.transport == "UDP" else f";transport={self.transport.lower()}"
        return f"<sip:{self.user}@{self.hostport}{param}>"

    @property
    def allow(self) -> str:
        """The Allow header value."""
        return ", ".join(ALLOWED_METHODS)
