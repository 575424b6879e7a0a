"""The INVITE client done right: unusable answers, forks, digest rounds, CANCEL, early media,
PRACK and target refresh, against real peers on 127.0.0.1.

sipp plays the far end where a scenario can say it (ringing until CANCEL,
several calls at once, early media with RTP, reliable provisionals, a
re-INVITE with a new Contact). Where a test needs what sipp cannot do on
demand — two 200s with different To tags, a realm that is not UTF-8, a
challenge answered by recomputing the digest, an SDP with a bad number — the
far end is ``UdpPeer``, a plain UDP socket the test scripts message by
message, and the test says so.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from pathlib import Path

import pytest
import trio

from waihu.api import CallFailed, TrunkError
from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import UdpPeer, free_udp_port, sipp_peer
from waihu_sip.digest import parse_auth_params
from waihu_sip.message import Headers, SipRequest, SipResponse, make_response
from waihu_sip.transaction import send_non_invite
from waihu_sip.transport import SipTransport, new_branch

from sip_harness import LOGGER, dialling, running_trunk, sip_trunk, trunk_and_peer

TIME_LIMIT = 60  # seconds per test; generous, the machine is shared
USER = "robot7"
PASSWORD = "s3cret"
Address = tuple[str, int]
GOOD_SDP = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"


def answer(invite: SipRequest, peer: UdpPeer, *, tag: str, body: bytes = GOOD_SDP) -> SipResponse:
    """A 200 OK to ``invite`` from ``peer`` with To tag ``tag`` and SDP ``body``."""
    return make_response(
        invite,
        200,
        to_tag=tag,
        extra=[
            ("Contact", f"<sip:callee-{tag}@{peer.address()}>"),
            ("Content-Type", "application/sdp"),
        ],
        body=body,
    )


def challenge(invite: SipRequest, status: int, realm: str, nonce: str, stale: bool = False):
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    value = f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5'
    if stale:
        value += ", stale=true"
    return make_response(invite, status, to_tag="ch", extra=[(header, value)])


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def check_digest(value: str, *, method: str, realm: bytes, nonce: str) -> dict[str, str]:
    """The digest parameters of an Authorization value, after checking its response by
    recomputing it (RFC 2617 qop=auth) from the raw realm bytes."""
    assert value.startswith("Digest ")
    params = parse_auth_params(value[len("Digest ") :])
    ha1 = md5(USER.encode() + b":" + realm + b":" + PASSWORD.encode())
    ha2 = md5(f"{method}:{params['uri']}".encode())
    expected = md5(
        f"{ha1}:{nonce}:{params['nc']}:{params['cnonce']}:{params['qop']}:{ha2}".encode()
    )
    assert params["response"] == expected
    assert params["nonce"] == nonce
    return params


async def next_request(peer: UdpPeer, method: str) -> tuple[SipRequest, Address]:
    """The next request of ``method`` from the trunk (others, e.g. retransmissions, skipped)."""
    while True:
        request, source, _ = await peer.receive_request()
        if request.method == method:
            return request, source


# ─────────────── unusable answers ───────────────


async def test_answer_with_a_bad_number_in_sdp_is_acked_byed_and_fails_488(
    tmp_path: Path,
) -> None:
    """UdpPeer answers 200 with ``m=audio ² RTP/AVP 0`` (a superscript two as the port): the
    call is ACKed, then BYEd, and fails 488; nothing escapes."""
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            async with dialling(trunk) as outcome:
                invite, source = await next_request(peer, "INVITE")
                bad = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio ² RTP/AVP 0\r\n".encode()
                await peer.send(answer(invite, peer, tag="x1", body=bad), source)
                ack, _ = await next_request(peer, "ACK")
                bye, bye_source = await next_request(peer, "BYE")
                await peer.send(make_response(bye, 200), bye_source)
            assert isinstance(outcome.failure, CallFailed)
            assert outcome.failure.status == 488
            assert ack.to.tag == bye.to.tag == "x1"
            assert bye.uri == f"sip:callee-x1@{peer.address()}"


# ─────────────── forked 2xx ───────────────


async def test_forked_2xx_each_acked_extra_dialogs_byed_retransmissions_reacked(
    tmp_path: Path,
) -> None:
    """UdpPeer plays a forking proxy: 200 from fork A, 200 from fork B, then A's 200 again
    (sipp cannot send two answers with different To tags to one INVITE)."""
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            async with dialling(trunk) as outcome:
                invite, source = await next_request(peer, "INVITE")
                await peer.send(answer(invite, peer, tag="forkA"), source)
                ack_a, _ = await next_request(peer, "ACK")
                await peer.send(answer(invite, peer, tag="forkB"), source)
                ack_b, _ = await next_request(peer, "ACK")
                bye_b, bye_source = await next_request(peer, "BYE")
                await peer.send(make_response(bye_b, 200), bye_source)
                await peer.send(answer(invite, peer, tag="forkA"), source)
                ack_a2, _ = await next_request(peer, "ACK")
            assert outcome.leg is not None
            assert outcome.leg.dialog.remote_tag == "forkA"
            assert (ack_a.to.tag, ack_b.to.tag, bye_b.to.tag) == ("forkA", "forkB", "forkB")
            assert ack_a.uri == f"sip:callee-forkA@{peer.address()}"
            assert ack_b.uri == f"sip:callee-forkB@{peer.address()}"
            assert bye_b.uri == f"sip:callee-forkB@{peer.address()}"
            assert ack_a2.to_bytes() == ack_a.to_bytes()  # the same ACK, resent


# ─────────────── digest ───────────────


async def test_407_then_401_both_answered_and_the_2xx_ack_carries_both(tmp_path: Path) -> None:
    """UdpPeer plays a proxy (407, realm "proxy") and then a callee (401, realm "callee"); it
    checks each digest by recomputing it, which sipp cannot do for Proxy-Authorization."""
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path, username=USER, password=PASSWORD) as (trunk, peer):
            async with dialling(trunk) as outcome:
                first, source = await next_request(peer, "INVITE")
                await peer.send(challenge(first, 407, "proxy", "n1"), source)
                second, source = await next_request(peer, "INVITE")
                await peer.send(challenge(second, 401, "callee", "n2"), source)
                third, source = await next_request(peer, "INVITE")
                await peer.send(answer(third, peer, tag="ok"), source)
                ack, _ = await next_request(peer, "ACK")
            assert outcome.leg is not None
            assert [r.cseq.number for r in (first, second, third)] == [1, 2, 3]
            assert len({r.top_via.branch for r in (first, second, third)}) == 3
            assert "Proxy-Authorization" not in first.headers
            check_digest(
                second.headers.get("Proxy-Authorization") or "",
                method="INVITE", realm=b"proxy", nonce="n1",
            )  # fmt: skip
            check_digest(
                third.headers.get("Proxy-Authorization") or "",
                method="INVITE", realm=b"proxy", nonce="n1",
            )  # fmt: skip
            params = check_digest(
                third.headers.get("Authorization") or "",
                method="INVITE", realm=b"callee", nonce="n2",
            )  # fmt: skip
            assert params["nc"] == "00000001" and len(params["cnonce"]) >= 8
            assert ack.headers.get("Authorization") == third.headers.get("Authorization")
            assert ack.headers.get("Proxy-Authorization") == third.headers.get(
                "Proxy-Authorization"
            )


async def test_stale_nonce_is_retried_and_a_refusal_fails_the_call(tmp_path: Path) -> None:
    """UdpPeer challenges 401 (nonce n1), then 401 stale=true (n2): the trunk retries with n2;
    a third 401 for the same realm without stale means the credentials are refused: 401."""
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path, username=USER, password=PASSWORD) as (trunk, peer):
            async with dialling(trunk) as outcome:
                first, source = await next_request(peer, "INVITE")
                await peer.send(challenge(first, 401, "r", "n1"), source)
                second, source = await next_request(peer, "INVITE")
                await peer.send(challenge(second, 401, "r", "n2", stale=True), source)
                third, source = await next_request(peer, "INVITE")
                await peer.send(challenge(third, 401, "r", "n3"), source)
            assert isinstance(outcome.failure, CallFailed) and outcome.failure.status == 401
            check_digest(
                second.headers.get("Authorization") or "", method="INVITE", realm=b"r", nonce="n1"
            )
            check_digest(
                third.headers.get("Authorization") or "", method="INVITE", realm=b"r", nonce="n2"
            )
            with trio.move_on_after(1.5):
                extra, _ = await next_request(peer, "INVITE")
                pytest.fail(f"a fourth INVITE after the refusal: {extra}")


async def test_non_utf8_realm_is_hashed_as_its_bytes(tmp_path: Path) -> None:
    """UdpPeer sends a 401 whose realm is not UTF-8 (bytes sipp cannot write into a
    scenario); the retry's digest is computed over those raw bytes."""
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path, username=USER, password=PASSWORD) as (trunk, peer):
            async with dialling(trunk) as outcome:
                first, source = await next_request(peer, "INVITE")
                raw = challenge(first, 401, "REALM", "nonce\xb5").to_bytes()
                raw = raw.replace(b"REALM", b"caf\xe9 \xff").replace(b"nonce\xc2\xb5", b"nz")
                await peer.send(raw, source)
                second, source = await next_request(peer, "INVITE")
                await peer.send(answer(second, peer, tag="ok"), source)
                await next_request(peer, "ACK")
            assert outcome.leg is not None
            wire = second.to_bytes()
            assert b'realm="caf\xe9 \xff"' in wire  # sent back byte for byte
            check_digest(
                second.headers.get("Authorization") or "",
                method="INVITE", realm=b"caf\xe9 \xff", nonce="nz",
            )  # fmt: skip


