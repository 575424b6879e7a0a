"""CallMedia end to end over real UDP sockets on 127.0.0.1, with real espeak-ng speech.

The far end is a plain UDP socket that sends RTP (G.711 speech, DTMF, garbage)
and captures what the robot sends; the robot's side is ``UdpLeg``. Time is
trio's MockClock (autojump): the media clock, the far end's pacing and the
event consumer all run on virtual time, while the datagrams go through the
kernel's loopback for real.
"""

from __future__ import annotations

import itertools
import logging
import socket
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

from waihu.api import CallLeg, Codec
from waihu.media.barge_in import BargeInSettings
from waihu.media.call_media import (
    BargeIn,
    CallMedia,
    DtmfDigit,
    MediaEvent,
    PromptFinished,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from waihu.media.endpointer import Endpointer
from waihu.media.g711 import codec_functions
from waihu.media.media_clock import MediaClock
from waihu.media.recorder import StereoRecorder
from waihu.media.rtp import RtpPacket, RtpSender, build_rtp, parse_rtp
from waihu.media.telephone_event import TelephoneEvent, build_telephone_event
from waihu.testing.speech import speech_pcm

PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
DTMF_PT = 101
RATE = 8000
SPF = 160
FRAME = 0.020
SILENT_PAYLOAD = {"PCMU": 0xFF, "PCMA": 0xD5}  # what an all-zero frame encodes to
MAX_DATAGRAM = 2048


class UdpLeg:
    """A call leg whose media is a real UDP socket on 127.0.0.1.

    It stands in for a SIP leg because only media is under test here: there
    is no signalling, and ``hangup`` just closes the socket. The media half
    follows the ``CallLeg`` protocol as a trunk's leg does: ``send_media``
    never blocks, ``receive_media`` raises ``trio.ClosedResourceError`` once
    the call's media is closed.
    """

    def __init__(self, sock: socket.socket, codec: Codec) -> None:
        self.call_id = "call-under-test"
        self.codec = codec
        self.dtmf_payload_type: int | None = DTMF_PT
        self.ended = trio.Event()
        self.ended_by = None
        self._sock = sock

    def send_media(self, datagram: bytes) -> None:
        try:
            self._sock.send(datagram)
        except (BlockingIOError, ConnectionRefusedError):
            pass  # dropped, as a trunk's leg would

    async def receive_media(self) -> bytes:
        while True:
            if self._sock.fileno() == -1:
                raise trio.ClosedResourceError("media closed")
            try:
                return self._sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._sock)

    async def hangup(self) -> None:
        if not self.ended.is_set():
            self.ended_by = "robot"
            self.ended.set()
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    async def send_dtmf(self, digits: str) -> None:
        raise NotImplementedError

    async def transfer(self, target: str) -> None:
        raise NotImplementedError


