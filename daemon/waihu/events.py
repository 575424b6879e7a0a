"""The one place call events are published.

Every event goes to the plugins' ``waihu_call_event`` hooks and to local
subscribers (the control socket's live monitor, later notifiers and metrics).
Publishing never blocks and never fails the call: a plugin that raises is
logged with its name, and a subscriber that does not keep up loses events
(counted) rather than stalling the media path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pluggy
import trio

from waihu.api import CallEvent

__all__ = ["EventBus"]

log = logging.getLogger("waihu.events")
SUBSCRIBER_BUFFER = 256  # events a slow subscriber may lag behind before losing some


class EventBus:
    """Fans call events out to plugin hooks and subscribers."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self._subscribers: set[trio.MemorySendChannel[CallEvent]] = set()
        self.dropped = 0

    def publish(self, call_id: str, kind: str, **data: Any) -> CallEvent:
        """Build and deliver one event; returns it."""
        event = CallEvent(call_id=call_id, kind=kind, at=time.time(), data=data)
        for impl in self._pm.hook.waihu_call_event.get_hookimpls():
            try:
                impl.function(event=event)
            except Exception:
                log.exception("plugin %s: waihu_call_event failed on %s", impl.plugin_name, kind)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(channel)
        return event

    def subscribe(self) -> trio.MemoryReceiveChannel[CallEvent]:
        """A channel receiving every event from now on; close it to unsubscribe."""
        send, receive = trio.open_memory_channel[CallEvent](SUBSCRIBER_BUFFER)
        self._subscribers.add(send)
        return receive
