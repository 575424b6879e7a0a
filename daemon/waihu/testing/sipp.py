"""Run sipp (Debian ``sip-tester``) as a real SIP peer in tests.

Usage::

    async with sipp_peer(SCENARIOS / "answer.xml", tmp_path, rtp_echo=True) as peer:
        trunk_config = SipTrunk.Config(proxy=peer.hostport, local_port=0, probe_interval=0)
        ...  # dial, talk, hang up
        result = await peer.wait()
    result.check()  # AssertionError with sipp's logs unless the scenario passed

What the harness does: picks free ports on 127.0.0.1 for signalling (``-p``),
media (``-mp``, an even port with its three neighbours free: sipp uses mp and
mp + 2) and the control socket (``-ci 127.0.0.1 -cp``), so tests can run side
by side; renders the scenario into the test's tmp dir; starts sipp in the
foreground with ``-m 1`` (one call) under trio with its output and traces
(``-trace_err -trace_msg -trace_screen``) in that dir; waits until sipp owns
its signalling port; kills it when the block ends (the process handling is
``waihu.testing.peer_process``'s).

Scenario rendering. sipp substitutes ``-key`` values only inside messages, not
in attributes such as ``<pause milliseconds>`` or ``<exec rtp_stream>``, so
the harness replaces every ``[name]`` for the keys it is given (plus
``DEFAULT_KEYS``) in the whole text itself. sipp's own keywords
(``[last_Via:]``, ``[media_port]``…) are left alone. The line
``<!-- WAIHU-PLAYS -->`` is replaced by one group per ``Play``: wait
``after_ms`` after the previous play ended (or the call was answered), then
stream the audio file as RTP (raw 8 kHz μ-law, e.g. from ``sox in.wav -r
8000 -c 1 -t ul out.ul``); after the last play, wait for it to end. Every
wait is a ``<recv request="BYE">`` with a timeout, so a BYE from the robot in
the middle of the plays is answered normally (label ``got_bye``) rather than
failing the scenario. A ``<pause milliseconds="0"/>`` (e.g. ``ring_ms`` left
at 0) is dropped from the rendered text.

``extra_args`` go last on sipp's command line, and sipp keeps the last value
of an option: ``extra_args=["-m", "300"]`` serves 300 calls instead of one.

Scenarios in ``contrib/sipp/`` (each documents its keys):
- ``answer.xml``: 180, 200 with PCMU SDP, ACK, plays, then waits for our BYE
  and answers it (keys ``ring_ms``, ``bye_wait_ms``). Use with
  ``rtp_echo=True`` to have every RTP packet sent to it echoed back.
- ``hangup_mid.xml``: answers, plays, waits ``wait`` ms, sends BYE itself.
- ``busy.xml``: 100, 486 Busy Here, expects the ACK.
- ``auth.xml``: 401 digest challenge, checks the retried INVITE against keys
  ``user``/``password``, answers, waits for BYE.
- ``no_answer.xml``: rings until CANCEL, then 200/487, expects the ACK.
- ``reinvite.xml``: answers, then re-INVITEs to move its media to
  ``new_media_port`` and hold (sendonly); checks our answer, waits for BYE.
- ``options.xml``: a proxy answering keepalive OPTIONS with ``status``/``reason``
  (both keys required), one per sipp "call": ``extra_args=["-m", "N"]`` for N.
  A trunk that probes must not point at the other scenarios (they would take
  its OPTIONS for an unexpected call): set ``probe_interval = 0`` there.
- ``switchboard.xml``: one callee for many numbers, for campaigns. It branches
  on the last digit of the dialled user (answer, busy, ring out, 603/404/503/480,
  callee hangs up, talks, silence); ``SWITCHBOARD`` maps each digit to what it
  does, and ``switchboard_peer(tmp_path, calls)`` runs it for ``calls`` calls
  with its default keys (``SWITCHBOARD_KEYS``). Plays go to numbers ending in 8.

``UdpPeer`` is the other kind of far end: a plain UDP socket a test scripts
message by message, for what sipp cannot do on purpose (drop a packet, never
answer, send something odd). Tests using it say so in their docstring.

The sipp process also ends itself after ``timeout`` seconds (``-timeout``),
so a test killed hard leaves no sipp behind for long.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

import attrs
import trio

from waihu.testing.peer_process import (
    HOST,
    free_udp_port,
    ports_free,
    running_peer,
    started_peer,
    wait_until_bound,
)
from waihu_sip.message import SipRequest, SipResponse, parse_message

__all__ = [
    "DEFAULT_KEYS",
    "SCENARIOS",
    "SWITCHBOARD",
    "SWITCHBOARD_KEYS",
    "Play",
    "SippPeer",
    "SippResult",
    "SwitchboardLine",
    "UdpPeer",
    "free_media_port",
    "free_udp_port",
    "render_scenario",
    "sipp_peer",
    "switchboard_peer",
]

SCENARIOS = Path(__file__).resolve().parents[3] / "contrib" / "sipp"
SIPP = shutil.which("sipp") or "sipp"
PLAYS_MARKER = "<!-- WAIHU-PLAYS -->"
ZERO_PAUSE = re.compile(r'<pause milliseconds="0+"\s*/>')
ULAW_BYTES_PER_MS = 8  # raw μ-law at 8 kHz: one byte per sample
PCMU_PAYLOAD_TYPE = 0
DEFAULT_KEYS = {
    "ring_ms": "0",
    "bye_wait_ms": "30000",
    "wait": "1000",
    "cancel_wait_ms": "30000",
    "terminate_delay_ms": "0",
}
READY_TIMEOUT = 5.0  # seconds for sipp to bind its signalling port
STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL = 6000  # characters of each log shown in a failure report


def free_media_port(host: str = HOST) -> int:
    """An even UDP port p with p..p+3 free (sipp's audio and video RTP/RTCP)."""
    for _ in range(200):
        port = free_udp_port(host) & ~1
        if 1024 < port < 65530 and ports_free(host, range(port, port + 4)):
            return port
    raise OSError("no free block of four UDP ports for sipp media")


@attrs.frozen
class Play:
    """One thing the callee says: wait ``after_ms``, then stream ``audio`` (raw 8 kHz μ-law)."""

    after_ms: int
    audio: Path

    @property
    def duration_ms(self) -> int:
        """How long the audio plays."""
        return self.audio.stat().st_size // ULAW_BYTES_PER_MS

    def to_xml(self, index: int, wait_ms: int) -> str:
        """sipp steps: wait ``wait_ms`` for a BYE (jumping to ``got_bye`` if one comes), then
        start streaming the audio (sipp streams in the background)."""
        stream = escape(f"{self.audio.resolve()},1,{PCMU_PAYLOAD_TYPE}", {'"': "&quot;"})
        return (
            f'<recv request="BYE" timeout="{max(1, wait_ms)}" ontimeout="play{index}"'
            f' next="got_bye"/>\n'
            f'  <label id="play{index}"/>\n'
            f'  <nop><action><exec rtp_stream="{stream}"/></action></nop>'
        )


def render_scenario(text: str, keys: Mapping[str, str], plays: Sequence[Play] = ()) -> str:
    """Scenario text with the plays put in and every ``[key]`` of ``keys`` filled in."""
    if plays and PLAYS_MARKER not in text:
        raise ValueError("scenario has no WAIHU-PLAYS line but plays were given")
    steps = []
    previous_ms = 0  # a play starts after the one before it has finished
    for index, play in enumerate(plays, 1):
        steps.append(play.to_xml(index, previous_ms + play.after_ms))
        previous_ms = play.duration_ms
    if steps:
        # let the last play finish before the scenario moves on
        steps.append(
            f'<recv request="BYE" timeout="{max(1, previous_ms)}" ontimeout="played"'
            ' next="got_bye"/>\n  <label id="played"/>'
        )
    text = text.replace(PLAYS_MARKER, "\n  ".join(steps))
    for name, value in keys.items():
        text = text.replace(f"[{name}]", escape(str(value), {'"': "&quot;"}))
    # a pause of nothing is no step at all; leaving it out spares sipp a timer wheel round
    return ZERO_PAUSE.sub("", text)


@attrs.frozen
class SippResult:
    """How a sipp run ended: its exit code (0 = the scenario passed) and its logs."""

    returncode: int
    logs: tuple[Path, ...]

    @property
    def passed(self) -> bool:
        """True when sipp exited 0."""
        return self.returncode == 0

    def report(self) -> str:
        """Exit code and the tail of every log, for a failure message."""
        parts = [f"sipp exited {self.returncode}"]
        for path in self.logs:
            text = path.read_text(errors="replace") if path.exists() else "(missing)"
            parts.append(f"──── {path} ────\n{text[-LOG_TAIL:]}")
        return "\n".join(parts)

    def check(self) -> None:
        """Raise AssertionError with the report unless the scenario passed."""
        assert self.passed, self.report()


@attrs.define
class SippPeer:
    """A running sipp: where it listens and how to wait for it."""

    host: str
    port: int
    media_port: int
    control_port: int
    workdir: Path
    process: trio.Process
    _result: SippResult | None = None

    @property
    def hostport(self) -> str:
        """``host:port`` of its signalling socket (what a trunk's ``proxy`` is set to)."""
        return f"{self.host}:{self.port}"

    def uri(self, user: str = "callee") -> str:
        """A SIP URI that reaches it."""
        return f"sip:{user}@{self.hostport}"

    def logs(self) -> tuple[Path, ...]:
        """Every log file sipp wrote so far."""
        return tuple(sorted(p for p in self.workdir.iterdir() if p.suffix in (".log", ".txt")))

    async def wait(self) -> SippResult:
        """Wait for sipp to exit and return its result."""
        if self._result is None:
            returncode = await self.process.wait()
            self._result = SippResult(returncode, self.logs())
        return self._result


@asynccontextmanager
async def sipp_peer(
    scenario: Path | str,
    tmp_path: Path,
    *,
    keys: Mapping[str, str] | None = None,
    plays: Sequence[Play] = (),
    rtp_echo: bool = False,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[SippPeer]:
    """Start sipp as a UAS on free loopback ports running ``scenario`` for one call.

    Started again on other ports when one was taken before sipp bound it
    (``started_peer``).
    """
    scenario = Path(scenario)
    if not scenario.is_absolute():
        scenario = SCENARIOS / scenario
    text = render_scenario(scenario.read_text(), {**DEFAULT_KEYS, **(keys or {})}, plays)
    start = partial(
        _running_sipp, scenario.stem, scenario.name, text, Path(tmp_path),
        [*(["-rtp_echo"] if rtp_echo else []), *extra_args], timeout,
    )  # fmt: skip
    async with started_peer(start) as peer:
        yield peer


@asynccontextmanager
async def _running_sipp(
    stem: str, name: str, text: str, tmp_path: Path, more_args: list[str], timeout: float
) -> AsyncIterator[SippPeer]:
    """sipp running the rendered scenario ``text`` (file ``name``) on ports picked now."""
    workdir = tmp_path / f"sipp-{stem}-{os.getpid()}-{free_udp_port()}"
    workdir.mkdir(parents=True)
    rendered = workdir / name
    rendered.write_text(text)
    media_port = free_media_port()
    media = range(media_port, media_port + 4)  # sipp binds audio and video RTP/RTCP there
    port, control_port = free_udp_port(), free_udp_port()
    while port in media or control_port in media or port == control_port:
        port, control_port = free_udp_port(), free_udp_port()
    args = [
        SIPP, "-sf", str(rendered),
        "-i", HOST, "-p", str(port),
        "-mi", HOST, "-mp", str(media_port),
        "-ci", HOST, "-cp", str(control_port),
        "-m", "1", "-nostdin",
        "-timeout", f"{int(timeout)}s", "-timeout_error",
        "-trace_err", "-error_file", str(workdir / "errors.log"),
        "-trace_msg", "-message_file", str(workdir / "messages.log"),
        "-trace_screen", "-screen_file", str(workdir / "screen.log"),
        *more_args,
    ]  # fmt: skip
    async with running_peer(
        args,
        cwd=workdir,
        stdout=workdir / "stdout.txt",
        stderr=workdir / "stderr.txt",
        stop_grace=STOP_GRACE,
    ) as process:
        peer = SippPeer(HOST, port, media_port, control_port, workdir, process)
        await wait_until_bound(
            peer, name="sipp", timeout=READY_TIMEOUT, report=partial(_exit_report, peer)
        )
        yield peer


def _exit_report(peer: SippPeer) -> str:
    """sipp's result report once it has exited; empty while it runs (there is no result yet)."""
    returncode = peer.process.poll()
    return "" if returncode is None else SippResult(returncode, peer.logs()).report()


class UdpPeer:
    """A plain UDP socket on 127.0.0.1 that a test drives by hand as the far end.

    Not sipp: use it only for what sipp cannot do (ignore a packet, stay
    silent, send a crafted message), and say so in the test's docstring.
    """

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def bind(self) -> str:
        """Bind a free port; returns ``host:port`` (what a trunk's ``proxy`` is set to)."""
        await self.sock.bind((self.host, 0))
        return self.address()

    def address(self) -> str:
        """``host:port`` of the socket."""
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    async def receive(self) -> tuple[SipRequest | SipResponse, tuple[str, int], float]:
        """The next SIP message, where it came from and when (trio time)."""
        data, source = await self.sock.recvfrom(65535)
        return parse_message(data), (source[0], source[1]), trio.current_time()

    async def receive_request(self) -> tuple[SipRequest, tuple[str, int], float]:
        """The next message, which must be a request."""
        message, source, at = await self.receive()
        assert isinstance(message, SipRequest), message
        return message, source, at

    async def receive_response(self) -> SipResponse:
        """The next message, which must be a response."""
        message, _, _ = await self.receive()
        assert isinstance(message, SipResponse), message
        return message

    async def send(
        self, data: bytes | SipRequest | SipResponse, destination: tuple[str, int]
    ) -> None:
        """Send raw bytes or a message."""
        if not isinstance(data, bytes):
            data = data.to_bytes()
        await self.sock.sendto(data, destination)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


# ───────────────────────── the switchboard callee ─────────────────────────

# The switchboard's own defaults, over DEFAULT_KEYS (switchboard.xml documents each key).
SWITCHBOARD_KEYS = {
    "bye_wait_ms": "60000",  # 0 and 8 wait this long for our BYE
    "hangup_ms": "3000",  # 7 talks this long, then hangs up
    # sipp holds 9's call this long, then counts it; it never answers it either way
    "silent_ms": "2000",
}


@attrs.frozen
class SwitchboardLine:
    """What ``switchboard.xml`` does for numbers ending in ``digit``.

    ``status``/``reason``: the final answer it sends to the INVITE (``None``:
    it never sends one). ``answered``: the call is set up (a leg for the
    robot). ``callee_hangs_up``: the callee ends the answered call itself.
    ``behaviour``: in words, with what the trunk's ``dial`` reports where that is
    not the status itself.
    """

    digit: int
    status: int | None
    reason: str
    behaviour: str
    answered: bool = False
    callee_hangs_up: bool = False

    def number(self, prefix: str = "1380013800") -> str:
        """A number the switchboard treats this way: ``prefix`` then the digit."""
        return f"{prefix}{self.digit}"


# digit -> what switchboard.xml does for numbers ending in it
SWITCHBOARD = {
    line.digit: line
    for line in (
        SwitchboardLine(0, 200, "OK", "answers, stays silent, waits for our BYE", answered=True),
        SwitchboardLine(1, 486, "Busy Here", "busy"),
        SwitchboardLine(
            2, 487, "Request Terminated", "rings until CANCEL (dial: 408 at its ring timeout)"
        ),
        SwitchboardLine(3, 603, "Decline", "declines"),
        SwitchboardLine(4, 404, "Not Found", "no such number"),
        SwitchboardLine(5, 503, "Service Unavailable", "network unavailable"),
        SwitchboardLine(6, 480, "Temporarily Unavailable", "switched off"),
        SwitchboardLine(
            7, 200, "OK", "answers, hangs up after hangup_ms", answered=True, callee_hangs_up=True
        ),
        SwitchboardLine(8, 200, "OK", "answers, runs the plays, waits for our BYE", answered=True),
        SwitchboardLine(
            9, None, "", "never answers, the network fails (dial: TrunkError, no response)"
        ),
    )
}


@asynccontextmanager
async def switchboard_peer(
    tmp_path: Path,
    calls: int,
    *,
    keys: Mapping[str, str] | None = None,
    plays: Sequence[Play] = (),
    rtp_echo: bool = False,
    timeout: float = 60.0,
) -> AsyncIterator[SippPeer]:
    """sipp running ``switchboard.xml`` for ``calls`` calls, concurrent or not, with the
    switchboard's defaults (``SWITCHBOARD_KEYS``) under ``keys``; ``plays`` are for
    numbers ending in 8. sipp exits once ``calls`` calls have ended."""
    if calls < 1:
        raise ValueError(f"calls must be at least 1, not {calls}")
    async with sipp_peer(
        SCENARIOS / "switchboard.xml",
        tmp_path,
        keys={**SWITCHBOARD_KEYS, **(keys or {})},
        plays=plays,
        rtp_echo=rtp_echo,
        timeout=timeout,
        extra_args=["-m", str(calls)],
    ) as peer:
        yield peer
