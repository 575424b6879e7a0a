"""One outbound call from dial to filed result.

``place_call`` dials through a trunk, wires the answered leg to the media
clock (``CallMedia``), runs the voice pipeline (endpointer → ASR → utterance)
beside the dialogue engine, and hangs up. It tells the call's
``CallLifecycle`` (``waihu.call_lifecycle``) what happens — ringing,
answered, each turn, the grade, the end — and the lifecycle moves the
record's status, publishes the events and files the record at every change,
so a crash loses no finished call.

Error handling: a call catches and logs its own errors. Whatever goes wrong —
a trunk error, an ASR failure, a bug — the record is filed with ``error`` set,
the leg is hung up if it was answered, and the exception does not leave this
module; one bad call never takes down the daemon. Cancellation (drain
deadline, shutdown) also hangs up cleanly, under a shielded, bounded scope.

What it is not: admission (``waihu.dispatcher`` decides whether a call may
start) or the record's bookkeeping (``waihu.call_lifecycle``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import numpy as np
import trio

from waihu.api import (
    AsrEngine,
    AsrStream,
    CallFailed,
    CallLeg,
    CallRecord,
    CampaignStore,
    HangupSide,
    ProviderError,
    Storage,
    Trunk,
    TrunkError,
    Turn,
)
from waihu.call_lifecycle import CallLifecycle, record_as_dict
from waihu.campaign.numbers import InvalidNumber, to_e164
from waihu.config import CallConfig, MediaConfig
from waihu.dialog.engine import (
    DialogueEngine,
    Dtmf,
    EngineEvent,
    PromptDone,
    PromptHandle,
    SpeechBegan,
    Utterance,
)
from waihu.dialog.library import LoadedScript
from waihu.dialog.script import Node, Variant
from waihu.events import EventBus
from waihu.media.call_media import (
    BargeIn,
    CallMedia,
    DtmfDigit,
    PromptFinished,
    SpeechAudio,
    SpeechEnded,
    SpeechStarted,
)
from waihu.media.endpointer import Endpointer
from waihu.media.media_clock import MediaClock
from waihu.media.prompt_player import PromptPlayer
from waihu.media.recorder import StereoRecorder

__all__ = ["CallServices", "place_call", "record_as_dict"]

log = logging.getLogger("waihu.call")

HANGUP_GRACE = 5.0  # seconds a cancelled call gets to send BYE and file its record
BYE_WAIT = 2.0  # seconds to wait for the answer to our BYE before filing the record
ENGINE_INBOX = 64  # events between the voice pipeline and the engine
DNC_TAG = "dnc"  # the tag of a call whose callee asked never to be called again
TRUNK_ERROR_PREFIX = "trunk: "  # how ``error`` files a transport-level failure
CANCELLED_ERROR = "cancelled: daemon shutting down"


@attrs.frozen
class CallServices:
    """What a call needs from the daemon."""

    storage: Storage
    asr: AsrEngine
    clock: MediaClock
    events: EventBus
    media: MediaConfig
    call: CallConfig
    recordings_dir: Path | None  # None: do not record
    region: str = "CN"  # for the do-not-call list: numbers dialled without a country code


class _VoiceSpeaker:
    """Plays script lines through the call's prompt player."""

    def __init__(self, player: PromptPlayer, audio: Mapping[str, np.ndarray]) -> None:
        self.player = player
        self.audio = audio

    def say(self, variant: Variant, text: str, *, interruptible: bool) -> PromptHandle:
        return self.player.play(
            self.audio[variant.recording], interruptible=interruptible, label=text
        )


@attrs.define
class _Ending:
    """How a call came to its end, gathered for its lifecycle's final transition."""

    reached: bool = False  # still False in the end: cancelled before it ended by itself
    sip_status: int | None = None
    sip_reason: str | None = None
    error: str | None = None
    trunk_error: bool = False
    hangup_by: HangupSide | None = None


