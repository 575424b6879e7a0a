"""One outbound call from dial to filed result.

``place_call`` dials through a trunk, wires the answered leg to the media
clock (``CallMedia``), runs the voice pipeline (endpointer → ASR → utterance)
beside the dialogue engine, hangs up, and files the ``CallRecord`` at every
state change (dialing, ringing, answered, ended/failed) so a crash loses no
finished call.

Error handling: a call catches and logs its own errors. Whatever goes wrong —
a trunk error, an ASR failure, a bug — the record is filed with ``error`` set,
the leg is hung up if it was answered, and the exception does not leave this
module; one bad call never takes down the daemon. Cancellation (drain
deadline, shutdown) also hangs up cleanly, under a shielded, bounded scope.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
import numpy as np
import trio

from waihu.api import (
    AsrEngine,
    AsrStream,
    CallFailed,
    CallLeg,
    CallRecord,
    Storage,
    Trunk,
    TrunkError,
    Turn,
)
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

_unstructure = cattrs.Converter().unstructure


def record_as_dict(record: CallRecord) -> dict[str, Any]:
    """A call record as plain JSON-ready data (control socket replies, the log)."""
    return _unstructure(record)


HANGUP_GRACE = 5.0  # seconds a cancelled call gets to send BYE and file its record
BYE_WAIT = 2.0  # seconds to wait for the answer to our BYE before filing the record
ENGINE_INBOX = 64  # events between the voice pipeline and the engine


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


class _Filing:
    """Saves the record whenever it changed, one save at a time, newest state last.

    Error handling: a failed save (database locked past its timeout, disk
    full) is logged and retried at the next change; the call goes on. If the
    final save fails, the whole record goes to the log as JSON, so the result
    is not lost even when storage is.
    """

    def __init__(self, storage: Storage, record: CallRecord) -> None:
        self.storage = storage
        self.record = record
        self._changed = trio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            await self.flush()

    async def flush(self, *, final: bool = False) -> bool:
        """Save the record as it is now; False (and logged) if storage failed."""
        snapshot = attrs.evolve(
            self.record, turns=list(self.record.turns), tags=list(self.record.tags)
        )
        try:
            await self.storage.save_call(snapshot)
        except Exception as exc:
            log.error("call %s: cannot save its record: %s", self.record.id, exc)
            if final:
                log.error(
                    "call %s: unsaved record: %s",
                    self.record.id,
                    json.dumps(record_as_dict(snapshot), ensure_ascii=False),
                )
            return False
        return True


class _VoiceSpeaker:
    """Plays script lines through the call's prompt player."""

    def __init__(self, player: PromptPlayer, audio: Mapping[str, np.ndarray]) -> None:
        self.player = player
        self.audio = audio

    def say(self, variant: Variant, text: str, *, interruptible: bool) -> PromptHandle:
        return self.player.play(
            self.audio[variant.recording], interruptible=interruptible, label=text
        )


