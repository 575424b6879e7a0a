"""Turn-taking figures on the wire: voice-to-voice, barge-in reaction, false barge-ins.

Run: ``.venv/bin/python benchmarks/bench_turns.py [v2v|reaction|false|all] [options]``
(``make bench-turns`` runs ``all`` at the issue's sizes).

A real waihud calls scripted callees (``waihu.testing.callee``: sipp answers, a trio RTP
endpoint in this process plays the callee's side and logs every packet with its time and
whether it is voiced), one sipp and one trunk per call, all calls placed at once, script
``demo-ko``, speech by espeak-ng recognised by the Korean vosk model. Printed:

- ``v2v``: voice-to-voice = the callee's last voiced packet → the first packet of the
  robot's answer, p50/p95, at 1, 40 and 100 calls whose callees answer together when the
  greeting ends; ``--answer short`` ("네", a confident complete answer) or ``long`` ("가격이
  얼마 예요", a question the robot answers). Targets (issue 9): p50 ≤ 500 ms for short
  answers at 1 call; p95 ≤ end window + 150 ms at 40 calls.
- ``reaction``: barge-in reaction = the callee's first voiced packet of a question asked
  0.8–2.4 s into the greeting → the robot's last voiced packet before 300 ms of quiet, p50/
  p95. Target p95 ≤ 250 ms.
- ``false``: false barge-ins over ``--prompts`` robot prompts with only the robot's echo
  (−20 dB, 50 ms) plus line noise, and over as many backchannels ("네" mid-greeting) and
  coughs (150 ms bursts mid-greeting). Counted: lines cut (filed ``interrupted``), pauses
  (the line went quiet ≥ 300 ms and carried on: the wire shows it, the daemon need not
  report it) and backchannel turns filed. Targets: 0 cut on echo, ≤ 2 on backchannels and
  on coughs.

What it is not: a test; nothing here asserts, and the machine is shared (run twice before
believing a tail). Wire times are this process's receive/send times, so they include its
own scheduling (a few ms at 100 calls).
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import trio

from waihu.testing.callee import (
    CalleeLine,
    CalleeScript,
    CallPlan,
    Echo,
    PlacedCall,
    Sound,
    after_robot_starts,
    after_robot_stops,
    batch_dir,
    call_callees,
    cough_pcm,
    talkspurts,
)
from waihu.testing.speech import speech_pcm

END_WINDOW_MS = 700  # media.end_silence_ms default: the full end-of-turn window
V2V_SHORT_TARGET_MS = 500
V2V_SLACK_MS = 150  # p95 target at 40 calls: end window + this
REACTION_TARGET_MS = 250
FALSE_TARGET = 2  # at most this many cut lines on backchannels, and on coughs
REPLY_AFTER_MS = 200  # the callee answers this long after the robot's line ended
NOISE_DBFS = -60.0  # line noise under everything in the false barge-in runs
ECHO = Echo(gain_db=-20.0, delay_ms=50)
PAUSE_MS = 300  # a quiet this long inside a line is a pause (the recordings' own are < 270)
LINE_GAP_MS = 1500  # ... and one this long ends the line
PAUSE_WINDOW_S = 1.5  # a pause this soon after a backchannel or cough began is its doing
QUIET_MS = 300  # the robot has reacted once it has been quiet this long
KEEP: Path | None = None  # --keep: each batch's daemon log and callee files stay here
CUT_IN_MS = (800, 2400)  # when the callee cuts into the greeting (before its 2.7 s pause)
PROMPTS_PER_SILENT_CALL = 3  # greeting, re-prompt, goodbye
ANSWERS = {"short": "네", "long": "가격이 얼마 예요"}
HEAR_OUT_S = 6.0  # after a backchannel or cough: the rest of the greeting and a bit
SETTLE_S = 2.0  # after the callee's last sound, how long to keep a call for the robot's reply


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``."""
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, math.ceil(q * len(ranked)) - 1))]


def figures(ms: Sequence[float]) -> str:
    if not ms:
        return "no samples"
    return (
        f"p50 {pct(ms, 0.5):.0f} ms, p95 {pct(ms, 0.95):.0f} ms, max {max(ms):.0f} ms (n={len(ms)})"
    )


