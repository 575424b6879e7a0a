"""The daemon's Prometheus metrics and the HTTP endpoint that serves them.

``DaemonMetrics`` keeps one ``prometheus_client.CollectorRegistry`` per daemon
(never the process-global one: tests run several daemons, and a plugin's own
metrics must not leak into ours). What it holds comes from three places:

- *call events* (``waihu.events.EventBus.subscribe``): ``dialing`` counts a call
  started on its trunk, ``ended``/``failed`` a call finished with its outcome
  and grade;
- *timings* (``EventBus.on_timing``): how long the recogniser took for each
  final result, and each turn's latency, reported by the call's lifecycle;
- *a snapshot taken at scrape time* on the trio thread: live calls per trunk,
  each trunk's state (``waihu.api.trunk_status``), the media clock's figures
  (``MediaClock.stats``), and — read from the campaign store, at most every
  ``STORE_REFRESH_S`` seconds — the notifiers' outbox backlog and the pending
  contacts of running and paused campaigns.

``MetricsEndpoint`` serves ``GET /metrics`` over HTTP/1.1 on trio with h11
(a sans-IO protocol: the connection object parses and frames, this module
only moves bytes), in the daemon's nursery, so it stops with the daemon.
The exposition format is negotiated with ``prometheus_client``'s own
``choose_encoder`` (text 0.0.4, or OpenMetrics when asked for) and rendered
in a worker thread. Any other path is 404, any other method 405.

Why not ``prometheus_client``'s own servers: ``start_http_server`` and its
WSGI app run on a ``wsgiref`` server in a daemon thread of their own, outside
the nursery (it would outlive a drained daemon and cannot report its bound
port to the trio side cleanly); its ASGI app needs an ASGI server (hypercorn,
uvicorn) that waihu does not otherwise carry. A few dozen lines of h11 serve
one read-only path.

Error handling: an address that cannot be bound (in use, not local) is
logged naming ``metrics.listen`` and tried again every ``BIND_RETRY_S``
seconds while the daemon runs on — metrics are never a reason for calls to
stop. A client that sends a malformed request gets 400 (a head larger than
``MAX_REQUEST_BYTES``: 431) and is disconnected;
one that sends nothing for ``IDLE_S`` seconds is disconnected. Metrics that
cannot be gathered (a store failing in an unexpected way) answer 500 with
the reason and are logged; a trunk whose ``status()`` raises is logged and
left out of ``waihu_trunk_state``; no error in here reaches the daemon's
nursery. A campaign
store that fails while the backlog is read is logged, and the last figures
read are served again. A subscriber that cannot keep up loses events rather
than slowing calls; each lost event is counted in
``waihu_metrics_events_lost_total``.

What it is not: a place that decides anything (alerts belong to Prometheus:
``waihud(8)`` has example rules), a store of history, or a second status
command (``waihuctl status`` is for people).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import h11
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from waihu.api import TRUNK_STATES, CallEvent, CampaignStore, ProviderError, trunk_status
from waihu.config import parse_listen

if TYPE_CHECKING:
    from waihu.dispatcher import CallDispatcher
    from waihu.events import EventBus
    from waihu.media.media_clock import MediaClock
    from waihu.providers import Providers

__all__ = [
    "ASR_BUCKETS",
    "METRICS_PATH",
    "TURN_LATENCY_BUCKETS",
    "DaemonMetrics",
    "MetricsEndpoint",
]

log = logging.getLogger("waihu.metrics")

METRICS_PATH = "/metrics"
# Turn latency runs from the callee's last word (the endpointer's decision) to the robot's
# first frame: final recognition, classification and a media tick. Sub-second is good;
# seconds are what callers notice as a robot that is "thinking".
TURN_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# A final vosk result takes tens of milliseconds on an idle core; a busy or starved
# CPU limiter shows up in the upper buckets.
ASR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
NO_GRADE = "none"  # the grade label of a call without one (it failed before the script graded)
STORE_REFRESH_S = 10.0  # the outbox and campaign figures are read from storage at most this often
# Outbox items counted per notifier and scrape; a backlog beyond it shows as this number.
OUTBOX_SCAN_LIMIT = 10_000
FAR_FUTURE = 1e12  # seconds since the epoch (year 33658): "due at any time" for outbox_due
LIVE_CAMPAIGN_STATES = ("running", "paused")  # campaigns whose pending contacts are shown
BIND_RETRY_S = 30.0  # try an address that could not be bound again after this long
IDLE_S = 60.0  # a connection that sends no request for this long is closed
RECEIVE_BYTES = 16_384  # bytes read from a client at a time
MAX_REQUEST_BYTES = 16_384  # a request head larger than this is refused (400)


# ───────────────────────── what is measured ─────────────────────────


# The media clock's figures (``ClockStats``): metric, kind, HELP text, ClockStats field.
CLOCK_FIGURES: tuple[tuple[str, Callable[..., Metric], str, str], ...] = (
    ("waihu_media_clock_ticks", CounterMetricFamily, "Ticks of the media clock.", "ticks"),
    (
        "waihu_media_clock_late_ticks",
        CounterMetricFamily,
        "Ticks that started more than 5 ms after their deadline.",
        "late_ticks",
    ),
    (
        "waihu_media_clock_skipped_frames",
        CounterMetricFamily,
        "Frames skipped to catch up after the clock fell more than 3 frames behind.",
        "skipped",
    ),
    (
        "waihu_media_clock_max_lateness_seconds",
        GaugeMetricFamily,
        "The worst lateness of a tick since the daemon started.",
        "max_lateness",
    ),
    (
        "waihu_media_clock_max_tick_seconds",
        GaugeMetricFamily,
        "The longest time one tick of every call's media took since the daemon started.",
        "max_tick_seconds",
    ),
    (
        "waihu_media_clock_source_errors",
        CounterMetricFamily,
        "Calls whose media raised on a tick and were taken off the clock.",
        "source_errors",
    ),
)


@attrs.define
class _Snapshot:
    """The figures read at scrape time, kept between scrapes (the store part is cached)."""

    live: dict[str, int] = attrs.Factory(dict)  # trunk → live calls
    trunks: dict[str, tuple[str, float]] = attrs.Factory(dict)  # trunk → (state, since)
    clock: dict[str, float] = attrs.Factory(dict)  # ClockStats field → value
    clock_sources: int = 0
    outbox: dict[str, tuple[int, int]] = attrs.Factory(dict)  # notifier → (pending, failing)
    contacts: dict[str, int] = attrs.Factory(dict)  # campaign name → pending contacts
    store_read_at: float = -math.inf  # trio.current_time() of the last store read


class _SnapshotCollector(Collector):
    """Yields the scrape-time figures from the last snapshot (never reads the daemon itself,
    so it is safe to run in the worker thread that renders the exposition)."""

    def __init__(self, snapshot: _Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        s = self.snapshot
        live = GaugeMetricFamily(
            "waihu_calls_live", "Calls dialling, ringing or answered now.", labels=["trunk"]
        )
        for trunk, count in s.live.items():
            live.add_metric([trunk], count)
        yield live
        state = GaugeMetricFamily(
            "waihu_trunk_state",
            "1 for the state each trunk is in now, 0 for the others.",
            labels=["trunk", "state"],
        )
        since = GaugeMetricFamily(
            "waihu_trunk_state_since_seconds",
            "When each trunk entered its current state (seconds since the epoch).",
            labels=["trunk"],
        )
        for trunk, (current, at) in s.trunks.items():
            for name in TRUNK_STATES:
                state.add_metric([trunk, name], 1.0 if name == current else 0.0)
            since.add_metric([trunk], at)
        yield state
        yield since
        yield from self._clock()
        pending = GaugeMetricFamily(
            "waihu_notify_outbox_pending",
            "Notifications waiting in a notifier's outbox (due now or retried later).",
            labels=["notifier"],
        )
        failing = GaugeMetricFamily(
            "waihu_notify_outbox_failing",
            "Waiting notifications whose delivery has failed at least once.",
            labels=["notifier"],
        )
        for notifier, (waiting, failed) in s.outbox.items():
            pending.add_metric([notifier], waiting)
            failing.add_metric([notifier], failed)
        yield pending
        yield failing
        contacts = GaugeMetricFamily(
            "waihu_campaign_contacts_pending",
            "Contacts of a running or paused campaign still waiting for a call.",
            labels=["campaign"],
        )
        for campaign, count in s.contacts.items():
            contacts.add_metric([campaign], count)
        yield contacts

    def _clock(self) -> Iterator[Metric]:
        figures = self.snapshot.clock
        if not figures:
            return
        for name, family, documentation, field in CLOCK_FIGURES:
            yield family(name, documentation, value=figures[field])
        yield GaugeMetricFamily(
            "waihu_media_clock_sources",
            "Calls the media clock is ticking now.",
            value=self.snapshot.clock_sources,
        )


class DaemonMetrics:
    """One daemon's metrics: counters fed by events and timings, gauges read at scrape.

    ``dispatcher``, ``providers`` and ``clock`` are read (on the trio thread) by
    ``refresh`` before each exposition, ``store`` at most every ``store_refresh``
    seconds; all of them may be None in a test that feeds events only.
    """

    def __init__(
        self,
        *,
        version: str,
        started_at: float,
        dispatcher: CallDispatcher | None = None,
        providers: Providers | None = None,
        clock: MediaClock | None = None,
        store: CampaignStore | None = None,
        store_refresh: float = STORE_REFRESH_S,
    ) -> None:
        self.registry = CollectorRegistry()
        self.store_refresh = store_refresh
        self.dispatcher = dispatcher
        self.providers = providers
        self.clock = clock
        self.store = store
        self.started_at = started_at
        reg = self.registry
        self.calls_started = Counter(
            "waihu_calls_started", "Calls started, by trunk.", ["trunk"], registry=reg
        )
        self.calls_finished = Counter(
            "waihu_calls_finished",
            "Calls finished, by outcome (answered, busy, no_answer…) and grade (none: no grade).",
            ["outcome", "grade"],
            registry=reg,
        )
        self.turn_latency = Histogram(
            "waihu_turn_latency_seconds",
            "From the end of the callee's reply to the first frame of the robot's answer.",
            buckets=TURN_LATENCY_BUCKETS,
            registry=reg,
        )
        self.asr_decode = Histogram(
            "waihu_asr_decode_seconds",
            "Time the recogniser took for the final result of an utterance.",
            buckets=ASR_BUCKETS,
            registry=reg,
        )
        self.events_lost = Counter(
            "waihu_metrics_events_lost",
            "Call events the metrics fell too far behind to count.",
            registry=reg,
        )
        Info("waihu_daemon", "The running waihud.", registry=reg).info({"version": version})
        Gauge(
            "waihu_start_time_seconds",
            "When the daemon started (seconds since the epoch).",
            registry=reg,
        ).set(started_at)
        if dispatcher is not None:
            for trunk in dispatcher.trunks:  # zero from the start, so rate() sees the first call
                self.calls_started.labels(trunk=trunk)
        self._snapshot = _Snapshot()
        reg.register(_SnapshotCollector(self._snapshot))
        self._refreshing = trio.Lock()  # one store read at a time, however many scrapes

    # ── fed by the daemon ──

    def observe(self, event: CallEvent) -> None:
        """Count one call event (kinds other than dialing/ended/failed change nothing)."""
        if event.kind == "dialing":
            self.calls_started.labels(trunk=event.data["trunk"]).inc()
        elif event.kind in ("ended", "failed"):
            grade = event.data["grade"] or NO_GRADE
            self.calls_finished.labels(outcome=event.data["outcome"], grade=grade).inc()

    def timed(self, measure: str, seconds: float) -> None:
        """One timing the EventBus reports (``waihu.events.TIMINGS``)."""
        if measure == "asr":
            self.asr_decode.observe(seconds)
        elif measure == "turn_latency":
            self.turn_latency.observe(seconds)

    def lost(self, _event: CallEvent) -> None:
        """An event the subscription dropped (its ``on_drop``)."""
        self.events_lost.inc()

    async def follow(
        self, events: EventBus, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Count ``events``' call events and timings until cancelled."""
        events.on_timing(self.timed)
        with events.subscribe(on_drop=self.lost) as channel:
            task_status.started()
            async for event in channel:
                self.observe(event)

    # ── read at scrape time ──

    async def refresh(self) -> None:
        """Take the scrape-time snapshot: the daemon's state now, the store's if stale."""
        s = self._snapshot
        if self.dispatcher is not None:
            live = dict.fromkeys(self.dispatcher.trunks, 0)
            for record in self.dispatcher.live.values():
                live[record.trunk] = live.get(record.trunk, 0) + 1
            s.live = live
            states = {name: self._trunk_state(name) for name in self.dispatcher.trunks}
            s.trunks = {name: state for name, state in states.items() if state is not None}
        if self.clock is not None:
            s.clock = attrs.asdict(self.clock.stats)
            s.clock_sources = len(self.clock)
        async with self._refreshing:
            if trio.current_time() - s.store_read_at >= self.store_refresh:
                await self._read_store()

    def _trunk_state(self, name: str) -> tuple[str, float] | None:
        trunk = None if self.providers is None else self.providers.get("trunk", name)
        if trunk is None:  # configured, but not running
            return "down", self.started_at
        try:
            status = trunk_status(trunk, started_at=self.started_at)
        except Exception:  # a third-party trunk's bug: the other trunks are still shown
            log.exception("metrics: trunk %s: status() failed", name)
            return None
        return status.state, status.since

    async def _read_store(self) -> None:
        store, s = self.store, self._snapshot
        if store is None:
            return
        notifiers = [] if self.providers is None else list(self.providers.started("notify"))
        try:
            outbox = {}
            for name in notifiers:
                items = await store.outbox_due(name, now=FAR_FUTURE, limit=OUTBOX_SCAN_LIMIT)
                outbox[name] = (len(items), sum(1 for item in items if item.tries > 0))
            contacts = {}
            for campaign in await store.list_campaigns():
                if campaign.state in LIVE_CAMPAIGN_STATES:
                    counts = await store.contact_counts(campaign.id)
                    contacts[campaign.name] = counts.get("pending", 0)
        except ProviderError as exc:
            log.warning("metrics: cannot read the outbox and campaigns: %s; showing the last", exc)
        else:
            s.outbox, s.contacts = outbox, contacts
        s.store_read_at = trio.current_time()

    async def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics as (body, content type), in the format ``accept`` asks for."""
        await self.refresh()
        encoder, content_type = choose_encoder(accept)
        return await trio.to_thread.run_sync(encoder, self.registry), content_type


# ───────────────────────── the HTTP endpoint ─────────────────────────


class MetricsEndpoint:
    """Serves ``metrics`` at ``GET /metrics`` on ``listen`` (``HOST:PORT``, port 0: any free).

    ``address`` is the (host, port) bound, once bound; None before, or while
    the address cannot be bound.
    """

    def __init__(self, listen: str, metrics: DaemonMetrics) -> None:
        self.listen = listen
        self.host, self.port = parse_listen(listen)
        self.metrics = metrics
        self.address: tuple[str, int] | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[tuple[str, int] | None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; ``started`` with the bound address, or None if
        the first try failed (then it tries again every ``BIND_RETRY_S`` seconds)."""
        started = False
        while True:
            try:
                listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            except OSError as exc:
                log.error(
                    "metrics.listen %s: cannot listen: %s; trying again every %.0f s",
                    self.listen,
                    exc.strerror or exc,
                    BIND_RETRY_S,
                )
                if not started:
                    started = True
                    task_status.started(None)
                await trio.sleep(BIND_RETRY_S)
                continue
            host, port = listeners[0].socket.getsockname()[:2]
            self.address = (host, port)
            shown = f"[{host}]" if ":" in host else host
            log.info("metrics on http://%s:%d%s", shown, port, METRICS_PATH)
            if not started:
                started = True
                task_status.started(self.address)
            await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        try:
            await self._converse(conn, stream)
        except h11.RemoteProtocolError as exc:  # 400, or 431 for a head that is too large
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    body = f"bad request: {exc}\n".encode()
                    await self._send(conn, stream, exc.error_status_hint, body)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except Exception:  # a bug here must not take the daemon's nursery down
            log.exception("metrics: serving a client failed")
        finally:
            await stream.aclose()

    async def _converse(self, conn: h11.Connection, stream: trio.SocketStream) -> None:
        """Answer requests on one connection until the client is done, idle or must go."""
        while True:
            request = None
            with trio.move_on_after(IDLE_S):
                request = await self._next_request(conn, stream)
            if request is None:
                return
            await self._respond(conn, stream, request)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _next_request(self, conn: h11.Connection, stream: trio.SocketStream) -> Any:
        """The next complete request (its body read and ignored), or None if the client is
        done."""
        request = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(RECEIVE_BYTES))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request
    ) -> None:
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        method = request.method.decode("ascii", "replace")
        if path != METRICS_PATH:
            body = f"not found: {path}; the metrics are at {METRICS_PATH}\n".encode()
            await self._send(conn, stream, 404, body)
            return
        if method not in ("GET", "HEAD"):
            body = f"method {method} not allowed; use GET\n".encode()
            await self._send(conn, stream, 405, body, [("Allow", "GET, HEAD")])
            return
        accept = b", ".join(v for k, v in request.headers if k == b"accept").decode("latin-1")
        try:
            body, content_type = await self.metrics.exposition(accept)
        except Exception as exc:  # a store or trunk that fails oddly: say so, serve on
            log.exception("metrics: cannot gather the metrics")
            body = f"cannot gather the metrics: {type(exc).__name__}: {exc}\n".encode()
            await self._send(conn, stream, 500, body)
            return
        await self._send(
            conn, stream, 200, body, [("Content-Type", content_type)], head=method == "HEAD"
        )

    async def _send(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        body: bytes,
        headers: Sequence[tuple[str, str]] = (),
        *,
        head: bool = False,
    ) -> None:
        fields: list[tuple[str, str]] = [
            ("Content-Length", str(len(body))),
            *(headers or [("Content-Type", "text/plain; charset=utf-8")]),
        ]
        data = conn.send(h11.Response(status_code=status, headers=fields))
        if not head:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
