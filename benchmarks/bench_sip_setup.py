"""Calls set up per second by one SIP trunk, over UDP and over TCP, against a sipp UAS.

Run: ``.venv/bin/python benchmarks/bench_sip_setup.py [--calls 400] [--concurrency 20]
[--transports udp,tcp]``.

For each transport a ``SipTrunk`` (built and run as the daemon builds
providers, in this process) dials ``--calls`` calls through a sipp callee
running ``contrib/sipp/answer.xml`` (sipp ``-t u1`` or ``-t t1``; no message
trace), ``--concurrency`` at a time; each call is hung up as soon as it is
answered and counts once its BYE is answered. Figures: calls per second over
the wall time from the first INVITE to the last 200 to BYE, the set-up time
(``dial`` until answered: INVITE, 180, 200, ACK) median and 95th percentile,
and this process's CPU per call (the trunk and the benchmark's own loop;
sipp's CPU is not counted). No RTP flows: this is signalling and the
per-call work around it (RTP sockets, dialogs, timers).

What it is not: a test (nothing asserts) or a capacity figure for the daemon
(``bench_campaign.py`` measures the whole call path). The machine is shared:
run it twice before believing a figure.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

import waihu.api
from waihu.testing.sipp import sipp_peer
from waihu.testing.sipp_stream import sipp_tcp
from waihu_sip.trunk import SipTrunk

SIPP_TIMEOUT = 600.0  # seconds: sipp ends itself after this, whatever happens
PERCENTILE_95 = 19  # index of the 95th percentile in statistics.quantiles(n=20)


@asynccontextmanager
async def callee(transport: str, workdir: Path, calls: int) -> AsyncIterator[str]:
    """A sipp UAS answering ``calls`` calls on ``transport``; yields its host:port."""
    args = ["-m", str(calls)]
    if transport == "udp":
        async with sipp_peer("answer.xml", workdir, timeout=SIPP_TIMEOUT, extra_args=args) as peer:
            yield peer.hostport
    else:
        async with sipp_tcp(
            "answer.xml", workdir, timeout=SIPP_TIMEOUT, extra_args=args, trace=False
        ) as peer:
            yield peer.hostport


def make_trunk(proxy: str, transport: str, workdir: Path) -> SipTrunk:
    """A trunk built the way the core builds providers, with probing off."""
    config = SipTrunk.Config(proxy=proxy, local_port=0, transport=transport, probe_interval=0)
    context = waihu.api.ProviderContext(
        name=transport,
        state_dir=workdir,
        log=logging.getLogger(f"bench.{transport}"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    return SipTrunk(config, context)


async def run_one(transport: str, calls: int, concurrency: int, workdir: Path) -> dict[str, float]:
    """Place ``calls`` calls over ``transport``; the figures."""
    setup: list[float] = []
    failures = 0
    async with callee(transport, workdir, calls) as proxy:
        trunk = make_trunk(proxy, transport, workdir)
        async with trio.open_nursery() as nursery:
            await nursery.start(trunk.run)
            limiter = trio.Semaphore(concurrency)
            cpu_before, started = time.process_time(), trio.current_time()

            async def one_call() -> None:
                nonlocal failures
                async with limiter:
                    t0 = trio.current_time()
                    try:
                        leg = await trunk.dial("1001")
                    except (waihu.api.CallFailed, waihu.api.TrunkError) as exc:
                        failures += 1
                        logging.getLogger("bench").warning("call failed: %s", exc)
                        return
                    setup.append(trio.current_time() - t0)
                    await leg.hangup()
                    await leg.ended.wait()

            async with trio.open_nursery() as calls_nursery:
                for _ in range(calls):
                    calls_nursery.start_soon(one_call)
            wall = trio.current_time() - started
            cpu = time.process_time() - cpu_before
            nursery.cancel_scope.cancel()
    done = len(setup)
    quantiles = statistics.quantiles(setup, n=20) if done >= 2 else [float("nan")] * 19
    return {
        "calls": done,
        "failed": failures,
        "wall": wall,
        "rate": done / wall,
        "median_ms": statistics.median(setup) * 1000 if setup else float("nan"),
        "p95_ms": quantiles[PERCENTILE_95 - 1] * 1000,
        "cpu_ms": cpu / max(done, 1) * 1000,
    }


async def main(args: argparse.Namespace) -> None:
    """Run every transport asked for and print a Markdown table."""
    rows = []
    for transport in args.transports.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-sip-{transport}-") as tmp:
            figures = await run_one(transport, args.calls, args.concurrency, Path(tmp))
        rows.append((transport.upper(), figures))
    print(f"{args.calls} calls, {args.concurrency} at a time, each hung up once answered")
    print()
    print("| transport | calls set up | failed | wall | calls/s | set-up median | set-up p95 |"
          " CPU per call |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, f in rows:
        print(
            f"| {name} | {f['calls']:.0f} | {f['failed']:.0f} | {f['wall']:.2f} s |"
            f" {f['rate']:.1f} | {f['median_ms']:.1f} ms | {f['p95_ms']:.1f} ms |"
            f" {f['cpu_ms']:.2f} ms |"
        )


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per transport")
    parser.add_argument("--concurrency", type=int, default=20, help="calls placed at once")
    parser.add_argument("--transports", default="udp,tcp", help="comma-separated: udp,tcp")
    return parser.parse_args()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    trio.run(main, parse_args())
