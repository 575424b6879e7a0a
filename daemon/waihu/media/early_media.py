"""Early media: the audio a far end sends before it answers (a 183 with SDP).

Carriers play their announcements here — 空号 (no such number), 关机 (switched
off), 停机 (suspended), 无法接通 (unreachable) — before failing the call with
a 4xx/5xx or even answering it, and ring-back tones come the same way.
``EarlyAudio`` keeps that audio for the call: it is recorded (at the head of
the call's recording when the call is answered, as a recording of its own
when it fails), and it is there for whatever listens to who answered.

``collect`` reads the trunk's ``EarlyMedia`` datagrams until its early
session ends, decoding the audio payload type in arrival order (early media
is heard, not conversed with: no jitter buffer; a packet arriving out of
order is simply placed where it came) and dropping everything else.

What it is not: the answered call's media (``call_media``), or deciding what
the audio says.

Error handling: a malformed datagram or another payload type is counted and
dropped; audio beyond ``max_seconds`` is dropped (a carrier looping an
announcement for minutes must not grow memory without bound).
"""

from __future__ import annotations

import logging

import numpy as np
import trio

from waihu.api import EarlyMedia
from waihu.media.g711 import codec_functions
from waihu.media.rtp import RtpError, parse_rtp

__all__ = ["DEFAULT_MAX_SECONDS", "EarlyAudio"]

log = logging.getLogger("waihu.media")

DEFAULT_MAX_SECONDS = 120.0  # longer than any ring timeout a campaign would use


class EarlyAudio:
    """The decoded early audio of one call attempt, as 16-bit samples at the codec's rate."""

    def __init__(self, media: EarlyMedia, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> None:
        self.media = media
        self.sample_rate = media.codec.clock_rate
        self._decode = codec_functions(media.codec.name)[1]
        self._audio_pt = media.codec.payload_type
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._max_samples = int(max_seconds * self.sample_rate)
        self.packets = 0
        self.dropped = 0  # malformed, other payload types, or beyond max_seconds
        self.arrived = trio.Event()  # set with the first audio packet

    @property
    def seconds(self) -> float:
        """How much audio came so far."""
        return self._samples / self.sample_rate

    def pcm(self) -> np.ndarray:
        """All the audio so far, one int16 array."""
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks)

    def accept(self, datagram: bytes) -> None:
        """Take one datagram: audio is decoded and kept, anything else counted and dropped."""
        try:
            packet = parse_rtp(datagram)
        except RtpError:
            self.dropped += 1
            return
        if packet.payload_type != self._audio_pt or self._samples >= self._max_samples:
            self.dropped += 1
            return
        samples = self._decode(packet.payload)
        self._chunks.append(samples)
        self._samples += samples.size
        self.packets += 1
        self.arrived.set()

    async def collect(self) -> None:
        """Read the early session's datagrams until it ends (answered, failed, cancelled)."""
        async with trio.open_nursery() as nursery:

            async def stop_at_end() -> None:
                await self.media.ended.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_at_end)
            while True:
                try:
                    datagram = await self.media.receive_media()
                except (trio.ClosedResourceError, trio.EndOfChannel):
                    break
                self.accept(datagram)
            nursery.cancel_scope.cancel()
