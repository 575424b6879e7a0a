"""End to end: a real waihud hands a call to a person, over real SIP peers on 127.0.0.1.

The script asks "shall I put you through to an agent?"; the callee says "네"
(recognised by the real vosk model), and the script's ``transfer = "agent"``
sends the call to ``[transfer.agent]`` through a second trunk:

- bridged, the agent a baresip softphone answering at once. The callee is a
  baresip too (not sipp), so that what *it* heard can be checked as well:
  each phone's voice is a tone of its own after its first words (the callee
  1 kHz, the agent 600 Hz), and each phone's recorder shows what reached its
  ear. The agent must hear the whisper (speech) before the callee's tone; the
  callee must hear the agent's tone; waihud's own recording must hold both
  (callee left, what the callee heard right); the record says ``transferred``
  and ``waihuctl call show`` (the real client process) prints it;
- an agent who is busy (sipp ``busy.xml``): the script's ``on_transfer_failed``
  is spoken to the callee (a sipp UAS), the outcome is ``agent_busy`` (486);
- an agent who does not answer (sipp ``no_answer.xml``) within the transfer's
  ``ring_timeout``: CANCEL, the 487 ACKed, outcome ``no_answer``.

Speech is espeak-ng's (the script's lines and the whisper, through the
daemon's ``[call] tts``). Timings are generous: the machine is shared.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.testing.baresip import baresip_callee
from waihu.testing.daemon import DaemonUnderTest, running_waihud, write_config
from waihu.testing.sipp import Play, SippPeer, SippResult, sipp_peer
from waihu.testing.speech import CALL_RATE, read_wav_pcm, synthesize, to_ulaw, write_wav_pcm

pytestmark = pytest.mark.e2e

TEST_TIMEOUT = 240.0
CALL_TIMEOUT = 150.0
LOG_TAIL = 6000
CALLEE_TONE_HZ = 1000.0  # the callee's voice once it has said yes
AGENT_TONE_HZ = 600.0  # the agent's voice
TONE_LEVEL = 6000
YES_AT_S = 4.0  # the callee says "네" this long after answering (the question is ~2 s)
CALLEE_TONE_AT_S = 22.0  # and starts its tone then: after the agent has been joined
CALLEE_TONE_S = 20.0
AGENT_SILENT_S = 6.0  # the agent listens to the whisper first
AGENT_TONE_S = 30.0  # then talks this long, and hangs up
WINDOW = CALL_RATE // 10  # 100 ms analysis windows
SPEECH_LEVEL = 300  # mean |sample| of a window with something in it
TONE_SHARE = 0.6  # a window "is" a tone when this share of its energy is at that frequency
MIN_TONE_S = 5.0  # at least this much of the other side's tone must get through

SCRIPT = """
[script]
name = "transfer-ko"
language = "ko"
start = "offer"
priority = ["affirm", "deny", "default"]
silence_timeout = 15.0
on_transfer_failed = "sorry"

[intents.affirm]
keywords = ["네", "예"]

[intents.deny]
keywords = ["아니요"]

[nodes.offer]
say = [{ text = "상담원을 연결해 드릴까요?" }]
on = { affirm = "connect", deny = "bye", default = "bye" }

[nodes.connect]
say = [{ text = "연결해 드리겠습니다." }]
end = true
grade = "A"
transfer = "agent"

[nodes.sorry]
say = [{ text = "지금은 상담원이 받을 수 없습니다. 다시 연락드리겠습니다." }]
end = true
grade = "B"
tags = ["callback"]

[nodes.bye]
say = [{ text = "감사합니다." }]
end = true
grade = "C"
"""
WHISPER = "{grade} 등급 고객입니다. 방금 {last_reply} 라고 했습니다."


def transfer_table(target: str, *, ring_timeout: float = 30.0) -> str:
    return "\n".join(
        [
            "[transfer.agent]",
            f"target = {json.dumps(target)}",
            'trunk = "agents"',
            f"ring_timeout = {ring_timeout}",
            f"whisper = {json.dumps(WHISPER, ensure_ascii=False)}",
            "",
        ]
    )


def setup(tmp_path: Path, callee: str, agent: str, target: str, **table: float) -> Path:
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / "transfer-ko.toml").write_text(SCRIPT, encoding="utf-8")
    return write_config(
        tmp_path / "waihud",
        proxy={"loopback": callee, "agents": agent},
        scripts_dir=scripts,
        tts=True,
        extra=transfer_table(target, **table),
    )


def tone(frequency: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * CALL_RATE)) / CALL_RATE
    return (TONE_LEVEL * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * CALL_RATE), np.int16)


def tone_share(window: np.ndarray, frequency: float) -> float:
    """The share of the window's energy at ``frequency`` (a single-bin DFT)."""
    x = window.astype(float)
    total = float(np.sum(x * x))
    if total == 0.0:
        return 0.0
    basis = np.exp(-2j * math.pi * frequency * np.arange(x.size) / CALL_RATE)
    return 2 * abs(np.dot(x, basis)) ** 2 / x.size / total


