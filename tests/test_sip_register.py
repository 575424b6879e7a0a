"""The REGISTER client's rules, without sockets: what each REGISTER carries, what each answer
means, when the binding is refreshed and how failures are paced.

``RegisterClient`` is sans-IO, so its rules are tested with plain messages; the answers are
built here as a registrar would write them. ``keep_registered``'s pacing runs under a
MockClock against a registrar played by a small function (a fake peer: the client is the
thing under test; the real registrar is kamailio in test_sip_register_peers.py). The trunk's
``registered``/``failing`` state and the new config keys are tested last.
"""

from __future__ import annotations

import hashlib

import pytest
import trio
import trio.testing

from waihu_sip.address import NameAddress, SipUri
from waihu_sip.config import SipTrunkConfig
from waihu_sip.digest import DigestChallenge, parse_auth_params
from waihu_sip.health import Backoff, ProbeResult, TrunkHealth
from waihu_sip.identity import LocalIdentity
from waihu_sip.message import SipRequest, SipResponse, make_response
from waihu_sip.registration import (
    MAX_AUTH_ROUNDS,
    Refused,
    RegisterClient,
    Registered,
    Resend,
    keep_registered,
    refresh_delay,
)
from waihu_sip.trunk import SipTrunk

IDENTITY = LocalIdentity(host="192.0.2.10", port=5072, user="waihu", user_agent="waihu-test")
AOR = SipUri(host="example.net", user="robot")
REGISTRAR = SipUri(host="example.net")
PASSWORD = "pw-1"
MD5 = 'Digest realm="example.net", nonce="n-md5", qop="auth", algorithm=MD5'
SHA = 'Digest realm="example.net", nonce="n-sha", qop="auth", algorithm=SHA-256'


def client(**changes: object) -> RegisterClient:
    settings: dict[str, object] = {
        "aor": AOR,
        "registrar": REGISTRAR,
        "contact_user": "waihu",
        "expires": 600,
        "username": "robot",
        "password": PASSWORD,
    }
    settings.update(changes)
    return RegisterClient(**settings)  # type: ignore[arg-type]


def answer(
    request: SipRequest, status: int, *headers: tuple[str, str], reason: str | None = None
) -> SipResponse:
    response = make_response(request, status, to_tag="reg1", extra=list(headers))
    if reason is not None:
        response.reason = reason
    return response


def ok(request: SipRequest, expires: int | None = None) -> SipResponse:
    """A 200 listing our Contact with ``expires`` (default: as asked)."""
    contact = NameAddress.parse(request.headers.get("Contact") or "")
    seconds = expires if expires is not None else contact.params["expires"]
    return answer(request, 200, ("Contact", f"<{contact.uri}>;expires={seconds}"))


def credentials(request: SipRequest, header: str = "Authorization") -> dict[str, str]:
    value = request.headers.get(header)
    assert value is not None, request.headers
    return parse_auth_params(value.removeprefix("Digest "))


# ───────────────────────── what a REGISTER carries ─────────────────────────


def test_a_register_names_the_aor_our_contact_and_asks_for_the_expiry() -> None:
    request = client().request(IDENTITY)
    assert (request.method, request.uri) == ("REGISTER", "sip:example.net")
    assert request.to.uri == AOR and request.to.tag is None
    assert request.from_.uri == AOR and request.from_.tag
    contact = NameAddress.parse(request.headers.get("Contact") or "")
    assert str(contact.uri) == "sip:waihu@192.0.2.10:5072"
    assert contact.params["expires"] == "600"
    assert request.headers.get("Expires") == "600"
    assert request.headers.get("Route") is None
    assert request.headers.get("Authorization") is None


def test_one_call_id_for_the_registration_and_the_cseq_grows() -> None:
    registration = client()
    requests = [registration.request(IDENTITY) for _ in range(3)]
    assert len({r.call_id for r in requests}) == 1
    assert [r.cseq.number for r in requests] == [1, 2, 3]
    assert len({r.top_via.branch for r in requests}) == 3  # a new transaction each time
    assert len({r.from_.tag for r in requests}) == 1