async def test_challenged_bye_is_resent_with_credentials(tmp_path: Path) -> None:
    """UdpPeer answers, then challenges the robot's BYE with 407 (sipp's digest check reads
    Authorization only); the BYE comes again with Proxy-Authorization and the next CSeq."""
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path, username=USER, password=PASSWORD) as (trunk, peer):
            async with dialling(trunk) as outcome:
                invite, source = await next_request(peer, "INVITE")
                await peer.send(answer(invite, peer, tag="ok"), source)
                await next_request(peer, "ACK")
            assert outcome.leg is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(outcome.leg.hangup)
                bye, bye_source = await next_request(peer, "BYE")
                await peer.send(challenge(bye, 407, "proxy", "nb"), bye_source)
                bye2, bye_source = await next_request(peer, "BYE")
                await peer.send(make_response(bye2, 200), bye_source)
            assert bye2.cseq.number == bye.cseq.number + 1
            assert bye2.top_via.branch != bye.top_via.branch
            check_digest(
                bye2.headers.get("Proxy-Authorization") or "",
                method="BYE", realm=b"proxy", nonce="nb",
            )  # fmt: skip


# ─────────────── sipp: CANCEL at shutdown, early media, PRACK, target refresh ───────────────

CALLS_AT_SHUTDOWN = 3
SLOW_487_MS = 1500  # a slow switch's delay between the CANCEL's 200 and the 487
EARLY_MS = 2500  # how long the announcement plays before the 480 (generous: shared machine)
ANNOUNCEMENT_S = 2  # seconds of μ-law streamed as early media
ULAW_RATE = 8000


