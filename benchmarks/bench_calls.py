"""Whole-call figures: turn latency, daemon CPU per call-second, media-clock pacing.

Run: ``.venv/bin/python benchmarks/bench_calls.py [--calls 10]``.

A real waihud places ``--calls`` simultaneous calls, each to its own sipp
callee that says "네" after the greeting (as in ``make demo``). Printed:

- turn latency: from the end of the callee's utterance (the endpointer's
  decision, which waits ``media.end_silence_ms`` of silence) to the first
  frame of the robot's answer, i.e. the final recognition + classification +
  routing + the next media tick; counted from the callee's last voiced audio
  it is ``end_silence_ms`` more;
- voice to voice: from the callee's last voiced sample to the robot's first
  sample of its answer, read from each call's stereo recording (the daemon's
  own timeline: what it heard and what it sent, loopback adding nothing to
  speak of); ``--quick-end-ms 0`` turns the early end of turn off to compare;
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
import wave
from pathlib import Path

import numpy as np
import trio

from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import Play, SippPeer, sipp_peer
from waihu.testing.speech import synthesize, to_ulaw

AFTER_GREETING_MS = 7500  # the demo greeting lasts about 6.4 s
END_SILENCE_MS = 700  # media.end_silence_ms default
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
VOICE_LEVEL = 300  # a recorded sample above this (about -40 dBFS) is voice
RECORDING_RATE = 8000


def voice_to_voice_ms(recording: str) -> float | None:
    """Callee's last voiced sample → the robot's next voiced sample, from a stereo
    recording (callee left, robot right); None when either is missing."""
    with wave.open(recording) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    callee = np.flatnonzero(np.abs(frames[:, 0].astype(np.int32)) > VOICE_LEVEL)
    if not len(callee):
        return None
    robot = np.flatnonzero(np.abs(frames[callee[-1] :, 1].astype(np.int32)) > VOICE_LEVEL)
    return None if not len(robot) else 1000 * robot[0] / RECORDING_RATE


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


async def main(calls: int, quick_end_ms: int) -> None:
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
                media={"quick_end_ms": quick_end_ms},
            )
            async with running_waihud(config) as daemon:
                cpu_before = cpu_seconds(daemon.process.pid)
                records: list[dict] = []

                async def one(name: str) -> None:
                    reply = await daemon.request("call", target="1001", script="demo-ko",
                                                 trunk=name)  # fmt: skip
                    records.append(await daemon.wait_call(reply["call_id"], timeout=180))

                async with trio.open_nursery() as placing:
                    for name in names:
                        placing.start_soon(one, name)
                cpu = cpu_seconds(daemon.process.pid) - cpu_before
                clock = (await daemon.request("status"))["media_clock"]
                await daemon.stop()
            nursery.cancel_scope.cancel()
        recordings = [r["recording"] for r in records if r.get("recording")]
        voice = [
            v
            for v in [await trio.to_thread.run_sync(voice_to_voice_ms, r) for r in recordings]
            if v is not None
        ]

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
    if voice:
        ms = sorted(voice)
        p95 = ms[int(0.95 * (len(ms) - 1))]
        print(
            f"voice to voice (quick_end_ms {quick_end_ms}): p50 {statistics.median(ms):.0f} ms,"
            f" p95 {p95:.0f} ms, max {ms[-1]:.0f} ms over {len(ms)} calls"
        )
    print(f"daemon CPU: {cpu:.2f} s for {talked:.0f} call-seconds = "
          f"{1000 * cpu / max(talked, 1e-9):.2f} ms per call-second")  # fmt: skip
    print(
        f"media clock: {clock['ticks']} ticks, {clock['late_ticks']} late, "
        f"worst lateness {clock['max_lateness_ms']:.1f} ms, skipped {clock['skipped']}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="simultaneous calls (default 10)")
    parser.add_argument(
        "--quick-end-ms",
        type=int,
        default=250,
        help="[media] quick_end_ms for the run; 0 turns the early end off (default 250)",
    )
    args = parser.parse_args()
    trio.run(main, args.calls, args.quick_end_ms)
