"""Errors raised inside the SIP plugin.

These never cross the plugin boundary: the receive loop logs and drops a
message that raises one (sending the answer a ``SipParseError`` carries, if
any), and ``dial`` turns them into ``waihu.api.TrunkError`` or ``CallFailed``.
What it is not: errors the core sees (those live in ``waihu.api``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from waihu_sip.message import SipResponse

__all__ = ["DigestError", "SdpError", "SipParseError"]

BAD_REQUEST = 400  # RFC 3261 §21.4.1


class SipParseError(ValueError):
    """A SIP message, URI or header value is malformed; the text says what and where.

    ``status`` is the response a server owes a request that fails this way
    (400, or 505 for another SIP version). ``response`` is that response,
    ready to send back to the source, when ``parse_message`` found enough of
    the request to address it (a request line, a top Via, a CSeq); None for
    responses, ACKs and anything unaddressable, which are only dropped.
    """

    def __init__(self, message: str, *, status: int = BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status
        self.response: SipResponse | None = None

    @property
    def response_possible(self) -> bool:
        """True when ``response`` holds an answer to send (RFC 4475 §3.1.2: 'respond 400')."""
        return self.response is not None


class SdpError(ValueError):
    """A session description is malformed or offers nothing usable."""


class DigestError(ValueError):
    """A digest challenge cannot be answered (malformed, unsupported algorithm or qop)."""