def messages_of(log: Path, method: str) -> int:
    """How many ``method`` requests sipp's message log shows it received."""
    text = log.read_text(errors="replace")
    return text.count(f"\n{method} sip:")


async def test_stopping_the_trunk_cancels_every_ringing_call_and_acks_each_487(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIME_LIMIT):
        keys = {"cancel_wait_ms": "20000"}
        extra = ["-m", str(CALLS_AT_SHUTDOWN)]
        async with sipp_peer("no_answer.xml", tmp_path, keys=keys, extra_args=extra) as peer:
            trunk = sip_trunk(tmp_path, proxy=peer.hostport)
            failures: list[BaseException] = []
            ringing = [trio.Event() for _ in range(CALLS_AT_SHUTDOWN)]

            async def dial(index: int) -> None:
                try:
                    await trunk.dial("1001", on_progress=lambda s, r: ringing[index].set())
                except (CallFailed, TrunkError) as exc:
                    failures.append(exc)

            async with trio.open_nursery() as dials:
                async with trio.open_nursery() as trunk_nursery:
                    await trunk_nursery.start(trunk.run)
                    for index in range(CALLS_AT_SHUTDOWN):
                        dials.start_soon(dial, index)
                    for event in ringing:
                        await event.wait()
                    trunk_nursery.cancel_scope.cancel()  # the daemon stops: SIGTERM
            result = await peer.wait()
        result.check()  # each call: CANCEL answered 200, 487 sent, ACK received
        assert len(failures) == CALLS_AT_SHUTDOWN
        for failure in failures:
            assert isinstance(failure, TrunkError) or (
                isinstance(failure, CallFailed) and failure.status == 487
            ), failure
        log = peer.workdir / "messages.log"
        assert messages_of(log, "CANCEL") >= CALLS_AT_SHUTDOWN
        assert messages_of(log, "ACK") >= CALLS_AT_SHUTDOWN


