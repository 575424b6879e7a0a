"""Handing a call to a person: the script's ``transfer = "NAME"``, carried out.

``carry_out`` looks ``NAME`` up in the daemon's ``[transfer.NAME]`` tables
(``waihu.config.TransferConfig``) and does what its ``mode`` says:

- ``bridge`` (the default): the robot dials the agent's ``target`` on a
  second leg through ``trunk`` (default: the call's own), taking one of that
  trunk's lines like any call; while it rings the callee hears ring-back
  (``ringback``: 450 Hz, 1 s on, 4 s off, the Chinese cadence). Once
  the agent answers, a ``waihu.media.bridge.Bridge`` replaces the call's
  media on the media clock: the agent first hears the ``whisper`` (the grade,
  the callee's last reply…, spoken by the daemon's TTS), then the two legs
  hear each other, and the call's recording goes on. The bridge holds until
  either side hangs up; then the other leg is hung up too.
- ``refer``: a blind transfer — the leg's ``transfer`` (SIP REFER, RFC 3515,
  followed through its NOTIFYs) hands the callee to ``target``; the robot
  then leaves the call.

The outcome is a ``waihu.api.TransferResult``, handed to ``on_settled`` the
moment it is known — when the agent answers, not when the bridged talk ends —
so the record and the ``transfer`` event show it while the people talk.
``outcome_of`` maps the agent leg's final answer: 486/600 → ``agent_busy``
(so is a trunk with every line in use), 408/480/487 → ``no_answer``, anything
else → ``failed``. After any outcome but ``transferred`` the call is still
the robot's, and the dialogue engine goes on (``DialogueEngine.transfer_failed``).

Error handling: nothing here raises for a transfer that did not work — an
unknown ``NAME``, a trunk that is not running or cannot REFER, an agent that
is busy, does not answer or cannot be reached, a whisper that cannot be
synthesised (the agent is joined without it) — each becomes an outcome with
a one-line ``detail`` and is logged with the call id. If the call is
cancelled meanwhile (the callee hung up while the agent rang, the daemon is
draining), the outcome ``failed`` is settled before the cancellation goes
on, and the agent's leg — ringing or answered — is cancelled or hung up
under a shielded, bounded scope.

What it is not: the SIP side (the trunk's ``dial``, the leg's ``transfer``),
the media relay (``waihu.media.bridge``), or the script's decision to
transfer (``waihu.dialog.engine``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import attrs
import numpy as np
import trio

from waihu.api import (
    CallFailed,
    CallLeg,
    CallRecord,
    ProviderError,
    TransferMode,
    TransferOutcome,
    TransferResult,
    Trunk,
    WaihuError,
    check_target,
)
from waihu.config import TransferConfig
from waihu.dialog.library import SpeechCache, fill
from waihu.media.bridge import Bridge, BridgeSide
from waihu.media.call_media import CallMedia
from waihu.media.media_clock import MediaClock
from waihu.media.prompt_player import Playback

__all__ = [
    "BUSY_STATUSES",
    "NO_ANSWER_STATUSES",
    "HeldLine",
    "TransferCall",
    "Transfers",
    "carry_out",
    "outcome_of",
    "ringback",
    "whisper_fields",
]

log = logging.getLogger("waihu.transfer")

BUSY_STATUSES = frozenset({486, 600})  # Busy Here, Busy Everywhere
NO_ANSWER_STATUSES = frozenset({408, 480, 487})  # ring timeout, unavailable, cancelled
ANSWERED_STATUS = 200  # filed as the status of a transfer the agent answered
HANGUP_GRACE = 5.0  # seconds to cancel or hang up the agent's leg once the transfer is over
CALL_ENDED = "the call ended before the agent answered"
# ring-back while the agent's phone rings: the Chinese tone (450 Hz, 1 s on, 4 s off)
RINGBACK_HZ = 450.0
RINGBACK_ON_S = 1.0
RINGBACK_PERIOD_S = 5.0
RINGBACK_LEVEL = 0.1  # of full scale: about −20 dBFS, a tone, not a shout
INT16_FULL_SCALE = 32767


def ringback(sample_rate: int, seconds: float) -> np.ndarray:
    """Ring-back tone for ``seconds`` (whole cadences, at least one) at ``sample_rate``."""
    period = round(RINGBACK_PERIOD_S * sample_rate)
    on = round(RINGBACK_ON_S * sample_rate)
    t = np.arange(on) / sample_rate
    cadence = np.zeros(period, dtype=np.int16)
    cadence[:on] = RINGBACK_LEVEL * INT16_FULL_SCALE * np.sin(2 * np.pi * RINGBACK_HZ * t)
    return np.tile(cadence, max(1, math.ceil(seconds / RINGBACK_PERIOD_S)))


def outcome_of(status: int) -> TransferOutcome:
    """The outcome of a transfer whose agent leg got the final answer ``status``."""
    if 200 <= status < 300:
        return "transferred"
    if status in BUSY_STATUSES:
        return "agent_busy"
    if status in NO_ANSWER_STATUSES:
        return "no_answer"
    return "failed"


class HeldLine(Protocol):
    """A line of a trunk held for the agent's leg (``waihu.dispatcher.Line``)."""

    def release(self) -> None: ...