class FarEnd:
    """The callee's phone: sends RTP paced on its own 20 ms grid, captures what arrives."""

    def __init__(self, sock: trio.socket.SocketType, codec: Codec) -> None:
        self.sock = sock
        self.codec = codec
        self.encode, self.decode = codec_functions(codec.name)
        self.sender = RtpSender(codec.payload_type)
        self.received: list[tuple[float, RtpPacket]] = []

    async def capture(self) -> None:
        while True:
            data = await self.sock.recv(MAX_DATAGRAM)
            self.received.append((trio.current_time(), parse_rtp(data)))

    async def send(self, datagram: bytes) -> None:
        await self.sock.send(datagram)

    async def play(self, pcm: np.ndarray, start: float, *, samples: int = SPF) -> None:
        """Send ``pcm`` as RTP, one packet of ``samples`` every ``samples / 8000`` s from
        ``start`` (absolute deadlines, like a real phone's clock)."""
        for k in range(pcm.size // samples):
            await trio.sleep_until(start + k * samples / RATE)
            payload = self.encode(pcm[k * samples : (k + 1) * samples])
            await self.send(self.sender.next_packet(payload, samples))


async def make_pair(codec: Codec) -> tuple[UdpLeg, FarEnd]:
    robot = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    robot.bind(("127.0.0.1", 0))
    robot.setblocking(False)
    far = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await far.bind(("127.0.0.1", 0))
    robot.connect(far.getsockname())
    await far.connect(robot.getsockname())
    return UdpLeg(robot, codec), FarEnd(far, codec)


def tone(seconds: float, freq: float = 440.0, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.int16)


class Call:
    """A media session under test: the clock, the receive loop, the far end, an event log."""

    def __init__(self, media: CallMedia, far: FarEnd, clock: MediaClock) -> None:
        self.media = media
        self.far = far
        self.clock = clock
        self.events: list[tuple[float, MediaEvent]] = []
        self.start = 0.0

    async def collect(self) -> None:
        async for event in self.media.events:
            self.events.append((trio.current_time(), event))

    def of(self, kind: type) -> list[tuple[float, MediaEvent]]:
        return [(t, ev) for t, ev in self.events if isinstance(ev, kind)]


async def run_call(
    media: CallMedia,
    far: FarEnd,
    scenario: Callable[[Call], Awaitable[None]],
    *,
    collect: bool = True,
) -> Call:
    """Run ``scenario`` with the media ticking; everything stops when it returns."""
    clock = MediaClock()
    call = Call(media, far, clock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(far.capture)
        nursery.start_soon(media.receive_loop)
        if collect:
            nursery.start_soon(call.collect)
        await nursery.start(clock.run)
        call.start = trio.current_time()
        clock.add(media)
        await scenario(call)
        clock.remove(media)
        nursery.cancel_scope.cancel()
    return call


@pytest.fixture(scope="module")
def hello() -> np.ndarray:
    return speech_pcm("여보세요")


def robot_silent(far: FarEnd, packet: RtpPacket) -> bool:
    return set(packet.payload) == {SILENT_PAYLOAD[far.codec.name]}


async def test_leg_follows_the_protocol() -> None:
    with trio.fail_after(10):
        leg, far = await make_pair(PCMU)
        assert isinstance(leg, CallLeg)
        await leg.hangup()
        far.sock.close()


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
async def test_one_packet_per_tick_with_consecutive_numbers(
    autojump_clock: trio.testing.MockClock, codec: Codec
) -> None:
    ticks = 150
    with trio.fail_after(60):
        leg, far = await make_pair(codec)
        media = CallMedia(leg, endpointer=Endpointer())

        async def scenario(call: Call) -> None:
            while call.media.stats.packets_out < ticks:
                await trio.sleep(FRAME / 2)
            call.clock.remove(media)
            while len(far.received) < ticks:
                await trio.sleep(FRAME / 2)
            await trio.sleep(10 * FRAME)  # nothing more may arrive once it stopped ticking

        await run_call(media, far, scenario)
    assert media.stats.packets_out == ticks
    assert len(far.received) == ticks
    times = [t for t, _ in far.received]
    packets = [p for _, p in far.received]
    assert all(abs(b - a - FRAME) < 1e-6 for a, b in itertools.pairwise(times))
    first = packets[0]
    for k, packet in enumerate(packets):
        assert packet.sequence == (first.sequence + k) % 65536
        assert packet.timestamp == (first.timestamp + k * SPF) % 2**32
        assert packet.ssrc == first.ssrc
        assert packet.payload_type == codec.payload_type
        assert packet.marker == (k == 0)
        assert robot_silent(far, packet)  # idle: real RTP carrying encoded silence
    assert media.stats.silent_ticks == ticks  # the far end sent nothing: silence went to the VAD


async def test_barge_in_stops_an_interruptible_prompt(
    autojump_clock: trio.testing.MockClock, hello: np.ndarray, tmp_path: Path
) -> None:
    lead = silence(0.6)
    callee = np.concatenate((lead, hello, silence(1.5)))
    recorder = StereoRecorder(tmp_path / "call.wav", RATE)
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        # confirming on the start itself (no words, confirm = pause = the endpointer's 200 ms,
        # so no onset pause before it) cuts at once: the judge's pause-then-confirm and the
        # onset pause are tested in test_media_barge_in.py
        settings = BargeInSettings(words=False, pause_ms=200, confirm_ms=200)
        media = CallMedia(leg, endpointer=Endpointer(), recorder=recorder, barge_in=settings)
        prompt = media.player.play(tone(4.0), label="greeting")

        async def scenario(call: Call) -> None:
            await far.play(callee, call.start + FRAME / 2)
            await trio.sleep(0.5)

        call = await run_call(media, far, scenario)
        await recorder.save()

    kinds = [type(ev) for _, ev in call.events if not isinstance(ev, SpeechAudio)]
    assert kinds == [BargeIn, PromptFinished, SpeechStarted, SpeechEnded]
    [(started_at, _)] = call.of(SpeechStarted)
    [(barge_at, _)] = call.of(BargeIn)
    [(_, finished)] = call.of(PromptFinished)
    assert barge_at == started_at
    assert finished == PromptFinished("greeting", True, finished.played_ms)
    assert prompt.done.is_set() and prompt.interrupted
    assert media.stats.barge_ins == 1

    # what the far end heard: the tone up to the barge-in, then silence at most 3 frames
    # after speech was confirmed
    sent = far.received
    cut = next(i for i, (_, p) in enumerate(sent) if robot_silent(far, p))
    assert not any(robot_silent(far, p) for _, p in sent[:cut])
    assert all(robot_silent(far, p) for _, p in sent[cut:])
    reaction = sent[cut][0] - started_at
    assert 0 < reaction <= 3 * FRAME + 1e-6
    assert finished.played_ms == cut * 20
    # from the callee's first word (as sent) to the robot falling silent
    speech_onset = call.start + FRAME / 2 + lead.size / RATE
    assert 0.2 <= sent[cut][0] - speech_onset <= 0.4

    # the recording: callee left, bit-exact after G.711 and the jitter buffer; robot right
    with wave.open(str(tmp_path / "call.wav"), "rb") as wav:
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    left, right = stereo[:, 0], stereo[:, 1]
    heard = far.decode(far.encode(callee))
    offset = int(np.flatnonzero(left)[0]) - int(np.flatnonzero(heard)[0])
    assert offset % SPF == 0 and 0 < offset <= 3 * SPF  # the jitter buffer's delay, in frames
    np.testing.assert_array_equal(left[offset : offset + heard.size], heard[: left.size - offset])
    assert right[: cut * SPF].any() and not right[cut * SPF :].any()


async def test_non_interruptible_prompt_plays_through_speech(
    autojump_clock: trio.testing.MockClock, hello: np.ndarray
) -> None:
    callee = np.concatenate((silence(0.6), hello, silence(1.5)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMA)
        media = CallMedia(leg, endpointer=Endpointer())
        prompt = media.player.play(tone(3.0), interruptible=False, label="disclosure")

        async def scenario(call: Call) -> None:
            await far.play(callee, call.start + FRAME / 2)
            await trio.sleep(0.5)

        call = await run_call(media, far, scenario)

    kinds = [type(ev) for _, ev in call.events if not isinstance(ev, SpeechAudio)]
    assert kinds == [SpeechStarted, SpeechEnded, PromptFinished]  # heard, but not obeyed
    [(started_at, _)] = call.of(SpeechStarted)
    [(finished_at, finished)] = call.of(PromptFinished)
    assert finished == PromptFinished("disclosure", False, 3000)
    assert finished_at > started_at
    assert not prompt.interrupted
    voiced = [p for _, p in far.received if not robot_silent(far, p)]
    assert len(voiced) == 150  # all 3 s of the prompt went out
    assert media.stats.barge_ins == 0


async def test_garbage_is_counted_dropped_and_logged_once(
    autojump_clock: trio.testing.MockClock, hello: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    callee = np.concatenate((silence(0.4), hello, silence(1.0)))
    comfort_noise = build_rtp(
        RtpPacket(payload_type=13, sequence=1, timestamp=0, ssrc=9, payload=b"\x40")
    )
    with trio.fail_after(60), caplog.at_level(logging.WARNING, "waihu.media"):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer())

        async def scenario(call: Call) -> None:
            for junk in (b"junk", b"more junk", bytes([0x40]) + bytes(15), comfort_noise):
                await far.send(junk)
            await far.play(callee, call.start + 0.2 + FRAME / 2)
            await trio.sleep(0.5)

        call = await run_call(media, far, scenario)
    assert media.stats.malformed == {"too_short": 2, "bad_version": 1}
    assert media.stats.foreign_payload == 1
    too_short = [r for r in caplog.records if "too short" in r.getMessage()]
    assert len(too_short) == 1
    assert "call-under-test" in too_short[0].getMessage()
    assert any("version 1" in r.getMessage() for r in caplog.records)
    assert any("payload type 13" in r.getMessage() for r in caplog.records)
    # and the call carried on: the speech after the garbage was heard
    assert len(call.of(SpeechStarted)) == 1
    assert len(call.of(SpeechEnded)) == 1


async def test_dtmf_digit_once_per_event(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer())
        rtp = RtpSender(DTMF_PT)

        async def press(event: int, timestamp: int) -> None:
            for duration, end in (
                (160, False),
                (320, False),
                (480, False),
                (640, True),
                (640, True),
                (640, True),
            ):
                payload = build_telephone_event(TelephoneEvent(event, end, 10, duration))
                packet = RtpPacket(
                    DTMF_PT, rtp.sequence, timestamp, rtp.ssrc, payload, marker=duration == 160
                )
                rtp.sequence += 1
                await far.send(build_rtp(packet))
                await trio.sleep(0.05)

        async def scenario(call: Call) -> None:
            await press(5, 1000)
            await press(11, 3000)
            await press(16, 5000)  # flash: not a digit
            await far.send(build_rtp(RtpPacket(DTMF_PT, 1, 7000, rtp.ssrc, b"\x01\x80")))
            await trio.sleep(0.2)

        call = await run_call(media, far, scenario)
    assert [ev for _, ev in call.events] == [DtmfDigit("5"), DtmfDigit("#")]
    assert media.stats.dtmf_digits == 2
    assert media.stats.malformed == {"telephone_event": 1}


async def test_other_ptime_is_recut_into_frames(
    autojump_clock: trio.testing.MockClock, hello: np.ndarray, tmp_path: Path
) -> None:
    callee = np.concatenate((silence(0.3), hello, silence(1.0)))
    callee = callee[: callee.size - callee.size % 240]
    recorder = StereoRecorder(tmp_path / "call.wav", RATE)
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer(), recorder=recorder, jitter_depth=3)

        async def scenario(call: Call) -> None:
            await far.play(callee, call.start + FRAME / 2, samples=240)  # ptime 30
            await trio.sleep(0.5)

        call = await run_call(media, far, scenario)
    left = recorder.stereo()[:, 0]
    heard = far.decode(far.encode(callee))
    offset = int(np.flatnonzero(left)[0]) - int(np.flatnonzero(heard)[0])
    assert offset > 0
    np.testing.assert_array_equal(left[offset : offset + heard.size], heard)
    assert media.stats.jitter.lost == 0
    assert len(call.of(SpeechEnded)) == 1


async def test_full_event_channel_drops_instead_of_blocking(
    autojump_clock: trio.testing.MockClock, hello: np.ndarray
) -> None:
    callee = np.concatenate((silence(0.4), hello, silence(1.0)))
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer(), events_capacity=2)

        async def scenario(call: Call) -> None:
            await far.play(callee, call.start + FRAME / 2)
            await trio.sleep(0.5)

        call = await run_call(media, far, scenario, collect=False)
    assert media.stats.events_dropped > 10
    # the clock never stalled: a packet went out on every tick (but perhaps the very
    # first, which may run before the call was added)
    assert call.clock.stats.ticks - 1 <= media.stats.packets_out <= call.clock.stats.ticks
    assert call.clock.stats.late_ticks == 0


async def test_receive_loop_ends_when_media_closes() -> None:
    with trio.fail_after(10):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(media.receive_loop)
            await far.send(b"\x80\x00" + bytes(10) + b"\xff" * SPF)
            await trio.testing.wait_all_tasks_blocked()
            await leg.hangup()  # the loop must return on its own, or fail_after fires
        assert media.stats.datagrams_in == 1
        media.close()
        assert [ev async for ev in media.events] == []
        far.sock.close()


def test_endpointer_rate_must_match_codec() -> None:
    robot = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        leg = UdpLeg(robot, PCMU)
        with pytest.raises(ValueError, match="16000 Hz but the call's codec PCMU at 8000"):
            CallMedia(leg, endpointer=Endpointer(sample_rate=16000))
        leg.codec = Codec("G729", 18)
        with pytest.raises(ValueError, match="unsupported codec 'G729'"):
            CallMedia(leg, endpointer=Endpointer())
    finally:
        robot.close()


async def test_a_codec_the_far_end_switches_to_mid_call_is_followed_both_ways(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The trunk's leg changes ``codec`` (a re-INVITE offered only PCMA): from the next frame
    our packets are PCMA, and the far end's PCMA audio is decoded as PCMA."""
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        recorder = StereoRecorder(tmp_path / "switch.wav", RATE)
        media = CallMedia(leg, endpointer=Endpointer(), recorder=recorder)
        loud = np.full(SPF * 10, 3000, dtype=np.int16)

        async def scenario(call: Call) -> None:
            await trio.sleep(0.2)
            leg.codec = PCMA
            far.encode, far.sender = codec_functions("PCMA")[0], RtpSender(PCMA.payload_type)
            await trio.sleep(0.1)
            await far.play(loud, trio.current_time())
            await trio.sleep(0.3)

        await run_call(media, far, scenario)
    types = [p.payload_type for _, p in far.received]
    switched = types.index(PCMA.payload_type)
    assert set(types[:switched]) == {0} and set(types[switched:]) == {8}
    assert {p.payload[0] for _, p in far.received[switched:]} == {SILENT_PAYLOAD["PCMA"]}
    callee = recorder.stereo()[:, 0]
    assert np.count_nonzero(np.abs(callee.astype(int) - 3000) < 100) >= SPF * 8  # decoded right


async def test_audio_that_came_in_over_skipped_ticks_is_heard_not_lost(
    autojump_clock: trio.testing.MockClock, hello: np.ndarray
) -> None:
    """After a stall the clock skips ticks (nothing is sent for them), but the callee's
    packets of that time are in the jitter buffer: ``skipped`` takes them, down to the
    playout depth, so the endpointer hears the words and the delay does not stay."""
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer(start_ms=100))
        frames = media.jitter.max_packets  # all a stall can leave behind
        for _ in range(10):  # the line was quiet before
            media.endpointer.feed(np.zeros(SPF, np.int16))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(media.receive_loop)
            nursery.start_soon(far.capture)
            for k in range(frames):  # 200 ms of the word at once: the stall's backlog
                payload = far.encode(hello[k * SPF : (k + 1) * SPF])
                await far.send(far.sender.next_packet(payload, SPF))
            while media.jitter.buffered < frames:
                await trio.sleep(FRAME / 4)
            media.skipped(50)
            await trio.sleep(5 * FRAME)
            nursery.cancel_scope.cancel()
    assert media.jitter.buffered == media.jitter.depth  # the backlog is gone, in order
    assert media.jitter.stats.overflow == 0 and media.jitter.stats.late == 0
    assert media.stats.packets_out == 0 and far.received == []  # nothing sent for them
    events = []
    while True:
        try:
            events.append(media.events.receive_nowait())
        except trio.WouldBlock:
            break
    assert any(isinstance(event, SpeechStarted) for event in events)  # the word was heard
