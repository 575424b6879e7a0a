"""``waihud``: start-up, the main nursery, signals, and the operator's commands.

Start-up order mirrors ownership: plugins are found, the config validated
(any error → message naming file and key, exit 78 so systemd does not
restart a broken config), then storage, ASR engines, trunks and the media
clock are started in the main nursery, the scripts loaded, and the control
socket opened last; only then is systemd told READY.

Signals: SIGTERM/SIGINT drain — no new calls, live calls get
``daemon.drain_timeout`` seconds to finish, then are hung up cleanly — and
exit 0. SIGHUP reloads the scripts.

Error handling: a call's own errors stay in the call (``waihu.call``); a
provider that fails to start stops start-up with its error (exit 1); anything
else escaping the main nursery is a bug and exits non-zero so systemd
restarts the daemon.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import attrs
import pluggy
import trio

from waihu import sd_notify
from waihu.api import CallRecord, WaihuError
from waihu.call import CallServices, place_call, record_as_dict
from waihu.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from waihu.control.monitor import Monitor
from waihu.control.protocol import ControlError
from waihu.control.server import ControlServer, EventStream
from waihu.dialog.library import ScriptLibrary
from waihu.dialog.script import ScriptError, load_script
from waihu.events import EventBus
from waihu.media.media_clock import MediaClock
from waihu.plugins import PluginError, collect_provider_types, make_plugin_manager, plugin_info
from waihu.providers import Providers

__all__ = ["Daemon", "main"]

log = logging.getLogger("waihu.daemon")

EX_CONFIG = 78  # sysexits.h: configuration error; systemd's RestartPreventExitStatus


class Daemon:
    """A running waihud: owns the providers, the scripts, the live calls."""

    def __init__(self, config: Config, pm: pluggy.PluginManager) -> None:
        self.config = config
        self.pm = pm
        self.events = EventBus(pm)
        self.cpu_limiter = trio.CapacityLimiter(config.daemon.cpu_threads)
        self.state_dir = Path(config.daemon.state_dir)
        self.providers = Providers(
            config,
            collect_provider_types(pm),
            state_dir=self.state_dir,
            cpu_limiter=self.cpu_limiter,
        )
        self.live: dict[str, CallRecord] = {}
        self.draining = False
        self.started_at = time.time()
        self._stop = trio.Event()
        self._calls_done = trio.Event()
        self._calls_done.set()
        self.clock = MediaClock()
        self.scripts: ScriptLibrary | None = None
        self._calls_nursery: trio.Nursery | None = None
        self.control_path = Path(config.daemon.control_socket)

    # ───────────────────────── life cycle ─────────────────────────

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown is asked for, then drain and return."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals)
            await self.providers.start_all(nursery)
            await nursery.start(self.clock.run)
            nlu_name = self.config.call.nlu
            self.scripts = ScriptLibrary(
                Path(self.config.daemon.scripts_dir),
                lambda: self.providers.build("nlu", nlu_name),
                limiter=self.cpu_limiter,
            )
            await self.scripts.load()
            async with trio.open_nursery() as calls:
                self._calls_nursery = calls
                await nursery.start(ControlServer(self.control_path, self).run)
                sd_notify.notify("READY=1\nSTATUS=serving")
                log.info("waihud %s ready; control socket %s", _version(), self.control_path)
                task_status.started()
                await self._stop.wait()
                sd_notify.notify("STOPPING=1\nSTATUS=draining")
                await self._drain(calls)
            nursery.cancel_scope.cancel()
        log.info("waihud stopped")

    async def _drain(self, calls: trio.Nursery) -> None:
        self.draining = True
        if self.live:
            log.info(
                "draining: %d live call(s), up to %.0f s",
                len(self.live),
                self.config.daemon.drain_timeout,
            )
        with trio.move_on_after(self.config.daemon.drain_timeout):
            await self._calls_done.wait()
        if self.live:
            log.warning("drain deadline: hanging up %d call(s)", len(self.live))
        calls.cancel_scope.cancel()  # each call hangs up and files its record, shielded

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading scripts")
                    # systemd ≥ 253 pairs RELOADING with the monotonic time the reload began
                    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                    sd_notify.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
                    if self.scripts is not None:
                        await self.scripts.load()
                    sd_notify.notify("READY=1")
                else:
                    log.info("%s: shutting down", signal.Signals(signum).name)
                    self._stop.set()

    # ───────────────────────── operator commands ─────────────────────────

    async def status(self) -> dict[str, Any]:
        return {
            "version": _version(),
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 1),
            "draining": self.draining,
            "live_calls": len(self.live),
            "trunks": [s.name for s in self.config.sections("trunk")],
            "scripts": sorted(self.scripts.scripts) if self.scripts else [],
            "script_errors": self.scripts.problems if self.scripts else {},
            "media_clock": attrs.asdict(self.clock.stats),
        }

    async def plugins(self) -> list[dict[str, Any]]:
        return plugin_info(self.pm)

    async def call(
        self,
        target: str,
        script: str,
        trunk: str | None = None,
        variables: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if self.draining or self._calls_nursery is None:
            raise ControlError("unavailable", "waihud is shutting down; no new calls")
        if len(self.live) >= self.config.daemon.max_calls:
            raise ControlError(
                "unavailable", f"{len(self.live)} calls live (daemon.max_calls); try later"
            )
        assert self.scripts is not None
        loaded = self.scripts.get(script)
        if loaded is None:
            known = ", ".join(sorted(self.scripts.scripts)) or "none"
            raise ControlError("not_found", f"no script named {script!r} (loaded: {known})")
        trunk_name = trunk or self.config.call.trunk or self._only_trunk()
        provider = self.providers.get("trunk", trunk_name)
        if provider is None:
            raise ControlError("not_found", f"no trunk named {trunk_name!r}")
        if not target.strip():
            raise ControlError("bad_request", "target must be a number or SIP URI")
        record = CallRecord(
            id=time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3),
            number=target.strip(),
            script=script,
            trunk=trunk_name,
            created_at=time.time(),
        )
        self.live[record.id] = record
        self._calls_done = trio.Event()
        self._calls_nursery.start_soon(self._run_call, provider, record, loaded, variables)
        return {"call_id": record.id}

    def _only_trunk(self) -> str:
        names = [s.name for s in self.config.sections("trunk")]
        if len(names) != 1:
            raise ControlError(
                "bad_request", f"say which trunk (configured: {', '.join(names) or 'none'})"
            )
        return names[0]

    async def _run_call(
        self, trunk: Any, record: CallRecord, loaded: Any, variables: dict[str, str] | None
    ) -> None:
        try:
            await place_call(self._services(), trunk, record, loaded, variables=variables)
        finally:
            del self.live[record.id]
            if not self.live:
                self._calls_done.set()

    def _services(self) -> CallServices:
        rec = Path(self.config.daemon.recordings_dir)
        return CallServices(
            storage=self.providers.storage,
            asr=self.providers.get("asr", self.config.call.asr),
            clock=self.clock,
            events=self.events,
            media=self.config.media,
            call=self.config.call,
            recordings_dir=(self.state_dir / rec) if self.config.media.record else None,
        )

    async def calls(self, limit: int = 20) -> list[dict[str, Any]]:
        storage = self.providers.storage
        rows = [_summary(r) for r in await storage.recent_calls(limit)]
        return rows

    async def call_show(self, id: str) -> dict[str, Any]:
        record = self.live.get(id) or await self.providers.storage.get_call(id)
        if record is None:
            raise ControlError("not_found", f"no call with id {id!r}")
        return record_as_dict(record)

    async def watch(self, call_id: str | None = None) -> EventStream:
        # subscribe before looking: a call live now cannot end unseen in between
        monitor = Monitor(self.events, call_id)
        if call_id is not None and call_id not in self.live:
            monitor.close()
            if await self.providers.storage.get_call(call_id) is not None:
                raise ControlError(
                    "not_found", f"call {call_id!r} has ended; 'call show {call_id}' shows it"
                )
            raise ControlError("not_found", f"no call with id {call_id!r}")
        live = sorted(i for i in self.live if call_id in (None, i))
        return EventStream(result={"call_id": call_id, "live_calls": live}, events=monitor)

    async def shutdown(self) -> dict[str, Any]:
        self._stop.set()
        return {"draining": True, "live_calls": len(self.live)}


def _summary(record: CallRecord) -> dict[str, Any]:
    duration = None
    if record.answered_at and record.ended_at:
        duration = round(record.ended_at - record.answered_at, 1)
    return {
        "id": record.id,
        "number": record.number,
        "script": record.script,
        "status": record.status,
        "sip_status": record.sip_status,
        "grade": record.grade,
        "created_at": record.created_at,
        "duration": duration,
        "hangup_by": record.hangup_by,
    }


def _version() -> str:
    try:
        return version("waihu")
    except Exception:
        return "unknown"


# ───────────────────────── command line ─────────────────────────


def _setup_logging(level: str) -> None:
    # journald stamps each line itself; elsewhere a timestamp helps
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=stamp + "%(levelname)s %(name)s: %(message)s",
    )


def check(config_path: Path, pm: pluggy.PluginManager) -> Config:
    """Validate the config and every script it points at; raise ConfigError on any problem."""
    config = load_config(config_path, collect_provider_types(pm))
    problems: list[str] = []
    scripts_dir = Path(config.daemon.scripts_dir)
    for path in sorted(scripts_dir.glob("*.toml")) if scripts_dir.is_dir() else []:
        try:
            load_script(path)
        except ScriptError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``waihud``."""
    parser = argparse.ArgumentParser(prog="waihud", description="waihu phone robot daemon")
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help=f"configuration file (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--check-config",
        nargs="?",
        const=True,
        metavar="FILE",
        help="validate the configuration and its scripts, then exit",
    )
    parser.add_argument("--log-level", help="override daemon.log_level")
    parser.add_argument("--version", action="version", version=f"waihud {_version()}")
    args = parser.parse_args(argv)
    config_path = Path(args.check_config) if isinstance(args.check_config, str) else args.config
    _setup_logging(args.log_level or "info")
    try:
        pm = make_plugin_manager()
        if args.check_config:
            check(config_path, pm)
            print(f"{config_path}: OK")
            return 0
        config = load_config(config_path, collect_provider_types(pm))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"waihud: {problem}", file=sys.stderr)
        return EX_CONFIG
    except (PluginError, pluggy.PluginValidationError) as exc:
        print(f"waihud: plugin error: {exc}", file=sys.stderr)
        return EX_CONFIG
    logging.getLogger().setLevel((args.log_level or config.daemon.log_level).upper())
    try:
        trio.run(Daemon(config, pm).run)
    except WaihuError as exc:
        log.error("%s", exc)
        return 1
    except BaseExceptionGroup as group:
        # a provider that failed to start: report it plainly; anything else is a bug
        known, rest = group.split(WaihuError)
        if rest is not None or known is None:
            raise
        for exc in _leaves(known):
            log.error("%s", exc)
        return 1
    return 0


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


if __name__ == "__main__":
    sys.exit(main())
