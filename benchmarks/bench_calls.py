"""Whole-call figures: turn latency, daemon CPU per call-second, media-clock pacing.

Run: ``.venv/bin/python benchmarks/bench_calls.py [--calls 10]``.

A real waihud places ``--calls`` simultaneous calls, each to its own sipp
callee that says "네" after the greeting (as in ``make demo``). Printed:

- turn latency: from the end of the callee's utterance (the endpointer's
  decision, which waits ``media.end_silence_ms`` of silence) to the first
  frame of the robot's answer, i.e. the final recognition + classification +
  routing + the next media tick; counted from the callee's last voiced audio
  it is ``end_silence_ms`` more;
- the daemon process's CPU time per call-second of talking (from /proc);
- media clock: ticks, late ticks, worst lateness, over the run.

What it is not: a test; nothing here asserts. The machine is shared: run it
twice before believing a tail figure.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
from pathlib import Path

import trio

from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import Play, SippPeer, sipp_peer
from waihu.testing.speech import synthesize, to_ulaw

AFTER_GREETING_MS = 7500  # the demo greeting lasts about 6.4 s
END_SILENCE_MS = 700  # media.end_silence_ms default
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def serve(
    workdir: Path, audio: Path, *, task_status: trio.TaskStatus[SippPeer] = trio.TASK_STATUS_IGNORED
) -> None:
    async with sipp_peer(
        "answer.xml", workdir, plays=[Play(AFTER_GREETING_MS, audio)], timeout=180
    ) as peer:
        task_status.started(peer)
        await trio.sleep_forever()


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp:
        base = Path(tmp)
        audio = to_ulaw(synthesize("네"), base / "ne.ul")
        async with trio.open_nursery() as nursery:
            peers = [await nursery.start(serve, base / f"sipp{i}", audio) for i in range(calls)]
            names = [f"c{i}" for i in range(calls)]
            config = write_config(
                base / "waihud",
                proxy={n: p.hostport for n, p in zip(names, peers, strict=True)},
                daemon={"max_calls": max(50, calls)},
                media={"record": False},
            )
            async with running_waihud(config) as daemon:
                cpu_before = cpu_seconds(daemon.process.pid)
                records: list[dict] = []

                async def one(name: str) -> None:
                    reply = await daemon.request("call", target="callee", script="demo-ko",
                                                 trunk=name)  # fmt: skip
                    records.append(await daemon.wait_call(reply["call_id"], timeout=180))

                async with trio.open_nursery() as placing:
                    for name in names:
                        placing.start_soon(one, name)
                cpu = cpu_seconds(daemon.process.pid) - cpu_before
                clock = (await daemon.request("status"))["media_clock"]
                await daemon.stop()
            nursery.cancel_scope.cancel()

    latencies = []
    for record in records:
        turns = record["turns"]
        for callee, robot in itertools.pairwise(turns):
            if callee["speaker"] == "callee" and robot["speaker"] == "robot":
                latencies.append((robot["started_at"] - callee["ended_at"]) * 1000)
    talked = sum(r["ended_at"] - r["answered_at"] for r in records if r["answered_at"])
    grades = sorted(r["grade"] or "-" for r in records)
    print(f"calls: {len(records)}, grades: {' '.join(grades)}")
    if latencies:
        ms = sorted(latencies)
        p90 = ms[int(0.9 * (len(ms) - 1))]
        print(
            f"turn latency after the endpointer: median {statistics.median(ms):.0f} ms, "
            f"p90 {p90:.0f} ms, max {ms[-1]:.0f} ms; from the last voiced audio add "
            f"{END_SILENCE_MS} ms"
        )
    print(f"daemon CPU: {cpu:.2f} s for {talked:.0f} call-seconds = "
          f"{1000 * cpu / max(talked, 1e-9):.2f} ms per call-second")  # fmt: skip
    print(
        f"media clock: {clock['ticks']} ticks, {clock['late_ticks']} late, "
        f"worst lateness {1000 * clock['max_lateness']:.1f} ms, skipped {clock['skipped']}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="simultaneous calls (default 10)")
    args = parser.parse_args()
    trio.run(main, args.calls)
