"""Run baresip (Debian ``baresip-core``) as a real SIP callee in tests.

Usage::

    async with baresip_callee(tmp_path, speech_wav=synthesize("네"), lead_silence_s=7.5) as peer:
        config = write_config(tmp_path / "waihud", proxy=peer.hostport)
        ...  # call peer.user, wait until the robot has hung up
        await peer.wait_call_closed()  # baresip has taken the BYE
        await peer.stop()
    heard = peer.heard()  # what baresip decoded from the robot

sipp is a scripted peer; baresip is a real softphone with its own SIP stack,
jitter buffer and codecs, which is why it is worth a test of its own. What the
harness does:

- writes a config directory for headless use: no UI module (stdin is
  /dev/null), ``net_interface 127.0.0.1`` (the name "lo" is refused),
  signalling on a free loopback port (free for UDP and TCP: baresip listens
  on both), one account that answers calls to its user at once
  (``answermode=auto``) with PCMU or PCMA (a call to another user gets 404);
- makes the callee's voice: ``speech_wav`` (8 kHz mono 16-bit, as
  ``waihu.testing.speech.synthesize`` writes it) with ``lead_silence_s`` of
  silence before it and ``tail_silence_s`` after, played by the ``aufile``
  module. aufile wants a WAV of S16LE mono at the codec's rate, and baresip
  hangs up when the file ends: the tail is how long the callee stays on the
  line after speaking (without ``speech_wav``, silence for the sum of both);
- loads ``sndfile``, which writes each call's audio in both directions as
  WAV files into ``snd/`` (``dump-<date-time>-enc.wav``: what baresip sent,
  ``...-dec.wav``: what it received and decoded). libsndfile finishes a WAV
  header only when the call ends, so read them after the call (``heard``,
  ``said``). No audio player is loaded: what baresip hears goes to that
  file only;
- starts ``baresip -f CONFDIR -t TIMEOUT`` (it quits by itself after
  ``timeout`` seconds, so a test killed hard leaves nothing behind for long)
  with its output in ``baresip.log``, waits until it owns its port, and stops
  it when the block ends (SIGTERM, then SIGKILL), with the process handling
  of ``waihu.testing.peer_process``.

What it is not: a general baresip wrapper. It is built for loopback tests of
one call at a time; registration, NAT traversal and video are switched off.
"""

from __future__ import annotations

import re
import shutil
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import numpy as np
import trio

from waihu.testing.peer_process import (
    HOST,
    READY_POLL,
    free_udp_port,
    running_peer,
    started_peer,
    stop,
    wait_until_bound,
)
from waihu.testing.peer_process import free_udp_tcp_port as free_sip_port
from waihu.testing.speech import CALL_RATE, pad_silence, write_wav_pcm

__all__ = [
    "CLOSED_BY_FAR_END",
    "BaresipFailed",
    "BaresipPeer",
    "baresip_callee",
    "free_sip_port",
    "write_baresip_config",
]

BARESIP = shutil.which("baresip") or "baresip"
MODULE_PATH = Path("/usr/lib/baresip/modules")  # where Debian's baresip-core puts its modules
READY_TIMEOUT = 10.0  # seconds for baresip to bind its signalling port
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL: baresip hangs up and closes its files
LOG_TAIL = 6000  # characters of the log shown in a failure report
SAMPLE_WIDTH = 2  # bytes: aufile reads S16LE only
CODECS = "PCMU,PCMA"
# baresip modules a headless callee needs: G.711, a file as microphone, the recorder, and
# account.so (loaded for start-up only) to read the accounts file
MODULES = ("g711.so", "aufile.so", "sndfile.so")
TEMPORARY_MODULES = ("account.so",)
# sndfile's dump of what baresip received and decoded (the robot's side of the call)
RECEIVED_GLOB = "dump-*-dec.wav"
SENT_GLOB = "dump-*-enc.wav"
# baresip 1.0.0 logs "<peer>: session closed: <reason>" when a call ends; a BYE from the far
# end shows as ECONNRESET's text
_SESSION_CLOSED = re.compile(r": session closed: (?P<reason>.*)$", re.MULTILINE)
CLOSED_BY_FAR_END = "Connection reset by peer"


class BaresipFailed(AssertionError):
    """baresip did not start or did not behave; the message carries its log."""


