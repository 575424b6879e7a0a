"""The Prometheus endpoint: what it counts, how it answers over HTTP, and a real daemon's.

The first part serves ``DaemonMetrics`` from a ``MetricsEndpoint`` on a real
loopback socket and scrapes it with httpx, feeding it through a real
``EventBus`` and reading a real SQLite campaign store; the dispatcher and
providers it reads at scrape time are small stand-ins with the two or three
attributes it uses. The second part starts the real ``waihud`` with
``[metrics]`` on port 0, places calls against sipp callees, and scrapes the
daemon over HTTP; and one without ``[metrics]``, where nothing listens.
Exposition text is read back with ``prometheus_client.parser``.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pluggy
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from test_sqlite_storage import make_storage, running

from waihu.api import (
    TRUNK_STATES,
    CallRecord,
    CampaignRow,
    Contact,
    ProviderError,
    TrunkStatus,
    Turn,
)
from waihu.call_lifecycle import CallLifecycle, reply_latencies
from waihu.config import ConfigError, load_config
from waihu.events import SUBSCRIBER_BUFFER, EventBus
from waihu.media.media_clock import MediaClock
from waihu.metrics import BIND_RETRY_S, STORE_REFRESH_S, DaemonMetrics, MetricsEndpoint
from waihu.testing.daemon import REPO, running_waihud, write_config
from waihu.testing.sipp import Play, sipp_peer
from waihu.testing.speech import synthesize, to_ulaw

TIMEOUT = 30  # seconds for in-process tests; generous, the machine is shared
CALL_TIMEOUT = 120.0
AFTER_GREETING_MS = 7500  # the demo greeting lasts about 6.4 s
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition: (name, labels) → value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def store_part(samples: Samples) -> Samples:
    """The samples read from the campaign store."""
    prefixes = ("waihu_notify_", "waihu_campaign_")
    return {k: v for k, v in samples.items() if k[0].startswith(prefixes)}


def helps(text: str) -> dict[str, str]:
    return {family.name: family.documentation for family in text_string_to_metric_families(text)}


# ───────────────────────── stand-ins for what is read at scrape time ─────────────────────────


@attrs.define
class Trunks:
    """The two things DaemonMetrics asks a dispatcher: its trunks and its live calls."""

    trunks: list[str]
    live: dict[str, CallRecord] = attrs.Factory(dict)


class StatusTrunk:
    """A trunk that says how it is (as ``SipTrunk.status`` does)."""

    def __init__(self, status: TrunkStatus) -> None:
        self.now = status

    def status(self) -> TrunkStatus:
        return self.now


class PlainTrunk:
    """A third-party trunk without ``status``."""


@attrs.define
class Started:
    """The two things DaemonMetrics asks the providers: a trunk by name, the notifiers."""

    trunks: Mapping[str, Any]
    notifiers: Mapping[str, Any] = attrs.Factory(dict)

    def get(self, kind: str, name: str) -> Any:
        assert kind == "trunk"
        return self.trunks.get(name)

    def started(self, kind: str) -> Mapping[str, Any]:
        assert kind == "notify"
        return self.notifiers


def record(call_id: str, trunk: str) -> CallRecord:
    return CallRecord(id=call_id, number="01012345678", script="demo-ko", trunk=trunk)


@asynccontextmanager
async def serving(metrics: DaemonMetrics, listen: str = "127.0.0.1:0") -> AsyncIterator[str]:
    """The endpoint in a nursery; yields its base URL."""
    async with trio.open_nursery() as nursery:
        endpoint = MetricsEndpoint(listen, metrics)
        host, port = await nursery.start(endpoint.run)
        yield f"http://{host}:{port}"
        nursery.cancel_scope.cancel()


async def scrape(base: str, path: str = "/metrics") -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(base + path)


# ───────────────────────── what is counted ─────────────────────────


async def test_call_events_and_timings_are_counted_with_their_labels(
    pm: pluggy.PluginManager,
) -> None:
    bus = EventBus(pm)
    metrics = DaemonMetrics(version="1.2.3", started_at=1_700_000_000.0)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(metrics.follow, bus)
            bus.publish("c1", "dialing", number="1", script="s", trunk="office")
            bus.publish("c2", "dialing", number="2", script="s", trunk="office")
            bus.publish("c3", "dialing", number="3", script="s", trunk="backup")
            ended = {"tags": [], "hangup_by": None, "error": None}
            bus.publish("c1", "ended", outcome="answered", grade="A", sip_status=200, **ended)
            bus.publish("c2", "failed", outcome="busy", grade=None, sip_status=486, **ended)
            bus.publish("c3", "utterance", text="네", confidence=0.9)  # not counted
            bus.timed("asr", 0.04)
            bus.timed("asr", 0.7)
            bus.timed("turn_latency", 0.45)
            async with serving(metrics) as base:
                while value(parse((await scrape(base)).text), "waihu_calls_finished_total",
                            outcome="busy", grade="none") is None:  # fmt: skip
                    await trio.sleep(0.01)  # the events are read by another task
                response = await scrape(base)
            nursery.cancel_scope.cancel()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = parse(response.text)
    assert value(s, "waihu_calls_started_total", trunk="office") == 2
    assert value(s, "waihu_calls_started_total", trunk="backup") == 1
    assert value(s, "waihu_calls_finished_total", outcome="answered", grade="A") == 1
    assert value(s, "waihu_calls_finished_total", outcome="busy", grade="none") == 1
    assert value(s, "waihu_asr_decode_seconds_count") == 2
    assert value(s, "waihu_asr_decode_seconds_sum") == pytest.approx(0.74)
    assert value(s, "waihu_asr_decode_seconds_bucket", le="0.05") == 1
    assert value(s, "waihu_asr_decode_seconds_bucket", le="1.0") == 2
    assert value(s, "waihu_turn_latency_seconds_count") == 1
    assert value(s, "waihu_turn_latency_seconds_bucket", le="0.3") == 0
    assert value(s, "waihu_turn_latency_seconds_bucket", le="0.5") == 1
    assert value(s, "waihu_daemon_info", version="1.2.3") == 1
    assert value(s, "waihu_start_time_seconds") == 1_700_000_000.0
    assert value(s, "waihu_metrics_events_lost_total") == 0


async def test_events_a_slow_scraper_could_not_count_are_counted_as_lost(
    pm: pluggy.PluginManager,
) -> None:
    bus = EventBus(pm)
    metrics = DaemonMetrics(version="x", started_at=0.0)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(metrics.follow, bus)
            for n in range(300):  # more than a subscriber's buffer, with no checkpoint between
                bus.publish(f"c{n}", "dialing", number="1", script="s", trunk="office")
            async with serving(metrics) as base:
                while True:  # the counting task catches up with what it was sent
                    s = parse((await scrape(base)).text)
                    counted = value(s, "waihu_calls_started_total", trunk="office") or 0
                    if counted + (value(s, "waihu_metrics_events_lost_total") or 0) == 300:
                        break
            nursery.cancel_scope.cancel()
    # the subscriber's buffer, and the one a waiting reader takes at once
    assert SUBSCRIBER_BUFFER <= counted <= SUBSCRIBER_BUFFER + 1
    assert value(s, "waihu_metrics_events_lost_total") == 300 - counted


async def test_a_call_reports_its_recognition_time_and_turn_latencies(
    pm: pluggy.PluginManager, tmp_path: Path
) -> None:
    bus = EventBus(pm)
    heard: list[tuple[str, float]] = []
    bus.on_timing(lambda measure, seconds: heard.append((measure, seconds)))
    storage = make_storage(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with running(storage):
            life = CallLifecycle(record("c1", "office"), storage=storage, events=bus)
            await life.begin()
            life.answered("PCMU")
            life.utterance("네", 0.9, decode_seconds=0.125)
            life.utterance("", 0.0)  # no timing given: none reported
            life.turn(Turn(speaker="robot", text="안녕하세요", node="start", started_at=100.0))
            life.turn(Turn(speaker="callee", text="네", node="start", ended_at=103.0))
            life.turn(Turn(speaker="robot", text="감사합니다", node="end", started_at=103.4))
            assert heard == [("asr", 0.125)]  # turn latencies wait for the settled transcript
            await life.end(hangup_by="robot")
    assert heard == [("asr", 0.125), ("turn_latency", pytest.approx(0.4))]


def test_turn_latency_pairs_each_answered_reply_with_the_robot_line_after_it() -> None:
    turns = [
        Turn(speaker="robot", text="a", node="n", started_at=1.0),
        Turn(speaker="callee", text="b", node="n", intent="affirm", ended_at=5.0),
        Turn(speaker="robot", text="c", node="n", started_at=5.5),
        Turn(speaker="robot", text="d", node="n", started_at=9.0),  # a second line: not a reply
        Turn(speaker="callee", text="e", node="n", intent="ignored", ended_at=10.0),
        Turn(speaker="robot", text="f", node="n", started_at=20.0),  # after an ignored reply
        Turn(speaker="callee", text="g", node="n", intent="price", ended_at=21.0),
        Turn(speaker="callee", text="h", node="n", intent="price", ended_at=22.0),
        Turn(speaker="robot", text="i", node="n", started_at=22.25),
        Turn(speaker="callee", text="j", node="n", intent="deny", ended_at=30.0),
    ]
    assert reply_latencies(turns) == [0.5, 0.25]


def test_a_timing_listener_that_raises_is_logged_and_the_others_still_hear(
    pm: pluggy.PluginManager, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus(pm)
    heard: list[float] = []

    def broken(measure: str, seconds: float) -> None:
        raise KeyError(measure)

    bus.on_timing(broken)
    bus.on_timing(lambda measure, seconds: heard.append(seconds))
    bus.timed("asr", 0.25)
    assert heard == [0.25]
    assert "timing listener failed on asr" in caplog.text


def test_a_timing_the_bus_does_not_know_is_a_bug(pm: pluggy.PluginManager) -> None:
    with pytest.raises(ValueError, match="unknown timing 'asr_time'"):
        EventBus(pm).timed("asr_time", 1.0)


# ───────────────────────── what is read at scrape time ─────────────────────────


async def test_live_calls_trunk_states_and_the_media_clock_are_read_at_scrape() -> None:
    dispatcher = Trunks(["office", "plain", "broken"])
    providers = Started(
        {
            "office": StatusTrunk(TrunkStatus(state="registered", since=1_700_000_100.0)),
            "plain": PlainTrunk(),
        }
    )
    clock = MediaClock()
    clock.stats.ticks, clock.stats.late_ticks, clock.stats.max_lateness = 500, 3, 0.0125
    metrics = DaemonMetrics(
        version="x",
        started_at=1_700_000_000.0,
        dispatcher=dispatcher,  # type: ignore[arg-type]
        providers=providers,  # type: ignore[arg-type]
        clock=clock,
    )
    with trio.fail_after(TIMEOUT):
        async with serving(metrics) as base:
            dispatcher.live["c1"] = record("c1", "office")
            dispatcher.live["c2"] = record("c2", "office")
            first = parse((await scrape(base)).text)
            del dispatcher.live["c1"]
            providers.trunks["office"].now = TrunkStatus(state="failing", since=1_700_000_200.0)
            second = parse((await scrape(base)).text)
    assert value(first, "waihu_calls_live", trunk="office") == 2
    assert value(first, "waihu_calls_live", trunk="plain") == 0
    assert value(second, "waihu_calls_live", trunk="office") == 1
    assert value(first, "waihu_calls_started_total", trunk="broken") == 0  # there from the start
    for samples, office in ((first, "registered"), (second, "failing")):
        states = {
            trunk: [s for s in TRUNK_STATES if value(samples, "waihu_trunk_state",
                                                     trunk=trunk, state=s) == 1]
            for trunk in dispatcher.trunks
        }  # fmt: skip
        assert states == {"office": [office], "plain": ["up"], "broken": ["down"]}
        assert sum(value(samples, "waihu_trunk_state", trunk="office", state=s) for s in
                   TRUNK_STATES) == 1  # fmt: skip
    assert value(first, "waihu_trunk_state_since_seconds", trunk="office") == 1_700_000_100.0
    assert value(second, "waihu_trunk_state_since_seconds", trunk="office") == 1_700_000_200.0
    assert value(first, "waihu_trunk_state_since_seconds", trunk="plain") == 1_700_000_000.0
    assert value(first, "waihu_media_clock_ticks_total") == 500
    assert value(first, "waihu_media_clock_late_ticks_total") == 3
    assert value(first, "waihu_media_clock_max_lateness_seconds") == 0.0125
    assert value(first, "waihu_media_clock_sources") == 0


async def test_outbox_backlog_and_pending_contacts_come_from_the_store_and_are_cached(
    tmp_path: Path,
) -> None:
    storage = make_storage(tmp_path)
    now = 1_700_000_000.0
    notifiers = Started({}, {"sales": object(), "ops": object()})

    async def scraped(metrics: DaemonMetrics) -> Samples:
        body, _type = await metrics.exposition()
        return parse(body.decode())

    with trio.fail_after(TIMEOUT):
        async with running(storage):
            for n in range(3):
                await storage.outbox_put("sales", {"n": n}, due_at=now + n)
            (first, *_) = await storage.outbox_due("sales", now=now + 10, limit=1)
            await storage.outbox_retry(first.id, due_at=now + 3600, error="503")
            done = await storage.outbox_put("sales", {"n": 9}, due_at=now)
            await storage.outbox_done(done, at=now)
            await storage.create_campaign(CampaignRow(id="c1", name="spring", state="running"))
            await storage.create_campaign(CampaignRow(id="c2", name="old", state="completed"))
            for campaign in ("c1", "c2"):
                await storage.add_contacts(
                    [Contact(campaign_id=campaign, number=f"+8613800000{n:03d}") for n in range(4)]
                )
            cached = DaemonMetrics(
                version="x",
                started_at=now,
                providers=notifiers,
                store=storage,  # type: ignore[arg-type]
            )
            fresh = DaemonMetrics(
                version="x", started_at=now, providers=notifiers, store=storage,  # type: ignore[arg-type]
                store_refresh=0.0,
            )  # fmt: skip
            s = await scraped(cached)
            assert store_part(await scraped(fresh)) == store_part(s)
            await storage.outbox_put("ops", {"n": 1}, due_at=now)
            later_cached, later_fresh = await scraped(cached), await scraped(fresh)
    assert value(s, "waihu_notify_outbox_pending", notifier="sales") == 3
    assert value(s, "waihu_notify_outbox_failing", notifier="sales") == 1
    assert value(s, "waihu_notify_outbox_pending", notifier="ops") == 0
    assert value(s, "waihu_campaign_contacts_pending", campaign="spring") == 4
    assert value(s, "waihu_campaign_contacts_pending", campaign="old") is None
    assert STORE_REFRESH_S > 1  # the cached one read the store once
    assert value(later_cached, "waihu_notify_outbox_pending", notifier="ops") == 0
    assert value(later_fresh, "waihu_notify_outbox_pending", notifier="ops") == 1


class BrokenTrunk:
    """A third-party trunk whose ``status`` has a bug."""

    def status(self) -> TrunkStatus:
        raise AttributeError("'NoneType' object has no attribute 'state'")


class FailingStore:
    """A campaign store that fails as the test says: a ProviderError (database locked), or
    something unexpected."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def outbox_due(self, notifier: str, *, now: float, limit: int) -> list[Any]:
        raise self.error

    async def list_campaigns(self) -> list[CampaignRow]:
        raise self.error


