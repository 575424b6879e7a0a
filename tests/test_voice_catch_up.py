"""A listener that fell behind its recogniser catches up: the frames waiting for it are
fed in one piece, and the event after them is still handled, in order. Silence at the
end of an utterance is decoded only for ``DECODED_SILENCE_MS``, unless words follow.

The listener is the real ``waihu.voice.Listener``; its media is a stand-in holding the
real event channel and a real ``Endpointer`` (a whole ``CallMedia`` would only put the
events there by its clock, which is not what is tested). The recogniser is a stand-in
that records what it is fed: what matters is how the audio is handed to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import trio
import trio.testing

from waihu.api import AsrResult
from waihu.dialog.engine import SpeechBegan, Utterance
from waihu.dialog.script import load_script
from waihu.media.call_media import DtmfDigit
from waihu.media.endpointer import Endpointer, SpeechAudio, SpeechEnded, SpeechStarted
from waihu.testing.daemon import REPO
from waihu.voice import DECODED_SILENCE_MS, Listener

FRAME = 160


class RecordingStream:
    """Records the length of every piece of audio handed to ``accept``."""

    def __init__(self) -> None:
        self.accepted: list[int] = []
        self.finished = 0

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        pass

    async def accept(self, pcm: np.ndarray) -> AsrResult | None:
        self.accepted.append(int(pcm.size))
        await trio.sleep(0)
        return None

    async def finish(self) -> AsrResult:
        self.finished += 1
        return AsrResult("네", 1.0, words=(("네", 1.0, 0.0, 0.3),))


class Media:
    """What the listener reads of a call's media."""

    def __init__(self) -> None:
        self.send, self.events = trio.open_memory_channel[object](100)
        self.endpointer = Endpointer()
        self.call_id = "test"
        self.backchannel = False

    def heard(self, text: str, *, final: bool, words: object = ()) -> None:
        pass


class Life:
    def utterance(self, text: str, confidence: float, *, decode_seconds: float) -> None:
        pass

    def barge_in(self) -> None:
        pass


def frame(value: int = 1000) -> np.ndarray:
    return np.full(FRAME, value, np.int16)


