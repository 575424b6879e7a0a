"""The four RFC 3261 §17 transaction machines, digest rounds and target refresh, driven by
hand: no sockets, no clock.

Each test feeds a machine events (start, a message, a timer at a given time)
and checks the actions it returns and when it next wants to be woken. A
hypothesis test throws random event sequences at every machine and checks
the invariants that must hold whatever the network does.
"""

from __future__ import annotations

import hashlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waihu_sip.dialog import Dialog
from waihu_sip.digest import MAX_AUTH_ROUNDS, DigestChallenge, DigestSession, digest_response
from waihu_sip.message import Headers, SipRequest, SipResponse, make_response
from waihu_sip.timers import T1, T2, T4, TIMER_D, TimerSet
from waihu_sip.transaction import (
    Deliver,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    State,
    Terminated,
    TimedOut,
    Transmit,
    ack_for_non_2xx,
)

TIMEOUT = 64 * T1


def req(method: str, *, cseq: int = 1, branch: str = "z9hG4bKtest1") -> SipRequest:
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:bot@example.com>;tag=ours"),
            ("To", "<sip:1001@example.com>"),
            ("Call-ID", "call-1"),
            ("CSeq", f"{cseq} {method}"),
            ("Route", "<sip:proxy.example.com;lr>"),
        ]
    )
    return SipRequest(headers=headers, body=b"", method=method, uri="sip:1001@example.com")


def resp(request: SipRequest, status: int, tag: str = "theirs") -> SipResponse:
    return make_response(request, status, to_tag=tag if status > 100 else None)


def sent(actions: list) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Transmit)]


def delivered(actions: list) -> list:
    return [a.message for a in actions if isinstance(a, Deliver)]


def retransmit_times(machine, until: float) -> list[float]:
    """Fire the machine's timers up to ``until``; the times at which it retransmitted."""
    times = []
    while machine.next_deadline <= until:
        now = machine.next_deadline
        if sent(machine.timer_fired(now)):
            times.append(now)
    return times


# ─────────────── INVITE client ───────────────


def test_invite_client_retransmits_on_timer_a_doubling_without_cap_until_timer_b() -> None:
    invite = req("INVITE")
    tx = InviteClientTransaction(invite)
    assert sent(tx.start(0.0)) == [invite.to_bytes()]
    assert tx.state is State.CALLING
    times = retransmit_times(tx, TIMEOUT - 0.001)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # T1, then doubling with no T2 cap
    actions = tx.timer_fired(TIMEOUT)
    assert TimedOut("B") in actions and Terminated() in actions
    assert tx.terminated and tx.next_deadline == math.inf


def test_invite_client_on_reliable_transport_never_retransmits() -> None:
    tx = InviteClientTransaction(req("INVITE"), reliable=True)
    tx.start(0.0)
    assert tx.next_deadline == TIMEOUT  # only Timer B
    assert retransmit_times(tx, TIMEOUT - 0.001) == []


def test_invite_client_provisional_stops_retransmission_and_goes_up() -> None:
    invite = req("INVITE")
    tx = InviteClientTransaction(invite)
    tx.start(0.0)
    ringing = resp(invite, 180)
    assert delivered(tx.receive(ringing, 0.2)) == [ringing]
    assert tx.state is State.PROCEEDING and tx.heard
    assert retransmit_times(tx, TIMEOUT - 0.001) == []


def test_invite_client_rings_past_timer_b_once_a_provisional_came() -> None:
    invite = req("INVITE")
    tx = InviteClientTransaction(invite)
    tx.start(0.0)
    tx.receive(resp(invite, 100), 0.1)
    assert tx.next_deadline == math.inf and tx.timer_fired(TIMEOUT) == []
    assert tx.heard and tx.state is State.PROCEEDING


