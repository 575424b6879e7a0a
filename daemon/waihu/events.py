"""The one place call and campaign events are published.

Every event goes to the plugins' ``waihu_call_event`` hooks and to local
subscribers (the control socket's live monitor, the console and metrics
later). An event is one of the closed set ``waihu.api.EVENT_KINDS`` and
carries exactly the fields that table lists for its kind, in that order.

Beside events, a call reports *timings* (``TIMINGS``: how long the
recogniser took, each turn's latency) with ``timed``; they go only to local
listeners (``on_timing``: the daemon's metrics), synchronously, and are not
events: nothing is filed or shown in ``watch``.

Error handling: an unknown kind, or data whose fields differ from the
table's, is a bug in the publisher and raises ValueError at once (so does
an unknown timing). Otherwise
publishing never blocks and never fails the call: a plugin that raises is
logged with its name, and a subscriber that does not keep up loses events
(counted, and told through its ``on_drop``) rather than stalling the media
path.

What it is not: the owner of a call's events (``waihu.call_lifecycle``
publishes them) or the socket side of ``watch`` (``waihu.control.monitor``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import pluggy
import trio

from waihu.api import EVENT_KINDS, CallEvent

__all__ = ["TIMINGS", "EventBus"]

log = logging.getLogger("waihu.events")
SUBSCRIBER_BUFFER = 256  # events a slow subscriber may lag behind before losing some

DropCallback = Callable[[CallEvent], None]
TimingListener = Callable[[str, float], None]

# the timings a call reports (seconds), and what each measures
TIMINGS: Mapping[str, str] = {
    "asr": "the recogniser's final result of an utterance, from the endpointer's decision",
    "turn_latency": "from the end of the callee's reply to the first frame of the robot's answer",
}


class EventBus:
    """Fans call events out to plugin hooks and subscribers."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        # each subscriber's channel, and what to tell when it loses an event
        self._subscribers: dict[trio.MemorySendChannel[CallEvent], DropCallback | None] = {}
        self.dropped = 0
        self._timing_listeners: list[TimingListener] = []

    def publish(
        self, call_id: str | None, kind: str, *, campaign: str | None = None, **data: Any
    ) -> CallEvent:
        """Build and deliver one event; returns it.

        ``data`` must hold exactly the fields ``EVENT_KINDS[kind]`` lists
        (ValueError otherwise); ``campaign`` names the campaign of the call,
        or of a campaign-wide event (``call_id`` None).
        """
        fields = EVENT_KINDS.get(kind)
        if fields is None:
            raise ValueError(f"unknown event kind {kind!r} (kinds: {', '.join(EVENT_KINDS)})")
        if set(data) != set(fields):
            given = ", ".join(sorted(data)) or "none"
            raise ValueError(
                f"a {kind} event has the fields {', '.join(fields) or 'none'}, not {given}"
            )
        event = CallEvent(
            call_id=call_id,
            kind=kind,
            at=time.time(),
            data={name: data[name] for name in fields},
            campaign=campaign,
        )
        for impl in self._pm.hook.waihu_call_event.get_hookimpls():
            try:
                impl.function(event=event)
            except Exception:
                log.exception("plugin %s: waihu_call_event failed on %s", impl.plugin_name, kind)
        for channel, on_drop in list(self._subscribers.items()):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
                if on_drop is not None:
                    try:
                        on_drop(event)
                    except Exception:
                        log.exception("subscriber's on_drop failed on %s", kind)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del self._subscribers[channel]
        return event

    def subscribe(
        self, *, on_drop: DropCallback | None = None
    ) -> trio.MemoryReceiveChannel[CallEvent]:
        """A channel receiving every event from now on; close it to unsubscribe.

        ``on_drop`` is called (synchronously, in the publisher) with each event
        this subscriber loses because its channel is full; it should not
        block or raise (an exception is logged and ignored).
        """
        send, receive = trio.open_memory_channel[CallEvent](SUBSCRIBER_BUFFER)
        self._subscribers[send] = on_drop
        return receive

    def timed(self, measure: str, seconds: float) -> None:
        """Report one timing (``measure`` from ``TIMINGS``) to every ``on_timing`` listener.

        A listener that raises is logged and the others still hear it.
        """
        if measure not in TIMINGS:
            raise ValueError(f"unknown timing {measure!r} (timings: {', '.join(TIMINGS)})")
        for listener in list(self._timing_listeners):
            try:
                listener(measure, seconds)
            except Exception:
                log.exception("timing listener failed on %s", measure)

    def on_timing(self, listener: TimingListener) -> None:
        """Call ``listener(measure, seconds)`` for every timing from now on; it must be quick."""
        self._timing_listeners.append(listener)
