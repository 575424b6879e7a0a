"""``waihud``: start-up, the main nursery, signals, drain — the daemon's life cycle only.

Start-up order mirrors ownership: plugins are found, the config validated
and what start-up would trip over looked for (``waihu.preflight``: the
providers' own checks, directories, groups, trunks) — any error → one line
naming file and key, exit 78 so systemd does not restart a broken config;
warnings are logged and start-up goes on; then, in the main nursery, the providers in the
order of their kinds' table (storage, speech recognisers and synthesisers,
trunks, notifiers); the calls a previous run left unfinished are reconciled and the
heartbeat starts; then the media clock, the scripts (their fixed lines
without a recording spoken by ``[call] tts`` into the speech cache that
calls share), the call dispatcher, the metrics endpoint when ``[metrics]``
enables it (``waihu.metrics``), the campaigns,
and last the control socket; only then is systemd told READY.

Signals: SIGTERM/SIGINT drain — no new calls, live calls get
``daemon.drain_timeout`` seconds to finish, then are hung up cleanly — and
exit 0. SIGHUP reloads the scripts.

The heartbeat writes ``storage.set_alive(node, now)`` every
``HEARTBEAT_SECONDS``: after a crash, the next start-up ends the calls left
open at the daemon's last sign of life (``waihu.call_lifecycle``).

Exit status (documented in waihud(8)): 0 after a drain or a good
``--check-config``; 1 when start-up fails for a reason that is not the
configuration (a provider that does not start: a port in use, a model that
vosk cannot load, a database that cannot be opened) or on a bug; 2 for a
command-line mistake (argparse); 78 (``EX_CONFIG``) for a configuration
problem, found by ``--check-config``, before start-up, or while starting (the
state directory or the control socket cannot be created).

Error handling: every start-up failure above is one line on stderr, no
traceback: ``ConfigError``s (also raised inside the main nursery for the state
directory and the control socket) exit 78, other ``WaihuError``s exit 1. A
call's own errors stay in the call (``waihu.call``); storage failing while
calls are reconciled stops start-up with its error (exit 1); a heartbeat that
cannot be written is logged and tried again; anything else escaping the main
nursery is a bug and exits non-zero, with its traceback, so systemd restarts
the daemon.

What it is not: admission and live calls (``waihu.dispatcher``), the
control commands (``waihu.control.handlers``), or a call (``waihu.call``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pluggy
import trio

from waihu import sd_notify
from waihu.api import CampaignStore, CpuLimiter, Storage, WaihuError
from waihu.call_lifecycle import reconcile_unfinished
from waihu.campaign.scheduler import CampaignScheduler
from waihu.campaign.service import CampaignService
from waihu.config import DEFAULT_CONFIG_PATH, LOG_LEVELS, Config, ConfigError
from waihu.control.handlers import ControlHandlers, daemon_version
from waihu.control.server import ControlServer, ControlSocketError
from waihu.dialog.library import ScriptLibrary, SpeechCache
from waihu.dispatcher import CallDispatcher
from waihu.events import EventBus
from waihu.media.media_clock import MediaClock
from waihu.metrics import DaemonMetrics, MetricsEndpoint
from waihu.notify.outbox import OutboxDelivery
from waihu.plugins import PluginError, collect_provider_types, make_plugin_manager
from waihu.preflight import check_scripts, checked_config
from waihu.providers import Providers

__all__ = ["EX_CONFIG", "EX_SOFTWARE", "EX_USAGE", "HEARTBEAT_SECONDS", "Daemon", "check", "main"]

log = logging.getLogger("waihu.daemon")

EX_CONFIG = 78  # sysexits.h: configuration error; systemd's RestartPreventExitStatus
EX_SOFTWARE = 1  # start-up failed for another reason, or a bug: systemd may restart
EX_USAGE = 2  # a command-line mistake (argparse's own exit status)
# How often the daemon says it is alive. After a crash its unfinished calls are ended at
# the last beat, so this bounds how wrong their end time can be.
HEARTBEAT_SECONDS = 5.0


class Daemon:
    """A running waihud: starts its parts in order, serves until told to stop, drains."""

    def __init__(self, config: Config, pm: pluggy.PluginManager) -> None:
        self.config = config
        self.pm = pm
        self.events = EventBus(pm)
        self.cpu_limiter = CpuLimiter(config.daemon.cpu_threads)
        self.state_dir = Path(config.daemon.state_dir)
        self.providers = Providers(
            config,
            collect_provider_types(pm),
            state_dir=self.state_dir,
            cpu_limiter=self.cpu_limiter,
        )
        self.clock = MediaClock()
        self.started_at = time.time()
        self.scripts: ScriptLibrary | None = None
        self.dispatcher: CallDispatcher | None = None
        self.control_path = Path(config.daemon.control_socket)
        self.metrics: DaemonMetrics | None = None  # with [metrics] enabled, once started
        self.metrics_address: tuple[str, int] | None = None  # (host, port) it listens on
        self._stop = trio.Event()

    def stop(self) -> None:
        """Begin the graceful drain and exit (SIGTERM, or ``waihuctl shutdown``)."""
        self._stop.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown is asked for, then drain and return.

        Raises ConfigError naming the key when the state directory or the
        control socket cannot be set up (preflight saw none of it: the file
        system may change, and it checks as its own user).
        """
        await trio.to_thread.run_sync(self._make_state_dir)
        node = self.config.daemon.node
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals)
            await self.providers.start_all(nursery)
            storage = self.providers.storage
            await reconcile_unfinished(storage, node)  # before the first beat of this run
            nursery.start_soon(self._heartbeat, storage, node)
            await nursery.start(self.clock.run)
            nlu_name, tts_name = self.config.call.nlu, self.config.call.tts
            self.scripts = ScriptLibrary(
                Path(self.config.daemon.scripts_dir),
                lambda: self.providers.build("nlu", nlu_name),
                limiter=self.cpu_limiter,
                speech=None
                if tts_name is None
                else SpeechCache(self.providers.get("tts", tts_name)),
            )
            await self.scripts.load()
            dispatcher = self.dispatcher = CallDispatcher(
                self.config, self.providers, self.scripts, clock=self.clock, events=self.events
            )
            await nursery.start(dispatcher.run)
            if self.config.metrics.enabled:  # before the campaigns, which may dial at once
                await self._start_metrics(nursery, storage, dispatcher)
            campaigns = await self._start_campaigns(nursery, storage, dispatcher)
            handlers = ControlHandlers(
                dispatcher=dispatcher,
                storage=storage,
                events=self.events,
                pm=self.pm,
                clock=self.clock,
                stop=self.stop,
                started_at=self.started_at,
                campaigns=campaigns,
                recordings_dir=self.state_dir / self.config.daemon.recordings_dir,
            )
            server = ControlServer(
                self.control_path,
                handlers,
                group=self.config.daemon.control_group,
                admin_group=self.config.daemon.control_admin_group,
            )
            try:
                await nursery.start(server.run)
            except ControlSocketError as exc:
                if exc.key is None:  # not the configuration's fault (another daemon runs)
                    raise
                text = str(exc).removeprefix(f"{exc.key}: ")
                raise ConfigError([f"{self.config.path}: {exc.key}: {text}"]) from None
            sd_notify.notify("READY=1\nSTATUS=serving")
            log.info("waihud %s ready; control socket %s", daemon_version(), self.control_path)
            task_status.started()
            await self._stop.wait()
            sd_notify.notify("STOPPING=1\nSTATUS=draining")
            await dispatcher.drain(self.config.daemon.drain_timeout)
            nursery.cancel_scope.cancel()
        log.info("waihud stopped")

    def _make_state_dir(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                [
                    f"{self.config.path}: daemon.state_dir: cannot create {self.state_dir}:"
                    f" {exc.strerror}"
                ]
            ) from None

    async def _start_campaigns(
        self, nursery: trio.Nursery, storage: Storage, dispatcher: CallDispatcher
    ) -> CampaignService | None:
        """The notifiers' outboxes, the campaign scheduler (which first reconciles the
        attempts a crash left open) and the operators' campaign service; None when the
        storage keeps no campaigns."""
        if not isinstance(storage, CampaignStore):
            log.warning("storage %s keeps no campaigns; campaign commands are off", storage)
            return None
        outboxes = {
            name: OutboxDelivery(storage, name, notifier)
            for name, notifier in self.providers.started("notify").items()
        }
        for outbox in outboxes.values():
            await nursery.start(outbox.run)
        scheduler = CampaignScheduler(
            store=storage,
            calls=storage,
            dispatcher=dispatcher,
            events=self.events,
            outboxes=outboxes,
            node=self.config.daemon.node,
            frequency_cap_hours=self.config.campaign.frequency_cap_hours,
        )
        await nursery.start(scheduler.run)
        return CampaignService(
            store=storage,
            calls=storage,
            scheduler=scheduler,
            dispatcher=dispatcher,
            default_region=self.config.campaign.default_region,
        )

    async def _start_metrics(
        self, nursery: trio.Nursery, storage: Storage, dispatcher: CallDispatcher
    ) -> None:
        """The Prometheus endpoint (``[metrics]``), counting events from now on."""
        self.metrics = DaemonMetrics(
            version=daemon_version(),
            started_at=self.started_at,
            dispatcher=dispatcher,
            providers=self.providers,
            clock=self.clock,
            store=storage if isinstance(storage, CampaignStore) else None,
        )
        await nursery.start(self.metrics.follow, self.events)
        endpoint = MetricsEndpoint(self.config.metrics.listen, self.metrics)
        self.metrics_address = await nursery.start(endpoint.run)

    async def _heartbeat(self, storage: Storage, node: str) -> None:
        while True:
            try:
                await storage.set_alive(node, time.time())
            except Exception as exc:  # a locked or full database: the next beat may do
                log.error("cannot write the heartbeat of %s: %s", node, exc)
            await trio.sleep(HEARTBEAT_SECONDS)

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
                    self.stop()


