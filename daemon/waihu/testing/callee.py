"""A scripted callee for turn-taking tests and benchmarks: sipp signals, trio owns the media.

A real waihud calls it over loopback. sipp runs ``contrib/sipp/callee.xml`` (answer,
optionally 183 with SDP and early media first, or a failure after early media; it answers
the robot's BYE), and the SDP it sends names the UDP port of a ``Callee`` in the test or
bench process, so the audio on the wire is ours to script and to log:

- **sounds**: int16 8 kHz audio (espeak-ng speech from ``waihu.testing.speech``, a cough
  from ``cough_pcm``, a tone) started at a ``Trigger``: some ms after the call's media
  began (``at``), after the robot's n-th talkspurt began (``after_robot_starts``: "300 ms
  after the robot's first voiced packet") or ended (``after_robot_stops``: "when the robot
  stops talking");
- **echo**: the robot's own audio returned attenuated (``Echo.gain_db``) and delayed
  (``Echo.delay_ms``, rounded up to the callee's next 20 ms frame), through G.711 both ways
  since it is decoded from what arrived and encoded again;
- **line noise**: white noise at a level (dBFS RMS) under everything (5 s made once and
  looped, so that 100 callees fit in one process);
- a **wire log**: every packet in and out with its trio time (incoming: the kernel's
  arrival time, so a busy test process does not make the robot look late), its level and
  whether it is voiced (frame RMS above ``VOICED_DBFS``). Outgoing packets count as voiced
  by the scripted sound alone, so echo and noise never make the callee "speak". From it
  ``CalleeLine`` computes the figures of issue 9: voice-to-voice (the callee's last voiced
  packet of a sound → the first packet of the robot's next talkspurt), barge-in reaction
  (the sound's first voiced packet → the robot's last voiced packet before it goes quiet)
  and the robot's talkspurts (was a line played to its end or cut?).

``CalleeLine`` is the sans-IO heart (feed it packets with times, ask it for the next
frame's payload); ``Callee`` binds the socket and paces it at 20 ms under trio;
``callee_peer`` runs sipp and a ``Callee`` together. Many callees run in one process (one
sipp each): ``call_callees`` places a batch of calls from a fresh waihud, one trunk per
callee, and returns each call's filed record with its wire log, as the benchmarks do with
100 calls.

Usage::

    script = CalleeScript(echo=Echo(gain_db=-20, delay_ms=60))
    async with callee_peer(script, tmp_path) as (peer, callee):
        ...  # a waihud whose trunk's proxy is peer.hostport calls it
    callee.line.robot_spurts()  # [(first, last voiced packet), ...] of the robot's lines

The callee's media begins when sipp has the INVITE (it writes the caller's RTP address to a
file the ``Callee`` reads), a few ms before the answer; ``at`` triggers count from then.

What it is not: a SIP stack (sipp does the signalling), a jitter buffer (the robot's packets
are taken as they arrive; on loopback that is in order), or a model of a real echo path
(one delay, one gain, no dispersion).

Error handling: bad parameters (a negative delay, an empty sound, no frames) raise
``ValueError`` naming the value; a garbled datagram is counted in ``CalleeLine.malformed``
and skipped; sipp failures surface through ``SippResult.check`` as with ``sipp_peer``; in
a batch, a call the daemon refuses or does not file in time comes back with its ``error``
(the other calls' figures are kept), and a sipp whose port was taken is started again.
"""

from __future__ import annotations

import math
import os
import re
import socket
import struct
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import trio

from waihu.control.protocol import ControlError
from waihu.media.g711 import ulaw_decode, ulaw_encode
from waihu.media.rtp import RtpError, RtpSender, parse_rtp
from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.peer_process import HOST
from waihu.testing.sipp import SCENARIOS, SippPeer, sipp_peer

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "VOICED_DBFS",
    "CallPlan",
    "Callee",
    "CalleeLine",
    "CalleeScript",
    "Echo",
    "PlacedCall",
    "Sound",
    "Trigger",
    "WirePacket",
    "after_robot_starts",
    "after_robot_stops",
    "at",
    "batch_dir",
    "call_callees",
    "callee_peer",
    "cough_pcm",
    "frame_level_db",
    "payload_level_db",
    "render_callee_scenario",
    "talkspurts",
    "voiced_span",
]

