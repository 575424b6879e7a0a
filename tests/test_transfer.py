"""Transfer to a person: the bridge's relay, outcomes, the engine's fallback, config and script.

The bridge is tested with two in-memory legs (``MemoryLeg``): a fake, because
what is under test here is the relay — decode with one side's codec, encode
with the other's, whisper first, the recording — not a network; the real
thing, with a SIP agent leg and RTP over loopback, is
``tests/test_e2e_transfer.py``. ``carry_out`` is driven with ``ScriptedTrunk``,
a fake trunk whose dial answers as a test says (also a fake, for the same
reason: the SIP side of a busy or silent agent is tested end to end). The
dialogue engine, the script loader and the config loader are the real ones,
the engine on trio's mock clock.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import trio
from test_call_lifecycle import FakeTrunk, call_services, context, load_script_text, new_record

from waihu.api import (
    BadTarget,
    CallFailed,
    CallRecord,
    Codec,
    ProviderContext,
    TransferResult,
    TrunkError,
    Turn,
    WaihuError,
)
from waihu.call import place_call
from waihu.config import ConfigError, TransferConfig, load_config
from waihu.dialog.chat import TextSpeaker
from waihu.dialog.engine import DialogueEngine, SpeechBegan, Utterance
from waihu.dialog.script import Script, ScriptError, load_script
from waihu.events import EventBus
from waihu.media.bridge import Bridge, BridgeSide
from waihu.media.call_media import CallMedia
from waihu.media.endpointer import Endpointer
from waihu.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from waihu.media.media_clock import MediaClock
from waihu.media.recorder import StereoRecorder
from waihu.media.rtp import RtpSender, parse_rtp
from waihu.plugins import make_plugin_manager
from waihu.preflight import check_scripts
from waihu.transfer import TransferCall, Transfers, carry_out, outcome_of, whisper_fields

PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
FRAME = 160  # samples in 20 ms at 8 kHz
TIMEOUT = 30


# ───────────────────────── fakes ─────────────────────────


class MemoryLeg:
    """A call leg with no network (``waihu.api.CallLeg``): datagrams go to lists and come
    from a channel a test feeds. A fake; see the module docstring."""

    def __init__(self, codec: Codec, call_id: str = "leg") -> None:
        self.call_id = call_id
        self.codec = codec
        self.dtmf_payload_type: int | None = 101
        self.ended = trio.Event()
        self.ended_by: Any = None
        self.sent: list[bytes] = []
        self.hangups = 0
        self._feed, self._incoming = trio.open_memory_channel[bytes](1000)
        self.refer: TransferResult | Exception | None = None

    def send_media(self, datagram: bytes) -> None:
        self.sent.append(datagram)

    def deliver(self, datagram: bytes) -> None:
        self._feed.send_nowait(datagram)

    async def receive_media(self) -> bytes:
        return await self._incoming.receive()

    async def hangup(self) -> None:
        self.hangups += 1
        if not self.ended.is_set():
            self.ended_by = "robot"
            self.ended.set()

    def far_end_hangs_up(self) -> None:
        self.ended_by = "callee"
        self.ended.set()

    async def send_dtmf(self, digits: str) -> None:
        raise NotImplementedError

    async def transfer(self, target: str) -> TransferResult:
        if self.refer is None:
            raise NotImplementedError("no REFER here")
        if isinstance(self.refer, Exception):
            raise self.refer
        return self.refer

    def heard(self) -> list[tuple[int, np.ndarray]]:
        """What was sent to this leg: (payload type, decoded PCM) per packet."""
        out = []
        for datagram in self.sent:
            packet = parse_rtp(datagram)
            decode = ulaw_decode if packet.payload_type == 0 else alaw_decode
            out.append((packet.payload_type, decode(packet.payload)))
        return out


def tone(frequency: float, frames: int = 1, level: int = 8000) -> np.ndarray:
    t = np.arange(FRAME * frames) / 8000
    return (level * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


def packets(codec: Codec, audio: np.ndarray) -> list[bytes]:
    """``audio`` as 20 ms RTP packets of ``codec``."""
    sender = RtpSender(codec.payload_type)
    encode = ulaw_encode if codec.name == "PCMU" else alaw_encode
    return [
        sender.next_packet(encode(audio[i : i + FRAME]), FRAME) for i in range(0, audio.size, FRAME)
    ]


def first_sound(audio: np.ndarray) -> int:
    """Where the first frame that is not silence starts (relayed audio starts on a frame)."""
    return int(np.flatnonzero(audio)[0]) // FRAME * FRAME


def close_to(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal but for G.711's rounding (two lossy round trips)."""
    return a.size == b.size and int(np.abs(a.astype(int) - b.astype(int)).max()) < 400


