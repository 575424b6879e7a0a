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
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import attrs
import numpy as np
import pluggy
import trio

from waihu.cpu_limiter import CpuLimiter, urgent_lane

__all__ = [
    "ANSWERED_BY",
    "EVENT_KINDS",
    "FINAL_OUTCOMES",
    "FRAME_MS",
    "OUTCOMES",
    "PROJECT_NAME",
    "TRANSFER_OUTCOMES",
    "TRUNK_STATES",
    "AnsweredBy",
    "AsrEngine",
    "AsrResult",
    "AsrStream",
    "Attempt",
    "AuditEntry",
    "BadTarget",
    "CallCounts",
    "CallEvent",
    "CallFailed",
    "CallLeg",
    "CallRecord",
    "CallStatus",
    "CampaignRow",
    "CampaignState",
    "CampaignStats",
    "CampaignStore",
    "Classifier",
    "Codec",
    "ConfigProblem",
    "Contact",
    "ContactState",
    "CpuLimiter",
    "DeliveryFailed",
    "Direction",
    "EarlyMedia",
    "EarlyMediaCallback",
    "EventKind",
    "HangupSide",
    "IncomingCall",
    "IncomingCallHandler",
    "Intent",
    "Keyword",
    "Match",
    "MatchSource",
    "MediaQuality",
    "Notification",
    "Notifier",
    "OutboxItem",
    "Outcome",
    "Provider",
    "ProviderContext",
    "ProviderError",
    "Storage",
    "Synthesizer",
    "TransferMode",
    "TransferOutcome",
    "TransferResult",
    "Trunk",
    "TrunkError",
    "TrunkState",
    "TrunkStatus",
    "Turn",
    "Vad",
    "VoiceDetector",
    "WaihuError",
    "at_least",
    "between",
    "check",
    "check_target",
    "hookimpl",
    "leg_dtmf",
    "leg_media_quality",
    "one_of",
    "positive",
    "trunk_status",
    "urgent_lane",
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


class BadTarget(WaihuError):
    """A call target a trunk cannot dial, found before any call id is issued.

    The message says what is wrong with the target and how it should look
    ("'abc' is not a phone number or SIP URI: use digits, +E.164 or sip:user@host").
    """


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
    CPU-bound native work across the whole daemon (``urgent_lane(cpu_limiter)`` for
    work a callee is waiting on now, such as the end of an utterance).
    """

    name: str
    state_dir: Path
    log: logging.Logger
    cpu_limiter: CpuLimiter | trio.CapacityLimiter
    # a trunk hands each inbound call it accepts for one of its numbers to this
    # (None: the core takes no inbound calls; the trunk answers 480 itself)
    incoming: IncomingCallHandler | None = None


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

    @classmethod
    def check(cls, config: Any, *, section: str) -> list[ConfigProblem]:
        """What would stop this provider from starting, found without starting it.

        ``waihud --check-config`` and start-up both call it with the built
        ``Config`` and the section's name (``asr.default``, ``trunk.office``),
        before anything runs: it may look at files and resolve host names, but
        must not load large models or hold resources. Problems name their key
        (``asr.default.model``); ``warning=True`` ones are printed but do not
        stop start-up (a proxy that does not resolve yet). The default finds nothing.
        """
        return []


@attrs.frozen
class ConfigProblem:
    """One problem ``Provider.check`` found: the full key, what is wrong and what to do."""

    key: str  # "asr.default.model"
    message: str  # "model directory /var/lib/waihu/models/cn does not exist: unpack a …"
    warning: bool = False


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
        """Send DTMF digits out of band (SIP INFO); NotImplementedError if unsupported.

        The core sends RFC 4733 telephone-events itself, in the call's own RTP
        stream, whenever ``dtmf_payload_type`` is set; it calls this only when
        the far end negotiated no telephone-event.
        """
        ...

    async def transfer(self, target: str) -> TransferResult:
        """Blind transfer: hand the call to ``target`` (SIP REFER) and follow it to its
        outcome (the NOTIFY sipfrag). NotImplementedError if unsupported.

        The result's ``mode`` is ``refer``; on ``transferred`` the far end has
        left our call (``ended`` is set or soon will be); on any other outcome
        the call is still ours.
        """
        ...

    # Optional (the core reads them with ``leg_dtmf`` and ``leg_media_quality``):
    #   async def receive_dtmf(self) -> str: the next digit the far end signalled
    #       outside RTP (SIP INFO application/dtmf-relay or application/dtmf);
    #       waits until the caller is cancelled once the call has ended.
    #   def media_quality(self) -> MediaQuality | None: loss, jitter and round
    #       trip so far (RTCP), read when the call ends.


class ProgressCallback(Protocol):
    def __call__(self, status: int, reason: str) -> None: ...


@runtime_checkable
class EarlyMedia(Protocol):
    """Audio the far end sends before it answers: a 183 with SDP (ring-back tones, carrier
    announcements such as 空号/关机/停机/无法接通, call-assistant greetings).

    Handed to ``dial``'s ``on_early_media`` as soon as the first provisional
    answer with SDP arrives. ``receive_media`` gives raw RTP datagrams exactly
    as ``CallLeg.receive_media`` does; ``ended`` is set when the early session
    is over (the call was answered — the same audio then continues on the leg
    — or it failed or was cancelled), after which ``receive_media`` waits
    until cancelled.
    """

    codec: Codec
    dtmf_payload_type: int | None
    ended: trio.Event

    async def receive_media(self) -> bytes:
        """Wait for the next early RTP datagram from the far end."""
        ...


class EarlyMediaCallback(Protocol):
    def __call__(self, media: EarlyMedia) -> None: ...


@runtime_checkable
class IncomingCall(Protocol):
    """An inbound call a trunk has accepted for one of its numbers, ringing until the core
    answers or rejects it.

    ``number`` is the number called (ours, as the trunk's config lists it),
    ``caller`` the calling number or user as the far end gave it (may be
    empty), ``trunk`` the trunk's instance name. ``cancelled`` is set when the
    caller gives up before an answer (CANCEL); ``answer`` then raises
    ``CallFailed(487)``.
    """

    call_id: str
    number: str
    caller: str
    trunk: str
    cancelled: trio.Event

    async def answer(self) -> CallLeg:
        """Answer (200 OK with our SDP answer) and return the leg once the ACK came.

        Raises ``CallFailed`` when the call cannot be answered (the caller
        cancelled: 487; no common codec: 488; no ACK within 32 s: 408).
        """
        ...

    async def reject(self, status: int = 480, reason: str | None = None) -> None:
        """Refuse the call with a final status (486 busy, 480 unavailable, 603 declined…)."""
        ...


class IncomingCallHandler(Protocol):
    def __call__(self, call: IncomingCall) -> None:
        """Take charge of ``call``: answer or reject it, from a task of the core's own."""
        ...


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
        on_early_media: EarlyMediaCallback | None = None,
    ) -> CallLeg:
        """Call ``target`` (a number or a SIP URI) and return the answered leg.

        Raises ``CallFailed`` for a final non-2xx answer or a ring timeout (408),
        ``TrunkError`` when the far end cannot be reached at all. Cancelling the
        caller abandons the attempt cleanly (CANCEL, and the 487 ACKed).
        ``on_early_media`` is called once if the far end sends early media.
        """
        ...

    # Optional (the core reads them with ``trunk_status`` and ``check_target``):
    #   def status(self) -> TrunkStatus: how the trunk is doing now.
    #   def check_target(self, target: str) -> str: the target as it will be
    #       dialled, or BadTarget naming what is wrong; no I/O, it must be quick.


TrunkState = Literal["starting", "up", "reachable", "registered", "failing", "down"]
TRUNK_STATES: tuple[TrunkState, ...] = (
    "starting",
    "up",
    "reachable",
    "registered",
    "failing",
    "down",
)


@attrs.frozen
class TrunkStatus:
    """How a trunk is doing, for ``waihuctl status``, metrics and alerts.

    ``state``:

    - ``starting``: ``run`` has not finished starting yet;
    - ``up``: running; nothing probes whether the far end answers;
    - ``reachable``: the far end answered our last probe (SIP OPTIONS);
    - ``registered``: registered with the registrar and reachable;
    - ``failing``: running, but its last probe, registration or dials failed;
    - ``down``: cannot work at all now (its proxy does not resolve, its socket
      cannot be bound) and is retrying; the daemon and other trunks run on.

    ``since`` is when it entered this state (seconds since the epoch) and
    ``detail`` one line for people ("proxy sip.example.net does not resolve;
    retrying every 30 s"), empty when there is nothing to say.
    """

    state: TrunkState
    since: float
    detail: str = ""


def trunk_status(trunk: object, *, started_at: float) -> TrunkStatus:
    """``trunk.status()``, or ``up`` since ``started_at`` for a trunk that has no ``status``.

    ``status`` and ``check_target`` are optional methods of a ``Trunk``: a
    third-party trunk without them still works, reported as ``up`` and with
    targets checked only when dialled.
    """
    status = getattr(trunk, "status", None)
    if callable(status):
        return status()
    return TrunkStatus(state="up", since=started_at)


def leg_dtmf(leg: object) -> Callable[[], Awaitable[str]] | None:
    """``leg.receive_dtmf`` (digits signalled in SIP INFO), or None for a leg without it."""
    receive = getattr(leg, "receive_dtmf", None)
    return receive if callable(receive) else None


def leg_media_quality(leg: object) -> MediaQuality | None:
    """``leg.media_quality()`` (RTCP figures), or None for a leg without it."""
    quality = getattr(leg, "media_quality", None)
    return quality() if callable(quality) else None


def check_target(trunk: object, target: str) -> str:
    """``trunk.check_target(target)``: the target as it will be dialled, or ``BadTarget``.

    A trunk without ``check_target`` gets the target back unchanged (stripped).
    """
    check = getattr(trunk, "check_target", None)
    if callable(check):
        return check(target)
    return target.strip()


# ───────────────────────────── speech recognition ─────────────────────────────


@attrs.frozen
class AsrResult:
    """The recognised text of one utterance, with confidence 0–1."""

    text: str
    confidence: float
    words: tuple[tuple[str, float, float, float], ...] = ()  # (word, conf, start s, end s)
    # a partial result: how much of the utterance's audio (ms from its first sample fed)
    # it accounts for; None when the engine does not say
    audio_ms: int | None = None


@runtime_checkable
class AsrStream(Protocol):
    """One call's recogniser. Fed 16-bit mono PCM, one utterance at a time."""

    def set_phrases(self, phrases: Sequence[str] | None) -> None:
        """Restrict the next utterance to these phrases (a grammar), or lift it (None)."""
        ...

    async def accept(self, pcm: np.ndarray) -> AsrResult | None:
        """Feed audio of the current utterance; decoding runs in a worker thread.

        Streaming: returns the partial result of the utterance so far when the
        recogniser has a new one (its text changed), else None. An engine that
        decodes only at ``finish`` always returns None; the core then ends every
        turn on the full end-of-speech window.
        """
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


# ───────────────────────────── voice activity ─────────────────────────────


@runtime_checkable
class VoiceDetector(Protocol):
    """One call's voice activity detector: is there speech in this frame?

    Asked about a call's incoming 20 ms frames in order (int16 mono at the
    ``sample_rate`` it was opened with) — those that pass the core endpointer's
    energy and noise-floor gates, which sit in front of it; a frame below them
    is never voice, so it is not asked. It may keep state across frames (a
    model's recurrent state, a window of samples); the endpointer decides from
    the verdicts where utterances start and end. Called on the media clock's
    thread: it must take well under a millisecond and never block.
    """

    def is_speech(self, frame: np.ndarray) -> bool:
        """The verdict on the next frame."""
        ...

    def reset(self) -> None:
        """Forget what was heard (a new call, or after a long gap)."""
        ...


@runtime_checkable
class Vad(Protocol):
    """A voice activity detection provider (``[vad.NAME]``); ``run`` loads its model."""

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    def open_detector(self, *, sample_rate: int) -> VoiceDetector:
        """A new detector for one call at the call's sample rate (8000 or 16000)."""
        ...


# ───────────────────────────── understanding ─────────────────────────────


@attrs.frozen
class Keyword:
    """One keyword of a class and how it may match.

    ``negated`` names the class a negated occurrence ("不感兴趣" for "感兴趣")
    counts for; None takes the intent's ``negated``. ``sound_alike`` also
    matches the keyword by its pinyin, so a recogniser's homophone (在 for 再)
    still matches; None takes the intent's setting.
    """

    text: str
    negated: str | None = None
    sound_alike: bool | None = None


def _keywords(items: Sequence[str | Keyword]) -> tuple[Keyword, ...]:
    return tuple(k if isinstance(k, Keyword) else Keyword(k) for k in items)


@attrs.frozen
class Intent:
    """A class of reply a script can route on, and what signals it.

    ``keywords`` are found anywhere in a reply (a plain string is a
    ``Keyword`` with the intent's defaults); ``patterns`` are regular
    expressions (Python ``re``) over the normalised reply, including gap
    patterns such as ``别.{0,2}打``; ``exclusions`` are phrases or patterns: a
    keyword or pattern match lying inside a match of one of them does not count
    ("用不用" inside "不用不用"); ``examples`` are whole replies, matched exactly
    and used to train a classifier. ``negated`` is the class a negated
    keyword or pattern of this intent counts for (None: a negated match counts
    for nothing); ``sound_alike`` the default of its keywords.
    """

    name: str
    keywords: tuple[Keyword, ...] = attrs.field(default=(), converter=_keywords)
    examples: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    exclusions: tuple[str, ...] = ()
    negated: str | None = None
    sound_alike: bool = True


MatchSource = Literal["keyword", "pattern", "example", "model"]


@attrs.frozen
class Match:
    """One classification candidate.

    ``matched`` is the keyword, pattern or example that matched (for the
    model: the example sentence closest to the reply, or empty); ``negated``
    says the candidate comes from a negated match (a keyword of another class
    under 不/没…, counted for this one), or from a double negation restoring
    it; ``source`` what kind of rule (or the trained model) produced it.
    """

    intent: str
    score: float
    matched: str = ""
    negated: bool = False
    source: MatchSource = "keyword"


@runtime_checkable
class Classifier(Protocol):
    """Maps a recognised utterance to intents."""

    def fit(self, intents: Sequence[Intent]) -> None:
        """Learn the script's intents; called once when a script is loaded."""
        ...

    def classify(self, text: str, allowed: Sequence[str]) -> list[Match]:
        """Candidates among ``allowed``, best first; ``allowed`` is in the script's
        priority order and ties are broken by it. Empty when nothing matches.

        Policy for classifiers that combine rules with a trained model: every
        class whose rules fire comes first, in the order of ``allowed``; only
        when no rule fires may the model add its best class, and only when its
        confidence reaches the classifier's threshold.
        """
        ...


# ───────────────────────────── speech synthesis ─────────────────────────────


@runtime_checkable
class Synthesizer(Protocol):
    """A text-to-speech engine (provider kind ``tts``).

    Speaks a script line that has no recording, or whose text carries a
    variable (``{name}``). The core caches what it returns per text, so an
    engine need not cache.
    """

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    async def synthesize(self, text: str, *, language: str, sample_rate: int) -> np.ndarray:
        """``text`` spoken in ``language`` (a script's ``language``: "zh", "ko"…) as
        16-bit mono PCM at ``sample_rate``; blocking work runs in a worker thread.

        Raises ``ProviderError`` naming the text when it cannot be spoken.
        """
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
    # a robot line cut by barge-in: how much of it the callee heard (ms of its audio)
    played_ms: int | None = None


CallStatus = Literal["dialing", "ringing", "answered", "ended", "failed"]
# Who picked up an answered call (or spoke in its early media): a person, a carrier's
# announcement, voicemail or a call assistant, or unsure (which goes on as a person).
AnsweredBy = Literal["person", "announcement", "voicemail", "unsure"]
ANSWERED_BY: tuple[str, ...] = typing.get_args(AnsweredBy)


Direction = Literal["outbound", "inbound"]
TransferMode = Literal["refer", "bridge"]
TransferOutcome = Literal[
    "transferred",  # a person took the call (REFER accepted and the NOTIFY said 2xx, or the
    # agent answered the bridge)
    "agent_busy",  # 486/600 from the agent, or every agent line in use
    "no_answer",  # the agent did not answer in time (408/480/487)
    "failed",  # anything else: REFER refused, agent unreachable, callee gone meanwhile
]
TRANSFER_OUTCOMES: tuple[str, ...] = typing.get_args(TransferOutcome)


@attrs.frozen(kw_only=True)
class TransferResult:
    """How handing a call to a person went: filed with the call record."""

    target: str  # where to, as the script or operator named it (resolved agent address)
    mode: TransferMode
    outcome: TransferOutcome
    status: int | None = None  # the SIP status that decided it (sipfrag, or the agent leg)
    detail: str = ""  # for people: "agent 1002 answered after 4.2 s", "REFER refused: 403"
    started_at: float | None = None
    ended_at: float | None = None  # when the transfer settled (not when the call ended)


@attrs.frozen(kw_only=True)
class MediaQuality:
    """A call's media as RTCP saw it (RFC 3550 §6.4): filed when the call ends.

    ``loss_fraction`` and ``jitter_ms`` describe what we received; the
    ``remote_*`` figures what the far end reported receiving from us (None if
    it sent no receiver report); ``rtt_ms`` from its report's LSR/DLSR.
    """

    packets_sent: int
    packets_received: int
    packets_lost: int  # cumulative, from sequence numbers (expected − received)
    loss_fraction: float  # 0–1 over the whole call
    jitter_ms: float  # interarrival jitter, RFC 3550 A.8
    rtt_ms: float | None = None
    remote_loss_fraction: float | None = None
    remote_jitter_ms: float | None = None


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
    campaign_id: str | None = None  # the campaign that placed it; None for a single call
    outcome: str | None = None  # one of OUTCOMES, once the call is over
    grade_reason: str | None = None  # why the grade: the matching grading rule's reason
    script_hash: str | None = None  # content hash of the script version that spoke
    direction: Direction = "outbound"  # inbound: the callee called us (``number`` is theirs)
    transfer: TransferResult | None = None  # set once the call was handed to a person
    media_quality: MediaQuality | None = None  # RTCP loss/jitter/round trip, when the call ends
    # who answered (waihu.who_answered): None when the call was never screened
    answered_by: AnsweredBy | None = None
    answered_by_evidence: str = ""  # why: "phrase 关机", "tone busy", "beep after greeting"


@attrs.frozen(kw_only=True)
class CallCounts:
    """How many calls a span of time saw: all of them, by outcome and by grade.

    ``outcomes`` counts calls that are over (keys from ``OUTCOMES``); calls
    still in progress count in ``calls`` only. ``grades`` counts graded calls.
    """

    calls: int
    outcomes: Mapping[str, int] = attrs.field(factory=dict)
    grades: Mapping[str, int] = attrs.field(factory=dict)


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

    async def find_calls(
        self,
        *,
        campaign_id: str | None = None,
        grade: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 20,
    ) -> list[CallRecord]:
        """Calls matching every filter given (``created_at`` in [since, until)), newest first."""
        ...

    async def unfinished_calls(self) -> list[CallRecord]:
        """Calls filed as dialing, ringing or answered: after a crash, to reconcile."""
        ...

    async def set_alive(self, node: str, at: float) -> None:
        """The daemon ``node`` was alive at ``at`` (its heartbeat)."""
        ...

    async def last_alive(self, node: str) -> float | None:
        """When ``node`` last said it was alive, or None."""
        ...

    async def call_counts(self, *, since: float, until: float | None = None) -> CallCounts:
        """Calls created in [since, until) counted by outcome and by grade (``status``'s
        "today"); one grouped query, not a list of records."""
        ...

    async def call_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` ids of filed calls starting with ``prefix``, in id order.

        For short call ids (``waihuctl call show 20261125-1500``), as git takes
        short hashes; it should use an index on the id, not read every call.
        """
        ...


# ───────────────────────────── events ─────────────────────────────

EventKind = Literal[
    "dialing",
    "ringing",
    "answered",
    "turn",
    "node",
    "utterance",
    "barge_in",
    "hangup",
    "ended",
    "failed",
    "campaign",
    "transfer",
    "screened",
]

# The closed set of event kinds and the data fields each carries, in order.
# ``EventBus.publish`` refuses anything else, and a test holds what the daemon
# publishes to this table: a new kind or field is a row here first.
EVENT_KINDS: Mapping[str, tuple[str, ...]] = {
    "dialing": ("number", "script", "trunk"),  # the call record is filed; the INVITE goes next
    "ringing": ("status", "reason"),  # a provisional answer (180/183)
    "answered": ("codec",),  # 200 OK: media flows
    "turn": ("speaker", "text", "node", "intent"),  # one transcript line, robot or callee
    "node": ("node",),  # the script moved to a node
    "utterance": ("text", "confidence"),  # the recogniser's final result for one reply
    "barge_in": (),  # the callee cut into a prompt
    "hangup": ("by",),  # "robot" or "callee"
    # the last event of every call: answered calls end, others fail
    "ended": ("outcome", "grade", "tags", "sip_status", "hangup_by", "error"),
    "failed": ("outcome", "grade", "tags", "sip_status", "hangup_by", "error"),
    # a campaign changed state (started, paused by the breaker, completed…); call_id is None
    "campaign": ("state", "reason"),
    # the script's transfer to a person settled (``TransferResult``: the agent answered, or
    # why not); after a failed one the dialogue goes on
    "transfer": ("target", "mode", "outcome", "status", "detail"),
    # who answered (``waihu.who_answered``): person, announcement, voicemail or unsure, why,
    # and the outcome a machine files instead of ``answered`` (None for a person)
    "screened": ("answered_by", "evidence", "outcome"),
}


@attrs.frozen
class CallEvent:
    """Something that happened to a call or a campaign, published to every observer.

    ``kind`` is one of ``EVENT_KINDS``, and ``data`` holds exactly the fields
    that table lists for it (JSON-serialisable). ``campaign`` names the
    campaign the call belongs to (None for a single call); campaign-wide
    events have ``call_id`` None.
    """

    call_id: str | None
    kind: str = attrs.field(validator=attrs.validators.in_(EVENT_KINDS))
    at: float
    data: Mapping[str, Any] = attrs.field(factory=dict)
    campaign: str | None = None


# ───────────────────────────── campaigns ─────────────────────────────
# The values a campaign store keeps. The scheduler (waihu.campaign) decides;
# the store only commits, atomically, what it is told — so a second store
# (PostgreSQL) is one more implementation of ``CampaignStore``.

Outcome = Literal[
    "answered",  # a conversation took place (whatever its grade)
    "busy",  # 486, 600
    "no_answer",  # 480, 408, ring timeout
    "rejected",  # 603: the callee declined; never retried
    "invalid_number",  # 404, 410, 484, 485, 604; never retried
    "unreachable",  # 502, 504: the far end's network could not reach the callee
    "failed",  # any other failure, ours or the trunk's
    "interrupted",  # the daemon stopped between INVITE and a final answer
    "opted_out",  # the callee asked not to be called again (dnc); never retried
    "switched_off",  # a carrier announcement said the phone is switched off (关机)
    "voicemail",  # voicemail or a call assistant (来电秘书) answered, not the callee
]
OUTCOMES: tuple[str, ...] = typing.get_args(Outcome)
# outcomes after which a contact is never dialled again in this campaign
FINAL_OUTCOMES: frozenset[str] = frozenset({"answered", "rejected", "invalid_number", "opted_out"})

CampaignState = Literal["draft", "running", "paused", "stopped", "completed"]
ContactState = Literal[
    "pending",  # waiting for its next attempt (at or after ``next_at``)
    "leased",  # claimed by a scheduler (``lease_owner`` until ``lease_until``), not yet dialled
    "calling",  # an attempt is open: committed before its INVITE
    "done",  # final: an outcome that ends it, or attempts used up
    "skipped",  # never dialled: do-not-call, frequency cap, campaign ended…
    "cancelled",  # the operator cancelled it while pending
]


@attrs.frozen(kw_only=True)
class Contact:
    """One number of a campaign's list, as imported and as it progresses.

    ``number`` is E.164 (``+8613800138000``); ``variables`` are the import's
    other columns (``{"name": "张三"}``), filled into the script's text;
    ``timezone`` is an IANA name, or None for the campaign's default.
    """

    id: int = 0  # assigned by the store
    campaign_id: str
    number: str
    variables: Mapping[str, str] = attrs.field(factory=dict)
    timezone: str | None = None
    source_line: int | None = None  # line of the import file, for reports
    state: ContactState = "pending"
    attempts: int = 0
    next_at: float = 0.0  # not before (seconds since the epoch)
    last_outcome: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None


@attrs.frozen(kw_only=True)
class Attempt:
    """One dial of one contact: inserted before the INVITE, finished once.

    Rows are never deleted or rewritten after ``finish_attempt``: the history a
    redial or reset keeps. ``script_hash`` is the content hash of the script
    version that spoke.
    """

    id: int = 0  # assigned by the store
    campaign_id: str
    contact_id: int
    number: str
    call_id: str  # the call record's id, chosen before dialling
    seq: int  # 1 for the contact's first attempt
    node: str  # the daemon that dialled it
    started_at: float
    script_hash: str = ""
    ended_at: float | None = None
    outcome: str | None = None  # one of OUTCOMES once finished
    sip_status: int | None = None
    grade: str | None = None
    tags: tuple[str, ...] = ()
    note: str | None = None  # e.g. how it was reconciled after a crash


@attrs.frozen(kw_only=True)
class CampaignRow:
    """A campaign as stored: its id, name, state and settings (plain JSON data).

    ``settings`` is the campaign's configuration as the core validated it
    (script, trunk, caller ID, lines, windows, retry policy…); the store
    keeps it as JSON and does not interpret it.
    """

    id: str
    name: str
    state: CampaignState = "draft"
    reason: str | None = None  # why it is in this state ("trunk office failing: …")
    settings: Mapping[str, Any] = attrs.field(factory=dict)
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None


@attrs.frozen(kw_only=True)
class CampaignStats:
    """Counts for ``campaign show``/``list``: contacts by state, attempts by outcome,
    answered calls by grade, and the per-node funnel (calls that reached each node,
    calls whose last node it was)."""

    contacts: Mapping[str, int]
    outcomes: Mapping[str, int]
    grades: Mapping[str, int]
    reached: Mapping[str, int]  # node → answered calls whose robot spoke at it
    last_node: Mapping[str, int]  # node → answered calls that ended there
    hangups: Mapping[str, int]  # node → calls the callee hung up at it
    attempts: int
    reconciled: int  # attempts finished at start-up after a crash


@attrs.frozen(kw_only=True)
class OutboxItem:
    """One notification waiting in the durable outbox for its notifier."""

    id: int
    notifier: str
    payload: Mapping[str, Any]  # a Notification as JSON data
    due_at: float
    tries: int = 0
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One operator action: who (unix user), what, with which params, when."""

    at: float
    user: str
    action: str
    params: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class CampaignStore(Protocol):
    """Campaigns, contacts, attempts, do-not-call, outbox and audit, kept durably.

    Every method commits before it returns. The claim/finish methods are the
    lead queue: written so that several daemons may share one store (a claim
    never hands the same contact to two callers; PostgreSQL does it with
    ``FOR UPDATE SKIP LOCKED``), and nothing here assumes one process.
    """

    # campaigns
    async def create_campaign(self, row: CampaignRow) -> None:
        """Insert; ProviderError if the id or the name is taken."""
        ...

    async def update_campaign(self, row: CampaignRow) -> None: ...

    async def get_campaign(self, campaign_id: str) -> CampaignRow | None: ...

    async def list_campaigns(self) -> list[CampaignRow]: ...

    # contacts
    async def add_contacts(self, contacts: Sequence[Contact]) -> int:
        """Insert contacts (ids assigned); returns how many."""
        ...

    async def campaign_numbers(self, campaign_id: str) -> set[str]:
        """Every number already in the campaign (to refuse duplicates at import)."""
        ...

    async def campaign_contacts(
        self, campaign_id: str, *, after_id: int = 0, limit: int = 1000
    ) -> list[Contact]:
        """The campaign's contacts in id order, a page at a time (clones, exports)."""
        ...

    async def claim_contacts(
        self, campaign_id: str, *, now: float, limit: int, owner: str, lease_until: float
    ) -> list[Contact]:
        """Lease up to ``limit`` pending contacts due by ``now`` (oldest ``next_at`` first)."""
        ...

    async def release_contact(self, contact_id: int, *, next_at: float) -> None:
        """Give a leased contact back, due again at ``next_at`` (a closed window…)."""
        ...

    async def skip_contact(self, contact_id: int, *, outcome: str) -> None:
        """Finish a leased contact without dialling it (state ``skipped``)."""
        ...

    async def begin_attempt(self, attempt: Attempt) -> Attempt:
        """Commit the intent to dial: the attempt row, and the contact ``calling``."""
        ...

    async def finish_attempt(
        self,
        attempt: Attempt,
        *,
        contact_state: ContactState,
        next_at: float,
    ) -> None:
        """Set the attempt's outcome fields (once) and move its contact, atomically."""
        ...

    async def open_attempts(self, *, node: str | None = None) -> list[Attempt]:
        """Attempts begun and never finished (of one daemon, or all)."""
        ...

    async def expire_leases(self, *, now: float) -> int:
        """Leased contacts whose lease ran out go back to pending; returns how many."""
        ...

    async def renew_leases(self, *, owner: str, lease_until: float) -> None:
        """Extend the leases a live daemon holds (its heartbeat)."""
        ...

    async def set_contacts_state(
        self,
        campaign_id: str,
        *,
        from_states: Sequence[str],
        to_state: ContactState,
        outcomes: Sequence[str] | None = None,
        reset_attempts: bool = False,
        next_at: float | None = None,
    ) -> int:
        """Move contacts in bulk (cancel pending, redial by outcome, reset); returns how many."""
        ...

    async def campaign_stats(self, campaign_id: str) -> CampaignStats: ...

    async def contact_counts(self, campaign_id: str) -> Mapping[str, int]:
        """Contacts by state, cheaply (the scheduler asks when it runs dry)."""
        ...

    async def next_due(self, campaign_id: str) -> float | None:
        """The earliest ``next_at`` of the campaign's pending contacts, or None."""
        ...

    async def campaign_attempts(
        self, campaign_id: str, *, after_id: int = 0, limit: int = 1000
    ) -> list[tuple[Attempt, Contact]]:
        """Attempts with their contacts in id order, a page at a time (exports)."""
        ...

    # compliance
    async def dnc_add(self, numbers: Sequence[str], *, reason: str, at: float) -> int: ...

    async def dnc_remove(self, numbers: Sequence[str]) -> int: ...

    async def dnc_contains(self, number: str) -> bool: ...

    async def dnc_numbers(self) -> list[tuple[str, str, float]]:
        """Every entry: (number, reason, added at)."""
        ...

    async def answered_since(self, number: str, since: float) -> int:
        """Answered attempts to this number, in any campaign, since ``since``."""
        ...

    async def audit(self, entry: AuditEntry) -> None: ...

    async def audit_entries(self, *, limit: int = 100) -> list[AuditEntry]: ...

    # the notification outbox
    async def outbox_put(
        self, notifier: str, payload: Mapping[str, Any], *, due_at: float
    ) -> int: ...

    async def outbox_due(self, notifier: str, *, now: float, limit: int) -> list[OutboxItem]: ...

    async def outbox_done(self, item_id: int, *, at: float) -> None: ...

    async def outbox_retry(self, item_id: int, *, due_at: float, error: str) -> None: ...


# ───────────────────────────── notifiers ─────────────────────────────


class DeliveryFailed(WaihuError):
    """A notifier could not deliver now. ``retry_after`` (seconds) asks for a later
    try (rate limit, endpoint down); ``permanent`` says retrying cannot help (a bad
    key) — the outbox then gives up on the item and logs it."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


@attrs.frozen(kw_only=True)
class Notification:
    """What a notifier delivers: a hot lead as it happens, or a campaign's digest.

    ``kind`` is ``lead`` (one call: ``calls`` holds it) or ``digest`` (a
    campaign's matching calls at its end). Each call is a mapping with
    ``call_id``, ``number`` (E.164), ``masked_number`` (``138****8000``),
    ``grade``, ``tags``, ``replies`` (the callee's key lines), ``variables``
    (the contact's columns, e.g. ``name``), ``duration`` and ``ended_at``.
    ``id`` is stable across retries: endpoints may use it to drop duplicates.
    """

    id: str
    kind: Literal["lead", "digest"]
    campaign_id: str | None
    campaign_name: str | None
    calls: tuple[Mapping[str, Any], ...]
    created_at: float


@runtime_checkable
class Notifier(Protocol):
    """Pushes hot leads to people (WeChat Work group robot, webhook…).

    The core keeps each notification in a durable outbox and calls
    ``deliver`` from one task per notifier, so a slow or down endpoint never
    holds up a call; ``deliver`` raises ``DeliveryFailed`` to be retried later.
    """

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    async def deliver(self, notification: Notification) -> None:
        """Deliver one notification, or raise DeliveryFailed."""
        ...
