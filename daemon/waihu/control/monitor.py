"""The live monitor behind ``watch``: one subscription to the daemon's call events.

``Monitor(bus, call_id, campaign=...)`` subscribes to the ``EventBus`` at
once (so nothing that happens after it was made is missed) and is then read
as an async iterator of pushed-event messages in the protocol's shape
(``protocol.call_event_message``): only the watched call's when ``call_id``
is given, only the events of that campaign's calls and of the campaign itself
(its changes of state) when ``campaign`` (an id) is given. ``close()`` ends
the subscription; the control server calls it when the client goes.

The bus never waits for a subscriber: when this one's channel is full, events
are lost (``EventBus.subscribe(on_drop=...)`` tells it which). The monitor
puts one ``dropped`` message exactly where the gap was — after the events
that were queued when the loss began — carrying how many were lost in a row
and when the first of them happened.

What it is not: the socket side (``server`` writes the messages) or the
daemon's decision whether a call may be watched (``handlers``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
import trio

from waihu.api import CallEvent
from waihu.control.protocol import call_event_message, dropped_message
from waihu.events import EventBus

__all__ = ["Monitor"]


@attrs.define
class _Gap:
    """Events lost in a row; the marker goes after the ``ahead`` events queued before them."""

    ahead: int
    count: int
    first_at: float


class Monitor:
    """Call events for one watcher, as protocol messages, with lost events marked."""

    def __init__(
        self, bus: EventBus, call_id: str | None = None, *, campaign: str | None = None
    ) -> None:
        self.call_id = call_id
        self.campaign = campaign
        self._events = bus.subscribe(on_drop=self._lost_one)
        self._gaps: deque[_Gap] = deque()

    def _wanted(self, event: CallEvent) -> bool:
        return (self.call_id is None or event.call_id == self.call_id) and (
            self.campaign is None or event.campaign == self.campaign
        )

    def _lost_one(self, event: CallEvent) -> None:
        if not self._wanted(event):
            return
        # an event is lost only when the channel is full: everything in it came before
        ahead = self._events.statistics().current_buffer_used
        if self._gaps and self._gaps[-1].ahead == ahead:
            self._gaps[-1].count += 1  # nothing got through since the last loss: same gap
        else:
            self._gaps.append(_Gap(ahead=ahead, count=1, first_at=event.at))

    def close(self) -> None:
        """End the subscription; iterating stops."""
        self._events.close()

    def __aiter__(self) -> Monitor:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            if self._gaps and self._gaps[0].ahead == 0:
                gap = self._gaps.popleft()
                return dropped_message(self.call_id, gap.first_at, gap.count)
            try:
                event = await self._events.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StopAsyncIteration from None
            for gap in self._gaps:
                gap.ahead -= 1
            if self._wanted(event):
                return call_event_message(event)