# ───────────────────────── the bridge ─────────────────────────


def test_the_bridge_relays_each_way_across_codecs_and_records_both() -> None:
    callee, agent = MemoryLeg(PCMU, "callee"), MemoryLeg(PCMA, "agent")
    recorder = StereoRecorder("/nonexistent/never-saved.wav", 8000)
    bridge = Bridge(BridgeSide(callee), BridgeSide(agent), recorder=recorder)
    said_by_callee, said_by_agent = tone(440, 3), tone(1000, 3)
    for datagram in packets(PCMU, said_by_callee):
        bridge.callee.take(datagram)
    for datagram in packets(PCMA, said_by_agent):
        bridge.agent.take(datagram)
    for _ in range(6):  # the jitter buffer holds two packets back before it plays
        bridge.tick()
    to_agent, to_callee = agent.heard(), callee.heard()
    assert {pt for pt, _ in to_agent} == {8} and {pt for pt, _ in to_callee} == {0}
    heard_by_agent = np.concatenate([pcm for _, pcm in to_agent])
    heard_by_callee = np.concatenate([pcm for _, pcm in to_callee])
    start = first_sound(heard_by_agent)  # after the jitter buffer's start delay
    assert close_to(heard_by_agent[start : start + said_by_callee.size], said_by_callee)
    start = first_sound(heard_by_callee)
    assert close_to(heard_by_callee[start : start + said_by_agent.size], said_by_agent)
    stereo = recorder.stereo()
    assert close_to(stereo[:, 1], heard_by_callee)  # right: what the callee heard
    assert close_to(stereo[:, 0][start : start + said_by_callee.size], said_by_callee)


def test_after_skipped_ticks_the_bridge_relays_the_backlog_down_to_the_playout_depth() -> None:
    callee, agent = MemoryLeg(PCMU, "callee"), MemoryLeg(PCMA, "agent")
    bridge = Bridge(BridgeSide(callee), BridgeSide(agent))
    said = tone(440, 8)
    for datagram in packets(PCMU, said):  # 8 packets came in while the clock stalled
        bridge.callee.take(datagram)
    bridge.skipped(20)
    jitter = bridge.callee.jitter
    assert jitter.buffered == jitter.depth  # relayed in order; none dropped
    assert len(agent.heard()) == 8 - jitter.depth and jitter.stats.overflow == 0
    bridge.skipped(5)  # nothing beyond the depth left: nothing more relayed
    assert len(agent.heard()) == 8 - jitter.depth


def test_the_agent_hears_the_whisper_first_while_the_callee_holds() -> None:
    callee, agent = MemoryLeg(PCMU, "callee"), MemoryLeg(PCMU, "agent")
    recorder = StereoRecorder("/nonexistent/never-saved.wav", 8000)
    bridge = Bridge(BridgeSide(callee), BridgeSide(agent), recorder=recorder)
    whisper = tone(300, 4)
    playback = bridge.whisper.play(whisper, interruptible=False, label="whisper")
    for datagram in packets(PCMU, tone(700, 8)):
        bridge.callee.take(datagram)
    for datagram in packets(PCMU, tone(900, 8)):
        bridge.agent.take(datagram)
    assert not bridge.joined
    for _ in range(4):
        bridge.tick()
    assert playback.done.is_set() and bridge.joined
    heard_by_agent = np.concatenate([pcm for _, pcm in agent.heard()])
    assert close_to(heard_by_agent, whisper)
    assert not np.concatenate([pcm for _, pcm in callee.heard()]).any()  # held: silence
    for _ in range(4):
        bridge.tick()
    after = np.concatenate([pcm for _, pcm in agent.heard()[4:]])
    assert close_to(after, tone(700, 8)[4 * FRAME :])  # then the callee, from where it is
    # the recording: the callee throughout; on the right what the callee heard — the hold
    # during the whisper (not the agent, who was talking already), then the agent
    stereo = recorder.stereo()
    assert close_to(stereo[:, 0], tone(700, 8))
    assert not stereo[: 4 * FRAME, 1].any()
    assert close_to(stereo[4 * FRAME :, 1], tone(900, 8)[4 * FRAME :])