RATE = 8000  # Hz, G.711
FRAME_MS = 20  # one RTP packet of audio
FRAME_SAMPLES = RATE * FRAME_MS // 1000
PCMU = 0  # RTP payload type
NOISE_LOOP_FRAMES = 250  # 5 s of line noise, looped: longer than any detector looks back
SILENT_PAYLOAD = b"\xff" * FRAME_SAMPLES  # μ-law digital silence (0xFF decodes to 0)
FULL_SCALE = 32768.0  # int16 full scale, 0 dBFS
# A frame is "voiced" above this RMS level. Espeak-ng speech and the robot's prompts sit
# around −20…−30 dBFS; the robot's echo at −20 dB and line noise stay below it.
VOICED_DBFS = -50.0
SILENCE_DBFS = -120.0  # the level reported for a frame of digital zeros
# Silence that ends a talkspurt: longer than the pauses between the words of a prompt.
ROBOT_GAP_MS = 400
RECEIVE_SIZE = 2048  # bytes: an RTP datagram of 20 ms of G.711 is 172
# Linux SO_TIMESTAMPNS (asm-generic value; Python's socket module does not name it): each
# datagram carries its kernel arrival time as a struct timespec
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@qq")
TIMESTAMP_SPACE = socket.CMSG_SPACE(TIMESPEC.size)
PEER_POLL_S = 0.02  # how often to look for the file sipp writes the caller's address to
SECTION = re.compile(r"[ \t]*<!-- callee:(\w+) -->\n(.*?)[ \t]*<!-- /callee:\1 -->\n", re.S)
COUGH_TAU_MS = 40.0  # decay time constant of a synthetic cough
COUGH_ATTACK_MS = 5.0  # rise time, so the burst does not start with a click


# ─────────────────────────────── script ───────────────────────────────


@attrs.frozen
class Trigger:
    """When a sound starts: ``after_ms`` after the call's media began (``kind="answer"``),
    after the robot's ``nth`` talkspurt began (its first voiced packet) or ended (its last
    voiced packet, known once ``ROBOT_GAP_MS`` of quiet followed)."""

    kind: Literal["answer", "robot_starts", "robot_stops"]
    after_ms: int = 0
    nth: int = 1

    def __attrs_post_init__(self) -> None:
        if self.after_ms < 0 or self.nth < 1:
            raise ValueError(f"trigger {self.kind}: after_ms must be ≥ 0 and nth ≥ 1: {self}")


def at(ms: int) -> Trigger:
    """``ms`` after the callee's media began (the first frame it could send)."""
    return Trigger("answer", ms)


def after_robot_starts(ms: int, nth: int = 1) -> Trigger:
    """``ms`` after the robot's ``nth`` talkspurt began on the wire."""
    return Trigger("robot_starts", ms, nth)


def after_robot_stops(ms: int, nth: int = 1) -> Trigger:
    """``ms`` after the robot's ``nth`` talkspurt ended on the wire (at the earliest when the
    end is known, ``ROBOT_GAP_MS`` after its last voiced packet)."""
    return Trigger("robot_stops", ms, nth)


def _pcm(value: object) -> np.ndarray:
    pcm = np.asarray(value, dtype=np.int16)
    if pcm.ndim != 1 or pcm.size == 0:
        raise ValueError(f"a sound needs a non-empty 1-D int16 array, got shape {pcm.shape}")
    return pcm


@attrs.frozen(eq=False)
class Sound:
    """Audio the callee plays (8 kHz int16), when, and a label to find it in the log by."""

    label: str
    pcm: np.ndarray = attrs.field(converter=_pcm)
    trigger: Trigger = attrs.field(factory=lambda: at(0))


@attrs.frozen
class Echo:
    """The robot's audio returned ``gain_db`` (negative: quieter) after ``delay_ms``."""

    gain_db: float = -20.0
    delay_ms: int = 60

    def __attrs_post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError(f"echo delay_ms must be ≥ 0, not {self.delay_ms}")


@attrs.frozen(eq=False)
class CalleeScript:
    """Everything a callee does: its sounds, an echo of the robot, line noise (dBFS RMS)."""

    sounds: tuple[Sound, ...] = attrs.field(default=(), converter=tuple)
    echo: Echo | None = None
    noise_dbfs: float | None = None
    seed: int = 0  # of the line noise, so a run can be repeated


