"""The SIP plugin's parsers admit only their declared errors, for any input; numbers are ASCII.

Three parts:
- digits that only Unicode calls digits (``²``, ``١٢``, ``５``) in every number
  field the plugin reads: each is refused with the parser's own error naming
  the field — never a ``ValueError`` from ``int()``, never silently read as 12;
- hypothesis drives benchmarks/fuzz_sip.py's mutator over real inputs (the RFC
  4475 messages, carrier SDPs, name-addrs, digest challenges, dial targets) and
  raw bytes, a few hundred examples per target, derandomized so the suite is
  repeatable (``make fuzz`` is the long run);
- a real trunk fed such datagrams logs one warning line each, no traceback,
  and keeps answering.

What it is not: the torture verdicts (test_sip_torture.py) or the long run's
figures (benchmarks/README.md).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import ModuleType

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waihu.api import BadTarget
from waihu.testing.sipp import UdpPeer
from waihu_sip.address import NameAddress, SipUri, is_ascii_digits, split_host_port
from waihu_sip.config import SipTrunkConfig
from waihu_sip.errors import SdpError, SipParseError
from waihu_sip.message import SipResponse, parse_message
from waihu_sip.sdp import parse_sdp
from waihu_sip.target import check_target

from sip_harness import LOGGER, trunk_and_peer

REPO = Path(__file__).resolve().parent.parent
TIME_LIMIT = 30  # seconds for the real-trunk test; generous, the machine is shared
EXAMPLES = 300  # per target in the suite; `make fuzz` runs 40,000 each
SUITE_TARGETS = ("message", "sdp", "address", "digest", "target")  # digest-answer: see README


def load_fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_sip", REPO / "benchmarks" / "fuzz_sip.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ = load_fuzzer()
TARGETS = FUZZ.targets()

# "²": str.isdigit() is True, int() raises; "١٢": int() reads 12; "５": int() reads 5.
NOT_ASCII_DIGITS = ("²", "١٢", "５")

MESSAGE = (
    "INVITE sip:1001@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:{via_port};branch=z9hG4bKabc\r\n"
    "Max-Forwards: {max_forwards}\r\n"
    "From: <sip:waihu@example.com>;tag=a1\r\n"
    "To: <sip:1001@example.com:{uri_port}>\r\n"
    "Call-ID: c1@10.0.0.1\r\n"
    "CSeq: {cseq} INVITE\r\n"
    "Expires: {expires}\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
)
GOOD_FIELDS = {
    "via_port": "5060",
    "max_forwards": "70",
    "uri_port": "5060",
    "cseq": "1",
    "expires": "60",
    "length": "0",
}
SDP = (
    "v=0\r\no=- {sess_id} {sess_version} IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 {address}\r\n"
    "t=0 0\r\nm=audio {port} RTP/AVP {pt} 101\r\na=rtpmap:{rtpmap_pt} PCMU/{rate}\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:{fmtp_pt} 0-16\r\n"
)
GOOD_SDP = {
    "sess_id": "1",
    "sess_version": "2",
    "address": "192.0.2.1",
    "port": "4000",
    "pt": "0",
    "rtpmap_pt": "0",
    "rate": "8000",
    "fmtp_pt": "101",
}


def message_with(field: str, value: str) -> bytes:
    return MESSAGE.format(**{**GOOD_FIELDS, field: value}).encode()


def sdp_with(field: str, value: str) -> bytes:
    return SDP.format(**{**GOOD_SDP, field: value}).encode()


# ───────────────────────── ASCII digits only ─────────────────────────


def test_is_ascii_digits() -> None:
    assert is_ascii_digits("0123456789")
    for text in ("", "²", "١٢", "５", "12²", " 1", "1\n", "-1", "+1", "1_000"):
        assert not is_ascii_digits(text), text


def test_the_good_message_and_sdp_parse() -> None:
    message = parse_message(MESSAGE.format(**GOOD_FIELDS).encode())
    assert (message.cseq.number, message.max_forwards, message.expires) == (1, 70, 60)
    assert message.top_via.port == 5060
    sdp = parse_sdp(SDP.format(**GOOD_SDP).encode())
    assert (sdp.port, sdp.formats, sdp.session_version, sdp.fmtp) == (
        4000,
        (0, 101),
        2,
        {101: "0-16"},
    )


@pytest.mark.parametrize("digits", NOT_ASCII_DIGITS)
@pytest.mark.parametrize(
    ("field", "named"),
    [
        ("via_port", "line 2: bad port"),
        ("max_forwards", "line 3: Max-Forwards"),
        ("uri_port", "line 5: bad port"),
        ("cseq", "line 7: bad CSeq"),
        ("length", "line 9: Content-Length"),
    ],
)
def test_message_numbers_must_be_ascii(field: str, named: str, digits: str) -> None:
    with pytest.raises(SipParseError, match=named):
        parse_message(message_with(field, digits))


@pytest.mark.parametrize("digits", NOT_ASCII_DIGITS)
def test_expires_and_status_code_must_be_ascii(digits: str) -> None:
    message = parse_message(message_with("expires", digits))  # read only when asked for
    with pytest.raises(SipParseError, match=r"Expires .* is not a number"):
        _ = message.expires
    response = f"SIP/2.0 2{digits} OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n"
    with pytest.raises(SipParseError, match="line 1: status code"):
        parse_message(response.encode())


@pytest.mark.parametrize("digits", NOT_ASCII_DIGITS)
@pytest.mark.parametrize(
    ("field", "named"),
    [
        ("port", "line 6: media port"),
        ("pt", "line 6: RTP payload type"),
        ("rtpmap_pt", "line 7: rtpmap payload type"),
        ("rate", "line 7: rtpmap clock rate"),
        ("fmtp_pt", "line 9: fmtp payload type"),
        ("sess_id", "line 2: o= session id"),
        ("sess_version", "line 2: o= session version"),
        ("address", "line 4: c= address"),
    ],
)
def test_sdp_numbers_must_be_ascii(field: str, named: str, digits: str) -> None:
    with pytest.raises(SdpError, match=named):
        parse_sdp(sdp_with(field, digits))


def test_sdp_ptime_that_is_not_a_number_is_left_out() -> None:
    body = SDP.format(**GOOD_SDP).encode() + "a=ptime:２０\r\n".encode()
    assert parse_sdp(body).ptime is None
    assert parse_sdp(body.replace("２０".encode(), b"20")).ptime == 20


@pytest.mark.parametrize("digits", NOT_ASCII_DIGITS)
def test_ports_in_uris_host_ports_config_and_targets_must_be_ascii(digits: str) -> None:
    with pytest.raises(SipParseError, match="bad port"):
        split_host_port(f"pbx.example.com:{digits}")
    with pytest.raises(SipParseError, match="bad port"):
        SipUri.parse(f"sip:1001@pbx.example.com:{digits}")
    with pytest.raises(SipParseError, match="bad port"):
        NameAddress.parse(f"<sip:1001@[2001:db8::1]:{digits}>")
    with pytest.raises(ValueError, match="proxy: must be host or host:port"):
        SipTrunkConfig(proxy=f"pbx.example.com:{digits}")
    with pytest.raises(BadTarget, match="is not a SIP URI to dial"):
        check_target(f"sip:bob@pbx.example.com:{digits}")


# ───────────────────────── fuzzing ─────────────────────────

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a shared 2-core machine: timing is not what is tested
    database=None,  # nothing written to the work tree
    derandomize=True,  # the same inputs every run: a failure here reproduces
    suppress_health_check=[HealthCheck.too_slow],
)


def assert_declared_only(name: str, data: bytes) -> None:
    found = FUZZ.check_one(TARGETS[name], data)
    assert found is None, f"{name}: {type(found).__name__}: {found} on {data!r}"


@pytest.mark.parametrize("name", SUITE_TARGETS)
@FUZZ_SETTINGS
@given(pick=st.integers(min_value=0), rng=st.randoms(use_true_random=False))
def test_mutated_real_inputs_raise_only_the_declared_error(name: str, pick: int, rng) -> None:  # type: ignore[no-untyped-def]
    seeds = TARGETS[name].seeds
    assert_declared_only(name, FUZZ.mutate(rng, seeds[pick % len(seeds)]))


@pytest.mark.parametrize("name", SUITE_TARGETS)
@FUZZ_SETTINGS
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_the_declared_error(name: str, data: bytes) -> None:
    assert_declared_only(name, data)


@FUZZ_SETTINGS
@given(
    text=st.text(alphabet=st.sampled_from(list('sip:tel<>"\\;=,?@[]: \t\r\n²١1a.%')), max_size=60)
)
def test_name_addr_text_from_the_separators_raises_only_sip_parse_error(text: str) -> None:
    assert_declared_only("address", text.encode("utf-8", "surrogatepass"))


def test_the_mutator_produces_what_broke_parsers_before() -> None:
    """A fuzzer that never writes '²' into a number could pass a broken parser."""
    import random

    rng = random.Random(1)
    outputs = [FUZZ.mutate(rng, FUZZ.INVITE_SEED) for _ in range(2000)]
    assert any("²".encode() in o or "١".encode() in o for o in outputs)
    assert any(o.count(b"CSeq:") > 1 for o in outputs)  # a repeated line
    assert any(len(o) < len(FUZZ.INVITE_SEED) for o in outputs)


# ───────────────────────── a real trunk ─────────────────────────


async def test_bad_numbers_in_datagrams_log_one_line_and_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    bad = [
        message_with("via_port", "²"),
        message_with("cseq", "١٢"),
        message_with("length", "²"),
        message_with("max_forwards", "５"),
        b"SIP/2.0 2\xc2\xb2 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\r\n",
    ]
    with trio.fail_after(TIME_LIMIT):
        async with trunk_and_peer(tmp_path) as (trunk, peer):
            assert isinstance(peer, UdpPeer)
            assert trunk.local_address is not None
            address = trunk.local_address
            for data in bad:
                await peer.send(data, address)
            options = (
                b"OPTIONS sip:waihu@127.0.0.1 SIP/2.0\r\n"
                b"Via: SIP/2.0/UDP " + peer.address().encode() + b";branch=z9hG4bKok\r\n"
                b"From: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:waihu@127.0.0.1>\r\n"
                b"Call-ID: ok\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n"
            )
            await peer.send(options, address)
            # once the receive loop sends the 400s a broken request is owed, they come first
            # (one copies its request's broken CSeq back, so read raw datagrams)
            while True:
                data, _ = await peer.sock.recvfrom(65535)
                if b"CSeq: 1 OPTIONS" in data:
                    break
            answer = parse_message(data)
            assert isinstance(answer, SipResponse) and answer.status == 200  # still serving
    records = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(records) == len(bad)
    assert not [r for r in caplog.records if r.exc_info]  # no traceback for bad input
    assert all("\n" not in r.getMessage() for r in records)
    assert any("line 2: bad port '²'" in r.getMessage() for r in records)
    assert any("bad CSeq" in r.getMessage() and "١٢" in r.getMessage() for r in records)


def test_an_error_about_a_huge_value_is_one_short_line() -> None:
    header = "<sip:" + "a" * 5000  # no closing '>'
    with pytest.raises(SipParseError) as refused:
        NameAddress.parse(header)
    text = str(refused.value)
    assert len(text) < 400 and "\n" not in text
    assert text.endswith("(5005 characters)")
    data = message_with("cseq", "1").replace(
        b"To: <sip:1001@example.com:5060>", f"To: {header}".encode()
    )
    with pytest.raises(SipParseError, match=r"^line 5: missing '>'") as refused:
        parse_message(data)
    assert len(str(refused.value)) < 400
