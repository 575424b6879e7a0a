"""The call's listener hands the barge-in judge the final words with their confidences.

A real ``CallMedia`` over UDP on trio's MockClock plays a line; the far end says
"네" (espeak-ng) over it; the real ``waihu.voice.Listener`` reads the media events.
The recogniser is a scripted stream giving what a phrase grammar can make of
that "네": "네 없어요", the second word unsure. Only with the word confidences
does the judge see a backchannel: the line goes on and the utterance reaches the
dialogue as a backchannel, not as a reply.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import trio
import trio.testing
from test_media_call_media import PCMU, Call, make_pair, robot_silent, run_call, silence, tone

from waihu.api import AsrResult
from waihu.dialog.engine import Utterance
from waihu.dialog.script import load_script
from waihu.media.barge_in import BargeInSettings, backchannels_for
from waihu.media.call_media import CallMedia
from waihu.media.endpointer import Endpointer
from waihu.testing.daemon import REPO
from waihu.testing.speech import speech_pcm
from waihu.voice import Listener

FORCED = AsrResult("네 없어요", 0.87, words=(("네", 1.0, 0.27, 0.57), ("없어요", 0.74, 0.63, 0.93)))
# what an echo leak past the echo guard once came back as (a fresh-clone CI run)
LEAK = AsrResult("않", 0.6, words=(("않", 0.6, 0.27, 0.5),))
MIXED = AsrResult("네 어", 0.65, words=(("네", 0.95, 0.27, 0.57), ("어", 0.35, 0.6, 0.7)))
UNSURE_NE = AsrResult("네", 0.56, words=(("네", 0.56, 0.27, 0.57),))  # a real 네 under load


class ScriptedStream:
    """Stands in for the recogniser: "네" as a partial, ``final`` as the final."""

    def __init__(self, final: AsrResult = FORCED) -> None:
        self.partial_given = False
        self.final = final

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        pass

    async def accept(self, pcm: np.ndarray) -> AsrResult | None:
        if self.partial_given:
            return None
        self.partial_given = True
        return AsrResult("네", 0.0)

    async def finish(self) -> AsrResult:
        self.partial_given = False
        return self.final


class Life:
    """Stands in for the call's lifecycle: what the listener reports."""

    def __init__(self) -> None:
        self.barge_ins = 0

    def utterance(self, text: str, confidence: float, *, decode_seconds: float) -> None:
        pass

    def barge_in(self) -> None:
        self.barge_ins += 1


@pytest.mark.parametrize(
    ("final", "filed"),
    [(FORCED, "네 없어요"), (MIXED, "네 어"), (UNSURE_NE, "네"), (LEAK, "")],
    ids=["forced-word", "one-word-sure", "unsure-backchannel-word", "unsure-other-word-is-noise"],
)
async def test_a_final_with_an_unsure_forced_word_stays_a_backchannel(
    autojump_clock: trio.testing.MockClock, final: AsrResult, filed: str
) -> None:
    """A backchannel made of backchannel words or with a sure word is written down; one
    with neither (an echo leak, a breath) reaches the dialogue without its text. None
    cuts the line."""
    script = load_script(REPO / "etc/waihu/scripts/demo-ko.toml", check_recordings=False)
    greeting = script.nodes["greeting"]
    ne = speech_pcm("네", voice="ko+f3")
    callee = np.concatenate((silence(0.8), ne, silence(2.0)))
    life = Life()
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        settings = BargeInSettings(backchannels=backchannels_for("ko"))
        media = CallMedia(leg, endpointer=Endpointer(), barge_in=settings)
        line = media.player.play(tone(4.0), label="greeting")
        send, receive = trio.open_memory_channel(100)
        listener = Listener(media, ScriptedStream(final), send, lambda: greeting, life)  # type: ignore[arg-type]
        heard: list[Utterance] = []

        async def scenario(call: Call) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.run)
                await far.play(callee, call.start + 0.01)
                while media.player.playing or media.player.paused:
                    await trio.sleep(0.02)
                await trio.sleep(0.5)
                nursery.cancel_scope.cancel()
            while True:
                try:
                    event = receive.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(event, Utterance):
                    heard.append(event)

        await run_call(media, far, scenario, collect=False)  # the listener reads them

    assert [(u.text, u.backchannel) for u in heard] == [(filed, True)]
    assert not line.interrupted and life.barge_ins == 0
    assert sum(not robot_silent(far, p) for _, p in far.received) == 200  # all 4 s heard