def test_the_callee_side_carries_the_calls_own_rtp_stream_on() -> None:
    callee, agent = MemoryLeg(PCMU, "callee"), MemoryLeg(PCMU, "agent")
    sender = RtpSender(0, ssrc=1234, sequence=77, timestamp=16000)
    bridge = Bridge(BridgeSide(callee, sender=sender), BridgeSide(agent))
    bridge.tick()
    bridge.tick()
    first, second = (parse_rtp(d) for d in callee.sent)
    assert (first.ssrc, first.sequence, first.timestamp) == (1234, 77, 16000)
    assert (second.sequence, second.timestamp) == (78, 16000 + FRAME)
    assert not first.marker  # the stream goes on: no new talkspurt marker
    assert parse_rtp(agent.sent[0]).marker  # the agent's stream is new


def test_the_bridge_drops_what_is_not_the_sides_audio() -> None:
    callee, agent = MemoryLeg(PCMU, "callee"), MemoryLeg(PCMU, "agent")
    side = BridgeSide(agent)
    side.take(b"\x00\x01")  # not RTP
    side.take(packets(PCMA, tone(500))[0])  # a payload type the side did not negotiate
    assert (side.stats.malformed, side.stats.foreign_payload, side.jitter.buffered) == (1, 1, 0)
    bridge = Bridge(BridgeSide(callee), side)
    bridge.tick()
    assert not np.concatenate([pcm for _, pcm in callee.heard()]).any()


def test_a_side_at_another_ptime_is_cut_into_frames() -> None:
    leg = MemoryLeg(PCMU)
    side = BridgeSide(leg, jitter_depth=1)
    audio = tone(440, 6)
    sender = RtpSender(0)
    for i in range(0, audio.size, 3 * FRAME):  # 60 ms packets
        side.take(sender.next_packet(ulaw_encode(audio[i : i + 3 * FRAME]), 3 * FRAME))
    frames = [side.next_frame() for _ in range(8)]
    assert all(f.size == FRAME for f in frames)
    played = np.concatenate(frames)
    start = first_sound(played)
    assert close_to(played[start : start + audio.size], audio)


def test_sides_of_different_clock_rates_are_refused() -> None:
    wide = MemoryLeg(Codec("PCMU", 0, clock_rate=16000))
    with pytest.raises(ValueError, match="clock rates differ"):
        Bridge(BridgeSide(MemoryLeg(PCMU)), BridgeSide(wide))


# ───────────────────────── outcomes ─────────────────────────


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "transferred"),
        (486, "agent_busy"),
        (600, "agent_busy"),
        (408, "no_answer"),
        (480, "no_answer"),
        (487, "no_answer"),
        (404, "failed"),
        (603, "failed"),
        (503, "failed"),
    ],
)
def test_outcome_of_the_agents_answer(status: int, outcome: str) -> None:
    assert outcome_of(status) == outcome


class ScriptedTrunk:
    """A trunk whose ``dial`` does what the test says (a fake; see the module docstring):
    ``answer`` → a ``MemoryLeg``; a ``CallFailed``/``TrunkError`` → raised; ``"hold"``
    → rings until cancelled."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.dialled: list[tuple[str, str | None, float]] = []
        self.legs: list[MemoryLeg] = []
        self.ringing = trio.Event()

    async def dial(
        self,
        target: str,
        *,
        caller_id: str | None = None,
        ring_timeout: float = 60.0,
        on_progress: Any = None,
        on_early_media: Any = None,
    ) -> MemoryLeg:
        self.dialled.append((target, caller_id, ring_timeout))
        self.ringing.set()
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer == "hold":
            await trio.sleep_forever()
        await trio.sleep(1.0)
        leg = MemoryLeg(self.answer, "agent")
        self.legs.append(leg)
        return leg

    def check_target(self, target: str) -> str:
        if not (target.startswith("sip:") or target.isdigit()):
            raise BadTarget(f"{target!r} is not a number")
        return target


class Lines:
    """Lines of trunks for the agent's leg: ``free`` of them, counted as taken and given back."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.taken: list[str] = []
        self.released = 0

    def __call__(self, trunk: str) -> Lines:
        if self.free == 0:
            raise WaihuError(f"trunk {trunk}: all 1 lines busy; try later")
        self.free -= 1
        self.taken.append(trunk)
        return self

    def release(self) -> None:
        self.released += 1
        self.free += 1


def a_call(leg: MemoryLeg, clock: MediaClock) -> TransferCall:
    record = CallRecord(id="c1", number="01012345678", script="s", trunk="office")
    record.turns.append(Turn(speaker="callee", text="얼마예요", node="offer"))
    endpointer = Endpointer(
        sample_rate=8000,
        aggressiveness=2,
        start_ms=200,
        end_silence_ms=700,
        preroll_ms=300,
        max_utterance_ms=15000,
    )
    media = CallMedia(leg, endpointer=endpointer)
    fields = whisper_fields(record, {"name": "김"}, grade="A", node="offer")
    return TransferCall(
        record=record, leg=leg, media=media, clock=clock, speech=None, language="ko", fields=fields
    )


