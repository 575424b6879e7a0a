"""Registration against a real registrar: kamailio (contrib/kamailio/registrar.cfg) with digest
authentication, on 127.0.0.1.

The trunk registers, refreshes short bindings before they run out, reports a wrong password
as ``failing`` with the registrar's status and keeps retrying, registers two trunks at once,
answers SHA-256 challenges, removes its binding when it stops, and a call routed by the
registrar to a registered sipp callee goes through. Bindings are a few seconds long and the
deadlines generous: a real registrar cannot run on a fake clock.
"""

from __future__ import annotations

import re
from pathlib import Path

import trio

from waihu.testing.kamailio import REGISTRAR_REALM, KamailioProxy, kamailio_registrar
from waihu.testing.sipp import SippPeer, sipp_peer

from sip_harness import dialling, running_trunk

PASSWORD = "s3cret-pw"
DEADLINE = 60.0  # seconds: kamailio start-up plus a few refreshes on a busy machine


def trunk_config(proxy: str, **extra: object) -> dict[str, object]:
    """A registering trunk's settings for the registrar (and proxy) at ``proxy`` (host:port)."""
    config: dict[str, object] = {
        "proxy": proxy,
        "domain": REGISTRAR_REALM,
        "username": "robot",
        "password": PASSWORD,
        "register": True,
    }
    config.update(extra)
    return config


async def register_callee(tmp_path: Path, registrar: KamailioProxy, callee: SippPeer) -> None:
    """Register ``callee``'s contact as user ``callee`` (sipp's own digest, contrib/sipp/
    register.xml), so the registrar routes calls for it there."""
    keys = {
        "user": "callee",
        "password": PASSWORD,
        "domain": REGISTRAR_REALM,
        "contact": callee.hostport,
    }
    async with sipp_peer(
        "register.xml", tmp_path, keys=keys, extra_args=[registrar.hostport]
    ) as registration:
        (await registration.wait()).check()


async def wait_for_state(trunk: object, state: str) -> None:
    """Poll the trunk's status until it is ``state`` (the caller's deadline bounds it)."""
    while trunk.status().state != state:  # type: ignore[attr-defined]
        await trio.sleep(0.05)


async def test_registers_with_digest_and_reports_registered(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD) as registrar:
            async with running_trunk(tmp_path, **trunk_config(registrar.hostport)) as trunk:
                await wait_for_state(trunk, "registered")
                status = trunk.status()
                assert status.detail.startswith(f"as sip:robot@{REGISTRAR_REALM} until ")
                info = trunk.registration()
                assert info is not None and info["state"] == "registered"
                assert info["expires_at"] is not None
                [binding] = registrar.bindings()
                assert binding.user == "robot"
                assert f":{trunk.local_address[1]}" in binding.contact
                requests = [r for r in registrar.requests() if r.method == "REGISTER"]
                # one unauthenticated REGISTER, challenged, then the answer: same Call-ID
                assert len(requests) == 2
                assert requests[0].call_id == requests[1].call_id


async def test_refreshes_a_short_binding_before_it_runs_out(tmp_path: Path) -> None:
    """A 4 s binding is refreshed half-way through, on the same Call-ID with a growing CSeq,
    and the trunk stays registered throughout."""
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD) as registrar:
            config = trunk_config(registrar.hostport, register_expires=4)
            async with running_trunk(tmp_path, **config) as trunk:
                await wait_for_state(trunk, "registered")
                since = trunk.status().since
                while len(registrar.bindings()) < 3:
                    await trio.sleep(0.1)
                    assert trunk.status().state == "registered"
                assert trunk.status().since == since  # never left the state
    bindings = registrar.bindings()[:3]
    assert [b.expires for b in bindings] == ["4", "4", "4"]
    call_ids = {r.call_id for r in registrar.requests() if r.method == "REGISTER"}
    assert len(call_ids) == 1


async def test_wrong_password_is_failing_with_the_status_and_retried(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD) as registrar:
            config = trunk_config(registrar.hostport, password="not-" + PASSWORD)
            async with running_trunk(tmp_path, **config) as trunk:
                await wait_for_state(trunk, "failing")
                status = trunk.status()
                assert re.fullmatch(
                    r"REGISTER refused: 403 Forbidden at \d\d:\d\d:\d\d; next try in 5 s",
                    status.detail,
                ), status.detail
                info = trunk.registration()
                assert info is not None and info["state"] == "failing"
                assert info["expires_at"] is None
                # the retry comes 5 s later and fails again: the next wait doubles
                while "next try in 10 s" not in trunk.status().detail:
                    await trio.sleep(0.1)
                assert trunk.status().since == status.since
    assert registrar.bindings() == []


async def test_two_trunks_register_at_once(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD) as registrar:
            first = trunk_config(registrar.hostport, username="robot1", from_user="robot1")
            second = trunk_config(registrar.hostport, username="robot2", from_user="robot2")
            async with (
                running_trunk(tmp_path, **first) as one,
                running_trunk(tmp_path, **second) as two,
            ):
                await wait_for_state(one, "registered")
                await wait_for_state(two, "registered")
                bindings = {b.user: b.contact for b in registrar.bindings()}
                assert set(bindings) == {"robot1", "robot2"}
                assert f":{one.local_address[1]}>" in bindings["robot1"]
                assert f":{two.local_address[1]}>" in bindings["robot2"]