def test_invite_client_non_2xx_final_is_acked_once_and_retransmissions_reacked_quietly() -> None:
    invite = req("INVITE")
    tx = InviteClientTransaction(invite)
    tx.start(0.0)
    busy = resp(invite, 486)
    actions = tx.receive(busy, 1.0)
    assert delivered(actions) == [busy]
    (ack,) = sent(actions)
    assert ack == ack_for_non_2xx(invite, busy).to_bytes()
    assert tx.state is State.COMPLETED
    again = tx.receive(busy, 2.0)
    assert sent(again) == [ack] and delivered(again) == []
    assert tx.next_deadline == 1.0 + TIMER_D
    assert tx.timer_fired(1.0 + TIMER_D) == [Terminated()]


def test_invite_client_non_2xx_on_reliable_terminates_at_once() -> None:
    invite = req("INVITE")
    tx = InviteClientTransaction(invite, reliable=True)
    tx.start(0.0)
    actions = tx.receive(resp(invite, 503), 1.0)
    assert Terminated() in actions and tx.terminated


def test_ack_for_non_2xx_copies_the_invite_branch_route_and_the_response_to() -> None:
    invite = req("INVITE", cseq=7)
    ack = ack_for_non_2xx(invite, resp(invite, 404, tag="t404"))
    assert ack.method == "ACK" and ack.uri == invite.uri
    assert ack.top_via.branch == invite.top_via.branch
    assert ack.cseq.number == 7 and ack.cseq.method == "ACK"
    assert ack.to.tag == "t404"
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.from_.tag == "ours" and ack.call_id == invite.call_id


def test_invite_client_2xx_enters_accepted_and_passes_every_2xx_up_until_timer_m() -> None:
    invite = req("INVITE")
    tx = InviteClientTransaction(invite)
    tx.start(0.0)
    ok = resp(invite, 200, tag="a")
    actions = tx.receive(ok, 1.0)
    assert delivered(actions) == [ok] and sent(actions) == []  # the TU ACKs a 2xx
    assert tx.state is State.ACCEPTED and tx.final is ok
    fork = resp(invite, 200, tag="b")
    assert delivered(tx.receive(fork, 1.5)) == [fork]
    assert delivered(tx.receive(ok, 2.0)) == [ok]
    assert delivered(tx.receive(resp(invite, 486), 2.1)) == []
    assert tx.next_deadline == 1.0 + TIMEOUT
    assert tx.timer_fired(1.0 + TIMEOUT) == [Terminated()]
    assert delivered(tx.receive(ok, 40.0)) == []


def test_invite_client_ignores_responses_of_other_methods_and_before_start() -> None:
    invite = req("INVITE")
    tx = InviteClientTransaction(invite)
    assert tx.receive(resp(invite, 200), 0.0) == []
    tx.start(0.0)
    assert tx.receive(resp(req("CANCEL"), 200), 0.1) == []
    assert tx.state is State.CALLING
    assert tx.start(0.2) == []  # starting twice sends nothing


def test_invite_client_refuses_other_methods() -> None:
    with pytest.raises(ValueError):
        InviteClientTransaction(req("BYE"))


# ─────────────── non-INVITE client ───────────────


def test_non_invite_client_timer_e_doubles_to_t2_then_timer_f() -> None:
    bye = req("BYE")
    tx = NonInviteClientTransaction(bye)
    assert sent(tx.start(0.0)) == [bye.to_bytes()]
    times = retransmit_times(tx, TIMEOUT - 0.001)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0]
    assert all(gap == T2 for gap in gaps[3:])
    actions = tx.timer_fired(TIMEOUT)
    assert actions[0] == TimedOut("F") and tx.terminated


def test_non_invite_client_provisional_retransmits_every_t2() -> None:
    bye = req("BYE")
    tx = NonInviteClientTransaction(bye)
    tx.start(0.0)
    assert delivered(tx.receive(resp(bye, 100), 0.1)) != []
    assert tx.state is State.PROCEEDING
    times = retransmit_times(tx, 10.0)
    assert times == [0.5, 4.5, 8.5]