async def run_listener(
    events: list[object], *, one_at_a_time: bool, stream: RecordingStream | None = None
) -> tuple[RecordingStream, list]:
    script = load_script(REPO / "etc/waihu/scripts/demo-ko.toml", check_recordings=False)
    media = Media()
    stream = RecordingStream() if stream is None else stream
    inbox_send, inbox = trio.open_memory_channel[object](100)
    listener = Listener(
        media,  # type: ignore[arg-type]
        stream,  # type: ignore[arg-type]
        inbox_send,  # type: ignore[arg-type]
        lambda: script.nodes["greeting"],
        Life(),  # type: ignore[arg-type]
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            if one_at_a_time:
                nursery.start_soon(listener.run)
                for event in events:
                    await media.send.send(event)
                    await trio.testing.wait_all_tasks_blocked()
            else:  # the listener comes to them late: all are waiting
                for event in events:
                    media.send.send_nowait(event)
                nursery.start_soon(listener.run)
            await trio.testing.wait_all_tasks_blocked()
            await media.send.aclose()
    got = []
    while True:
        try:
            got.append(inbox.receive_nowait())
        except trio.WouldBlock:
            return stream, got


def utterance_events(frames: int) -> list[object]:
    return [
        SpeechStarted(np.concatenate([frame()] * 5), lead_ms=0, number=1),
        *(SpeechAudio(frame()) for _ in range(frames)),
        SpeechEnded(duration_ms=20 * (frames + 5)),
        DtmfDigit("5"),
    ]


async def test_frames_waiting_behind_the_listener_are_fed_in_one_piece() -> None:
    stream, got = await run_listener(utterance_events(12), one_at_a_time=False)
    assert stream.accepted == [5 * FRAME, 12 * FRAME]  # the pre-roll, then all the rest
    assert stream.finished == 1
    kinds = [type(event).__name__ for event in got]
    assert kinds == ["SpeechBegan", "Utterance", "Dtmf"]  # nothing lost, in order
    assert isinstance(got[0], SpeechBegan) and isinstance(got[1], Utterance)
    assert got[1].text == "네"


async def test_a_listener_keeping_up_feeds_each_frame_as_it_comes() -> None:
    stream, got = await run_listener(utterance_events(4), one_at_a_time=True)
    assert stream.accepted == [5 * FRAME] + [FRAME] * 4
    assert [type(event).__name__ for event in got] == ["SpeechBegan", "Utterance", "Dtmf"]


async def test_the_end_of_the_media_while_draining_ends_the_listener() -> None:
    events = utterance_events(3)[:-2]  # no end of the utterance: the call ended mid-word
    stream, got = await run_listener(events, one_at_a_time=False)
    assert stream.accepted == [5 * FRAME, 3 * FRAME]
    assert stream.finished == 0
    assert [type(event).__name__ for event in got] == ["SpeechBegan"]


def silent_frames(count: int, *, after_ms: int = 0) -> list[SpeechAudio]:
    """``count`` frames of silence, the first ``after_ms`` + 20 ms into it."""
    return [SpeechAudio(frame(0), silent_ms=after_ms + 20 * (i + 1)) for i in range(count)]


async def test_only_the_start_of_the_trailing_silence_is_decoded() -> None:
    decoded = DECODED_SILENCE_MS // 20
    events = utterance_events(4)
    events[5:5] = silent_frames(35)  # a full end window of 700 ms after the words
    for one_at_a_time in (True, False):
        stream, got = await run_listener(events, one_at_a_time=one_at_a_time)
        assert sum(stream.accepted) == (5 + 4 + decoded) * FRAME
        assert [type(event).__name__ for event in got] == ["SpeechBegan", "Utterance", "Dtmf"]


async def test_a_pause_followed_by_more_words_is_decoded_before_them() -> None:
    pause = silent_frames(30)  # 600 ms: longer than what is decoded of a trailing silence
    events = utterance_events(2)
    events[3:3] = [*pause, SpeechAudio(frame(7)), SpeechAudio(frame(7))]
    stream = RecordingStream()
    fed: list[np.ndarray] = []

    async def accept(pcm: np.ndarray) -> None:
        fed.append(pcm.copy())

    stream.accept = accept  # type: ignore[method-assign]
    _, got = await run_listener(events, one_at_a_time=True, stream=stream)
    audio = np.concatenate(fed)
    assert audio.size == (5 + 2 + 30 + 2) * FRAME  # all of it, the pause included
    # the pause comes back in its place: after the first words, before the next ones
    spoken = audio[5 * FRAME :]
    assert (spoken[: 2 * FRAME] == 1000).all()
    assert (spoken[2 * FRAME : 32 * FRAME] == 0).all()
    assert (spoken[32 * FRAME :] == 7).all()
    assert [type(event).__name__ for event in got] == ["SpeechBegan", "Utterance", "Dtmf"]


async def test_a_trailing_silence_left_undecoded_never_reaches_the_next_utterance() -> None:
    first = utterance_events(2)[:-1]
    first[3:3] = silent_frames(30)
    second = [
        SpeechStarted(frame(5), lead_ms=0, number=2),
        SpeechAudio(frame(9)),
        SpeechEnded(duration_ms=40),
    ]
    stream = RecordingStream()
    fed: list[np.ndarray] = []

    async def accept(pcm: np.ndarray) -> None:
        fed.append(pcm.copy())

    stream.accept = accept  # type: ignore[method-assign]
    await run_listener([*first, *second], one_at_a_time=True, stream=stream)
    assert (fed[-2] == 5).all() and (fed[-1] == 9).all()  # the second utterance: its own
    assert sum(piece.size for piece in fed) == (5 + 2 + DECODED_SILENCE_MS // 20 + 2) * FRAME


async def test_an_unsure_reply_reaches_the_dialogue_with_its_words() -> None:
    """Only a backchannel over a line loses an all-unsure text (as noise); a reply keeps it:
    the dialogue decides what an unsure reply means."""
    stream = RecordingStream()

    async def finish() -> AsrResult:
        return AsrResult("않", 0.6, words=(("않", 0.6, 0.0, 0.2),))

    stream.finish = finish  # type: ignore[method-assign]
    _, got = await run_listener(utterance_events(4), one_at_a_time=True, stream=stream)
    replies = [event for event in got if isinstance(event, Utterance)]
    assert [(u.text, u.backchannel) for u in replies] == [("않", False)]
