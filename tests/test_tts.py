"""Speech synthesis: the espeak-ng plugin for real, the core's speech cache, and scripts
whose lines have no recording.

espeak-ng runs for real (about 40 ms a line). The cache is watched through a
synthesiser that counts how often it passes a line on to espeak-ng.
"""

from __future__ import annotations

import logging
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.api import ProviderContext, ProviderError, Synthesizer
from waihu.config import ConfigError, load_config
from waihu.dialog.library import (
    ScriptLibrary,
    SpeechCache,
    call_variables,
    missing_variables,
    required_variables,
)
from waihu.dialog.script import load_script
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu_espeak.espeak import (
    DEFAULT_VOICES,
    EspeakSynthesizer,
    read_wav,
    resample,
    speaking_text,
)

CALL_RATE = 8000
DEADLINE_S = 30  # espeak-ng is quick; the machine is shared
LOUD = 500  # RMS of int16 speech from espeak-ng is in the thousands; silence is 0


def make_context(tmp_path: Path, name: str = "test") -> ProviderContext:
    return ProviderContext(
        name=name,
        state_dir=tmp_path,
        log=logging.getLogger(f"waihu.tts.{name}"),
        cpu_limiter=trio.CapacityLimiter(2),
    )


async def started(nursery: trio.Nursery, tmp_path: Path, **config: object) -> EspeakSynthesizer:
    tts = EspeakSynthesizer(EspeakSynthesizer.Config(**config), make_context(tmp_path))
    await nursery.start(tts.run)
    return tts


class Counting:
    """A synthesiser passing every line to a real one, counting them."""

    def __init__(self, inner: EspeakSynthesizer) -> None:
        self.inner = inner
        self.texts: list[str] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.inner.run(task_status=task_status)

    async def synthesize(self, text: str, *, language: str, sample_rate: int) -> np.ndarray:
        self.texts.append(text)
        return await self.inner.synthesize(text, language=language, sample_rate=sample_rate)


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


# ───────────────────────── the plugin ─────────────────────────


def test_the_plugin_registers_espeak_as_a_tts_type(provider_types: dict) -> None:
    assert provider_types["tts"]["espeak"] is EspeakSynthesizer


