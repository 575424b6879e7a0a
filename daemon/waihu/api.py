"""The public surface for plugins: everything a provider may import from waihu.

A plugin (built-in or third-party) imports *only* this module. It finds here:

- ``hookimpl``, the pluggy marker for the hooks declared in ``waihu.hookspecs``;
- ``Provider``, the base class of every provider kind (trunk, ASR engine, NLU
  classifier, storage backend, notifier), carrying its ``type_name`` and its
  attrs ``Config`` class;
- the protocols each kind follows (``Trunk``/``CallLeg``, ``AsrEngine``/
  ``AsrStream``, ``Classifier``, ``Storage``, ``Notifier``);
- the value types that cross the boundary (``Codec``, ``CallRecord``,
  ``Turn``, ``CallEvent``, ``AsrResult``, ``Intent``, ``Match``);
- the domain exceptions a provider raises (``CallFailed``, ``TrunkError``…).

What it is not: the implementation of the core. Nothing here opens sockets or
threads; it only names the shapes both sides agree on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import attrs
import numpy as np
import pluggy
import trio

__all__ = [
    "FRAME_MS",
    "PROJECT_NAME",
    "AsrEngine",
    "AsrResult",
    "AsrStream",
    "CallEvent",
    "CallFailed",
    "CallLeg",
    "CallRecord",
    "CallStatus",
    "Classifier",
    "Codec",
    "HangupSide",
    "Intent",
    "Match",
    "Notifier",
    "Provider",
    "ProviderContext",
    "ProviderError",
    "Storage",
    "Trunk",
    "TrunkError",
    "Turn",
    "WaihuError",
    "at_least",
    "between",
    "check",
    "hookimpl",
    "one_of",
    "positive",
]

PROJECT_NAME = "waihu"  # pluggy project name and entry-point group
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

FRAME_MS = 20  # RTP ptime for G.711; every audio frame inside the daemon is this long


# ───────────────────────────── exceptions ─────────────────────────────


class WaihuError(Exception):
    """Base of every error waihu raises on purpose (as opposed to a bug)."""


class ProviderError(WaihuError):
    """A provider could not do what was asked (model missing, database locked…)."""


class TrunkError(ProviderError):
    """The trunk failed at the transport or protocol level (no answer at all, bad reply)."""


class CallFailed(WaihuError):
    """A dialled call ended with a final non-2xx answer (busy, declined, not found…).

    ``status`` is the SIP status code (486, 603, 408 for a local timeout…) and
    ``reason`` its reason phrase; both are filed as the call's outcome.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


# ───────────────────────────── config validators ─────────────────────────────
# For the attrs ``Config`` classes of providers (and of the core).
# Validators name their attribute first ("port: must be …") so that the message
# can be placed at the full key path: attrs runs them inside __init__, where
# cattrs only knows the enclosing table.
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]  # attrs validator signature


def check(test: Callable[[Any], bool], message: str) -> Validator:
    """An attrs validator: ``test(value)`` must hold, else ``message`` (``{value}`` filled in)."""

    def validate(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not test(value):
            raise ValueError(f"{attribute.name}: {message.format(value=value)}")

    return validate


def positive() -> Validator:
    return check(lambda v: v > 0, "must be greater than 0, not {value}")


def at_least(low: float) -> Validator:
    return check(lambda v: v >= low, f"must be at least {low}, not {{value}}")


def between(low: float, high: float) -> Validator:
    return check(lambda v: low <= v <= high, f"must be {low}–{high}, not {{value}}")


def one_of(*choices: Any) -> Validator:
    listed = ", ".join(map(str, choices))
    return check(lambda v: v in choices, f"must be one of {listed}, not {{value!r}}")


# ───────────────────────────── providers ─────────────────────────────


@attrs.define
class ProviderContext:
    """What the core hands every provider it builds.

    ``name`` is the instance name from config (``office`` in ``[trunk.office]``);
    ``state_dir`` a directory the provider may write to; ``log`` a logger tagged
    with the provider; ``cpu_limiter`` bounds the worker threads used for
    CPU-bound native work across the whole daemon.
    """

    name: str
    state_dir: Path
    log: logging.Logger
    cpu_limiter: trio.CapacityLimiter


class Provider:
    """Base class of every provider kind.

    A subclass sets ``type_name`` (the ``type = "..."`` a config section uses)
    and ``Config`` (an attrs class; the core builds it from the config table
    and rejects unknown keys and wrong types, naming file and key). The core
    constructs the provider with ``(config, context)`` and, for long-lived
    work, runs ``await nursery.start(provider.run)``.
    """

    type_name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any, context: ProviderContext) -> None:
        self.config = config
        self.context = context

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the provider's resources until cancelled; call ``task_status.started()`` once
        ready. The default has nothing to own."""
        task_status.started()
        await trio.sleep_forever()


# ───────────────────────────── trunks and calls ─────────────────────────────


@attrs.frozen
class Codec:
    """An RTP audio payload format negotiated for a call (RFC 3551 names)."""

    name: str  # "PCMU" or "PCMA" in this release
    payload_type: int
    clock_rate: int = 8000

    @property
    def samples_per_frame(self) -> int:
        """Samples in one FRAME_MS frame at this codec's clock rate."""
        return self.clock_rate * FRAME_MS // 1000


HangupSide = Literal["robot", "callee"]