@attrs.define
class BaresipPeer:
    """A running baresip callee: where it listens, its files, and how it is doing."""

    host: str
    port: int
    user: str
    workdir: Path
    log: Path
    snd_dir: Path
    voice: Path  # the file aufile plays as the callee's microphone
    process: trio.Process

    @property
    def hostport(self) -> str:
        """``host:port`` of its SIP socket (what a trunk's ``proxy`` is set to)."""
        return f"{self.host}:{self.port}"

    def uri(self, user: str | None = None) -> str:
        """A SIP URI that reaches its account."""
        return f"sip:{user or self.user}@{self.hostport}"

    def log_text(self) -> str:
        """Everything baresip printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def report(self) -> str:
        """Exit status and the tail of its log, for a failure message."""
        status = self.process.poll()
        state = "running" if status is None else f"exited {status}"
        return f"baresip {state}; its log ({self.log}):\n{self.log_text()[-LOG_TAIL:]}"

    def closed_calls(self) -> list[str]:
        """Why each call so far ended, as baresip logged it (``CLOSED_BY_FAR_END``: a BYE)."""
        return [m["reason"].strip() for m in _SESSION_CLOSED.finditer(self.log_text())]

    async def wait_call_closed(self, timeout: float = 10.0) -> str:
        """Wait until baresip has logged the end of a call; why it ended.

        Raises ``BaresipFailed`` with its log after ``timeout`` seconds.
        """
        with trio.move_on_after(timeout):
            while not (closed := self.closed_calls()):
                await trio.sleep(READY_POLL * 5)
            return closed[0]
        raise BaresipFailed(f"no call ended within {timeout} s\n" + self.report())

    def recordings(self) -> list[Path]:
        """sndfile's WAV files so far (both directions of every call)."""
        return sorted(self.snd_dir.glob("*.wav"))

    def heard(self) -> np.ndarray:
        """What baresip received and decoded in its one call, as int16 samples at 8 kHz.

        Read it after baresip stopped or hung up: libsndfile completes the
        file only then. Raises ``BaresipFailed`` when there is not exactly one
        such file.
        """
        return self._dump(RECEIVED_GLOB)

    def said(self) -> np.ndarray:
        """What baresip encoded and sent in its one call, as int16 samples at 8 kHz."""
        return self._dump(SENT_GLOB)

    def _dump(self, pattern: str) -> np.ndarray:
        files = sorted(self.snd_dir.glob(pattern))
        if len(files) != 1:
            names = [p.name for p in self.recordings()]
            raise BaresipFailed(f"expected one {pattern} in {self.snd_dir}, found {names}")
        with wave.open(str(files[0]), "rb") as wav:
            if (wav.getnchannels(), wav.getsampwidth()) != (1, SAMPLE_WIDTH):
                raise BaresipFailed(f"{files[0]}: not 16-bit mono")
            frames = wav.readframes(wav.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.int16)

    async def stop(self) -> int:
        """Stop baresip (SIGTERM: it hangs up and closes its files; SIGKILL after a grace);
        its exit status."""
        await stop(self.process, STOP_GRACE)
        return self.process.returncode if self.process.returncode is not None else -1


def _voice_file(
    workdir: Path, speech_wav: Path | None, lead_silence_s: float, tail_silence_s: float
) -> Path:
    """The callee's microphone: speech between silences, checked for what aufile accepts."""
    out = workdir / "voice.wav"
    if speech_wav is None:
        silence = np.zeros(round((lead_silence_s + tail_silence_s) * CALL_RATE), np.int16)
        return write_wav_pcm(out, silence)
    with wave.open(str(speech_wav), "rb") as wav:
        shape = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
    if shape != (1, SAMPLE_WIDTH, CALL_RATE):
        raise ValueError(
            f"{speech_wav}: baresip's aufile needs 16-bit mono at {CALL_RATE} Hz,"
            f" got {shape[0]} channel(s) of {8 * shape[1]} bits at {shape[2]} Hz"
        )
    return pad_silence(speech_wav, lead_silence_s, tail_silence_s, out=out)


def write_baresip_config(
    confdir: Path, *, port: int, user: str, voice: Path, snd_dir: Path
) -> None:
    """The ``config`` and ``accounts`` files of a headless loopback callee in ``confdir``."""
    confdir.mkdir(parents=True, exist_ok=True)
    lines = [
        "poll_method epoll",
        f"sip_listen {HOST}:{port}",
        f"net_interface {HOST}",
        "call_local_timeout 120",
        "call_max_calls 1",
        f"audio_source aufile,{voice}",
        f"module_path {MODULE_PATH}",
        *(f"module {name}" for name in MODULES),
        *(f"module_tmp {name}" for name in TEMPORARY_MODULES),
        f"snd_path {snd_dir}",
    ]
    (confdir / "config").write_text("\n".join(lines) + "\n")
    # regint=0: never register; answermode=auto: pick up at once
    account = f"<sip:{user}@{HOST}:{port}>;regint=0;answermode=auto;audio_codecs={CODECS}"
    (confdir / "accounts").write_text(account + "\n")


@asynccontextmanager
async def baresip_callee(
    workdir: Path,
    *,
    speech_wav: Path | None,
    lead_silence_s: float = 0.0,
    tail_silence_s: float = 30.0,
    user: str = "bot",
    timeout: float = 120.0,
) -> AsyncIterator[BaresipPeer]:
    """Start baresip on a free loopback port as an auto-answering callee; stop it afterwards.

    The callee says ``speech_wav`` after ``lead_silence_s`` of silence, then
    stays silent for ``tail_silence_s`` and hangs up (see the module
    docstring). ``user`` is its account's user part: dial that user (``peer.user``)
    or ``peer.uri()``. Raises ``BaresipFailed``
    with its log when it exits at start-up or does not bind its port (after
    starting again on another port if one was taken meanwhile: ``started_peer``).
    """
    start = partial(
        _running_baresip, Path(workdir), speech_wav, lead_silence_s, tail_silence_s, user, timeout
    )
    async with started_peer(start) as peer:
        yield peer


@asynccontextmanager
async def _running_baresip(
    workdir: Path,
    speech_wav: Path | None,
    lead_silence_s: float,
    tail_silence_s: float,
    user: str,
    timeout: float,
) -> AsyncIterator[BaresipPeer]:
    """baresip as ``baresip_callee`` describes, on a port picked now."""
    workdir = workdir / f"baresip-{free_udp_port()}"
    confdir, snd_dir = workdir / "conf", workdir / "snd"
    snd_dir.mkdir(parents=True)
    voice = _voice_file(workdir, speech_wav, lead_silence_s, tail_silence_s)
    port = free_sip_port()
    write_baresip_config(confdir, port=port, user=user, voice=voice, snd_dir=snd_dir)
    log = workdir / "baresip.log"
    args = [BARESIP, "-f", str(confdir), "-t", str(int(timeout))]
    async with running_peer(args, cwd=workdir, stdout=log, stop_grace=STOP_GRACE) as process:
        peer = BaresipPeer(HOST, port, user, workdir, log, snd_dir, voice, process)
        await wait_until_bound(
            peer, name="baresip", timeout=READY_TIMEOUT, report=peer.report, failure=BaresipFailed
        )
        yield peer
