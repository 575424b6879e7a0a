"""Errors raised inside the SIP plugin.

These never cross the plugin boundary: the receive loop logs and drops a
message that raises one, and ``dial`` turns them into ``waihu.api.TrunkError``
or ``CallFailed``. Not for: errors the core sees (those live in ``waihu.api``).
"""

from __future__ import annotations

__all__ = ["DigestError", "SdpError", "SipParseError"]


class SipParseError(ValueError):
    """A SIP message, URI or header value is malformed; the text says what and where."""


class SdpError(ValueError):
    """A session description is malformed or offers nothing usable."""


class DigestError(ValueError):
    """A digest challenge cannot be answered (malformed, unsupported algorithm or qop)."""
