"""What reaches a call besides the callee's voice: an operator's hang-up and digits, digits
the far end signals out of band, early media, and the media figures filed at the end.

The call path runs for real (``place_call``, the real media clock, the real SQLite
storage); the trunk and leg are the network-free stand-ins of ``test_call_lifecycle``
(no SIP peer can run inside a unit test — the SIP side of each is tested against sipp
in the waihu_sip tests), extended here with what each test needs to observe.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import trio
from test_call_lifecycle import (
    TIMEOUT,
    FakeLeg,
    FakeTrunk,
    call_services,
    context,
    new_record,
)

from waihu.api import CallFailed, Codec, MediaQuality, TransferResult
from waihu.call import place_call
from waihu.call_control import OPERATOR_HANGUP, CallControl, CallNotAnswered
from waihu.call_lifecycle import record_as_dict
from waihu.control.render import render_call
from waihu.dialog.library import LoadedScript, ScriptLibrary
from waihu.events import EventBus
from waihu.media.early_media import EarlyAudio as EarlyAudio
from waihu.media.g711 import codec_functions
from waihu.media.rtp import RtpSender, parse_rtp
from waihu.media.telephone_event import parse_telephone_event
from waihu.plugins import collect_provider_types, make_plugin_manager
from waihu.testing.sipp import sipp_peer

from sip_harness import running_trunk

RATE = 8000
REAL_TIME_LIMIT = 60  # with sipp as the callee
KEYS_SCRIPT = """
[script]
name = "keys"
start = "ask"
priority = ["default"]
default_grade = "D"
silence_timeout = 20.0

[handlers.dtmf]
"5" = "pressed"

[nodes.ask]
say = [{ text = "안녕하세요", recording = "long.wav" }]
on.default = "pressed"