def test_non_invite_client_final_goes_up_once_then_timer_k() -> None:
    bye = req("BYE")
    tx = NonInviteClientTransaction(bye)
    tx.start(0.0)
    ok = resp(bye, 200)
    assert delivered(tx.receive(ok, 0.3)) == [ok]
    assert tx.state is State.COMPLETED and tx.final is ok
    assert tx.receive(ok, 0.4) == []
    assert tx.next_deadline == 0.3 + T4
    assert tx.timer_fired(0.3 + T4) == [Terminated()]


def test_non_invite_client_reliable_no_retransmission_and_no_timer_k() -> None:
    bye = req("BYE")
    tx = NonInviteClientTransaction(bye, reliable=True)
    tx.start(0.0)
    assert tx.next_deadline == TIMEOUT
    actions = tx.receive(resp(bye, 200), 1.0)
    assert Terminated() in actions


def test_non_invite_client_ignores_other_methods_and_refuses_invite() -> None:
    bye = req("BYE")
    tx = NonInviteClientTransaction(bye)
    tx.start(0.0)
    assert tx.receive(resp(req("CANCEL"), 200), 0.1) == []
    with pytest.raises(ValueError):
        NonInviteClientTransaction(req("INVITE"))
    with pytest.raises(ValueError):
        NonInviteClientTransaction(req("ACK"))


# ─────────────── INVITE server ───────────────


def test_invite_server_repeats_last_provisional_to_a_retransmitted_invite() -> None:
    invite = req("INVITE")
    tx = InviteServerTransaction(invite)
    assert tx.receive(invite, 0.0) == []  # nothing sent yet: nothing to repeat
    ringing = resp(invite, 180)
    assert sent(tx.send_response(ringing, 0.1)) == [ringing.to_bytes()]
    assert sent(tx.receive(invite, 0.5)) == [ringing.to_bytes()]
    assert tx.next_deadline == math.inf  # no timer while proceeding


def test_invite_server_2xx_retransmitted_until_ack_then_ack_goes_up_once() -> None:
    invite = req("INVITE")
    tx = InviteServerTransaction(invite)
    ok = resp(invite, 200)
    assert sent(tx.send_response(ok, 0.0)) == [ok.to_bytes()]
    assert tx.state is State.ACCEPTED
    assert retransmit_times(tx, 8.0) == [0.5, 1.5, 3.5, 7.5]  # T1 doubling to T2
    assert tx.receive(invite, 8.1) == []  # RFC 6026: INVITE retransmissions absorbed
    ack = req("ACK")
    assert delivered(tx.receive(ack, 8.2)) == [ack]
    assert tx.receive(ack, 8.3) == []
    assert tx.next_deadline == TIMEOUT  # only Timer L left
    assert tx.timer_fired(TIMEOUT) == [Terminated()]


def test_invite_server_2xx_never_acked_times_out_on_timer_l() -> None:
    invite = req("INVITE")
    tx = InviteServerTransaction(invite)
    tx.send_response(resp(invite, 200), 0.0)
    times = retransmit_times(tx, TIMEOUT - 0.001)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert max(gaps) == T2
    actions = tx.timer_fired(TIMEOUT)
    assert TimedOut("L") in actions and tx.terminated


def test_invite_server_non_2xx_timer_g_until_ack_then_confirmed_timer_i() -> None:
    invite = req("INVITE")
    tx = InviteServerTransaction(invite)
    busy = resp(invite, 486)
    tx.send_response(busy, 0.0)
    assert tx.state is State.COMPLETED
    assert retransmit_times(tx, 4.0) == [0.5, 1.5, 3.5]
    assert sent(tx.receive(invite, 4.1)) == [busy.to_bytes()]
    assert tx.receive(req("ACK"), 4.2) == []
    assert tx.state is State.CONFIRMED and tx.acked
    assert tx.next_deadline == 4.2 + T4
    assert tx.receive(req("ACK"), 4.3) == []
    assert tx.timer_fired(4.2 + T4) == [Terminated()]


