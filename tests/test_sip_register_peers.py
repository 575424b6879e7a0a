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

from sip_harness import dialling, running_trunk
from waihu.testing.kamailio import REGISTRAR_REALM, kamailio_registrar
from waihu.testing.sipp import sipp_peer

PASSWORD = "s3cret-pw"
DEADLINE = 60.0  # seconds: kamailio start-up plus a few refreshes on a busy machine


def trunk_config(registrar: str, **extra: object) -> dict[str, object]:
    """A registering trunk's settings for the registrar at ``registrar`` (host:port)."""
    config: dict[str, object] = {
        "proxy": registrar,
        "domain": REGISTRAR_REALM,
        "username": "robot",
        "password": PASSWORD,
        "register": True,
    }
    config.update(extra)
    return config


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