# ───────────────────────── command line ─────────────────────────


def _setup_logging(level: str) -> None:
    # journald stamps each line itself; elsewhere a timestamp helps
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=stamp + "%(levelname)s %(name)s: %(message)s",
    )


def check_config(config_path: Path, pm: pluggy.PluginManager) -> tuple[Config, list[str]]:
    """What ``--check-config`` checks: the file, what start-up would trip over
    (``waihu.preflight``) and every script; the config and the warnings found.

    Raises ConfigError listing every problem (and the warnings) found.
    """
    config, found = checked_config(config_path, collect_provider_types(pm))
    found.extend(check_scripts(config))
    if found.errors:
        raise ConfigError(found.errors, warnings=found.warnings)
    return config, found.warnings


def check(config_path: Path, pm: pluggy.PluginManager) -> Config:
    """``check_config`` without its warnings: the config, or ConfigError on any problem."""
    return check_config(config_path, pm)[0]


def _load_for_start(config_path: Path, pm: pluggy.PluginManager) -> Config:
    """The config start-up runs with, once preflight found no error; warnings are logged."""
    config, found = checked_config(config_path, collect_provider_types(pm))
    if found.errors:
        raise ConfigError(found.errors, warnings=found.warnings)
    for warning in found.warnings:
        log.warning("%s", warning)
    return config