@runtime_checkable
class CallLeg(Protocol):
    """One answered call on a trunk: signalling state plus a media datagram path.

    The leg carries raw RTP datagrams; packetising, codecs and pacing belong to
    the core (one media clock drives every call's outgoing audio, so
    ``send_media`` must never block: it drops the datagram if the socket is
    full). ``ended`` is set when the call is over for any reason, with
    ``ended_by`` telling who hung up.
    """

    call_id: str
    codec: Codec
    dtmf_payload_type: int | None
    ended: trio.Event
    ended_by: HangupSide | None

    def send_media(self, datagram: bytes) -> None:
        """Send one RTP datagram to the far end's media address, without blocking."""
        ...

    async def receive_media(self) -> bytes:
        """Wait for the next RTP datagram from the far end."""
        ...

    async def hangup(self) -> None:
        """End the call from our side (BYE) and release its media; idempotent."""
        ...

    async def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits; a trunk without it raises NotImplementedError."""
        ...

    async def transfer(self, target: str) -> None:
        """Hand the call to ``target`` (REFER or bridge); NotImplementedError if unsupported."""
        ...


class ProgressCallback(Protocol):
    def __call__(self, status: int, reason: str) -> None: ...


@runtime_checkable
class Trunk(Protocol):
    """A way to place (and later receive) phone calls, such as a SIP trunk."""

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    async def dial(
        self,
        target: str,
        *,
        caller_id: str | None = None,
        ring_timeout: float = 60.0,
        on_progress: ProgressCallback | None = None,
    ) -> CallLeg:
        """Call ``target`` (a number or a SIP URI) and return the answered leg.

        Raises ``CallFailed`` for a final non-2xx answer or a ring timeout (408),
        ``TrunkError`` when the far end cannot be reached at all. Cancelling the
        caller abandons the attempt cleanly.
        """
        ...


# ───────────────────────────── speech recognition ─────────────────────────────


@attrs.frozen
class AsrResult:
    """The recognised text of one utterance, with confidence 0–1."""

    text: str
    confidence: float
    words: tuple[tuple[str, float, float, float], ...] = ()  # (word, conf, start s, end s)


@runtime_checkable
class AsrStream(Protocol):
    """One call's recogniser. Fed 16-bit mono PCM, one utterance at a time."""

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        """Restrict the next utterance to these phrases (a grammar), or lift it (None)."""
        ...

    async def accept(self, pcm: np.ndarray) -> None:
        """Feed audio of the current utterance; decoding runs in a worker thread."""
        ...

    async def finish(self) -> AsrResult:
        """End the current utterance and return its final result; ready for the next."""
        ...

    def close(self) -> None:
        """Release the recogniser."""
        ...


@runtime_checkable
class AsrEngine(Protocol):
    """A speech recogniser engine; ``run`` loads and warms its model."""

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    def open_stream(self, *, sample_rate: int) -> AsrStream:
        """A new recogniser for one call at the call's sample rate."""
        ...


# ───────────────────────────── understanding ─────────────────────────────


@attrs.frozen
class Intent:
    """A class of reply a script can route on: keywords/phrases that signal it."""

    name: str
    keywords: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()


@attrs.frozen
class Match:
    """One classification candidate."""

    intent: str
    score: float
    matched: str = ""  # the keyword or example that matched, for the transcript


@runtime_checkable
class Classifier(Protocol):
    """Maps a recognised utterance to intents."""

    def fit(self, intents: Sequence[Intent]) -> None:
        """Learn the script's intents; called once when a script is loaded."""
        ...

    def classify(self, text: str, allowed: Sequence[str]) -> list[Match]:
        """Candidates among ``allowed``, best first; ``allowed`` is in the script's
        priority order and ties are broken by it. Empty when nothing matches."""
        ...


# ───────────────────────────── results and storage ─────────────────────────────


@attrs.define
class Turn:
    """One line of a call's transcript."""

    speaker: Literal["robot", "callee"]
    text: str
    node: str
    intent: str | None = None
    confidence: float | None = None
    started_at: float | None = None  # seconds since the epoch
    ended_at: float | None = None
    interrupted: bool = False  # a robot prompt cut short by barge-in


CallStatus = Literal["dialing", "ringing", "answered", "ended", "failed"]


@attrs.define
class CallRecord:
    """Everything filed about one call; saved whole at every state change."""

    id: str
    number: str
    script: str
    trunk: str
    status: CallStatus = "dialing"
    created_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    sip_status: int | None = None
    sip_reason: str | None = None
    hangup_by: HangupSide | None = None
    grade: str | None = None
    tags: list[str] = attrs.Factory(list)
    turns: list[Turn] = attrs.Factory(list)
    recording: str | None = None
    error: str | None = None


@runtime_checkable
class Storage(Protocol):
    """Where call records live. The embedded default is SQLite."""

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    async def save_call(self, record: CallRecord) -> None:
        """Insert or replace the whole record, durably, before returning."""
        ...

    async def get_call(self, call_id: str) -> CallRecord | None: ...

    async def recent_calls(self, limit: int = 20) -> list[CallRecord]:
        """Newest first."""
        ...


# ───────────────────────────── events and notifiers ─────────────────────────────


@attrs.frozen
class CallEvent:
    """Something that happened to a call, published to every observer.

    ``kind`` is one of: ``dialing``, ``ringing``, ``answered``, ``prompt``,
    ``barge_in``, ``utterance``, ``intent``, ``node``, ``hangup``, ``ended``,
    ``failed``. ``data`` holds the details (JSON-serialisable).
    """

    call_id: str
    kind: str
    at: float
    data: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class Notifier(Protocol):
    """Pushes chosen call events to people (WeChat Work robot, webhook…)."""

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    async def notify(self, event: CallEvent) -> None:
        """Deliver one event; errors are the notifier's to retry or log."""
        ...