async def test_espeak_follows_the_synthesizer_protocol(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            tts = await started(nursery, tmp_path)
            assert isinstance(tts, Synthesizer)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("您好王先生，我是平安保险的小王。", "zh"),
        ("안녕하세요 김민수 고객님, 잠시 통화 가능하세요?", "ko"),
    ],
)
async def test_a_line_becomes_loud_speech_at_the_call_rate(
    tmp_path: Path, text: str, language: str
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            tts = await started(nursery, tmp_path)
            pcm = await tts.synthesize(text, language=language, sample_rate=CALL_RATE)
            nursery.cancel_scope.cancel()
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    seconds = pcm.size / CALL_RATE
    assert 1.0 < seconds < 8.0  # a dozen syllables at 175 words a minute
    assert rms(pcm) > LOUD


async def test_the_same_line_at_16_khz_lasts_as_long_with_twice_the_samples(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            tts = await started(nursery, tmp_path)
            narrow = await tts.synthesize("네 감사합니다", language="ko", sample_rate=8000)
            wide = await tts.synthesize("네 감사합니다", language="ko", sample_rate=16000)
            nursery.cancel_scope.cancel()
    assert abs(wide.size - 2 * narrow.size) <= 2


def test_mandarin_is_given_to_espeak_as_tone_numbered_pinyin() -> None:
    assert (
        speaking_text("您好，每月十元。", "cmn-latn-pinyin") == "nin2 hao3 , mei3 yue4 shi2 yuan2 ."
    )
    assert speaking_text("您好", "cmn-latn-pinyin+f2") == "nin2 hao3"
    assert speaking_text("안녕하세요！", "ko+f3") == "안녕하세요!"  # full width → half width


def test_the_default_voices_are_pinyin_mandarin_and_a_female_korean() -> None:
    assert DEFAULT_VOICES == {"zh": "cmn-latn-pinyin", "ko": "ko+f3"}


def test_configured_voices_add_to_the_defaults(tmp_path: Path) -> None:
    tts = EspeakSynthesizer(
        EspeakSynthesizer.Config(voices={"ko": "ko", "en": "en-us"}), make_context(tmp_path)
    )
    assert tts.voice_for("zh") == "cmn-latn-pinyin"
    assert tts.voice_for("ko") == "ko"
    assert tts.voice_for("en") == "en-us"
    assert tts.voice_for("ja") == "ja"  # unlisted: the language is the voice's name


async def test_a_missing_program_stops_start_up_naming_it(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        tts = EspeakSynthesizer(
            EspeakSynthesizer.Config(command="/nonexistent/espeak-ng"), make_context(tmp_path)
        )
        with pytest.raises(ProviderError, match=r"command '/nonexistent/espeak-ng' not found"):
            await tts.run()


async def test_a_voice_that_does_not_load_stops_start_up_naming_it(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        tts = EspeakSynthesizer(
            EspeakSynthesizer.Config(voices={"zh": "xx-nosuch"}), make_context(tmp_path)
        )
        with pytest.raises(ProviderError, match=r"voice 'xx-nosuch' \(voices.zh\) does not load"):
            await tts.run()


async def test_a_line_that_cannot_be_spoken_is_an_error_naming_the_text(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            tts = await started(nursery, tmp_path)
            with pytest.raises(ProviderError, match=r"cannot speak '你好' with .* 'qq-none'"):
                await tts.synthesize("你好", language="qq-none", sample_rate=CALL_RATE)
            with pytest.raises(ProviderError, match=r"cannot speak '你好': .*no language"):
                await tts.synthesize("你好", language="", sample_rate=CALL_RATE)
            nursery.cancel_scope.cancel()


def test_config_refuses_a_speed_out_of_range_naming_the_key(
    tmp_path: Path, provider_types: dict
) -> None:
    path = tmp_path / "waihud.toml"
    path.write_text(
        '[storage]\ntype = "sqlite"\npath = "x.db"\n'
        '[asr.default]\ntype = "vosk"\n[nlu.default]\ntype = "keywords"\n'
        '[tts.default]\ntype = "espeak"\nspeed = 10\n'
    )
    with pytest.raises(ConfigError, match=r"tts\.default\.speed: must be 80–450"):
        load_config(path, provider_types)


# ───────────────────────── audio helpers ─────────────────────────


def test_a_streamed_wav_with_placeholder_lengths_is_read_to_its_end() -> None:
    samples = np.arange(-50, 50, dtype=np.int16)
    header = b"RIFF" + struct.pack("<I", 0x7FFFF024) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 22050, 44100, 2, 16)
    data = b"data" + struct.pack("<I", 0x7FFFF000) + samples.tobytes()
    rate, read = read_wav(header + fmt + data)
    assert rate == 22050
    assert np.array_equal(read, samples)


def test_a_wav_that_is_not_16_bit_pcm_is_refused() -> None:
    header = b"RIFF" + struct.pack("<I", 36) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 3, 1, 22050, 88200, 4, 32)  # float
    with pytest.raises(ValueError, match="not 16-bit PCM"):
        read_wav(header + fmt + b"data" + struct.pack("<I", 0))
    with pytest.raises(ValueError, match="no RIFF"):
        read_wav(b"ID3 not a wav at all")


def test_resampling_keeps_a_tone_in_the_band_and_drops_one_above_it() -> None:
    src, dst = 22050, 8000
    t = np.arange(src) / src  # one second
    kept = resample(10000 * np.sin(2 * np.pi * 1000 * t), src, dst)
    dropped = resample(10000 * np.sin(2 * np.pi * 6000 * t), src, dst)  # above 4 kHz Nyquist
    assert kept.size == dst
    middle = slice(100, -100)  # away from the edges, where the kernel runs out of input
    assert rms(kept[middle]) == pytest.approx(10000 / np.sqrt(2), rel=0.02)
    spectrum = np.abs(np.fft.rfft(kept[middle]))
    assert abs(np.argmax(spectrum) * dst / (kept[middle].size) - 1000) < 5
    assert rms(dropped[middle]) < 100  # 40 dB down at least
    # each output sample is the tone at its exact time, not at a neighbouring input sample
    expected = 10000 * np.sin(2 * np.pi * 1000 * np.arange(dst) / dst)
    assert np.max(np.abs(kept - expected)[middle]) < 10000 * 0.01


# ───────────────────────── the core's cache ─────────────────────────


async def test_the_cache_speaks_a_line_once_and_hands_out_the_same_audio(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            counting = Counting(await started(nursery, tmp_path))
            cache = SpeechCache(counting)
            first = await cache.speak("您好", language="zh", sample_rate=CALL_RATE)
            again = await cache.speak("您好", language="zh", sample_rate=CALL_RATE)
            other_rate = await cache.speak("您好", language="zh", sample_rate=16000)
            nursery.cancel_scope.cancel()
    assert again is first
    assert other_rate is not first
    assert counting.texts == ["您好", "您好"]  # once per rate
    assert (cache.hits, cache.misses) == (1, 2)
    assert not first.flags.writeable  # shared by every call: nobody may change it


async def test_callers_asking_at_once_share_one_synthesis(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            counting = Counting(await started(nursery, tmp_path))
            cache = SpeechCache(counting)
            got: list[np.ndarray] = []

            async def ask() -> None:
                got.append(await cache.speak("잠시만요", language="ko", sample_rate=CALL_RATE))

            async with trio.open_nursery() as askers:
                for _ in range(3):
                    askers.start_soon(ask)
            nursery.cancel_scope.cancel()
    assert counting.texts == ["잠시만요"]
    assert got[0] is got[1] is got[2]


async def test_a_failed_line_is_not_cached_and_is_tried_again(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            counting = Counting(await started(nursery, tmp_path))
            cache = SpeechCache(counting)
            for _ in range(2):
                with pytest.raises(ProviderError):
                    await cache.speak("你好", language="qq-none", sample_rate=CALL_RATE)
            nursery.cancel_scope.cancel()
    assert counting.texts == ["你好", "你好"]
    assert len(cache) == 0


async def test_the_cache_drops_the_least_recently_used_line_past_its_size(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            counting = Counting(await started(nursery, tmp_path))
            probe = await SpeechCache(counting).speak("一", language="zh", sample_rate=CALL_RATE)
            # room for two short lines of this length, not three
            cache = SpeechCache(counting, max_bytes=int(probe.nbytes * 2.5))
            for text in ("一", "二", "一", "三"):  # "二" is now the least recently used
                await cache.speak(text, language="zh", sample_rate=CALL_RATE)
            kept = {
                t
                for t in ("一", "二", "三")
                if cache.peek(t, language="zh", sample_rate=CALL_RATE) is not None
            }
            nursery.cancel_scope.cancel()
    assert kept == {"一", "三"}
    assert cache.size <= cache.max_bytes


# ───────────────────────── scripts with lines to synthesise ─────────────────────────

MIXED_SCRIPT = """
[script]
name = "{name}"
language = "zh"
start = "greeting"

[nodes.greeting]
say = [{{ text = "您好{{name}}，我是小王。" }}]
on = {{ default = "bye" }}

[nodes.bye]
say = [{{ text = "谢谢，再见。" }}, {{ text = "祝您愉快", recording = "bye.wav" }}]
end = true
"""


def write_scripts(directory: Path, *names: str, text: str = MIXED_SCRIPT) -> None:
    directory.mkdir(exist_ok=True)
    rate = 8000
    tone = (3000 * np.sin(2 * np.pi * 440 * np.arange(rate // 5) / rate)).astype("<i2")
    with wave.open(str(directory / "bye.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(tone.tobytes())
    for name in names:
        (directory / f"{name}.toml").write_text(text.format(name=name), encoding="utf-8")


def library(directory: Path, speech: SpeechCache | None) -> ScriptLibrary:
    keywords = collect_provider_types(make_plugin_manager())["nlu"]["keywords"]
    return ScriptLibrary(
        directory,
        lambda: keywords(keywords.Config(), make_context(directory, "nlu")),
        speech=speech,
    )


async def test_fixed_lines_are_spoken_once_at_load_for_every_script(tmp_path: Path) -> None:
    write_scripts(tmp_path, "first", "second")
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            counting = Counting(await started(nursery, tmp_path))
            scripts = library(tmp_path, SpeechCache(counting))
            await scripts.load()
            nursery.cancel_scope.cancel()
    assert scripts.problems == {}
    # the greeting has a variable (spoken per call); the recorded line plays its recording
    assert counting.texts == ["谢谢，再见。"]
    first, second = scripts.get("first"), scripts.get("second")
    assert set(first.speech) == {"谢谢，再见。"}
    assert first.speech["谢谢，再见。"] is second.speech["谢谢，再见。"]
    assert set(first.audio) == {"bye.wav"}


async def test_a_script_needing_tts_without_one_is_refused_naming_each_line(
    tmp_path: Path,
) -> None:
    write_scripts(tmp_path, "first")
    with trio.fail_after(DEADLINE_S):
        scripts = library(tmp_path, None)
        await scripts.load()
    assert scripts.scripts == {}
    assert scripts.problems == {
        str(tmp_path / "first.toml"): [
            f"{tmp_path / 'first.toml'}: nodes.bye.say[0]: no recording and no [call] tts"
            " to speak it",
            f"{tmp_path / 'first.toml'}: nodes.greeting.say[0]: no recording and no [call] tts"
            " to speak it",
        ]
    }


async def test_dialogue_cases_beside_a_script_are_not_loaded_as_a_script(tmp_path: Path) -> None:
    write_scripts(tmp_path, "first")
    (tmp_path / "first.cases.toml").write_text(
        '[[case]]\nname = "hello"\nreplies = [""]\n', encoding="utf-8"
    )
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            scripts = library(tmp_path, SpeechCache(await started(nursery, tmp_path)))
            await scripts.load()
            nursery.cancel_scope.cancel()
    assert sorted(scripts.scripts) == ["first"]
    assert scripts.problems == {}


async def test_a_rule_the_classifier_refuses_refuses_the_script_naming_it(
    tmp_path: Path,
) -> None:
    """A stand-in classifier refuses the fit: the loader already compiles every pattern the
    built-in classifiers could refuse, so no real one fails here; a third-party one may."""
    write_scripts(tmp_path, "first")

    class Refusing:
        def fit(self, intents: object) -> None:
            raise ValueError("intent 'x': pattern '(' is not a regular expression")

        def classify(self, text: str, allowed: object) -> list[object]:
            return []

    with trio.fail_after(DEADLINE_S):
        scripts = ScriptLibrary(tmp_path, Refusing, speech=None)  # type: ignore[arg-type]
        await scripts.load()
    assert scripts.scripts == {}
    assert scripts.problems == {
        str(tmp_path / "first.toml"): [
            f"{tmp_path / 'first.toml'}: intents: intent 'x': pattern '(' is not a regular"
            " expression"
        ]
    }


async def test_a_line_the_synthesiser_cannot_speak_refuses_the_script_naming_it(
    tmp_path: Path,
) -> None:
    write_scripts(tmp_path, "first", text=MIXED_SCRIPT.replace('"zh"', '"qq-none"'))
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            scripts = library(tmp_path, SpeechCache(await started(nursery, tmp_path)))
            await scripts.load()
            nursery.cancel_scope.cancel()
    ((problem,),) = scripts.problems.values()
    assert problem.startswith(f"{tmp_path / 'first.toml'}: nodes.bye.say[0]: cannot speak")
    assert "'谢谢，再见。'" in problem


def test_missing_variables_name_the_first_line_and_spare_defaults_and_set_ones(
    tmp_path: Path,
) -> None:
    text = MIXED_SCRIPT.replace(
        "[nodes.greeting]\n",
        '[variables]\ncompany = "平安"\n\n[nodes.greeting]\nset = {{ x = "1" }}\n',
    ).replace("我是小王", "我是{{company}}的{{x}}号")
    write_scripts(tmp_path, "first", text=text)
    script = load_script(tmp_path / "first.toml")
    assert missing_variables(script, {}) == [("name", "nodes.greeting.say[0]")]
    assert missing_variables(script, {"name": " ", "company": ""}) == [
        ("name", "nodes.greeting.say[0]")
    ]
    assert missing_variables(script, {"name": "王先生"}) == []
    assert required_variables(script) == {"name"}  # the columns a contact list needs
    assert call_variables(script, {"name": "王先生", "company": ""}) == {
        "company": "平安",
        "name": "王先生",
    }