def _print_config_error(exc: ConfigError) -> None:
    for warning in exc.warnings:
        print(f"waihud: warning: {warning}", file=sys.stderr)
    for problem in exc.problems:
        print(f"waihud: {problem}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``waihud``; the exit status (see the module docstring)."""
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
        help="check the configuration, its scripts and what start-up needs, then exit"
        f" (0: good, {EX_CONFIG}: a problem)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="override daemon.log_level")
    parser.add_argument("--version", action="version", version=f"waihud {daemon_version()}")
    args = parser.parse_args(argv)
    config_path = Path(args.check_config) if isinstance(args.check_config, str) else args.config
    _setup_logging(args.log_level or "info")
    try:
        pm = make_plugin_manager()
        if args.check_config:
            _config, warnings = check_config(config_path, pm)
            for warning in warnings:
                print(f"waihud: warning: {warning}", file=sys.stderr)
            print(f"{config_path}: OK")
            return 0
        config = _load_for_start(config_path, pm)
    except ConfigError as exc:
        _print_config_error(exc)
        return EX_CONFIG
    except (PluginError, pluggy.PluginValidationError) as exc:
        print(f"waihud: plugin error: {exc}", file=sys.stderr)
        return EX_CONFIG
    logging.getLogger().setLevel((args.log_level or config.daemon.log_level).upper())
    try:
        trio.run(Daemon(config, pm).run)
    except ConfigError as exc:
        _print_config_error(exc)
        return EX_CONFIG
    except WaihuError as exc:
        log.error("%s", exc)
        return EX_SOFTWARE
    except BaseExceptionGroup as group:
        # a provider or part that failed to start: report it plainly; anything else is a bug
        known, rest = group.split(WaihuError)
        if rest is not None or known is None:
            raise
        leaves = _leaves(known)
        config_errors = [exc for exc in leaves if isinstance(exc, ConfigError)]
        for exc in config_errors:
            _print_config_error(exc)
        for exc in leaves:
            if not isinstance(exc, ConfigError):
                log.error("%s", exc)
        return EX_CONFIG if config_errors else EX_SOFTWARE
    return 0


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


if __name__ == "__main__":
    sys.exit(main())