def transfers(
    dialler: ScriptedTrunk | None, lines: Lines | None = None, **config: Any
) -> Transfers:
    """``[transfer.sales]`` with ``config``; the call's trunk ``office`` is ``dialler``."""
    table = {"sales": TransferConfig(**{"target": "sip:1002@agents", **config})}
    return Transfers(
        table,
        trunk=lambda name: {"office": dialler}.get(name),
        take_line=lines,
        caller_id="02099998888",
    )


def test_whisper_fields_hold_the_grade_the_last_reply_and_the_variables() -> None:
    call = a_call(MemoryLeg(PCMU), MediaClock())
    assert call.fields == {
        "name": "김",
        "grade": "A",
        "last_reply": "얼마예요",
        "number": "01012345678",
        "node": "offer",
    }


@pytest.mark.parametrize(
    ("answer", "outcome", "status"),
    [
        (CallFailed(486, "Busy Here"), "agent_busy", 486),
        (CallFailed(408, "Request Timeout"), "no_answer", 408),
        (CallFailed(403, "Forbidden"), "failed", 403),
        (TrunkError("no route to 10.0.0.1"), "failed", None),
    ],
)
async def test_an_agent_who_does_not_answer_settles_the_outcome_and_gives_the_line_back(
    answer: Exception, outcome: str, status: int | None
) -> None:
    trunk, lines = ScriptedTrunk(answer), Lines(1)
    settled: list[TransferResult] = []
    with trio.fail_after(TIMEOUT):
        result = await carry_out(
            transfers(trunk, lines, ring_timeout=12.0),
            "sales",
            a_call(MemoryLeg(PCMU), MediaClock()),
            on_settled=settled.append,
        )
    assert settled == [result]
    assert (result.outcome, result.status, result.mode, result.target) == (
        outcome,
        status,
        "bridge",
        "sip:1002@agents",
    )
    assert str(answer) in result.detail
    assert trunk.dialled == [("sip:1002@agents", "02099998888", 12.0)]
    assert (lines.taken, lines.released) == (["office"], 1)


async def test_no_free_line_for_the_agent_is_agent_busy_and_dials_nothing() -> None:
    trunk = ScriptedTrunk(PCMU)
    settled: list[TransferResult] = []
    result = await carry_out(
        transfers(trunk, Lines(0)),
        "sales",
        a_call(MemoryLeg(PCMU), MediaClock()),
        on_settled=settled.append,
    )
    assert (result.outcome, trunk.dialled) == ("agent_busy", [])
    assert "lines busy" in result.detail


async def test_an_unknown_transfer_name_fails_with_a_reason() -> None:
    settled: list[TransferResult] = []
    result = await carry_out(
        Transfers({}, lambda _: None),
        "sales",
        a_call(MemoryLeg(PCMU), MediaClock()),
        on_settled=settled.append,
    )
    assert (settled, result.outcome) == ([result], "failed")
    assert result.detail == "no [transfer.sales] in the daemon's configuration"


@pytest.mark.parametrize(
    ("table", "detail"),
    [
        ({"trunk": "backup"}, "trunk backup is not running"),
        ({"target": "abc"}, "agent unreachable: 'abc' is not a number"),
    ],
)
async def test_a_transfer_that_cannot_start_fails_with_a_reason(table: dict, detail: str) -> None:
    trunk, lines = ScriptedTrunk(PCMU), Lines(1)
    settled: list[TransferResult] = []
    result = await carry_out(
        transfers(trunk, lines, **table),
        "sales",
        a_call(MemoryLeg(PCMU), MediaClock()),
        on_settled=settled.append,
    )
    assert (settled, result.outcome, result.detail) == ([result], "failed", detail)
    assert trunk.dialled == [] and lines.free == 1