def cough_pcm(duration_ms: int = 150, peak_dbfs: float = -6.0, seed: int = 0) -> np.ndarray:
    """A synthetic cough: a broadband noise burst with a 5 ms rise and an exponential decay."""
    if duration_ms <= 0:
        raise ValueError(f"cough duration_ms must be > 0, not {duration_ms}")
    n = RATE * duration_ms // 1000
    t_ms = np.arange(n) * 1000.0 / RATE
    envelope = np.minimum(1.0, t_ms / COUGH_ATTACK_MS) * np.exp(-t_ms / COUGH_TAU_MS)
    noise = np.random.default_rng(seed).uniform(-1.0, 1.0, n)
    peak = FULL_SCALE * 10 ** (peak_dbfs / 20)
    return np.clip(noise * envelope * peak, -32768, 32767).astype(np.int16)


def frame_level_db(pcm: np.ndarray) -> float:
    """RMS level of samples in dBFS (``SILENCE_DBFS`` for digital silence)."""
    if pcm.size == 0:
        return SILENCE_DBFS
    samples = pcm.astype(np.float64)
    return _level_of_energy(float(samples.dot(samples)) / pcm.size)


def _level_of_energy(mean_square: float) -> float:
    """dBFS of a mean square sample value (a dot product is far cheaper than np.mean)."""
    if mean_square <= 0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10 * math.log10(mean_square / FULL_SCALE**2))


# the square of every μ-law byte's sample value: a payload's level without decoding it
_ULAW_SQUARES = ulaw_decode(bytes(range(256))).astype(np.float64) ** 2


def payload_level_db(payload: bytes) -> float:
    """RMS level in dBFS of a μ-law payload."""
    if not payload:
        return SILENCE_DBFS
    codes = np.frombuffer(payload, np.uint8)
    return _level_of_energy(float(_ULAW_SQUARES[codes].sum()) / codes.size)


