"""Via rules (RFC 3261 §18.1.2, §18.2.1, RFC 3581), the admission hook and redacted dumps.

Far ends: ``UdpPeer`` (a plain UDP socket) where the test must forge what no
SIP peer sends — a Via naming another host, a response with someone else's
Via, a flood of them; sipp's auth.xml (a real digest challenge) for the
redaction of credentials; a hand-driven TCP socket for admission of
connections. The admission tests drive ``SipTransport`` directly with a
handler that answers 200, because wiring the guard into the trunk is not the
transport's business; the sockets are real.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from waihu.testing.sipp import UdpPeer, sipp_peer
from waihu_sip.message import Headers, SipRequest, SipResponse, make_response
from waihu_sip.transport import (
    WARNING_BURST,
    Address,
    Admission,
    SipTransport,
    new_token,
    redact,
)
from waihu_sip.trunk import SipTrunk

from sip_harness import LOGGER, dialling, running_trunk, trunk_and_peer
from transport_harness import TcpPeer

TIME_LIMIT = 30  # seconds per test; generous, the machine is shared
REAL_TIME_LIMIT = 60


def options(via: str, *, branch: str = "z9hG4bKvia1", method: str = "OPTIONS") -> SipRequest:
    """A request to the trunk whose top Via is ``via`` (sent-by and any parameters)."""
    headers = Headers(
        [
            ("Via", f"{via};branch={branch}"),
            ("From", "<sip:peer@example.test>;tag=p1"),
            ("To", "<sip:waihu@127.0.0.1>"),
            ("Call-ID", f"via-{branch}"),
            ("CSeq", f"1 {method}"),
            ("Max-Forwards", "70"),
        ]
    )
    return SipRequest(headers=headers, body=b"", method=method, uri="sip:waihu@127.0.0.1")


def trunk_address(trunk: SipTrunk) -> Address:
    assert trunk.local_address is not None
    return trunk.local_address


def peer_port(peer: UdpPeer) -> int:
    return int(peer.address().rsplit(":", 1)[1])


# ───────────────────────── received and rport on requests ─────────────────────────


@pytest.mark.parametrize(
    ("via", "received", "rport"),
    [
        # behind NAT: the Via names a private address and port, and asks for rport
        ("SIP/2.0/UDP 10.9.9.9:5999;rport", "127.0.0.1", "PEER"),
        # no rport asked: only received, as the host differs (§18.2.1)
        ("SIP/2.0/UDP 10.9.9.9:5999", "127.0.0.1", None),
        # rport asked with the right host: received is still added (RFC 3581 §4)
        ("SIP/2.0/UDP 127.0.0.1:5999;rport", "127.0.0.1", "PEER"),
        # the Via host is the source and no rport: the Via is left as it was
        ("SIP/2.0/UDP 127.0.0.1:5999", None, None),
    ],
)
async def test_received_and_rport_are_stamped_and_the_answer_goes_to_the_source(
    tmp_path: Path, via: str, received: str | None, rport: str | None
) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            await peer.send(options(via), trunk_address(trunk))
            answer = await peer.receive_response()  # to our socket, not 10.9.9.9:5999
            top = answer.top_via
            assert (top.host, top.port) == (via.split()[1].split(";")[0].split(":")[0], 5999)
            assert top.params.get("received") == received
            expected_rport = str(peer_port(peer)) if rport == "PEER" else rport
            assert top.params.get("rport") == expected_rport
            assert ("rport" in top.params) == ("rport" in via)


# ───────────────────────── our own Via on responses ─────────────────────────


@pytest.mark.parametrize("forge", ["host", "port"])
async def test_a_response_with_someone_elses_via_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, forge: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            async with dialling(trunk) as outcome:
                invite, source, _ = await peer.receive_request()
                forged = make_response(invite, 486, to_tag="x1")
                top = forged.headers.get_all("Via")[0]
                ours = top.split()[1].split(";")[0]
                theirs = "10.1.1.1:5060" if forge == "host" else f"{ours.split(':')[0]}:1"
                forged.headers.set("Via", top.replace(ours, theirs))
                for _ in range(WARNING_BURST + 5):  # a flood: the log stays short
                    await peer.send(forged, source)
                # dropped: no ACK comes, and the INVITE is retransmitted as if nothing came
                again, _, _ = await peer.receive_request()
                assert again.method == "INVITE" and again.cseq.method == "INVITE"
                await peer.send(make_response(invite, 486, to_tag="x1"), source)
                ack, _, _ = await peer.receive_request()
                assert ack.method == "ACK"
            assert outcome.failure is not None and outcome.failure.status == 486
    dropped = [r for r in caplog.records if "is not ours" in r.getMessage()]
    assert len(dropped) == WARNING_BURST + 5
    assert [r.levelno for r in dropped].count(logging.WARNING) == WARNING_BURST
    assert ("10.1.1.1:5060" if forge == "host" else "127.0.0.1:1;") in dropped[0].getMessage()


# ───────────────────────── credentials never in the log ─────────────────────────


def test_redact_hides_digest_response_and_basic_credentials() -> None:
    text = (
        "INVITE sip:1@x SIP/2.0\r\n"
        'Authorization: Digest username="u", realm="r", nonce="n", uri="sip:1@x", '
        'response="0123456789abcdef0123456789abcdef", algorithm=MD5\r\n'
        'proxy-authorization: Digest username="u",response=feedbeef,nonce="n"\r\n'
        "Authorization: Basic dXNlcjpwYXNz\r\n"
        'X-Note: response="kept"\r\n\r\n'
    )
    shown = redact(text)
    assert "0123456789abcdef" not in shown and "feedbeef" not in shown
    assert "dXNlcjpwYXNz" not in shown
    assert 'username="u"' in shown and 'nonce="n"' in shown  # the rest stays readable
    assert 'response="…"' in shown
    assert 'X-Note: response="kept"' in shown  # only credential headers are touched


async def test_debug_dump_of_an_authenticated_call_shows_no_digest_response(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    keys = {"user": "robot7", "password": "s3cret pass"}
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("auth.xml", tmp_path, keys=keys) as peer:
            async with running_trunk(
                tmp_path, proxy=peer.hostport, username="robot7", password="s3cret pass"
            ) as trunk:
                leg = await trunk.dial("1001")
                await leg.hangup()
                result = await peer.wait()
        result.check()  # sipp checked the digest: the real value was sent
    sent = (peer.workdir / "messages.log").read_text(errors="replace")
    values = re.findall(r'response="([0-9a-f]{32})"', sent)
    assert values, "sipp saw no digest response"
    dump = "\n".join(r.getMessage() for r in caplog.records)
    assert "Authorization: Digest" in dump  # the dump is there…
    assert 'response="…"' in dump
    for value in values:
        assert value not in dump  # …without the credential
    assert "s3cret" not in dump


# ───────────────────────── the admission hook ─────────────────────────


@asynccontextmanager
async def serving_transport(
    admit: Callable[[Address], Admission], protocol: str = "udp"
) -> AsyncIterator[tuple[SipTransport, list[SipRequest]]]:
    """A transport on a free port whose handler answers 200 and records each request."""
    transport = SipTransport(
        host="127.0.0.1",
        port=0,
        log=logging.getLogger(LOGGER),
        protocol=protocol,  # type: ignore[arg-type]
        admit=admit,
    )
    await transport.open()
    handled: list[SipRequest] = []

    async def on_request(request: SipRequest, source: Address) -> None:
        handled.append(request)
        if request.method != "ACK":
            await transport.respond(request, make_response(request, 200, to_tag="t"), source)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport.serve, on_request)
        yield transport, handled
        transport.close()


async def no_message(peer: UdpPeer, seconds: float = 0.3) -> bool:
    """True when nothing arrives at the peer for ``seconds``."""
    with trio.move_on_after(seconds):
        await peer.receive()
        return False
    return True


async def test_admission_of_datagrams() -> None:
    verdicts: dict[int, Admission] = {}
    asked: list[Address] = []

    def admit(source: Address) -> Admission:
        asked.append(source)
        return verdicts.get(source[1], "accept")

    with trio.fail_after(TIME_LIMIT):
        async with serving_transport(admit) as (transport, handled):
            peers = {verdict: UdpPeer() for verdict in ("accept", "drop", "reject")}
            for verdict, peer in peers.items():
                await peer.bind()
                verdicts[peer_port(peer)] = verdict  # type: ignore[assignment]
            via = "SIP/2.0/UDP {};rport"
            for peer in peers.values():
                await peer.send(options(via.format(peer.address())), transport.local_address)
            assert (await peers["accept"].receive_response()).status == 200
            rejected = await peers["reject"].receive_response()
            assert rejected.status == 403 and rejected.to.tag is not None
            assert await no_message(peers["drop"])
            # a rejected source's ACK is not answered, and garbage is asked about first
            await peers["reject"].send(
                options(via.format(peers["reject"].address()), method="ACK"),
                transport.local_address,
            )
            await peers["drop"].send(b"\x00 not even sip", transport.local_address)
            assert await no_message(peers["reject"])
            assert [r.method for r in handled] == ["OPTIONS"]  # only the admitted one
            assert len(asked) == 5  # every datagram, before parsing
            for peer in peers.values():
                peer.close()


async def test_admission_of_connections() -> None:
    """The far ends are hand-driven TCP sockets."""
    verdict: list[Admission] = ["drop"]

    with trio.fail_after(TIME_LIMIT):
        async with serving_transport(lambda source: verdict[0], "tcp") as (transport, handled):
            dropped = await TcpPeer.connect(transport.local_address)
            assert await dropped.receive_raw() == b""  # closed before anything was read
            verdict[0] = "reject"
            rejected = await TcpPeer.connect(transport.local_address)
            await rejected.send(options(f"SIP/2.0/TCP {rejected.address}").to_bytes())
            answer = await rejected.receive()
            assert isinstance(answer, SipResponse) and answer.status == 403
            verdict[0] = "accept"
            accepted = await TcpPeer.connect(transport.local_address)
            await accepted.send(
                options(
                    f"SIP/2.0/TCP {accepted.address}", branch="z9hG4bK" + new_token()
                ).to_bytes()
            )
            answer = await accepted.receive()
            assert isinstance(answer, SipResponse) and answer.status == 200
            assert len(handled) == 1
            for peer in (dropped, rejected, accepted):
                await peer.aclose()