def test_invite_server_non_2xx_never_acked_times_out_on_timer_h() -> None:
    invite = req("INVITE")
    tx = InviteServerTransaction(invite)
    tx.send_response(resp(invite, 486), 0.0)
    actions = []
    while not tx.terminated:
        actions += tx.timer_fired(tx.next_deadline)
    assert TimedOut("H") in actions


def test_invite_server_reliable_sends_2xx_once_and_ack_terminates_non_2xx_at_once() -> None:
    invite = req("INVITE")
    tx = InviteServerTransaction(invite, reliable=True)
    tx.send_response(resp(invite, 200), 0.0)
    assert tx.next_deadline == TIMEOUT
    tx2 = InviteServerTransaction(invite, reliable=True)
    tx2.send_response(resp(invite, 486), 0.0)
    assert Terminated() in tx2.receive(req("ACK"), 0.1)


def test_invite_server_sends_nothing_after_its_final() -> None:
    invite = req("INVITE")
    tx = InviteServerTransaction(invite)
    tx.send_response(resp(invite, 200), 0.0)
    assert tx.send_response(resp(invite, 486), 0.1) == []
    assert tx.send_response(resp(invite, 180), 0.1) == []


# ─────────────── non-INVITE server ───────────────


def test_non_invite_server_absorbs_in_trying_repeats_in_proceeding_and_completed() -> None:
    bye = req("BYE")
    tx = NonInviteServerTransaction(bye)
    assert tx.receive(bye, 0.0) == []
    trying = resp(bye, 100)
    tx.send_response(trying, 0.1)
    assert sent(tx.receive(bye, 0.2)) == [trying.to_bytes()]
    ok = resp(bye, 200)
    assert sent(tx.send_response(ok, 0.3)) == [ok.to_bytes()]
    assert sent(tx.receive(bye, 0.4)) == [ok.to_bytes()]
    assert tx.send_response(resp(bye, 500), 0.5) == []
    assert tx.next_deadline == 0.3 + TIMEOUT
    assert tx.timer_fired(0.3 + TIMEOUT) == [Terminated()]
    assert tx.receive(bye, 40.0) == []


def test_non_invite_server_reliable_terminates_with_the_final() -> None:
    bye = req("BYE")
    tx = NonInviteServerTransaction(bye, reliable=True)
    assert Terminated() in tx.send_response(resp(bye, 200), 0.0)


def test_timer_set_reliable_zeroes_d_i_j_k() -> None:
    udp, tcp = TimerSet(), TimerSet(reliable=True)
    assert (udp.d, udp.i, udp.j, udp.k) == (TIMER_D, T4, TIMEOUT, T4)
    assert (tcp.d, tcp.i, tcp.j, tcp.k) == (0, 0, 0, 0)
    assert tcp.timeout == udp.timeout == TIMEOUT


# ─────────────── random event sequences ───────────────

STATUSES = st.sampled_from([100, 180, 183, 200, 202, 302, 401, 486, 503])
CLIENT_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("response"), STATUSES, st.sampled_from(["a", "b"])),
        st.tuples(st.just("timer"), st.floats(0, 5), st.just("")),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(events=CLIENT_EVENTS, reliable=st.booleans(), invite=st.booleans())
