"""One call's media: RTP in and out, prompts, recording, endpointing, barge-in.

``CallMedia`` glues the media parts together for one answered call leg and
is owned by the call's task:

- ``receive_loop`` (a task of the call) reads datagrams from the leg, parses
  them, reports RFC 4733 DTMF digits, and hands the call's audio packets to
  the jitter buffer;
- ``tick`` (called by the daemon's one ``MediaClock`` every 20 ms) sends the
  player's next frame as RTP — silence is sent as real encoded packets too,
  so NATs and peers keep the stream — takes the next incoming frame from the
  jitter buffer (or silence when nothing is due, so the endpointer keeps
  time while the far end sends nothing), records both, takes the echo of
  what was sent out of what came in (``waihu.media.echo``: the endpointer and
  the recogniser hear the residual), and runs the endpointer and the barge-in
  judge (``waihu.media.barge_in``): a voice over an interruptible prompt
  pauses it on that very tick once ``pause_ms`` of it were voiced, even before
  the endpointer confirms it as speech (the line resumes if the sound dies
  unconfirmed); then the judge cuts it (final words that are not
  backchannels, or long speech) or lets it resume (a backchannel, a cough);
  ``heard`` brings the judge the recognised words;
- ``events`` is the receiving end of a bounded channel carrying what
  happened, in order: ``SpeechStarted``, ``SpeechAudio``, ``SpeechEnded``,
  ``BargeInPaused``, ``BargeInResumed``, ``BargeIn``, ``PromptFinished``,
  ``DtmfDigit``. Over a prompt the order is ``BargeInPaused``,
  ``SpeechStarted``… (or ``BargeInPaused``, ``BargeInResumed`` with no speech
  between, for a sound the endpointer never confirmed); on a confirmed cut ``BargeIn`` then
  ``PromptFinished(interrupted=True)`` for each line stopped.

Error handling: a malformed datagram is counted and dropped, logged once per
kind of damage with the call id; packets of a payload type the call did not
negotiate are counted and dropped the same way. ``tick`` never blocks: when
the events channel is full (the consumer is stuck) the event is dropped and
counted. ``receive_loop`` ends quietly when the leg's media is closed.

What it is not: the dialogue (the engine reads ``events`` and queues prompts
on ``player``) or speech recognition (the call feeds ``SpeechStarted.preroll``
and ``SpeechAudio`` to its ASR stream).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence

import attrs
import numpy as np
import trio

from waihu.api import CallLeg
from waihu.media.barge_in import Action, BargeInJudge, BargeInSettings
from waihu.media.dtmf_sender import DtmfSender
from waihu.media.echo import EchoCanceller
from waihu.media.endpointer import (
    Endpointer,
    EndpointState,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from waihu.media.g711 import codec_functions
from waihu.media.jitter_buffer import DEFAULT_DEPTH, JitterBuffer, JitterStats
from waihu.media.prompt_player import Playback, PromptPlayer
from waihu.media.recorder import StereoRecorder
from waihu.media.rtp import RtpError, RtpPacket, RtpSender, parse_rtp
from waihu.media.telephone_event import TelephoneEventError, parse_telephone_event

__all__ = [
    "BargeIn",
    "BargeInPaused",
    "BargeInResumed",
    "CallMedia",
    "DtmfDigit",
    "MediaEvent",
    "MediaStats",
    "PromptFinished",
    "SpeechAudio",
    "SpeechEnded",
    "SpeechStarted",
]

log = logging.getLogger("waihu.media")

EVENTS_CAPACITY = 1000  # 20 s of SpeechAudio frames: room for a slow recogniser to catch up
DTMF_HISTORY = 8  # recent telephone events remembered to ignore their retransmitted ends


@attrs.frozen
class BargeIn:
    """The callee interrupted an interruptible prompt, which was cut (a confirmed
    barge-in: words, or long speech)."""


@attrs.frozen
class BargeInPaused:
    """The callee's voice over an interruptible prompt paused it (``label``)."""

    label: str


@attrs.frozen
class BargeInResumed:
    """The voice that paused the prompt ``label`` was a backchannel or a cough: it goes on."""

    label: str


@attrs.frozen
class PromptFinished:
    """A prompt ended: played out, or cut short (``interrupted``) after ``played_ms``."""

    label: str
    interrupted: bool
    played_ms: int = 0


@attrs.frozen
class DtmfDigit:
    """The callee pressed a key: one of ``0123456789*#ABCD``."""

    digit: str


MediaEvent = (
    SpeechStarted
    | SpeechAudio
    | SpeechEnded
    | BargeIn
    | BargeInPaused
    | BargeInResumed
    | PromptFinished
    | DtmfDigit
)