async def test_early_media_is_handed_over_then_the_call_fails_480(tmp_path: Path) -> None:
    audio = tmp_path / "announcement.ul"
    audio.write_bytes(bytes([0x55, 0xD5]) * (ULAW_RATE * ANNOUNCEMENT_S // 2))
    keys = {"audio": str(audio.resolve()), "early_ms": str(EARLY_MS)}
    with trio.fail_after(TIME_LIMIT):
        async with sipp_peer("early_media.xml", tmp_path, keys=keys) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                handed: list[object] = []
                datagrams: list[bytes] = []

                async with trio.open_nursery() as nursery:

                    def on_early_media(media: object) -> None:
                        handed.append(media)

                        async def read() -> None:
                            while True:
                                datagrams.append(await media.receive_media())  # type: ignore[attr-defined]

                        nursery.start_soon(read)

                    with pytest.raises(CallFailed) as failure:
                        await trunk.dial("1001", on_early_media=on_early_media)
                    nursery.cancel_scope.cancel()
                assert failure.value.status == 480
                assert len(handed) == 1, "on_early_media was not called once"
                early = handed[0]
                assert early.ended.is_set()  # type: ignore[attr-defined]
                assert early.codec.name == "PCMU"  # type: ignore[attr-defined]
                assert len(datagrams) >= 10, f"{len(datagrams)} early datagrams"  # ≥ 200 ms
                assert all(d[1] & 0x7F == 0 for d in datagrams)  # RTP, payload type 0
                result = await peer.wait()
        result.check()


async def test_reliable_provisional_is_pracked_once(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with sipp_peer("prack.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                progress: list[int] = []
                leg = await trunk.dial("1001", on_progress=lambda s, r: progress.append(s))
                assert progress == [180]  # the retransmitted 180 is not reported again
                await trio.sleep(0.5)  # a second PRACK would reach sipp meanwhile
                await leg.hangup()
                result = await peer.wait()
        result.check()
        assert messages_of(peer.workdir / "messages.log", "PRACK") == 1


async def test_reinvite_with_a_new_contact_moves_the_bye(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with sipp_peer("target_refresh.xml", tmp_path, keys={"wait": "200"}) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:
                leg = await trunk.dial("1001")
                while leg.dialog.remote_target.user != "moved":
                    await trio.sleep(0.02)
                await trio.sleep(0.3)  # let sipp take the 200 and ACK it
                await leg.hangup()
                result = await peer.wait()
        result.check()  # sipp checked the BYE's Request-URI: sip:moved@…


@pytest.mark.e2e
async def test_sigterm_with_calls_ringing_cancels_acks_and_files_each(tmp_path: Path) -> None:
    """The real waihud, three calls ringing at a sipp callee, SIGTERM: each call is CANCELled,
    each 487 — sent 1.5 s after the CANCEL's 200, as a slow switch does — ACKed (sipp's
    scenario passes only then), each record filed, and exit 0."""
    with trio.fail_after(150):
        keys = {"cancel_wait_ms": "60000", "final_delay_ms": str(SLOW_487_MS)}
        extra = ["-m", str(CALLS_AT_SHUTDOWN)]
        async with sipp_peer("slow_cancel.xml", tmp_path, keys=keys, extra_args=extra) as peer:
            config = write_config(
                tmp_path / "waihud", proxy=peer.hostport, daemon={"drain_timeout": 1.0}
            )
            async with running_waihud(config) as daemon:
                calls = [
                    (await daemon.request("call", target="1001", script="demo-ko"))["call_id"]
                    for _ in range(CALLS_AT_SHUTDOWN)
                ]
                with trio.fail_after(30):
                    for call_id in calls:
                        while (await daemon.request("call.show", id=call_id))[
                            "status"
                        ] != "ringing":
                            await trio.sleep(0.1)
                assert await daemon.stop() == 0
            result = await peer.wait()
        result.check()  # each call: CANCEL, 200, 487, ACK
    db = sqlite3.connect(daemon.database)
    try:
        for call_id in calls:
            row = db.execute("select status, outcome from calls where id = ?", (call_id,))
            assert row.fetchone() == ("failed", "interrupted")
    finally:
        db.close()


async def test_answer_sdp_differing_from_the_183_wins_on_the_same_socket(tmp_path: Path) -> None:
    """UdpPeer sends 183 with SDP (port A), RTP from A, then 200 with SDP (port B) — sipp
    cannot move its media port between the two: the datagram arrives through early media,
    which ends with the 200, and the leg sends to B from the same socket."""
    port_a, port_b = free_udp_port(), free_udp_port()

    def sdp(port: int) -> bytes:
        return f"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio {port} RTP/AVP 0\r\n".encode()

    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            handed: list[object] = []
            datagrams: list[bytes] = []
            legs: list[object] = []
            rtp_a = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
            await rtp_a.bind(("127.0.0.1", port_a))

            async with trio.open_nursery() as nursery:

                def on_early_media(media: object) -> None:
                    handed.append(media)

                    async def read() -> None:
                        datagrams.append(await media.receive_media())  # type: ignore[attr-defined]

                    nursery.start_soon(read)

                async def dial() -> None:
                    legs.append(await trunk.dial("1001", on_early_media=on_early_media))

                nursery.start_soon(dial)
                invite, source = await next_request(peer, "INVITE")
                progress = make_response(
                    invite,
                    183,
                    to_tag="em",
                    extra=[("Content-Type", "application/sdp")],
                    body=sdp(port_a),
                )
                await peer.send(progress, source)
                while not handed:
                    await trio.sleep(0.01)
                await rtp_a.sendto(bytes([0x80, 0]) + bytes(170), ("127.0.0.1", media_port(invite)))
                while not datagrams:
                    await trio.sleep(0.01)
                await peer.send(answer(invite, peer, tag="em", body=sdp(port_b)), source)
                await next_request(peer, "ACK")
            rtp_a.close()
            (leg,) = legs
            assert len(handed) == 1 and handed[0].ended.is_set()  # type: ignore[attr-defined]
            assert len(datagrams[0]) == 172
            assert leg.remote_rtp == ("127.0.0.1", port_b)  # type: ignore[attr-defined]
            assert leg.local_rtp[1] == media_port(invite)  # type: ignore[attr-defined]


def media_port(invite: SipRequest) -> int:
    """The RTP port our INVITE's SDP offers."""
    for line in invite.body.decode().splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise AssertionError("no m=audio in the offer")


# ─────────────── the drivers on a reliable transport ───────────────


@pytest.mark.parametrize(("reliable", "copies"), [(False, 11), (True, 1)])
async def test_send_non_invite_retransmits_only_on_an_unreliable_transport(
    reliable: bool, copies: int, autojump_clock: object
) -> None:
    """A real SipTransport sends an OPTIONS to UdpPeer, which never answers (sipp always does);
    time is virtual. Over UDP, Timer E resends it (0.5, 1, 2, 4, then every 4 s) until Timer F;
    over a reliable transport (TCP/TLS) it goes once. Both give up at 32 s."""
    peer = UdpPeer()
    transport = SipTransport(host="127.0.0.1", port=0, log=logging.getLogger(LOGGER))
    await transport.open()
    try:
        host, port = (await peer.bind()).split(":")
        options = options_request()
        seen: list[float] = []
        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:

                async def count() -> None:
                    while True:
                        await peer.receive_request()
                        seen.append(trio.current_time())

                nursery.start_soon(count)
                start = trio.current_time()
                destination = (host, int(port))
                # reliable=True is what a TCP/TLS transport says of itself
                assert (
                    await send_non_invite(transport, options, destination, reliable=reliable)
                    is None
                )
                assert trio.current_time() - start == pytest.approx(32.0)
                nursery.cancel_scope.cancel()
        assert len(seen) == copies
    finally:
        transport.close()
        peer.close()


def options_request() -> SipRequest:
    """An OPTIONS from the trunk's side with a fresh branch."""
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:bot@127.0.0.1>;tag=a"),
            ("To", "<sip:peer@127.0.0.1>"),
            ("Call-ID", "drv-1"),
            ("CSeq", "1 OPTIONS"),
        ]
    )
    return SipRequest(headers=headers, body=b"", method="OPTIONS", uri="sip:peer@127.0.0.1")