def test_an_outbound_proxy_route_is_carried() -> None:
    request = client(route="<sip:192.0.2.99:5070;lr>").request(IDENTITY)
    assert request.headers.get_all("Route") == ["<sip:192.0.2.99:5070;lr>"]


# ───────────────────────── digest ─────────────────────────


def test_a_challenge_is_answered_with_a_correct_md5_digest() -> None:
    registration = client()
    first = registration.request(IDENTITY)
    assert isinstance(
        registration.on_response(answer(first, 401, ("WWW-Authenticate", MD5))), Resend
    )
    second = registration.request(IDENTITY)
    params = credentials(second)
    assert (params["username"], params["realm"], params["nonce"]) == (
        "robot",
        "example.net",
        "n-md5",
    )
    assert params["uri"] == "sip:example.net" and params["algorithm"] == "MD5"
    ha1 = hashlib.md5(f"robot:example.net:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:example.net").hexdigest()
    expected = hashlib.md5(
        f"{ha1}:n-md5:{params['nc']}:{params['cnonce']}:auth:{ha2}".encode()
    ).hexdigest()
    assert params["response"] == expected


def test_sha256_is_chosen_over_md5_whatever_the_order() -> None:
    for offered in ([MD5, SHA], [SHA, MD5]):
        registration = client()
        first = registration.request(IDENTITY)
        registration.on_response(answer(first, 401, *[("WWW-Authenticate", v) for v in offered]))
        assert credentials(registration.request(IDENTITY))["algorithm"] == "SHA-256"


def test_a_407_is_answered_with_proxy_authorization() -> None:
    registration = client()
    first = registration.request(IDENTITY)
    registration.on_response(answer(first, 407, ("Proxy-Authenticate", MD5)))
    second = registration.request(IDENTITY)
    assert credentials(second, "Proxy-Authorization")["nonce"] == "n-md5"
    assert second.headers.get("Authorization") is None


def test_the_auth_username_is_used_when_it_differs() -> None:
    registration = client(username="acct-77")
    registration.on_response(answer(registration.request(IDENTITY), 401, ("WWW-Authenticate", MD5)))
    request = registration.request(IDENTITY)
    assert credentials(request)["username"] == "acct-77"
    assert request.to.uri.user == "robot"


def test_a_second_challenge_to_fresh_credentials_means_a_wrong_password() -> None:
    registration = client()
    registration.on_response(answer(registration.request(IDENTITY), 401, ("WWW-Authenticate", MD5)))
    again = answer(registration.request(IDENTITY), 401, ("WWW-Authenticate", MD5))
    outcome = registration.on_response(again)
    assert isinstance(outcome, Refused)
    assert (outcome.status, outcome.retry_in) == (401, 5.0)
    assert "credentials for 'robot' not accepted" in outcome.problem


def test_a_stale_nonce_is_answered_again_up_to_a_limit() -> None:
    stale = MD5.replace("n-md5", "n-new") + ", stale=true"
    registration = client()
    registration.on_response(answer(registration.request(IDENTITY), 401, ("WWW-Authenticate", MD5)))
    outcomes = []
    for _ in range(MAX_AUTH_ROUNDS):
        request = registration.request(IDENTITY)
        outcomes.append(registration.on_response(answer(request, 401, ("WWW-Authenticate", stale))))
    assert [type(o) for o in outcomes] == [Resend] * (MAX_AUTH_ROUNDS - 1) + [Refused]
    registration2 = client()
    registration2.on_response(
        answer(registration2.request(IDENTITY), 401, ("WWW-Authenticate", MD5))
    )
    registration2.on_response(
        answer(registration2.request(IDENTITY), 401, ("WWW-Authenticate", stale))
    )
    assert credentials(registration2.request(IDENTITY))["nonce"] == "n-new"


