"""Joining two call legs: the callee and the person the call is handed to (a bridged transfer).

A ``Bridge`` is a tick source of the daemon's one ``MediaClock``: every 20 ms
it takes the next frame each side sent (from that side's jitter buffer,
decoded with that side's codec), and sends it to the other side encoded with
*its* codec — so a callee on PCMU and an agent on PCMA hear each other. While
the whisper (``whisper``, a ``PromptPlayer``) is playing, the agent hears it
and the callee hears silence; once it has played out the two are joined.

The call's recording goes on: the callee's frame is written to the left
channel and what the callee hears (silence during the whisper, then the
agent) to the right, the channel that held the robot until then — so the
file stays one stereo conversation, aligned to the frame.

A ``BridgeSide`` is one leg's media. The agent's side is new and reads its
leg itself (``receive_loop``); the callee's side reuses the jitter buffer and
RTP sender the call's ``CallMedia`` already has (its receive loop keeps
filling that buffer, and the sequence numbers and timestamps the callee sees
go on without a jump).

Error handling: a malformed datagram or one of a payload type the side did
not negotiate is counted and dropped; ``tick`` never blocks (``send_media``
drops when a socket is full). ``receive_loop`` ends quietly when the leg's
media is closed.

What it is not: the transfer's signalling — dialling the agent, mapping its
answer to an outcome, hanging up (``waihu.transfer``) — nor a mixer: each side
hears only the other, never both the whisper and the other side at once.
"""

from __future__ import annotations

import logging

import attrs
import numpy as np
import trio

from waihu.api import CallLeg
from waihu.media.g711 import codec_functions
from waihu.media.jitter_buffer import DEFAULT_DEPTH, JitterBuffer
from waihu.media.prompt_player import PromptPlayer
from waihu.media.recorder import StereoRecorder
from waihu.media.rtp import RtpError, RtpSender, parse_rtp

__all__ = ["Bridge", "BridgeSide", "SideStats"]

log = logging.getLogger("waihu.media.bridge")


@attrs.define
class SideStats:
    """Counters of one side of a bridge."""

    datagrams_in: int = 0
    frames_out: int = 0
    malformed: int = 0
    foreign_payload: int = 0  # telephone-events and anything else not audio: not relayed
    silent_ticks: int = 0  # ticks with nothing due from this side


class BridgeSide:
    """One leg's media inside a bridge: frames in (decoded), frames out (encoded).

    ``jitter`` and ``sender`` default to new ones; pass the call's own
    (``CallMedia.jitter``/``CallMedia.sender``) to carry its stream on.
    """

    def __init__(
        self,
        leg: CallLeg,
        *,
        jitter: JitterBuffer | None = None,
        sender: RtpSender | None = None,
        jitter_depth: int = DEFAULT_DEPTH,
    ) -> None:
        codec = leg.codec
        self.leg = leg
        self.codec = codec
        self.samples_per_frame = codec.samples_per_frame
        self._encode, self._decode = codec_functions(codec.name)
        self.jitter = jitter if jitter is not None else JitterBuffer(jitter_depth)
        self.sender = sender if sender is not None else RtpSender(codec.payload_type)
        self.stats = SideStats()
        self._silence = np.zeros(self.samples_per_frame, dtype=np.int16)
        self._silence.flags.writeable = False
        self._pending = self._silence[:0]  # decoded samples beyond the last whole frame
        self._first = sender is None  # a new stream starts with the marker bit

    async def receive_loop(self) -> None:
        """Read the leg's datagrams into the jitter buffer until its media is closed."""
        while True:
            try:
                datagram = await self.leg.receive_media()
            except (trio.ClosedResourceError, trio.EndOfChannel):
                return
            self.take(datagram)

    def take(self, datagram: bytes) -> None:
        """One RTP datagram from the leg: its audio is buffered, anything else counted."""
        self.stats.datagrams_in += 1
        try:
            packet = parse_rtp(datagram)
        except RtpError:
            self.stats.malformed += 1
            return
        if packet.payload_type != self.codec.payload_type:
            self.stats.foreign_payload += 1
            return
        self.jitter.push(packet)

    def next_frame(self) -> np.ndarray:
        """The next 20 ms this side sent, decoded; silence when nothing is due.

        A peer packetising at another ptime has its audio re-cut into frames.
        """
        size = self.samples_per_frame
        pending = self._pending
        while pending.size < size:
            packet = self.jitter.pop()
            if packet is None:
                break
            pending = np.concatenate((pending, self._decode(packet.payload)))
        if pending.size == 0:
            self.stats.silent_ticks += 1
            return self._silence
        if pending.size < size:
            self._pending = self._silence[:0]
            return np.concatenate((pending, self._silence[: size - pending.size]))
        self._pending = pending[size:]
        return pending[:size]

    def send(self, frame: np.ndarray) -> None:
        """Send one 20 ms frame of PCM to the leg, encoded in its codec; never blocks."""
        self.leg.send_media(
            self.sender.next_packet(self._encode(frame), self.samples_per_frame, self._first)
        )
        self._first = False
        self.stats.frames_out += 1


class Bridge:
    """Relays audio between ``callee`` and ``agent`` each media-clock tick (module docstring).

    ``whisper`` plays to the agent first (queue lines on it with ``play``);
    the sides are joined once it is idle. ``recorder`` is the call's.
    """

    def __init__(
        self,
        callee: BridgeSide,
        agent: BridgeSide,
        *,
        recorder: StereoRecorder | None = None,
    ) -> None:
        if callee.codec.clock_rate != agent.codec.clock_rate:
            raise ValueError(
                f"cannot bridge {callee.codec.name}/{callee.codec.clock_rate} with "
                f"{agent.codec.name}/{agent.codec.clock_rate}: the clock rates differ"
            )
        self.callee = callee
        self.agent = agent
        self.recorder = recorder
        self.whisper = PromptPlayer(agent.samples_per_frame)
        self._hold = np.zeros(callee.samples_per_frame, dtype=np.int16)
        self._hold.flags.writeable = False

    @property
    def joined(self) -> bool:
        """Whether the two sides hear each other (the whisper is over)."""
        return not self.whisper.playing

    def skipped(self, frames: int) -> None:
        """The clock skipped ``frames`` ticks: relay what came in over them now (what
        either side's jitter buffer holds beyond its playout depth), so neither side's
        words are lost or left behind in a buffer for the rest of the call."""
        for _ in range(frames):
            sides = (self.callee.jitter, self.agent.jitter)
            if all(jitter.buffered <= jitter.depth for jitter in sides):
                break
            self.tick()

    def tick(self) -> None:
        """One frame each way (or the whisper to the agent), and the recording; never blocks."""
        from_callee = self.callee.next_frame()
        from_agent = self.agent.next_frame()
        if self.whisper.playing:
            to_agent, to_callee = self.whisper.next_frame(), self._hold
        else:
            to_agent, to_callee = from_callee, from_agent
        self.agent.send(to_agent)
        self.callee.send(to_callee)
        if self.recorder is not None:
            self.recorder.callee(from_callee)
            self.recorder.robot(to_callee)
