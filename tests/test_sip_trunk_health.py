"""How a SIP trunk knows how it is doing: state, OPTIONS probes, a proxy that does not resolve.

The state machine (``TrunkHealth``), the retry delays and the probe's pacing
loop are tested alone, without sockets (the pacing under a MockClock). The
trunk itself is tested against real peers on 127.0.0.1: sipp answering
OPTIONS (with 200, and with 404, which counts as an answer too), kamailio
answering them as a proxy does (and relaying a call meanwhile), a port
where nothing listens, a proxy under the reserved ``.invalid`` TLD (RFC
6761), a socket that cannot be bound, and a real waihud with two trunks, one
of them down. The one stand-in is a custom trio host-name resolver, used
where a test needs a name that starts to resolve part-way (no real DNS
server can be made to do that here); it replaces DNS, not the trunk.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from waihu.api import CallFailed, ConfigProblem, TrunkError, TrunkStatus, trunk_status
from waihu.config import ConfigError, load_config
from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.kamailio import kamailio_proxy
from waihu.testing.sipp import sipp_peer
from waihu_sip.address import NameAddress, SipUri
from waihu_sip.config import SipTrunkConfig
from waihu_sip.health import (
    PROBE_TIMEOUT,
    RETRY_FIRST,
    RETRY_MAX,
    Backoff,
    Change,
    ProbeResult,
    TrunkHealth,
    options_request,
    probe_forever,
)
from waihu_sip.identity import LocalIdentity
from waihu_sip.message import SipRequest, make_response, parse_message
from waihu_sip.trunk import SipTrunk

from conftest import REPO
from sip_harness import LOGGER, dialling, sip_trunk, trunk_and_peer

REAL_TIME_LIMIT = 60  # seconds per real-time test; generous, the machine is shared
E2E_LIMIT = 180  # the daemon loads a speech model first
T0 = 1_700_000_000.0  # a wall-clock time for the state machine's ``since``
INVALID = "carrier.invalid"  # RFC 6761: never resolves, anywhere


def health(*, probing: bool = True, failures: int = 3) -> TrunkHealth:
    return TrunkHealth(probing=probing, failures=failures, now=T0)


# ───────────────────────── the state machine ─────────────────────────


def test_without_probes_a_running_trunk_is_up() -> None:
    h = health(probing=False)
    assert h.status().state == "starting" and h.status().since == T0
    assert h.came_up(T0 + 1) == Change("starting", "up", "")
    assert (h.status().state, h.status().since, h.status().detail) == ("up", T0 + 1, "")


def test_any_final_answer_makes_it_reachable_even_404() -> None:
    h = health()
    assert h.came_up(T0 + 1) == Change(
        "starting", "up", "waiting for the first answer to an OPTIONS probe"
    )
    change = h.probe_done(T0 + 2, ProbeResult.answered(404, "Not Found", 0.0123))
    assert change == Change("up", "reachable", "OPTIONS answered 404 Not Found in 12 ms")
    assert h.status().since == T0 + 2
    # another answer changes the detail, not the state or its since, and is not a change
    assert h.probe_done(T0 + 32, ProbeResult.answered(200, "OK", 0.002)) is None
    assert h.status() == TrunkStatus("reachable", T0 + 2, "OPTIONS answered 200 OK in 2 ms")


def test_failing_after_n_probes_in_a_row_logged_once_then_back() -> None:
    h = health(failures=3)
    h.came_up(T0)
    h.probe_done(T0 + 1, ProbeResult.answered(200, "OK", 0.001))
    miss = ProbeResult.unanswered("timed out after 5 s")
    assert h.probe_done(T0 + 31, miss) is None  # one or two misses: still reachable
    assert h.probe_done(T0 + 61, miss) is None
    assert h.status().state == "reachable"
    change = h.probe_done(T0 + 91, miss)
    assert change == Change(
        "reachable",
        "failing",
        "no answer to 3 OPTIONS probes in a row (last: timed out after 5 s)",
    )
    assert change.worse and h.status().since == T0 + 91
    assert h.probe_done(T0 + 121, ProbeResult.unanswered("proxy x does not resolve")) is None
    assert h.status().detail == (
        "no answer to 4 OPTIONS probes in a row (last: proxy x does not resolve)"
    )
    assert h.status().since == T0 + 91  # still failing since the third miss
    back = h.probe_done(T0 + 151, ProbeResult.answered(483, "Too Many Hops", 0.001))
    assert back is not None and (back.old, back.new, back.worse) == ("failing", "reachable", False)
    assert h.status().since == T0 + 151


def test_misses_must_be_in_a_row() -> None:
    h = health(failures=2)
    h.came_up(T0)
    miss = ProbeResult.unanswered("timed out after 5 s")
    for at in range(1, 10):
        h.probe_done(T0 + at, miss if at % 2 else ProbeResult.answered(200, "OK", 0.0))
        assert h.status().state != "failing"


def test_calls_without_any_response_make_it_failing_and_an_answer_undoes_it() -> None:
    h = health(probing=False, failures=2)
    h.came_up(T0)
    assert h.dial_unanswered(T0 + 1, "no response from 127.0.0.1:9") is None
    assert h.dial_answered(T0 + 2) is None  # a busy or a 404 is an answer: the count restarts
    assert h.dial_unanswered(T0 + 3, "no response from 127.0.0.1:9") is None
    change = h.dial_unanswered(T0 + 4, "no response from 127.0.0.1:9")
    assert change == Change(
        "up",
        "failing",
        "2 calls in a row got no response from the proxy (last: no response from 127.0.0.1:9)",
    )
    assert h.dial_answered(T0 + 5) == Change("failing", "up", "")


def test_down_until_it_comes_up_and_nothing_else_moves_it() -> None:
    h = health()
    problem = "proxy carrier.invalid does not resolve (Name or service not known)"
    change = h.down(T0 + 1, problem, 5)
    assert change == Change("starting", "down", f"{problem}; next try in 5 s")
    assert change.worse and h.problem == problem
    assert h.down(T0 + 6, problem, 10) is None  # each retry: no new change, a new detail
    assert h.status() == TrunkStatus("down", T0 + 1, f"{problem}; next try in 10 s")
    assert h.probe_done(T0 + 7, ProbeResult.answered(200, "OK", 0.0)) is None
    assert h.dial_answered(T0 + 7) is None and h.dial_unanswered(T0 + 7, "x") is None
    assert h.status().state == "down"
    assert h.came_up(T0 + 16) == Change(
        "down", "up", "waiting for the first answer to an OPTIONS probe"
    )
    assert h.problem is None


def test_coming_up_again_forgets_old_misses() -> None:
    h = health(failures=2)
    h.came_up(T0)
    h.probe_done(T0 + 1, ProbeResult.unanswered("timed out after 5 s"))
    h.down(T0 + 2, "cannot bind 127.0.0.1:5060 (Address already in use)", 5)
    h.came_up(T0 + 7)
    assert h.probe_done(T0 + 8, ProbeResult.unanswered("timed out after 5 s")) is None
    assert h.status().state == "up"


def test_backoff_doubles_to_five_minutes_and_resets() -> None:
    backoff = Backoff()
    assert (RETRY_FIRST, RETRY_MAX) == (5.0, 300.0)
    assert [backoff.next() for _ in range(9)] == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    backoff.reset()
    assert backoff.next() == 5
    with pytest.raises(ValueError):
        Backoff(0, 10)


# ───────────────────────── the probe's pacing (MockClock, no sockets) ─────────────────────────


async def test_probes_go_on_an_absolute_schedule_and_slow_ones_time_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[float] = []
    results: list[ProbeResult] = []
    replies = iter([0.2, None, 0.1, 7.0])  # seconds to answer; None: never

    async def probe() -> ProbeResult:
        started.append(trio.current_time())
        delay = next(replies)
        await trio.sleep(1e9 if delay is None else delay)
        return ProbeResult.answered(200, "OK", delay or 0.0)

    with trio.fail_after(1000), trio.move_on_after(100):
        await probe_forever(probe, results.append, interval=30)
    assert started == [0, 30, 60, 90]
    assert [r.status for r in results] == [200, None, 200, None]
    assert results[1].problem == f"timed out after {PROBE_TIMEOUT:g} s"
    assert results[3].problem == "timed out after 5 s"  # 7 s is too slow, though it would answer


async def test_the_timeout_never_outlasts_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[float] = []
    results: list[ProbeResult] = []

    async def silent() -> ProbeResult:
        started.append(trio.current_time())
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(1000), trio.move_on_after(7):
        await probe_forever(silent, results.append, interval=2)
    assert started == [0, 2, 4, 6]
    assert [r.problem for r in results] == ["timed out after 2 s"] * 3


def test_options_request_is_a_fresh_rfc3261_probe() -> None:
    identity = LocalIdentity(host="127.0.0.1", port=5062, user="waihu", user_agent="waihu/1")
    from_ = NameAddress(uri=SipUri(host="sip.example.net", user="waihu"))
    target = SipUri(host="sip.example.net", port=5080)
    first, second = (options_request(identity, target, from_) for _ in range(2))
    parsed = parse_message(first.to_bytes())
    assert isinstance(parsed, SipRequest)
    assert (parsed.method, parsed.uri) == ("OPTIONS", "sip:sip.example.net:5080")
    assert str(parsed.cseq) == "1 OPTIONS" and parsed.to.tag is None and parsed.from_.tag
    assert parsed.headers.get("Accept") == "application/sdp"
    assert parsed.headers.get("Max-Forwards") == "70"
    assert parsed.top_via.branch and parsed.top_via.branch.startswith("z9hG4bK")
    assert first.call_id != second.call_id
    assert first.top_via.branch != second.top_via.branch
    assert first.from_.tag != second.from_.tag


# ───────────────────────── configuration and check ─────────────────────────


def test_probe_keys_default_and_are_checked(tmp_path: Path, provider_types: dict) -> None:
    cfg = SipTrunkConfig(proxy="127.0.0.1")
    assert (cfg.probe_interval, cfg.probe_failures) == (30.0, 3)
    assert SipTrunkConfig(proxy="p", probe_interval=0).probe_interval == 0
    tables = '[asr.default]\ntype = "vosk"\n[nlu.default]\ntype = "keywords"\n'
    tables += '[storage]\ntype = "sqlite"\npath = "waihu.db"\n'
    path = tmp_path / "waihud.toml"
    for line, message in (
        (
            "probe_interval = 0.5",
            "probe_interval: must be 0 (no probing) or 1–86400 seconds, not 0.5",
        ),
        ("probe_failures = 0", "probe_failures: must be 1–100, not 0"),
    ):
        trunk = f'[trunk.office]\ntype = "sip"\nproxy = "127.0.0.1:5080"\n{line}\n'
        path.write_text(trunk + tables, encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(path, provider_types)
        assert info.value.problems == [f"{path}: trunk.office.{message}"]


def test_check_warns_of_a_proxy_that_does_not_resolve() -> None:
    started = time.monotonic()
    problems = SipTrunk.check(SipTrunkConfig(proxy=f"{INVALID}:5060"), section="trunk.office")
    assert time.monotonic() - started < 10, "an .invalid name must fail fast, not wait on DNS"
    assert len(problems) == 1
    problem = problems[0]
    assert problem.warning and problem.key == "trunk.office.proxy"
    assert re.fullmatch(
        rf"{re.escape(INVALID)} does not resolve \(.+\); the trunk will start down and retry",
        problem.message,
    ), problem.message


def test_check_refuses_an_address_this_machine_does_not_have() -> None:
    config = SipTrunkConfig(proxy="127.0.0.1:5080", local_host="192.0.2.1", rtp_host="127.0.0.1")
    problems = SipTrunk.check(config, section="trunk.branch")
    assert len(problems) == 1
    assert problems[0].key == "trunk.branch.local_host" and not problems[0].warning
    assert problems[0].message.startswith("192.0.2.1 is not an address of this machine (")
    assert problems[0].message.endswith("): use one of its own addresses or 0.0.0.0")
    rtp = SipTrunkConfig(proxy="127.0.0.1", rtp_host="192.0.2.1")
    assert [p.key for p in SipTrunk.check(rtp, section="trunk.x")] == ["trunk.x.rtp_host"]


def test_check_passes_a_good_trunk_even_while_its_port_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))  # e.g. the running daemon, during --check-config
        config = SipTrunkConfig(proxy="127.0.0.1:5080", local_port=taken.getsockname()[1])
        assert SipTrunk.check(config, section="trunk.office") == []
    wildcard = SipTrunkConfig(proxy="127.0.0.1", local_host="0.0.0.0")
    assert SipTrunk.check(wildcard, section="trunk.office") == list[ConfigProblem]()


# ───────────────────────── the trunk against real peers ─────────────────────────


async def test_sipp_answering_options_makes_the_trunk_reachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    keys = {"status": "200", "reason": "OK"}
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("options.xml", tmp_path, keys=keys, extra_args=["-m", "2"]) as peer:
            trunk = sip_trunk(tmp_path, proxy=peer.hostport, probe_interval=1)
            assert trunk.status().state == "starting"
            async with trio.open_nursery() as nursery:
                await nursery.start(trunk.run)
                while trunk.status().state != "reachable":
                    await trio.sleep(0.05)
                result = await peer.wait()  # it answered two probes, one a second
                nursery.cancel_scope.cancel()
        result.check()
    status = trunk.status()
    assert re.fullmatch(r"OPTIONS answered 200 OK in \d+ ms", status.detail), status.detail
    assert abs(status.since - time.time()) < REAL_TIME_LIMIT
    assert trunk_status(trunk, started_at=0).state == "reachable"
    changes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trunk t:")]
    assert changes[0] == "trunk t: starting → up: waiting for the first answer to an OPTIONS probe"
    assert changes[1].startswith("trunk t: up → reachable: OPTIONS answered 200 OK in ")
    assert len(changes) == 2  # the second answer changed nothing worth a line


async def test_a_404_to_options_still_means_reachable(tmp_path: Path) -> None:
    keys = {"status": "404", "reason": "Not Found"}
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("options.xml", tmp_path, keys=keys) as peer:
            trunk = sip_trunk(tmp_path, proxy=peer.hostport, probe_interval=30)
            async with trio.open_nursery() as nursery:
                await nursery.start(trunk.run)
                while trunk.status().state != "reachable":
                    await trio.sleep(0.05)
                result = await peer.wait()
                nursery.cancel_scope.cancel()
        result.check()
    assert trunk.status().detail.startswith("OPTIONS answered 404 Not Found in ")


async def test_kamailio_answers_the_probe_and_relays_the_call_as_before(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("busy.xml", tmp_path) as callee:
            async with kamailio_proxy(tmp_path, next_hop=callee.hostport) as proxy:
                trunk = sip_trunk(tmp_path, proxy=proxy.hostport, probe_interval=30)
                async with trio.open_nursery() as nursery:
                    await nursery.start(trunk.run)
                    while trunk.status().state != "reachable":
                        await trio.sleep(0.05)
                    with pytest.raises(CallFailed) as busy:
                        await trunk.dial("1001")  # probing does not get in the way of calls
                    nursery.cancel_scope.cancel()
                methods = proxy.methods_seen()
            result = await callee.wait()
        result.check()
    assert trunk.status().detail.startswith("OPTIONS answered 200 Keepalive in ")
    assert busy.value.status == 486
    assert methods[0] == "OPTIONS" and "INVITE" in methods, proxy.report()


async def test_nothing_listening_makes_it_failing_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        silent = f"127.0.0.1:{hole.getsockname()[1]}"  # bound, never read: nothing answers
        trunk = sip_trunk(tmp_path, proxy=silent, probe_interval=1, probe_failures=2)
        with trio.fail_after(REAL_TIME_LIMIT):
            async with trio.open_nursery() as nursery:
                await nursery.start(trunk.run)
                assert trunk.status().state == "up"
                while trunk.status().state != "failing":
                    await trio.sleep(0.05)
                failing_since = trunk.status().since
                while "4 OPTIONS probes" not in trunk.status().detail:
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    assert trunk.status().since == failing_since
    assert trunk.status().detail == (
        "no answer to 4 OPTIONS probes in a row (last: timed out after 1 s)"
    )
    lines = [r for r in caplog.records if "→ failing" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (
            logging.WARNING,
            "trunk t: up → failing: no answer to 2 OPTIONS probes in a row "
            "(last: timed out after 1 s)",
        )
    ]


async def test_calls_the_proxy_never_answers_make_it_failing_until_one_is_answered(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The proxy is a raw UDP socket that stays silent on purpose, then answers 486 (sipp
    always answers); time is virtual, so Timer B passes at once."""
    with trio.fail_after(1000):
        async with trunk_and_peer(tmp_path, probe_failures=2) as (trunk, peer):
            for _ in range(2):
                with pytest.raises(TrunkError, match="no response"):
                    await trunk.dial("1001")
            status = trunk.status()
            assert status.state == "failing" and status.since > 0
            assert status.detail.startswith(
                "2 calls in a row got no response from the proxy (last: no response from "
            ), status.detail
            unanswered: set[str] = set()
            while True:  # the two calls' INVITEs and retransmissions, waiting in the socket
                with trio.move_on_after(0.01) as drained:
                    message, _, _ = await peer.receive()
                    unanswered.add(message.call_id)
                if drained.cancelled_caught:
                    break
            assert len(unanswered) == 2
            async with dialling(trunk) as outcome:
                invite, source, _ = await peer.receive_request()
                assert invite.method == "INVITE" and invite.call_id not in unanswered
                await peer.send(make_response(invite, 486, to_tag="busy"), source)
            assert outcome.failure is not None and outcome.failure.status == 486
            assert trunk.status().state == "up"