def done_with(label: str):
    """Hang up once the callee's sound ``label`` is out and the robot has answered it (or
    has not for ``SETTLE_S``)."""

    def predicate(line: CalleeLine) -> bool:
        span = line.sound_span(label)
        if span is None or not line.finished:
            return False
        spoken = line.voice_to_voice(label) is not None
        heard = line.log[-1].at if line.log else span[1]
        return (spoken and heard - span[1] > SETTLE_S) or heard - span[1] > 4 * SETTLE_S

    return predicate


def after_sound(seconds: float):
    """Hang up ``seconds`` after the callee's last sound ended (the line it fell into has
    had time to resume and end)."""

    def predicate(line: CalleeLine) -> bool:
        span = line.sound_span("s")
        return line.finished and span is not None and line.log[-1].at - span[1] > seconds

    return predicate


async def batch(plans: list[CallPlan], hang_up_when=None) -> list[PlacedCall]:
    """The calls of ``plans``, placed at once; the failed ones are reported and left out."""
    cpu, wall = time.process_time(), time.monotonic()
    with batch_dir(KEEP, "bench-turns-") as tmp:
        if KEEP is not None:
            print(f"  batch of {len(plans)} in {tmp}")
        placed = await call_callees(Path(tmp), plans, hang_up_when=hang_up_when, timeout=240)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    for failed in (p for p in placed if p.error):
        print(f"  left out: {failed.error}")
    late = max((p.lateness for p in placed), default=0.0)
    print(f"  ({len(plans)} calls; the callees' worst send lateness {1000 * late:.1f} ms;"
          f" this process used {cpu:.1f} s CPU in {wall:.1f} s)")  # fmt: skip
    return [p for p in placed if not p.error]


async def voice_to_voice(calls: int, answer: str) -> list[float]:
    pcm = speech_pcm(ANSWERS[answer])
    plans = [
        CallPlan(CalleeScript([Sound("answer", pcm, after_robot_stops(REPLY_AFTER_MS))]))
        for _ in range(calls)
    ]
    placed = await batch(plans, done_with("answer"))
    ms = [1000 * v for p in placed if p.line and (v := p.line.voice_to_voice("answer"))]
    # what the robot's next line was: the answer, or a re-prompt when the reply was not heard
    replies = Counter(turns[1]["text"][:8] for p in placed if len(turns := robot_turns(p)) > 1)
    outcomes = Counter(str(p.record.get("outcome")) for p in placed)
    print(f"v2v {answer:5} at {calls:3} calls: {figures(ms)}; next robot lines {dict(replies)};"
          f" outcomes {dict(outcomes)}")  # fmt: skip
    return ms


async def reaction(prompts: int, concurrency: int) -> list[float]:
    pcm = speech_pcm(ANSWERS["long"])
    rng = random.Random(9)
    ms: list[float] = []
    cut = 0
    for start in range(0, prompts, concurrency):
        plans = [
            CallPlan(CalleeScript([Sound("q", pcm, after_robot_starts(rng.randrange(*CUT_IN_MS)))]))
            for _ in range(min(concurrency, prompts - start))
        ]
        for placed in await batch(plans, done_with("q")):
            value = placed.line.reaction("q", QUIET_MS) if placed.line else None
            if value is not None:
                ms.append(1000 * value)
            cut += any(t["interrupted"] for t in robot_turns(placed))
    print(f"barge-in reaction ({concurrency} calls at once): {figures(ms)}; lines cut {cut}")
    return ms


def robot_turns(placed: PlacedCall) -> list[dict]:
    return [t for t in placed.record["turns"] if t["speaker"] == "robot"]  # type: ignore[union-attr]


def pauses(line: CalleeLine) -> int:
    """Quiets of ≥ ``PAUSE_MS`` inside the robot's lines (split at ``LINE_GAP_MS``): with a
    sound, only the one that began within ``PAUSE_WINDOW_S`` of the sound's start (what the
    sound did); without, all of them (an overloaded daemon's late packets count too)."""
    times = line.voiced_times("in")
    short, lines = talkspurts(times, PAUSE_MS), talkspurts(times, LINE_GAP_MS)
    span = line.sound_span("s")
    if span is None:
        return len(short) - len(lines)
    # a quiet inside a line: a short spurt ends and the next one begins within the same line
    for (_, end), (begin, _) in itertools.pairwise(short):
        same_line = any(first <= end and begin <= last for first, last in lines)
        if same_line and span[0] <= end <= span[0] + PAUSE_WINDOW_S:
            return 1
    return 0