[nodes.pressed]
say = [{ text = "감사합니다", recording = "short.wav" }]
end = true
grade = "A"
"""


def write_tone(path: Path, seconds: float) -> None:
    t = np.arange(int(RATE * seconds)) / RATE
    tone = (3000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(tone.tobytes())


async def load_keys(tmp_path: Path, *, long_seconds: float = 3.0) -> LoadedScript:
    folder = tmp_path / "scripts"
    folder.mkdir(parents=True, exist_ok=True)
    write_tone(folder / "long.wav", long_seconds)
    write_tone(folder / "short.wav", 0.1)
    (folder / "keys.toml").write_text(KEYS_SCRIPT, encoding="utf-8")
    keywords = collect_provider_types(make_plugin_manager())["nlu"]["keywords"]
    library = ScriptLibrary(folder, lambda: keywords(keywords.Config(), context(tmp_path, "nlu")))
    await library.load()
    assert library.problems == {}
    loaded = library.get("keys")
    assert loaded is not None
    return loaded


class KeyLeg(FakeLeg):
    """A leg that keeps what the robot sends, signals digits like SIP INFO, and reports
    RTCP-like media figures."""

    def __init__(self, dtmf_pt: int | None) -> None:
        super().__init__()
        self.dtmf_payload_type = dtmf_pt
        self.datagrams: list[bytes] = []
        self.info_digits: list[str] = []
        self.signal_send, self._signal = trio.open_memory_channel[str](8)

    def send_media(self, datagram: bytes) -> None:
        super().send_media(datagram)
        self.datagrams.append(datagram)

    async def send_dtmf(self, digits: str) -> None:
        self.info_digits.append(digits)

    async def receive_dtmf(self) -> str:
        return await self._signal.receive()

    def media_quality(self) -> MediaQuality:
        return MediaQuality(
            packets_sent=self.sent, packets_received=0, packets_lost=0, loss_fraction=0.0,
            jitter_ms=0.0, rtt_ms=12.5,
        )  # fmt: skip


class KeyTrunk(FakeTrunk):
    def __init__(self, *args: Any, dtmf_pt: int | None = 101) -> None:
        super().__init__(*args)
        self.dtmf_pt = dtmf_pt

    async def dial(self, target: str, **options: Any) -> FakeLeg:
        if target.startswith("hold"):
            return await super().dial(target, **options)
        leg = KeyLeg(self.dtmf_pt)
        self.legs.append(leg)
        return leg


async def answered(trunk: FakeTrunk) -> KeyLeg:
    while not trunk.legs:
        await trio.sleep(0.01)
    leg = trunk.legs[0]
    assert isinstance(leg, KeyLeg)
    return leg


async def test_an_operator_hang_up_while_ringing_cancels_the_dial(tmp_path: Path) -> None:
    loaded = await load_keys(tmp_path)
    trunk = KeyTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    control = CallControl()
    record = attrs.evolve(new_record(), number="hold", script="keys")
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, EventBus(make_plugin_manager())) as services:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: place_call(services, trunk, record, loaded, control=control)
                )
                while trunk.holding == 0:
                    await trio.sleep(0.01)
                control.hang_up()
            stored = await services.storage.get_call(record.id)
    assert trunk.holding == 0  # the dial was cancelled (a SIP trunk sends CANCEL then)
    assert (record.status, record.sip_status, record.error) == (
        "failed", 487, f"{OPERATOR_HANGUP} while it rang",
    )  # fmt: skip
    assert record.outcome != "interrupted" and stored == record


async def test_an_operator_hang_up_mid_call_ends_it_graded(tmp_path: Path) -> None:
    loaded = await load_keys(tmp_path, long_seconds=20.0)
    trunk = KeyTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    control = CallControl()
    record = attrs.evolve(new_record(), script="keys")
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, EventBus(make_plugin_manager())) as services:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: place_call(services, trunk, record, loaded, control=control)
                )
                leg = await answered(trunk)
                await trio.sleep(0.3)
                control.hang_up()
    assert (record.status, record.outcome, record.hangup_by, record.error) == (
        "ended", "answered", "robot", OPERATOR_HANGUP,
    )  # fmt: skip
    assert leg.hangups >= 1 and record.grade == "D"
    with pytest.raises(CallNotAnswered):
        await control.send_dtmf("1")  # over: nothing to send to


async def test_operator_digits_go_out_as_telephone_events_in_the_stream(tmp_path: Path) -> None:
    loaded = await load_keys(tmp_path)
    trunk = KeyTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    control = CallControl()
    record = attrs.evolve(new_record(), script="keys")
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, EventBus(make_plugin_manager())) as services:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: place_call(services, trunk, record, loaded, control=control)
                )
                with pytest.raises(CallNotAnswered):
                    await control.send_dtmf("1")  # not answered yet
                leg = await answered(trunk)
                while control._send_dtmf is None:
                    await trio.sleep(0.01)
                with pytest.raises(ValueError, match="not a DTMF digit"):
                    await control.send_dtmf("1x")
                await control.send_dtmf("2#")
                control.hang_up()
    packets = [parse_rtp(d) for d in leg.datagrams]
    events = [parse_telephone_event(p.payload) for p in packets if p.payload_type == 101]
    assert [e.event for e in events if e.end] == [2, 2, 2, 11, 11, 11]
    assert len({p.ssrc for p in packets}) == 1  # one stream
    assert leg.info_digits == []


async def test_operator_digits_go_by_sip_info_without_telephone_event(tmp_path: Path) -> None:
    loaded = await load_keys(tmp_path)
    trunk = KeyTrunk(FakeTrunk.Config(), context(tmp_path, "office"), dtmf_pt=None)
    control = CallControl()
    record = attrs.evolve(new_record(), script="keys")
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, EventBus(make_plugin_manager())) as services:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: place_call(services, trunk, record, loaded, control=control)
                )
                leg = await answered(trunk)
                while control._send_dtmf is None:
                    await trio.sleep(0.01)
                await control.send_dtmf("7")
                control.hang_up()
    assert leg.info_digits == ["7"]
    assert not [d for d in leg.datagrams if parse_rtp(d).payload_type != 0]


async def test_digits_signalled_out_of_band_reach_the_script_and_figures_are_filed(
    tmp_path: Path,
) -> None:
    loaded = await load_keys(tmp_path)
    trunk = KeyTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    record = attrs.evolve(new_record(), script="keys")
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, EventBus(make_plugin_manager())) as services:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: place_call(services, trunk, record, loaded))
                leg = await answered(trunk)
                await leg.signal_send.send("5")  # as a SIP INFO would
            stored = await services.storage.get_call(record.id)
    assert (record.status, record.grade) == ("ended", "A")  # the "5" route was taken
    assert [t.node for t in record.turns if t.speaker == "robot"][-1] == "pressed"
    assert record.media_quality is not None and record.media_quality.rtt_ms == 12.5
    assert stored is not None and stored.media_quality == record.media_quality


class EarlyStream:
    """Early media as a trunk hands it over (``waihu.api.EarlyMedia``): RTP from a list."""

    def __init__(self, pcm: np.ndarray) -> None:
        self.codec = Codec("PCMU", 0)
        self.dtmf_payload_type = None
        self.ended = trio.Event()
        encode = codec_functions("PCMU")[0]
        sender = RtpSender(0)
        self._queue = [
            sender.next_packet(encode(pcm[k : k + 160]), 160) for k in range(0, pcm.size, 160)
        ]
        self._queue.insert(3, b"\x00junk")  # damaged: dropped, not fatal

    async def receive_media(self) -> bytes:
        if not self._queue:
            await trio.sleep_forever()
        await trio.sleep(0.001)
        return self._queue.pop(0)


class EarlyTrunk(FakeTrunk):
    """183 with an announcement, then ``fail`` (a status) or an answer."""

    def __init__(self, *args: Any, fail: int | None) -> None:
        super().__init__(*args)
        self.fail = fail
        t = np.arange(RATE) / RATE
        self.announcement = (4000 * np.sin(2 * np.pi * 450 * t)).astype(np.int16)

    async def dial(self, target: str, **options: Any) -> FakeLeg:
        stream = EarlyStream(self.announcement)
        options["on_early_media"](stream)
        while stream._queue:
            await trio.sleep(0.01)
        stream.ended.set()
        if self.fail is not None:
            raise CallFailed(self.fail, "Temporarily Unavailable")
        leg = ShortLeg()
        self.legs.append(leg)
        return leg


class ShortLeg(FakeLeg):
    """An answered call the callee leaves after half a second."""

    async def receive_media(self) -> bytes:
        await trio.sleep(0.5)
        self.callee_hangs_up()
        return await super().receive_media()


def callee_channel(path: str) -> np.ndarray:
    with wave.open(path, "rb") as wav:
        assert wav.getnchannels() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return frames.reshape(-1, 2)[:, 0]


@pytest.mark.parametrize("fail", [480, None])
async def test_early_media_is_recorded_whether_or_not_the_call_is_answered(
    tmp_path: Path, fail: int | None
) -> None:
    loaded = await load_keys(tmp_path, long_seconds=0.2)
    trunk = EarlyTrunk(FakeTrunk.Config(), context(tmp_path, "office"), fail=fail)
    record = attrs.evolve(new_record(), script="keys")
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, EventBus(make_plugin_manager())) as services:
            record = await place_call(services, trunk, record, loaded)
    assert record.recording is not None and Path(record.recording).exists()
    callee = callee_channel(record.recording)
    head = callee[:RATE]
    # the announcement, decoded: loud, and 450 Hz (zero crossings ≈ 900 per second)
    assert np.abs(head).max() > 3000
    crossings = np.count_nonzero(np.diff(np.signbit(head)))
    assert 850 <= crossings <= 950
    if fail is not None:
        assert (record.status, record.sip_status) == ("failed", fail)
        assert callee.size == RATE  # the early media alone
    else:
        assert record.status == "ended" and callee.size > RATE  # then the call itself


def test_early_audio_keeps_only_the_audio_payload_type_up_to_its_limit() -> None:
    stream = EarlyStream(np.zeros(160 * 10, dtype=np.int16))
    audio = EarlyAudio(stream, max_seconds=0.1)  # five packets
    other = RtpSender(101)
    audio.accept(other.next_packet(b"\x05\x0a\x00\xa0", 0))  # a telephone-event
    for datagram in stream._queue:
        audio.accept(datagram)
    assert (audio.packets, audio.seconds) == (5, 0.1)
    assert audio.dropped == 1 + 5 + 1  # junk, beyond the limit, the other payload type
    assert audio.pcm().size == 800


def test_call_show_says_direction_transfer_and_media_figures() -> None:
    record = attrs.evolve(
        new_record(),
        direction="inbound",
        transfer=TransferResult(
            target="sip:1002@pbx", mode="bridge", outcome="agent_busy", status=486,
            detail="agent busy",
        ),
        media_quality=MediaQuality(
            packets_sent=10, packets_received=95, packets_lost=5, loss_fraction=0.05,
            jitter_ms=2.5, rtt_ms=40.0, remote_loss_fraction=0.01,
        ),
    )  # fmt: skip
    text = render_call(record_as_dict(record))
    assert "inbound (the number called us)" in text
    assert "agent_busy to sip:1002@pbx by bridge (sip 486): agent busy" in text
    assert "lost 5 (5.0 %), jitter 2.5 ms; round trip 40 ms; far end lost 1.0 %" in text


async def test_an_operator_hang_up_of_a_ringing_sip_call_cancels_it_and_acks_the_487(
    tmp_path: Path,
) -> None:
    """The real SIP trunk against sipp ringing forever: sipp passes only when it got the
    CANCEL and the ACK for its 487."""
    loaded = await load_keys(tmp_path)
    control = CallControl()
    record = attrs.evolve(new_record(), number="1001", script="keys")
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("no_answer.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as sip:
                async with call_services(tmp_path, EventBus(make_plugin_manager())) as services:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            lambda: place_call(services, sip, record, loaded, control=control)
                        )
                        while record.status != "ringing":
                            await trio.sleep(0.02)
                        control.hang_up()
                    result = await peer.wait()
    result.check()
    assert (record.status, record.sip_status, record.error) == (
        "failed", 487, f"{OPERATOR_HANGUP} while it rang",
    )  # fmt: skip
