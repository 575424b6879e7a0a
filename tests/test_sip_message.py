"""Unit tests of the SIP plugin's pure parts: messages, URIs, SDP, digest, dialog routing.

No network here; the trunk against real peers is in test_sip_call.py.
"""

from __future__ import annotations

import random

import pytest

from waihu.api import Codec
from waihu_sip.address import NameAddress, SipUri, split_host_port
from waihu_sip.config import SipTrunkConfig
from waihu_sip.dialog import Dialog
from waihu_sip.digest import (
    DigestChallenge,
    authorization_value,
    choose_challenge,
    digest_response,
    parse_auth_params,
)
from waihu_sip.errors import DigestError, SdpError, SipParseError
from waihu_sip.message import (
    Headers,
    SipRequest,
    SipResponse,
    Via,
    is_keepalive,
    make_response,
    parse_message,
)
from waihu_sip.sdp import (
    answer_direction,
    build_offer,
    choose_codec,
    parse_sdp,
)

INVITE = (
    b"INVITE sip:1001@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKdef, SIP/2.0/UDP [2001:db8::1]:5080"
    b";branch=z9hG4bKghi\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Robot, Inc." <sip:waihu@example.com>;tag=a1\r\n'
    b"To: <sip:1001@example.com>\r\n"
    b"Call-ID: c1@10.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:waihu@10.0.0.1:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)

RESPONSE_COMPACT = (
    b"SIP/2.0 180 Ringing\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\n"
    b"f: <sip:waihu@example.com>;tag=a1\n"
    b"t: <sip:1001@example.com>;tag=b2\n"
    b"i: c1@10.0.0.1\n"
    b"cseq: 1 INVITE\n"
    b"m: <sip:1001@10.0.0.9>\n"
    b"X-Long: first\n"
    b"  second\n"
    b"\tthird\n"
    b"l: 0\n"
    b"\n"
)


# ───────────────────────────── messages ─────────────────────────────


def parse_request(data: bytes = INVITE) -> SipRequest:
    """``data`` parsed; it must be a request."""
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def test_parse_request_with_multiple_vias_and_body() -> None:
    msg = parse_request()
    assert msg.method == "INVITE"
    assert msg.uri == "sip:1001@example.com"
    assert [v.branch for v in msg.vias] == ["z9hG4bKabc", "z9hG4bKdef", "z9hG4bKghi"]
    assert msg.vias[2].host == "2001:db8::1" and msg.vias[2].port == 5080
    assert "rport" in msg.top_via.params and msg.top_via.params["rport"] is None
    assert msg.from_.display == "Robot, Inc."
    assert msg.from_.tag == "a1"
    assert msg.to.tag is None
    assert msg.call_id == "c1@10.0.0.1"
    assert msg.cseq.number == 1 and msg.cseq.method == "INVITE"
    assert msg.body == b"v=0\n"


def test_parse_response_compact_forms_folding_and_bare_lf() -> None:
    msg = parse_message(RESPONSE_COMPACT)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.provisional and not msg.success
    assert msg.headers.get("Call-ID") == "c1@10.0.0.1"
    assert msg.headers.get("CALL-id") == "c1@10.0.0.1"  # names are case-insensitive
    assert msg.headers.get("i") == "c1@10.0.0.1"  # and compact forms work on lookup too
    assert msg.to.tag == "b2"
    assert msg.headers.get_all("Contact") == ["<sip:1001@10.0.0.9>"]
    assert msg.headers.get("X-Long") == "first second third"
    assert msg.body == b""


def test_body_beyond_content_length_is_discarded() -> None:
    data = INVITE + b"extra bytes"
    assert parse_message(data).body == b"v=0\n"


def test_body_without_content_length_runs_to_end_of_datagram() -> None:
    data = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert parse_message(data).body == b"v=0\n"


def test_serialise_round_trip_recomputes_content_length() -> None:
    msg = parse_request()
    msg.body = b"v=0\r\no=x\r\n"
    again = parse_message(msg.to_bytes())
    assert again.body == b"v=0\r\no=x\r\n"
    assert again.headers.get("Content-Length") == str(len(msg.body))
    assert again.headers.get_all("Via") == msg.headers.get_all("Via")
    assert msg.to_bytes().startswith(b"INVITE sip:1001@example.com SIP/2.0\r\nVia: ")


def test_non_utf8_display_name_survives_round_trip() -> None:
    data = INVITE.replace(b'"Robot, Inc."', b'"\xc4\xe3\xba\xc3"')  # GBK, not UTF-8
    assert b'"\xc4\xe3\xba\xc3"' in parse_request(data).to_bytes()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n", "blank line"),
        (INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia", 1), "version"),
        (INVITE.replace(b"INVITE sip:1001@example.com", b"INVITE"), "request line"),
        (INVITE.replace(b"Call-ID: c1@10.0.0.1\r\n", b""), "missing Call-ID"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "differs"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"), "bad CSeq"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"), "too large"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 400"), "Content-Length says"),
        (
            INVITE.replace(b"Content-Length: 4", b"Content-Length: -1"),
            "line 11: Content-Length '-1' is not a number",
        ),
        (INVITE.replace(b"Max-Forwards: 70", b"Max Forwards 70"), "bad header line"),
        (INVITE.replace(b"Via: SIP/2.0/UDP 10.0.0.1", b"Via: SIP/1.0/UDP 10.0.0.1"), "Via"),
        (INVITE.replace(b"<sip:waihu@example.com>", b"<sip:waihu@example.com"), "'>'"),
        (INVITE.replace(b"To: <sip:1001", b"To: <:1001"), "not a URI"),
        (RESPONSE_COMPACT.replace(b"180 Ringing", b"18 Ringing"), "status code"),
        (RESPONSE_COMPACT.replace(b"180 Ringing", b"700 Nope"), "status code"),
        (b" folded: first\r\n\r\n", "request line"),
        (b"\x00\x01\x02garbage\r\n\r\n", "request line"),
    ],
)
def test_malformed_messages_raise_parse_error_naming_the_problem(data: bytes, problem: str) -> None:
    with pytest.raises(SipParseError, match=problem):
        parse_message(data)