async def place_call(
    services: CallServices,
    trunk: Trunk,
    record: CallRecord,
    loaded: LoadedScript,
    *,
    variables: Mapping[str, str] | None = None,
    caller_id: str | None = None,
    ring_timeout: float | None = None,
) -> CallRecord:
    """Dial ``record.number`` and run the whole call; returns the filed record.

    ``caller_id`` and ``ring_timeout`` default to ``[call]``'s. The record
    must be new (``dialing``); it is final (``ended`` or ``failed``) on return.
    """
    life = CallLifecycle(record, storage=services.storage, events=services.events)
    leg: CallLeg | None = None
    ending = _Ending()
    try:
        await life.begin()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(life.keep_filed)
            try:
                leg = await trunk.dial(
                    record.number,
                    caller_id=services.call.caller_id if caller_id is None else caller_id,
                    ring_timeout=services.call.ring_timeout
                    if ring_timeout is None
                    else ring_timeout,
                    on_progress=life.progress,
                )
            except CallFailed as exc:
                ending.sip_status, ending.sip_reason = exc.status, exc.reason
                log.info("call %s to %s: %s %s", record.id, record.number, exc.status, exc.reason)
            except TrunkError as exc:
                ending.error, ending.trunk_error = f"{TRUNK_ERROR_PREFIX}{exc}", True
                log.warning("call %s to %s: %s", record.id, record.number, exc)
            else:
                life.answered(leg.codec.name)
                log.info("call %s to %s answered (%s)", record.id, record.number, leg.codec.name)
                with trio.move_on_after(services.call.max_duration) as too_long:
                    await _converse(services, leg, life, loaded, variables or {})
                if too_long.cancelled_caught:
                    max_duration = services.call.max_duration
                    ending.error = f"hung up after call.max_duration ({max_duration} s)"
                if not leg.ended.is_set():
                    # the BYE transaction lives on in the trunk; a callee that never answers
                    # it must not hold back the record for Timer F (32 s)
                    with trio.move_on_after(BYE_WAIT):
                        await leg.hangup()
                ending.hangup_by = leg.ended_by or "robot"
            nursery.cancel_scope.cancel()  # the filing loop
        ending.reached = True
    except Exception as exc:
        log.exception("call %s to %s failed", record.id, record.number)
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # the nursery's wrapping says nothing to an operator
        ending.reached, ending.error = True, f"{type(exc).__name__}: {exc}"
    finally:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(HANGUP_GRACE):
                if leg is not None and not leg.ended.is_set():
                    try:
                        await leg.hangup()
                        ending.hangup_by = ending.hangup_by or "robot"
                    except Exception:
                        log.exception("call %s: hang-up failed", record.id)
            if not ending.reached:  # cancelled: drain deadline, shutdown
                ending.error = ending.error or CANCELLED_ERROR
            await life.end(
                sip_status=ending.sip_status,
                sip_reason=ending.sip_reason,
                error=ending.error,
                trunk_error=ending.trunk_error,
                hangup_by=ending.hangup_by,
                interrupted=not ending.reached,
            )
            log.info(
                "call %s to %s %s (%s): sip %s, grade %s, hung up by %s%s",
                record.id, record.number, record.status, record.outcome, record.sip_status,
                record.grade, record.hangup_by or "-",
                f", error: {record.error}" if record.error else "",
            )  # fmt: skip
    return record