def test_client_machines_hold_their_invariants(
    events: list[tuple[str, object, str]], reliable: bool, invite: bool
) -> None:
    """Whatever arrives: the first final goes up exactly once (INVITE: 2xx may repeat), nothing
    is sent after termination, a reliable machine never retransmits its request, deadlines
    never lie in the past, and the machine always terminates once its timers run out."""
    request = req("INVITE" if invite else "OPTIONS")
    machine = (
        InviteClientTransaction(request, reliable=reliable)
        if invite
        else NonInviteClientTransaction(request, reliable=reliable)
    )
    now = 0.0
    first = machine.start(now)
    request_sends = 1
    finals_up = []
    for kind, value, tag in events:
        if kind == "timer":
            now += float(value)  # type: ignore[arg-type]
            actions = machine.timer_fired(now)
        else:
            now += 0.01
            actions = machine.receive(resp(request, int(value), tag), now)  # type: ignore[call-overload]
            actions += machine.timer_fired(now)
        assert machine.next_deadline >= now or machine.next_deadline == math.inf
        request_sends += sent(actions).count(request.to_bytes())
        finals_up += [m for m in delivered(actions) if m.status >= 200]
        if machine.terminated:
            assert machine.next_deadline == math.inf
    assert sent(first) == [request.to_bytes()]
    if reliable:
        assert request_sends == 1
    non_2xx = [m for m in finals_up if not m.success]
    assert len(non_2xx) <= 1
    if non_2xx:
        assert not any(m.success for m in finals_up)
    if not invite:
        assert len(finals_up) <= 1
    # running the clock out ends the machine, except an INVITE that rings (the TU's ring
    # timeout, then CANCEL, ends that)
    for _ in range(100):
        if machine.terminated or machine.next_deadline == math.inf:
            break
        machine.timer_fired(machine.next_deadline)
    if invite and machine.state is State.PROCEEDING:
        assert machine.next_deadline == math.inf
    else:
        assert machine.terminated
        assert machine.receive(resp(request, 200), 1e6) == []


