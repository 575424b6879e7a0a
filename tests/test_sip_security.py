"""Who may talk to a trunk's SIP port, and how fast: the allowlist and the flood limit.

The strangers are real: sipp runs ``contrib/sipp/knock.xml`` (an OPTIONS, then an
INVITE) as a UAC bound to another loopback address (127.0.0.2 — every 127/8
address is this machine on Linux), and the trunk answers it, stays silent or says
403 as configured. What came back is read from sipp's own message trace. The
flood comes from a plain UDP socket in a child process (``waihu.testing.sip_flood``), since
no SIP tool sends garbage-fast on purpose; the call it must not disturb is a
real sipp callee echoing our RTP.

The guard's arithmetic (token buckets, LRU bounds, log rate limit) is tested
without sockets on ``SipGuard`` directly, with the time passed in.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from waihu.testing.peer_process import free_udp_port, running_peer
from waihu.testing.sipp import SCENARIOS, SIPP, UdpPeer, render_scenario, sipp_peer
from waihu_sip.config import SipTrunkConfig
from waihu_sip.guard import (
    LOG_EVERY,
    REJECT_BURST,
    SHARED_BURST,
    SipGuard,
    TokenBucket,
    parse_allow_entry,
)
from waihu_sip.message import Headers, SipRequest, make_response
from waihu_sip.trunk import ALLOW_FIRST_REFRESH, ALLOW_REFRESH, SipTrunk

from sip_harness import LOGGER, dialling, running_trunk

REAL_TIME_LIMIT = 60  # seconds per real-time test; generous, the machine is shared
STRANGER = "127.0.0.2"  # a loopback address that is not the trunk's proxy
FLOODER = "127.0.0.3"
KNOCK_WAIT_MS = 1500  # how long knock.xml waits for each answer
RESPONSE_LINE = re.compile(r"^SIP/2\.0 (\d{3}) ", re.MULTILINE)
RTP_HEADER = 12
PCMU_FRAME = 160


async def knock(
    tmp_path: Path, trunk: SipTrunk, *, source: str = STRANGER, expect: tuple[int, int] = (0, 0)
) -> list[int]:
    """Run knock.xml from ``source`` against ``trunk``, expecting the answers ``expect`` (to
    OPTIONS and INVITE; 0: none); the statuses sipp received, in order."""
    assert trunk.local_address is not None
    workdir = tmp_path / f"knock-{free_udp_port()}"
    workdir.mkdir()
    scenario = workdir / "knock.xml"
    keys = {
        "wait_ms": str(KNOCK_WAIT_MS),
        "options_status": str(expect[0] or 200),
        "invite_status": str(expect[1] or 480),
    }
    scenario.write_text(render_scenario((SCENARIOS / "knock.xml").read_text(), keys))
    args = [
        SIPP, f"127.0.0.1:{trunk.local_address[1]}", "-sf", str(scenario),
        "-i", source, "-p", str(free_udp_port(source)), "-s", "1001",
        "-ci", source, "-cp", str(free_udp_port(source)),
        "-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error",
        "-trace_msg", "-message_file", str(workdir / "messages.log"),
        "-trace_err", "-error_file", str(workdir / "errors.log"),
    ]  # fmt: skip
    async with running_peer(
        args, cwd=workdir, stdout=workdir / "stdout.txt", stop_grace=2.0
    ) as process:
        returncode = await process.wait()
    log = (workdir / "messages.log").read_text(errors="replace")
    assert returncode == 0, f"sipp exited {returncode}\n{log[-4000:]}"
    return [int(status) for status in RESPONSE_LINE.findall(log)]


# ─────────────── the allowlist against a real stranger ───────────────


async def test_a_stranger_gets_no_answer_at_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with trio.fail_after(REAL_TIME_LIMIT):
        async with running_trunk(tmp_path, proxy="127.0.0.1:5999") as trunk:
            statuses = await knock(tmp_path, trunk)
            counts = trunk.security_counts()
    assert statuses == []
    assert counts.unknown_dropped == 2 and counts.accepted == 0  # OPTIONS and INVITE, unread
    notices = [r for r in caplog.records if STRANGER in r.getMessage()]
    assert len(notices) == 1, [r.getMessage() for r in notices]  # once a minute, not per packet
    assert "not in allow_from" in notices[0].getMessage()


async def test_a_stranger_is_told_403_when_the_trunk_rejects(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with running_trunk(
            tmp_path, proxy="127.0.0.1:5999", unknown_sources="reject"
        ) as trunk:
            statuses = await knock(tmp_path, trunk, expect=(403, 403))
            counts = trunk.security_counts()
    assert statuses == [403, 403]  # OPTIONS and INVITE; the ACK gets nothing, as it must
    assert counts.unknown_rejected == 3 and counts.accepted == 0  # OPTIONS, INVITE, ACK


async def test_an_allowed_network_gets_answers(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with running_trunk(
            tmp_path, proxy="127.0.0.1:5999", allow_from=["127.0.0.2/31"]
        ) as trunk:
            statuses = await knock(tmp_path, trunk, expect=(200, 480))
    assert statuses == [200, 480]  # OPTIONS answered; no inbound calls taken: 480


async def test_the_proxy_is_always_allowed(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with running_trunk(tmp_path, proxy=f"{STRANGER}:5999") as trunk:
            statuses = await knock(tmp_path, trunk, expect=(200, 480))
    assert statuses == [200, 480]


async def test_an_allowed_host_name_is_resolved(tmp_path: Path) -> None:
    """``callers.test`` is answered by a resolver of the test's own (a bare Debian root has no
    /etc/hosts, so not even localhost resolves there); the trunk resolves it through trio."""
    resolver = ChangingResolver()
    resolver.answers["callers.test"] = ["127.0.0.1"]
    trio.socket.set_custom_hostname_resolver(resolver)
    try:
        with trio.fail_after(REAL_TIME_LIMIT):
            async with running_trunk(
                tmp_path, proxy=f"{STRANGER}:5999", allow_from=["callers.test"]
            ) as trunk:
                statuses = await knock(tmp_path, trunk, source="127.0.0.1", expect=(200, 480))
    finally:
        trio.socket.set_custom_hostname_resolver(None)
    assert statuses == [200, 480]


class ChangingResolver(trio.abc.HostnameResolver):
    """DNS whose answer for ``pbx.test`` changes when the test says so (no name server here
    can be made to do that). Numeric hosts never reach it: trio resolves them itself."""

    def __init__(self) -> None:
        self.answers = {"pbx.test": ["192.0.2.1"]}

    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,  # the name is trio's
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[str, int]]]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", (a, int(port or 0)))
            for a in self.answers[name]
        ]

    async def getnameinfo(self, sockaddr: tuple[str, int], flags: int) -> tuple[str, str]:
        raise NotImplementedError


async def test_allowed_names_are_resolved_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    resolver = ChangingResolver()
    trio.socket.set_custom_hostname_resolver(resolver)
    with trio.fail_after(10_000):
        async with running_trunk(
            tmp_path, proxy="127.0.0.1:5999", allow_from=["pbx.test", "gone.test"]
        ) as trunk:
            assert trunk.allowed("192.0.2.1") and trunk.allowed("127.0.0.1")
            assert not trunk.allowed("192.0.2.2")
            resolver.answers["pbx.test"] = ["192.0.2.2", "192.0.2.3"]
            await trio.sleep(ALLOW_FIRST_REFRESH + 1)
            assert trunk.allowed("192.0.2.2") and trunk.allowed("192.0.2.3")
            assert not trunk.allowed("192.0.2.1")
            del resolver.answers["pbx.test"]  # stops resolving: keeps its last addresses
            await trio.sleep(ALLOW_REFRESH)
            assert trunk.allowed("192.0.2.2")


async def test_a_far_end_that_did_not_record_route_may_send_its_bye(tmp_path: Path) -> None:
    """The proxy is a UdpPeer on 127.0.0.1 answering for a callee whose Contact is another
    UdpPeer on 127.0.0.2 and adding no Record-Route, so the callee's BYE comes straight from
    127.0.0.2 (sipp cannot answer from one address and talk from another). The address is
    allowed while the call lives, and no longer after."""
    proxy, callee = UdpPeer(), UdpPeer(STRANGER)
    with trio.fail_after(REAL_TIME_LIMIT), proxy.sock, callee.sock:
        await callee.bind()
        async with running_trunk(tmp_path, proxy=await proxy.bind()) as trunk:
            assert not trunk.allowed(STRANGER)
            async with dialling(trunk) as outcome:
                invite, source, _ = await proxy.receive_request()
                ok = make_response(
                    invite, 200, to_tag="callee1",
                    extra=[("Contact", f"<sip:callee@{callee.address()}>"),
                           ("Content-Type", "application/sdp")],
                    body=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                    b"t=0 0\r\nm=audio 40000 RTP/AVP 0\r\n",
                )  # fmt: skip
                await proxy.send(ok, source)
                await callee.receive_request()  # the ACK comes straight to the Contact
            leg = outcome.leg
            assert leg is not None and trunk.allowed(STRANGER)
            bye = SipRequest(
                headers=Headers(
                    [
                        ("Via", f"SIP/2.0/UDP {callee.address()};branch=z9hG4bKbye1"),
                        ("From", f"{invite.headers.get('To')};tag=callee1"),
                        ("To", invite.headers.get("From") or ""),
                        ("Call-ID", invite.call_id),
                        ("CSeq", "1 BYE"),
                        ("Max-Forwards", "70"),
                    ]
                ),
                body=b"",
                method="BYE",
                uri=f"sip:waihu@127.0.0.1:{trunk.local_address[1]}",  # type: ignore[index]
            )
            await callee.send(bye, trunk.local_address)  # type: ignore[arg-type]
            assert (await callee.receive_response()).status == 200
            assert leg.ended.is_set() and leg.ended_by == "callee"
            assert not trunk.allowed(STRANGER)  # the call is over


# ─────────────── a flood while a call talks ───────────────

FLOOD_DATAGRAMS = 20_000
FLOOD_RATE = 50
FLOOD_BURST = 100


def rtp_packet(seq: int) -> bytes:
    """A PCMU RTP packet of our stream (SSRC 0x1234)."""
    header = bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * PCMU_FRAME).to_bytes(4, "big")
    return header + b"\x00\x00\x12\x34" + bytes(PCMU_FRAME)


async def test_a_flood_from_an_allowed_source_is_shed_and_the_call_goes_on(
    tmp_path: Path,
) -> None:
    """20,000 OPTIONS as fast as a child process can send them, from an address the trunk
    allows, while a call echoes RTP: the guard drops all but a burst plus the rate, and
    the call's media keeps flowing both ways. Not timed: counts only."""
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("answer.xml", tmp_path, rtp_echo=True) as peer:
            async with running_trunk(
                tmp_path,
                proxy=peer.hostport,
                allow_from=[FLOODER],
                flood_rate=FLOOD_RATE,
                flood_burst=FLOOD_BURST,
            ) as trunk:
                leg = await trunk.dial(peer.uri("echo"))
                assert trunk.local_address is not None
                echoed = 0
                seq = 0

                async def talk(until: trio.Event) -> None:
                    nonlocal echoed, seq
                    while not until.is_set():
                        leg.send_media(rtp_packet(seq))
                        seq += 1
                        await trio.sleep(0.02)

                async def listen() -> None:
                    nonlocal echoed
                    while True:
                        await leg.receive_media()
                        echoed += 1

                done = trio.Event()
                before = trunk.security_counts().accepted
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(talk, done)
                    nursery.start_soon(listen)
                    started = trio.current_time()
                    await trio.run_process(
                        [sys.executable, "-m", "waihu.testing.sip_flood", "127.0.0.1",
                         str(trunk.local_address[1]), FLOODER, str(FLOOD_DATAGRAMS)],
                        stdout=subprocess.DEVNULL,
                    )  # fmt: skip
                    lasted = trio.current_time() - started + 1.0  # + the last datagrams' way
                    after_flood = echoed
                    while echoed < after_flood + 25:  # half a second more of audio comes back
                        await trio.sleep(0.02)
                    done.set()
                    nursery.cancel_scope.cancel()
                counts = attrs.evolve(trunk.security_counts())
                assert not leg.ended.is_set()
                await leg.hangup()
                result = await peer.wait()
    result.check()  # the BYE went out and was answered during/after the flood
    # The kernel drops part of the flood when the socket buffer is full; of what arrived, no
    # more than the burst plus the rate over the time it lasted got through (the call's own
    # few messages come from another address with a bucket of its own).
    let_through = counts.accepted - before
    assert counts.flood_dropped > 0
    assert let_through <= FLOOD_BURST + FLOOD_RATE * lasted
    assert counts.flood_dropped + let_through <= FLOOD_DATAGRAMS