def windows(audio: np.ndarray) -> list[np.ndarray]:
    return [audio[i : i + WINDOW] for i in range(0, audio.size - WINDOW + 1, WINDOW)]


def toned(audio: np.ndarray, frequency: float) -> list[int]:
    """Indexes of the 100 ms windows in which ``frequency`` dominates."""
    return [
        i
        for i, w in enumerate(windows(audio))
        if np.abs(w.astype(float)).mean() > SPEECH_LEVEL and tone_share(w, frequency) > TONE_SHARE
    ]


def sounding(audio: np.ndarray) -> list[int]:
    return [
        i for i, w in enumerate(windows(audio)) if np.abs(w.astype(float)).mean() > SPEECH_LEVEL
    ]


def robot_nodes(record: dict) -> list[str]:
    return [t["node"] for t in record["turns"] if t["speaker"] == "robot"]


def report(daemon: DaemonUnderTest, *peers: object) -> str:
    parts = [f"waihud's log:\n{daemon.log_text()[-LOG_TAIL:]}"]
    for peer in peers:
        if isinstance(peer, SippPeer):
            status = peer.process.returncode
            parts.append(SippResult(-1 if status is None else status, peer.logs()).report())
        else:
            parts.append(peer.report())  # type: ignore[attr-defined]
    return "\n\n".join(parts)


def call_show(daemon: DaemonUnderTest, call_id: str) -> str:
    """``waihuctl call show ID``, run as the real client process."""
    done = subprocess.run(
        [sys.executable, "-m", "waihu.control.client", "--socket", str(daemon.socket),
         "call", "show", call_id],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_bridged_transfer_whispers_then_joins_callee_and_agent(tmp_path: Path) -> None:
    yes = read_wav_pcm(synthesize("네"))
    callee_voice = np.concatenate(
        [yes, silence(CALLEE_TONE_AT_S - YES_AT_S - yes.size / CALL_RATE),
         tone(CALLEE_TONE_HZ, CALLEE_TONE_S)]
    )  # fmt: skip
    agent_voice = np.concatenate([silence(AGENT_SILENT_S), tone(AGENT_TONE_HZ, AGENT_TONE_S)])
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            baresip_callee(
                tmp_path / "callee",
                speech_wav=write_wav_pcm(tmp_path / "callee.wav", callee_voice),
                lead_silence_s=YES_AT_S,
                tail_silence_s=60.0,
                user="callee",
            ) as callee,
            baresip_callee(
                tmp_path / "agent",
                speech_wav=write_wav_pcm(tmp_path / "agent.wav", agent_voice),
                tail_silence_s=1.0,  # then it hangs up: the agent ends the talk
                user="agent",
            ) as agent,
        ):
            config = setup(tmp_path, callee.hostport, agent.hostport, agent.uri())
            async with running_waihud(config) as daemon:
                try:
                    reply = await daemon.request("call", target=callee.uri(), script="transfer-ko")
                    record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                    shown = await trio.to_thread.run_sync(call_show, daemon, reply["call_id"])
                    assert await daemon.stop() == 0
                    await callee.wait_call_closed()
                    await callee.stop()  # their recorders' files are complete once they stop
                    await agent.stop()

                    transfer = record["transfer"]
                    assert transfer is not None, record
                    assert (transfer["outcome"], transfer["mode"], transfer["status"]) == (
                        "transferred", "bridge", 200
                    )  # fmt: skip
                    assert transfer["target"] == agent.uri()
                    assert record["status"] == "ended" and record["grade"] == "A", record
                    assert "transfer" in record["tags"]
                    assert robot_nodes(record) == ["offer", "connect"], record
                    assert record["hangup_by"] == "robot"  # the agent hung up; then the robot
                    assert f"transferred to {agent.uri()} by bridge (sip 200)" in shown, shown

                    # the agent heard the whisper, then the callee
                    heard_by_agent = agent.heard()
                    callee_tone = toned(heard_by_agent, CALLEE_TONE_HZ)
                    assert len(callee_tone) >= MIN_TONE_S * 10, len(callee_tone)
                    whisper = [i for i in sounding(heard_by_agent) if i < callee_tone[0]]
                    assert len(whisper) >= 10, "no whisper before the callee's voice"
                    assert toned(heard_by_agent[: callee_tone[0] * WINDOW], CALLEE_TONE_HZ) == []
                    # the callee heard the agent (and never its own tone back)
                    heard_by_callee = callee.heard()
                    assert len(toned(heard_by_callee, AGENT_TONE_HZ)) >= MIN_TONE_S * 10
                    assert toned(heard_by_callee, CALLEE_TONE_HZ) == []
                    # the recording went on: callee left, what the callee heard right
                    with wave.open(record["recording"], "rb") as wav:
                        frames = wav.readframes(wav.getnframes())
                    stereo = np.frombuffer(frames, dtype="<i2").reshape(-1, 2)
                    assert len(toned(stereo[:, 0], CALLEE_TONE_HZ)) >= MIN_TONE_S * 10
                    assert len(toned(stereo[:, 1], AGENT_TONE_HZ)) >= MIN_TONE_S * 10
                except BaseException as exc:
                    exc.add_note(report(daemon, callee, agent))
                    raise


