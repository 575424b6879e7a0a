"""The control socket: a real server on a unix socket in tmp_path, the real waihuctl client.

The server answers through ``DaemonStandIn`` (below) instead of waihud: the
protocol, dispatch and rendering are under test here, not calls. Its ``watch``
is the daemon's live monitor on a real ``EventBus`` that the tests publish to
by hand, as calls would. ``waihuctl`` is run as ``main([...])`` in a worker
thread, as blocking as on a terminal (and once as a process, for Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from waihu.control import client
from waihu.control.client import main, waihuctl_commands
from waihu.control.local import LOCAL_COMMANDS
from waihu.control.manpage import manpage
from waihu.control.monitor import Monitor
from waihu.control.protocol import COMMANDS, MAX_LINE_BYTES, ControlError
from waihu.control.render import CALL_ID_WIDTH, render_event, render_status
from waihu.control.server import (
    MAX_CONNECTIONS,
    ControlServer,
    ControlSocketError,
    EventStream,
)
from waihu.events import SUBSCRIBER_BUFFER, EventBus
from waihu.plugins import make_plugin_manager

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 30  # seconds; generous, the machine is shared

STATUS = {
    "version": "0.1.0",
    "pid": 4242,
    "now": 1_795_003_725.0,
    "started_at": 1_795_000_000.0,
    "uptime": 3725.0,
    "draining": False,
    "live_calls": 2,
    "trunks": [
        {
            "name": "office",
            "type": "sip",
            "state": "up",
            "since": 1_795_000_000.0,
            "detail": "",
            "live_calls": 2,
            "lines": 10,
        },
    ],
    "today": {"since": 1_794_960_000.0, "calls": 3, "outcomes": {"busy": 1}, "grades": {}},
    "campaigns": None,
    "scripts": ["demo-ko"],
    "script_errors": [
        {
            "file": "broken.toml",
            "problems": ["broken.toml:3: nodes.x: unknown intent 'maybe'"],
            "in_use": None,
        },
    ],
}

KOREAN_CALL = {
    "id": "20261125-150001-a1b2c3",
    "number": "01012345678",
    "script": "demo-ko",
    "trunk": "office",
    "status": "ended",
    "created_at": 1_795_000_000.0,
    "answered_at": 1_795_000_003.0,
    "ended_at": 1_795_000_041.5,
    "sip_status": 200,
    "sip_reason": "OK",
    "hangup_by": "callee",
    "grade": "A",
    "tags": ["가격 문의"],
    "turns": [
        {
            "speaker": "robot",
            "text": "안녕하세요, 잠시 통화 괜찮으세요?",
            "node": "greeting",
            "intent": None,
            "confidence": None,
            "started_at": 1_795_000_003.5,
            "ended_at": 1_795_000_006.0,
            "interrupted": True,
        },
        {
            "speaker": "callee",
            "text": "네 좋아요",
            "node": "greeting",
            "intent": "affirm",
            "confidence": 0.93,
            "started_at": 1_795_000_005.0,
            "ended_at": 1_795_000_006.2,
            "interrupted": False,
        },
        {
            "speaker": "robot",
            "text": "价格是多少",
            "node": "price",
            "intent": None,
            "confidence": None,
            "started_at": 1_795_000_067.0,
            "ended_at": None,
            "interrupted": False,
        },
    ],
    "recording": "/var/lib/waihu/recordings/20261125-150001-a1b2c3.wav",
    "error": None,
}


class ClosingMonitor(Monitor):
    """The daemon's monitor, saying when the server closed it."""

    def __init__(self, bus: EventBus, call_id: str | None) -> None:
        super().__init__(bus, call_id)
        self.closed = trio.Event()

    def close(self) -> None:
        super().close()
        self.closed.set()


