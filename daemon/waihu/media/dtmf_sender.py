"""Sending DTMF digits as RFC 4733 telephone-events inside a call's own RTP stream.

``DtmfSender`` is a queue of digits and a little state machine the media tick
asks, once per 20 ms frame, what goes out instead of audio: while a digit
plays, one telephone-event report per frame (RFC 4733 §2.5.1.2: every report
of one event carries the timestamp of its first frame and a growing
duration, the first has the marker bit), then its end report three times
(§2.5.1.4, for loss), then a gap of audio before the next digit. Sequence
numbers and the stream's clock stay those of the call's ``RtpSender``, so the
far end sees one stream whose timestamps advance as if audio had flowed.

Timing: a digit lasts ``tone_ms`` (default 100 ms) and is followed by
``gap_ms`` of audio (default 100 ms) — together well inside what ITU-T
Q.24 receivers accept (40 ms or more of tone and of pause).

What it is not: in-band DTMF (audio tones), or DTMF over SIP INFO (the
trunk's ``CallLeg.send_dtmf``), nor receiving digits (``call_media``).

Error handling: ``queue`` refuses characters that are not DTMF digits with
``ValueError`` naming the first bad one, before anything is sent.
"""

from __future__ import annotations

from collections import deque

import attrs
import trio

from waihu.media.rtp import RtpSender
from waihu.media.telephone_event import DTMF_EVENTS, TelephoneEvent, build_telephone_event

__all__ = ["DEFAULT_GAP_MS", "DEFAULT_TONE_MS", "DtmfSender", "EventPacket"]

DEFAULT_TONE_MS = 100
DEFAULT_GAP_MS = 100
END_REPEATS = 3  # RFC 4733 §2.5.1.4: the end report is sent three times
DEFAULT_VOLUME = 10  # −10 dBm0, the level RFC 4733's examples and most phones use


@attrs.frozen
class EventPacket:
    """What the tick sends this frame instead of audio: one or more RTP datagrams."""

    datagrams: tuple[bytes, ...]


@attrs.define
class _Digit:
    event: int
    done: trio.Event
    frames_sent: int = 0  # tone frames reported so far
    start_timestamp: int | None = None


class DtmfSender:
    """Digits waiting to go out as telephone-events on one call's RTP stream."""

    def __init__(
        self,
        payload_type: int,
        samples_per_frame: int,
        clock_rate: int,
        *,
        tone_ms: int = DEFAULT_TONE_MS,
        gap_ms: int = DEFAULT_GAP_MS,
    ) -> None:
        frame_ms = samples_per_frame * 1000 // clock_rate
        self.payload_type = payload_type
        self.samples_per_frame = samples_per_frame
        self.tone_frames = max(1, -(-tone_ms // frame_ms))  # whole frames, rounded up
        self.gap_frames = max(1, -(-gap_ms // frame_ms))
        self._queue: deque[_Digit] = deque()
        self._current: _Digit | None = None
        self._gap_left = 0  # frames of audio still owed after the last digit
        self.digits_sent = 0

    @property
    def busy(self) -> bool:
        """Whether digits are playing or waiting."""
        return self._current is not None or bool(self._queue) or self._gap_left > 0

    def queue(self, digits: str) -> trio.Event:
        """Queue ``digits`` (``0-9 * # A-D``); the event is set once the last one was sent."""
        events = []
        for position, char in enumerate(digits):
            event = DTMF_EVENTS.find(char.upper())
            if event < 0:
                raise ValueError(
                    f"{char!r} (position {position + 1} of {digits!r}) is not a DTMF digit; "
                    f"use {DTMF_EVENTS}"
                )
            events.append(event)
        if not events:
            raise ValueError("no digits to send")
        done = trio.Event()
        for event in events[:-1]:
            self._queue.append(_Digit(event, trio.Event()))
        self._queue.append(_Digit(events[-1], done))
        return done

    def next_frame(self, sender: RtpSender) -> EventPacket | None:
        """This frame's telephone-event datagrams, or None when audio goes out as usual.

        ``sender`` numbers the datagrams: its sequence advances once per datagram
        and its timestamp once per frame, exactly as for audio.
        """
        if self._current is None:
            if self._gap_left > 0:
                self._gap_left -= 1
                return None
            if not self._queue:
                return None
            self._current = self._queue.popleft()
        digit = self._current
        if digit.start_timestamp is None:
            digit.start_timestamp = sender.timestamp
        digit.frames_sent += 1
        ending = digit.frames_sent >= self.tone_frames
        duration = digit.frames_sent * self.samples_per_frame
        report = build_telephone_event(
            TelephoneEvent(event=digit.event, end=ending, volume=DEFAULT_VOLUME, duration=duration)
        )
        first = digit.frames_sent == 1
        repeats = END_REPEATS if ending else 1
        datagrams = tuple(
            sender.event_packet(
                report,
                payload_type=self.payload_type,
                timestamp=digit.start_timestamp,
                marker=first and n == 0,
                samples=self.samples_per_frame if n == repeats - 1 else 0,
            )
            for n in range(repeats)
        )
        if ending:
            self._current = None
            self._gap_left = self.gap_frames
            self.digits_sent += 1
            digit.done.set()
        return EventPacket(datagrams)

    def cancel(self) -> None:
        """Drop every digit not yet finished (the call is ending); their waiters are released."""
        pending = [self._current, *self._queue] if self._current else list(self._queue)
        for digit in pending:
            digit.done.set()
        self._queue.clear()
        self._current = None
        self._gap_left = 0