def test_random_bytes_only_ever_raise_parse_error() -> None:
    rng = random.Random(7)
    pieces = [b"INVITE ", b"SIP/2.0", b"\r\n", b":", b";", b"Via", b"<", b">", b'"', b"\xff"]
    for _ in range(3000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 30)))
        if rng.random() < 0.3:
            cut = rng.randrange(len(INVITE))
            data = INVITE[:cut] + data + INVITE[cut:]
        try:
            parse_message(data)
        except SipParseError:
            pass


def test_keepalive_detection() -> None:
    assert is_keepalive(b"\r\n\r\n")
    assert is_keepalive(b"\r\n")
    assert not is_keepalive(INVITE)


def test_headers_set_replaces_all_in_place() -> None:
    headers = Headers([("Via", "a"), ("To", "t"), ("v", "b"), ("Route", "r")])
    headers.set("VIA", "c")
    assert list(headers) == [("Via", "c"), ("To", "t"), ("Route", "r")]
    headers.remove("route")
    assert "Route" not in headers and "to" in headers


def test_list_headers_split_on_commas_outside_quotes_and_brackets() -> None:
    headers = Headers([("Contact", '"Doe, John" <sip:a@b;x=1,2>, <sip:c@d>')])
    assert headers.get_all("Contact") == ['"Doe, John" <sip:a@b;x=1,2>', "<sip:c@d>"]
    headers = Headers([("WWW-Authenticate", 'Digest realm="a", nonce="b"')])
    assert headers.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']


def test_make_response_copies_the_transaction_headers_and_adds_a_tag() -> None:
    request = parse_request()
    response = make_response(request, 486, to_tag="zz", extra=[("Server", "x")])
    assert response.reason == "Busy Here"
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.to.tag == "zz"
    assert response.cseq == request.cseq
    again = parse_message(response.to_bytes())
    assert isinstance(again, SipResponse) and again.status == 486
    assert again.headers.get("Server") == "x"


# ───────────────────────────── addresses ─────────────────────────────


def test_sip_uri_parse_and_format() -> None:
    uri = SipUri.parse("sip:alice:secret@Example.com:5070;transport=udp;lr?subject=hi")
    assert uri.user == "alice" and uri.host == "Example.com" and uri.port == 5070
    assert uri.params == {"transport": "udp", "lr": None}
    assert uri.loose_route
    assert str(uri) == "sip:alice@Example.com:5070;transport=udp;lr?subject=hi"
    assert SipUri.parse("sip:[::1]:5060").host == "::1"
    assert str(SipUri.parse("sip:[::1]")) == "sip:[::1]"
    assert SipUri.parse("sip:10.1.1.1").transport_address() == ("10.1.1.1", 5060)


