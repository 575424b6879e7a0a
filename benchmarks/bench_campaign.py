"""Campaign scheduler overhead: calls set up per second and CPU per call at 100 lines.

Run: ``.venv/bin/python benchmarks/bench_campaign.py [--calls 400] [--lines 100]``.

A real waihud runs one campaign of ``--calls`` contacts on ``--lines`` lines
against one sipp switchboard (``contrib/sipp/switchboard.xml``). Every number
ends in 7, so each callee answers at once and hangs up after ``HANGUP_MS``:
the robot's greeting (about 6.4 s) never finishes, and what is measured is the
scheduler's round per contact — claim, checks, attempt row, INVITE, answer,
the callee's BYE, filing the outcome — not the talking. Pacing is set far
above what the machine can do (``CALLS_PER_MINUTE``, on the campaign and the
trunk), so the lines and the CPU are the limits. The campaign is driven as an
operator would, over the control socket: ``campaign.create``,
``campaign.add_contacts`` in batches, ``campaign.start``, then
``campaign.show`` until it is ``completed``. Printed:

- calls, their outcomes, the wall time from ``campaign.start`` to the poll that
  saw ``completed``, and calls per second over it;
- the dial rate from the attempt rows: calls over the span from the first
  INVITE's attempt to the last one's (no start-up or tail in it), and the
  median length of an attempt (INVITE to outcome filed);
- waihud's CPU time per call (user + system from /proc, all its threads),
  and the sipp process's per call in the same run for comparison — sipp runs
  as every harness sipp does, writing a trace of each message, so its figure
  is an upper bound on what a plain sipp spends;
- the peak number of live calls, as the ``campaign.show`` polls saw it
  (``live_calls``) and exactly, from the attempts' start and end times;
- the machine's load average before and after.

The polling is itself work for waihud: its CPU cost per ``campaign.show`` is
measured before the start and printed beside the total, which includes it.

What it is not: a test; nothing here asserts. The machine is shared and has
two cores, which waihud and sipp split: run it twice before believing a figure.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import trio
from bench_calls import cpu_seconds

from waihu.testing.daemon import DaemonUnderTest, running_waihud, write_config
from waihu.testing.sipp import switchboard_peer

BENCH_TRUNK = "bench"
SPARE_TRUNK = "spare"  # write_config's default trunk; campaigns here name BENCH_TRUNK instead
HANGUP_MS = 200  # the callee (digit 7) hangs up this long after answering
CALLS_PER_MINUTE = 6000.0  # 100 a second, on campaign and trunk: never the limit here
MAX_CALLS = 200  # daemon.max_calls, above the lines so only the lines limit the campaign
RING_TIMEOUT = 30.0  # seconds; the switchboard answers at once, so this never fires
CONTACT_BATCH = 1000  # contacts per campaign.add_contacts, as waihuctl campaign import sends
POLL_SECONDS = 0.25  # between campaign.show polls while it runs
POLL_COST_SAMPLES = 20  # campaign.show requests timed before the start to price one poll
DONE_TIMEOUT_PER_CALL = 1.0  # seconds allowed per call before the run is called stuck
DONE_TIMEOUT_MIN = 120.0  # ...and at least this, for start-up on a loaded machine
SCRIPT = "demo-ko"
CALLER_ID = "02160000000"


def contacts(count: int) -> list[dict[str, Any]]:
    """``count`` distinct mobile numbers ending in 7 (the switchboard's answer-and-hang-up)."""
    return [
        {"number": f"+86138{i:07d}7", "variables": {}, "timezone": None, "line": i + 1}
        for i in range(count)
    ]


def config_for(directory: Path, switchboard: str, lines: int) -> Path:
    """A waihud.toml with trunk ``bench`` to the switchboard at ``lines`` lines, fast pacing.

    ``write_config`` writes its trunks without the core's trunk keys, so the
    bench trunk is a table of its own in ``extra``; the spare default trunk it
    needs points at the same switchboard and dials nothing.
    """
    trunk = "\n".join(
        [
            f"[trunk.{BENCH_TRUNK}]",
            'type = "sip"',
            f'proxy = "{switchboard}"',
            'local_host = "127.0.0.1"',
            "local_port = 0",
            f"lines = {lines}",
            f"calls_per_minute = {CALLS_PER_MINUTE}",
            "probe_interval = 0",  # the switchboard would take an OPTIONS for a call
        ]
    )
    return write_config(
        directory,
        proxy={SPARE_TRUNK: switchboard},
        daemon={"max_calls": max(MAX_CALLS, lines)},
        media={"record": False},
        extra=trunk,
    )


@attrs.frozen
class AttemptFigures:
    """What the attempt rows say about the run."""

    dial_rate: float  # attempts a second, from the first start to the last
    peak: int  # most attempts open at once
    median_ms: float  # an attempt's length, INVITE to filed outcome


def attempt_figures(database: Path) -> AttemptFigures:
    """Read the attempt rows of the finished run (the daemon has stopped)."""
    with closing(sqlite3.connect(database)) as db:
        rows = db.execute("SELECT started_at, ended_at FROM attempts").fetchall()
    starts = sorted(start for start, _ in rows)
    span = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    # a sweep over start (+1) and end (-1) instants; an end sorts before a start at the
    # same instant, so a line handed straight on is not counted twice
    edges = sorted([(s, 1) for s, _ in rows] + [(e, -1) for _, e in rows if e is not None])
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    lengths = [1000 * (e - s) for s, e in rows if e is not None]
    return AttemptFigures(
        dial_rate=(len(starts) - 1) / span if span > 0 else float("nan"),
        peak=peak,
        median_ms=statistics.median(lengths) if lengths else float("nan"),
    )


async def poll_cost(daemon: DaemonUnderTest, campaign: str) -> float:
    """waihud's CPU seconds for one ``campaign.show``, averaged over a few."""
    before = cpu_seconds(daemon.process.pid)
    for _ in range(POLL_COST_SAMPLES):
        await daemon.request("campaign.show", campaign=campaign)
    return (cpu_seconds(daemon.process.pid) - before) / POLL_COST_SAMPLES


async def main(calls: int, lines: int) -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        base = Path(tmp)
        # one call more than the campaign places, so sipp is still running (and its
        # /proc entry there) when the campaign completes; it is stopped at the end
        async with switchboard_peer(
            base / "sipp",
            calls + 1,
            keys={"hangup_ms": str(HANGUP_MS)},
            timeout=DONE_TIMEOUT_MIN + calls * DONE_TIMEOUT_PER_CALL,
        ) as sipp:
            config = config_for(base / "waihud", sipp.hostport, lines)
            async with running_waihud(config) as daemon:
                created = await daemon.request(
                    "campaign.create",
                    settings={
                        "name": "bench",
                        "script": SCRIPT,
                        "trunk": BENCH_TRUNK,
                        "caller_id": CALLER_ID,
                        "lines": lines,
                        "calls_per_minute": CALLS_PER_MINUTE,
                        "windows": ["daily 00:00-24:00"],
                        "max_attempts": 1,
                        "ring_timeout": RING_TIMEOUT,
                    },
                )
                campaign = created["id"]
                everyone = contacts(calls)
                for first in range(0, calls, CONTACT_BATCH):
                    batch = everyone[first : first + CONTACT_BATCH]
                    added = await daemon.request(
                        "campaign.add_contacts", campaign=campaign, contacts=batch
                    )
                    if added["rejects"]:
                        raise RuntimeError(f"contacts refused: {added['rejects'][:5]}")
                per_poll = await poll_cost(daemon, campaign)

                waihud_before = cpu_seconds(daemon.process.pid)
                sipp_before = cpu_seconds(sipp.process.pid)
                started = time.monotonic()
                await daemon.request("campaign.start", campaign=campaign)
                polls = peak_polled = 0
                with trio.fail_after(DONE_TIMEOUT_MIN + calls * DONE_TIMEOUT_PER_CALL):
                    while True:
                        shown = await daemon.request("campaign.show", campaign=campaign)
                        polls += 1
                        peak_polled = max(peak_polled, len(shown["live_calls"]))
                        if shown["state"] == "completed":
                            break
                        await trio.sleep(POLL_SECONDS)
                wall = time.monotonic() - started
                waihud_cpu = cpu_seconds(daemon.process.pid) - waihud_before
                sipp_cpu = cpu_seconds(sipp.process.pid) - sipp_before
                await daemon.stop()
                figures = attempt_figures(daemon.database)
    load_after = os.getloadavg()

    outcomes = " ".join(f"{k} {v}" for k, v in sorted(shown["outcomes"].items()))
    print(f"calls: {shown['attempts']} on {lines} lines; outcomes: {outcomes or '-'}")
    print(f"wall: {wall:.2f} s from campaign.start to completed = {calls / wall:.1f} calls/s")
    print(
        f"dial rate: {figures.dial_rate:.1f} calls/s (attempt rows, first to last start); "
        f"an attempt lasts {figures.median_ms:.0f} ms (median, INVITE to outcome filed)"
    )
    print(
        f"waihud CPU: {waihud_cpu:.2f} s = {1000 * waihud_cpu / calls:.2f} ms per call "
        f"(of it {polls} campaign.show polls at ~{1000 * per_poll:.1f} ms each)"
    )
    print(
        f"sipp CPU: {sipp_cpu:.2f} s = {1000 * sipp_cpu / calls:.2f} ms per call "
        "(with its message trace)"
    )
    print(f"peak live calls: {peak_polled} seen by campaign.show, {figures.peak} from the attempts")
    print(
        "load average (1, 5, 15 min): before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in load_after)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="contacts to call (default 400)")
    parser.add_argument("--lines", type=int, default=100, help="campaign lines (default 100)")
    args = parser.parse_args()
    trio.run(main, args.calls, args.lines)