async def false_barge_ins(kind: str, prompts: int, concurrency: int) -> dict[str, int]:
    """Run ``prompts`` prompts' worth of calls whose callee only echoes (``echo``), or says
    one backchannel / coughs once mid-greeting; count cuts, pauses, backchannel turns."""
    ne = speech_pcm("네")
    rng = random.Random(kind)
    calls = math.ceil(prompts / PROMPTS_PER_SILENT_CALL) if kind == "echo" else prompts
    counts = {"prompts": 0, "cut": 0, "pauses": 0, "backchannel_turns": 0, "calls": 0}
    for start in range(0, calls, concurrency):
        plans = []
        for index in range(min(concurrency, calls - start)):
            when = after_robot_starts(rng.randrange(*CUT_IN_MS))
            sounds = {
                "echo": [],
                "backchannel": [Sound("s", ne, when)],
                "cough": [Sound("s", cough_pcm(150, -10, seed=start + index), when)],
            }[kind]
            echo = ECHO if kind == "echo" else None  # each kind alone: the counts stay apart
            plans.append(CallPlan(CalleeScript(sounds, echo, NOISE_DBFS, seed=start + index)))
        for placed in await batch(plans, None if kind == "echo" else after_sound(HEAR_OUT_S)):
            turns = robot_turns(placed)
            counts["calls"] += 1
            counts["prompts"] += len(turns) if kind == "echo" else 1
            counts["cut"] += sum(t["interrupted"] for t in (turns if kind == "echo" else turns[:1]))
            counts["pauses"] += pauses(placed.line) if placed.line else 0
            counts["backchannel_turns"] += sum(
                t.get("intent") == "backchannel"
                for t in placed.record["turns"]  # type: ignore[union-attr]
                if t["speaker"] == "callee"
            )
    target = 0 if kind == "echo" else FALSE_TARGET
    print(
        f"false barge-ins, {kind:11}: {counts['cut']} lines cut of {counts['prompts']} prompts"
        f" (target ≤ {target}); pauses {counts['pauses']}; backchannel turns filed"
        f" {counts['backchannel_turns']}; {counts['calls']} calls"
    )
    return counts


async def main(args: argparse.Namespace) -> None:
    if args.what in ("v2v", "all"):
        for answer in args.answer:
            for calls in args.calls:
                ms = await voice_to_voice(calls, answer)
                if ms and calls == 1 and answer == "short":
                    print(f"  target p50 ≤ {V2V_SHORT_TARGET_MS} ms: {pct(ms, 0.5):.0f} ms")
                if ms and calls == 40:
                    print(f"  target p95 ≤ {END_WINDOW_MS + V2V_SLACK_MS} ms with the full window")
    if args.what in ("reaction", "all"):
        ms = await reaction(args.prompts, args.concurrency)
        if ms:
            print(f"  target p95 ≤ {REACTION_TARGET_MS} ms: {pct(ms, 0.95):.0f} ms")
    if args.what in ("false", "all"):
        for kind in args.kinds:
            await false_barge_ins(kind, args.prompts, args.concurrency)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", nargs="?", default="all", choices=["v2v", "reaction", "false", "all"]
    )
    parser.add_argument(
        "--calls",
        type=int,
        nargs="+",
        default=[1, 40, 100],
        help="v2v: concurrent calls, each size a run (default 1 40 100)",
    )
    parser.add_argument("--answer", nargs="+", default=["short", "long"], choices=list(ANSWERS))
    parser.add_argument(
        "--prompts", type=int, default=100, help="reaction/false: prompts per kind (default 100)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="reaction/false: calls at once (default 50)"
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["echo", "backchannel", "cough"],
        choices=["echo", "backchannel", "cough"],
    )
    parser.add_argument("--keep", type=Path, help="keep each batch's files under this directory")
    arguments = parser.parse_args()
    KEEP = arguments.keep
    trio.run(main, arguments)
