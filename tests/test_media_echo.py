"""The echo guard on real prompt audio (espeak-ng), returned through G.711 both ways.

A line is simulated the way a trunk returns the robot's voice: the prompt as
sent is G.711-encoded (our side), decoded at the far end, attenuated and
delayed, mixed with line noise, encoded again and decoded here. The real
endpointer listens to the guard's residual: it must never confirm speech on
the echo alone, and still hear a callee talking over the prompt.
"""

from __future__ import annotations

import numpy as np
import pytest

from waihu.media.echo import EchoCanceller
from waihu.media.endpointer import Endpointer, SpeechStarted
from waihu.media.g711 import codec_functions
from waihu.testing.daemon import REPO
from waihu.testing.speech import read_wav_pcm, speech_pcm

RATE = 8000
SPF = 160
PROMPTS_KO = (
    "안녕하세요 저는 와이후 회사의 상담원입니다 잠시 통화 가능하신가요",
    "고객님께 좋은 소식을 알려 드리려고 전화드렸습니다",
    "지금 바쁘시면 나중에 다시 연락드리겠습니다",
)
PROMPTS_ZH = (
    "nin2 hao3 wo3 shi4 ke4 fu2 zhong1 xin1 de5 xiao3 wang2",
    "qing3 wen4 nin2 xian4 zai4",
)


@pytest.fixture(scope="module")
def prompts() -> list[np.ndarray]:
    ko = [speech_pcm(text, voice="ko+f3") for text in PROMPTS_KO]
    zh = [speech_pcm(text, voice="cmn-latn-pinyin") for text in PROMPTS_ZH]
    return ko + zh


@pytest.fixture(scope="module")
def callee() -> np.ndarray:
    return speech_pcm("아니요 괜찮습니다 지금 바빠요", voice="ko+f3", pitch=30)