@pytest.mark.parametrize("text", ["tel:+123", "sip:", "sip:@host", "sip:a@host:99999", "sip:a@::1"])
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


def test_name_address_forms() -> None:
    quoted = NameAddress.parse('"A \\"B\\"" <sip:a@b>;tag=1')
    assert quoted.display == 'A "B"' and quoted.tag == "1"
    assert str(quoted) == '"A \\"B\\"" <sip:a@b>;tag=1'
    bare = NameAddress.parse("sip:a@b;tag=2")
    assert bare.tag == "2" and bare.uri.params == {}  # parameters belong to the header
    token = NameAddress.parse("Alice <sip:a@b:5070;lr>")
    assert token.display == "Alice" and token.uri.loose_route
    assert str(NameAddress.parse("<sip:a@b>").with_tag("t")) == "<sip:a@b>;tag=t"


def test_split_host_port() -> None:
    assert split_host_port("h") == ("h", None)
    assert split_host_port("h:1") == ("h", 1)
    assert split_host_port("[::1]:2") == ("::1", 2)
    for bad in ("", "h:", "h:x", "[::1", "::1", "h:70000"):
        with pytest.raises(SipParseError):
            split_host_port(bad)


def test_via_round_trip() -> None:
    via = Via.parse("SIP/2.0/udp 1.2.3.4:5060;branch=z9hG4bKx;rport;received=5.6.7.8")
    assert via.transport == "UDP" and via.params["received"] == "5.6.7.8"
    assert str(via) == "SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bKx;rport;received=5.6.7.8"


# ───────────────────────────── SDP ─────────────────────────────

ANSWER = (
    b"v=0\r\n"
    b"o=- 1 1 IN IP4 192.0.2.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 8 0 96\r\n"
    b"c=IN IP4 192.0.2.7\r\n"
    b"a=rtpmap:96 telephone-event/8000\r\n"
    b"a=sendonly\r\n"
    b"m=video 40002 RTP/AVP 31\r\n"
    b"c=IN IP4 192.0.2.9\r\n"
)


def test_offer_lists_codecs_in_order_with_telephone_event() -> None:
    offer = build_offer(host="10.0.0.1", port=4000, codecs=["PCMA", "PCMU"], session_id=42)
    text = offer.decode()
    assert "\r\nm=audio 4000 RTP/AVP 8 0 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" in text
    assert "a=ptime:20\r\na=sendrecv\r\n" in text
    assert text.startswith("v=0\r\no=waihu 42 1 IN IP4 10.0.0.1\r\n")
    parsed = parse_sdp(offer)
    assert parsed.formats == (8, 0, 101) and parsed.telephone_event_pt == 101


def test_answer_media_level_connection_and_codec_choice() -> None:
    answer = parse_sdp(ANSWER)
    assert (answer.host, answer.port) == ("192.0.2.7", 40000)  # media c= wins, video ignored
    assert answer.direction == "sendonly"
    assert answer.telephone_event_pt == 96
    assert choose_codec(answer, ["PCMU", "PCMA"]) == Codec("PCMA", 8, 8000)  # answer's order
    assert choose_codec(answer, ["PCMU"]) == Codec("PCMU", 0, 8000)


def test_answer_without_common_codec_or_rejected_stream() -> None:
    only_g729 = ANSWER.replace(b"RTP/AVP 8 0 96", b"RTP/AVP 18")
    assert choose_codec(parse_sdp(only_g729), ["PCMU", "PCMA"]) is None
    rejected = ANSWER.replace(b"m=audio 40000", b"m=audio 0")
    assert choose_codec(parse_sdp(rejected), ["PCMU", "PCMA"]) is None


