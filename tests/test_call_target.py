"""Call targets: what the SIP trunk accepts and how it dials it, what the dispatcher refuses
before a call id is issued, and the reason a failed call files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import waihu.api
from waihu.api import BadTarget, CallFailed
from waihu_sip.address import SipUri
from waihu_sip.target import MAX_NUMBER_DIGITS
from waihu_sip.trunk import SipTrunk

GOOD = "dial a number (digits 0-9, * and #, a leading + for E.164) or a SIP URI (sip:user@host)"
DOMAIN = "127.0.0.1:9"  # the test trunk's proxy, where numbers are sent


def trunk(tmp_path: Path | None = None) -> SipTrunk:
    """A SIP trunk built as the core builds it, not started: checking a target needs no I/O."""
    context = waihu.api.ProviderContext(
        name="office",
        state_dir=tmp_path or Path("/nonexistent"),
        log=logging.getLogger("waihu.test.target"),
        cpu_limiter=trio.CapacityLimiter(1),
    )
    return SipTrunk(SipTrunk.Config(proxy=DOMAIN, local_port=0), context)


TRUNK = trunk()


# ───────────────────────── what the SIP trunk accepts ─────────────────────────


@pytest.mark.parametrize(
    ("target", "dialled", "uri"),
    [
        ("1001", "1001", "sip:1001@127.0.0.1:9"),
        ("  1001\n", "1001", "sip:1001@127.0.0.1:9"),
        ("+86 138-0013-8000", "+8613800138000", "sip:+8613800138000@127.0.0.1:9"),
        ("(010) 6552.9988", "01065529988", "sip:01065529988@127.0.0.1:9"),
        ("*99#", "*99#", "sip:*99%23@127.0.0.1:9"),
        ("tel:+8613800138000;phone-context=x", "+8613800138000", "sip:+8613800138000@127.0.0.1:9"),
        ("alice@example.com", "sip:alice@example.com", "sip:alice@example.com"),
        ("sip:bob@10.0.0.1:5070", "sip:bob@10.0.0.1:5070", "sip:bob@10.0.0.1:5070"),
        ("SIP:bob:secret@PBX.example.com;Lr", "sip:bob@PBX.example.com;lr", None),
        ("sips:1001@[::1]:5061;transport=tls", "sips:1001@[::1]:5061;transport=tls", None),
        ("sip:*99#@pbx.example.com", "sip:*99%23@pbx.example.com", None),
        (
            "1" * MAX_NUMBER_DIGITS,
            "1" * MAX_NUMBER_DIGITS,
            f"sip:{'1' * MAX_NUMBER_DIGITS}@{DOMAIN}",
        ),
    ],
)
def test_good_targets_are_dialled_as_written_canonically(
    target: str, dialled: str, uri: str | None
) -> None:
    assert TRUNK.check_target(target) == dialled
    assert str(TRUNK.target_uri(target)) == (uri or dialled)
    assert waihu.api.check_target(TRUNK, target) == dialled  # what the core asks


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", f"the target is empty: {GOOD}"),
        (
            "abc",
            f"'abc' is not a phone number or SIP URI ('a' does not belong in a phone number): "
            f"{GOOD}",
        ),
        (
            "010<1234>;x=1",
            "'010<1234>;x=1' is not a phone number or SIP URI "
            f"('<' does not belong in a phone number): {GOOD}",
        ),
        ("sip:@", f"'sip:@' is not a SIP URI to dial (empty user part): {GOOD}"),
        ("sip:", f"'sip:' is not a SIP URI to dial (empty host): {GOOD}"),
        (
            "sip:example.com",
            "'sip:example.com' is not a SIP URI to dial "
            f"(no user: it looks like sip:1001@pbx.example.com): {GOOD}",
        ),
        (
            "1²3",
            f"'1²3' is not a phone number or SIP URI ('²' is not one of the digits 0-9): {GOOD}",
        ),
        (
            "١٢",
            f"'١٢' is not a phone number or SIP URI ('١' is not one of the digits 0-9): {GOOD}",
        ),
        ("+", f"'+' has no digits: {GOOD}"),
        ("*#", f"'*#' has no digits: {GOOD}"),
        ("12+3", f"'12+3': '+' may only lead a number (+8613800138000): {GOOD}"),
        ("+*1", f"'+*1': only digits may follow a leading '+' (E.164): {GOOD}"),
        (
            "1" * (MAX_NUMBER_DIGITS + 1),
            f"'{'1' * (MAX_NUMBER_DIGITS + 1)}' is too long for a phone number "
            f"({MAX_NUMBER_DIGITS + 1} digits, at most {MAX_NUMBER_DIGITS}): {GOOD}",
        ),
        (
            "sip:bob@999.1.1.1",
            "'sip:bob@999.1.1.1' is not a SIP URI to dial "
            f"('999.1.1.1' is not a host name or IP address): {GOOD}",
        ),
        (
            "sip:bob@exa_mple.com",
            "'sip:bob@exa_mple.com' is not a SIP URI to dial "
            f"('exa_mple.com' is not a host name or IP address): {GOOD}",
        ),
        (
            "sip:bob@host:99999",
            "'sip:bob@host:99999' is not a SIP URI to dial "
            f"(bad port '99999' in 'host:99999'): {GOOD}",
        ),
        (
            "sip:1001@host:٥٠٦٠",
            f"'sip:1001@host:٥٠٦٠' is not a SIP URI to dial ('٥' does not belong in a URI): {GOOD}",
        ),
        (
            "sip:bob@host?Subject=hi",
            "'sip:bob@host?Subject=hi' is not a SIP URI to dial "
            f"(a Request-URI takes no ?headers): {GOOD}",
        ),
        (
            "sip:b<o>b@host",
            "'sip:b<o>b@host' is not a SIP URI to dial "
            f"(user 'b<o>b' has characters a SIP URI does not allow unescaped): {GOOD}",
        ),
        (
            'sip:bob@host;x=a"b',
            "'sip:bob@host;x=a\"b' is not a SIP URI to dial "
            f"(unterminated quoted string in 'x=a\"b'): {GOOD}",
        ),
        (
            "sip:bob@host;x=a{b",
            f"'sip:bob@host;x=a{{b' is not a SIP URI to dial (parameter 'x' is malformed): {GOOD}",
        ),
        (
            "bob@-bad-.com",
            "'bob@-bad-.com' is not a SIP URI to dial "
            f"('-bad-.com' is not a host name or IP address): {GOOD}",
        ),
    ],
)
def test_bad_targets_are_refused_saying_why_and_what_would_do(target: str, message: str) -> None:
    with pytest.raises(BadTarget) as refused:
        TRUNK.check_target(target)
    assert str(refused.value) == message


def test_a_uri_longer_than_anyone_types_is_refused() -> None:
    target = f"sip:{'a' * 300}@example.com"
    with pytest.raises(BadTarget, match=r"\(316 characters, at most 256\)"):
        TRUNK.check_target(target)


def test_dialling_a_bad_target_is_484_caused_by_the_reason() -> None:
    with pytest.raises(CallFailed) as failed:
        TRUNK.target_uri("abc")
    assert (failed.value.status, failed.value.reason) == (484, "Address Incomplete")
    assert isinstance(failed.value.__cause__, BadTarget)
    assert "'abc' is not a phone number" in str(failed.value.__cause__)


def test_a_trunk_without_check_target_gets_the_target_back_stripped() -> None:
    assert waihu.api.check_target(object(), "  abc ") == "abc"


# ───────────────────────── whatever is accepted dials as a URI ─────────────────────────

_HOSTS = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z]{2,5}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
_USERS = st.text(alphabet="0123456789abcXYZ+*#-_.!~'()&=$,/%;?<>@:² ", min_size=0, max_size=12)
_URIS = st.builds(
    lambda scheme, user, host, port, params: f"{scheme}{user}@{host}{port}{params}",
    st.sampled_from(["sip:", "sips:", "SIP:", ""]),
    _USERS,
    _HOSTS,
    st.sampled_from(["", ":5060", ":0", ":65535", ":70000", ":5x"]),
    st.sampled_from(["", ";lr", ";transport=udp", ";x=", ";=y", ';x="q"', ";a;b=c"]),
)
_NUMBERS = st.text(alphabet="0123456789+*#-(). ²١abc<>;:@", min_size=0, max_size=30)
_TARGETS = st.one_of(_URIS, _NUMBERS, st.text(max_size=20), _NUMBERS.map(lambda n: f"tel:{n}"))


@given(_TARGETS)
@settings(max_examples=400)
def test_whatever_is_accepted_becomes_a_uri_that_parses_back(target: str) -> None:
    try:
        dialled = TRUNK.check_target(target)
    except BadTarget:
        return
    uri = TRUNK.target_uri(target)
    assert SipUri.parse(str(uri)) == uri  # the INVITE's Request-URI reads back as sent
    assert TRUNK.check_target(dialled) == dialled  # what is filed dials the same again
    assert TRUNK.target_uri(dialled) == uri
    assert uri.user and uri.host
    assert str(uri).isascii() and " " not in str(uri)
    if not dialled.startswith(("sip:", "sips:")):
        assert set(dialled) <= set("0123456789*#+")  # a number: ASCII digits only
