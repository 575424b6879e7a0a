"""One call, outbound or inbound, from dial (or ring) to filed result.

``place_call`` dials through a trunk (``answer_call`` answers an inbound
call after it rang ``[inbound] answer_after`` seconds; from the answer on
both run the same ``_talk``), wires the answered leg to the media
clock (``CallMedia``), runs the voice pipeline (endpointer → ASR → utterance)
beside the dialogue engine, and hangs up. It tells the call's
``CallLifecycle`` (``waihu.call_lifecycle``) what happens — ringing,
answered, each turn, the grade, the end — and the lifecycle moves the
record's status, publishes the events and files the record at every change,
so a crash loses no finished call.

Speech: each line plays its recording, else the audio the script library
synthesised at load (a line the same in every call), else TTS of the
filled-in text through the daemon's ``SpeechCache``. A call's own lines
(those with a ``{variable}`` and no recording) are rendered while it rings —
rendering starts before ``Trunk.dial`` is called — so the greeting need not
wait. A line whose audio is not ready when the engine says it (a variable the
script set mid-call) is queued as soon as it is: lines keep their order, and
a barge-in in those few milliseconds does not cut it.

The verdict: an ending script gives grade, tags and the grading rule's
reason; when the callee hangs up mid-call the engine grades what happened so
far (``DialogueEngine.verdict(hangup_by="callee")``), and a callee who asked
never to be called again and hung up during the closing line is still put on
the do-not-call list. A transfer to a person
(an end node's or an action's ``transfer``) is tagged ``transfer`` and
carried out by ``waihu.transfer`` (a bridged second leg or a REFER); its
outcome is filed as ``record.transfer``, and after a failed one the
dialogue goes on from the script's ``on_transfer_failed``.

Besides the callee's voice: early media (a 183's audio — carrier
announcements, ring-back) is collected while the call rings
(``media.early_media``) and recorded, at the head of the recording when the
call is answered, as the call's recording of its own when it fails; digits
the far end signals outside RTP (SIP INFO) reach the engine like RFC 4733
ones; an operator's ``CallControl`` hangs the call up (CANCEL while it rings,
BYE after) or sends it digits (RFC 4733 in the call's stream, else the leg's
SIP INFO); the leg's RTCP figures are filed with the record at the end.

Who answered (``[who_answered]``, ``waihu.who_answered``): an answered call
is screened from its answer on — every incoming frame (tones), what the
recogniser makes of the callee's side, and the verdict on its early media —
while the greeting plays and the callee's utterances wait. A person or an
unsure call goes on as a conversation. A machine (a carrier announcement,
voicemail) stops the dialogue and the greeting, the outcome it means is
filed instead of a graded conversation (no grade: there was none), and the
configured action runs — hang up, or wait for the beep and leave a message —
before the robot hangs up. A call that fails after early media has that
audio heard (its recogniser and tones, bounded in time): an announcement
there (关机, then 480) files its own outcome instead of the SIP answer's.

Error handling: a call catches and logs its own errors. Whatever goes wrong —
a final non-2xx answer (``error`` is the answer and why: ``484 Address
Incomplete: 'abc' is not a phone number…`` when the trunk refused the target,
``408 Request Timeout: no answer within 60 s`` at the ring timeout), a trunk
error, an ASR failure, a bug — the record is filed with ``error`` set,
the leg is hung up if it was answered, and the exception does not leave this
module; one bad call never takes down the daemon. Cancellation (drain
deadline, shutdown) also hangs up cleanly, under a shielded, bounded scope.

What it is not: admission (``waihu.dispatcher`` decides whether a call may
start) or the record's bookkeeping (``waihu.call_lifecycle``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from waihu.api import (
    AsrEngine,
    CallFailed,
    CallLeg,
    CallRecord,
    CampaignStore,
    EarlyMedia,
    HangupSide,
    IncomingCall,
    ProviderError,
    Storage,
    TransferResult,
    Trunk,
    TrunkError,
    Turn,
    Vad,
    WaihuError,
    leg_dtmf,
    leg_media_quality,
)
from waihu.call_control import OPERATOR_HANGUP, CallControl
from waihu.call_lifecycle import CallLifecycle, failure_reason, record_as_dict
from waihu.campaign.numbers import InvalidNumber, to_e164
from waihu.config import CallConfig, MediaConfig, WhoAnsweredConfig
from waihu.dialog.complete import answer_judge, node_windows
from waihu.dialog.engine import (
    DialogueEngine,
    Dtmf,
    EngineEvent,
    Step,
)
from waihu.dialog.library import (
    LoadedScript,
    SpeechCache,
    call_variables,
    fields,
    fill,
    per_call_lines,
)
from waihu.events import EventBus
from waihu.media.call_media import (
    CallMedia,
)
from waihu.media.early_media import EarlyAudio
from waihu.media.endpointer import Endpointer
from waihu.media.media_clock import MediaClock
from waihu.media.prompt_player import PromptError, load_prompt
from waihu.media.recorder import StereoRecorder
from waihu.media.telephone_event import DTMF_EVENTS
from waihu.transfer import TransferCall, Transfers, carry_out, whisper_fields
from waihu.voice import PRERENDER_RATE, Listener, VoiceSpeaker
from waihu.who_answered import AnswerScreen, Verdict, hear_early, outcome_of

__all__ = ["CallServices", "answer_call", "place_call", "record_as_dict"]

log = logging.getLogger("waihu.call")

HANGUP_GRACE = 5.0  # seconds a cancelled call gets to send BYE and file its record
BYE_WAIT = 2.0  # seconds to wait for the answer to our BYE before filing the record
ENGINE_INBOX = 64  # events between the voice pipeline and the engine
DNC_TAG = "dnc"  # the tag of a call whose callee asked never to be called again
TRANSFER_TAG = "transfer"  # the tag of a call the script wanted handed to a person
TRUNK_ERROR_PREFIX = "trunk: "  # how ``error`` files a transport-level failure
CANCELLED_ERROR = "cancelled: daemon shutting down"
RING_TIMEOUT_STATUS = 408  # what a trunk files when the ring timeout passes (Trunk.dial)
RINGING_STATUS = 180  # an inbound call rings from the moment the core has it
UNAVAILABLE_STATUS = 503  # the answer to an inbound call the daemon stops before answering
CALLER_GAVE_UP = "the caller hung up before it was answered"
UNDECIDED = "the call ended before the screen decided"  # answered_by unsure, the evidence
MESSAGE_NODE = "who_answered"  # the transcript's node for a message left on voicemail


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
    speech: SpeechCache | None = None  # the daemon's TTS, None when [call] tts is not set
    who: WhoAnsweredConfig = attrs.field(factory=WhoAnsweredConfig)  # [who_answered]
    transfers: Transfers | None = None  # [transfer.NAME] and the trunks; None: none configured
    vad: Vad | None = None  # the started [media] vad provider; None: the endpointer's webrtcvad


async def _prerender(
    services: CallServices, loaded: LoadedScript, variables: Mapping[str, str]
) -> None:
    """Synthesise the call's own lines (a variable, no recording) into the speech cache,
    in script order: the greeting first.

    Error handling: a line that cannot be synthesised is logged; saying it later
    tries again and fails the call if it still cannot.
    """
    if services.speech is None:
        return
    script = loaded.script
    # a line filled from a variable the script sets mid-call is rendered when said
    known = [v for _key, v in per_call_lines(script) if fields(v.text) <= variables.keys()]
    texts = dict.fromkeys(fill(v.text, variables) for v in known)
    for text in texts:
        try:
            await services.speech.speak(text, language=script.language, sample_rate=PRERENDER_RATE)
        except ProviderError as exc:
            log.warning("cannot render a line ahead: %s", exc)


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
    control: CallControl | None = None,
) -> CallRecord:
    """Dial ``record.number`` and run the whole call; returns the filed record.

    ``caller_id`` and ``ring_timeout`` default to ``[call]``'s. The record
    must be new (``dialing``); it is final (``ended`` or ``failed``) on return.
    ``control`` lets an operator hang the call up or send it digits.
    """
    life = CallLifecycle(record, storage=services.storage, events=services.events)
    if ring_timeout is None:
        ring_timeout = services.call.ring_timeout
    if control is None:
        control = CallControl()
    leg: CallLeg | None = None
    ending = _Ending()
    said = call_variables(loaded.script, variables or {})
    early: list[EarlyAudio] = []
    try:
        await life.begin()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(life.keep_filed)
            nursery.start_soon(_prerender, services, loaded, said)  # while it rings

            def on_early_media(media: EarlyMedia) -> None:
                if not early:  # one early session per attempt is all a trunk reports
                    audio = EarlyAudio(media)
                    early.append(audio)
                    nursery.start_soon(audio.collect)
                    log.info("call %s to %s: early media (%s)", record.id, record.number,
                             media.codec.name)  # fmt: skip

            screen_failed = False  # the call failed after early media: hear what it said
            with trio.CancelScope() as operator:
                control.bind(operator)
                try:
                    leg = await trunk.dial(
                        record.number,
                        caller_id=services.call.caller_id if caller_id is None else caller_id,
                        ring_timeout=ring_timeout,
                        on_progress=life.progress,
                        on_early_media=on_early_media,
                    )
                except CallFailed as exc:
                    ending.sip_status, ending.sip_reason = exc.status, exc.reason
                    known = _known(exc, ring_timeout)
                    ending.error = failure_reason(exc.status, exc.reason, known)
                    log.info("call %s to %s: %s", record.id, record.number, ending.error)
                    screen_failed = bool(early) and services.who.enabled
                except TrunkError as exc:
                    ending.error, ending.trunk_error = f"{TRUNK_ERROR_PREFIX}{exc}", True
                    log.warning("call %s to %s: %s", record.id, record.number, exc)
                else:
                    await _talk(
                        services, leg, life, loaded, said, ending,
                        control=control, early=early[0] if early else None,
                    )  # fmt: skip
            if operator.cancelled_caught:
                log.info("call %s to %s: %s", record.id, record.number, OPERATOR_HANGUP)
                if leg is None:  # the trunk CANCELled the INVITE
                    ending.sip_status, ending.sip_reason = 487, "Request Terminated"
                    ending.error = f"{OPERATOR_HANGUP} while it rang"
                else:
                    ending.hangup_by, ending.error = "robot", OPERATOR_HANGUP
            if screen_failed:
                # outside the operator's scope: the call has failed already, and a hangup
                # now must not file it as a CANCEL while it rang in place of its answer
                await _screen_failed(services, life, loaded, early[0])
            if leg is None and early and services.recordings_dir is not None:
                await _record_early(services, life, early[0])
            nursery.cancel_scope.cancel()  # the filing loop and early media
        ending.reached = True
    except Exception as exc:
        _crashed(exc, record, ending)
    finally:
        await _close(leg, life, ending)
    return record


async def answer_call(
    services: CallServices,
    call: IncomingCall,
    record: CallRecord,
    loaded: LoadedScript,
    *,
    variables: Mapping[str, str] | None = None,
    answer_after: float = 0.0,
    control: CallControl | None = None,
) -> CallRecord:
    """Answer an inbound ``call`` after ``answer_after`` seconds of ringing and run it as
    ``place_call`` runs an answered one; returns the filed record.

    The record must be new (``dialing``, ``direction`` inbound, ``number`` the
    caller); it is ``ringing`` while the caller hears the ring, and final on
    return. A caller who hangs up while it rings files it ``failed`` with 487
    and ``hangup_by`` callee. Cancelled before the answer (drain deadline,
    shutdown), the call is refused with 503 so the caller is not left ringing.
    """
    life = CallLifecycle(record, storage=services.storage, events=services.events)
    leg: CallLeg | None = None
    ending = _Ending()
    said = call_variables(loaded.script, variables or {})
    try:
        await life.begin()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(life.keep_filed)
            nursery.start_soon(_prerender, services, loaded, said)  # while it rings
            life.progress(RINGING_STATUS, "Ringing")  # the trunk rang the caller already
            with trio.CancelScope() as operator:
                if control is not None:
                    control.bind(operator)
                try:
                    with trio.move_on_after(answer_after):
                        await call.cancelled.wait()
                    leg = await call.answer()
                except CallFailed as exc:
                    ending.sip_status, ending.sip_reason = exc.status, exc.reason
                    detail = CALLER_GAVE_UP if call.cancelled.is_set() else None
                    ending.error = failure_reason(exc.status, exc.reason, detail)
                    if call.cancelled.is_set():
                        life.hangup("callee")
                    log.info("call %s from %s: %s", record.id, record.number, ending.error)
                else:
                    await _talk(services, leg, life, loaded, said, ending, control=control)
            if operator.cancelled_caught:  # the operator refused it ringing, or hung up
                if leg is None:
                    ending.error = f"{OPERATOR_HANGUP} while it rang"
                else:
                    ending.hangup_by, ending.error = "robot", OPERATOR_HANGUP
            nursery.cancel_scope.cancel()  # the filing loop
        ending.reached = True
    except Exception as exc:
        _crashed(exc, record, ending)
    finally:
        if leg is None:  # never answered: a caller left ringing would wait for nothing
            with trio.CancelScope(shield=True), trio.move_on_after(HANGUP_GRACE):
                try:
                    await call.reject(UNAVAILABLE_STATUS)
                except Exception:
                    log.exception("call %s: refusing the inbound call failed", record.id)
        await _close(leg, life, ending)
    return record


async def _talk(
    services: CallServices,
    leg: CallLeg,
    life: CallLifecycle,
    loaded: LoadedScript,
    said: Mapping[str, str],
    ending: _Ending,
    *,
    control: CallControl | None = None,
    early: EarlyAudio | None = None,
) -> None:
    """An answered call, outbound or inbound, from the answer until it is hung up."""
    record = life.record
    life.answered(leg.codec.name)
    log.info("call %s with %s answered (%s)", record.id, record.number, leg.codec.name)
    with trio.move_on_after(services.call.max_duration) as too_long:
        await _converse(services, leg, life, loaded, said, control=control, early=early)
    if too_long.cancelled_caught:
        max_duration = services.call.max_duration
        ending.error = f"hung up after call.max_duration ({max_duration} s)"
    if not leg.ended.is_set():
        # the BYE transaction lives on in the trunk; a callee that never answers
        # it must not hold back the record for Timer F (32 s)
        with trio.move_on_after(BYE_WAIT):
            await leg.hangup()
    ending.hangup_by = leg.ended_by or "robot"


def _crashed(exc: Exception, record: CallRecord, ending: _Ending) -> None:
    """A call that failed on our side (a bug, a provider's error): logged, and said so."""
    log.exception("call %s with %s failed", record.id, record.number)
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # the nursery's wrapping says nothing to an operator
    ending.reached, ending.error = True, f"{type(exc).__name__}: {exc}"


async def _close(leg: CallLeg | None, life: CallLifecycle, ending: _Ending) -> None:
    """Hang up a leg still up and file the call's end, shielded and bounded: it runs even
    when the call was cancelled (drain deadline, shutdown)."""
    record = life.record
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
        if leg is not None:
            try:
                record.media_quality = leg_media_quality(leg)
            except Exception:
                log.exception("call %s: cannot read the media figures", record.id)
        await life.end(
            sip_status=ending.sip_status,
            sip_reason=ending.sip_reason,
            error=ending.error,
            trunk_error=ending.trunk_error,
            hangup_by=ending.hangup_by,
            interrupted=not ending.reached,
        )
        log.info(
            "call %s with %s %s (%s): sip %s, grade %s, hung up by %s%s",
            record.id, record.number, record.status, record.outcome, record.sip_status,
            record.grade, record.hangup_by or "-",
            f", error: {record.error}" if record.error else "",
        )  # fmt: skip


def _known(failure: CallFailed, ring_timeout: float) -> str | None:
    """What the trunk told beside a final answer: the reason it gave for refusing the
    target itself (the ``BadTarget`` it raised ``CallFailed`` from), or, for 408, that
    nobody answered within the ring timeout."""
    if isinstance(failure.__cause__, WaihuError):
        return str(failure.__cause__)
    if failure.status == RING_TIMEOUT_STATUS:
        return f"no answer within {ring_timeout:g} s"
    return None


async def _record_early(services: CallServices, life: CallLifecycle, early: EarlyAudio) -> None:
    """File the early media of a call that was never answered as its recording (the
    announcement a carrier played before failing it), callee left, robot silent."""
    if early.seconds == 0:
        return
    record = life.record
    assert services.recordings_dir is not None
    day = time.strftime("%Y%m%d", time.localtime(record.created_at))
    recorder = StereoRecorder(services.recordings_dir / day / f"{record.id}.wav", early.sample_rate)
    pcm = early.pcm()
    recorder.callee(pcm)
    recorder.robot(np.zeros_like(pcm))
    with trio.CancelScope(shield=True):
        try:
            life.recorded(str(await recorder.save()))
        except OSError as exc:
            log.error("call %s: cannot save its early media %s: %s", record.id, recorder.path, exc)


async def _screen_failed(
    services: CallServices, life: CallLifecycle, loaded: LoadedScript, early: EarlyAudio
) -> None:
    """A call that failed after early media: an announcement (or voicemail) heard there files
    its outcome and evidence instead of what the SIP answer means.

    Error handling: a recogniser that fails or is slow is logged by ``hear_early``,
    which then decides on what it has (the tones); nothing here fails the filing.
    """
    if early.seconds == 0:
        return
    record = life.record
    verdict = await hear_early(early.pcm(), early.sample_rate, services.asr, loaded.script.language)
    outcome = outcome_of(verdict)
    log.info(
        "call %s to %s: early media: %s (%s)", record.id, record.number, verdict.kind,
        verdict.evidence,
    )  # fmt: skip
    if outcome is not None:
        life.screened(verdict.kind, f"early media: {verdict.evidence}", outcome)


async def _screen_early(
    services: CallServices, screen: AnswerScreen, loaded: LoadedScript, early: EarlyAudio
) -> None:
    """An answered call's early media is heard first: a machine there decides the screen."""
    if early.seconds == 0:
        return
    verdict = await hear_early(
        early.pcm(),
        early.sample_rate,
        services.asr,
        loaded.script.language,
        timeout=services.who.decide_within,
    )
    screen.early(verdict)


async def _until_machine(engine: DialogueEngine, screen: AnswerScreen | None) -> Any:
    """Run the dialogue; None as soon as the screen says a machine answered (the dialogue
    is cancelled: nothing more is said to it)."""
    if screen is None:
        return await engine.run()
    result = None
    async with trio.open_nursery() as race:

        async def converse() -> None:
            nonlocal result
            result = await engine.run()
            race.cancel_scope.cancel()

        async def watch() -> None:
            await screen.machine_found.wait()  # at the verdict, or an unsure call later
            race.cancel_scope.cancel()

        race.start_soon(converse)
        race.start_soon(watch)
    return result


async def _file_verdict(life: CallLifecycle, screen: AnswerScreen) -> None:
    """File who answered once the screen decided, and again if an unsure call proves a
    machine while the screen still listens (a task of the call)."""
    await screen.decided.wait()
    verdict = screen.verdict
    assert verdict is not None  # decided is set with it
    life.screened(verdict.kind, verdict.evidence, outcome_of(verdict))
    log.info(
        "call %s with %s: answered by %s (%s) %.1f s after the answer",
        life.record.id, life.record.number, verdict.kind, verdict.evidence,
        screen.decided_at or 0.0,
    )  # fmt: skip
    if screen.machine:
        return
    with trio.move_on_at(screen.listen_until):
        await screen.machine_found.wait()
        verdict = screen.verdict
        assert verdict is not None
        life.screened(verdict.kind, verdict.evidence, outcome_of(verdict))
        log.info(
            "call %s with %s: answered by %s after all (%s)",
            life.record.id, life.record.number, verdict.kind, verdict.evidence,
        )  # fmt: skip


async def _machine_answered(
    services: CallServices,
    media: CallMedia,
    screen: AnswerScreen,
    life: CallLifecycle,
    language: str,
) -> None:
    """A machine answered: stop the greeting, then hang up or leave the message.

    Error handling: a message that cannot be made (TTS failing, a bad WAV) is
    logged and the call is hung up without it.
    """
    media.player.stop()
    verdict = screen.verdict
    assert verdict is not None
    who = services.who
    outcome = outcome_of(verdict) or ""
    if who.action(outcome) != "message":
        return
    screen.listen_for_message_cue(silence=who.message_silence)
    with trio.move_on_after(who.message_wait):
        await screen.cue.wait()
    rate = media.leg.codec.clock_rate
    try:
        if who.message_recording is not None:
            audio = await trio.to_thread.run_sync(load_prompt, who.message_recording, rate)
        elif services.speech is not None:
            audio = await services.speech.speak(
                who.message_text, language=language, sample_rate=rate
            )
        else:  # the config check refuses this; never reached
            return
    except (PromptError, ProviderError) as exc:
        log.error("call %s: cannot leave the message: %s", life.record.id, exc)
        return
    started = time.time()
    playback = media.player.play(audio, interruptible=False, label=MESSAGE_NODE)
    await playback.done.wait()
    text = who.message_text or f"(recording {who.message_recording})"
    life.turn(Turn("robot", text, MESSAGE_NODE, started_at=started, ended_at=time.time()))


async def _converse(
    services: CallServices,
    leg: CallLeg,
    life: CallLifecycle,
    loaded: LoadedScript,
    variables: Mapping[str, str],
    *,
    control: CallControl | None = None,
    early: EarlyAudio | None = None,
) -> None:
    """Talk with the callee until an end node finished or the callee hung up.

    ``early``: audio heard before the answer, which the recording starts with.
    """
    record = life.record
    mc = services.media
    endpointer = Endpointer(
        sample_rate=leg.codec.clock_rate,
        aggressiveness=mc.vad_aggressiveness,
        start_ms=mc.speech_start_ms,
        end_silence_ms=mc.end_silence_ms,
        preroll_ms=mc.preroll_ms,
        max_utterance_ms=mc.max_utterance_ms,
        detector=services.vad.open_detector(sample_rate=leg.codec.clock_rate)
        if services.vad is not None
        else None,
    )
    recorder = None
    if services.recordings_dir is not None:
        day = time.strftime("%Y%m%d", time.localtime(record.answered_at))
        path = services.recordings_dir / day / f"{record.id}.wav"
        recorder = StereoRecorder(path, leg.codec.clock_rate)
        if early is not None and early.seconds > 0 and early.sample_rate == leg.codec.clock_rate:
            pcm = early.pcm()
            recorder.callee(pcm)
            recorder.robot(np.zeros_like(pcm))
        life.recorded(str(path))
    media = CallMedia(
        leg,
        endpointer=endpointer,
        recorder=recorder,
        jitter_depth=mc.jitter_depth,
        barge_in=mc.barge_in_settings(loaded.script.language),
        echo_guard=mc.echo_guard,
    )
    screen: AnswerScreen | None = None
    if services.who.enabled and record.direction == "outbound":  # a caller calling us is a person
        screen = AnswerScreen(
            loaded.script.language,
            sample_rate=leg.codec.clock_rate,
            decide_within=services.who.decide_within,
            listen_within=services.who.listen_seconds,
        )
        media.on_incoming = screen.feed
    stream = services.asr.open_stream(sample_rate=leg.codec.clock_rate)
    inbox_send, inbox = trio.open_memory_channel[EngineEvent](ENGINE_INBOX)
    script = loaded.script

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

    engine: DialogueEngine | None = None

    def on_step(step: Step) -> None:
        log.debug(
            "call %s %s at %s: %s → %s",
            record.id, step.event, step.decision.node if step.decision else step.node,
            " ".join(step.chain) or "-", step.node,
        )  # fmt: skip

    try:
        async with trio.open_nursery() as nursery:
            speaker = VoiceSpeaker(
                media.player,
                loaded,
                services.speech,
                nursery,
                sample_rate=leg.codec.clock_rate,
            )
            engine = dialogue = DialogueEngine(
                script,
                loaded.classifier,
                speaker,
                inbox,
                on_turn=on_turn,
                on_node=life.node,
                on_step=on_step,
                variables=variables,
                min_confidence=services.call.min_confidence,
                now=time.time,
                recovery_ms=mc.barge_in_recovery_ms,
            )
            nursery.start_soon(media.receive_loop)
            services.clock.add(media)
            listener = Listener(
                media, stream, inbox_send, lambda: script.nodes[dialogue.node], life,
                complete_answer=answer_judge(script, loaded.classifier),
                turn_windows=lambda n: node_windows(n, mc.end_silence_ms, mc.quick_end_ms),
                screen=screen,
            )  # fmt: skip
            nursery.start_soon(listener.run)
            if screen is not None:
                nursery.start_soon(screen.run)
                nursery.start_soon(_file_verdict, life, screen)
                if early is not None:
                    nursery.start_soon(_screen_early, services, screen, loaded, early)

            async def watch_hangup() -> None:
                await leg.ended.wait()
                life.hangup(leg.ended_by or "callee")
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_hangup)
            signalled = leg_dtmf(leg)
            if signalled is not None:
                nursery.start_soon(_signalled_digits, signalled, inbox_send)
            if control is not None:
                control.answered(lambda digits: _send_dtmf(media, leg, digits))
            ending = await _until_machine(engine, screen)
            if ending is None:  # a machine answered: no conversation, nothing to grade
                assert screen is not None
                await _machine_answered(services, media, screen, life, script.language)
                nursery.cancel_scope.cancel()
                return
            wanted_transfer = False

            def settled(result: TransferResult) -> None:
                life.transferred(result)
                if result.outcome == "transferred":  # graded now: the rest is the agent's talk
                    tags = (*ending.tags, TRANSFER_TAG)
                    life.graded(ending.grade, tags, ending.grade_reason or None)

            while ending.transfer is not None:  # hand the call to a person (waihu.transfer)
                wanted_transfer = True
                log.info(
                    "call %s: the script transfers to %r at %s",
                    record.id,
                    ending.transfer,
                    ending.node,
                )
                handover = TransferCall(
                    record=record,
                    leg=leg,
                    media=media,
                    clock=services.clock,
                    speech=services.speech,
                    language=script.language,
                    fields=whisper_fields(
                        record, dialogue.variables, grade=ending.grade, node=ending.node
                    ),
                )
                done = await carry_out(
                    services.transfers, ending.transfer, handover, on_settled=settled
                )
                if done.outcome == "transferred":
                    break
                ending = await engine.transfer_failed()  # the script's on_transfer_failed
            tags = ending.tags
            if ending.dnc:
                await _opt_out(services, record)
                tags = (*tags, DNC_TAG)
            if wanted_transfer:
                tags = (*tags, TRANSFER_TAG)
            life.graded(ending.grade, tags, ending.grade_reason or None)
            nursery.cancel_scope.cancel()
    finally:
        if control is not None:
            control.answered(None)
        services.clock.remove(media)
        media.close()
        log.debug("call %s media: %s", record.id, media.stats)
        stream.close()
        machine = screen is not None and screen.machine
        if screen is not None and record.answered_by is None:  # over before it was filed
            verdict = screen.verdict or Verdict("unsure", None, UNDECIDED)
            life.screened(verdict.kind, verdict.evidence, outcome_of(verdict))
        if engine is not None:
            engine.settle_turns()
            if record.grade is None and not machine:  # the callee hung up, or the call was cut off
                verdict = engine.verdict(hangup_by=leg.ended_by or "robot")
                tags = verdict.tags
                if engine.dnc:  # asked never to be called again, then hung up: it stands
                    with trio.CancelScope(shield=True), trio.move_on_after(HANGUP_GRACE):
                        await _opt_out(services, record)
                    tags = (*tags, DNC_TAG)
                life.graded(verdict.grade, tags, verdict.reason or None)
        if record.grade is None and not machine:  # a machine's call is filed ungraded
            life.graded(script.default_grade)
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


async def _signalled_digits(
    receive: Callable[[], Awaitable[str]], inbox: trio.MemorySendChannel[EngineEvent]
) -> None:
    """Digits the far end signalled outside RTP (SIP INFO) go to the engine as key presses."""
    while True:
        await inbox.send(Dtmf(await receive()))


async def _send_dtmf(media: CallMedia, leg: CallLeg, digits: str) -> None:
    """Send digits: RFC 4733 in the call's RTP stream when the far end negotiated
    telephone-event, else the trunk's out-of-band way (SIP INFO)."""
    if media.dtmf is not None:
        await media.send_dtmf(digits).wait()
        return
    if not digits or any(d.upper() not in DTMF_EVENTS for d in digits):
        raise ValueError(f"{digits!r} is not a string of DTMF digits ({DTMF_EVENTS})")
    await leg.send_dtmf(digits)


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