async def test_a_proxy_that_does_not_resolve_leaves_the_trunk_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    trunk = sip_trunk(tmp_path, proxy=f"{INVALID}:5060", probe_interval=30)
    with trio.fail_after(REAL_TIME_LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(trunk.run)  # started all the same: the daemon carries on
            status = trunk.status()
            assert status.state == "down"
            assert re.fullmatch(
                rf"proxy {re.escape(INVALID)} does not resolve \(.+\); next try in 5 s",
                status.detail,
            ), status.detail
            with trio.fail_after(1):  # at once, no DNS lookup per call
                with pytest.raises(TrunkError) as failure:
                    await trunk.dial("1001")
            assert re.fullmatch(
                rf"trunk t is down: proxy {re.escape(INVALID)} does not resolve \(.+\); retrying",
                str(failure.value),
            ), failure.value
            nursery.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        warnings[0]
        .getMessage()
        .startswith(f"trunk t: starting → down: proxy {INVALID} does not resolve (")
    )


class FlakyResolver(trio.abc.HostnameResolver):
    """Host names that fail to resolve for the first ``failures`` lookups, then resolve to
    127.0.0.1 — DNS that comes back, which no real name server here can be made to do."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.asked: list[float] = []

    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,  # the name is trio's
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[str, int]]]:
        self.asked.append(trio.current_time())
        if len(self.asked) <= self.failures:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        assert port is not None
        return [
            (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", ("127.0.0.1", int(port)))
        ]

    async def getnameinfo(self, sockaddr: tuple[str, int], flags: int) -> tuple[str, str]:
        raise NotImplementedError("the trunk never asks for a name")


async def test_a_down_trunk_retries_with_backoff_and_comes_up(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    resolver = FlakyResolver(failures=4)
    trio.socket.set_custom_hostname_resolver(resolver)
    trunk = sip_trunk(tmp_path, proxy="carrier.test:5080")
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            await nursery.start(trunk.run)
            assert trunk.status().state == "down"
            assert trunk.status().detail.endswith("; next try in 5 s")
            while trunk.status().state == "down":
                await trio.sleep(1)
            assert trunk.status().state == "up" and trunk.local_address is not None
            nursery.cancel_scope.cancel()
    assert resolver.asked == [0, 5, 15, 35, 75]  # 5 s, doubling
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trunk t:")]
    assert len(messages) == 2 and messages[1] == "trunk t: down → up"


async def test_a_port_that_frees_up_brings_the_trunk_up(tmp_path: Path) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    trunk = sip_trunk(tmp_path, proxy="127.0.0.1:9", local_port=port)
    with trio.fail_after(REAL_TIME_LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(trunk.run)
            assert trunk.status().state == "down"
            assert trunk.status().detail.startswith(f"cannot bind 127.0.0.1:{port} (")
            taken.close()
            while trunk.status().state == "down":  # the next try, RETRY_FIRST later
                await trio.sleep(0.1)
            assert trunk.status().state == "up" and trunk.local_address == ("127.0.0.1", port)
            nursery.cancel_scope.cancel()


@pytest.mark.e2e
async def test_daemon_serves_the_good_trunk_while_the_other_is_down(tmp_path: Path) -> None:
    with trio.fail_after(E2E_LIMIT):
        async with sipp_peer("hangup_mid.xml", tmp_path, keys={"wait": "500"}) as peer:
            config = write_config(
                tmp_path / "waihud", proxy={"good": peer.hostport, "bad": f"{INVALID}:5060"}
            )
            async with running_waihud(config) as daemon:
                log = daemon.log_text()
                assert re.search(
                    rf"trunk bad: starting → down: proxy {re.escape(INVALID)} does not resolve",
                    log,
                ), log[-3000:]
                bad = await daemon.request("call", target="1001", script="demo-ko", trunk="bad")
                failed = await daemon.wait_call(bad["call_id"])
                good = await daemon.request("call", target="1001", script="demo-ko", trunk="good")
                answered = await daemon.wait_call(good["call_id"])
                result = await peer.wait()
                assert await daemon.stop() == 0, daemon.log_text()[-3000:]
        result.check()
    assert failed["status"] == "failed", failed
    assert f"trunk bad is down: proxy {INVALID} does not resolve (" in failed["error"], failed
    assert failed["error"].endswith("; retrying"), failed
    assert (answered["status"], answered["sip_status"]) == ("ended", 200), answered


def test_sample_config_and_man_page_document_the_probe_keys() -> None:
    sample = (REPO / "etc/waihu/waihud.toml").read_text(encoding="utf-8")
    man = (REPO / "man/waihud.toml.5").read_text(encoding="utf-8").replace("\\_", "_")
    for key in ("probe_interval", "probe_failures"):
        assert re.search(rf"^#{key} = ", sample, re.M), key
        assert re.search(rf"^\.B {key}$", man, re.M), key
