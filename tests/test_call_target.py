"""Call targets: what the SIP trunk accepts and how it dials it, what the dispatcher refuses
before a call id is issued, and the reason a failed call files."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from test_call_lifecycle import call_services, load_hello, new_record, observed, storage_in
from test_campaign_scheduler import rig as scheduler_rig
from test_campaign_scheduler import threads_hold_the_clock
from test_dispatcher import idle_dispatcher, running, until

import waihu.api
from waihu.api import BadTarget, CallEvent, CallFailed
from waihu.call import place_call
from waihu.call_lifecycle import CallLifecycle, failure_reason
from waihu.control.client import call_exit_status
from waihu.dispatcher import CallRequest, DispatchRefused, TargetRefused, unknown_name
from waihu.events import EventBus
from waihu.testing.sipp import sipp_peer
from waihu_sip.address import SipUri
from waihu_sip.target import MAX_NUMBER_DIGITS
from waihu_sip.trunk import SipTrunk

from sip_harness import running_trunk

GOOD = "dial a number (digits 0-9, * and #, a leading + for E.164) or a SIP URI (sip:user@host)"
DOMAIN = "127.0.0.1:9"  # the test trunk's proxy, where numbers are sent
TIMEOUT = 30  # seconds of real time; the machine is shared
REAL_TIME_LIMIT = 60  # with sipp as the callee
# simulated seconds: two contacts take a few; a contact dialled again and again never ends
CAMPAIGN_LIMIT = 3600
__all__ = ["observed", "threads_hold_the_clock"]  # fixtures, imported to be used here


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


# ───────────────────────── a failed call says why ─────────────────────────


@pytest.mark.parametrize(
    ("status", "reason", "detail", "error"),
    [
        (484, "Address Incomplete", None, "484 Address Incomplete: too few digits"),
        (486, "Busy Here", None, "486 Busy Here"),
        (404, "Not Found", None, "404 Not Found: no such number"),
        (499, "Odd", None, "499 Odd: the request was refused"),  # the 4xx row
        (302, "Moved", None, "302 Moved"),  # no row of its own: the answer alone
        (
            408,
            "Request Timeout",
            "no answer within 60 s",
            "408 Request Timeout: no answer within 60 s",
        ),
        (480, "", None, "480: switched off, out of reach"),
        (None, None, "trunk: no response", "trunk: no response"),
        (None, None, None, "no final SIP answer, and no other reason known"),
    ],
)
def test_the_failure_reason_is_the_answer_and_what_it_means(
    status: int | None, reason: str | None, detail: str | None, error: str
) -> None:
    assert failure_reason(status, reason, detail) == error


async def test_a_call_failed_with_only_its_sip_answer_files_what_the_answer_means(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, seen = observed
    with trio.fail_after(TIMEOUT):
        async with storage_in(tmp_path) as storage:
            life = CallLifecycle(new_record(), storage=storage, events=bus)
            await life.begin()
            await life.end(sip_status=404, sip_reason="Not Found")
            stored = await storage.get_call("c1")
    assert stored is not None and stored.error == "404 Not Found: no such number"
    assert seen[-1].data["error"] == "404 Not Found: no such number"


async def test_a_target_the_trunk_refuses_when_dialled_files_its_reason(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    """place_call straight to a running SIP trunk (no dispatcher to check first): the 484
    the trunk raises carries the reason into ``error``."""
    bus, seen = observed
    loaded = await load_hello(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with running_trunk(tmp_path, proxy="127.0.0.1:9") as sip:
            async with call_services(tmp_path, bus) as services:
                record = attrs.evolve(new_record(), number="abc")
                await place_call(services, sip, record, loaded)
                stored = await services.storage.get_call(record.id)
    assert (record.status, record.outcome, record.sip_status) == ("failed", "invalid_number", 484)
    assert record.error == (
        "484 Address Incomplete: 'abc' is not a phone number or SIP URI "
        f"('a' does not belong in a phone number): {GOOD}"
    )
    assert stored is not None and stored.error == record.error
    assert seen[-1].kind == "failed" and seen[-1].data["error"] == record.error


async def test_a_call_nobody_answers_files_the_ring_timeout(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    """sipp rings until the SIP trunk gives up at the ring timeout and CANCELs."""
    bus, _seen = observed
    loaded = await load_hello(tmp_path)
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("no_answer.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as sip:
                async with call_services(tmp_path, bus) as services:
                    record = attrs.evolve(new_record(), number="1001")
                    await place_call(services, sip, record, loaded, ring_timeout=1.5)
                result = await peer.wait()
    result.check()
    assert (record.status, record.outcome, record.sip_status) == ("failed", "no_answer", 408)
    assert record.error == "408 Request Timeout: no answer within 1.5 s"


# ───────────────────────── the dispatcher checks before it files ─────────────────────────


async def test_a_bad_target_is_refused_before_an_id_is_issued_and_nothing_is_filed(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(tmp_path) as rig:
            office = rig.trunk("office")
            office.check_target = TRUNK.check_target  # type: ignore[attr-defined]
            request = CallRequest(target="010<1234>;x=1", script="hello", trunk="office")
            with pytest.raises(TargetRefused) as refused:
                rig.dispatcher.start(request)
            assert refused.value.code == "bad_request"
            assert refused.value.message == (
                "'010<1234>;x=1' is not a phone number or SIP URI "
                f"('<' does not belong in a phone number): {GOOD}"
            )
            assert rig.dispatcher.live == {} and office.dialled == []
            assert await rig.providers.storage.recent_calls() == []
            assert rig.events == []
            # the line was never taken: both are free
            for line in [rig.dispatcher.try_acquire_line("office") for _ in range(2)]:
                line.release()
            # a good one is dialled as the trunk writes it, and filed so
            record = rig.dispatcher.start(attrs.evolve(request, target="+86 138-0013-8000"))
            assert record.number == "+8613800138000"
            await until(lambda: not rig.dispatcher.live)
            assert office.dialled[0][0] == "+8613800138000"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ofice", "no trunk named 'ofice' (did you mean 'office'? known: office, branch)"),
        ("BRANCH", "no trunk named 'BRANCH' (did you mean 'branch'? known: office, branch)"),
        ("home", "no trunk named 'home' (known: office, branch)"),
    ],
)
def test_an_unknown_trunk_lists_the_known_ones_and_the_closest(
    tmp_path: Path, name: str, message: str
) -> None:
    with pytest.raises(DispatchRefused) as refused:
        idle_dispatcher(tmp_path).resolve_trunk(name)
    assert (refused.value.code, refused.value.message) == ("not_found", message)


@pytest.mark.parametrize(
    ("name", "known", "message"),
    [
        (
            "helo",
            ["hello", "survey"],
            "no script named 'helo' (did you mean 'hello'? known: hello, survey)",
        ),
        ("x", ["hello", "survey"], "no script named 'x' (known: hello, survey)"),
        ("hello", [], "no script named 'hello' (none loaded)"),
    ],
)
def test_an_unknown_script_lists_the_known_ones_and_the_closest(
    name: str, known: list[str], message: str
) -> None:
    assert unknown_name("script", name, known, none="none loaded") == message


# ───────────────────────── a campaign number the trunk refuses ─────────────────────────


async def test_a_campaign_number_the_trunk_refuses_is_filed_invalid_with_the_reason(
    tmp_path: Path, threads_hold_the_clock: trio.testing.MockClock
) -> None:
    """The trunk's own rule (a stand-in for a carrier that takes only some numbers) refuses
    one contact: it is finished as a bad number, never dialled, never retried."""

    def only_mainland(target: str) -> str:
        if not target.startswith("+86"):
            raise BadTarget(f"{target!r}: this trunk dials +86 numbers only")
        return target

    with trio.fail_after(CAMPAIGN_LIMIT):
        async with scheduler_rig(tmp_path) as r:
            r.trunk.check_target = only_mainland  # type: ignore[attr-defined]
            cid = await r.campaign([("+8613800138000", None), ("+82212345670", None)])
            await r.service.change(cid, "start", user="tester")
            await r.until_state(cid, "completed")
            assert [t for t, _ in r.trunk.dialled] == ["+8613800138000"]
            shown = await r.service.show(cid)
            assert shown["outcomes"] == {"answered": 1, "invalid_number": 1}
            assert shown["contacts"] == {"done": 2}
            attempts = await r.store.campaign_attempts(cid)
            (refused,) = [a for a, c in attempts if c.number == "+82212345670"]
            assert refused.note == "'+82212345670': this trunk dials +86 numbers only"
            assert refused.ended_at is not None and refused.seq == 1
            # nothing was filed as a call for it, and its line came back
            assert await r.store.get_call(refused.call_id) is None
            assert r.dispatcher.live == {}


@pytest.mark.parametrize(
    ("status", "outcome", "exit_status"),
    [
        ("ended", "answered", 0),
        ("ended", "opted_out", 0),  # a conversation took place
        ("failed", "busy", 3),
        ("failed", "no_answer", 3),
        ("failed", "rejected", 3),
        ("failed", "invalid_number", 4),
        ("failed", "unreachable", 4),
        ("failed", "failed", 4),
        ("failed", "interrupted", 4),
    ],
)
def test_call_wait_exits_by_how_the_call_ended(status: str, outcome: str, exit_status: int) -> None:
    assert call_exit_status({"status": status, "outcome": outcome}) == exit_status