async def failed_transfer(
    tmp_path: Path, scenario: str, keys: dict[str, str], **table: float
) -> tuple[dict, SippResult]:
    """A sipp callee says yes; the agent is a sipp running ``scenario``. The filed record
    and the agent's result."""
    yes = to_ulaw(synthesize("네"), tmp_path / "yes.ul")
    async with (
        sipp_peer(
            "answer.xml", tmp_path, plays=[Play(int(YES_AT_S * 1000), yes)], timeout=CALL_TIMEOUT
        ) as callee,  # fmt: skip
        sipp_peer(scenario, tmp_path, keys=keys, timeout=CALL_TIMEOUT) as agent,
    ):
        config = setup(tmp_path, callee.hostport, agent.hostport, agent.uri("1002"), **table)
        async with running_waihud(config) as daemon:
            try:
                reply = await daemon.request("call", target="1001", script="transfer-ko")
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                agent_result = await agent.wait()
                (await callee.wait()).check()
                assert await daemon.stop() == 0
            except BaseException as exc:
                exc.add_note(report(daemon, callee, agent))
                raise
    return record, agent_result


async def test_a_busy_agent_sends_the_callee_to_the_fallback(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        record, agent = await failed_transfer(tmp_path, "busy.xml", {})
    agent.check()  # the 486 was ACKed
    transfer = record["transfer"]
    assert (transfer["outcome"], transfer["status"], transfer["mode"]) == (
        "agent_busy", 486, "bridge"
    )  # fmt: skip
    assert "486 Busy Here" in transfer["detail"]
    # the fallback was spoken to the callee, and the call graded there
    assert robot_nodes(record) == ["offer", "connect", "sorry"], record
    assert (record["grade"], record["hangup_by"], record["status"]) == ("B", "robot", "ended")
    assert {"transfer", "callback"} <= set(record["tags"])


async def test_an_agent_who_does_not_answer_is_cancelled_and_filed_as_no_answer(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        record, agent = await failed_transfer(
            tmp_path, "no_answer.xml", {"cancel_wait_ms": "60000"}, ring_timeout=3.0
        )
    agent.check()  # the CANCEL came, and the 487 was ACKed
    transfer = record["transfer"]
    assert (transfer["outcome"], transfer["status"]) == ("no_answer", 408)
    assert robot_nodes(record) == ["offer", "connect", "sorry"], record
    assert record["grade"] == "B"


REFER_SCRIPT = """
[script]
name = "refer-ko"
language = "ko"
start = "connect"
priority = ["default"]
on_transfer_failed = "sorry"

[nodes.connect]
say = [{ text = "상담원에게 연결합니다." }]
end = true
grade = "A"
transfer = "desk"

[nodes.sorry]
say = [{ text = "다시 연락드리겠습니다." }]
end = true
grade = "B"
"""


async def test_a_blind_transfer_refers_the_callee_and_files_what_the_notify_said(
    tmp_path: Path,
) -> None:
    """``mode = "refer"``: the robot sends REFER to the callee's phone (sipp), which answers
    202, NOTIFYs 100 then 200 and leaves; the record says transferred, by refer, 200."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "refer-ko.toml").write_text(REFER_SCRIPT, encoding="utf-8")
    with trio.fail_after(TEST_TIMEOUT):
        async with sipp_peer(
            "refer_accepted.xml",
            tmp_path,
            keys={"refer_user": "2001", "bye_wait_ms": "60000"},
            timeout=CALL_TIMEOUT,
        ) as callee:
            config = write_config(
                tmp_path / "waihud",
                proxy=callee.hostport,
                scripts_dir=scripts,
                tts=True,
                extra='[transfer.desk]\nmode = "refer"\ntarget = "2001"\n',
            )
            async with running_waihud(config) as daemon:
                reply = await daemon.request("call", target="1001", script="refer-ko")
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                result = await callee.wait()
                assert await daemon.stop() == 0
    result.check()  # REFER with Refer-To sip:2001@…, both NOTIFYs answered 200
    transfer = record["transfer"]
    assert (transfer["mode"], transfer["outcome"], transfer["status"]) == (
        "refer", "transferred", 200,
    ), transfer  # fmt: skip
    assert transfer["target"] == "2001"  # as configured; sipp checked the Refer-To URI
    assert robot_nodes(record) == ["connect"] and record["grade"] == "A"
    assert record["status"] == "ended"
