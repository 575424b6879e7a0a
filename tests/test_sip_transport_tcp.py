"""SIP over TCP: framing by Content-Length, calls to sipp over TCP, one connection reused,
reconnecting, requests on connections the far end opened, keep-alives.

The far ends: sipp with ``-t t1`` for calls; for what no SIP peer does on
demand (split a message across writes, send two in one write, leave out
Content-Length, send a CRLFCRLF keep-alive, close a connection after one
answer) a hand-driven TCP socket (``TcpPeer``, or a bare listener), as the
tests say. Everything runs on 127.0.0.1 with real sockets.
"""

from __future__ import annotations

import logging
import socket
import struct
from pathlib import Path

import pytest
import trio
import trio.testing

from waihu.api import CallFailed
from waihu_sip.message import Headers, SipRequest, SipResponse, make_response, parse_message
from waihu_sip.stream import FramingError, StreamFramer
from waihu_sip.transport import INBOUND_IDLE_TIMEOUT, SipTransport
from waihu_sip.trunk import SipTrunk

from sip_harness import LOGGER, running_trunk
from transport_harness import TcpPeer, sipp_tcp

REAL_TIME_LIMIT = 60  # seconds per real-time test; generous, the machine is shared


def options(peer_address: str, *, branch: str = "z9hG4bKtcp1", cseq: int = 1) -> SipRequest:
    """An OPTIONS from a TCP peer at ``peer_address`` to the trunk."""
    headers = Headers(
        [
            ("Via", f"SIP/2.0/TCP {peer_address};branch={branch};rport"),
            ("From", f"<sip:peer@{peer_address}>;tag=p{cseq}"),
            ("To", "<sip:waihu@127.0.0.1>"),
            ("Call-ID", f"tcp-call-{branch}"),
            ("CSeq", f"{cseq} OPTIONS"),
            ("Max-Forwards", "70"),
        ]
    )
    return SipRequest(headers=headers, body=b"", method="OPTIONS", uri="sip:waihu@127.0.0.1")


def trunk_address(trunk: SipTrunk) -> tuple[str, int]:
    assert trunk.local_address is not None
    return trunk.local_address


# ───────────────────────── framing (sans-IO) ─────────────────────────


def test_two_messages_in_one_read_and_one_over_many() -> None:
    first = options("10.0.0.1:5060", branch="z9hG4bKa").to_bytes()
    second = options("10.0.0.1:5060", branch="z9hG4bKb").to_bytes()
    framer = StreamFramer()
    assert list(framer.feed(first + second)) == [first, second]
    third = b"INVITE sip:a@b SIP/2.0\r\nl: 5\r\nVia: x\r\n\r\nhello" + first[:10]
    got: list[bytes | str] = []
    for i in range(len(third)):
        got.extend(framer.feed(third[i : i + 1]))
    assert got == [third[:-10]]  # compact "l:" is Content-Length; the body is whole
    assert framer.pending == 10  # the start of the next message waits for the rest
    assert list(framer.feed(first[10:])) == [first]


def test_keepalive_ping_between_messages_and_pongs_skipped() -> None:
    message = options("10.0.0.1:5060").to_bytes()
    framer = StreamFramer()
    assert list(framer.feed(b"\r\n\r\n" + message + b"\r\n" + message)) == [
        "ping",
        message,
        message,
    ]
    assert list(framer.feed(b"\r\n")) == []  # maybe half a ping: wait
    assert list(framer.feed(b"\r\n")) == ["ping"]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", "without Content-Length"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 9x\r\n\r\n", "bad Content-Length"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999\r\n\r\n", "exceeds"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 70000, "no end of headers"),
    ],
)
def test_framing_errors(data: bytes, problem: str) -> None:
    with pytest.raises(FramingError, match=problem):
        list(StreamFramer().feed(data))


# ───────────────────────── calls over TCP (sipp -t t1) ─────────────────────────


async def test_two_calls_over_tcp_share_one_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_tcp("answer.xml", tmp_path, extra_args=["-m", "2"]) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport, transport="tcp") as trunk:
                for _ in range(2):
                    leg = await trunk.dial("1001")
                    assert leg.codec.name == "PCMU"
                    await leg.hangup()
                    await leg.ended.wait()
                # sipp fails calls whose connection closes while it lingers after the BYE
                assert await peer.wait() == 0, peer.report()
    trace = peer.messages()
    assert trace.count("INVITE sip:1001@") == 2
    assert "Via: SIP/2.0/TCP 127.0.0.1:" in trace
    assert ";transport=tcp>" in trace  # our Contact: in-dialog requests come over TCP too
    assert trace.count("BYE sip:") == 2
    opened = [r for r in caplog.records if "TCP connection to" in r.getMessage()]
    assert len(opened) == 1, [r.getMessage() for r in opened]  # reused for both calls


