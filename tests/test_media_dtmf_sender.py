"""Sending DTMF as RFC 4733 telephone-events in the call's own RTP stream.

The unit tests read what ``DtmfSender`` produced back with the same parsers the
receive side uses; the last test sends digits through ``CallMedia`` over a real
UDP socket pair while a prompt plays, and reads them on the far end's socket.
"""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing
from test_media_call_media import DTMF_PT, PCMU, SPF, Call, make_pair, run_call

from waihu.media.call_media import CallMedia
from waihu.media.dtmf_sender import END_REPEATS, DtmfSender
from waihu.media.endpointer import Endpointer
from waihu.media.rtp import RtpPacket, RtpSender, parse_rtp
from waihu.media.telephone_event import parse_telephone_event


def frames(sender: DtmfSender, rtp: RtpSender, count: int) -> list[list[RtpPacket] | None]:
    """``count`` frames of what the sender puts out (None: audio goes out that frame);
    an audio frame still advances the stream as the tick would."""
    out: list[list[RtpPacket] | None] = []
    for _ in range(count):
        packet = sender.next_frame(rtp)
        if packet is None:
            rtp.next_packet(b"\xff" * SPF, SPF)
            out.append(None)
        else:
            out.append([parse_rtp(d) for d in packet.datagrams])
    return out


def test_a_digit_is_five_reports_with_one_timestamp_then_three_ends_then_a_gap() -> None:
    sender = DtmfSender(DTMF_PT, SPF, 8000)
    rtp = RtpSender(0, ssrc=7, sequence=100, timestamp=5000)
    done = sender.queue("5")
    out = frames(sender, rtp, 12)
    tone = [f for f in out[:5]]
    assert all(f is not None for f in tone)
    reports = [p for f in tone for p in f]  # type: ignore[union-attr]
    assert [p.payload_type for p in reports] == [DTMF_PT] * (4 + END_REPEATS)
    assert {p.timestamp for p in reports} == {5000}  # the event's first frame
    assert {p.ssrc for p in reports} == {7}
    assert [p.sequence for p in reports] == list(range(100, 100 + 4 + END_REPEATS))
    assert [p.marker for p in reports] == [True] + [False] * (3 + END_REPEATS)
    events = [parse_telephone_event(p.payload) for p in reports]
    assert {e.event for e in events} == {5}
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * END_REPEATS
    assert done.is_set()
    assert out[5:10] == [None] * 5  # the gap: audio again
    assert rtp.timestamp == 5000 + 12 * SPF  # the clock ran on through the digit
    assert rtp.sequence == 100 + 4 + END_REPEATS + 7
    assert not sender.busy


def test_digits_follow_each_other_after_the_gap_and_wait_is_for_the_last() -> None:
    sender = DtmfSender(DTMF_PT, SPF, 8000, tone_ms=60, gap_ms=40)
    rtp = RtpSender(0, timestamp=0)
    done = sender.queue("1#d")
    out = frames(sender, rtp, 3 + 2 + 3 + 2 + 2)
    assert not done.is_set()
    out += frames(sender, rtp, 1)
    assert done.is_set()
    starts = [
        (f[0].timestamp, parse_telephone_event(f[0].payload).event)
        for f in out
        if f is not None and f[0].marker
    ]
    assert starts == [(0, 1), (5 * SPF, 11), (10 * SPF, 15)]  # '#' is 11, 'D' is 15


@pytest.mark.parametrize("digits", ["12x", "", "١"])
def test_a_character_that_is_not_a_digit_is_refused_and_nothing_is_queued(digits: str) -> None:
    sender = DtmfSender(DTMF_PT, SPF, 8000)
    with pytest.raises(ValueError, match=r"not a DTMF digit|no digits"):
        sender.queue(digits)
    assert not sender.busy
    assert sender.next_frame(RtpSender(0)) is None


def test_cancel_releases_the_waiters() -> None:
    sender = DtmfSender(DTMF_PT, SPF, 8000)
    done = sender.queue("123")
    frames(sender, RtpSender(0), 2)
    sender.cancel()
    assert done.is_set() and not sender.busy


async def test_call_media_sends_digits_in_its_stream_and_the_prompt_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        leg, far = await make_pair(PCMU)
        media = CallMedia(leg, endpointer=Endpointer())
        prompt = np.full(SPF * 20, 3000, dtype=np.int16)  # 0.4 s of a loud constant

        async def scenario(call: Call) -> None:
            media.player.play(prompt)
            await trio.sleep(0.1)
            await media.send_dtmf("9").wait()
            await trio.sleep(0.8)

        await run_call(media, far, scenario)
    packets = [p for _, p in far.received]
    assert len({p.ssrc for p in packets}) == 1
    sequences = [p.sequence for p in packets]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    events = [parse_telephone_event(p.payload) for p in packets if p.payload_type == DTMF_PT]
    assert [e.event for e in events if e.end] == [9] * END_REPEATS
    loud = [p for p in packets if p.payload_type == 0 and len(set(p.payload)) == 1
            and p.payload[0] != 0xFF]  # fmt: skip
    assert len(loud) == 20  # every frame of the prompt went out, none lost to the digit
    assert media.stats.dtmf_sent == 1


async def test_call_media_without_telephone_event_refuses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    leg, _far = await make_pair(PCMU)
    leg.dtmf_payload_type = None
    media = CallMedia(leg, endpointer=Endpointer())
    with pytest.raises(RuntimeError, match="no telephone-events"):
        media.send_dtmf("1")
