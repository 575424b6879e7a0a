"""Run a real ``waihud`` process for end-to-end tests and the demo.

``running_waihud`` writes a config into a directory of its own (state,
socket, log all inside it), starts ``python -m waihu.daemon`` as a child
process, waits until its control socket answers, and on exit stops it with
SIGTERM (the graceful drain); tests check its exit status with ``stop()``.

What it is not: a fake daemon. Everything runs for real; only the SIP peer
address and the paths are chosen here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from waihu.control.client import ConnectFailed, ControlClient

__all__ = ["REPO", "DaemonUnderTest", "running_waihud", "write_config"]

REPO = Path(__file__).resolve().parents[3]
SCRIPTS_DIR = REPO / "etc" / "waihu" / "scripts"
READY_TIMEOUT = 90.0  # loading the speech model takes a few seconds on a busy machine
STOP_TIMEOUT = 60.0
ENDED = ("ended", "failed")


def _toml(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON strings and numbers are valid TOML


def write_config(
    directory: Path,
    *,
    proxy: str | Mapping[str, str],
    scripts_dir: Path = SCRIPTS_DIR,
    model: str | None = None,
    media: Mapping[str, Any] | None = None,
    daemon: Mapping[str, Any] | None = None,
    storage: Mapping[str, Any] | None = None,
    tts: bool = False,
    extra: str = "",
    trunk: Mapping[str, Any] | None = None,
) -> Path:
    """A complete waihud.toml; returns its path.

    ``proxy`` is the SIP peer of the one trunk ``loopback``, or a mapping of
    trunk names to peers (the first is the default trunk). ``tts`` configures
    espeak-ng to speak lines without recordings. ``trunk`` adds keys to every
    ``[trunk.NAME]``; OPTIONS probes are off unless it sets ``probe_interval``
    (a sipp callee would take a probe for an unexpected call).
    """
    directory.mkdir(parents=True, exist_ok=True)
    proxies = {"loopback": proxy} if isinstance(proxy, str) else dict(proxy)
    trunks: list[str] = []
    for name, hostport in proxies.items():
        trunks += [
            f"[trunk.{name}]",
            'type = "sip"',
            f"proxy = {_toml(hostport)}",
            'local_host = "127.0.0.1"',
            "local_port = 0",
            *(f"{k} = {_toml(v)}" for k, v in {"probe_interval": 0, **(trunk or {})}.items()),
            "",
        ]
    lines = [
        "[daemon]",
        f"control_socket = {_toml(str(directory / 'control.sock'))}",
        f"state_dir = {_toml(str(directory / 'state'))}",
        f"scripts_dir = {_toml(str(scripts_dir))}",
        *(f"{k} = {_toml(v)}" for k, v in {"drain_timeout": 10.0, **(daemon or {})}.items()),
        "",
        "[media]",
        *(f"{k} = {_toml(v)}" for k, v in (media or {}).items()),
        "",
        "[call]",
        f"trunk = {_toml(next(iter(proxies)))}",
        *(['tts = "default"', "", "[tts.default]", 'type = "espeak"'] if tts else []),
        "",
        *trunks,
        "[asr.default]",
        'type = "vosk"',
        *([f"model = {_toml(model)}"] if model else []),
        "",
        "[nlu.default]",
        'type = "keywords"',
        "",
        "[storage]",
        'type = "sqlite"',
        'path = "waihu.db"',
        *(f"{k} = {_toml(v)}" for k, v in (storage or {}).items()),
        "",
        extra,
    ]
    path = directory / "waihud.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@attrs.define
class DaemonUnderTest:
    """A running waihud child process and the way to talk to it."""

    directory: Path
    config: Path
    socket: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def database(self) -> Path:
        return self.directory / "state" / "waihu.db"

    async def request(self, method: str, **params: Any) -> Any:
        """One control-socket request; raises ControlError for an error reply."""

        def ask() -> Any:
            with ControlClient(self.socket, timeout=30.0) as client:
                return client.request(method, params)

        return await trio.to_thread.run_sync(ask)

    async def wait_call(self, call_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll ``call.show`` until the call has ended; its full record."""
        with trio.fail_after(timeout):
            while True:
                record = await self.request("call.show", id=call_id)
                if record["status"] in ENDED:
                    return record
                await trio.sleep(0.25)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    async def stop(self) -> int:
        """SIGTERM (drain) and wait; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT):
            while self.process.poll() is None:
                await trio.sleep(0.05)
        return self.process.returncode


@asynccontextmanager
async def running_waihud(
    config: Path, *, env: Mapping[str, str] | None = None
) -> AsyncIterator[DaemonUnderTest]:
    """Start waihud with ``config``, yield once it answers, stop it (SIGTERM) afterwards."""
    import tomllib

    directory = config.parent
    socket = Path(tomllib.loads(config.read_text(encoding="utf-8"))["daemon"]["control_socket"])
    log = directory / "waihud.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "waihu.daemon", "--config", str(config), "--log-level", "debug"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    daemon = DaemonUnderTest(
        directory=directory, config=config, socket=socket, log=log, process=process
    )
    try:
        await _wait_ready(daemon)
        yield daemon
    finally:
        if process.poll() is None:
            with trio.CancelScope(shield=True):
                try:
                    await daemon.stop()
                except trio.TooSlowError:
                    process.kill()
                    process.wait()


async def _wait_ready(daemon: DaemonUnderTest) -> None:
    with trio.move_on_after(READY_TIMEOUT):
        while daemon.process.poll() is None:
            try:
                await daemon.request("status")
                return
            except ConnectFailed:
                await trio.sleep(0.1)
    raise RuntimeError(
        f"waihud did not become ready (exit status {daemon.process.poll()}); its log:\n"
        + daemon.log_text()[-4000:]
    )