def line(
    sent: np.ndarray,
    *,
    gain_db: float,
    delay_ms: int,
    noise_dbfs: float = -50.0,
    codec: str = "PCMU",
    seed: int = 0,
    callee: np.ndarray | None = None,
    callee_at: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(what the robot sent, what comes back) through G.711 ``codec`` both ways."""
    encode, decode = codec_functions(codec)
    at_far_end = decode(encode(sent)).astype(np.float64)
    delay = delay_ms * RATE // 1000
    back = np.concatenate((np.zeros(delay), at_far_end[: at_far_end.size - delay]))
    back *= 10 ** (gain_db / 20)
    back += np.random.default_rng(seed).normal(0.0, 32768 * 10 ** (noise_dbfs / 20), back.size)
    if callee is not None:
        back[callee_at : callee_at + callee.size] += callee[: back.size - callee_at]
    returned = decode(encode(np.clip(np.rint(back), -32768, 32767).astype(np.int16)))
    return sent, returned


def programme(prompts: list[np.ndarray], repeats: int = 1, gap_s: float = 0.6) -> np.ndarray:
    """Prompts one after another with a gap between (the robot's side of a call)."""
    gap = np.zeros(round(gap_s * RATE), np.int16)
    parts = [np.concatenate((p, gap)) for p in prompts * repeats]
    audio = np.concatenate((gap, *parts))
    return audio[: audio.size - audio.size % SPF]


def run(
    sent: np.ndarray, returned: np.ndarray, *, guard: bool = True
) -> tuple[list[int], EchoCanceller, np.ndarray]:
    """Tick through the call: the endpointer hears the residual. (start frames, guard,
    residual)."""
    guard_ = EchoCanceller(RATE)
    endpointer = Endpointer(RATE)
    starts: list[int] = []
    residual = np.empty_like(returned)
    for k in range(sent.size // SPF):
        frame = slice(k * SPF, (k + 1) * SPF)
        guard_.sent(sent[frame])
        heard = guard_.cancel(returned[frame]) if guard else returned[frame]
        residual[frame] = heard
        if any(isinstance(e, SpeechStarted) for e in endpointer.feed(heard)):
            starts.append(k)
    return starts, guard_, residual


@pytest.mark.parametrize(
    ("gain_db", "delay_ms", "codec"),
    [
        (-20, 60, "PCMU"),
        (-20, 50, "PCMA"),
        (-10, 60, "PCMU"),
        (-10, 300, "PCMA"),
        (-20, 300, "PCMU"),
        (-6, 150, "PCMU"),
        (-14, 0, "PCMA"),
    ],
)
def test_echo_alone_never_starts_speech(
    prompts: list[np.ndarray], gain_db: float, delay_ms: int, codec: str
) -> None:
    sent, returned = line(programme(prompts), gain_db=gain_db, delay_ms=delay_ms, codec=codec)
    starts, guard, _ = run(sent, returned)
    assert starts == []
    assert guard.estimate is not None
    assert guard.estimate.delay == delay_ms * RATE // 1000
    assert guard.estimate.gain_db == pytest.approx(gain_db, abs=1.0)
    # the same line without the guard: the echo is taken for speech (the test can fail)
    unguarded, _, _ = run(sent, returned, guard=False)
    assert unguarded


def test_many_prompts_over_noisy_lines_give_no_false_start(prompts: list[np.ndarray]) -> None:
    """Twenty calls of several prompts each, echo at −20 dB after 50–60 ms, noise −55…−45
    dBFS: not one false start."""
    false_starts = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        order = [prompts[i] for i in rng.permutation(len(prompts))]
        sent, returned = line(
            programme(order, gap_s=float(rng.uniform(0.2, 1.0))),
            gain_db=-20.0,
            delay_ms=int(rng.choice([50, 60])),
            noise_dbfs=float(rng.uniform(-55, -45)),
            codec=str(rng.choice(["PCMU", "PCMA"])),
            seed=seed,
        )
        starts, _, _ = run(sent, returned)
        false_starts += len(starts)
    assert false_starts == 0


@pytest.mark.parametrize("gain_db", [-20, -10])
def test_a_callee_talking_over_the_prompt_is_still_heard(
    prompts: list[np.ndarray], callee: np.ndarray, gain_db: float
) -> None:
    sent = programme(prompts)
    at = 2 * RATE  # two seconds in: in the middle of the first prompt
    sent, returned = line(sent, gain_db=gain_db, delay_ms=60, callee=callee, callee_at=at)
    starts, guard, residual = run(sent, returned)
    assert len(starts) >= 1
    assert at // SPF < starts[0] <= at // SPF + 20  # confirmed within 400 ms of the onset
    assert guard.estimate is not None and guard.estimate.delay == 480  # not thrown off
    # what reaches the recogniser is the callee's voice, barely touched
    span = slice(at, at + callee.size)
    kept = np.dot(residual[span].astype(float), callee.astype(float))
    assert kept / np.dot(callee.astype(float), callee.astype(float)) > 0.8


def test_residual_is_far_below_the_echo(prompts: list[np.ndarray]) -> None:
    sent, returned = line(programme(prompts), gain_db=-10, delay_ms=120, noise_dbfs=-70)
    _, _, residual = run(sent, returned)
    later = slice(RATE, None)  # once the path is learnt
    echo_energy = np.sum(returned[later].astype(float) ** 2)
    left = np.sum(residual[later].astype(float) ** 2)
    assert 10 * np.log10(echo_energy / left) > 25  # more than 25 dB taken out


def test_a_line_without_echo_passes_untouched(
    prompts: list[np.ndarray], callee: np.ndarray
) -> None:
    sent = programme(prompts)
    at = RATE
    noise = np.random.default_rng(1).normal(0, 100, sent.size)
    noise[at : at + callee.size] += callee
    returned = np.clip(noise, -32768, 32767).astype(np.int16)
    starts, guard, residual = run(sent, returned)
    assert guard.estimate is None
    np.testing.assert_array_equal(residual, returned)
    assert starts  # the callee is heard


@pytest.mark.parametrize("at_ms", [1500, 1700, 1800, 2000, 2040])
def test_a_callee_who_sounds_like_the_prompt_never_puts_the_robot_in_what_is_heard(
    at_ms: int,
) -> None:
    """A line with no echo; the callee says "네" (the prompts' own synthetic voice) 1.5-2 s
    into the demo greeting, which pauses while they speak. The word correlates with a
    stretch of the greeting at some delay, well enough to be taken for an echo path once;
    cancelling that path would put the greeting into silence (+45 dB and more)."""
    encode, decode = codec_functions("PCMU")
    greeting = read_wav_pcm(REPO / "etc/waihu/scripts/prompts/demo-ko/greeting.wav")
    ne = speech_pcm("네", voice="ko+f3")
    n = 8 * RATE
    at = at_ms * RATE // 1000
    pause = at + int(np.flatnonzero(np.abs(ne) > 300)[0]) + RATE // 5  # 200 ms of voice
    sent = np.zeros(n, np.int16)
    sent[:pause] = greeting[:pause]
    rest = greeting[pause:][: n - pause - RATE]
    sent[pause + RATE : pause + RATE + rest.size] = rest  # resumed a second later
    sent = decode(encode(sent))
    back = np.random.default_rng(0).normal(0.0, 32768 * 10 ** (-65 / 20), n)
    back[at : at + ne.size] += ne
    returned = decode(encode(np.clip(np.rint(back), -32768, 32767).astype(np.int16)))

    starts, guard, residual = run(sent, returned)

    frames_in = returned[: n - n % SPF].reshape(-1, SPF).astype(float)
    frames_out = residual[: n - n % SPF].reshape(-1, SPF).astype(float)
    added = np.sum(frames_out**2, axis=1) > np.sum(frames_in**2, axis=1) + SPF  # ±1 rounding
    assert not added.any(), np.flatnonzero(added)
    assert starts == [starts[0]] and starts[0] <= (at + ne.size) // SPF  # the 네 alone
    assert guard.estimate is None  # the false path is forgotten


def test_quiet_line_learns_nothing_and_reset_forgets(prompts: list[np.ndarray]) -> None:
    sent = programme(prompts[:1])
    silent = np.zeros_like(sent)
    _, guard, residual = run(sent, silent)
    assert guard.estimate is None and guard.searches == 0
    assert not residual.any()
    _, guard, _ = run(*line(sent, gain_db=-10, delay_ms=40))
    assert guard.converged
    guard.reset()
    assert not guard.converged


def test_wrong_frame_size_is_refused() -> None:
    guard = EchoCanceller(RATE)
    with pytest.raises(ValueError, match="160 samples"):
        guard.sent(np.zeros(80, np.int16))
    with pytest.raises(ValueError, match="160 samples"):
        guard.cancel(np.zeros(320, np.int16))
    with pytest.raises(ValueError):
        EchoCanceller(RATE, max_delay_ms=-1)