async def test_failed_call_over_tcp_acks_on_the_connection(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_tcp("busy.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport, transport="tcp") as trunk:
                with pytest.raises(CallFailed) as failure:
                    await trunk.dial("1001")
                assert failure.value.status == 486
                assert await peer.wait() == 0, peer.report()  # the ACK came


async def test_a_closed_connection_is_opened_again(tmp_path: Path) -> None:
    """The proxy is a bare TCP listener that answers one OPTIONS per connection and then
    closes it (no SIP peer closes on demand); the trunk's probes must open a new one."""
    with trio.fail_after(REAL_TIME_LIMIT):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        async with running_trunk(
            tmp_path, proxy=f"127.0.0.1:{port}", transport="tcp", probe_interval=1
        ) as trunk:
            sources = []
            for _ in range(2):
                peer = TcpPeer(await listener.accept())
                probe = await peer.receive()
                assert isinstance(probe, SipRequest) and probe.method == "OPTIONS"
                assert probe.top_via.transport == "TCP"
                sources.append(peer.stream.socket.getpeername())
                await peer.send(make_response(probe, 200, to_tag="x").to_bytes())
                await peer.aclose()
            assert sources[0] != sources[1]  # a second connection, from a new port
            with trio.fail_after(5):
                while trunk.status().state != "reachable":
                    await trio.sleep(0.05)
        await listener.aclose()


# ───────────────────────── the far end's connections ─────────────────────────


async def test_requests_on_the_far_ends_connection_are_answered_on_it(tmp_path: Path) -> None:
    """The far end is a hand-driven TCP socket: two requests in one write, then one written a
    few bytes at a time, each answered on the same connection."""
    with trio.fail_after(REAL_TIME_LIMIT):
        async with running_trunk(tmp_path, proxy="127.0.0.1:9", transport="tcp") as trunk:
            peer = await TcpPeer.connect(trunk_address(trunk))
            one = options(peer.address, branch="z9hG4bKone", cseq=1).to_bytes()
            two = options(peer.address, branch="z9hG4bKtwo", cseq=2).to_bytes()
            await peer.send(one + two)
            answers = [await peer.receive(), await peer.receive()]
            assert [a.cseq.number for a in answers] == [1, 2]
            assert all(isinstance(a, SipResponse) and a.status == 200 for a in answers)
            three = options(peer.address, branch="z9hG4bKthree", cseq=3).to_bytes()
            for start in range(0, len(three), 7):
                await peer.send(three[start : start + 7])
                await trio.sleep(0.001)
            answer = await peer.receive()
            assert isinstance(answer, SipResponse) and answer.cseq.number == 3
            via = answer.top_via
            port = int(peer.address.rsplit(":", 1)[1])
            assert via.params.get("rport") == str(port)  # RFC 3581 on TCP as on UDP
            await peer.aclose()


async def test_keepalive_ping_is_answered_with_a_pong(tmp_path: Path) -> None:
    """The far end is a hand-driven TCP socket sending RFC 5626 CRLFCRLF pings."""
    with trio.fail_after(REAL_TIME_LIMIT):
        async with running_trunk(tmp_path, proxy="127.0.0.1:9", transport="tcp") as trunk:
            peer = await TcpPeer.connect(trunk_address(trunk))
            await peer.send(b"\r\n\r\n")
            assert await peer.receive_raw() == b"\r\n"
            await peer.send(b"\r\n\r\n" + options(peer.address).to_bytes())
            got = b""
            while b"SIP/2.0 200" not in got or not got.endswith(b"\r\n\r\n"):
                got += await peer.receive_raw()
            assert got.startswith(b"\r\nSIP/2.0 200")  # the pong first, then the answer
            await peer.aclose()


async def test_message_without_content_length_closes_the_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The far end is a hand-driven TCP socket sending a message no SIP stack would."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with trio.fail_after(REAL_TIME_LIMIT):
        async with running_trunk(tmp_path, proxy="127.0.0.1:9", transport="tcp") as trunk:
            peer = await TcpPeer.connect(trunk_address(trunk))
            data = options(peer.address).to_bytes().replace(b"Content-Length: 0\r\n", b"")
            await peer.send(data)
            assert await peer.receive_raw() == b""  # closed, nothing answered
            await peer.aclose()
            # the trunk still takes connections and answers on them
            again = await TcpPeer.connect(trunk_address(trunk))
            await again.send(options(again.address).to_bytes())
            answer = await again.receive()
            assert isinstance(answer, SipResponse) and answer.status == 200
            await again.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without Content-Length" in w and "closing connection" in w for w in warnings)


async def test_udp_trunk_is_unreliable_and_tcp_reliable(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        for transport, name, reliable in (("udp", "UDP", False), ("tcp", "TCP", True)):
            async with running_trunk(tmp_path, proxy="127.0.0.1:9", transport=transport) as trunk:
                sip_transport = trunk._transport
                assert sip_transport is not None
                assert (sip_transport.name, sip_transport.reliable) == (name, reliable)


def test_parse_of_framed_message_round_trips() -> None:
    data = options("10.0.0.1:5060").to_bytes()
    (frame,) = StreamFramer().feed(data)
    assert isinstance(frame, bytes)
    assert parse_message(frame).to_bytes() == data


async def test_answer_after_the_connection_closed_goes_to_the_via_port() -> None:
    """RFC 3261 §18.2.2. The far end is a hand-driven TCP socket that sends a request and
    closes the connection before the answer is ready, and a listener on its Via port; the
    handler is the test's, answering from another task once the connection is gone."""
    with trio.fail_after(REAL_TIME_LIMIT):
        transport = SipTransport(
            host="127.0.0.1", port=0, log=logging.getLogger(LOGGER), protocol="tcp"
        )
        await transport.open()
        closed = trio.Event()

        async def answer_later(request: SipRequest, source: tuple[str, int]) -> None:
            await closed.wait()
            await transport.respond(request, make_response(request, 200, to_tag="t"), source)

        async def on_request(request: SipRequest, source: tuple[str, int]) -> None:
            nursery.start_soon(answer_later, request, source)  # as an INVITE server would

        home = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        home_port = home.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.serve, on_request)
            peer = await TcpPeer.connect(transport.local_address)
            await peer.send(options(f"127.0.0.1:{home_port}").to_bytes())
            remote = ("127.0.0.1", int(peer.address.rsplit(":", 1)[1]))
            await peer.aclose()
            with trio.fail_after(5):
                while transport.connected(remote):
                    await trio.sleep(0.01)  # until the transport has seen the close
            closed.set()
            back = TcpPeer(await home.accept())
            answer = await back.receive()
            assert isinstance(answer, SipResponse) and answer.status == 200
            await back.aclose()
            transport.close()
        await home.aclose()


async def test_a_silent_connection_from_the_far_end_is_closed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The far end is a hand-driven TCP socket that connects and says nothing; time is
    virtual. A keep-alive before the limit keeps the connection."""
    with trio.fail_after(INBOUND_IDLE_TIMEOUT * 3):
        async with running_trunk(tmp_path, proxy="127.0.0.1:9", transport="tcp") as trunk:
            peer = await TcpPeer.connect(trunk_address(trunk))
            await trio.sleep(INBOUND_IDLE_TIMEOUT * 0.9)
            await peer.send(b"\r\n\r\n")
            assert await peer.receive_raw() == b"\r\n"  # still open after 0.9 of the limit
            opened = trio.current_time()
            assert await peer.receive_raw() == b""
            assert trio.current_time() - opened >= INBOUND_IDLE_TIMEOUT
            await peer.aclose()


async def test_a_send_on_a_connection_reset_under_it_goes_on_a_new_one() -> None:
    """The far end is a bare listener that resets the first connection (SO_LINGER 0) before
    the transport has read from it (it is not serving: nothing reads), then takes a second."""
    with trio.fail_after(REAL_TIME_LIMIT):
        transport = SipTransport(
            host="127.0.0.1", port=0, log=logging.getLogger(LOGGER), protocol="tcp"
        )
        await transport.open()
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        destination = ("127.0.0.1", listener.socket.getsockname()[1])
        first = options("127.0.0.1:1", branch="z9hG4bKfirst").to_bytes()
        await transport.send_bytes(first, destination)
        reset = await listener.accept()
        reset.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.socket.close()
        await trio.sleep(0.05)  # the reset reaches the transport's socket
        second = options("127.0.0.1:1", branch="z9hG4bKsecond").to_bytes()
        await transport.send_bytes(second, destination)
        peer = TcpPeer(await listener.accept())
        assert await peer.receive_frame() == second
        await peer.aclose()
        transport.close()
        await listener.aclose()