def voiced_span(pcm: np.ndarray) -> tuple[int, int] | None:
    """(first, last) ms of the voiced 20 ms frames of ``pcm``; None if none is voiced: how
    long a recording sounds on the wire, to tell a line played to its end from a cut one."""
    frames = [
        i
        for i in range(0, pcm.size // FRAME_SAMPLES)
        if frame_level_db(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) > VOICED_DBFS
    ]
    return (frames[0] * FRAME_MS, frames[-1] * FRAME_MS) if frames else None


# ─────────────────────────────── the wire log ───────────────────────────────


@attrs.frozen(slots=True)
class WirePacket:
    """One RTP packet on the callee's wire: when (trio seconds), which way, its level, whether
    it is voiced (out: by the scripted sound alone) and the label of the sound it carried."""

    at: float
    direction: Literal["in", "out"]
    level_db: float
    voiced: bool
    label: str = ""


def talkspurts(times: Sequence[float], gap_ms: float = ROBOT_GAP_MS) -> list[tuple[float, float]]:
    """(first, last) time of each run of voiced packets (``times``, ascending) whose gaps are
    shorter than ``gap_ms``."""
    spurts: list[tuple[float, float]] = []
    for t in times:
        if spurts and (t - spurts[-1][1]) * 1000 < gap_ms:
            spurts[-1] = (spurts[-1][0], t)
        else:
            spurts.append((t, t))
    return spurts


@attrs.define
class _Playing:
    sound: Sound
    position: int = 0  # next sample to send


class CalleeLine:
    """The callee's media logic without IO: ``receive`` the robot's packets, ask ``frame``
    for each outgoing payload, read the figures from the log. Times are seconds on any clock
    (trio's in ``Callee``); ``start`` is when the callee's media began."""

    def __init__(self, script: CalleeScript, start: float) -> None:
        self.script = script
        self.start = start
        self.log: list[WirePacket] = []
        self.malformed = 0
        self._pending = list(script.sounds)
        self._playing: list[_Playing] = []
        self.started: dict[str, float] = {}  # label → time its first frame went out
        self._spans: dict[str, tuple[float, float]] = {}  # label → first, last voiced frame
        self._echo: deque[tuple[float, np.ndarray]] = deque()  # (due, pcm) of robot frames
        self._echo_gain = 10 ** (script.echo.gain_db / 20) if script.echo else 0.0
        # line noise: a few seconds made once, then looped (as frames and as μ-law), so a
        # frame of noise alone costs no numpy
        self._noise: np.ndarray | None = None
        self._noise_payloads: list[bytes] = []
        self._noise_index = -1
        if script.noise_dbfs is not None:
            rms = FULL_SCALE * 10 ** (script.noise_dbfs / 20)
            rng = np.random.default_rng(script.seed)
            self._noise = rng.normal(0.0, rms, (NOISE_LOOP_FRAMES, FRAME_SAMPLES))
            self._noise_payloads = [
                ulaw_encode(np.clip(frame, -32768, 32767).astype(np.int16)) for frame in self._noise
            ]
        self.robot_onsets: list[float] = []  # first voiced packet of each robot talkspurt
        self.robot_ends: list[float] = []  # last voiced packet of each finished one
        self._robot_last_voiced: float | None = None

    # ── input ──

    def receive(self, when: float, datagram: bytes) -> None:
        """A datagram from the robot arrived at ``when``."""
        try:
            packet = parse_rtp(datagram)
        except RtpError:
            self.malformed += 1
            return
        if packet.payload_type != PCMU:
            return  # telephone-events and the like are not audio
        level = payload_level_db(packet.payload)
        voiced = level > VOICED_DBFS
        self.log.append(WirePacket(when, "in", level, voiced))
        self._track_robot(when, voiced)
        if self.script.echo is not None:
            pcm = ulaw_decode(packet.payload)
            self._echo.append((when + self.script.echo.delay_ms / 1000, pcm))

    def _track_robot(self, when: float, voiced: bool) -> None:
        last = self._robot_last_voiced
        if last is not None and (when - last) * 1000 >= ROBOT_GAP_MS:
            self._close_spurt()
            last = None
        if voiced:
            if last is None:
                self.robot_onsets.append(when)
            self._robot_last_voiced = when

    def _close_spurt(self) -> None:
        if self._robot_last_voiced is not None:
            self.robot_ends.append(self._robot_last_voiced)
            self._robot_last_voiced = None

    # ── output ──

    def _due(self, trigger: Trigger) -> float | None:
        """When ``trigger`` fires, if that is known yet."""
        if trigger.kind == "answer":
            base: float | None = self.start
        else:
            marks = self.robot_onsets if trigger.kind == "robot_starts" else self.robot_ends
            base = marks[trigger.nth - 1] if len(marks) >= trigger.nth else None
        return None if base is None else base + trigger.after_ms / 1000

    def frame(self, when: float) -> bytes:
        """The μ-law payload to send at ``when``: the sounds due, the echo due, line noise."""
        last = self._robot_last_voiced
        if last is not None and (when - last) * 1000 >= ROBOT_GAP_MS:
            self._close_spurt()  # the robot went quiet: no packet needs to arrive to know it
        for sound in list(self._pending):
            due = self._due(sound.trigger)
            if due is not None and due <= when + 1e-9:
                self._pending.remove(sound)
                self._playing.append(_Playing(sound))
        echo_due = bool(self._echo) and self._echo[0][0] <= when + 1e-9
        noise = self._next_noise()
        if not self._playing and not echo_due:
            # nothing to say: the common case, kept cheap for 100 callees in one process
            self.log.append(WirePacket(when, "out", SILENCE_DBFS, False))
            return SILENT_PAYLOAD if noise is None else self._noise_payloads[self._noise_index]
        own = np.zeros(FRAME_SAMPLES, np.float64)
        label = ""
        for playing in list(self._playing):
            chunk = playing.sound.pcm[playing.position : playing.position + FRAME_SAMPLES]
            if playing.position == 0:
                self.started[playing.sound.label] = when
            own[: chunk.size] += chunk
            playing.position += FRAME_SAMPLES
            label = label or playing.sound.label
            if playing.position >= playing.sound.pcm.size:
                self._playing.remove(playing)
        mixed = own.copy()
        if echo_due:
            # one robot frame per callee frame: the echo keeps the robot's pacing
            _, pcm = self._echo.popleft()
            mixed[: pcm.size] += pcm[:FRAME_SAMPLES] * self._echo_gain
        if noise is not None:
            mixed += noise
        level = frame_level_db(own) if label else SILENCE_DBFS
        voiced = level > VOICED_DBFS
        self.log.append(WirePacket(when, "out", level, voiced, label if voiced else ""))
        if voiced:
            first, _ = self._spans.get(label, (when, when))
            self._spans[label] = (first, when)
        return ulaw_encode(np.clip(mixed, -32768, 32767).astype(np.int16))

    def _next_noise(self) -> np.ndarray | None:
        """The next frame of the line noise loop (None without noise)."""
        if self._noise is None:
            return None
        self._noise_index = (self._noise_index + 1) % NOISE_LOOP_FRAMES
        return self._noise[self._noise_index]

    @property
    def finished(self) -> bool:
        """True once every sound has been played out."""
        return not self._pending and not self._playing

    # ── figures ──

    def voiced_times(
        self, direction: Literal["in", "out"], label: str | None = None
    ) -> list[float]:
        """Times of the voiced packets one way (out: of the sound ``label`` if given)."""
        return [
            p.at
            for p in self.log
            if p.direction == direction and p.voiced and (label is None or p.label == label)
        ]

    def robot_spurts(self, gap_ms: float = ROBOT_GAP_MS) -> list[tuple[float, float]]:
        """The robot's talkspurts on the wire: (first, last) voiced packet times."""
        return talkspurts(self.voiced_times("in"), gap_ms)

    def sound_span(self, label: str) -> tuple[float, float] | None:
        """(first, last) voiced outgoing packet of the sound ``label``; None if not played."""
        return self._spans.get(label)

    def voice_to_voice(self, label: str, gap_ms: float = ROBOT_GAP_MS) -> float | None:
        """Seconds from the last voiced packet of ``label`` to the first packet of the robot's
        next talkspurt (its answer; a line still going on when the sound ended is not one);
        None if either never happened."""
        span = self.sound_span(label)
        if span is None:
            return None
        # the onsets kept as packets came are the talkspurts at ROBOT_GAP_MS: no log scan
        onsets = (
            self.robot_onsets
            if gap_ms == ROBOT_GAP_MS
            else [first for first, _ in self.robot_spurts(gap_ms)]
        )
        after = [first for first in onsets if first > span[1]]
        return after[0] - span[1] if after else None

    def reaction(self, label: str, quiet_ms: float = ROBOT_GAP_MS) -> float | None:
        """Seconds from the first voiced packet of ``label`` to the robot's last voiced packet
        before ``quiet_ms`` of quiet (the barge-in reaction); None if the robot was not
        talking when the sound began."""
        span = self.sound_span(label)
        if span is None:
            return None
        for first, last in self.robot_spurts(quiet_ms):
            if first <= span[0] <= last:
                return last - span[0]
        return None


# ─────────────────────────────── IO ───────────────────────────────


class Callee:
    """A ``CalleeLine`` on a UDP socket of 127.0.0.1, sending one frame every 20 ms.

    ``bind`` first (the port goes into the SDP), then ``run`` until cancelled. It sends to
    the address in the caller's SDP offer once ``peer`` is known (from sipp's file, or the
    source of the first datagram).
    """

    def __init__(self, script: CalleeScript, host: str = HOST) -> None:
        self.script = script
        self.host = host
        self.sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.peer: tuple[str, int] | None = None
        self.line: CalleeLine | None = None
        self._sender = RtpSender(PCMU)
        # seconds the callee sent a frame after its due time, at worst: a busy bench process
        # shows here (its wire times are then late by as much)
        self.worst_lateness = 0.0
        self._kernel_times = False  # datagrams carry their arrival time (set by ``bind``)

    async def bind(self) -> int:
        """Bind a free port; returns it."""
        await self.sock.bind((self.host, 0))
        # before anything can arrive: the kernel stamps only what comes after this
        self._kernel_times = _ask_kernel_timestamps(self.sock)
        return self.sock.getsockname()[1]

    @property
    def port(self) -> int:
        """The bound port."""
        return self.sock.getsockname()[1]

    async def run(self, peer_file: Path | None = None) -> None:
        """Receive and send until cancelled; the media begins when the peer is known."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive)
            if peer_file is not None:
                self.peer = await _read_peer_file(peer_file)
            while self.peer is None:
                await trio.sleep(PEER_POLL_S)
            line = self._line(trio.current_time())
            tick = trio.current_time()
            while True:
                # the log gets the real send time; the pacing stays on the 20 ms grid
                now = trio.current_time()
                self.worst_lateness = max(self.worst_lateness, now - tick)
                payload = line.frame(now)
                await self.sock.sendto(self._sender.next_packet(payload, FRAME_SAMPLES), self.peer)
                tick += FRAME_MS / 1000
                await trio.sleep_until(tick)

    def _line(self, start: float) -> CalleeLine:
        """The line, begun at ``start`` if it has not begun yet."""
        if self.line is None:
            self.line = CalleeLine(self.script, start)
        return self.line

    async def _receive(self) -> None:
        while True:
            data, ancillary, _, source = await self.sock.recvmsg(RECEIVE_SIZE, TIMESTAMP_SPACE)
            now = trio.current_time()
            arrived = _kernel_time(ancillary) if self._kernel_times else None
            if arrived is not None:
                # when the kernel had it, on trio's clock: a busy process reads late, the log
                # must not say the robot spoke late
                now -= max(0.0, time.time() - arrived)
            if self.peer is None:
                self.peer = (source[0], source[1])
            # a first packet begins the line when it arrived, not when it was read
            self._line(now).receive(now, data)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def _ask_kernel_timestamps(sock: trio.socket.SocketType) -> bool:
    """Ask Linux to stamp each datagram with its arrival time; False where it cannot."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The arrival time (epoch seconds) in a datagram's ancillary data, if it is there."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            return seconds + nanoseconds / 1e9
    return None


async def _read_peer_file(path: Path) -> tuple[str, int]:
    """The caller's RTP address as sipp wrote it ("IP PORT ..."), once the file exists.

    No deadline of its own: the call may come late (a daemon loading its model on a busy
    machine); the test or bench around it has one.
    """
    while True:
        # a stat of a local file is a microsecond; a thread hop per poll for each of 100
        # callees waiting for a daemon to start was most of the bench's CPU
        text = await trio.Path(path).read_text() if path.exists() else ""
        fields = text.split()
        if len(fields) >= 2:
            return fields[0], int(fields[1])
        await trio.sleep(PEER_POLL_S)


def render_callee_scenario(
    *, early: bool = False, answer: bool = True, scenario: Path | None = None
) -> str:
    """``callee.xml`` with only the sections asked for: ``early`` (183 and early media) and
    then ``answer`` (200) or, if not, reject (the key ``final_status``)."""
    if not early and not answer:
        raise ValueError("a callee that neither answers nor plays early media does nothing")
    keep = {"early": early, "answer": answer, "reject": not answer}
    text = (scenario or SCENARIOS / "callee.xml").read_text()
    return SECTION.sub(lambda m: m.group(2) if keep[m.group(1)] else "", text)


@asynccontextmanager
async def callee_peer(
    script: CalleeScript,
    tmp_path: Path,
    *,
    early_ms: int = 0,
    answer: bool = True,
    final_status: int = 480,
    final_reason: str = "Temporarily Unavailable",
    keys: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> AsyncIterator[tuple[SippPeer, Callee]]:
    """sipp running ``callee.xml`` for one call, and the ``Callee`` whose port its SDP names.

    ``early_ms`` > 0: a 183 with SDP first and that long of early media (the callee's sounds
    with ``at`` triggers play in it); then 200 (``answer``) or ``final_status``.
    """
    callee = Callee(script)
    port = await callee.bind()
    workdir = Path(tmp_path) / f"callee-{os.getpid()}-{port}"
    workdir.mkdir(parents=True)
    scenario = workdir / "callee.xml"
    scenario.write_text(render_callee_scenario(early=early_ms > 0, answer=answer))
    peer_file = workdir / "caller-rtp.txt"
    all_keys = {
        "rtp_port": str(port),
        "peer_file": str(peer_file),
        "early_ms": str(early_ms),
        "final_status": str(final_status),
        "final_reason": final_reason,
        "bye_wait_ms": "60000",
        **(keys or {}),
    }
    try:
        async with sipp_peer(scenario, workdir, keys=all_keys, timeout=timeout) as peer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(callee.run, peer_file)
                yield peer, callee
                nursery.cancel_scope.cancel()
    finally:
        callee.close()


# ─────────────────────────────── many calls ───────────────────────────────


@attrs.frozen(eq=False)
class CallPlan:
    """One call of a batch: the callee's script and what sipp does (see ``callee_peer``)."""

    script: CalleeScript
    early_ms: int = 0
    answer: bool = True
    final_status: int = 480
    final_reason: str = "Temporarily Unavailable"


@attrs.frozen(eq=False)
class PlacedCall:
    """A call of a batch once over: the record the daemon filed (``call.show``) and the
    callee's wire log (None if its media never began)."""

    plan: CallPlan
    record: Mapping[str, Any]
    line: CalleeLine | None
    error: str | None = None  # the call could not be placed or was not filed in time
    lateness: float = 0.0  # the callee's worst send lateness (``Callee.worst_lateness``)


SIPP_START_ATTEMPTS = 3
RECORD_POLL_S = 1.0  # how often a batch asks the daemon whether a call is over
ENDED_STATUSES = ("ended", "failed")


def batch_dir(keep: Path | None, prefix: str) -> AbstractContextManager[str]:
    """The directory of one batch of ``call_callees``: made under ``keep`` and kept (the
    daemon's log, the callees' files, to read after a benchmark), else removed after."""
    if keep is None:
        return tempfile.TemporaryDirectory(prefix=prefix)
    keep.mkdir(parents=True, exist_ok=True)
    return nullcontext(tempfile.mkdtemp(prefix=prefix, dir=keep))


async def call_callees(
    workdir: Path,
    plans: Sequence[CallPlan],
    *,
    script: str = "demo-ko",
    hang_up_when: Callable[[CalleeLine], bool] | None = None,
    timeout: float = 180.0,
    config: Mapping[str, Mapping[str, object]] | None = None,
) -> list[PlacedCall]:
    """Place one call per plan at once from a fresh waihud, each to its own scripted callee
    (a sipp each, one trunk each), and wait until all are filed.

    ``hang_up_when(line)`` true: the bench has what it wanted from the call and hangs it up
    (``call.hangup``) rather than letting the script run its course. A call the daemon
    refuses or does not file within ``timeout`` comes back with ``error`` set. ``config``
    adds keys to the daemon's config sections (``daemon``, ``media``), as ``write_config``
    takes them.
    """
    sections = dict(config or {})
    results: list[PlacedCall | None] = [None] * len(plans)
    async with trio.open_nursery() as callees:
        # one flat nursery for every callee: an error surfaces at once, not 100 levels deep
        peers: list[tuple[SippPeer, Callee]] = [
            await callees.start(_serve, plan, workdir / f"call{index}", timeout)
            for index, plan in enumerate(plans)
        ]
        trunks = {f"c{i}": peer.hostport for i, (peer, _) in enumerate(peers)}
        config_path = write_config(
            workdir / "waihud",
            proxy=trunks,
            daemon={"max_calls": max(50, len(plans)), **sections.get("daemon", {})},
            media={"record": False, **sections.get("media", {})},
        )
        async with running_waihud(config_path) as daemon:

            async def one(index: int, trunk: str) -> None:
                callee = peers[index][1]
                record: Mapping[str, Any] = {"turns": []}
                try:
                    reply = await daemon.request("call", target="1001", script=script, trunk=trunk)
                    hung_up = False
                    with trio.fail_after(timeout):
                        while True:
                            record = await daemon.request("call.show", id=reply["call_id"])
                            if record["status"] in ENDED_STATUSES:
                                break
                            line = callee.line
                            if not hung_up and hang_up_when and line and hang_up_when(line):
                                hung_up = True
                                await daemon.request("call.hangup", id=reply["call_id"])
                            await trio.sleep(RECORD_POLL_S)
                except (ControlError, trio.TooSlowError) as exc:
                    # one call gone wrong must not cost the batch's other figures: say so
                    error = f"call {index} ({trunk}): {type(exc).__name__}: {exc}"
                    results[index] = PlacedCall(
                        plans[index], record, callee.line, error, callee.worst_lateness
                    )
                    return
                results[index] = PlacedCall(
                    plans[index], record, callee.line, None, callee.worst_lateness
                )

            async with trio.open_nursery() as nursery:
                for index, trunk in enumerate(trunks):
                    nursery.start_soon(one, index, trunk)
        callees.cancel_scope.cancel()
    return [r for r in results if r is not None]


async def _serve(
    plan: CallPlan,
    workdir: Path,
    timeout: float,
    *,
    task_status: trio.TaskStatus[tuple[SippPeer, Callee]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one callee of a batch until cancelled; a sipp that could not bind the port it was
    given (taken between the pick and the bind, on a busy machine) is started again."""
    for attempt in range(1, SIPP_START_ATTEMPTS + 1):
        started = False
        try:
            async with callee_peer(
                plan.script,
                workdir / f"try{attempt}",
                early_ms=plan.early_ms,
                answer=plan.answer,
                final_status=plan.final_status,
                final_reason=plan.final_reason,
                timeout=timeout,
            ) as pair:
                started = True
                task_status.started(pair)
                await trio.sleep_forever()
        except AssertionError as exc:
            if started or "exited at start-up" not in str(exc) or attempt == SIPP_START_ATTEMPTS:
                raise