class DaemonStandIn:
    """Stands in for waihud behind the control socket.

    The real daemon needs trunks, a speech model and scripts, none of which
    these tests are about; this one answers from fixed data, remembers what it
    was asked, and can be told to fail or to hold a request. ``watch`` is the
    daemon's: a ``Monitor`` on a real ``EventBus`` (``events``), which the
    tests publish to in place of calls.
    """

    def __init__(self) -> None:
        self.events = EventBus(make_plugin_manager(entry_points=False))
        self.monitors: list[ClosingMonitor] = []
        self.watching = trio.Event()  # set once a watch has subscribed
        self.placed: list[dict[str, Any]] = []
        self.calls_error: Exception | None = None
        self.hold_status = False
        self.inside_calls = 0
        self.all_inside: trio.Event | None = None
        self.expected_inside = 0
        self.progress = ["ringing", "answered", "ended"]  # what call.show reports in turn

    async def status(self) -> dict[str, Any]:
        if self.hold_status:
            await trio.sleep_forever()
        return STATUS

    async def plugins(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "sqlite",
                "distribution": "waihu",
                "version": "0.1.0",
                "hooks": ["waihu_storage_types"],
            }
        ]

    async def call(
        self,
        target: str,
        script: str,
        trunk: str | None = None,
        variables: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        self.placed.append(
            {"target": target, "script": script, "trunk": trunk, "variables": variables}
        )
        return {"call_id": "c-1"}

    async def calls(
        self,
        limit: int = 20,
        campaign: str | None = None,
        grade: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        if self.calls_error is not None:
            raise self.calls_error
        if self.all_inside is not None:  # hold every request until all have arrived
            self.inside_calls += 1
            if self.inside_calls == self.expected_inside:
                self.all_inside.set()
            await self.all_inside.wait()
        summary = {
            k: KOREAN_CALL[k]
            for k in ("id", "number", "script", "status", "grade", "sip_status", "created_at")
        }
        return [{**summary, "duration": 38.5, "outcome": "answered", "campaign_id": None}][:limit]

    async def call_show(self, id: str) -> dict[str, Any]:
        if id == "c-1":
            status = self.progress.pop(0) if len(self.progress) > 1 else self.progress[0]
            return {**KOREAN_CALL, "id": "c-1", "status": status}
        if id != KOREAN_CALL["id"]:
            raise ControlError("not_found", f"no call with id {id!r}")
        return KOREAN_CALL

    async def watch(self, call_id: str | None = None, campaign: str | None = None) -> EventStream:
        if call_id not in (None, "c-1"):
            raise ControlError("not_found", f"no call with id {call_id!r}")
        monitor = ClosingMonitor(self.events, call_id)
        self.monitors.append(monitor)
        self.watching.set()
        return EventStream(result={"call_id": call_id, "live_calls": ["c-1"]}, events=monitor)

    async def shutdown(self) -> dict[str, Any]:
        return {"draining": True, "live_calls": 2}


@pytest.fixture
def stand_in() -> DaemonStandIn:
    return DaemonStandIn()


@pytest.fixture
async def sock(nursery: trio.Nursery, tmp_path: Path, stand_in: DaemonStandIn) -> Path:
    path = tmp_path / "control.sock"
    await nursery.start(ControlServer(path, stand_in).run)
    return path


class RawClient:
    """Speaks the protocol byte by byte, to send what waihuctl never would."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, path: Path) -> RawClient:
        return cls(await trio.open_unix_socket(str(path)))

    async def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data, ensure_ascii=False).encode() + b"\n"
        await self.stream.send_all(data)

    async def reply(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            assert chunk, "server closed the connection"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    async def ask(self, data: bytes | dict[str, Any]) -> dict[str, Any]:
        await self.send(data)
        return await self.reply()


async def waihuctl(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


# ───────────────────────── waihuctl against the server ─────────────────────────


async def test_status_round_trip(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(TIMEOUT):
        assert await waihuctl("--socket", str(sock), "status") == 0
    out = capsys.readouterr().out
    assert out == render_status(STATUS) + "\n"  # the text itself: tests/test_status.py
    assert "  live calls    2 (office 2)\n" in out
    assert "  broken.toml:3: nodes.x: unknown intent 'maybe'\n    not loaded\n" in out


async def test_json_output_parses(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(TIMEOUT):
        assert (
            await waihuctl("--socket", str(sock), "--json", "call", "show", KOREAN_CALL["id"]) == 0
        )
    assert json.loads(capsys.readouterr().out) == KOREAN_CALL


async def test_socket_from_environment(
    sock: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAIHU_SOCKET", str(sock))
    with trio.fail_after(TIMEOUT):
        assert await waihuctl("--json", "plugins") == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "sqlite"


async def test_call_show_renders_a_korean_transcript(
    sock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        assert await waihuctl("--socket", str(sock), "call", "show", KOREAN_CALL["id"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "call 20261125-150001-a1b2c3  ended"
    assert "  grade       A" in out
    assert "  sip         200 OK" in out
    assert "  hung up by  callee" in out
    assert "  tags        가격 문의" in out
    assert "  recording   /var/lib/waihu/recordings/20261125-150001-a1b2c3.wav" in out
    assert any(line.startswith("  ended") and "(talked 38.5 s)" in line for line in out)
    transcript = out[out.index("transcript") + 1 :]
    assert transcript == [
        "   0:00  robot [greeting] (cut off): 안녕하세요, 잠시 통화 괜찮으세요?",
        "   0:02  callee [affirm 0.93]: 네 좋아요",
        "   1:04  robot [price]: 价格是多少",
    ]


async def test_call_passes_params_and_prints_the_id(
    sock: Path, stand_in: DaemonStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        rc = await waihuctl(
            "--socket",
            str(sock),
            "call",
            "01012345678",
            "--script",
            "demo-ko",
            "--var",
            "name=김민준",
            "--var",
            "product=보험",
        )
    assert rc == 0
    assert capsys.readouterr().out == "c-1\n"
    assert stand_in.placed == [
        {
            "target": "01012345678",
            "script": "demo-ko",
            "trunk": None,
            "variables": {"name": "김민준", "product": "보험"},
        }
    ]


async def test_call_wait_follows_the_call_to_its_end(
    sock: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "WAIT_POLL_SECONDS", 0.01)
    with trio.fail_after(TIMEOUT):
        rc = await waihuctl(
            "--socket",
            str(sock),
            "call",
            "sip:bot@127.0.0.1",
            "--script",
            "demo-ko",
            "--trunk",
            "office",
            "--wait",
        )
    assert rc == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "waihuctl: call c-1 ringing",
        "waihuctl: call c-1 answered",
        "waihuctl: call c-1 ended",
    ]
    assert captured.out.startswith("call c-1  ended\n")
    assert "callee [affirm 0.93]: 네 좋아요" in captured.out


async def test_calls_and_shutdown_render(sock: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(TIMEOUT):
        assert await waihuctl("--socket", str(sock), "calls", "--limit", "5") == 0
        assert await waihuctl("--socket", str(sock), "shutdown") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "ID", "CREATED", "NUMBER", "SCRIPT", "STATUS", "OUTCOME", "SIP", "GRADE", "TALK",
        "CAMPAIGN",
    ]  # fmt: skip
    assert out[1].startswith("20261125-150001-a1b2c3  ")
    assert out[1].endswith("  answered  200  A      38.5 s  -")
    assert out[2] == "waihud is shutting down; 2 live call(s) may finish first"


async def test_control_error_is_printed_with_exit_1(
    sock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        assert await waihuctl("--socket", str(sock), "call", "show", "nope") == 1
    captured = capsys.readouterr()
    assert captured.err == "waihuctl: no call with id 'nope'\n"
    assert captured.out == ""


async def test_no_reply_in_time_is_reported(
    sock: Path, stand_in: DaemonStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in.hold_status = True
    with trio.fail_after(TIMEOUT):
        assert await waihuctl("--socket", str(sock), "--timeout", "0.3", "status") == 1
    assert capsys.readouterr().err == "waihuctl: no reply from waihud within 0.3 s\n"


def test_cannot_connect_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "control.sock"
    assert main(["--socket", str(missing), "status"]) == 1
    assert capsys.readouterr().err == (
        f"waihuctl: cannot connect to {missing}: No such file or directory (is waihud running?)\n"
    )


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["calls", "--limit", "0"])
    assert exited.value.code == 2
    assert "argument --limit: must be at least 1, not 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["call", "1001", "--var", "novalue", "--script", "s"])
    assert "expected KEY=VALUE, not 'novalue'" in capsys.readouterr().err


def test_help_lists_every_command_of_the_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # no line wrapped in a hyphenated word
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for command in waihuctl_commands():
        assert f"{' '.join(command.words)} {command.summary}" in out
    # every method and local command is spelled once; methods a local step sends are not
    spelled = [c.name for c in waihuctl_commands()]
    assert sorted(spelled) == sorted(
        {c.name for c in (*COMMANDS, *LOCAL_COMMANDS) if c.name in spelled}
    )
    assert "campaign import_info" not in out and "campaign add_contacts" not in out
    assert set(spelled) == {c.name for c in COMMANDS if c.spelled} | {
        c.name for c in LOCAL_COMMANDS
    }


# ───────────────────────── watch: the live monitor ─────────────────────────

CALL_EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("c-1", "dialing", {"number": "01012345678", "script": "demo-ko", "trunk": "office"}),
    ("c-2", "dialing", {"number": "01099998888", "script": "demo-ko", "trunk": "office"}),
    ("c-1", "ringing", {"status": 180, "reason": "Ringing"}),
    ("c-1", "answered", {"codec": "PCMU"}),
    ("c-1", "node", {"node": "greeting"}),
    (
        "c-1",
        "turn",
        {"speaker": "robot", "text": "안녕하세요?", "node": "greeting", "intent": None},
    ),
    ("c-1", "barge_in", {}),
    ("c-1", "utterance", {"text": "价格是多少", "confidence": 0.875}),
    ("c-1", "turn", {"speaker": "callee", "text": "네", "node": "greeting", "intent": "affirm"}),
    ("c-1", "hangup", {"by": "callee"}),
    (
        "c-1",
        "ended",
        {
            "outcome": "answered",
            "grade": "A",
            "tags": ["interested"],
            "sip_status": 200,
            "hangup_by": "callee",
            "error": None,
        },
    ),
]


def publish_all(stand_in: DaemonStandIn) -> None:
    for call_id, kind, data in CALL_EVENTS:
        stand_in.events.publish(call_id, kind, **data)


async def test_watch_prints_a_line_per_event_and_stops_when_the_call_ends(
    sock: Path, stand_in: DaemonStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            codes: list[int] = []

            async def watch() -> None:
                codes.append(await waihuctl("--socket", str(sock), "watch", "--call", "c-1"))

            nursery.start_soon(watch)
            await stand_in.watching.wait()
            publish_all(stand_in)
    assert codes == [0]
    captured = capsys.readouterr()
    assert captured.err == "waihuctl: watching call c-1; Ctrl-C to stop\n"
    lines = captured.out.splitlines()
    column = "c-1".ljust(CALL_ID_WIDTH)  # ids the daemon makes are this wide
    assert all(re.match(rf"\d\d:\d\d:\d\d\.\d{{3}}  {column}  ", line) for line in lines)
    assert [line[len(f"00:00:00.000  {column}  ") :] for line in lines] == [
        "dialing   01012345678 (script demo-ko, trunk office)",
        "ringing   180 Ringing",
        "answered  codec PCMU",
        "node      greeting",
        "turn      robot [greeting]: 안녕하세요?",
        "barge_in",
        "utterance '价格是多少' (0.88)",
        "turn      callee [affirm]: 네",
        "hangup    by callee",
        "ended     answered, grade A, sip 200, hung up by callee, tags interested",
    ]


def test_an_event_kind_this_waihuctl_does_not_know_is_shown_whole() -> None:
    """A newer daemon may push kinds this waihuctl has no line for: nothing is dropped."""
    line = render_event(
        {"event": "dtmf", "call_id": "c-1", "at": 0.0, "campaign": "spring", "digit": "5"}
    )
    column = "c-1".ljust(CALL_ID_WIDTH)
    assert line.endswith(f"  {column}  dtmf      digit=5, campaign=spring")


async def test_watch_json_prints_the_raw_event_lines(
    sock: Path, stand_in: DaemonStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            # global options may follow the command
            nursery.start_soon(waihuctl, "watch", "--call", "c-1", "--json", "--socket", str(sock))
            await stand_in.watching.wait()
            publish_all(stand_in)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = [(kind, data) for call_id, kind, data in CALL_EVENTS if call_id == "c-1"]
    assert [
        (e.pop("event"), e.pop("call_id"), e.pop("at") > 0, e.pop("campaign")) for e in events
    ] == [(kind, "c-1", True, None) for kind, _ in expected]
    assert events == [data for _, data in expected]


async def test_watch_by_hand_answers_requests_meanwhile_and_unsubscribes_on_close(
    sock: Path, stand_in: DaemonStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawClient.connect(sock)
        reply = await raw.ask({"id": 1, "method": "watch"})
        assert reply == {"id": 1, "ok": True, "result": {"call_id": None, "live_calls": ["c-1"]}}
        stand_in.events.publish("c-2", "ringing", status=183, reason="Session Progress")
        pushed = await raw.reply()
        assert pushed.pop("at") > 0
        assert pushed == {
            "event": "ringing",
            "call_id": "c-2",
            "campaign": None,
            "status": 183,
            "reason": "Session Progress",
        }
        # the connection still answers requests, and refuses a second stream
        assert (await raw.ask({"id": 2, "method": "status"}))["result"] == STATUS
        again = await raw.ask({"id": 3, "method": "watch", "params": {"call_id": "c-1"}})
        assert again["error"]["code"] == "unavailable"
        assert len(stand_in.monitors) == 1
        # an event the protocol cannot carry is logged and skipped; the next one comes
        with caplog.at_level(logging.WARNING, logger="waihu.control"):
            stand_in.events.publish("c-2", "node", node=float("nan"))
            stand_in.events.publish("c-2", "node", node="offer")
            assert (await raw.reply())["node"] == "offer"
        assert "node event not sent" in caplog.text
        await raw.stream.aclose()
        await stand_in.monitors[0].closed.wait()  # the client went: its subscription ends


async def test_watch_of_an_unknown_call_is_refused(
    sock: Path, stand_in: DaemonStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(TIMEOUT):
        assert await waihuctl("--socket", str(sock), "watch", "--call", "nope") == 1
    assert capsys.readouterr().err == "waihuctl: no call with id 'nope'\n"
    assert stand_in.monitors == []


async def test_a_slow_watcher_is_told_where_and_how_many_events_it_lost() -> None:
    bus = EventBus(make_plugin_manager(entry_points=False))
    one_call = Monitor(bus, call_id="c-1")
    every_call = Monitor(bus)
    lost = 10
    with trio.fail_after(TIMEOUT):
        for n in range(SUBSCRIBER_BUFFER + lost):  # fills both channels, then overflows them
            bus.publish("c-1", "utterance", text=str(n), confidence=1.0)
        bus.publish(
            "c-2", "utterance", text="lost by both; not one_call's to count", confidence=1.0
        )
        first = [await one_call.__anext__() for _ in range(3)]
        bus.publish("c-1", "utterance", text="after", confidence=1.0)  # queued after its gap
        rest = [await one_call.__anext__() for _ in range(SUBSCRIBER_BUFFER - 3 + 2)]
        everything = [await every_call.__anext__() for _ in range(SUBSCRIBER_BUFFER + 1)]
        bus.publish("c-1", "utterance", text="later", confidence=1.0)  # each gap told once
        later = [await one_call.__anext__(), await every_call.__anext__()]
    texts = [m.get("text") for m in first + rest]
    assert texts == [*(str(n) for n in range(SUBSCRIBER_BUFFER)), None, "after"]
    gap = rest[-2]
    assert gap["event"] == "dropped" and gap["call_id"] == "c-1" and gap["count"] == lost
    assert rest[-3]["at"] <= gap["at"] <= rest[-1]["at"]
    # the watcher of every call lost the other call's event and "after" in the same gap
    assert [m.get("text") for m in everything[-2:]] == [str(SUBSCRIBER_BUFFER - 1), None]
    assert everything[-1]["count"] == lost + 2 and everything[-1]["call_id"] is None
    assert [m["text"] for m in later] == ["later", "later"]
    one_call.close()
    with pytest.raises(StopAsyncIteration):
        await one_call.__anext__()


async def test_ctrl_c_stops_watch_quietly_with_130(sock: Path) -> None:
    with trio.fail_after(TIMEOUT):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "waihu.control.client", "--socket", str(sock), "watch"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stderr is not None
            header = b""
            while not header.endswith(b"\n"):
                header += await process.stderr.receive_some(4096)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
            rest = b""
            while chunk := await process.stderr.receive_some(4096):
                rest += chunk
        finally:
            if process.poll() is None:
                process.kill()
                await process.wait()
            await process.stderr.aclose()
    assert header == b"waihuctl: watching all calls (1 live now); Ctrl-C to stop\n"
    assert rest == b""  # no traceback


# ───────────────────────── the protocol, by hand ─────────────────────────


async def test_unknown_method(sock: Path) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawClient.connect(sock)
        reply = await raw.ask({"id": 7, "method": "reboot"})
    assert reply["id"] == 7 and reply["ok"] is False
    assert reply["error"]["code"] == "unknown_method"
    assert "'reboot'" in reply["error"]["message"]


@pytest.mark.parametrize(
    ("request_", "names"),
    [
        ({"method": "calls", "params": {"limit": 5, "colour": "red"}}, "unknown param 'colour'"),
        ({"method": "call", "params": {"target": "1001"}}, "missing required param 'script'"),
        ({"method": "calls", "params": {"limit": "5"}}, "'limit' must be an integer, not a string"),
        ({"method": "calls", "params": {"limit": True}}, "'limit' must be an integer, not a bool"),
        ({"method": "calls", "params": {"limit": 0}}, "'limit' must be at least 1"),
        (
            {"method": "call", "params": {"target": "1", "script": "s", "variables": {"n": 1}}},
            "'variables' must be an object of strings",
        ),
        ({"method": "status", "params": [1]}, "params must be an object, not an array"),
        ({"method": 5}, "method must be a string"),
        ({"method": "status", "verb": "x"}, "unknown key 'verb'"),
    ],
)
async def test_bad_request_names_the_problem(
    sock: Path, request_: dict[str, Any], names: str
) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawClient.connect(sock)
        reply = await raw.ask({"id": "r1", **request_})
    assert reply["id"] == "r1"
    assert reply["error"]["code"] == "bad_request"
    assert names in reply["error"]["message"]


async def test_garbage_lines_get_errors_and_the_connection_lives_on(sock: Path) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawClient.connect(sock)
        not_json = await raw.ask(b"status please\n")
        not_utf8 = await raw.ask(b'{"id": 1, "method": "\xff"}\n')
        not_object = await raw.ask(b"[1, 2]\n")
        bad_id = await raw.ask(b'{"id": [1], "method": "status"}\n')
        await raw.send(b"\n  \n")  # blank lines are ignored
        fine = await raw.ask({"id": 2, "method": "status"})
    assert (not_json["id"], not_json["error"]["code"]) == (None, "parse_error")
    assert not_utf8["error"]["code"] == "parse_error"
    assert "not UTF-8" in not_utf8["error"]["message"]
    assert not_object["error"]["code"] == "bad_request"
    assert bad_id["error"]["code"] == "bad_request"
    assert fine == {"id": 2, "ok": True, "result": STATUS}


async def test_over_long_line_is_refused_and_skipped(sock: Path) -> None:
    with trio.fail_after(TIMEOUT):
        raw = await RawClient.connect(sock)
        await raw.send(b"x" * (MAX_LINE_BYTES + 1))  # the error comes before the newline
        too_long = await raw.reply()
        await raw.send(b"x" * 1000 + b"\n")  # the rest of that line
        fine = await raw.ask({"id": 3, "method": "status"})
    assert too_long["error"]["code"] == "parse_error"
    assert str(MAX_LINE_BYTES) in too_long["error"]["message"]
    assert fine["ok"] is True and fine["id"] == 3


async def test_handler_error_is_internal_and_the_server_keeps_serving(
    sock: Path, stand_in: DaemonStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    stand_in.calls_error = RuntimeError("disk on fire")
    with trio.fail_after(TIMEOUT):
        raw = await RawClient.connect(sock)
        with caplog.at_level(logging.ERROR, logger="waihu.control"):
            failed = await raw.ask({"id": 1, "method": "calls"})
        same_connection = await raw.ask({"id": 2, "method": "status"})
        new_connection = await (await RawClient.connect(sock)).ask({"id": 3, "method": "status"})
    assert failed["error"] == {"code": "internal", "message": "RuntimeError: disk on fire"}
    (logged,) = [r for r in caplog.records if r.name == "waihu.control"]
    assert "calls failed" in logged.getMessage() and logged.exc_info is not None
    assert same_connection["ok"] is True and new_connection["ok"] is True


async def test_result_that_is_not_json_is_internal(sock: Path, stand_in: DaemonStandIn) -> None:
    async def not_json() -> dict[str, Any]:
        return {"uptime": float("nan")}

    stand_in.status = not_json  # type: ignore[method-assign]
    with trio.fail_after(TIMEOUT):
        reply = await (await RawClient.connect(sock)).ask({"id": 1, "method": "status"})
    assert reply["error"]["code"] == "internal"


async def test_clients_are_served_at_the_same_time(sock: Path, stand_in: DaemonStandIn) -> None:
    clients = 8
    stand_in.all_inside = trio.Event()  # no reply until all requests are being handled
    stand_in.expected_inside = clients
    replies: list[dict[str, Any]] = []

    async def one(n: int) -> None:
        raw = await RawClient.connect(sock)
        replies.append(await raw.ask({"id": n, "method": "calls", "params": {"limit": 1}}))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for n in range(clients):
                nursery.start_soon(one, n)
    assert sorted(r["id"] for r in replies) == list(range(clients))
    assert all(r["ok"] for r in replies)


async def test_connections_beyond_the_limit_are_refused(sock: Path) -> None:
    with trio.fail_after(TIMEOUT):
        held = [await RawClient.connect(sock) for _ in range(MAX_CONNECTIONS)]
        await held[-1].ask({"id": 0, "method": "status"})  # all accepted by now
        extra = await RawClient.connect(sock)
        refused = await extra.reply()
        for raw in held:
            await raw.stream.aclose()
        again = await (await RawClient.connect(sock)).ask({"id": 1, "method": "status"})
    assert refused["error"]["code"] == "unavailable"
    assert again["ok"] is True


async def test_event_lines_are_skipped_by_the_client(tmp_path: Path) -> None:
    """A hand-written peer pushes an event before its reply, as subscriptions will."""
    path = tmp_path / "events.sock"
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(str(path))
    listener.listen(1)

    async def peer() -> None:
        conn, _ = await listener.accept()
        with conn:
            request = json.loads((await conn.recv(65536)).decode())
            await conn.send(b'{"event":"call.ended","call_id":"x"}\n')
            await conn.send(
                json.dumps({"id": request["id"], "ok": True, "result": 42}).encode() + b"\n"
            )

    def ask() -> Any:
        with client.ControlClient(path) as control:
            return control.request("status")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            assert await trio.to_thread.run_sync(ask) == 42
    listener.close()


# ───────────────────────── the socket file ─────────────────────────


async def test_socket_file_mode_stale_file_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))  # a socket file nobody listens on, as after a crash
    leftover.close()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(ControlServer(path, DaemonStandIn()).run)
            mode = os.stat(path).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
            with pytest.RaisesGroup(
                pytest.RaisesExc(ControlSocketError, match="already listening")
            ):
                async with trio.open_nursery() as second:
                    await second.start(ControlServer(path, DaemonStandIn()).run)
            nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_a_regular_file_at_the_path_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("precious")
    with trio.fail_after(TIMEOUT):
        with pytest.RaisesGroup(pytest.RaisesExc(ControlSocketError, match="not a socket")):
            async with trio.open_nursery() as nursery:
                await nursery.start(ControlServer(path, DaemonStandIn()).run)
    assert path.read_text() == "precious"


# ───────────────────────── one table drives everything ─────────────────────────


def test_committed_man_page_matches_the_table() -> None:
    committed = (REPO / "man" / "waihuctl.1").read_text(encoding="utf-8")
    assert committed == manpage(), "regenerate: python -m waihu.control.manpage > man/waihuctl.1"


def test_a_batch_of_contacts_is_logged_by_its_length_not_its_numbers() -> None:
    """The journal must not become a copy of the contact list."""
    from waihu.control.server import _describe

    contacts = [{"number": f"+86138001380{i:02d}"} for i in range(40)]
    line = _describe("campaign.add_contacts", {"campaign": "spring", "contacts": contacts})
    assert line == "campaign.add_contacts campaign='spring' contacts=[40 items]"
    assert _describe("call", {"target": "1001", "script": "demo", "trunk": None}) == (
        "call target='1001' script='demo'"
    )
