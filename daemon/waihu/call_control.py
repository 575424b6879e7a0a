"""What an operator can do to one live call: hang it up, send it DTMF digits.

The dispatcher keeps one ``CallControl`` per live call and the call's task
(``waihu.call``) binds its parts to it as they come to exist: the cancel
scope of whatever the call is doing (ringing or talking), then, once
answered, how digits go out. ``hang_up`` while ringing cancels the dial —
the trunk then sends CANCEL and ACKs the 487 — and after the answer ends
the conversation, and the call hangs up with BYE; either way the record
says the operator did it.

What it is not: admission or the live-call table (``waihu.dispatcher``).

Error handling: ``send_dtmf`` raises ``CallNotAnswered`` before the answer
or after the end, ``ValueError`` for characters that are not digits, and
``NotImplementedError`` when the far end takes no DTMF at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from waihu.api import WaihuError

__all__ = ["OPERATOR_HANGUP", "CallControl", "CallNotAnswered"]

OPERATOR_HANGUP = "hung up by the operator"

DtmfSend = Callable[[str], Awaitable[None]]


class CallNotAnswered(WaihuError):
    """The call is not in conversation (still ringing, or over)."""


class CallControl:
    """An operator's handle on one live call."""

    def __init__(self) -> None:
        self.hangup_requested = False
        self._scope: trio.CancelScope | None = None
        self._send_dtmf: DtmfSend | None = None

    def bind(self, scope: trio.CancelScope) -> None:
        """The call's current phase: ``hang_up`` cancels it (at once if already asked)."""
        self._scope = scope
        if self.hangup_requested:
            scope.cancel()

    def answered(self, send_dtmf: DtmfSend | None) -> None:
        """The call is in conversation: digits go out through ``send_dtmf``; None when over."""
        self._send_dtmf = send_dtmf

    def hang_up(self) -> None:
        """End the call: CANCEL while it rings, BYE once answered; idempotent."""
        self.hangup_requested = True
        if self._scope is not None:
            self._scope.cancel()

    async def send_dtmf(self, digits: str) -> None:
        """Send ``digits`` to the far end; returns once they are out."""
        if self._send_dtmf is None:
            raise CallNotAnswered("the call is not in conversation; digits go only to an answer")
        await self._send_dtmf(digits)