async def test_the_agent_answers_then_hears_the_callee_until_the_callee_hangs_up() -> None:
    trunk, lines = ScriptedTrunk(PCMA), Lines(1)
    callee = MemoryLeg(PCMU, "callee")
    settled: list[TransferResult] = []
    async with trio.open_nursery() as nursery:
        clock = MediaClock()
        await nursery.start(clock.run)
        call = a_call(callee, clock)
        clock.add(call.media)
        nursery.start_soon(call.media.receive_loop)
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as inner:

                async def transfer() -> None:
                    await carry_out(
                        transfers(trunk, lines), "sales", call, on_settled=settled.append
                    )

                inner.start_soon(transfer)
                while not settled:
                    await trio.sleep(0.01)
                assert settled[0].outcome == "transferred" and settled[0].status == 200
                assert call.media not in clock  # the bridge has the call's media now
                for datagram in packets(PCMU, tone(440, 10)):
                    callee.deliver(datagram)
                await trio.sleep(0.5)
                (agent,) = trunk.legs
                heard = np.concatenate([pcm for _, pcm in agent.heard()])
                assert np.abs(heard.astype(int)).max() > 4000  # the callee's tone reached it
                callee.far_end_hangs_up()
        assert len(clock) == 0  # the bridge left the clock
        nursery.cancel_scope.cancel()
    assert (agent.hangups, agent.ended_by, lines.released) == (1, "robot", 1)
    assert len(settled) == 1


async def test_a_call_cancelled_while_the_agent_rings_settles_failed() -> None:
    trunk, lines = ScriptedTrunk("hold"), Lines(1)
    settled: list[TransferResult] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def transfer() -> None:
                await carry_out(
                    transfers(trunk, lines),
                    "sales",
                    a_call(MemoryLeg(PCMU), MediaClock()),
                    on_settled=settled.append,
                )

            nursery.start_soon(transfer)
            await trunk.ringing.wait()
            nursery.cancel_scope.cancel()  # the callee hung up
    assert [(r.outcome, r.detail) for r in settled] == [
        ("failed", "the call ended before the agent answered")
    ]
    assert lines.released == 1


@pytest.mark.parametrize(
    ("refer", "outcome", "detail"),
    [
        (None, "failed", "trunk office cannot transfer with REFER"),
        (TrunkError("REFER timed out"), "failed", "REFER failed: REFER timed out"),
        (
            TransferResult(
                target="x", mode="refer", outcome="transferred", status=200, detail="NOTIFY 200"
            ),
            "transferred",
            "NOTIFY 200",
        ),
        (
            TransferResult(target="x", mode="refer", outcome="agent_busy", status=486),
            "agent_busy",
            "",
        ),
    ],
)
async def test_a_blind_transfer_follows_the_legs_refer(
    refer: Any, outcome: str, detail: str
) -> None:
    leg = MemoryLeg(PCMU)
    leg.refer = refer
    trunk = ScriptedTrunk(PCMU)
    settled: list[TransferResult] = []
    result = await carry_out(
        transfers(trunk, mode="refer"),
        "sales",
        a_call(leg, MediaClock()),
        on_settled=settled.append,
    )
    assert (result.mode, result.outcome, result.detail, result.target) == (
        "refer",
        outcome,
        detail,
        "sip:1002@agents",
    )
    assert trunk.dialled == [] and settled == [result]


# ───────────────────────── the engine goes on ─────────────────────────

