"""End to end with other real SIP peers than sipp: a baresip callee, and a kamailio proxy.

``tests/test_e2e_calls.py`` drives waihud against sipp, which plays a script.
Here waihud talks to:

- baresip, a softphone with its own SIP stack, jitter buffer and G.711
  codec, answering at once and speaking "네" after the greeting; baresip's
  recorder shows what reached its ear, so the robot's greeting is checked
  at the far end too;
- kamailio, a record-routing proxy between waihud and a sipp callee: the
  dialog's route set must send the ACK and the BYE back through the proxy
  (RFC 3261 §12.1.2, §12.2.1.1), which sipp's log shows by kamailio's Via on
  top of the BYE it received.

Speech is recognised by the real vosk model, every port is a free one on
127.0.0.1, and every peer is stopped when its block ends. Deadlines are
generous: the machine is shared.

Timing: the demo greeting lasts about 6.4 s; a callee who speaks after
``AFTER_GREETING_S`` answers once it has finished.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.testing.baresip import CLOSED_BY_FAR_END, baresip_callee
from waihu.testing.daemon import DaemonUnderTest, running_waihud, write_config
from waihu.testing.kamailio import kamailio_proxy
from waihu.testing.sipp import Play, SippPeer, SippResult, sipp_peer
from waihu.testing.speech import CALL_RATE, synthesize, to_ulaw
from waihu_sip.address import NameAddress, SipUri
from waihu_sip.message import SipRequest, SipResponse, parse_message

pytestmark = pytest.mark.e2e

AFTER_GREETING_S = 7.5
TAIL_S = 30.0  # the baresip callee stays on the line this long after speaking
CALL_TIMEOUT = 60.0
TEST_TIMEOUT = 150.0
GREETING_S = 6  # the first seconds of the call, all greeting
LOG_TAIL = 4000  # characters of waihud's log in a failure report
SPEECH_LEVEL = 500  # mean |sample| of speech at 8 kHz; digital silence is 0
SIPP_SEPARATOR = b"-" * 47  # the line sipp starts each message of its -trace_msg log with


def callee_turns(record: dict) -> list[tuple[str, str | None]]:
    return [(t["text"], t["intent"]) for t in record["turns"] if t["speaker"] == "callee"]


def robot_nodes(record: dict) -> list[str]:
    return [t["node"] for t in record["turns"] if t["speaker"] == "robot"]


def sipp_messages(messages_log: Path, direction: str) -> list[SipRequest | SipResponse]:
    """The SIP messages sipp ``"received"`` or ``"sent"``, parsed from its ``-trace_msg`` log
    (blocks of a dashed line, ``UDP message received [n] bytes :``, a blank line, the message)."""
    messages = []
    # bytes, not text: universal newlines would turn the messages' CRLFs into LFs
    for block in messages_log.read_bytes().split(SIPP_SEPARATOR):
        head, _, message = block.partition(b"\n\n")
        if f"message {direction}".encode() in head:
            messages.append(parse_message(message))
    return messages


class FailureNotes:
    """The peers' logs, attached to whatever fails in the block (as exception notes)."""

    def __init__(self) -> None:
        self._sources: list[Callable[[], str]] = []

    def add(self, source: Callable[[], str]) -> None:
        """Attach what ``source()`` returns, read at failure time."""
        self._sources.append(source)

    @contextmanager
    def attached(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            for source in self._sources:
                exc.add_note(source())
            raise


def waihud_log(daemon: DaemonUnderTest) -> Callable[[], str]:
    return lambda: f"waihud's log ({daemon.log}):\n{daemon.log_text()[-LOG_TAIL:]}"


def sipp_log(peer: SippPeer) -> Callable[[], str]:
    def report() -> str:
        status = peer.process.returncode
        return SippResult(-1 if status is None else status, peer.logs()).report()

    return report


async def test_baresip_callee_says_yes(tmp_path: Path) -> None:
    notes = FailureNotes()
    with notes.attached(), trio.fail_after(TEST_TIMEOUT):
        async with baresip_callee(
            tmp_path,
            speech_wav=synthesize("네"),
            lead_silence_s=AFTER_GREETING_S,
            tail_silence_s=TAIL_S,
        ) as peer:
            notes.add(peer.report)
            config = write_config(tmp_path / "waihud", proxy=peer.hostport)
            async with running_waihud(config) as daemon:
                notes.add(waihud_log(daemon))
                reply = await daemon.request("call", target=peer.uri(), script="demo-ko")
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                assert await daemon.stop() == 0
            closed = await peer.wait_call_closed()
            await peer.stop()  # sndfile's WAV files are complete once baresip is gone
        assert record["status"] == "ended", record
        assert (record["sip_status"], record["hangup_by"], record["grade"]) == (200, "robot", "A")
        assert callee_turns(record) == [("네", "affirm")], record
        assert robot_nodes(record) == ["greeting", "bye_interested"], record
        assert closed == CLOSED_BY_FAR_END  # baresip took the robot's BYE
        # the greeting reached baresip's ear: the first seconds it heard are speech, while
        # all it said then was digital silence
        heard, said = peer.heard(), peer.said()
        greeting = slice(0, GREETING_S * CALL_RATE)
        assert len(heard) >= GREETING_S * CALL_RATE
        assert np.abs(said[greeting]).max() == 0
        assert np.abs(heard[greeting].astype(float)).mean() > SPEECH_LEVEL


async def test_call_through_a_record_routing_proxy(tmp_path: Path) -> None:
    yes = to_ulaw(synthesize("네"), tmp_path / "yes.ul")
    notes = FailureNotes()
    with notes.attached(), trio.fail_after(TEST_TIMEOUT):
        async with sipp_peer(
            "answer.xml",
            tmp_path,
            plays=[Play(int(AFTER_GREETING_S * 1000), yes)],
            timeout=CALL_TIMEOUT,
        ) as callee:
            notes.add(sipp_log(callee))
            async with kamailio_proxy(tmp_path, next_hop=callee.hostport) as proxy:
                notes.add(proxy.report)
                config = write_config(tmp_path / "waihud", proxy=proxy.hostport)
                async with running_waihud(config) as daemon:
                    notes.add(waihud_log(daemon))
                    reply = await daemon.request("call", target="1001", script="demo-ko")
                    record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                    result = await callee.wait()
                    assert await daemon.stop() == 0
        result.check()
        assert record["status"] == "ended", record
        assert (record["sip_status"], record["hangup_by"], record["grade"]) == (200, "robot", "A")
        assert callee_turns(record) == [("네", "affirm")], record

        # the callee put the proxy's Record-Route in its 2xx ...
        messages_log = callee.workdir / "messages.log"
        answer = next(
            m
            for m in sipp_messages(messages_log, "sent")
            if isinstance(m, SipResponse) and m.status == 200 and m.cseq.method == "INVITE"
        )
        record_route = [NameAddress.parse(v).uri for v in answer.headers.get_all("Record-Route")]
        assert [(uri.host, uri.port, uri.loose_route) for uri in record_route] == [
            (proxy.host, proxy.port, True)
        ]
        # ... so the robot sent its ACK and BYE to the proxy, which relayed them to the callee
        # (a retransmission on a busy machine is the same request again: count each method once)
        assert list(dict.fromkeys(proxy.methods_seen())) == ["INVITE", "ACK", "BYE"]
        received = sipp_messages(messages_log, "received")
        bye = next(m for m in received if isinstance(m, SipRequest) and m.method == "BYE")
        robot = proxy.requests()[0].source  # where waihud's INVITE came from
        # relayed by the proxy, sent by waihud
        assert [f"{via.host}:{via.port}" for via in bye.vias] == [proxy.hostport, robot]
        assert bye.headers.get_all("Route") == []  # the proxy took its own Route off
        # loose routing: the Request-URI is the callee's Contact, not the proxy
        contact = NameAddress.parse(answer.headers.get("Contact") or "").uri
        target = SipUri.parse(bye.uri)
        assert (target.user, target.host, target.port) == (contact.user, contact.host, contact.port)