SERVER_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("respond"), STATUSES),
        st.tuples(st.just("retransmit"), st.just(0)),
        st.tuples(st.just("ack"), st.just(0)),
        st.tuples(st.just("timer"), st.integers(0, 8)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(events=SERVER_EVENTS, reliable=st.booleans(), invite=st.booleans())
def test_server_machines_hold_their_invariants(
    events: list[tuple[str, int]], reliable: bool, invite: bool
) -> None:
    """Only responses the TU gave are ever sent, at most one final is accepted from the TU,
    an ACK goes up at most once, and the machine terminates once its timers run out."""
    request = req("INVITE" if invite else "BYE")
    machine = (
        InviteServerTransaction(request, reliable=reliable)
        if invite
        else NonInviteServerTransaction(request, reliable=reliable)
    )
    now = 0.0
    given_by_tu: set[bytes] = set()
    finals_accepted = 0
    acks_up = 0
    for kind, value in events:
        now += 0.01
        if kind == "respond":
            response = resp(request, value)
            actions = machine.send_response(response, now)
            if actions:
                given_by_tu.add(response.to_bytes())
                finals_accepted += value >= 200
        elif kind == "retransmit":
            actions = machine.receive(request, now)
        elif kind == "ack":
            actions = machine.receive(req("ACK"), now) if invite else []
        else:
            now += value
            actions = machine.timer_fired(now)
        assert set(sent(actions)) <= given_by_tu
        acks_up += len(delivered(actions))
        assert machine.next_deadline >= now or machine.next_deadline == math.inf
    assert finals_accepted <= 1
    assert acks_up <= 1
    if finals_accepted:
        for _ in range(200):
            if machine.terminated:
                break
            machine.timer_fired(machine.next_deadline)
        assert machine.terminated


# ─────────────── digest rounds and target refresh (sans-IO too) ───────────────


def www(realm: str, nonce: str, stale: bool = False) -> list[str]:
    return [f'Digest realm="{realm}", nonce="{nonce}", qop="auth"' + (", stale=true" * stale)]


def test_digest_session_rounds_stale_refusal_and_nonce_counts() -> None:
    session = DigestSession("u", "p")
    first = session.respond(407, www("proxy", "n1"), method="INVITE", uri="sip:x", body=b"")
    assert first is not None and [name for name, _ in first] == ["Proxy-Authorization"]
    second = session.respond(401, www("callee", "n2"), method="INVITE", uri="sip:x", body=b"")
    assert second is not None
    assert [name for name, _ in second] == ["Proxy-Authorization", "Authorization"]
    assert second[0] == first[0]  # the proxy's answer is carried on unchanged
    stale = session.respond(
        401, www("callee", "n3", stale=True), method="INVITE", uri="sip:x", body=b""
    )
    assert stale is not None and 'nonce="n3"' in stale[1][1]
    assert session.respond(401, www("callee", "n4"), method="INVITE", uri="sip:x", body=b"") is None
    assert session.problem is not None and "callee" in session.problem


def test_digest_session_counts_nonce_uses_and_gives_up_after_max_rounds() -> None:
    session = DigestSession("u", "p")
    a = session.respond(401, www("a", "same"), method="BYE", uri="sip:x", body=b"")
    b = session.respond(407, www("b", "same"), method="BYE", uri="sip:x", body=b"")
    assert a is not None and b is not None
    assert "nc=00000001" in a[0][1] and "nc=00000002" in b[1][1]
    for round_ in range(MAX_AUTH_ROUNDS - 2):
        headers = www("a", f"s{round_}", stale=True)
        assert session.respond(401, headers, method="BYE", uri="sip:x", body=b"") is not None
    last = www("a", "s-last", stale=True)
    assert session.respond(401, last, method="BYE", uri="sip:x", body=b"") is None


def test_digest_session_unusable_challenge_gives_up_without_raising() -> None:
    session = DigestSession("u", "p")
    assert session.respond(401, ["Basic realm=x"], method="INVITE", uri="sip:x", body=b"") is None
    assert session.respond(401, [], method="INVITE", uri="sip:x", body=b"") is None


def test_digest_response_hashes_a_non_utf8_realm_as_its_bytes() -> None:
    realm = b"caf\xe9".decode("utf-8", "surrogateescape")
    challenge = DigestChallenge(realm=realm, nonce="n")
    response, qop = digest_response(
        challenge, method="INVITE", uri="sip:x", username="u", password="p", cnonce="c"
    )
    ha1 = hashlib.md5(b"u:caf\xe9:p").hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:x").hexdigest()
    assert qop is None and response == hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()


def dialog() -> Dialog:
    invite = req("INVITE")
    ok = make_response(invite, 200, to_tag="t", extra=[("Contact", "<sip:old@10.0.0.1>")])
    return Dialog.from_answer(invite, ok)


def test_refresh_target_follows_a_reinvite_or_update_contact_only() -> None:
    d = dialog()
    assert d.remote_target.user == "old"
    bye = req("BYE")
    bye.headers.add("Contact", "<sip:nope@10.0.0.9>")
    assert not d.refresh_target(bye) and d.remote_target.user == "old"
    update = req("UPDATE")
    update.headers.add("Contact", "<sip:new@10.0.0.2:5070>")
    assert d.refresh_target(update)
    assert (d.remote_target.user, d.remote_target.host, d.remote_target.port) == (
        "new",
        "10.0.0.2",
        5070,
    )
    reinvite = req("INVITE")
    reinvite.headers.add("Contact", "<sip:new@10.0.0.2:5070>")
    assert not d.refresh_target(reinvite)  # the same target: no change
    answer_2xx = make_response(reinvite, 200, extra=[("Contact", "<sip:third@10.0.0.3>")])
    assert d.refresh_target(answer_2xx) and d.remote_target.user == "third"


def test_refresh_target_keeps_the_target_on_a_bad_or_missing_contact() -> None:
    d = dialog()
    reinvite = req("INVITE")
    assert not d.refresh_target(reinvite)
    reinvite.headers.add("Contact", "<<not a uri")
    assert not d.refresh_target(reinvite) and d.remote_target.user == "old"
