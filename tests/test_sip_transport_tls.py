"""SIP over TLS: a call through a TLS server, and certificates that must fail the dial.

The far end is sipp over TCP behind ``socat``, which terminates TLS with a
certificate made at test time by ``trustme`` (this machine's sipp has no TLS:
``sipp -v`` lists SCTP, PCAP and RTPSTREAM). The trunk's TLS is real: trio's
``SSLStream`` with verification on, as a trunk runs it.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from waihu.api import TrunkError
from waihu.testing.peer_process import free_udp_tcp_port
from waihu_sip.config import SipTrunkConfig
from waihu_sip.trunk import SipTrunk

from sip_harness import running_trunk
from transport_harness import StreamPeer, make_certificates, sipp_tcp, tls_front

REAL_TIME_LIMIT = 60  # seconds per real-time test; generous, the machine is shared
FRONT_ATTEMPTS = 3


@asynccontextmanager
async def behind_tls(
    tmp_path: Path, certificate: Path
) -> AsyncIterator[tuple[StreamPeer, StreamPeer]]:
    """sipp answering one call behind a socat TLS front; its Contact names the front.

    The front's port is chosen before sipp starts (sipp's Contact names it), so on a busy
    machine something may take it first: socat then cannot bind, and both start again on
    another port (up to ``FRONT_ATTEMPTS`` times).
    """
    for attempt in range(1, FRONT_ATTEMPTS + 1):
        port = free_udp_tcp_port()
        started = False
        try:
            contact = f"127.0.0.1:{port};transport=tls"
            async with sipp_tcp("answer.xml", tmp_path / f"try{attempt}", contact=contact) as sipp:
                async with tls_front(sipp, certificate, port) as front:
                    started = True
                    yield sipp, front
                    return
        except AssertionError as exc:
            if started or "Address already in use" not in str(exc) or attempt == FRONT_ATTEMPTS:
                raise


async def test_call_over_tls_checks_the_certificate_name(tmp_path: Path) -> None:
    files = make_certificates(tmp_path / "certs", "sip.example.test")
    with trio.fail_after(REAL_TIME_LIMIT):
        async with behind_tls(tmp_path, files.server_pem) as (callee, front):
            async with running_trunk(
                tmp_path,
                proxy=front.hostport,
                transport="tls",
                tls_ca=str(files.ca),
                tls_server_name="sip.example.test",
            ) as trunk:
                leg = await trunk.dial("1001")
                assert leg.codec.name == "PCMU"
                await leg.hangup()
                await leg.ended.wait()
                assert await callee.wait() == 0, callee.report()
    trace = callee.messages()
    assert "Via: SIP/2.0/TLS 127.0.0.1:" in trace
    assert ";transport=tls>" in trace  # Contact: in-dialog requests come back over TLS


@pytest.mark.parametrize(
    ("certificate_for", "trusted", "server_name", "problem"),
    [
        # signed by a CA the trunk does not trust
        ("127.0.0.1", False, None, "certificate verification failed: unable to get local issuer"),
        # trusted, but made out to another name than the proxy host
        ("sip.example.test", True, None, "certificate verification failed: IP address mismatch"),
        ("sip.example.test", True, "other.example.test", "Hostname mismatch"),
    ],
)
async def test_a_certificate_we_cannot_trust_fails_the_dial(
    tmp_path: Path, certificate_for: str, trusted: bool, server_name: str | None, problem: str
) -> None:
    files = make_certificates(tmp_path / "certs", certificate_for)
    ours = files.ca if trusted else make_certificates(tmp_path / "other", ca_name="other").ca
    with trio.fail_after(REAL_TIME_LIMIT):
        async with behind_tls(tmp_path, files.server_pem) as (_, front):
            async with running_trunk(
                tmp_path,
                proxy=front.hostport,
                transport="tls",
                tls_ca=str(ours),
                tls_server_name=server_name,
            ) as trunk:
                with pytest.raises(TrunkError) as failure:
                    await trunk.dial("1001")
                message = str(failure.value)
                assert message.startswith(f"cannot open TLS connection to {front.hostport}")
                assert problem in message


async def test_verification_can_be_turned_off(tmp_path: Path) -> None:
    files = make_certificates(tmp_path / "certs", "sip.example.test")  # CA not given: untrusted
    with trio.fail_after(REAL_TIME_LIMIT):
        async with behind_tls(tmp_path, files.server_pem) as (callee, front):
            async with running_trunk(
                tmp_path, proxy=front.hostport, transport="tls", tls_verify=False
            ) as trunk:
                leg = await trunk.dial("1001")
                await leg.hangup()
                await leg.ended.wait()
                assert await callee.wait() == 0, callee.report()


async def test_unreadable_ca_file_leaves_the_trunk_down_naming_the_key(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with running_trunk(
            tmp_path, proxy="127.0.0.1:5061", transport="tls", tls_ca=str(tmp_path / "none.pem")
        ) as trunk:
            status = trunk.status()
            assert status.state == "down"
            assert "tls_ca: cannot load" in status.detail and "none.pem" in status.detail
            with pytest.raises(TrunkError, match="tls_ca"):
                await trunk.dial("1001")


def test_tls_keys_need_the_tls_transport() -> None:
    with pytest.raises(ValueError, match='tls_ca: only for transport = "tls"'):
        SipTrunkConfig(proxy="127.0.0.1", tls_ca="/etc/ssl/ca.pem")
    with pytest.raises(ValueError, match="transport: must be one of udp, tcp, tls"):
        SipTrunkConfig(proxy="127.0.0.1", transport="sctp")
    with pytest.raises(ValueError, match="tls_key: goes with tls_cert"):
        SipTrunkConfig(proxy="127.0.0.1", transport="tls", tls_key="/k.pem")
    assert SipTrunkConfig(proxy="sip.example.test", transport="tls").proxy_host_port == (
        "sip.example.test",
        5061,
    )


def test_check_config_names_an_unreadable_certificate_file(tmp_path: Path) -> None:
    config = SipTrunkConfig(
        proxy="127.0.0.1", transport="tls", tls_cert=str(tmp_path / "missing.pem")
    )
    problems = SipTrunk.check(config, section="trunk.office")
    assert [(p.key, p.warning) for p in problems] == [("trunk.office.tls_cert", False)]
    assert "missing.pem" in problems[0].message and "No such file" in problems[0].message


async def test_tls_connections_from_the_far_end(tmp_path: Path) -> None:
    """The far end is a hand-driven TLS client (trio's SSLStream) sending one OPTIONS: a trunk
    with ``tls_cert`` accepts it and answers on it; one without closes it unread."""
    files = make_certificates(tmp_path / "certs", "127.0.0.1")
    client = ssl.create_default_context(cafile=str(files.ca))
    with trio.fail_after(REAL_TIME_LIMIT):
        for certificate in (files.server_pem, None):
            extra = {} if certificate is None else {"tls_cert": str(certificate)}
            async with running_trunk(
                tmp_path, proxy="127.0.0.1:9", transport="tls", **extra
            ) as trunk:
                assert trunk.local_address is not None
                tcp = await trio.open_tcp_stream(*trunk.local_address)
                stream = trio.SSLStream(tcp, client, server_hostname="127.0.0.1")
                if certificate is None:
                    with pytest.raises(trio.BrokenResourceError):
                        await stream.do_handshake()
                    continue
                local = tcp.socket.getsockname()
                request = (
                    f"OPTIONS sip:waihu@127.0.0.1 SIP/2.0\r\n"
                    f"Via: SIP/2.0/TLS {local[0]}:{local[1]};branch=z9hG4bKtls1;rport\r\n"
                    "From: <sip:peer@127.0.0.1>;tag=1\r\nTo: <sip:waihu@127.0.0.1>\r\n"
                    "Call-ID: tls-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                )
                await stream.send_all(request.encode())
                answer = b""
                while not answer.endswith(b"\r\n\r\n"):
                    answer += await stream.receive_some(65536)
                assert answer.startswith(b"SIP/2.0 200 OK\r\n")
                await stream.aclose()