def test_session_level_connection_is_the_default() -> None:
    body = ANSWER.replace(b"c=IN IP4 192.0.2.7\r\n", b"")
    assert parse_sdp(body).host == "192.0.2.1"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "no v= line"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\n", "no m=audio"),
        (b"v=0\r\nm=audio 4 RTP/AVP 0\r\n", "no c="),
        (b"v=1\r\n", "version"),
        (b"v=0\r\nm=audio x RTP/AVP 0\r\n", "line 2: media port 'x' is not a number"),
        (b"v=0\r\nm=audio 4 RTP/AVP 300\r\n", "payload type"),
        (b"v=0\r\nm=audio 4 UDP/TLS 0\r\n", "protocol"),
        (b"v=0\r\nc=IN XX 1.2.3.4\r\n", "bad c="),
        (b"v=0\r\nnonsense\r\n", "type=value"),
        (b"v=0\r\nm=audio 4 RTP/AVP 0\r\na=rtpmap:x\r\n", "rtpmap"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_malformed_sdp(body: bytes, problem: str) -> None:
    with pytest.raises(SdpError, match=problem):
        parse_sdp(body)


def test_answer_direction() -> None:
    assert answer_direction("sendonly") == "recvonly"
    assert answer_direction("recvonly") == "sendonly"
    assert answer_direction("inactive") == "inactive"
    assert answer_direction("sendrecv") == "sendrecv"


# ───────────────────────────── digest ─────────────────────────────

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2069_CHALLENGE = 'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"'
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def rfc7616_challenge(algorithm: str) -> DigestChallenge:
    """The challenge of RFC 7616 §3.9.1's examples."""
    return DigestChallenge(
        realm="http-auth@example.org",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        algorithm=algorithm,
        qop=("auth", "auth-int"),
    )


@pytest.mark.parametrize(
    ("challenge", "password", "cnonce", "response", "qop"),
    [
        pytest.param(
            DigestChallenge.parse(RFC2617_CHALLENGE), "Circle Of Life", "0a4f113b",
            "6629fae49393a05397450978507c4ef1", "auth", id="rfc2617",
        ),
        pytest.param(
            rfc7616_challenge("MD5"), "Circle of Life", RFC7616_CNONCE,
            "8ca523f5e9506fed4657c9700eebdbec", "auth", id="rfc7616-md5",
        ),
        pytest.param(
            rfc7616_challenge("SHA-256"), "Circle of Life", RFC7616_CNONCE,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", "auth",
            id="rfc7616-sha256",
        ),
        pytest.param(
            DigestChallenge.parse(RFC2069_CHALLENGE), "CircleOfLife", "unused",
            "1949323746fe6a43ef61f9606e7febea", None, id="rfc2069-no-qop",
        ),
    ],
)  # fmt: skip
def test_digest_rfc_examples(
    challenge: DigestChallenge, password: str, cnonce: str, response: str, qop: str | None
) -> None:
    """Each RFC's worked example: Mufasa asks for GET /dir/index.html."""
    assert digest_response(
        challenge, method="GET", uri="/dir/index.html", username="Mufasa",
        password=password, cnonce=cnonce,
    ) == (response, qop)  # fmt: skip


def test_authorization_value_rfc2617_worked_example() -> None:
    value = authorization_value(
        DigestChallenge.parse(RFC2617_CHALLENGE), method="GET", uri="/dir/index.html",
        username="Mufasa", password="Circle Of Life", cnonce="0a4f113b",
    )  # fmt: skip
    params = parse_auth_params(value.removeprefix("Digest "))
    assert params == {
        "username": "Mufasa",
        "realm": "testrealm@host.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "uri": "/dir/index.html",
        "response": "6629fae49393a05397450978507c4ef1",
        "algorithm": "MD5",
        "cnonce": "0a4f113b",
        "qop": "auth",
        "nc": "00000001",
        "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
    }


def test_authorization_value_without_qop_rfc2069() -> None:
    challenge = DigestChallenge.parse(RFC2069_CHALLENGE)
    value = authorization_value(challenge, method="GET", uri="/x", username="u", password="p")
    assert "qop" not in value and "cnonce" not in value


def test_choose_challenge_takes_first_supported() -> None:
    chosen = choose_challenge(
        [
            'Digest realm="r", nonce="n1", algorithm=SHA-512-256',
            'Basic realm="r"',
            'Digest realm="r", nonce="n2", algorithm=MD5-sess, qop="auth"',
        ]
    )
    assert chosen.nonce == "n2" and chosen.algorithm == "MD5-sess"
    with pytest.raises(DigestError, match="no usable challenge"):
        choose_challenge(['Digest realm="r", nonce="n", qop="auth-conf"'])
    with pytest.raises(DigestError, match="none given"):
        choose_challenge([])


@pytest.mark.parametrize(
    "value",
    ['Digest nonce="n"', 'Digest realm="r"', 'Digest realm="r, nonce="n"', "Digest realm"],
)
def test_malformed_challenges(value: str) -> None:
    with pytest.raises(DigestError):
        DigestChallenge.parse(value)


# ───────────────────────────── dialog routing ─────────────────────────────

ANSWER_2XX = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport\r\n"
    b"Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n"
    b'From: "Robot, Inc." <sip:waihu@example.com>;tag=a1\r\n'
    b"To: <sip:1001@example.com>;tag=b2\r\n"
    b"Call-ID: c1@10.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:1001@192.0.2.5:5070>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _dialog(answer: bytes = ANSWER_2XX) -> Dialog:
    response = parse_message(answer)
    assert isinstance(response, SipResponse)
    return Dialog.from_answer(parse_request(), response)


def test_dialog_loose_routing_uses_reversed_record_route() -> None:
    dialog = _dialog()
    assert dialog.remote_tag == "b2" and dialog.local_tag == "a1"
    assert str(dialog.next_hop()) == "sip:p1.example.com;lr"
    ack = dialog.request("ACK", via="SIP/2.0/UDP h;branch=z9hG4bKn", cseq=1)
    assert ack.uri == "sip:1001@192.0.2.5:5070"
    assert ack.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert str(ack.cseq) == "1 ACK"
    bye = dialog.request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKm")
    assert str(bye.cseq) == "2 BYE"
    assert bye.to.tag == "b2" and bye.from_.tag == "a1"


def test_dialog_strict_routing_puts_target_last() -> None:
    dialog = _dialog(ANSWER_2XX.replace(b"<sip:p1.example.com;lr>", b"<sip:p1.example.com>"))
    bye = dialog.request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKm")
    assert bye.uri == "sip:p1.example.com"
    assert bye.headers.get_all("Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:1001@192.0.2.5:5070>",
    ]
    assert str(dialog.next_hop()) == "sip:p1.example.com"


def test_dialog_without_record_route_goes_to_contact() -> None:
    dialog = _dialog(
        ANSWER_2XX.replace(
            b"Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n", b""
        )
    )
    bye = dialog.request("BYE", via="SIP/2.0/UDP h;branch=z9hG4bKm")
    assert bye.uri == "sip:1001@192.0.2.5:5070" and bye.headers.get_all("Route") == []
    assert dialog.next_hop().transport_address() == ("192.0.2.5", 5070)


def test_dialog_matches_requests_from_the_far_end_and_orders_cseq() -> None:
    dialog = _dialog()
    bye = parse_request(
        b"BYE sip:waihu@10.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.5:5070;branch=z9hG4bKr\r\n"
        b"From: <sip:1001@example.com>;tag=b2\r\n"
        b"To: <sip:waihu@example.com>;tag=a1\r\n"
        b"Call-ID: c1@10.0.0.1\r\nCSeq: 5 BYE\r\n\r\n"
    )
    assert dialog.matches(bye)
    assert dialog.accept_remote_cseq(bye)
    assert not dialog.accept_remote_cseq(bye)  # same number again: out of order
    other = parse_request(bye.to_bytes().replace(b"tag=b2", b"tag=zz"))
    assert not dialog.matches(other)


def test_dialog_needs_a_to_tag() -> None:
    with pytest.raises(SipParseError, match="To tag"):
        _dialog(ANSWER_2XX.replace(b";tag=b2", b""))


# ───────────────────────────── config ─────────────────────────────


def test_config_defaults_and_validation() -> None:
    cfg = SipTrunkConfig(proxy="sip.example.com:5080")
    assert cfg.proxy_host_port == ("sip.example.com", 5080)
    assert cfg.codecs == ["PCMU", "PCMA"] and cfg.local_port == 5060
    assert SipTrunkConfig(proxy="p", rtp_ports=[10000, 20000]).rtp_ports == (10000, 20000)
    for kwargs, problem in [
        ({"proxy": "p:99999"}, "proxy: must be host or host:port"),
        ({"proxy": "p", "local_port": 70000}, "local_port: must be 0–65535"),
        ({"proxy": "p", "codecs": ["G729"]}, "codecs: must be a non-empty list"),
        ({"proxy": "p", "codecs": []}, "codecs: must be a non-empty list"),
        ({"proxy": "p", "codecs": ["PCMU", "PCMU"]}, "codecs: must be a non-empty list"),
        ({"proxy": "p", "local_host": "example.com"}, "local_host: must be an IPv4 address"),
        ({"proxy": "p", "rtp_ports": [20000, 10000]}, "rtp_ports: must be"),
        ({"proxy": "p", "username": "u"}, "username: username and password go together"),
        ({"proxy": "p", "from_user": "a b"}, "from_user: must be a SIP user name"),
    ]:
        with pytest.raises(ValueError, match=problem):
            SipTrunkConfig(**kwargs)