def test_the_last_challenge_is_reused_on_refresh_with_the_nonce_count_raised() -> None:
    registration = client()
    registration.on_response(answer(registration.request(IDENTITY), 401, ("WWW-Authenticate", SHA)))
    second = registration.request(IDENTITY)
    assert isinstance(registration.on_response(ok(second)), Registered)
    refresh = registration.request(IDENTITY)
    assert credentials(second)["nc"] == "00000001"
    assert credentials(refresh)["nc"] == "00000002"
    assert credentials(refresh)["nonce"] == "n-sha"
    # a registrar that forgot that nonce challenges the preemptive answer: answered once more
    outcome = registration.on_response(
        answer(refresh, 401, ("WWW-Authenticate", SHA.replace("n-sha", "n-sha2")))
    )
    assert isinstance(outcome, Resend)


def test_a_realm_that_offered_sha256_is_never_answered_with_md5() -> None:
    registration = client()
    registration.on_response(answer(registration.request(IDENTITY), 401, ("WWW-Authenticate", SHA)))
    registration.on_response(ok(registration.request(IDENTITY)))
    refresh = registration.request(IDENTITY)
    outcome = registration.on_response(answer(refresh, 401, ("WWW-Authenticate", MD5)))
    assert isinstance(outcome, Refused) and outcome.downgrade
    assert "offers only MD5 where it offered SHA-256 before" in outcome.problem
    # and the next attempt does not answer the MD5 challenge either
    assert registration.request(IDENTITY).headers.get("Authorization") is None
    # another realm may still use MD5
    other = client()
    other.on_response(answer(other.request(IDENTITY), 401, ("WWW-Authenticate", MD5)))
    assert credentials(other.request(IDENTITY))["algorithm"] == "MD5"


def test_a_challenge_without_a_password_or_usable_digest_is_a_failure() -> None:
    registration = client(username=None, password=None)
    outcome = registration.on_response(
        answer(registration.request(IDENTITY), 401, ("WWW-Authenticate", MD5))
    )
    assert isinstance(outcome, Refused) and "no password is configured" in outcome.problem
    registration = client()
    odd = 'Digest realm="x", nonce="y", algorithm=SHA-512-256'
    outcome = registration.on_response(
        answer(registration.request(IDENTITY), 401, ("WWW-Authenticate", odd))
    )
    assert isinstance(outcome, Refused) and "unsupported algorithm SHA-512-256" in outcome.problem
    assert DigestChallenge.parse(MD5).supported  # (the fixture itself is usable)


# ───────────────────────── expiry, 423, failures ─────────────────────────


def test_the_granted_expiry_comes_from_our_contact_then_the_expires_header() -> None:
    registration = client()
    request = registration.request(IDENTITY)
    other = ("Contact", "<sip:someone@198.51.100.7>;expires=9999")
    ours = ("Contact", "<sip:waihu@192.0.2.10:5072>;expires=300")
    outcome = registration.on_response(answer(request, 200, other, ours, ("Expires", "50")))
    assert outcome == Registered(expires=300, refresh_in=270.0)
    request = registration.request(IDENTITY)
    outcome = registration.on_response(answer(request, 200, ("Expires", "40")))
    assert outcome == Registered(expires=40, refresh_in=20.0)
    request = registration.request(IDENTITY)
    assert registration.on_response(answer(request, 200)) == Registered(600, 570.0)


def test_a_2xx_that_lists_only_other_bindings_is_no_registration() -> None:
    registration = client()
    request = registration.request(IDENTITY)
    outcome = registration.on_response(
        answer(request, 200, ("Contact", "<sip:someone@198.51.100.7>;expires=60"))
    )
    assert isinstance(outcome, Refused) and "lists no binding for our Contact" in outcome.problem


def test_refresh_comes_before_expiry() -> None:
    assert refresh_delay(3600) == 3570.0  # 30 s early
    assert refresh_delay(40) == 20.0  # half-way for short bindings
    assert refresh_delay(1) == 1.0  # never sooner than a second
    assert all(refresh_delay(e) < e for e in range(2, 5000))


def test_423_asks_again_with_min_expires() -> None:
    registration = client(expires=60)
    request = registration.request(IDENTITY)
    outcome = registration.on_response(answer(request, 423, ("Min-Expires", "120")))
    assert isinstance(outcome, Resend)
    again = registration.request(IDENTITY)
    assert again.headers.get("Expires") == "120"
    assert "expires=120" in (again.headers.get("Contact") or "")
    # a Min-Expires no longer than what we asked, or not a number, cannot be obeyed
    for bad in ("120", "", "１２０"):
        outcome = registration.on_response(answer(again, 423, ("Min-Expires", bad)))
        assert isinstance(outcome, Refused), bad