@attrs.frozen
class Transfers:
    """What the daemon gives every call for transfers.

    ``config`` is ``[transfer.NAME]`` by name; ``trunk`` finds a running trunk
    by name (None: not running); ``take_line`` holds a line of a trunk for
    the agent's leg now or raises ``WaihuError`` saying none is free (None:
    lines are not counted); ``caller_id`` is ``[call] caller_id``.
    """

    config: Mapping[str, TransferConfig]
    trunk: Callable[[str], Trunk | None]
    take_line: Callable[[str], HeldLine] | None = None
    caller_id: str | None = None


@attrs.frozen
class TransferCall:
    """The call being handed over: its record, leg and media, and what fills the whisper."""

    record: CallRecord
    leg: CallLeg
    media: CallMedia
    clock: MediaClock
    speech: SpeechCache | None
    language: str
    fields: Mapping[str, str]  # ``whisper_fields``


def whisper_fields(
    record: CallRecord, variables: Mapping[str, str], *, grade: str, node: str
) -> dict[str, str]:
    """The fields a whisper may use: the call's variables, then ``grade``, ``last_reply``
    (the callee's last words, "" if none), ``number`` (the callee's) and ``node``."""
    replies = [t.text for t in record.turns if t.speaker == "callee" and t.text.strip()]
    return {
        **variables,
        "grade": grade,
        "last_reply": replies[-1] if replies else "",
        "number": record.number,
        "node": node,
    }


async def carry_out(
    transfers: Transfers | None,
    name: str,
    call: TransferCall,
    *,
    on_settled: Callable[[TransferResult], None],
) -> TransferResult:
    """Hand ``call`` to the person ``[transfer.NAME]`` names; the outcome.

    ``on_settled`` gets the outcome once it is known (once per call of this
    function). A bridged transfer that succeeded returns only when the
    bridged talk is over (either side hung up); the caller then ends the call.
    """
    started = time.time()
    config = None if transfers is None else transfers.config.get(name)
    if transfers is None or config is None:
        result = TransferResult(
            target=name,
            mode="bridge",
            outcome="failed",
            detail=f"no [transfer.{name}] in the daemon's configuration",
            started_at=started,
            ended_at=started,
        )
        log.error("call %s: cannot transfer: %s", call.record.id, result.detail)
        on_settled(result)
        return result
    settle = _Settle(call.record.id, config, started, on_settled)
    try:
        if config.mode == "refer":
            await _refer(call, config, settle)
        else:
            await _bridge(transfers, call, config, settle)
    finally:
        if settle.result is None:  # cancelled (the callee hung up, the daemon drains)
            settle("failed", detail=CALL_ENDED)
    assert settle.result is not None
    return settle.result


class _Settle:
    """Makes the outcome once: logs it, hands it to ``on_settled`` and keeps it."""

    def __init__(
        self,
        call_id: str,
        config: TransferConfig,
        started: float,
        on_settled: Callable[[TransferResult], None],
    ) -> None:
        self.call_id = call_id
        self.config = config
        self.started = started
        self.on_settled = on_settled
        self.result: TransferResult | None = None

    def __call__(
        self, outcome: TransferOutcome, *, status: int | None = None, detail: str = ""
    ) -> TransferResult:
        mode: TransferMode = "refer" if self.config.mode == "refer" else "bridge"
        self.result = TransferResult(
            target=self.config.target,
            mode=mode,
            outcome=outcome,
            status=status,
            detail=detail,
            started_at=self.started,
            ended_at=time.time(),
        )
        log.info(
            "call %s: transfer to %s (%s): %s%s",
            self.call_id, self.config.target, mode, outcome, f", {detail}" if detail else "",
        )  # fmt: skip
        self.on_settled(self.result)
        return self.result