TRANSFER_SCRIPT = """
[script]
start = "offer"
priority = ["affirm", "deny", "default"]
silence_timeout = 5.0
on_transfer_failed = {{ say = [{{ text = "죄송합니다, 바쁩니다." }}], goto = "{fallback}" }}

[intents.affirm]
keywords = ["네"]

[intents.deny]
keywords = ["아니요"]

[nodes.offer]
say = [{{ text = "상담원을 연결해 드릴까요?" }}]
on = {{ affirm = "connect", deny = "later", default = {{ transfer = "sales", tags = ["asked"] }} }}

[nodes.connect]
say = [{{ text = "연결해 드리겠습니다." }}]
end = true
grade = "A"
transfer = "sales"

[nodes.later]
say = [{{ text = "나중에 다시 전화 드릴까요?" }}]
on = {{ affirm = "bye", deny = {{ tags = ["declined"], hangup = true }}, default = "bye" }}

[nodes.bye]
say = [{{ text = "감사합니다." }}]
end = true
grade = "B"

[[grading]]
grade = "E"
reason = "completed"
when = {{ completed = true, reached = ["bye"] }}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def keywords(provider_types: dict, tmp_path: Path) -> Any:
    cls = provider_types["nlu"]["keywords"]
    context = ProviderContext(
        name="default",
        state_dir=tmp_path,
        log=logging.getLogger("t"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    return cls(cls.Config(), context)


async def engine_with(script: Script, keywords: Any) -> tuple[DialogueEngine, Any, TextSpeaker]:
    keywords.fit(script.intents)
    speaker = TextSpeaker()
    send, receive = trio.open_memory_channel(16)
    engine = DialogueEngine(
        script, keywords, speaker, receive, on_turn=lambda t: None, now=trio.current_time
    )
    return engine, send, speaker


async def test_after_a_failed_transfer_the_dialogue_goes_on_from_the_fallback(
    tmp_path: Path, keywords: Any, autojump_clock: Any
) -> None:
    script = load_script(write(tmp_path, TRANSFER_SCRIPT.format(fallback="later")))
    engine, send, speaker = await engine_with(script, keywords)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:

            async def callee() -> None:
                await trio.sleep(1)
                await send.send(Utterance("네"))

            nursery.start_soon(callee)
            ending = await engine.run()
            assert (ending.transfer, ending.node, ending.reason) == ("sales", "connect", "transfer")
            # the callee spoke while the agent rang: nobody asked it anything
            await send.send(SpeechBegan())
            await send.send(Utterance("아니요"))
            await trio.sleep(20)  # the agent's ring time
            resumed = engine.transfer_failed()
            nursery.start_soon(send.send, Utterance("네"))
            ending = await resumed
    assert speaker.lines[-3:] == [
        "죄송합니다, 바쁩니다.",
        "나중에 다시 전화 드릴까요?",
        "감사합니다.",
    ]
    assert (ending.node, ending.transfer, ending.reason) == ("bye", None, "end")
    assert ending.grade == "E"  # completed again, at bye: the failed transfer's end is undone


async def test_without_on_transfer_failed_the_robot_hangs_up(
    tmp_path: Path, keywords: Any, autojump_clock: Any
) -> None:
    text = TRANSFER_SCRIPT.format(fallback="later").replace("on_transfer_failed", "# ")
    script = load_script(write(tmp_path, text))
    assert script.on_transfer_failed is None
    engine, send, speaker = await engine_with(script, keywords)
    with trio.fail_after(120):
        await send.send(Utterance("날씨가 좋네요"))  # a default: the route's own transfer
        ending = await engine.run()
        assert (ending.transfer, ending.node, ending.tags) == ("sales", "offer", ("asked",))
        ending = await engine.transfer_failed()
    assert (ending.reason, ending.transfer, ending.node) == ("transfer_failed", None, "offer")
    assert speaker.lines == ["상담원을 연결해 드릴까요?"]


async def test_a_failed_transfer_can_transfer_again_through_the_flow(
    tmp_path: Path, keywords: Any, autojump_clock: Any
) -> None:
    script = load_script(write(tmp_path, TRANSFER_SCRIPT.format(fallback="offer")))
    engine, send, speaker = await engine_with(script, keywords)
    with trio.fail_after(120):
        await send.send(Utterance("네"))
        first = await engine.run()
        async with trio.open_nursery() as nursery:

            async def callee() -> None:
                await trio.sleep(1)  # once the question is asked again
                await send.send(Utterance("네"))

            nursery.start_soon(callee)
            second = await engine.transfer_failed()
    assert (first.node, second.node) == ("connect", "connect")
    assert second.transfer == "sales"
    assert speaker.lines.count("상담원을 연결해 드릴까요?") == 2


# ───────────────────────── script and config ─────────────────────────


def test_the_script_fallback_must_go_somewhere_real(tmp_path: Path) -> None:
    text = TRANSFER_SCRIPT.format(fallback="nowhere")
    with pytest.raises(ScriptError) as caught:
        load_script(write(tmp_path, text))
    assert any(
        "script.on_transfer_failed.goto: no node named 'nowhere'" in p
        for p in caught.value.problems
    ), caught.value.problems


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{ transfer = "sales" }', "script.on_transfer_failed: cannot transfer again"),
        ('"repeat"', "script.on_transfer_failed: cannot resume ('repeat')"),
    ],
)
def test_the_script_fallback_cannot_transfer_or_resume(
    tmp_path: Path, value: str, message: str
) -> None:
    text = TRANSFER_SCRIPT.format(fallback="later")
    text = "\n".join(
        f"on_transfer_failed = {value}" if line.startswith("on_transfer_failed") else line
        for line in text.splitlines()
    )
    with pytest.raises(ScriptError) as caught:
        load_script(write(tmp_path, text))
    assert any(message in p for p in caught.value.problems), caught.value.problems


def test_a_node_reached_only_by_the_fallback_is_reachable(tmp_path: Path) -> None:
    apology = '\n[nodes.sorry]\nsay = [{ text = "죄송합니다." }]\nend = true\n'
    script = load_script(write(tmp_path, TRANSFER_SCRIPT.format(fallback="sorry") + apology))
    assert script.on_transfer_failed is not None
    assert script.on_transfer_failed.goto == "sorry"
    assert [v.text for v in script.on_transfer_failed.say] == ["죄송합니다, 바쁩니다."]
    text = TRANSFER_SCRIPT.format(fallback="sorry").replace("on_transfer_failed", "# ") + apology
    with pytest.raises(ScriptError, match=r"nodes\.sorry: is unreachable"):
        load_script(write(tmp_path, text))


CONFIG = """
[call]
tts = "default"

