"""RFC 4475 as a test: each of the 49 SIP torture messages gets the verdict the RFC gives.

The messages are the RFC's own bytes (tests/data/rfc4475/, see its README).
A valid message must parse and the thing it is about must come out right
(an escaped NUL in a URI, LWS inside a Via, a header count…); an invalid
request must raise ``SipParseError`` carrying the 400 (or 505) a UAS owes
it, ready to send; an invalid response must raise with no answer (it is
dropped). Where RFC 4475 allows either verdict ("it is acceptable to reject
… an element may be liberal") the table says which one we chose.

What it is not: a test of the transport sending that answer (the receive
loop's job), nor of what an application does with a valid but unwelcome
request (416, 420, 415, 406, 501 are the trunk's answers, not the parser's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from waihu_sip.address import AbsoluteUri, NameAddress, SipUri
from waihu_sip.errors import SipParseError
from waihu_sip.message import SipRequest, SipResponse, parse_message
from waihu_sip.sdp import parse_sdp

DATA = Path(__file__).parent / "data" / "rfc4475"
MESSAGES = 49

VALID = "valid"  # RFC 4475: must be accepted as well formed
LIBERAL = "liberal"  # RFC 4475: may be rejected or accepted; we accept
DROP = "drop"  # an invalid response: refused, never answered

# name → (RFC 4475 section, verdict); an int verdict is the status we answer the request with.
VERDICTS: dict[str, tuple[str, str | int]] = {
    "wsinv": ("3.1.1.1", VALID),
    "intmeth": ("3.1.1.2", VALID),
    "esc01": ("3.1.1.3", VALID),
    "escnull": ("3.1.1.4", VALID),
    "esc02": ("3.1.1.5", VALID),
    "lwsdisp": ("3.1.1.6", VALID),
    "longreq": ("3.1.1.7", VALID),
    "dblreq": ("3.1.1.8", VALID),
    "semiuri": ("3.1.1.9", VALID),
    "transports": ("3.1.1.10", VALID),
    "mpart01": ("3.1.1.11", VALID),
    "unreason": ("3.1.1.12", VALID),
    "noreason": ("3.1.1.13", VALID),
    "badinv01": ("3.1.2.1", 400),
    "clerr": ("3.1.2.2", 400),
    "ncl": ("3.1.2.3", 400),
    "scalar02": ("3.1.2.4", 400),
    "scalarlg": ("3.1.2.5", DROP),
    "quotbal": ("3.1.2.6", 400),
    "ltgtruri": ("3.1.2.7", 400),
    "lwsruri": ("3.1.2.8", 400),
    "lwsstart": ("3.1.2.9", 400),  # "acceptable to reject"
    "trws": ("3.1.2.10", LIBERAL),  # "may ignore these extra SP characters"
    "escruri": ("3.1.2.11", 400),  # "acceptable … to reject"
    "baddate": ("3.1.2.12", LIBERAL),  # we never read Date: "shouldn't [reject] unless …"
    "regbadct": ("3.1.2.13", 400),
    "badaspec": ("3.1.2.14", LIBERAL),  # "may ignore the spaces"
    "baddn": ("3.1.2.15", 400),
    "badvers": ("3.1.2.16", 505),
    "mismatch01": ("3.1.2.17", 400),
    "mismatch02": ("3.1.2.18", 400),  # "501 … A 400 Bad Request is also acceptable"
    "bigcode": ("3.1.2.19", DROP),
    "badbranch": ("3.2.1", VALID),  # "must not break"; we fall back to RFC 2543 matching
    "insuf": ("3.3.1", 400),
    "unkscm": ("3.3.2", VALID),  # RFC 4475: a UAS answers 416 Unsupported URI Scheme
    "novelsc": ("3.3.3", VALID),  # likewise 416
    "unksm2": ("3.3.4", VALID),
    "bext01": ("3.3.5", VALID),  # RFC 4475: a UAS answers 420 Bad Extension
    "invut": ("3.3.6", VALID),  # RFC 4475: a UAS answers 415 Unsupported Media Type
    "regaut01": ("3.3.7", VALID),
    "multi01": ("3.3.8", 400),
    "mcl01": ("3.3.9", 400),
    "bcast": ("3.3.10", VALID),
    "zeromf": ("3.3.11", VALID),
    "cparam01": ("3.3.12", VALID),
    "cparam02": ("3.3.13", VALID),
    "regescrt": ("3.3.14", VALID),
    "sdp01": ("3.3.15", VALID),  # RFC 4475: a UAS answers 406 Not Acceptable
    "inv2543": ("3.4.1", VALID),
}
ACCEPTED = sorted(n for n, (_, v) in VERDICTS.items() if v in (VALID, LIBERAL))
ANSWERED = sorted(n for n, (_, v) in VERDICTS.items() if isinstance(v, int))
DROPPED = sorted(n for n, (_, v) in VERDICTS.items() if v == DROP)

# What each refusal must name (the problem, not just "malformed").
REFUSAL_REASONS = {
    "badinv01": r"line 7: Via ';'",
    "clerr": r"line 10: Content-Length says 9999 bytes, the body has 154",
    "ncl": r"line 10: Content-Length '-999' is not a number",
    "scalar02": r"line 5: CSeq number 36893488147419103232 is too large",
    "scalarlg": r"CSeq number 9292394834772304023312 is too large",
    "quotbal": r"line 2: unterminated quoted string",
    "ltgtruri": r"line 1: Request-URI '<sip:user@example.com>' is not a URI",
    "lwsruri": r"line 1: bad request line",
    "lwsstart": r"line 1: bad request line",
    "escruri": r"line 1: Request-URI .* carries \?headers",
    "regbadct": r"line 8: a URI with \?headers must be in <>",
    "baddn": r"no blank line after the headers",
    "badvers": r"line 1: unsupported version 'SIP/7.0'",
    "mismatch01": r"line 6: CSeq method INVITE differs from request OPTIONS",
    "mismatch02": r"line 6: CSeq method INVITE differs from request NEWMETHOD",
    "bigcode": r"line 1: status code '4294967301' is not a number 100-699",
    "insuf": r"missing From",
    "multi01": r"line 8: a second Call-ID \(the first is on line 6\)",
    "mcl01": r"line 9: a second Content-Length \(the first is on line 7\)",
}

# Refused requests whose answer copies the broken part back (or lacks what is missing).
COPIES_THE_FAULT = frozenset({"badinv01", "badvers", "baddn", "insuf", "quotbal", "scalar02"})


def raw(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def request(name: str) -> SipRequest:
    message = parse_message(raw(name))
    assert isinstance(message, SipRequest)
    return message


def response(name: str) -> SipResponse:
    message = parse_message(raw(name))
    assert isinstance(message, SipResponse)
    return message


# ───────────────────────── the files and the table ─────────────────────────


def test_all_49_messages_are_vendored_and_have_a_verdict() -> None:
    names = sorted(p.stem for p in DATA.glob("*.dat"))
    assert len(names) == MESSAGES
    assert names == sorted(VERDICTS)


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_the_files_keep_their_crlf_line_ends(name: str) -> None:
    head = raw(name).split(b"\r\n\r\n", 1)[0]
    assert b"\r\n" in head
    assert b"\n" not in head.replace(b"\r\n", b"")  # no bare LF: nothing converted them


@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_no_message_raises_anything_but_sip_parse_error(name: str) -> None:
    try:
        parse_message(raw(name))
    except SipParseError:
        pass


# ───────────────────────── verdicts ─────────────────────────


@pytest.mark.parametrize("name", ACCEPTED)
def test_valid_messages_parse(name: str) -> None:
    message = parse_message(raw(name))
    assert message.call_id
    assert message.vias


@pytest.mark.parametrize("name", ANSWERED)
def test_invalid_requests_are_refused_with_the_answer_a_uas_owes(name: str) -> None:
    with pytest.raises(SipParseError, match=REFUSAL_REASONS[name]) as refused:
        parse_message(raw(name))
    answer = refused.value.response
    assert refused.value.response_possible
    assert answer is not None
    assert answer.status == VERDICTS[name][1]
    assert not answer.provisional and not answer.success
    # the answer is itself a message a client can read and match to its transaction,
    # unless the fault is in what it must copy back (a Via, From, To or CSeq) or missing
    if name not in COPIES_THE_FAULT:
        assert isinstance(parse_message(answer.to_bytes()), SipResponse)
    original_head = raw(name).split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    assert answer.headers.get("CSeq") is not None
    assert answer.headers.get("CSeq") in original_head.replace("\r\n", "")
    top_via = answer.headers.get_all("Via")[0]
    assert top_via.split(";branch=")[-1] in original_head
    warning = answer.headers.get("Warning") or ""
    assert warning.startswith('399 waihu "') and warning.isascii()


@pytest.mark.parametrize("name", DROPPED)
def test_invalid_responses_are_refused_and_never_answered(name: str) -> None:
    with pytest.raises(SipParseError, match=REFUSAL_REASONS[name]) as refused:
        parse_message(raw(name))
    assert refused.value.response is None
    assert not refused.value.response_possible


# ───────────────────────── what each valid message is about ─────────────────────────


def test_wsinv_lws_and_folding_everywhere() -> None:
    msg = request("wsinv")
    assert msg.method == "INVITE"
    assert msg.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"'  # escaped characters within quotes
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68  # leading zeros
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    # "SIP  /   2.0 /UDP" folded over lines, and a comma-joined pair in compact form
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""  # an empty subject
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contact = NameAddress.parse(msg.headers.get_all("Contact")[0])
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    route = NameAddress.parse(msg.headers.get_all("Route")[0])
    assert isinstance(route.uri, SipUri) and route.uri.loose_route
    assert len(msg.body) == 150
    sdp = parse_sdp(msg.body)
    assert (sdp.host, sdp.port, sdp.formats) == ("192.0.2.4", 49217, (0, 12))


def test_intmeth_unusual_characters_survive() -> None:
    msg = request("intmeth")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~".upper()
    assert msg.cseq.method == msg.method
    assert msg.uri == (
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
        "(doesn't-it)@example.com"
    )
    uri = SipUri.parse(msg.uri)  # '?' and ';' in the user part are not headers or params
    assert (uri.user, uri.host, uri.headers) == (
        "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
        "example.com",
        "",
    )
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"  # quoted-pair expansions
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.params["fromparam''~+*_!.-%"] == "работающий"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.max_forwards == 255
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escapes_are_kept_as_written() -> None:
    msg = request("esc01")
    uri = SipUri.parse(msg.uri)
    assert (uri.user, uri.host) == ("sips%3Auser%40example.com", "example.net")
    assert msg.to.uri == SipUri(host="example.com", user="%75se%72")
    assert isinstance(msg.from_.uri, SipUri) and msg.from_.uri.user == "I%20have%20spaces"
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact i:
    contact = NameAddress.parse(msg.headers.get_all("Contact")[0])  # folded value
    assert contact.uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    assert msg.headers.get("Content-Type") == "application/sdp"  # compact c:


def test_escnull_two_distinct_contacts_with_escaped_nulls() -> None:
    msg = request("escnull")
    assert msg.method == "REGISTER"
    assert msg.to.uri == SipUri(host="example.com", user="null-%00-null")
    contacts = [NameAddress.parse(c).uri for c in msg.headers.get_all("Contact")]
    assert [c.user for c in contacts if isinstance(c, SipUri)] == ["%00", "%00%00"]


def test_esc02_percent_is_not_an_escape_in_methods_and_header_names() -> None:
    msg = request("esc02")
    assert msg.method == "RE%47IST%45R"  # not REGISTER
    assert msg.cseq.method == "RE%47IST%45R"
    assert msg.to.display == "%Z%45"
    assert msg.headers.get_all("Contact") == [
        "<sip:alias1@host1.example.com>",
        "<sip:alias3@host3.example.com>",
    ]  # two Contacts, not three
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"


def test_lwsdisp_display_name_without_space_before_angle() -> None:
    msg = request("lwsdisp")
    assert (msg.from_.display, msg.from_.tag) == ("caller", "323")


def test_longreq_every_header_and_value_is_kept() -> None:
    msg = request("longreq")
    assert len(list(msg.headers)) == 43
    assert len(msg.vias) == 34  # Via, v, V, ViA, "V  :" … all the same header
    assert [v.host for v in msg.vias[:3]] == [
        "sip33.example.com",
        "sip32.example.com",
        "sip31.example.com",
    ]
    assert msg.vias[-1].params["received"] == "192.0.2.5"
    assert msg.to.display is not None and len(msg.to.display) == 103
    assert msg.from_.tag is not None and len(msg.from_.tag) == 155
    assert len(msg.call_id) == 141
    assert len(msg.body) == 150


def test_dblreq_bytes_after_the_body_are_ignored() -> None:
    msg = request("dblreq")
    assert msg.method == "REGISTER"
    assert msg.body == b""  # the INVITE that follows in the datagram is noise (§18.3)
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"


def test_semiuri_semicolon_in_the_user_part() -> None:
    msg = request("semiuri")
    uri = SipUri.parse(msg.uri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", {})
    assert len(msg.headers.get_all("Accept")) == 6  # folded, comma-separated


def test_transports_every_via_transport_is_read() -> None:
    msg = request("transports")
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_framed_by_content_length() -> None:
    msg = request("mpart01")
    assert len(msg.body) == 553
    assert b"\x00" in msg.body
    assert (msg.headers.get("Content-Type") or "").startswith("multipart/mixed")


def test_unreason_utf8_reason_phrase() -> None:
    msg = response("unreason")
    assert msg.status == 200
    assert msg.reason.startswith("= 2**3 * 5**2 но сто девяносто девять")


def test_noreason_empty_reason_phrase() -> None:
    msg = response("noreason")
    assert (msg.status, msg.reason) == (100, "")


def test_badbranch_bare_magic_cookie_does_not_break() -> None:
    assert request("badbranch").top_via.branch == "z9hG4bK"


@pytest.mark.parametrize(
    ("name", "uri"),
    [
        ("unkscm", "nobodyKnowsThisScheme:totallyopaquecontent"),
        ("novelsc", "soap.beep://192.0.2.103:3002"),
    ],
)
def test_request_uris_of_other_schemes_parse_and_are_not_sip(name: str, uri: str) -> None:
    msg = request(name)
    assert msg.uri == uri
    with pytest.raises(SipParseError, match="not a sip: URI"):
        SipUri.parse(msg.uri)  # what tells the application to answer 416


def test_unksm2_from_to_and_contact_of_other_schemes() -> None:
    msg = request("unksm2")
    assert msg.to.uri == AbsoluteUri(scheme="isbn", rest="2983792873")
    assert msg.from_.uri == AbsoluteUri(scheme="http", rest="//www.example.com")
    assert msg.from_.tag == "3234233"
    contact = NameAddress.parse(msg.headers.get_all("Contact")[0], any_scheme=True)
    assert str(contact.uri) == "name:John_Smith"
    with pytest.raises(SipParseError, match="not a sip: URI"):  # nothing can be sent there
        NameAddress.parse(msg.headers.get_all("Contact")[0])


def test_bext01_require_and_proxy_require_are_read() -> None:
    msg = request("bext01")
    assert msg.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert msg.headers.get_all("Proxy-Require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]


def test_invut_unknown_body_type_is_carried() -> None:
    msg = request("invut")
    assert msg.headers.get("Content-Type") == "application/unknownformat"
    assert len(msg.body) == 40


def test_regaut01_unknown_authorization_scheme_is_carried() -> None:
    msg = request("regaut01")
    assert msg.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert msg.body == b""  # "Content-Length:0" without a space


def test_bcast_broadcast_address_in_a_lower_via() -> None:
    msg = response("bcast")
    assert [v.host for v in msg.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf_max_forwards_zero() -> None:
    assert request("zeromf").max_forwards == 0


def test_cparam01_parameter_after_a_bare_uri_is_the_contacts() -> None:
    contact = NameAddress.parse(request("cparam01").headers.get_all("Contact")[0])
    assert contact.params == {"unknownparam": None}
    assert isinstance(contact.uri, SipUri) and contact.uri.params == {}


def test_cparam02_parameter_inside_angles_is_the_uris() -> None:
    contact = NameAddress.parse(request("cparam02").headers.get_all("Contact")[0])
    assert contact.params == {}
    assert isinstance(contact.uri, SipUri) and contact.uri.params == {"unknownparam": None}


def test_regescrt_escaped_header_inside_angles() -> None:
    msg = request("regescrt")
    contact = NameAddress.parse(msg.headers.get_all("Contact")[0])  # compact M:
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_sdp01_accept_is_carried() -> None:
    msg = request("sdp01")
    assert msg.headers.get_all("Accept") == ["text/nobodyKnowsThis"]
    assert parse_sdp(msg.body).formats == (0, 12)


def test_inv2543_rfc_2543_request_parses() -> None:
    msg = request("inv2543")
    assert msg.top_via.branch is None
    assert msg.max_forwards is None
    assert msg.to.tag is None
    assert msg.to.params == {"user": "phone"}  # after a bare URI: the header's (§20.10)


def test_liberal_choices_read_what_was_meant() -> None:
    assert request("trws").uri == "sip:remote-target@example.com"
    to = request("badaspec").to
    assert isinstance(to.uri, SipUri) and to.uri.user == "t.watson"
    assert request("baddate").headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


# ───────────────────────── the refusals, one reason each ─────────────────────────


def test_baddn_unquoted_display_name_with_a_comma_is_refused() -> None:
    # the archived file lacks the final blank line; with it, the display name is the fault
    with pytest.raises(SipParseError, match=r"line 4: display name 'Bell, Alexander' must be"):
        parse_message(raw("baddn") + b"\r\n")


@pytest.mark.parametrize(
    ("value", "display"),
    [
        ("caller<sip:caller@example.com>", "caller"),  # lwsdisp
        ("1001@10.0.0.1 (desk) <sip:1001@10.0.0.1>", "1001@10.0.0.1 (desk)"),  # as phones write
        ("张三 <sip:8001@pbx.example.com>", "张三"),
    ],
)
def test_unquoted_display_names_that_split_nothing_are_read(value: str, display: str) -> None:
    assert NameAddress.parse(value).display == display


@pytest.mark.parametrize("display", ["Bell, Alexander", "a;b", "a\\b", "tab\x00nul", "del\x7f"])
def test_unquoted_display_names_that_would_split_or_hide_are_refused(display: str) -> None:
    with pytest.raises(SipParseError, match="must be quoted"):
        NameAddress.parse(f"{display} <sip:a@example.com>")


def test_multi01_each_duplicated_single_header_is_refused() -> None:
    base = raw("mcl01").replace(b"Content-Length: 5\r\n", b"")
    parse_message(base)  # one of each: fine
    for header in (
        b"Call-ID: x@y",
        b"CSeq: 2 OPTIONS",
        b"From: <sip:a@b>;tag=1",
        b"To: <sip:c@d>",
        b"Max-Forwards: 9",
        b"l: 13",
        b"i: x@y",  # the compact form is the same header
    ):
        with pytest.raises(SipParseError, match="a second "):
            parse_message(base.replace(b"Content-Type:", header + b"\r\nContent-Type:"))


def test_lower_case_sip_version_is_accepted() -> None:
    """RFC 3261 §7.1: the SIP-Version string is case-insensitive."""
    lower = raw("zeromf").replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1)
    lower = lower.replace(b"Via: SIP/2.0/UDP", b"Via: sip/2.0/udp")
    msg = parse_message(lower)
    assert isinstance(msg, SipRequest) and msg.top_via.transport == "UDP"
    status = raw("noreason").replace(b"SIP/2.0 100", b"sip/2.0 100", 1)
    assert parse_message(status).status == 100  # type: ignore[union-attr]


def test_an_ack_that_does_not_parse_is_never_answered() -> None:
    ack = raw("mismatch01").replace(b"OPTIONS sip:", b"ACK sip:", 1)
    with pytest.raises(SipParseError) as refused:
        parse_message(ack)
    assert refused.value.response is None


def test_a_request_without_a_usable_via_is_not_answered() -> None:
    no_via = raw("insuf").replace(b"Via: SIP/2.0/UDP 192.0.2.95", b"Via: nonsense", 1)
    with pytest.raises(SipParseError) as refused:
        parse_message(no_via)
    assert refused.value.response is None


def test_the_answer_adds_a_to_tag_when_the_request_had_none() -> None:
    with pytest.raises(SipParseError) as refused:
        parse_message(raw("ltgtruri"))
    answer = refused.value.response
    assert answer is not None
    assert NameAddress.parse(answer.headers.get("To") or "").tag
    assert answer.call_id == "ltgtruri.1@192.0.2.5"


def test_a_body_one_byte_short_of_its_content_length_is_refused() -> None:
    """clerr's 9999 is far off; framing must also hold at the edge (RFC 3261 §18.3)."""
    exact = raw("invut")  # Content-Length: 40, a 40-byte body
    assert len(request("invut").body) == 40
    with pytest.raises(SipParseError, match="Content-Length says 40 bytes, the body has 39"):
        parse_message(exact[:-1])