def test_failures_back_off_doubling_and_a_success_resets() -> None:
    registration = client(backoff=Backoff(5.0, 300.0))
    delays = []
    for _ in range(8):
        outcome = registration.on_response(answer(registration.request(IDENTITY), 403))
        assert isinstance(outcome, Refused)
        delays.append(outcome.retry_in)
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300]
    assert registration.on_timeout().problem == "no answer to REGISTER"
    registration.on_response(ok(registration.request(IDENTITY)))
    assert registration.on_timeout().retry_in == 5.0


def test_a_503_with_retry_after_waits_at_least_that_long() -> None:
    registration = client()
    request = registration.request(IDENTITY)
    outcome = registration.on_response(answer(request, 503, ("Retry-After", "120 (maintenance)")))
    assert isinstance(outcome, Refused) and outcome.retry_in == 120.0
    assert outcome.problem == "REGISTER refused: 503 Service Unavailable"


# ───────────────────────── the loop's pacing (MockClock) ─────────────────────────


async def test_keep_registered_refreshes_and_retries_then_unregisters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A registrar granting 10 s: REGISTERs at 0 (challenged, answered), 5 and 10; then it
    refuses twice (403), then grants again; on cancel an Expires: 0 goes out."""
    sent: list[tuple[float, int, bool]] = []  # when, Expires asked, with credentials
    plan = iter(["challenge", "ok", "ok", "ok", "403", "403", "ok"])

    async def registrar(request: SipRequest) -> SipResponse | None:
        expires = int(request.headers.get("Expires") or -1)
        sent.append((trio.current_time(), expires, "Authorization" in request.headers))
        await trio.sleep(0.01)
        if expires == 0:
            return answer(request, 200)
        step = next(plan, "silence")
        if step == "challenge":
            return answer(request, 401, ("WWW-Authenticate", MD5))
        if step == "ok":
            return ok(request, 10)
        if step == "403":
            return answer(request, 403)
        await trio.sleep_forever()
        return None

    outcomes: list[str] = []
    registration = client(expires=10)
    with trio.fail_after(1000), trio.move_on_after(40):
        await keep_registered(
            registration, IDENTITY, registrar, lambda o, now: outcomes.append(type(o).__name__)
        )
    times = [round(at) for at, _, _ in sent]
    assert times == [0, 0, 5, 10, 15, 20, 30, 35, 40]  # the REGISTER at 35 got no answer
    assert outcomes == ["Resend", "Registered", "Registered", "Registered", "Refused",
                        "Refused", "Registered"]  # fmt: skip
    assert [auth for _, _, auth in sent] == [False] + [True] * 8
    assert sent[-1][1] == 0  # the last one removed the binding
    assert all(expires == 10 for _, expires, _ in sent[:-1])


async def test_unregistering_gives_up_after_its_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []

    async def registrar(request: SipRequest) -> SipResponse | None:
        calls.append(trio.current_time())
        if request.headers.get("Expires") == "0":
            await trio.sleep_forever()  # a registrar gone silent must not hold up the shutdown
        return ok(request, 60)

    with trio.fail_after(100):
        with trio.move_on_after(1):
            await keep_registered(client(), IDENTITY, registrar, lambda o, now: None)
        stopped = trio.current_time()
    assert stopped == pytest.approx(1 + 2.0)  # UNREGISTER_GRACE
    assert len(calls) == 2


async def test_nothing_is_unregistered_when_never_registered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[str | None] = []

    async def registrar(request: SipRequest) -> SipResponse | None:
        sent.append(request.headers.get("Expires"))
        return answer(request, 403)

    with trio.fail_after(100), trio.move_on_after(1):
        await keep_registered(client(), IDENTITY, registrar, lambda o, now: None)
    assert sent == ["600"]


# ───────────────────────── the trunk's state, the config ─────────────────────────


def test_a_registering_trunk_is_up_then_registered_then_failing() -> None:
    health = TrunkHealth(probing=False, failures=3, now=0.0, registering=True)
    health.came_up(1.0)
    assert (health.state, health.status().detail) == ("up", "registering")
    change = health.registered(2.0, 3602.0, "as sip:robot@example.net until 11:00:00")
    assert change is not None and (change.old, change.new) == ("up", "registered")
    assert health.registered(3.0, 3603.0, "refreshed") is None  # the same state: no log line
    assert health.status().since == 2.0 and health.status().detail == "refreshed"
    change = health.registration_failed(4.0, "REGISTER refused: 403 Forbidden at 10:00:04")
    assert change is not None and change.worse and health.state == "failing"
    assert health.registration is not None and not health.registration.ok
    health.registered(5.0, 65.0, "again")
    assert health.state == "registered"


def test_probe_failures_still_make_a_registered_trunk_failing() -> None:
    health = TrunkHealth(probing=True, failures=2, now=0.0, registering=True)
    health.came_up(0.0)
    health.registered(1.0, 100.0, "ok")
    for now in (2.0, 3.0):
        health.probe_done(now, ProbeResult.unanswered("timed out"))
    assert health.state == "failing" and "OPTIONS" in health.status().detail
    health.probe_done(4.0, ProbeResult.answered(200, "OK", 0.01))
    assert health.state == "registered"


def test_a_trunk_that_does_not_register_never_says_registered() -> None:
    health = TrunkHealth(probing=False, failures=3, now=0.0)
    health.came_up(0.0)
    health.registered(1.0, 100.0, "stray")
    assert health.state == "up"


def test_register_config_keys() -> None:
    config = SipTrunkConfig(proxy="sip.example.net", username="u", password="p", register=True)
    assert config.registrar_host_port == ("sip.example.net", 5060)
    assert config.outbound_host_port is None
    assert config.register_expires == 3600
    config = SipTrunkConfig(
        proxy="sip.example.net",
        registrar="reg.example.net:5080",
        outbound_proxy="edge.example.net",
        username="u",
        password="p",
    )
    assert config.registrar_host_port == ("reg.example.net", 5080)
    assert config.outbound_host_port == ("edge.example.net", 5060)
    with pytest.raises(ValueError, match="register: registering needs an address of record"):
        SipTrunkConfig(proxy="sip.example.net", register=True)
    with pytest.raises(ValueError, match="register_expires"):
        SipTrunkConfig(proxy="sip.example.net", register_expires=0)
    with pytest.raises(ValueError, match="outbound_proxy"):
        SipTrunkConfig(proxy="sip.example.net", outbound_proxy="edge.example.net:99999")


def test_a_realm_that_is_not_utf8_is_answered_by_its_raw_bytes() -> None:
    registration = client()
    # a realm of bytes that are not UTF-8, as the parser keeps them (surrogate escapes)
    broken = 'Digest realm="ex\udcffample", nonce="n", algorithm=MD5'
    outcome = registration.on_response(
        answer(registration.request(IDENTITY), 401, ("WWW-Authenticate", broken))
    )
    assert isinstance(outcome, Resend)
    authorization = registration.request(IDENTITY).headers.get("Authorization") or ""
    assert 'realm="ex\udcffample"' in authorization and "response=" in authorization


def test_check_warns_of_a_registrar_or_outbound_proxy_that_does_not_resolve() -> None:
    config = SipTrunkConfig(
        proxy="127.0.0.1", registrar="reg.invalid", username="u", password="p", register=True
    )
    [problem] = SipTrunk.check(config, section="trunk.office")
    assert problem.key == "trunk.office.registrar" and problem.warning
    assert "reg.invalid does not resolve" in problem.message
    assert "registering will fail and retry" in problem.message
    # with an outbound proxy, it is the first hop: the proxy itself is never resolved
    config = SipTrunkConfig(proxy="sip.carrier.invalid", outbound_proxy="edge.invalid")
    [problem] = SipTrunk.check(config, section="trunk.office")
    assert problem.key == "trunk.office.outbound_proxy"
    assert "the trunk will start down and retry" in problem.message