@attrs.define
class MediaStats:
    """Counters of one call's media, for logs and the call's figures."""

    datagrams_in: int = 0
    packets_out: int = 0
    malformed: dict[str, int] = attrs.Factory(dict)  # RtpError kind → count
    foreign_payload: int = 0  # packets of a payload type the call did not negotiate
    dtmf_digits: int = 0
    dtmf_sent: int = 0  # digits we sent as telephone-events
    silent_ticks: int = 0  # ticks with no incoming audio due
    barge_ins: int = 0  # lines cut by the callee (confirmed barge-ins)
    barge_in_pauses: int = 0  # lines paused by the callee's voice
    barge_in_resumes: int = 0  # paused lines that went on (backchannels, coughs)
    events_dropped: int = 0
    jitter: JitterStats = attrs.Factory(JitterStats)


class CallMedia:
    """Media for one answered call; see the module docstring for the flow."""

    def __init__(
        self,
        leg: CallLeg,
        *,
        endpointer: Endpointer,
        recorder: StereoRecorder | None = None,
        jitter_depth: int = DEFAULT_DEPTH,
        events_capacity: int = EVENTS_CAPACITY,
        barge_in: BargeInSettings | None = None,
        echo_guard: bool = True,
    ) -> None:
        codec = leg.codec
        self._encode, self._decode = codec_functions(codec.name)
        self.samples_per_frame = codec.samples_per_frame
        if endpointer.samples_per_frame != self.samples_per_frame:
            raise ValueError(
                f"the endpointer runs at {endpointer.sample_rate} Hz but the call's codec "
                f"{codec.name} at {codec.clock_rate} Hz"
            )
        self.leg = leg
        self.call_id = leg.call_id
        self.endpointer = endpointer
        self.recorder = recorder
        self.jitter = JitterBuffer(jitter_depth)
        self.sender = RtpSender(codec.payload_type)
        self.player = PromptPlayer(
            self.samples_per_frame,
            on_finished=self._prompt_finished,
            sample_rate=codec.clock_rate,
        )
        self.judge = BargeInJudge(barge_in)
        # None: the endpointer hears the line as it is (``echo_guard`` off)
        self.echo = EchoCanceller(codec.clock_rate) if echo_guard else None
        self.stats = MediaStats(jitter=self.jitter.stats)
        self._events_send, self.events = trio.open_memory_channel[MediaEvent](events_capacity)
        self._audio_pt = codec.payload_type
        self._codec = codec
        # decoders by payload type: packets of a codec the far end just left still decode
        self._decoders = {codec.payload_type: self._decode}
        self._clock_rate = codec.clock_rate
        self._silence = np.zeros(self.samples_per_frame, dtype=np.int16)
        self._silence.flags.writeable = False
        self._pending = self._silence[:0]  # decoded samples beyond the last whole frame
        self._first_packet = True
        self._dtmf_seen: deque[tuple[int, int]] = deque(maxlen=DTMF_HISTORY)
        self._logged: set[str] = set()
        self.dtmf: DtmfSender | None = None
        # sees every incoming frame as it is taken (the who-answered screen listens for tones)
        self.on_incoming: Callable[[np.ndarray], None] | None = None
        if leg.dtmf_payload_type is not None:
            self.dtmf = DtmfSender(leg.dtmf_payload_type, self.samples_per_frame, codec.clock_rate)

    # ───────────── receiving (the call's task) ─────────────

    async def receive_loop(self) -> None:
        """Read and dispatch the leg's datagrams until its media is closed."""
        while True:
            try:
                datagram = await self.leg.receive_media()
            except (trio.ClosedResourceError, trio.EndOfChannel):
                log.debug("call %s: media closed, receiving stops", self.call_id)
                return
            self._on_datagram(datagram)

    def _on_datagram(self, datagram: bytes) -> None:
        self.stats.datagrams_in += 1
        try:
            packet = parse_rtp(datagram)
        except RtpError as exc:
            self._count_malformed(exc.kind, str(exc))
            return
        self._follow_codec()
        if packet.payload_type in self._decoders:
            self.jitter.push(packet)
        elif packet.payload_type == self.leg.dtmf_payload_type:
            self._on_telephone_event(packet)
        else:
            self.stats.foreign_payload += 1
            self._log_once(
                f"pt{packet.payload_type}",
                "call %s: dropping RTP of payload type %d, which the call did not negotiate "
                "(further ones are counted, not logged)",
                self.call_id,
                packet.payload_type,
            )

    def _on_telephone_event(self, packet: RtpPacket) -> None:
        try:
            event = parse_telephone_event(packet.payload)
        except TelephoneEventError as exc:
            self._count_malformed("telephone_event", str(exc))
            return
        if not event.end:
            return  # a digit counts once, when it ends
        key = (packet.ssrc, packet.timestamp)  # all reports of one event share its timestamp
        if key in self._dtmf_seen:
            return  # the end report is sent three times
        self._dtmf_seen.append(key)
        digit = event.digit
        if digit is None:
            self._log_once(
                f"event{event.event}",
                "call %s: ignoring telephone event %d (not a DTMF digit)",
                self.call_id,
                event.event,
            )
            return
        self.stats.dtmf_digits += 1
        self._emit(DtmfDigit(digit))

    def _count_malformed(self, kind: str, detail: str) -> None:
        self.stats.malformed[kind] = self.stats.malformed.get(kind, 0) + 1
        self._log_once(
            f"malformed:{kind}",
            "call %s: dropped a malformed RTP datagram: %s (further ones of this kind are "
            "counted, not logged)",
            self.call_id,
            detail,
        )

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)

    # ───────────── the media tick (the media clock) ─────────────

    def send_dtmf(self, digits: str) -> trio.Event:
        """Queue ``digits`` as RFC 4733 telephone-events in this call's RTP stream; the event
        is set once they are all sent. While a digit plays the prompt waits (its audio is
        not lost) and the recording's robot channel is silent.

        Raises ``ValueError`` for a character that is not a DTMF digit, and
        ``RuntimeError`` when the far end negotiated no telephone-event (use the
        leg's ``send_dtmf``, SIP INFO, instead).
        """
        if self.dtmf is None:
            raise RuntimeError(f"call {self.call_id}: the far end takes no telephone-events")
        return self.dtmf.queue(digits)

    def _follow_codec(self) -> None:
        """Switch to the leg's codec when the far end changed it mid-call (a re-INVITE offering
        only the other G.711 codec): our packets go out in it from the next frame."""
        codec = self.leg.codec
        if codec is self._codec or codec == self._codec:
            return
        if codec.clock_rate != self._clock_rate:  # a trunk refuses such a change; never reached
            self._log_once("rate", "call %s: ignoring a codec change to %s", self.call_id, codec)
            return
        log.info("call %s: codec %s → %s", self.call_id, self._codec.name, codec.name)
        self._encode, self._decode = codec_functions(codec.name)
        self._decoders[codec.payload_type] = self._decode
        self._codec, self._audio_pt = codec, codec.payload_type
        self.sender.payload_type = codec.payload_type

    def tick(self) -> None:
        """Send this frame's audio, take the incoming frame, record, endpoint; never blocks."""
        self._follow_codec()
        self._hear(self._send())

    def skipped(self, frames: int) -> None:
        """The media clock skipped ``frames`` ticks to catch up after a stall: take the
        callee's audio of those ticks all the same (at most what the jitter buffer holds),
        and send nothing. The prompt goes on where it was; the callee's words must not be
        lost, and left in the buffer they would stay behind for the rest of the call."""
        jitter = self.jitter
        for _ in range(min(frames, jitter.max_packets)):
            if jitter.buffered <= jitter.depth:  # no more than playout keeps in hand
                break
            self._hear(self._silence)

    def _send(self) -> np.ndarray:
        """Send this frame (the line, or DTMF); the audio sent."""
        events = self.dtmf.next_frame(self.sender) if self.dtmf is not None else None
        if events is not None:
            outgoing = self._silence
            for datagram in events.datagrams:
                self.leg.send_media(datagram)
            self.stats.packets_out += len(events.datagrams)
            self.stats.dtmf_sent = self.dtmf.digits_sent if self.dtmf is not None else 0
        else:
            outgoing = self.player.next_frame()
            self.leg.send_media(
                self.sender.next_packet(
                    self._encode(outgoing), self.samples_per_frame, marker=self._first_packet
                )
            )
            self._first_packet = False
            self.stats.packets_out += 1
        return outgoing

    def _hear(self, outgoing: np.ndarray) -> None:
        """Take the incoming frame of the tick that sent ``outgoing``: record, take the echo
        out, endpoint, judge barge-ins."""
        incoming = self._next_incoming()
        if self.on_incoming is not None:
            self.on_incoming(incoming)
        if self.recorder is not None:
            self.recorder.robot(outgoing)
            self.recorder.callee(incoming)
        if self.echo is not None:
            self.echo.sent(outgoing)
            incoming = self.echo.cancel(incoming)

        judged = False  # the judge saw this tick's speech already
        for event in self.endpointer.feed(incoming):
            if isinstance(event, SpeechStarted):
                player = self.player
                spoken = event.preroll.size * 1000 // self._clock_rate - event.lead_ms
                over_line = player.playing and player.interruptible and not player.paused
                left_ms = player.remaining_samples() * 1000 // self._clock_rate
                action = self.judge.speech_started(
                    interruptible=over_line, voiced_ms=spoken, line_left_ms=left_ms
                )
                self._act(action)
                judged = True
            self._emit(event)
            if isinstance(event, SpeechEnded):
                self._act(self.judge.speech_ended())
                judged = True
        if not judged:
            voiced = self.endpointer.state is EndpointState.SPEAKING
            self._act(self.judge.frame(voiced=voiced))
            if not self.endpointer.in_speech:
                # the onset pause: the line may stop before the endpointer confirms speech
                # (and goes on if the sound dies unconfirmed)
                player = self.player
                over_line = player.playing and player.interruptible and not player.paused
                starting = self.endpointer.starting_voiced_ms
                self._act(self.judge.onset(voiced_ms=starting, interruptible=over_line))

    def _act(self, action: Action) -> None:
        """Carry out the barge-in judge's decision on the player, at once."""
        if action is Action.NONE:
            return
        player = self.player
        label = player.current.label if player.current is not None else ""
        if action is Action.PAUSE:
            if player.pause():
                self.stats.barge_in_pauses += 1
                self._emit(BargeInPaused(label))
            else:  # the line ended meanwhile: nothing to hold
                self.judge.line_ended()
        elif action is Action.RESUME:
            if player.paused:
                player.resume()
                self.stats.barge_in_resumes += 1
                self._emit(BargeInResumed(label))
        else:  # a confirmed interruption: the lines queued behind it go too
            self.stats.barge_ins += 1
            self._emit(BargeIn())
            player.stop(keep_uninterruptible=True)

    def _next_incoming(self) -> np.ndarray:
        """The next frame of the callee's audio; silence where nothing is due."""
        size = self.samples_per_frame
        pending = self._pending
        if pending.size == 0:  # the usual case: one 20 ms packet per tick
            packet = self.jitter.pop()
            if packet is None:
                self.stats.silent_ticks += 1
                return self._silence
            pending = self._decoders.get(packet.payload_type, self._decode)(packet.payload)
            if pending.size == size:
                return pending
        # a peer packetising at another ptime: re-cut its audio into frames
        while pending.size < size:
            packet = self.jitter.pop()
            if packet is None:
                break
            decode = self._decoders.get(packet.payload_type, self._decode)
            pending = np.concatenate((pending, decode(packet.payload)))
        if pending.size < size:
            self._pending = self._silence[:0]
            return np.concatenate((pending, self._silence[: size - pending.size]))
        self._pending = pending[size:]
        return pending[:size]

    def heard(
        self, text: str, *, final: bool, words: Sequence[tuple[str, float, float, float]] = ()
    ) -> None:
        """What the recogniser made of the callee's current utterance so far (``final``:
        its last word; ``words``: the final's words with their confidences, as
        ``AsrResult.words``). The barge-in judge weighs it: backchannels, and unsure words
        of a final, do not cut a line."""
        action = self.judge.heard(text, final=final, words=words)
        if action is not Action.NONE:
            kind = "final" if final else "partial"
            log.debug("call %s: barge-in %s on the %s %r", self.call_id, action.value, kind, text)
        self._act(action)

    @property
    def backchannel(self) -> bool:
        """Whether the utterance whose final result ``heard`` got last was a backchannel
        (it paused a line that then went on); read it right after that call."""
        return self.judge.last_backchannel

    @property
    def backchannel_words(self) -> str:
        """The words of that final result that count: backchannel words and those sure
        enough to cut a line (``BargeInSettings.word_confidence``); empty when none did."""
        return self.judge.last_words

    # ───────────── events ─────────────

    def _prompt_finished(self, playback: Playback) -> None:
        if self.judge.paused and not self.player.paused:
            self.judge.line_ended()  # stopped by someone else (the call) while held
        played_ms = playback.played_samples * 1000 // self._clock_rate
        self._emit(PromptFinished(playback.label, playback.interrupted, played_ms))

    def _emit(self, event: MediaEvent) -> None:
        try:
            self._events_send.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats.events_dropped += 1
            self._log_once(
                "events_dropped",
                "call %s: media events are not being read; dropping them (first: %s)",
                self.call_id,
                type(event).__name__,
            )

    def close(self) -> None:
        """End the ``events`` stream (its reader's loop finishes) and drop digits not yet
        sent; idempotent."""
        if self.dtmf is not None:
            self.dtmf.cancel()
        self._events_send.close()