[tts.default]
type = "espeak"

[trunk.office]
type = "sip"
proxy = "127.0.0.1:5080"

[trunk.agents]
type = "sip"
proxy = "127.0.0.1:5090"

[asr.default]
type = "vosk"

[nlu.default]
type = "keywords"

[storage]
type = "sqlite"
path = "waihu.db"
"""


def test_transfer_tables_are_read_with_their_defaults(tmp_path: Path, provider_types: dict) -> None:
    path = tmp_path / "waihud.toml"
    path.write_text(
        CONFIG
        + """
[transfer.sales]
target = "sip:1002@pbx.example.com"
trunk = "agents"
whisper = "{grade} 등급 고객: {last_reply}"

[transfer.desk]
mode = "refer"
target = "8001"
ring_timeout = 15
""",
        encoding="utf-8",
    )
    config = load_config(path, provider_types)
    assert config.transfers == {
        "sales": TransferConfig(
            target="sip:1002@pbx.example.com",
            trunk="agents",
            whisper="{grade} 등급 고객: {last_reply}",
        ),
        "desk": TransferConfig(mode="refer", target="8001", ring_timeout=15.0),
    }
    assert config.transfers["sales"].mode == "bridge"
    assert config.transfers["sales"].ring_timeout == 30.0


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            'mode = "blind"\ntarget = "1"',
            "transfer.x.mode: must be one of bridge, refer, not 'blind'",
        ),
        ('target = "1"\ntrunk = "ofice"', "transfer.x.trunk: no [trunk.ofice] section"),
        ("ring_timeout = 10", "transfer.x.target: required key is missing"),
        ('target = "1"\nring_timeout = 0', "transfer.x.ring_timeout: must be greater than 0"),
        ('target = "1"\nagent = "bob"', "transfer.x: unknown key agent"),
        ('target = " "', "transfer.x.target: must not be empty"),
        ('target = "1"\nwhisper = "{grade"', "transfer.x.whisper: bad placeholder: expected '}'"),
    ],
)
def test_a_bad_transfer_table_is_named_by_key(
    tmp_path: Path, provider_types: dict, table: str, problem: str
) -> None:
    path = tmp_path / "waihud.toml"
    path.write_text(CONFIG + "\n[transfer.x]\n" + table + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, provider_types)
    assert any(p.startswith(f"{path}: {problem}") for p in caught.value.problems), (
        caught.value.problems
    )


def test_a_whisper_needs_a_voice(tmp_path: Path, provider_types: dict) -> None:
    path = tmp_path / "waihud.toml"
    text = CONFIG.replace('tts = "default"', "").replace('[tts.default]\ntype = "espeak"', "")
    path.write_text(text + '\n[transfer.x]\ntarget = "1"\nwhisper = "{grade}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, provider_types)
    assert caught.value.problems == [
        f"{path}: transfer.x.whisper: needs [call] tts to be spoken"
        " (set call.tts, or leave whisper out)"
    ]


# ───────────────────────── a whole call ─────────────────────────

FALLBACK_SCRIPT = """
[script]
start = "hello"
on_transfer_failed = "sorry"

[nodes.hello]
say = [{ text = "연결합니다", recording = "hello.wav" }]
end = true
grade = "A"
transfer = "sales"

[nodes.sorry]
say = [{ text = "죄송합니다", recording = "hello.wav" }]
end = true
grade = "C"
tags = ["callback"]
"""


async def test_a_call_files_the_outcome_publishes_it_and_says_the_fallback(
    tmp_path: Path,
) -> None:
    """The real ``place_call`` with the fake trunk of ``test_call_lifecycle`` (no network):
    the agent's number starts with "busy", so it answers 486."""
    seen: list[Any] = []
    bus = EventBus(make_plugin_manager())
    events = bus.subscribe()
    loaded = await load_script_text(tmp_path, FALLBACK_SCRIPT)
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    config = {"sales": TransferConfig(target="busy-1002", ring_timeout=9.0)}
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            services = attrs.evolve(services, transfers=Transfers(config, trunk=lambda name: trunk))
            record = await place_call(services, trunk, new_record(), loaded)
    while True:
        try:
            seen.append(events.receive_nowait())
        except trio.WouldBlock:
            break
    assert trunk.dialled[1] == ("busy-1002", None, 9.0)
    assert record.transfer is not None
    assert (record.transfer.outcome, record.transfer.status) == ("agent_busy", 486)
    (published,) = [e for e in seen if e.kind == "transfer"]
    assert dict(published.data) == {
        "target": "busy-1002",
        "mode": "bridge",
        "outcome": "agent_busy",
        "status": 486,
        "detail": "agent: 486 Busy Here",
    }
    assert [t.node for t in record.turns] == ["hello", "sorry"]
    assert (record.grade, record.hangup_by) == ("C", "robot")
    assert {"transfer", "callback"} <= set(record.tags)