async def test_a_trunk_whose_status_fails_is_left_out_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = DaemonMetrics(
        version="x",
        started_at=0.0,
        dispatcher=Trunks(["office", "odd"]),  # type: ignore[arg-type]
        providers=Started({"office": PlainTrunk(), "odd": BrokenTrunk()}),  # type: ignore[arg-type]
    )
    with trio.fail_after(TIMEOUT):
        async with serving(metrics) as base:
            response = await scrape(base)
    s = parse(response.text)
    assert response.status_code == 200
    assert value(s, "waihu_trunk_state", trunk="office", state="up") == 1
    assert not [key for key in s if key[0] == "waihu_trunk_state" and ("trunk", "odd") in key[1]]
    assert "metrics: trunk odd: status() failed" in caplog.text


async def test_a_failing_store_keeps_the_last_figures_or_answers_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = make_storage(tmp_path)
    metrics = DaemonMetrics(
        version="x",
        started_at=0.0,
        providers=Started({}, {"sales": object()}),  # type: ignore[arg-type]
        store_refresh=0.0,
    )
    with trio.fail_after(TIMEOUT):
        async with running(storage), serving(metrics) as base:
            await storage.outbox_put("sales", {"n": 1}, due_at=0.0)
            metrics.store = storage
            first = parse((await scrape(base)).text)
            metrics.store = FailingStore(ProviderError("database is locked"))  # type: ignore[assignment]
            locked = parse((await scrape(base)).text)
            metrics.store = FailingStore(RuntimeError("bug"))  # type: ignore[assignment]
            broken = await scrape(base)
            metrics.store = storage
            again = await scrape(base)
    assert value(first, "waihu_notify_outbox_pending", notifier="sales") == 1
    assert value(locked, "waihu_notify_outbox_pending", notifier="sales") == 1  # the last read
    assert "cannot read the outbox and campaigns: database is locked" in caplog.text
    assert broken.status_code == 500
    assert broken.text == "cannot gather the metrics: RuntimeError: bug\n"
    assert again.status_code == 200