async def place_call(
    services: CallServices,
    trunk: Trunk,
    record: CallRecord,
    loaded: LoadedScript,
    *,
    variables: Mapping[str, str] | None = None,
) -> CallRecord:
    """Dial ``record.number`` and run the whole call; returns the filed record."""
    filing = _Filing(services.storage, record)
    events = services.events
    events.publish(record.id, "dialing", number=record.number, script=record.script)
    leg: CallLeg | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(filing.run)
            await filing.flush()

            def progress(status: int, reason: str) -> None:
                if 180 <= status < 190 and record.status == "dialing":
                    record.status = "ringing"
                    filing.changed()
                events.publish(record.id, "ringing", status=status, reason=reason)

            try:
                leg = await trunk.dial(
                    record.number,
                    caller_id=services.call.caller_id,
                    ring_timeout=services.call.ring_timeout,
                    on_progress=progress,
                )
            except CallFailed as exc:
                record.status, record.sip_status, record.sip_reason = (
                    "failed",
                    exc.status,
                    exc.reason,
                )
                log.info("call %s to %s: %s %s", record.id, record.number, exc.status, exc.reason)
            except TrunkError as exc:
                record.status, record.error = "failed", f"trunk: {exc}"
                log.warning("call %s to %s: %s", record.id, record.number, exc)
            else:
                record.status, record.sip_status, record.sip_reason = "answered", 200, "OK"
                record.answered_at = time.time()
                filing.changed()
                events.publish(record.id, "answered", codec=leg.codec.name)
                log.info("call %s to %s answered (%s)", record.id, record.number, leg.codec.name)
                with trio.move_on_after(services.call.max_duration) as too_long:
                    await _converse(services, leg, record, loaded, filing, variables or {})
                if too_long.cancelled_caught:
                    record.error = (
                        f"hung up after call.max_duration ({services.call.max_duration} s)"
                    )
                if not leg.ended.is_set():
                    # the BYE transaction lives on in the trunk; a callee that never answers
                    # it must not hold back the record for Timer F (32 s)
                    with trio.move_on_after(BYE_WAIT):
                        await leg.hangup()
                record.hangup_by = record.hangup_by or leg.ended_by or "robot"
                record.status = "ended"
            nursery.cancel_scope.cancel()  # the filing loop
    except Exception as exc:
        log.exception("call %s to %s failed", record.id, record.number)
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # the nursery's wrapping says nothing to an operator
        record.error = f"{type(exc).__name__}: {exc}"
        record.status = "ended" if record.answered_at else "failed"
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(HANGUP_GRACE):
            if leg is not None and not leg.ended.is_set():
                try:
                    await leg.hangup()
                    record.hangup_by = record.hangup_by or "robot"
                except Exception:
                    log.exception("call %s: hang-up failed", record.id)
            if record.status not in ("ended", "failed"):
                # cancelled (drain deadline, shutdown) before it ended on its own
                record.status = "ended" if record.answered_at else "failed"
                record.error = record.error or "cancelled: daemon shutting down"
            record.ended_at = time.time()
            await filing.flush(final=True)
            log.info(
                "call %s to %s %s: sip %s, grade %s, hung up by %s%s",
                record.id, record.number, record.status, record.sip_status, record.grade,
                record.hangup_by or "-", f", error: {record.error}" if record.error else "",
            )  # fmt: skip
            events.publish(
                record.id,
                record.status,
                grade=record.grade,
                sip_status=record.sip_status,
                hangup_by=record.hangup_by,
                error=record.error,
            )
    return record


async def _converse(
    services: CallServices,
    leg: CallLeg,
    record: CallRecord,
    loaded: LoadedScript,
    filing: _Filing,
    variables: Mapping[str, str],
) -> None:
    """Talk with the callee until an end node finished or the callee hung up."""
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
        record.recording = str(path)
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
        record.turns.append(turn)
        filing.changed()
        services.events.publish(
            record.id,
            "turn",
            speaker=turn.speaker,
            text=turn.text,
            node=turn.node,
            intent=turn.intent,
        )

    engine = DialogueEngine(
        loaded.script,
        loaded.classifier,
        _VoiceSpeaker(media.player, loaded.audio),
        inbox,
        on_turn=on_turn,
        on_node=lambda node: services.events.publish(record.id, "node", node=node),
        variables=variables,
        min_confidence=services.call.min_confidence,
        now=time.time,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(media.receive_loop)
            services.clock.add(media)
            nursery.start_soon(
                _listen,
                media,
                stream,
                inbox_send,
                lambda: loaded.script.nodes[engine.node],
                services.events,
                record.id,
            )

            async def watch_hangup() -> None:
                await leg.ended.wait()
                record.hangup_by = record.hangup_by or leg.ended_by or "callee"
                services.events.publish(record.id, "hangup", by=record.hangup_by)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_hangup)
            ending = await engine.run()
            record.grade = ending.grade
            record.tags.extend(t for t in ending.tags if t not in record.tags)
            nursery.cancel_scope.cancel()
    finally:
        services.clock.remove(media)
        media.close()
        log.debug("call %s media: %s", record.id, media.stats)
        engine.settle_turns()
        stream.close()
        if record.grade is None:
            record.grade = loaded.script.default_grade
        if recorder is not None:
            with trio.CancelScope(shield=True):
                try:
                    await recorder.save()
                except OSError as exc:
                    log.error(
                        "call %s: cannot save recording %s: %s", record.id, recorder.path, exc
                    )
                    record.recording = None
        filing.changed()


async def _listen(
    media: CallMedia,
    stream: AsrStream,
    inbox: trio.MemorySendChannel[EngineEvent],
    current_node: Callable[[], Node],
    events: EventBus,
    call_id: str,
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
            events.publish(call_id, "utterance", text=result.text, confidence=result.confidence)
            await inbox.send(Utterance(result.text, result.confidence, started_at, ended_at))
        elif isinstance(event, BargeIn):
            events.publish(call_id, "barge_in")
        elif isinstance(event, PromptFinished):
            await inbox.send(PromptDone())
        elif isinstance(event, DtmfDigit):
            await inbox.send(Dtmf(event.digit))