async def _converse(
    services: CallServices,
    leg: CallLeg,
    life: CallLifecycle,
    loaded: LoadedScript,
    variables: Mapping[str, str],
) -> None:
    """Talk with the callee until an end node finished or the callee hung up."""
    record = life.record
    mc = services.media
    endpointer = Endpointer(
        sample_rate=leg.codec.clock_rate,
        aggressiveness=mc.vad_aggressiveness,
        start_ms=mc.speech_start_ms,
        end_silence_ms=mc.end_silence_ms,
        preroll_ms=mc.preroll_ms,
        max_utterance_ms=mc.max_utterance_ms,
    )
    recorder = None
    if services.recordings_dir is not None:
        day = time.strftime("%Y%m%d", time.localtime(record.answered_at))
        path = services.recordings_dir / day / f"{record.id}.wav"
        recorder = StereoRecorder(path, leg.codec.clock_rate)
        life.recorded(str(path))
    media = CallMedia(leg, endpointer=endpointer, recorder=recorder, jitter_depth=mc.jitter_depth)
    stream = services.asr.open_stream(sample_rate=leg.codec.clock_rate)
    inbox_send, inbox = trio.open_memory_channel[EngineEvent](ENGINE_INBOX)

    def on_turn(turn: Turn) -> None:
        if turn.speaker == "callee":
            log.info(
                "call %s [%s] callee: %r → %s (%.2f)",
                record.id,
                turn.node,
                turn.text,
                turn.intent,
                turn.confidence or 0.0,
            )
        life.turn(turn)

    engine = DialogueEngine(
        loaded.script,
        loaded.classifier,
        _VoiceSpeaker(media.player, loaded.audio),
        inbox,
        on_turn=on_turn,
        on_node=life.node,
        variables=variables,
        min_confidence=services.call.min_confidence,
        now=time.time,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(media.receive_loop)
            services.clock.add(media)
            nursery.start_soon(
                _listen, media, stream, inbox_send, lambda: loaded.script.nodes[engine.node], life
            )

            async def watch_hangup() -> None:
                await leg.ended.wait()
                life.hangup(leg.ended_by or "callee")
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_hangup)
            ending = await engine.run()
            tags = ending.tags
            if ending.dnc:
                await _opt_out(services, record)
                tags = (*tags, DNC_TAG)
            life.graded(ending.grade, tags)
            nursery.cancel_scope.cancel()
    finally:
        services.clock.remove(media)
        media.close()
        log.debug("call %s media: %s", record.id, media.stats)
        engine.settle_turns()
        stream.close()
        if record.grade is None:
            life.graded(loaded.script.default_grade)
        if recorder is not None:
            with trio.CancelScope(shield=True):
                try:
                    await recorder.save()
                except OSError as exc:
                    log.error(
                        "call %s: cannot save recording %s: %s", record.id, recorder.path, exc
                    )
                    life.recorded(None)
        life.changed()  # the turns settled above


async def _listen(
    media: CallMedia,
    stream: AsrStream,
    inbox: trio.MemorySendChannel[EngineEvent],
    current_node: Callable[[], Node],
    life: CallLifecycle,
) -> None:
    """Turn the call's media events into engine events, recognising each utterance."""
    started_at = 0.0
    async for event in media.events:
        if isinstance(event, SpeechStarted):
            started_at = time.time()
            stream.set_phrases(list(current_node().phrases) or None)
            await stream.accept(event.preroll)
            await inbox.send(SpeechBegan())
        elif isinstance(event, SpeechAudio):
            await stream.accept(event.pcm)
        elif isinstance(event, SpeechEnded):
            ended_at = time.time()  # when the endpointer decided, before recognition
            result = await stream.finish()
            life.utterance(result.text, result.confidence)
            await inbox.send(Utterance(result.text, result.confidence, started_at, ended_at))
        elif isinstance(event, BargeIn):
            life.barge_in()
        elif isinstance(event, PromptFinished):
            await inbox.send(PromptDone())
        elif isinstance(event, DtmfDigit):
            await inbox.send(Dtmf(event.digit))


async def _opt_out(services: CallServices, record: CallRecord) -> None:
    """Put the callee's number on the do-not-call list, before the robot hangs up.

    Error handling: a number that cannot be read as one, or a storage without a
    do-not-call list or failing, is logged; the call goes on (its ``dnc`` tag still
    tells the campaign, which files the outcome ``opted_out``).
    """
    try:
        number = to_e164(record.number, services.region)
    except InvalidNumber as exc:
        log.error(
            "call %s: cannot add %r to the do-not-call list: %s", record.id, record.number, exc
        )
        return
    if not isinstance(services.storage, CampaignStore):
        log.error("call %s: storage keeps no do-not-call list; %s not added", record.id, number)
        return
    try:
        await services.storage.dnc_add(
            [number], reason=f"asked in call {record.id}", at=time.time()
        )
    except ProviderError as exc:
        log.error("call %s: cannot add %s to the do-not-call list: %s", record.id, number, exc)
        return
    log.info("call %s: %s added to the do-not-call list at the callee's request", record.id, number)