async def test_answers_a_sha256_challenge(tmp_path: Path) -> None:
    """kamailio set to SHA-256 accepts only a SHA-256 answer (RFC 8760)."""
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD, algorithm="SHA-256") as reg:
            async with running_trunk(tmp_path, **trunk_config(reg.hostport)) as trunk:
                await wait_for_state(trunk, "registered")
                assert [b.user for b in reg.bindings()] == ["robot"]


async def test_asks_again_with_min_expires_after_423(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD, min_expires=120) as reg:
            config = trunk_config(reg.hostport, register_expires=60)
            async with running_trunk(tmp_path, **config) as trunk:
                await wait_for_state(trunk, "registered")
                assert "(120 s granted)" in trunk.status().detail
                assert [b.expires for b in reg.bindings()] == ["120"]


async def test_removes_its_binding_when_it_stops(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD) as registrar:
            async with running_trunk(tmp_path, **trunk_config(registrar.hostport)) as trunk:
                await wait_for_state(trunk, "registered")
            # the block's end stopped the trunk: an Expires: 0 went out and was accepted
            # (kamailio writes its log line a moment after it answers: a loaded machine waits)
            with trio.move_on_after(5):
                while len(registrar.bindings()) < 2:
                    await trio.sleep(0.05)
            assert [b.expires for b in registrar.bindings()] == ["3600", "0"]


async def test_register_goes_through_the_outbound_proxy_with_a_route(tmp_path: Path) -> None:
    """With ``outbound_proxy``, the REGISTER is sent there carrying ``Route: <…;lr>`` while its
    Request-URI still names the registrar (here one kamailio plays both)."""
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD) as registrar:
            config = trunk_config(
                "sip.carrier.invalid",  # never resolved: the outbound proxy is the first hop
                registrar=REGISTRAR_REALM,
                outbound_proxy=registrar.hostport,
            )
            async with running_trunk(tmp_path, **config) as trunk:
                await wait_for_state(trunk, "registered")
            first = next(r for r in registrar.requests() if r.method == "REGISTER")
            assert first.uri == f"sip:{REGISTRAR_REALM}"
            assert first.route == f"<sip:{registrar.hostport};lr>"


async def test_prefers_sha256_and_refuses_a_later_md5_downgrade(tmp_path: Path) -> None:
    """sipp offers MD5 then SHA-256: the answer uses SHA-256 (RFC 8760). The refresh is then
    challenged with MD5 only: it is not answered, and the trunk is failing, saying why."""
    with trio.fail_after(DEADLINE):
        async with sipp_peer(
            "register_sha256.xml", tmp_path, keys={"expires": "2", "wait": "3000"}
        ) as registrar:
            config = trunk_config(registrar.hostport, register_expires=2)
            async with running_trunk(tmp_path, **config) as trunk:
                await wait_for_state(trunk, "registered")
                await wait_for_state(trunk, "failing")
                assert "offers only MD5 where it offered SHA-256 before" in trunk.status().detail
                result = await registrar.wait()
    result.check()
    received = (registrar.workdir / "messages.log").read_text()
    authorizations = re.findall(r"^Authorization: .*$", received, re.MULTILINE)
    assert authorizations, received
    assert all("algorithm=SHA-256" in a for a in authorizations), authorizations


async def test_a_call_reaches_a_callee_by_its_registered_contact(tmp_path: Path) -> None:
    """A sipp callee's contact is registered with kamailio (by a second sipp); the registered
    trunk dials the callee's user, kamailio looks it up and relays the call there."""
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD) as registrar:
            async with sipp_peer("answer.xml", tmp_path, keys={"bye_wait_ms": "500"}) as callee:
                await register_callee(tmp_path, registrar, callee)
                async with running_trunk(tmp_path, **trunk_config(registrar.hostport)) as trunk:
                    await wait_for_state(trunk, "registered")
                    async with dialling(trunk, f"sip:callee@{REGISTRAR_REALM}") as outcome:
                        pass
                    assert outcome.leg is not None, outcome.failure
                    await outcome.leg.hangup()
                (await callee.wait()).check()
            invites = [r for r in registrar.requests() if r.method == "INVITE"]
            assert invites and invites[0].uri == f"sip:callee@{REGISTRAR_REALM}"
            assert "relay INVITE" in registrar.log_text()


async def test_a_call_goes_through_the_outbound_proxy_with_a_route(tmp_path: Path) -> None:
    """With ``outbound_proxy``, the INVITE (and the OPTIONS probe) go there with the
    pre-loaded Route, never to the proxy itself; kamailio routes the call to the callee."""
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD) as registrar:
            async with sipp_peer("answer.xml", tmp_path, keys={"bye_wait_ms": "500"}) as callee:
                await register_callee(tmp_path, registrar, callee)
                config = {
                    "proxy": "127.0.0.1:9",  # the discard port: nothing may go to it
                    "domain": REGISTRAR_REALM,
                    "outbound_proxy": registrar.hostport,
                    "probe_interval": 1,
                }
                async with running_trunk(tmp_path, **config) as trunk:
                    await wait_for_state(trunk, "reachable")
                    async with dialling(trunk, "sip:callee@" + REGISTRAR_REALM) as outcome:
                        pass
                    assert outcome.leg is not None, outcome.failure
                    await outcome.leg.hangup()
                (await callee.wait()).check()
            route = f"<sip:{registrar.hostport};lr>"
            invite = next(r for r in registrar.requests() if r.method == "INVITE")
            assert (invite.uri, invite.route) == (f"sip:callee@{REGISTRAR_REALM}", route)
            options = next(r for r in registrar.requests() if r.method == "OPTIONS")
            assert options.route == route