async def test_a_fallback_that_goes_on_undoes_the_transfers_end(
    tmp_path: Path, keywords: Any, autojump_clock: Any
) -> None:
    script = load_script(write(tmp_path, TRANSFER_SCRIPT.format(fallback="later")))
    engine, send, _speaker = await engine_with(script, keywords)
    with trio.fail_after(120):
        await send.send(Utterance("네"))
        ending = await engine.run()
        assert ending.grade == "A"  # the grade of the end node that transferred
        with trio.move_on_after(1):  # the callee hangs up while asked again at "later"
            await engine.transfer_failed()
    verdict = engine.verdict(hangup_by="callee")
    assert (verdict.grade, engine.facts.completed) == (script.default_grade, False)


async def test_the_callee_hears_ring_back_until_the_agent_gives_up() -> None:
    trunk = ScriptedTrunk("hold")
    call = a_call(MemoryLeg(PCMU), MediaClock())
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(carry_out, on_settled=lambda r: None),
                transfers(trunk),
                "sales",
                call,
            )
            await trunk.ringing.wait()
            frames = [call.media.player.next_frame() for _ in range(250)]  # one cadence
            nursery.cancel_scope.cancel()
    assert not call.media.player.playing  # stopped: a fallback line would come next
    on = np.concatenate(frames[:50])
    off = np.concatenate(frames[50:])
    assert not off.any()
    assert 0.9 < tone_share_at(on, 450.0) <= 1.01
    assert 2500 < np.abs(on.astype(int)).max() < 4000  # about −20 dBFS


def tone_share_at(audio: np.ndarray, frequency: float) -> float:
    """The share of ``audio``'s energy at ``frequency`` (a single-bin DFT)."""
    x = audio.astype(float)
    basis = np.exp(-2j * math.pi * frequency * np.arange(x.size) / 8000)
    return 2 * abs(np.dot(x, basis)) ** 2 / x.size / float(np.sum(x * x))


def test_check_config_warns_of_a_transfer_to_a_table_the_daemon_lacks(
    tmp_path: Path, provider_types: dict
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    script = scripts / "t.toml"
    script.write_text(TRANSFER_SCRIPT.format(fallback="later"), encoding="utf-8")
    assert load_script(script).transfers() == [
        ("nodes.connect.transfer", "sales"),
        ("nodes.offer.on.default.transfer", "sales"),
    ]
    path = tmp_path / "waihud.toml"
    head = f"[daemon]\nscripts_dir = {json.dumps(str(scripts))}\n"
    path.write_text(head + CONFIG + '\n[transfer.desk]\ntarget = "8001"\n', encoding="utf-8")
    found = check_scripts(load_config(path, provider_types))
    assert found.errors == []
    assert found.warnings == [
        f"{script}: nodes.{key}.transfer: no [transfer.sales] in {path}: such a transfer"
        " fails and the script's on_transfer_failed applies; add the table (waihud.toml(5))"
        for key in ("connect", "offer.on.default")
    ]
    path.write_text(head + CONFIG + '\n[transfer.sales]\ntarget = "8001"\n', encoding="utf-8")
    assert check_scripts(load_config(path, provider_types)).warnings == []


async def test_an_agent_answering_a_call_already_over_is_hung_up_and_not_transferred() -> None:
    trunk, lines = ScriptedTrunk(PCMU), Lines(1)
    callee = MemoryLeg(PCMU, "callee")
    callee.far_end_hangs_up()  # while the agent's phone rang
    with trio.fail_after(TIMEOUT):
        result = await carry_out(
            transfers(trunk, lines), "sales", a_call(callee, MediaClock()), on_settled=print
        )
    assert (result.outcome, result.detail) == ("failed", "the call ended before the agent answered")
    (agent,) = trunk.legs
    assert (agent.hangups, lines.released) == (1, 1)
