"""SIP flood figures: what the trunk's port sheds, and whether media pacing holds meanwhile.

Run: ``.venv/bin/python benchmarks/bench_sip_flood.py [--calls 0 100] [--rate 5000 20000]
[--seconds 8]``.

One process holds what the daemon's trio thread would: a real ``SipTrunk``
(its UDP port, its guard) and one ``MediaClock`` driving N calls of media
exactly as ``bench_media`` does (a real UDP socket per call, far ends in
another process sending speech RTP every 20 ms). The calls have no SIP
dialog: what is measured is the flood's cost on the one thread that also
paces media. A second child process (``waihu.testing.sip_flood``) sends small
OPTIONS requests, each a new transaction, at the offered rate, from

- ``allowed``: an address in ``allow_from``: the flood limit sheds it;
- ``unknown``: an address not allowed: the allowlist sheds it;
- ``unguarded``: an allowed address with a flood limit too high to bite —
  what the port did before the guard: every request parsed, answered and
  cached for 32 s.

Printed per run: offered and sent rate, datagrams the trunk saw, accepted and
shed; media clock lateness p50/p99/max and late ticks (> 5 ms).

What it is not: a test; nothing here asserts. The kernel drops what the
socket buffer cannot hold, so "seen" is below "sent" when the thread is busy.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_media import MAX_DATAGRAM, SocketLeg, far_ends, prompt_audio

import waihu.api
from waihu.media.call_media import CallMedia
from waihu.media.endpointer import Endpointer
from waihu.media.media_clock import MediaClock
from waihu_sip.trunk import SipTrunk

FRAME = 0.020
FLOODER = "127.0.0.5"  # the flood's source address (any 127/8 address is this machine)
UNGUARDED_RATE = 1e9  # a flood limit that never bites
FLOOD_RATE = 200.0  # the trunk's default flood_rate and burst, for the guarded runs
FLOOD_BURST = 400.0
WARM_UP = 2.0  # seconds of pacing before the measurement (and the flood) starts
FAR_END_SECONDS = 600.0  # the far ends play until stopped (a slow flood sender takes longer)
PROMPT_SECONDS = 30.0  # longer than any run: the robot talks throughout


class Probe:
    """Ticks first on the clock, noting when each tick began and how many deadlines the
    clock had skipped by then, so lateness is measured against the true 20 ms grid."""

    def __init__(self, clock: MediaClock) -> None:
        self.clock = clock
        self.times: list[tuple[int, float]] = []  # (grid index, perf_counter)

    def tick(self) -> None:
        stats = self.clock.stats
        self.times.append((stats.ticks + stats.skipped, time.perf_counter()))


def make_trunk(kind: str, state_dir: Path) -> SipTrunk:
    allowed = kind in ("allowed", "unguarded")
    cfg = SipTrunk.Config(
        proxy="127.0.0.1:9",
        local_port=0,
        probe_interval=0,
        allow_from=[FLOODER] if allowed else [],
        flood_rate=UNGUARDED_RATE if kind == "unguarded" else FLOOD_RATE,
        flood_burst=UNGUARDED_RATE if kind == "unguarded" else FLOOD_BURST,
    )
    log = logging.getLogger("bench.trunk")
    log.setLevel(logging.ERROR)
    ctx = waihu.api.ProviderContext(
        name="bench", state_dir=state_dir, log=log, cpu_limiter=trio.CapacityLimiter(1)
    )
    return SipTrunk(cfg, ctx)


async def run(calls: int, kind: str, rate: float, seconds: float) -> None:
    socks = []
    for _ in range(calls):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    process = None
    medias = []
    if calls:
        ready = multiprocessing.Event()
        process = multiprocessing.Process(
            target=far_ends,
            args=([s.getsockname()[1] for s in socks], FAR_END_SECONDS, ready),
        )
        process.start()
        ready.wait()
        for i, s in enumerate(socks):
            while True:
                try:
                    _, address = s.recvfrom(MAX_DATAGRAM)
                    break
                except BlockingIOError:
                    time.sleep(0.001)
            s.connect(address)
            media = CallMedia(SocketLeg(s, f"call-{i}"), endpointer=Endpointer())
            media.player.play(prompt_audio(PROMPT_SECONDS))
            medias.append(media)

    with tempfile.TemporaryDirectory() as state:
        trunk = make_trunk(kind, Path(state))
        clock = MediaClock()
        probe = Probe(clock)
        clock.add(probe)
        async with trio.open_nursery() as nursery:
            await nursery.start(trunk.run)
            assert trunk.local_address is not None
            for media in medias:
                nursery.start_soon(media.receive_loop)

                async def drain(media: CallMedia = media) -> None:
                    async for _ in media.events:
                        pass

                nursery.start_soon(drain)
            await nursery.start(clock.run)
            for media in medias:
                clock.add(media)
            await trio.sleep(WARM_UP)
            measured_from = len(probe.times)
            skipped0 = clock.stats.skipped
            count = int(rate * seconds) if kind != "none" else 0
            sent_seconds = seconds
            if count:
                flood = await trio.run_process(
                    [sys.executable, "-m", "waihu.testing.sip_flood", "127.0.0.1",
                     str(trunk.local_address[1]), FLOODER, str(count), str(rate)],
                    capture_stdout=True,
                )  # fmt: skip
                sent_seconds = float(flood.stdout.split()[3])
            else:
                await trio.sleep(seconds)
            await trio.sleep(0.5)  # the last datagrams reach the trunk
            measured_to = len(probe.times)
            skipped = clock.stats.skipped - skipped0
            counts = trunk.security_counts()
            nursery.cancel_scope.cancel()
    if process is not None:
        process.terminate()  # it plays far longer than any run; stop it now
        process.join()
    for s in socks:
        s.close()

    window = probe.times[measured_from:measured_to]
    index = np.array([i for i, _ in window])
    starts = np.array([t for _, t in window])
    lateness = (starts - index * FRAME) * 1000
    lateness = lateness - lateness.min()  # against the best-placed tick of the window
    late = int((lateness > 5).sum())
    seen = counts.accepted + counts.unknown_dropped + counts.unknown_rejected + counts.flood_dropped
    shed = counts.unknown_dropped + counts.unknown_rejected + counts.flood_dropped
    print(
        f"  {calls:4d} calls, flood {kind:9s} offered {rate if count else 0:7.0f}/s "
        f"(sent {count / sent_seconds if count else 0:7.0f}/s): seen {seen:7d}, "
        f"accepted {counts.accepted:7d}, shed {shed:7d}; lateness p50 "
        f"{np.percentile(lateness, 50):5.2f} ms, p99 {np.percentile(lateness, 99):6.2f} ms, "
        f"max {lateness.max():7.2f} ms, late ticks {late}/{len(window)}, skipped {skipped}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[0, 100])
    parser.add_argument("--rate", type=float, nargs="+", default=[5000.0, 20000.0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--kinds", nargs="+", default=["none", "unknown", "allowed", "unguarded"])
    args = parser.parse_args()
    print(f"SIP flood against one trunk, {args.seconds:g} s per run:")
    for calls in args.calls:
        for kind in args.kinds:
            for rate in [0.0] if kind == "none" else args.rate:
                trio.run(run, calls, kind, rate, args.seconds)


if __name__ == "__main__":
    main()
