"""Who answered: accuracy of the daemon's verdict on synthesized call starts.

Run: ``.venv/bin/python benchmarks/bench_who_answered.py [--concurrency 25] [--variants 6]``
(``make bench-who-answered``); ``--only TEXT`` runs the templates whose name has it,
``--keep DIR`` keeps each batch's daemon log and callee files there.

A real waihud calls scripted callees (``waihu.testing.callee``) whose first seconds are made
here: people saying 여보세요/네/누구세요 (Korean, espeak-ng ``ko+f3``) or 喂/你好 (Mandarin
pinyin, ``cmn-latn-pinyin``), carrier announcements (없는 번호, 전원이 꺼져, 통화중; 空号,
关机, 正在通话中 in pinyin) with and without a leading 450 Hz tone, the 450 Hz busy tone
alone, voicemail greetings ending in a beep, and silence. Announcements come after the
answer (200) or as early media (183) before a 480. Each start is varied by voice speed,
pitch and when it begins (``--variants`` per template; 17 templates × 6 = 102 starts).

Read back from what the daemon filed: ``answered_by`` (person, announcement, voicemail,
unsure; a daemon that does not screen files none, counted as person) and ``outcome``.
Printed: accuracy (unsure counts as right for people and silence: it goes on as a person),
the same with each machine's outcome checked too (busy filed as busy),
people classified as machines (must be 0), per-template results, and the decision time of
answered machine calls, taken on the wire: the answer → the robot's last voiced packet of
its greeting (it stops the greeting when it decides). Targets (issue 9): ≥ 95 % right, 0
people as machines. Mandarin speech is recognised by the Korean model only as sound, so
Mandarin announcements can be told only by their tones; their rows say how far that goes.

What it is not: a test (nothing asserts) or a corpus of real recordings.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from pathlib import Path

import attrs
import numpy as np
import trio

from waihu.testing.callee import (
    CalleeLine,
    CalleeScript,
    CallPlan,
    PlacedCall,
    Sound,
    at,
    batch_dir,
    call_callees,
)
from waihu.testing.speech import speech_pcm

RATE = 8000
TONE_HZ = 450  # Chinese ring-back and busy tone
BEEP_HZ = 1000
TONE_DBFS = -16.0
NOISE_DBFS = -62.0
HANG_UP_AFTER_S = 7.0  # a person's call is hung up by the bench after this (decided by 3 s)
DECIDE_TARGET_S = 3.0
ACCURACY_TARGET = 0.95
MACHINES = ("announcement", "voicemail")
# (speed, pitch, start ms) of each variant of a template
VARIANTS = [
    (190, 65, 300),
    (175, 55, 600),
    (205, 70, 400),
    (190, 50, 900),
    (180, 65, 200),
    (200, 60, 700),
    (185, 75, 500),
    (195, 55, 350),
]
KO, ZH = "ko+f3", "cmn-latn-pinyin"


def tone(hz: float, on_ms: int, off_ms: int = 0, cycles: int = 1) -> np.ndarray:
    """``cycles`` of ``on_ms`` of a sine then ``off_ms`` of silence."""
    amplitude = 32768 * 10 ** (TONE_DBFS / 20) * math.sqrt(2)
    on = (amplitude * np.sin(2 * np.pi * hz * np.arange(RATE * on_ms // 1000) / RATE)).astype(
        np.int16
    )
    off = np.zeros(RATE * off_ms // 1000, np.int16)
    return np.concatenate([np.concatenate([on, off]) for _ in range(cycles)])


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, np.int16)


@attrs.frozen
class Template:
    """A kind of call start: what is said (parts joined with short silences), in which voice,
    what the daemon should find, and how it is delivered (answered, or early media + 480)."""

    name: str
    expected: str  # person, announcement, voicemail, or "silence" (person or unsure)
    parts: tuple[str, ...] = ()  # text, or "<tone>", "<busy>", "<beep>"
    voice: str = KO
    early: bool = False
    outcome: str | None = None  # the outcome a machine's start should be filed with

    def audio(self, speed: int, pitch: int) -> np.ndarray:
        pieces = []
        for part in self.parts:
            if part == "<tone>":
                pieces.append(tone(TONE_HZ, 1000, 400))
            elif part == "<busy>":
                pieces.append(tone(TONE_HZ, 350, 350, cycles=6))
            elif part == "<beep>":
                pieces.append(tone(BEEP_HZ, 500))
            else:
                pieces.append(speech_pcm(part, voice=self.voice, speed=speed, pitch=pitch))
            pieces.append(silence(200))
        return np.concatenate(pieces) if pieces else silence(20)


TEMPLATES = [
    Template("person ko 여보세요", "person", ("여보세요",)),
    Template("person ko 네 여보세요", "person", ("네 여보세요",)),
    Template("person ko 누구세요", "person", ("누구 세요",)),
    Template("person ko 예 말씀하세요", "person", ("예 말씀하세요",)),
    Template("person zh 喂", "person", ("wei2",), ZH),
    Template("person zh 喂你好", "person", ("wei2, ni3 hao3",), ZH),
    Template("silence", "silence"),
    Template(
        "ann ko 없는 번호",
        "announcement",
        ("지금 거신 전화는 없는 번호 입니다",),
        outcome="invalid_number",
    ),
    Template(
        "ann ko tone+전원이 꺼져",
        "announcement",
        ("<tone>", "고객님의 전화기가 전원이 꺼져 있어 연결이 되지 않습니다"),
        outcome="switched_off",
    ),
    Template(
        "ann ko 통화중 (early)",
        "announcement",
        ("지금 거신 전화는 통화중 입니다",),
        early=True,
        outcome="busy",
    ),
    Template(
        "ann ko tone+없는 번호 (early)",
        "announcement",
        ("<tone>", "지금 거신 전화는 없는 번호 입니다"),
        early=True,
        outcome="invalid_number",
    ),
    Template("ann busy tone", "announcement", ("<busy>",), outcome="busy"),
    Template(
        "ann zh tone+空号 (early)",
        "announcement",
        ("<tone>", "nin2 bo1 da3 de hao4 ma3 shi4 kong1 hao4"),
        ZH,
        early=True,
        outcome="invalid_number",
    ),
    Template(
        "ann zh 关机",
        "announcement",
        ("nin2 bo1 da3 de dian4 hua4 yi3 guan1 ji1",),
        ZH,
        outcome="switched_off",
    ),
    Template(
        "voicemail ko beep",
        "voicemail",
        ("지금은 전화를 받을 수 없습니다. 삐 소리 후 메시지를 남겨 주세요", "<beep>"),
        outcome="voicemail",
    ),
    Template(
        "voicemail ko 음성 사서함",
        "voicemail",
        ("음성 사서함 으로 연결 됩니다", "<beep>"),
        outcome="voicemail",
    ),
    Template(
        "voicemail zh 来电秘书",
        "voicemail",
        ("nin2 hao3, wo3 shi4 ji1 zhu3 de lai2 dian4 mi4 shu1, qing3 liu2 yan2", "<beep>"),
        ZH,
        outcome="voicemail",
    ),
]


def plan(template: Template, variant: int) -> CallPlan:
    speed, pitch, start_ms = VARIANTS[variant % len(VARIANTS)]
    sounds = (
        [] if not template.parts else [Sound("start", template.audio(speed, pitch), at(start_ms))]
    )
    script = CalleeScript(sounds, noise_dbfs=NOISE_DBFS, seed=variant)
    if template.early:
        # the announcement plays in the 183's early media, then the INVITE fails with 480
        length_ms = int(1000 * sounds[0].pcm.size / RATE) + start_ms + 500
        return CallPlan(script, early_ms=length_ms, answer=False)
    return CallPlan(script)


def verdict(placed: PlacedCall) -> str:
    """What the daemon filed; none (a daemon that does not screen) counts as person."""
    return str(placed.record.get("answered_by") or "person")


def right(expected: str, got: str) -> bool:
    if expected in ("person", "silence"):
        return got in ("person", "unsure")
    return got == expected


def filed_right(template: Template, placed: PlacedCall) -> bool:
    """Right, and a machine filed with the outcome its start means (busy, not invalid
    number, for a busy announcement)."""
    if not right(template.expected, verdict(placed)):
        return False
    return template.outcome is None or placed.record.get("outcome") == template.outcome


def decision_time(placed: PlacedCall) -> float | None:
    """Seconds from the start of the callee's media (the answer) to the robot's last voiced
    packet of its first line, for an answered call filed as a machine."""
    line: CalleeLine | None = placed.line
    if line is None or verdict(placed) not in MACHINES or placed.record.get("answered_at") is None:
        return None
    spurts = line.robot_spurts()
    return spurts[0][1] - line.start if spurts else 0.0


def long_enough(line: CalleeLine) -> bool:
    return bool(line.log) and line.log[-1].at - line.start > HANG_UP_AFTER_S


async def main(concurrency: int, variants: int, only: str, keep: Path | None) -> None:
    templates = [t for t in TEMPLATES if only in t.name]
    cases = [(t, v) for v in range(variants) for t in templates]
    results: list[tuple[Template, PlacedCall]] = []
    for start in range(0, len(cases), concurrency):
        chunk = cases[start : start + concurrency]
        with batch_dir(keep, "bench-who-") as tmp:
            if keep is not None:
                print(f"  batch of {len(chunk)} in {tmp}")
            plans = [plan(t, v) for t, v in chunk]
            # a call failing after its early media ends by itself: hung up while the daemon
            # still hears that audio, it would be filed as cancelled, not as what it said
            unanswered = {id(p.script) for p in plans if not p.answer}

            def hang_up_when(line: CalleeLine, unanswered: set[int] = unanswered) -> bool:
                return id(line.script) not in unanswered and long_enough(line)

            placed = await call_callees(Path(tmp), plans, hang_up_when=hang_up_when, timeout=180)
        for (template, _), call in zip(chunk, placed, strict=True):
            if call.error:
                print(f"  left out ({template.name}): {call.error}")
            else:
                results.append((template, call))
    per: dict[str, Counter[str]] = defaultdict(Counter)
    outcomes: Counter[str] = Counter()
    correct = filed = people_as_machines = 0
    times: list[float] = []
    wrong: list[str] = []
    for template, placed in results:
        got = verdict(placed)
        per[template.name][got] += 1
        if not right(template.expected, got):
            evidence = placed.record.get("answered_by_evidence") or "-"
            wrong.append(f"  {template.name}: {got} ({evidence})")
        elif not filed_right(template, placed):
            outcome = placed.record.get("outcome")
            evidence = placed.record.get("answered_by_evidence") or "-"
            wrong.append(f"  {template.name}: {got}, but filed {outcome} ({evidence})")
        outcomes[str(placed.record.get("outcome"))] += 1
        correct += right(template.expected, got)
        filed += filed_right(template, placed)
        people_as_machines += template.expected in ("person", "silence") and got in MACHINES
        if (t := decision_time(placed)) is not None:
            times.append(t)
    for template in templates:
        counts = ", ".join(f"{k} {n}" for k, n in per[template.name].most_common())
        print(f"  {template.name:34} expected {template.expected:12} got {counts}")
    if wrong:
        print("wrong, with the evidence filed:")
        print("\n".join(wrong))
    total = len(results)
    print(
        f"starts: {total}; right {correct} = {100 * correct / max(total, 1):.1f} %"
        f" (target ≥ {100 * ACCURACY_TARGET:.0f} %); people as machines {people_as_machines}"
        " (target 0)"
    )
    print(f"right and filed with the right outcome: {filed} = {100 * filed / max(total, 1):.1f} %")
    print(f"outcomes filed: {dict(outcomes)}")
    if times:
        ranked = sorted(times)
        p95 = ranked[min(len(ranked) - 1, math.ceil(0.95 * len(ranked)) - 1)]
        print(
            f"decision time (answered machines, on the wire): p50"
            f" {ranked[len(ranked) // 2]:.2f} s, p95 {p95:.2f} s (target ≤"
            f" {DECIDE_TARGET_S:.0f} s, n={len(times)})"
        )
    else:
        print("decision time: no answered call was filed as a machine")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=25, help="calls at once (default 25)")
    parser.add_argument(
        "--variants",
        type=int,
        default=6,
        help=f"variants per template (default 6; {len(TEMPLATES)} templates)",
    )
    parser.add_argument("--only", default="", help="templates whose name contains this")
    parser.add_argument("--keep", type=Path, help="keep each batch's files under this directory")
    args = parser.parse_args()
    trio.run(main, args.concurrency, args.variants, args.only, args.keep)