# ───────────────────────── HTTP ─────────────────────────


async def test_another_path_is_404_another_method_405_and_head_has_no_body() -> None:
    metrics = DaemonMetrics(version="x", started_at=0.0)
    with trio.fail_after(TIMEOUT):
        async with serving(metrics) as base:
            async with httpx.AsyncClient() as client:
                missing = await client.get(base + "/")
                posted = await client.post(base + "/metrics", content=b"x=1")
                head = await client.head(base + "/metrics")
                query = await client.get(base + "/metrics?name[]=waihu_daemon_info")
                openmetrics = await client.get(
                    base + "/metrics",
                    headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                )
                again = await client.get(base + "/metrics")  # the same kept-alive connection
    assert missing.status_code == 404
    assert "/metrics" in missing.text
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(again.content) > 0
    assert query.status_code == 200
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    families = helps(again.text)
    assert set(families) >= {"waihu_daemon_info", "waihu_calls_started", "waihu_calls_live"}
    assert all(families.values())  # every metric has its HELP text


async def raw_request(base: str, data: bytes) -> bytes:
    """Send ``data`` as it is; everything the endpoint answers until it closes."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(data)
    answer = b""
    while chunk := await stream.receive_some(4096):
        answer += chunk
    await stream.aclose()
    return answer


async def test_a_malformed_request_gets_400_and_the_endpoint_serves_on() -> None:
    metrics = DaemonMetrics(version="x", started_at=0.0)
    with trio.fail_after(TIMEOUT):
        async with serving(metrics) as base:
            answer = await raw_request(base, b"NOT HTTP AT ALL\r\n\r\n")
            # just past the largest head, and all of it read before the answer: no reset
            huge = await raw_request(base, b"GET /metrics HTTP/1.1\r\nX: " + b"x" * 17_000)
            after = await scrape(base)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"bad request" in answer
    assert huge.startswith(b"HTTP/1.1 431 ")
    assert after.status_code == 200


async def test_an_address_in_use_is_logged_and_bound_once_it_is_free(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    endpoint = MetricsEndpoint(f"127.0.0.1:{port}", DaemonMetrics(version="x", started_at=0.0))
    with caplog.at_level(logging.ERROR, logger="waihu.metrics"):
        with trio.fail_after(10 * BIND_RETRY_S):  # on the mock clock
            async with trio.open_nursery() as nursery:
                assert await nursery.start(endpoint.run) is None
                assert endpoint.address is None
                await trio.sleep(BIND_RETRY_S + 1)
                assert endpoint.address is None  # still taken: tried again, still waiting
                blocker.close()
                await trio.sleep(BIND_RETRY_S)
                assert endpoint.address == ("127.0.0.1", port)
                nursery.cancel_scope.cancel()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert errors[0].startswith(f"metrics.listen 127.0.0.1:{port}: cannot listen: ")
    assert errors[0].endswith("; trying again every 30 s")


async def test_every_metric_is_documented_in_the_man_page() -> None:
    man = (REPO / "man/waihud.8").read_text(encoding="utf-8").replace("\\_", "_")
    clock = MediaClock()
    metrics = DaemonMetrics(
        version="x",
        started_at=0.0,
        dispatcher=Trunks(["office"]),  # type: ignore[arg-type]
        providers=Started({}, {"sales": object()}),  # type: ignore[arg-type]
        clock=clock,
    )
    with trio.fail_after(TIMEOUT):
        body, _type = await metrics.exposition()
    # prometheus_client's own "_created" companions of counters and histograms need no words
    names = {name for name in helps(body.decode()) if not name.endswith("_created")}
    assert len(names) >= 19
    undocumented = sorted(name for name in names if name not in man)
    assert undocumented == []


# ───────────────────────── configuration ─────────────────────────


def write(tmp_path: Path, metrics: str) -> Path:
    path = tmp_path / "waihud.toml"
    path.write_text(
        '[trunk.office]\ntype = "sip"\nproxy = "127.0.0.1:5060"\n\n'
        '[asr.default]\ntype = "vosk"\n\n[nlu.default]\ntype = "keywords"\n\n'
        f'[storage]\ntype = "sqlite"\npath = "waihu.db"\n\n{metrics}\n',
        encoding="utf-8",
    )
    return path


def test_metrics_are_off_by_default_and_listen_on_localhost(
    tmp_path: Path, provider_types: dict
) -> None:
    config = load_config(write(tmp_path, ""), provider_types)
    assert (config.metrics.enabled, config.metrics.listen) == (False, "127.0.0.1:9464")
    on = load_config(write(tmp_path, "[metrics]\nenabled = true\n"), provider_types)
    assert (on.metrics.enabled, on.metrics.listen) == (True, "127.0.0.1:9464")
    v6 = load_config(write(tmp_path, '[metrics]\nlisten = "[::1]:0"\n'), provider_types)
    assert v6.metrics.listen == "[::1]:0"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            '[metrics]\nlisten = "9464"',
            "metrics.listen: must be HOST:PORT such as 127.0.0.1:9464 (port 0–65535), not '9464'",
        ),
        (
            '[metrics]\nlisten = "localhost:99999"',
            "metrics.listen: must be HOST:PORT such as 127.0.0.1:9464 (port 0–65535),"
            " not 'localhost:99999'",
        ),
        ("[metrics]\nenabled = 1", "metrics.enabled: must be true or false, not an integer"),
        ("[metrics]\nport = 9464", "metrics: unknown key port"),
    ],
)
def test_a_bad_metrics_table_names_the_key(
    tmp_path: Path, provider_types: dict, table: str, problem: str
) -> None:
    path = write(tmp_path, table)
    with pytest.raises(ConfigError) as caught:
        load_config(path, provider_types)
    assert caught.value.problems == [f"{path}: {problem}"]


# ───────────────────────── the real daemon ─────────────────────────

METRICS_LOG = re.compile(r"metrics on (http://127\.0\.0\.1:\d+)/metrics")


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            listening = fields[3] == "0A"
            if listening and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.e2e
async def test_a_running_daemon_counts_its_calls_for_prometheus(tmp_path: Path) -> None:
    ne = to_ulaw(synthesize("네"), tmp_path / "ne.ul")
    with trio.fail_after(CALL_TIMEOUT + 90):
        async with (
            sipp_peer("answer.xml", tmp_path / "answer", plays=[Play(AFTER_GREETING_MS, ne)],
                      timeout=CALL_TIMEOUT) as answering,
            sipp_peer("busy.xml", tmp_path / "busy") as busy,
        ):  # fmt: skip
            config = write_config(
                tmp_path / "waihud",
                proxy={"loopback": answering.hostport, "busyline": busy.hostport},
                extra='[metrics]\nenabled = true\nlisten = "127.0.0.1:0"\n',
            )
            async with running_waihud(config) as daemon:
                found = METRICS_LOG.search(daemon.log_text())
                assert found, daemon.log_text()[-3000:]
                base = found.group(1)
                before = parse((await scrape(base)).text)
                answered = await daemon.request("call", target="1001", script="demo-ko")
                during = parse((await scrape(base)).text)  # the greeting lasts seconds
                refused = await daemon.request(
                    "call", target="1001", script="demo-ko", trunk="busyline"
                )
                await daemon.wait_call(refused["call_id"], timeout=CALL_TIMEOUT)
                filed = await daemon.wait_call(answered["call_id"], timeout=CALL_TIMEOUT)
                after = parse((await scrape(base)).text)
                other = await scrape(base, "/")
                assert await daemon.stop() == 0, daemon.log_text()[-3000:]
            (await answering.wait()).check()
            (await busy.wait()).check()
    assert (filed["outcome"], filed["grade"]) == ("answered", "A")
    for trunk in ("loopback", "busyline"):
        assert value(before, "waihu_calls_started_total", trunk=trunk) == 0
        assert value(after, "waihu_calls_started_total", trunk=trunk) == 1
        assert value(after, "waihu_calls_live", trunk=trunk) == 0
        assert sum(value(after, "waihu_trunk_state", trunk=trunk, state=s) or 0
                   for s in TRUNK_STATES) == 1  # fmt: skip
    assert value(during, "waihu_calls_live", trunk="loopback") == 1
    assert value(after, "waihu_calls_finished_total", outcome="answered", grade="A") == 1
    assert value(after, "waihu_calls_finished_total", outcome="busy", grade="none") == 1
    assert (value(after, "waihu_turn_latency_seconds_count") or 0) >= 1
    assert (value(after, "waihu_asr_decode_seconds_count") or 0) >= 1
    assert 0 < (value(after, "waihu_turn_latency_seconds_sum") or 0) < 30
    assert 0 < (value(after, "waihu_asr_decode_seconds_sum") or 0) < 30
    assert (value(after, "waihu_media_clock_ticks_total") or 0) > 0
    assert (value(after, "waihu_start_time_seconds") or 0) > 1_700_000_000
    assert [k for k in after if k[0] == "waihu_daemon_info"]
    assert other.status_code == 404


@pytest.mark.e2e
async def test_without_a_metrics_table_nothing_listens(tmp_path: Path) -> None:
    with trio.fail_after(CALL_TIMEOUT):
        # a UDP trunk listens on TCP too for its large-request fallback: turned off here so
        # that any TCP port listening would be the metrics endpoint's
        config = write_config(
            tmp_path / "waihud", proxy="127.0.0.1:9", trunk={"tcp_fallback": False}
        )
        async with running_waihud(config) as daemon:
            ports = listening_tcp_ports(daemon.process.pid)
            log = daemon.log_text()
            assert await daemon.stop() == 0
    assert ports == set()
    assert METRICS_LOG.search(log) is None