async def _refer(call: TransferCall, config: TransferConfig, settle: _Settle) -> None:
    """A blind transfer: the leg's REFER, followed to its outcome."""
    try:
        result = await call.leg.transfer(config.target)
    except NotImplementedError:
        settle("failed", detail=f"trunk {call.record.trunk} cannot transfer with REFER")
        return
    except WaihuError as exc:
        settle("failed", detail=f"REFER failed: {exc}")
        return
    settle(result.outcome, status=result.status, detail=result.detail)


async def _bridge(
    transfers: Transfers, call: TransferCall, config: TransferConfig, settle: _Settle
) -> None:
    """A bridged transfer: dial the agent, whisper, relay until one side hangs up."""
    trunk_name = config.trunk or call.record.trunk
    trunk = transfers.trunk(trunk_name)
    if trunk is None:
        settle("failed", detail=f"trunk {trunk_name} is not running")
        return
    line: HeldLine | None = None
    if transfers.take_line is not None:
        try:
            line = transfers.take_line(trunk_name)
        except WaihuError as exc:
            settle("agent_busy", detail=f"no line for the agent: {exc}")
            return
    agent: CallLeg | None = None
    ringing: Playback | None = None
    try:
        whisper = await _whisper_audio(call, config)
        dialled = time.monotonic()
        # the callee hears ring-back while the agent's phone rings, not a dead line
        ringing = call.media.player.play(
            ringback(call.leg.codec.clock_rate, config.ring_timeout), label="ring-back"
        )
        try:
            target = check_target(trunk, config.target)  # as the trunk will dial it
            agent = await trunk.dial(
                target,
                caller_id=config.caller_id or transfers.caller_id,
                ring_timeout=config.ring_timeout,
            )
        except CallFailed as exc:
            settle(outcome_of(exc.status), status=exc.status, detail=f"agent: {exc}")
            return
        except WaihuError as exc:  # BadTarget, TrunkError: the agent cannot be reached
            settle("failed", detail=f"agent unreachable: {exc}")
            return
        if call.leg.ended.is_set():
            settle("failed", detail=CALL_ENDED)
            return
        await _join(call, agent, whisper, settle, time.monotonic() - dialled)
    finally:
        if ringing is not None and not ringing.done.is_set():
            call.media.player.stop()  # the fallback, if any, speaks next
        with trio.CancelScope(shield=True), trio.move_on_after(HANGUP_GRACE):
            if agent is not None and not agent.ended.is_set():
                try:
                    await agent.hangup()
                except Exception:
                    log.exception("call %s: hanging up the agent's leg failed", call.record.id)
        if line is not None:
            line.release()


async def _join(
    call: TransferCall,
    agent: CallLeg,
    whisper: np.ndarray | None,
    settle: _Settle,
    ring_seconds: float,
) -> None:
    """The agent answered: the bridge takes over the call's media until a side hangs up."""
    callee_side = BridgeSide(call.leg, jitter=call.media.jitter, sender=call.media.sender)
    try:
        # the agent's stream gets the jitter depth the daemon gives every call ([media])
        agent_side = BridgeSide(agent, jitter_depth=call.media.jitter.depth)
        bridge = Bridge(callee_side, agent_side, recorder=call.media.recorder)
    except ValueError as exc:
        settle("failed", status=ANSWERED_STATUS, detail=str(exc))
        return
    if whisper is not None:
        bridge.whisper.play(whisper, interruptible=False, label="whisper")
    settle(
        "transferred",
        status=ANSWERED_STATUS,
        detail=f"agent answered after {ring_seconds:.1f} s",
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.agent.receive_loop)
        call.clock.remove(call.media)
        call.clock.add(bridge)
        try:

            async def until(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until, call.leg.ended)
            nursery.start_soon(until, agent.ended)
            await trio.sleep_forever()
        finally:
            call.clock.remove(bridge)
    who = "the callee" if call.leg.ended.is_set() else "the agent"
    log.info("call %s: bridged talk over: %s hung up", call.record.id, who)


async def _whisper_audio(call: TransferCall, config: TransferConfig) -> np.ndarray | None:
    """The whisper, filled in and synthesised; None when there is none or it cannot be said."""
    if not config.whisper.strip():
        return None
    text = fill(config.whisper, call.fields)
    if call.speech is None:
        log.warning("call %s: no [call] tts to say the whisper %r", call.record.id, text)
        return None
    try:
        return await call.speech.speak(
            text, language=call.language, sample_rate=call.leg.codec.clock_rate
        )
    except ProviderError as exc:
        log.warning(
            "call %s: the whisper cannot be said, joining without it: %s", call.record.id, exc
        )
        return None
