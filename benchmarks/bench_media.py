"""Media figures: the cost of one call's 20 ms tick, and media-clock pacing with N calls.

Run: ``.venv/bin/python benchmarks/bench_media.py [--calls 1 100 200] [--seconds 10]``.

- per-frame cost: ``timeit`` of each step of ``CallMedia.tick`` (G.711 encode,
  RTP packetise, decode, VAD/endpointer) and of the whole tick with the
  datagram really sent over loopback UDP; also the receive side (parse +
  jitter buffer) per packet;
- pacing: one ``MediaClock`` in real time driving N calls. Each call's leg is
  a real UDP socket; a separate process plays the far ends (speech RTP into
  every call every 20 ms, and drains what the robot sends), so the daemon
  process does exactly what it would on a trunk. Printed: tick lateness
  (p50/p99/max), late ticks (> 5 ms), skipped ticks, time spent in one tick,
  and the daemon process's CPU per call-second.

What it is not: a test; nothing here asserts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import time
import timeit

import numpy as np
import trio

from waihu.api import Codec
from waihu.media.call_media import CallMedia
from waihu.media.endpointer import Endpointer
from waihu.media.g711 import ulaw_decode, ulaw_encode
from waihu.media.jitter_buffer import JitterBuffer
from waihu.media.media_clock import MediaClock
from waihu.media.rtp import RtpSender, parse_rtp
from waihu.testing.speech import CALL_RATE, speech_pcm

PCMU = Codec("PCMU", 0)
SPF = PCMU.samples_per_frame
FRAME = 0.020
MAX_DATAGRAM = 2048
CALLEE_TEXT = "가격이 얼마 예요"


def callee_audio() -> np.ndarray:
    """Speech with pauses, looped by the far ends: VAD sees both voice and silence."""
    pause = np.zeros(CALL_RATE // 2, np.int16)
    audio = np.concatenate((speech_pcm(CALLEE_TEXT), pause, pause))
    return audio[: audio.size - audio.size % SPF]


def prompt_audio(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * CALL_RATE)) / CALL_RATE
    return (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


class SocketLeg:
    """A call leg whose media is a UDP socket (no signalling: this measures media only)."""

    def __init__(self, sock: socket.socket, call_id: str) -> None:
        self.call_id = call_id
        self.codec = PCMU
        self.dtmf_payload_type = 101
        self.ended = trio.Event()
        self.ended_by = None
        self.sock = sock

    def send_media(self, datagram: bytes) -> None:
        try:
            self.sock.send(datagram)
        except (BlockingIOError, ConnectionRefusedError):
            pass

    async def receive_media(self) -> bytes:
        while True:
            try:
                return self.sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)

    async def hangup(self) -> None:
        self.ended.set()

    async def send_dtmf(self, digits: str) -> None:
        raise NotImplementedError

    async def transfer(self, target: str) -> None:
        raise NotImplementedError


def us(seconds: float) -> str:
    return f"{seconds * 1e6:7.1f} µs"


# ───────────────────────── per-frame cost ─────────────────────────


def frame_costs(number: int = 20000) -> None:
    audio = callee_audio()
    frames = [audio[i : i + SPF] for i in range(0, audio.size, SPF)]
    payloads = [ulaw_encode(f) for f in frames]
    sender = RtpSender(0)
    endpointer = Endpointer()

    def cycle(items: list) -> object:
        state = {"i": 0}

        def next_item() -> object:
            state["i"] = (state["i"] + 1) % len(items)
            return items[state["i"]]

        return next_item

    next_frame, next_payload = cycle(frames), cycle(payloads)
    steps = {
        "G.711 encode (160 samples)": lambda: ulaw_encode(next_frame()),
        "G.711 decode (160 bytes)": lambda: ulaw_decode(next_payload()),
        "RTP packetise": lambda: sender.next_packet(payloads[0], SPF),
        "endpointer.feed (VAD + gates)": lambda: endpointer.feed(next_frame()),
    }
    print("per-frame cost, one call (speech with pauses in, a prompt out):")
    for name, fn in steps.items():
        print(f"  {name:34s} {us(min(timeit.repeat(fn, number=number, repeat=5)) / number)}")

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    robot = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    robot.bind(("127.0.0.1", 0))
    robot.setblocking(False)
    robot.connect(sink.getsockname())
    sink.setblocking(False)
    media = CallMedia(SocketLeg(robot, "bench"), endpointer=Endpointer(), recorder=None)
    far = RtpSender(0)
    datagrams = [far.next_packet(p, SPF) for p in payloads]

    def receive_side() -> None:
        media._on_datagram(next_datagram())  # what receive_loop does per datagram

    next_datagram = cycle(datagrams)

    def full_tick() -> None:
        if not media.player.playing:
            media.player.play(prompt_audio(5.0))
        receive_side()
        media.tick()
        try:
            while True:
                sink.recv(MAX_DATAGRAM)
        except BlockingIOError:
            pass

    jitter = JitterBuffer()
    next_packet = cycle([parse_rtp(d) for d in datagrams])

    def parse_and_push() -> None:
        parse_rtp(next_datagram())
        jitter.push(next_packet())
        jitter.pop()

    n = number // 4
    print(
        f"  {'receive: parse + jitter push/pop':34s} "
        f"{us(min(timeit.repeat(parse_and_push, number=n, repeat=5)) / n)}"
    )
    tick_total = min(timeit.repeat(full_tick, number=n, repeat=5)) / n
    print(
        f"  {'whole tick incl. UDP send + receive':34s} {us(tick_total)}"
        "  (the loop also drains the sink: two recv calls)"
    )
    robot.close()
    sink.close()


# ───────────────────────── pacing with N calls ─────────────────────────


def far_ends(ports: list[int], seconds: float, ready: multiprocessing.Event) -> None:
    """Another process: sends one speech packet per call every 20 ms; drains the replies."""
    audio = callee_audio()
    payloads = [ulaw_encode(audio[i : i + SPF]) for i in range(0, audio.size, SPF)]
    socks = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    senders = [RtpSender(0) for _ in ports]
    ready.set()
    start = time.monotonic()
    k = 0
    while True:
        deadline = start + k * FRAME
        now = time.monotonic()
        if now - start > seconds:
            break
        if deadline > now:
            time.sleep(deadline - now)
        payload = payloads[k % len(payloads)]
        for s, sender in zip(socks, senders, strict=True):
            try:
                s.send(sender.next_packet(payload, SPF))
            except (BlockingIOError, ConnectionRefusedError):
                pass
            try:
                while True:
                    s.recv(MAX_DATAGRAM)
            except (BlockingIOError, ConnectionRefusedError):
                pass
        k += 1


class Probe:
    """Ticks first (or last) on the clock, noting when each tick began (or ended)."""

    def __init__(self, clock: MediaClock) -> None:
        self.clock = clock
        self.times: dict[int, float] = {}

    def tick(self) -> None:
        self.times[self.clock.stats.ticks] = time.perf_counter()


async def pacing(calls: int, seconds: float) -> None:
    socks = []
    for _ in range(calls):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    ready = multiprocessing.Event()
    process = multiprocessing.Process(
        target=far_ends, args=([s.getsockname()[1] for s in socks], seconds + 2, ready)
    )
    process.start()
    ready.wait()
    medias = []
    # learn each far end's address from its first packet, as symmetric RTP would
    for i, s in enumerate(socks):
        while True:
            try:
                _, address = s.recvfrom(MAX_DATAGRAM)
                break
            except BlockingIOError:
                time.sleep(0.001)
        s.connect(address)
        media = CallMedia(SocketLeg(s, f"call-{i}"), endpointer=Endpointer())
        media.player.play(prompt_audio(seconds + 5))
        medias.append(media)

    clock = MediaClock()
    first, last = Probe(clock), Probe(clock)
    clock.add(first)
    async with trio.open_nursery() as nursery:
        for media in medias:
            nursery.start_soon(media.receive_loop)

            async def drain(media: CallMedia = media) -> None:
                async for _ in media.events:
                    pass

            nursery.start_soon(drain)
        await nursery.start(clock.run)
        for media in medias:
            clock.add(media)
        clock.add(last)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await trio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        nursery.cancel_scope.cancel()
    process.join()
    for s in socks:
        s.close()

    measured = sorted(set(first.times) & set(last.times))[5:]  # skip start-up ticks
    starts = np.array([first.times[n] for n in measured])
    grid = starts[0] + (np.array(measured) - measured[0]) * FRAME
    lateness = np.maximum(starts - grid, 0) * 1000
    spent = [last.times[n] - first.times[n] for n in measured]
    received = sum(m.stats.datagrams_in for m in medias)
    print(
        f"  {calls:4d} calls: lateness p50 {np.percentile(lateness, 50):5.2f} ms, "
        f"p99 {np.percentile(lateness, 99):5.2f} ms, max {lateness.max():6.2f} ms; "
        f"late ticks {clock.stats.late_ticks}/{clock.stats.ticks}, skipped {clock.stats.skipped}; "
        f"tick work mean {statistics.fmean(spent) * 1000:5.2f} ms, "
        f"max {max(spent) * 1000:5.2f} ms; "
        f"CPU {cpu / wall * 100:5.1f}% = {cpu * 1000 / (calls * wall):.2f} ms per call-second; "
        f"{received / wall / max(calls, 1):.0f} pkt/s/call in"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 50, 100, 200])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    frame_costs()
    print(f"media clock pacing, {args.seconds:g} s real time per run:")
    for calls in args.calls:
        trio.run(pacing, calls, args.seconds)


if __name__ == "__main__":
    main()
