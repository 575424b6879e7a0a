"""Run kamailio (Debian ``kamailio``, 5.6) as a real record-routing proxy in tests.

Usage::

    async with sipp_peer("answer.xml", tmp_path) as callee:
        async with kamailio_proxy(tmp_path, next_hop=callee.hostport) as proxy:
            config = write_config(tmp_path / "waihud", proxy=proxy.hostport)
            ...  # place the call through the proxy
        assert "BYE" in proxy.methods_seen()

The proxy runs ``contrib/kamailio/relay.cfg`` (read it for what it does:
record-route every dialog, relay every new request to ``next_hop``, loose-route
in-dialog requests). What the harness does: picks a free UDP port on
127.0.0.1 (``-A LISTEN_PORT=…``; TCP and SCTP are off, so nothing else is
bound), gives the process a directory of its own for its pid file (``-P``),
runtime files (``-Y``) and working directory (``-w``), starts it in the
foreground logging to stderr (``-DD -E``) with one worker (``-n 1``) and
small memory pools, waits until it owns its port, and stops it when the block
ends (the process handling is ``waihu.testing.peer_process``'s). It never
touches port 5060 or ``/etc/kamailio``.

kamailio has no "quit after N seconds" option, so it runs under coreutils
``timeout`` in a process group of its own: the block's end stops the whole
group (SIGTERM, then SIGKILL), and a test process killed hard still leaves
nothing behind after ``timeout`` seconds.

``kamailio_registrar`` runs ``contrib/kamailio/registrar.cfg`` the same way:
a registrar with digest authentication (one password for every user, MD5 or
SHA-256) that routes new INVITEs to the registered contacts;
``KamailioProxy.bindings`` lists the REGISTERs it accepted.

What it is not: a general kamailio wrapper; two configs, loopback, UDP.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import trio

from waihu.testing.peer_process import (
    HOST,
    free_udp_port,
    running_peer,
    started_peer,
    wait_until_bound,
)

__all__ = [
    "REGISTRAR_CONFIG",
    "REGISTRAR_REALM",
    "RELAY_CONFIG",
    "Binding",
    "KamailioFailed",
    "KamailioProxy",
    "RelayedRequest",
    "kamailio_proxy",
    "kamailio_registrar",
]

RELAY_CONFIG = Path(__file__).resolve().parents[3] / "contrib" / "kamailio" / "relay.cfg"
REGISTRAR_CONFIG = RELAY_CONFIG.with_name("registrar.cfg")
REGISTRAR_REALM = "waihu.test"  # the digest realm, also a domain the registrar calls its own
# Debian installs kamailio in /usr/sbin, which is not on every user's PATH
KAMAILIO = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
TIMEOUT_TOOL = shutil.which("timeout") or "timeout"  # coreutils
SHARED_MEMORY_MB = 32
PRIVATE_MEMORY_MB = 8
READY_TIMEOUT = 15.0  # seconds for kamailio to bind its port (it parses and forks first)
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
KILL_AFTER = 5  # seconds ``timeout`` waits after its own TERM before KILL
LOG_TAIL = 8000  # characters of the log shown in a failure report
# the line relay.cfg (relay:) and registrar.cfg (registrar:) log for every request received
_RELAY_LINE = re.compile(
    r"(?:relay|registrar): (?P<method>\S+) (?P<uri>\S+) from (?P<source>\S+) "
    r"call-id (?P<call_id>\S+)(?: route (?P<route>.*))?$",
    re.MULTILINE,
)
# registrar.cfg's line for each binding saved
_SAVED_LINE = re.compile(
    r"registrar: saved (?P<user>\S+) contact (?P<contact>\S+) expires (?P<expires>\S+)$",
    re.MULTILINE,
)


class KamailioFailed(AssertionError):
    """kamailio did not start; the message carries its log."""


@attrs.frozen
class RelayedRequest:
    """One request kamailio received, as relay.cfg logged it."""

    method: str
    uri: str
    source: str  # ip:port it came from
    call_id: str
    route: str | None = None  # its Route header (registrar.cfg only; "<null>" for none)


@attrs.frozen
class Binding:
    """One REGISTER the registrar accepted, as registrar.cfg logged it."""

    user: str
    contact: str
    expires: str  # the Expires header as sent ("<null>" when there was none)


@attrs.define
class KamailioProxy:
    """A running kamailio: where it listens, its log, and what it saw."""

    host: str
    port: int
    next_hop: str
    workdir: Path
    log: Path
    process: trio.Process

    @property
    def hostport(self) -> str:
        """``host:port`` of its UDP socket (what a trunk's ``proxy`` is set to)."""
        return f"{self.host}:{self.port}"

    def log_text(self) -> str:
        """Everything kamailio wrote so far."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def requests(self) -> list[RelayedRequest]:
        """Every request it received so far, in order."""
        return [RelayedRequest(**m.groupdict()) for m in _RELAY_LINE.finditer(self.log_text())]

    def bindings(self) -> list[Binding]:
        """Every REGISTER it accepted so far (registrar.cfg), in order."""
        return [Binding(**m.groupdict()) for m in _SAVED_LINE.finditer(self.log_text())]

    def methods_seen(self, call_id: str | None = None) -> list[str]:
        """The methods of the requests it received (for one Call-ID if given), in order."""
        return [r.method for r in self.requests() if call_id is None or r.call_id == call_id]

    def report(self) -> str:
        """Exit status and the tail of its log, for a failure message."""
        status = self.process.poll()
        state = "running" if status is None else f"exited {status}"
        return f"kamailio {state}; its log ({self.log}):\n{self.log_text()[-LOG_TAIL:]}"


def _next_hop_uri(next_hop: str) -> str:
    return next_hop if next_hop.startswith("sip:") else f"sip:{next_hop}"


@asynccontextmanager
async def kamailio_proxy(
    workdir: Path,
    *,
    next_hop: str,
    config: Path = RELAY_CONFIG,
    timeout: float = 180.0,
    second_hop: str | None = None,
) -> AsyncIterator[KamailioProxy]:
    """Start kamailio on a free loopback port relaying new requests to ``next_hop``.

    With ``second_hop``, requests for a user ending in 9 go there instead (the
    demo puts a second simulated callee behind one trunk that way).

    ``next_hop`` is ``host:port`` or a SIP URI. Raises ``KamailioFailed``
    with its log when kamailio is missing, exits at start-up or does not bind
    its port. kamailio is stopped when the block ends, and after ``timeout``
    seconds in any case.
    """
    uri = _next_hop_uri(next_hop)
    defines = {"NEXT_HOP": f'"{uri}"'}
    if second_hop:
        defines["SECOND_HOP"] = f'"{_next_hop_uri(second_hop)}"'
    start = partial(_running_kamailio, workdir, config, defines, timeout, uri)
    async with started_peer(start) as proxy:
        yield proxy


@asynccontextmanager
async def kamailio_registrar(
    workdir: Path,
    *,
    password: str,
    algorithm: str = "MD5",
    min_expires: int = 0,
    timeout: float = 180.0,
) -> AsyncIterator[KamailioProxy]:
    """Start kamailio as a registrar (``contrib/kamailio/registrar.cfg``) on a free loopback
    port: REGISTER challenged with ``algorithm`` (``"MD5"`` or ``"SHA-256"``) and checked
    against ``password`` for any user, bindings shorter than ``min_expires`` seconds refused
    with 423, new INVITEs routed to the registered contact. Read what it did with
    ``KamailioProxy.bindings`` and ``log_text``. Errors and stopping as ``kamailio_proxy``.
    """
    defines = {
        "PASSWORD": f'"{password}"',
        "ALGORITHM": f'"{algorithm}"',
        "MIN_EXPIRES": str(min_expires),
        "REALM": f'"{REGISTRAR_REALM}"',
    }
    start = partial(_running_kamailio, workdir, REGISTRAR_CONFIG, defines, timeout, "")
    async with started_peer(start) as registrar:
        yield registrar


@asynccontextmanager
async def _running_kamailio(
    workdir: Path, config: Path, defines: dict[str, str], timeout: float, next_hop: str
) -> AsyncIterator[KamailioProxy]:
    """kamailio with ``config`` and ``-A NAME=VALUE`` ``defines`` on a free port, until the
    block ends (see the module docstring for how it is run)."""
    if KAMAILIO is None:
        raise KamailioFailed("kamailio is not installed: apt-get install kamailio")
    port = free_udp_port()
    workdir = Path(workdir) / f"kamailio-{port}"
    runtime = workdir / "run"
    runtime.mkdir(parents=True)
    log = workdir / "kamailio.log"
    args = [
        TIMEOUT_TOOL, f"--kill-after={KILL_AFTER}", str(int(timeout)),
        KAMAILIO, "-DD", "-E", "-f", str(config),
        "-A", f"LISTEN_PORT={port}",
        *[arg for name, value in defines.items() for arg in ("-A", f"{name}={value}")],
        "-n", "1", "-m", str(SHARED_MEMORY_MB), "-M", str(PRIVATE_MEMORY_MB),
        "-P", str(workdir / "kamailio.pid"), "-Y", str(runtime), "-w", str(workdir),
    ]  # fmt: skip
    async with running_peer(
        args,
        cwd=workdir,
        stdout=log,
        stop_grace=STOP_GRACE,
        # its own process group, stopped as one: timeout, kamailio and the workers it forks
        process_group=True,
    ) as process:
        proxy = KamailioProxy(HOST, port, next_hop, workdir, log, process)
        await wait_until_bound(
            proxy,
            name="kamailio",
            timeout=READY_TIMEOUT,
            report=proxy.report,
            failure=KamailioFailed,
        )
        yield proxy