# ─────────────── the guard itself, no sockets ───────────────


def make_guard(**kw: object) -> SipGuard:
    options: dict = {"flood_rate": 10.0, "flood_burst": 5.0, "log": logging.getLogger(LOGGER)}
    options.update(kw)
    return SipGuard(**options)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket.full(rate=10.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True  # one token after 0.1 s at 10/s
    assert bucket.take(0.1) is False
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_unknown_sources_are_dropped_and_allowed_ones_accepted() -> None:
    guard = make_guard(networks=[ipaddress.ip_network("10.1.0.0/16")])
    guard.set_resolved(["192.0.2.7"])
    assert guard.admit(("10.1.2.3", 5060), 0.0) == "accept"
    assert guard.admit(("192.0.2.7", 7), 0.0) == "accept"
    assert guard.admit(("10.2.0.1", 5060), 0.0) == "drop"
    assert guard.admit(("192.0.2.8", 5060), 0.0) == "drop"
    assert guard.counts.accepted == 2 and guard.counts.unknown_dropped == 2


def test_re_resolution_replaces_the_allowed_addresses() -> None:
    guard = make_guard()
    guard.set_resolved(["192.0.2.7"])
    assert guard.admit(("192.0.2.7", 1), 0.0) == "accept"
    guard.set_resolved(["192.0.2.9"])
    assert guard.admit(("192.0.2.7", 1), 0.0) == "drop"
    assert guard.admit(("192.0.2.9", 1), 0.0) == "accept"


def test_an_allowed_source_over_the_rate_is_dropped_and_others_are_not() -> None:
    guard = make_guard()
    guard.set_resolved(["192.0.2.1", "192.0.2.2"])
    verdicts = [guard.admit(("192.0.2.1", 5060), 0.0) for _ in range(8)]
    assert verdicts == ["accept"] * 5 + ["drop"] * 3
    assert guard.admit(("192.0.2.2", 5060), 0.0) == "accept"  # its own bucket
    assert guard.admit(("192.0.2.1", 5060), 0.1) == "accept"  # refilled one token
    assert guard.counts.flood_dropped == 3


def test_allowed_networks_share_one_budget_and_the_proxy_does_not_spend_it() -> None:
    guard = make_guard(networks=[ipaddress.ip_network("10.0.0.0/8")], flood_burst=1000.0)
    guard.set_resolved(["192.0.2.1"], peers=["192.0.2.1"])
    verdicts = [guard.admit((f"10.0.{i // 250}.{i % 250}", 5060), 0.0) for i in range(2500)]
    assert verdicts.count("accept") == SHARED_BURST  # many sources, one budget
    assert guard.admit(("192.0.2.1", 5060), 0.0) == "accept"  # the proxy is not in it
    assert guard.admit(("10.0.0.1", 5060), 1.0) == "accept"  # refilled at SHARED_RATE
    assert guard.counts.flood_dropped == 2500 - SHARED_BURST


def test_rejections_are_limited_per_source_and_in_total() -> None:
    guard = make_guard(unknown_sources="reject", flood_burst=1000.0)
    verdicts = [guard.admit((f"198.51.100.{i % 200}", 5060), 0.0) for i in range(400)]
    assert verdicts.count("reject") == REJECT_BURST  # no more 403s than the total budget
    assert verdicts.count("drop") == 400 - REJECT_BURST


def test_memory_stays_bounded_under_a_spoofed_flood() -> None:
    guard = make_guard(max_sources=64)
    for i in range(10_000):
        guard.admit((f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 5060), i / 1000)
    assert guard.sources_tracked == 64
    assert len(guard._logged) <= 64 and len(guard._allowed_cache) <= 64


def test_a_refused_source_is_logged_once_a_minute_with_the_count_missed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    guard = make_guard(flood_burst=1000.0)
    for t in range(100):
        guard.admit(("203.0.113.5", 5060), t / 10)  # 10 s of knocking
    guard.admit(("203.0.113.5", 5060), LOG_EVERY + 1)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "203.0.113.5" in messages[0] and "not in allow_from" in messages[0]
    assert "(99 more since the last notice)" in messages[1]


def test_allow_from_entries() -> None:
    assert parse_allow_entry("10.0.0.0/8") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_allow_entry("192.0.2.1") == ipaddress.ip_network("192.0.2.1/32")
    assert parse_allow_entry("sbc.example.net") is None
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/8, not"):
        parse_allow_entry("10.0.0.1/8")
    with pytest.raises(ValueError):
        parse_allow_entry("300.1.2.3")


def test_config_keys_are_validated() -> None:
    cfg = SipTrunkConfig(proxy="sbc.example.net", allow_from=["10.0.0.0/8", "pbx.example.net"])
    assert cfg.unknown_sources == "drop" and cfg.rtcp is True
    for bad, key in (
        ({"allow_from": ["10.0.0.1/8"]}, "allow_from"),
        ({"allow_from": "10.0.0.0/8"}, "allow_from"),
        ({"unknown_sources": "ignore"}, "unknown_sources"),
        ({"flood_rate": 0}, "flood_rate"),
        ({"flood_burst": 0.5}, "flood_burst"),
    ):
        with pytest.raises(ValueError, match=f"^{key}: "):
            SipTrunkConfig(proxy="sbc.example.net", **bad)


async def test_the_response_cache_is_bounded_whatever_gets_past_the_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Final answers kept for retransmissions (32 s) stop at ``MAX_ANSWERED``: the oldest go."""
    import logging as _logging

    from waihu_sip import transport as transport_module
    from waihu_sip.message import make_response, parse_message

    monkeypatch.setattr(transport_module, "MAX_ANSWERED", 3)
    transport = transport_module.SipTransport(host="127.0.0.1", port=0, log=_logging.getLogger("t"))
    await transport.open()
    try:
        for n in range(5):
            options = parse_message(
                f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch="
                f"z9hG4bK{n}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\n"
                f"Call-ID: c{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".encode()
            )
            await transport.respond(options, make_response(options, 200), ("127.0.0.1", 9))
        kept = [key[0] for key in transport._answered]
    finally:
        transport.close()
    assert kept == ["z9hG4bK2", "z9hG4bK3", "z9hG4bK4"]


def test_waihuctl_trunks_says_what_the_guard_turned_away() -> None:
    from waihu.control.render import render_trunks

    row = {"name": "office", "state": "up", "since": None, "lines": 4, "live_calls": 1,
           "registration": None, "detail": "",
           "guard": {"accepted": 90, "unknown_dropped": 7, "unknown_rejected": 2,
                     "flood_dropped": 1200}}  # fmt: skip
    text = render_trunks([row])
    assert "9 from unknown sources refused, 1200 over the flood limit dropped" in text
    quiet = render_trunks([{**row, "guard": {"accepted": 5}}])
    assert "refused" not in quiet and "flood" not in quiet
