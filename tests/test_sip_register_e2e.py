"""``waihuctl trunks`` on a real waihud whose trunks register with a real kamailio registrar.

Three trunks: ``office`` registers with the right password, ``branch`` with a wrong one,
``lab`` does not register. The real ``waihuctl`` (a subprocess) shows each on one line, as
text and as JSON; ``waihuctl status`` shows the registered state too; stopping the daemon
removes office's binding (Expires: 0).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import trio

from waihu.testing.daemon import DaemonUnderTest, running_waihud, write_config
from waihu.testing.kamailio import REGISTRAR_REALM, kamailio_registrar

PASSWORD = "e2e-pw"
DEADLINE = 120.0  # seconds: kamailio and waihud start-up on a shared machine


def waihuctl(daemon: DaemonUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    """The real waihuctl against ``daemon`` (blocking: run it in a thread)."""
    return subprocess.run(
        [sys.executable, "-m", "waihu.control.client", "--socket", str(daemon.socket), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    )


def trunk_table(name: str, proxy: str, **keys: object) -> str:
    lines = [f"[trunk.{name}]", 'type = "sip"', f'proxy = "{proxy}"', 'local_host = "127.0.0.1"']
    lines += ["local_port = 0", "probe_interval = 0"]
    for key, value in keys.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


async def test_waihuctl_trunks_shows_registered_failing_and_not_registering(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE):
        async with kamailio_registrar(tmp_path, password=PASSWORD) as registrar:
            common = {"register": True, "domain": REGISTRAR_REALM}
            extra = trunk_table(
                "branch", registrar.hostport, username="branch", password="wrong", **common
            ) + trunk_table("lab", registrar.hostport)
            config = write_config(
                tmp_path / "waihud",
                proxy={"office": registrar.hostport},
                trunk={"username": "office", "password": PASSWORD, **common},
                extra=extra,
            )
            async with running_waihud(config) as daemon:
                while True:
                    trunks = await daemon.request("trunks")
                    states = {t["name"]: t["state"] for t in trunks}
                    if states.get("office") == "registered" and states.get("branch") == "failing":
                        break
                    await trio.sleep(0.2)
                text = await trio.to_thread.run_sync(waihuctl, daemon, "trunks")
                as_json = await trio.to_thread.run_sync(waihuctl, daemon, "trunks", "--json")
                status = await daemon.request("status")
                assert await daemon.stop() == 0
            bindings = [(b.user, b.expires) for b in registrar.bindings()]

    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "SINCE", "CALLS", "REGISTRATION", "DETAIL"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"office", "branch", "lab"}
    start, end = lines[0].index("REGISTRATION"), lines[0].index("DETAIL")
    registration = {name: row[start:end].strip() for name, row in rows.items()}
    detail = {name: row[end:] for name, row in rows.items()}
    until = r"until (\d{4}-\d\d-\d\d )?\d\d:\d\d"  # a binding ending tomorrow shows its date
    assert re.fullmatch(until, registration["office"]), rows["office"]
    assert re.fullmatch(r"failed at \d\d:\d\d", registration["branch"]), rows["branch"]
    assert registration["lab"] == "not registering"
    assert " registered " in rows["office"] and " failing " in rows["branch"]
    assert detail["office"].startswith(f"as sip:office@{REGISTRAR_REALM} until ")
    assert detail["branch"].startswith("REGISTER refused: 403 Forbidden at ")

    assert as_json.returncode == 0, as_json.stderr
    result = {t["name"]: t for t in json.loads(as_json.stdout)}
    office = result["office"]["registration"]
    assert office["state"] == "registered" and office["aor"] == f"sip:office@{REGISTRAR_REALM}"
    assert office["expires_at"] > office["at"]
    branch = result["branch"]["registration"]
    assert branch["state"] == "failing" and branch["expires_at"] is None
    assert result["lab"]["registration"] is None
    assert result["office"]["lines"] is not None
    guard = result["office"]["guard"]  # what the SIP port's guard let in and turned away
    assert guard["accepted"] > 0 and guard["unknown_dropped"] == guard["flood_dropped"] == 0

    assert {t["name"]: t["state"] for t in status["trunks"]}["office"] == "registered"
    # office registered once and removed its binding on the way down; branch never got one
    assert bindings == [("office", "3600"), ("office", "0")]
