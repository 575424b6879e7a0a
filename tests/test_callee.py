"""The scripted callee's own logic (waihu.testing.callee), without a daemon.

``CalleeLine`` is fed RTP datagrams with explicit times and asked for frames at explicit
times (no clock at all); one test runs a ``Callee`` on real loopback sockets against a
plain UDP socket playing the robot, and one renders the sipp scenario's sections.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import trio

from waihu.media.g711 import ulaw_decode, ulaw_encode
from waihu.media.rtp import RtpSender, parse_rtp
from waihu.testing.callee import (
    FRAME_MS,
    FRAME_SAMPLES,
    ROBOT_GAP_MS,
    VOICED_DBFS,
    Callee,
    CalleeLine,
    CalleeScript,
    Echo,
    Sound,
    after_robot_starts,
    after_robot_stops,
    at,
    cough_pcm,
    frame_level_db,
    payload_level_db,
    render_callee_scenario,
    talkspurts,
    voiced_span,
)

TICK = FRAME_MS / 1000
TONE_DBFS = -10.0
BUSY_S = 0.3  # how long a test keeps the process from reading its socket


def tone(frames: int, dbfs: float = TONE_DBFS, hz: float = 1000.0) -> np.ndarray:
    """A sine of ``frames`` 20 ms frames at an RMS level of ``dbfs``."""
    n = frames * FRAME_SAMPLES
    amplitude = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(n) / 8000)).astype(np.int16)


class Robot:
    """Numbered PCMU datagrams as the robot sends them."""

    def __init__(self) -> None:
        self.sender = RtpSender(0, sequence=1, timestamp=0, ssrc=7)

    def packet(self, pcm: np.ndarray) -> bytes:
        return self.sender.next_packet(ulaw_encode(pcm), FRAME_SAMPLES)


def run(
    line: CalleeLine, robot_pcm: np.ndarray, *, robot_from: float, until: float
) -> dict[float, bytes]:
    """Robot frames arrive every 20 ms from ``robot_from`` (at x.000), the callee sends at
    x.010; returns the callee's payload by send time."""
    robot = Robot()
    frames = robot_pcm.reshape(-1, FRAME_SAMPLES)
    sent: dict[float, bytes] = {}
    t = line.start
    index = 0
    while t < until:
        arrival = robot_from + index * TICK
        while index < len(frames) and arrival <= t:
            line.receive(arrival, robot.packet(frames[index]))
            index += 1
            arrival = robot_from + index * TICK
        sent[round(t, 3)] = line.frame(t)
        t = round(t + TICK, 6)
    return sent


def levels(sent: dict[float, bytes]) -> dict[float, float]:
    return {t: frame_level_db(ulaw_decode(p)) for t, p in sent.items()}


def test_echo_returns_the_robot_after_the_delay_at_the_gain() -> None:
    line = CalleeLine(CalleeScript(echo=Echo(gain_db=-20, delay_ms=60)), start=0.01)
    sent = levels(run(line, tone(50), robot_from=1.0, until=2.5))
    audible = sorted(t for t, db in sent.items() if db > -70)
    # first robot frame arrived at 1.000: due at 1.060, so the callee's frame at 1.070
    assert audible[0] == pytest.approx(1.07)
    assert audible[-1] == pytest.approx(1.07 + 49 * TICK)
    assert len(audible) == 50
    middle = [sent[t] for t in audible[2:-2]]
    assert np.mean(middle) == pytest.approx(TONE_DBFS - 20, abs=0.6)  # G.711 both ways
    # echo is not the callee speaking
    assert line.voiced_times("out") == []
    assert len(line.voiced_times("in")) == 50


def test_echo_delay_counts_from_arrival_and_gain_zero_db_is_unchanged() -> None:
    line = CalleeLine(CalleeScript(echo=Echo(gain_db=0, delay_ms=200)), start=0.01)
    sent = levels(run(line, tone(10), robot_from=0.5, until=1.5))
    audible = sorted(t for t, db in sent.items() if db > -70)
    assert audible[0] == pytest.approx(0.71)  # 0.5 + 0.2 → next frame at 0.71
    assert np.mean([sent[t] for t in audible[1:-1]]) == pytest.approx(TONE_DBFS, abs=0.5)


def test_no_echo_without_an_echo_path() -> None:
    line = CalleeLine(CalleeScript(), start=0.01)
    sent = levels(run(line, tone(20), robot_from=0.1, until=1.0))
    assert max(sent.values()) < -70


def test_sound_starts_a_set_time_after_the_robots_first_voiced_packet() -> None:
    silence = np.zeros(10 * FRAME_SAMPLES, np.int16)
    script = CalleeScript(sounds=[Sound("ne", tone(5, -20), after_robot_starts(300))])
    line = CalleeLine(script, start=0.01)
    run(line, np.concatenate([silence, tone(100)]), robot_from=1.0, until=3.0)
    assert line.robot_onsets == [pytest.approx(1.2)]  # after ten silent frames
    assert line.started["ne"] == pytest.approx(1.51)  # 1.2 + 0.3, at the next frame
    assert line.sound_span("ne") == (pytest.approx(1.51), pytest.approx(1.59))


def test_sound_after_the_robot_stops_waits_for_the_gap() -> None:
    script = CalleeScript(sounds=[Sound("reply", tone(5, -20), after_robot_stops(0))])
    line = CalleeLine(script, start=0.01)
    pcm = np.concatenate([tone(25), np.zeros(50 * FRAME_SAMPLES, np.int16)])
    run(line, pcm, robot_from=1.0, until=3.0)
    last_voiced = 1.0 + 24 * TICK
    assert line.robot_ends == [pytest.approx(last_voiced)]
    # the end is known ROBOT_GAP_MS later; the sound goes out at the first frame after that
    assert line.started["reply"] == pytest.approx(last_voiced + ROBOT_GAP_MS / 1000 + 0.01)


def test_a_pause_shorter_than_the_gap_does_not_end_the_talkspurt() -> None:
    script = CalleeScript(sounds=[Sound("reply", tone(5, -20), after_robot_stops(100, nth=1))])
    line = CalleeLine(script, start=0.01)
    gap = np.zeros((ROBOT_GAP_MS // FRAME_MS - 2) * FRAME_SAMPLES, np.int16)
    run(line, np.concatenate([tone(10), gap, tone(10)]), robot_from=1.0, until=4.0)
    assert len(line.robot_onsets) == 1
    assert line.started["reply"] > line.robot_onsets[0] + 0.2 + (ROBOT_GAP_MS - 40) / 1000


def test_triggers_at_answer_and_nth_talkspurt() -> None:
    quiet = np.zeros(30 * FRAME_SAMPLES, np.int16)
    script = CalleeScript(
        sounds=[
            Sound("hello", tone(3, -20), at(100)),
            Sound("second", tone(3, -20), after_robot_starts(0, nth=2)),
        ]
    )
    line = CalleeLine(script, start=0.01)
    run(line, np.concatenate([tone(10), quiet, tone(10)]), robot_from=0.5, until=3.0)
    assert line.started["hello"] == pytest.approx(0.11)
    assert line.robot_onsets[1] == pytest.approx(0.5 + 40 * TICK)
    assert line.started["second"] == pytest.approx(0.5 + 40 * TICK + 0.01)
    assert line.finished


def test_voice_to_voice_and_reaction_from_the_wire_log() -> None:
    # the robot talks from 1.0, the callee cuts in at 1.49; the robot stops at 1.68, then
    # answers at 2.6 after the callee's last voiced frame (1.67)
    script = CalleeScript(sounds=[Sound("cut", tone(10, -20), at(1480))])
    line = CalleeLine(script, start=0.01)
    robot = np.concatenate(
        [tone(35), np.zeros(45 * FRAME_SAMPLES, np.int16), tone(10)]  # 1.0-1.68, 2.6-2.78
    )
    run(line, robot, robot_from=1.0, until=3.2)
    first, last = line.sound_span("cut")
    assert (first, last) == (pytest.approx(1.49), pytest.approx(1.67))
    assert line.reaction("cut") == pytest.approx(1.68 - 1.49)
    assert line.voice_to_voice("cut") == pytest.approx(2.6 - 1.67)
    assert line.voice_to_voice("never") is None and line.reaction("never") is None


def test_reaction_is_none_when_the_robot_was_quiet() -> None:
    line = CalleeLine(CalleeScript(sounds=[Sound("s", tone(5, -20), at(0))]), start=0.01)
    run(line, tone(5), robot_from=2.0, until=3.0)
    assert line.reaction("s") is None


def test_noise_is_under_the_voiced_threshold_and_not_the_callee() -> None:
    line = CalleeLine(CalleeScript(noise_dbfs=-60, seed=3), start=0.0)
    got = [frame_level_db(ulaw_decode(line.frame(i * TICK))) for i in range(50)]
    assert np.mean(got) == pytest.approx(-60, abs=1.5)
    assert max(got) < VOICED_DBFS and line.voiced_times("out") == []


def test_own_sound_is_voiced_and_labelled() -> None:
    line = CalleeLine(CalleeScript(sounds=[Sound("ne", tone(3, -25), at(0))]), start=0.0)
    for i in range(5):
        line.frame(i * TICK)
    out = [p for p in line.log if p.direction == "out"]
    assert [(p.voiced, p.label) for p in out] == [(True, "ne")] * 3 + [(False, "")] * 2
    assert out[0].level_db == pytest.approx(-25, abs=0.5)


def test_cough_is_a_short_decaying_burst() -> None:
    cough = cough_pcm(150, peak_dbfs=-6, seed=1)
    assert cough.size == 1200
    frames = [frame_level_db(cough[i : i + FRAME_SAMPLES]) for i in range(0, 1200, 160)]
    assert frames[0] > VOICED_DBFS and frames == sorted(frames, reverse=True)[: len(frames)]
    assert frames[0] - frames[-1] > 20  # decays by more than 20 dB over its length
    assert np.abs(cough).max() <= 32768 * 10 ** (-6 / 20) + 1
    with pytest.raises(ValueError, match="duration_ms"):
        cough_pcm(0)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="delay_ms"):
        Echo(delay_ms=-1)
    with pytest.raises(ValueError, match="non-empty"):
        Sound("x", np.zeros(0, np.int16))
    with pytest.raises(ValueError, match="nth"):
        after_robot_starts(0, nth=0)


def test_malformed_and_foreign_datagrams_are_skipped() -> None:
    line = CalleeLine(CalleeScript(), start=0.0)
    line.receive(0.0, b"\x00\x01")
    event = RtpSender(101, sequence=1, timestamp=0, ssrc=1).next_packet(b"\x01\x0a\x00\xa0", 0)
    line.receive(0.02, event)
    assert line.malformed == 1 and line.log == []


def test_talkspurts_and_voiced_span() -> None:
    assert talkspurts([0.0, 0.02, 0.04, 1.0, 1.02], gap_ms=400) == [(0.0, 0.04), (1.0, 1.02)]
    assert talkspurts([0.0, 0.3, 0.6], gap_ms=400) == [(0.0, 0.6)]
    assert talkspurts([]) == []
    pcm = np.concatenate([np.zeros(320, np.int16), tone(4), np.zeros(480, np.int16)])
    assert voiced_span(pcm) == (40, 100)
    assert voiced_span(np.zeros(800, np.int16)) is None


def test_scenario_sections() -> None:
    answer = render_callee_scenario().split("<scenario")[1]  # the steps, not the comment
    assert (
        "SIP/2.0 200 OK" in answer
        and "SIP/2.0 183" not in answer
        and "[final_status]" not in answer
    )
    early_reject = render_callee_scenario(early=True, answer=False).split("<scenario")[1]
    assert "SIP/2.0 183 Session Progress" in early_reject and "[final_status]" in early_reject
    assert "SIP/2.0 180 Ringing" not in early_reject and "callee:" not in early_reject
    assert "[peer_file]" in early_reject  # the caller's address is always written
    with pytest.raises(ValueError):
        render_callee_scenario(early=False, answer=False)


async def test_callee_on_loopback_echoes_to_the_robots_address(tmp_path: Path) -> None:
    """A plain UDP socket plays the robot (no daemon): it sends a tone, the callee returns
    it 0 dB after 40 ms to the address sipp would have written from the SDP offer."""
    with trio.fail_after(20):
        robot_sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await robot_sock.bind(("127.0.0.1", 0))
        peer_file = tmp_path / "caller-rtp.txt"
        peer_file.write_text(f"127.0.0.1 {robot_sock.getsockname()[1]} c=... m=...\n")
        callee = Callee(CalleeScript(echo=Echo(gain_db=0, delay_ms=40)))
        port = await callee.bind()
        robot = Robot()
        heard: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(callee.run, peer_file)
            for frame in tone(25).reshape(-1, FRAME_SAMPLES):
                await robot_sock.sendto(robot.packet(frame), ("127.0.0.1", port))
                await trio.sleep(TICK)
            while len(heard) < 20:
                data, _ = await robot_sock.recvfrom(2048)
                level = frame_level_db(ulaw_decode(parse_rtp(data).payload))
                if level > VOICED_DBFS:
                    heard.append(level)
            nursery.cancel_scope.cancel()
        callee.close()
        robot_sock.close()
    assert callee.line is not None and len(callee.line.voiced_times("in")) == 25
    assert np.median(heard) == pytest.approx(TONE_DBFS, abs=1.0)


async def test_arrival_times_are_the_kernels_not_those_of_a_busy_reader(tmp_path: Path) -> None:
    """A datagram that waited in the socket while the process was busy is logged at the time
    it arrived, so a loaded bench does not make the robot look slow."""
    with trio.fail_after(20):
        robot_sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await robot_sock.bind(("127.0.0.1", 0))
        peer_file = tmp_path / "caller-rtp.txt"
        peer_file.write_text(f"127.0.0.1 {robot_sock.getsockname()[1]}\n")
        callee = Callee(CalleeScript())
        port = await callee.bind()
        await robot_sock.sendto(Robot().packet(tone(1)), ("127.0.0.1", port))
        sent_at = trio.current_time()  # it had arrived by now: loopback delivers at once
        time.sleep(BUSY_S)  # the reader is busy: the datagram waits in the socket
        async with trio.open_nursery() as nursery:
            nursery.start_soon(callee.run, peer_file)
            while callee.line is None or not callee.line.voiced_times("in"):
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        callee.close()
        robot_sock.close()
    assert callee.line.voiced_times("in")[0] < sent_at + BUSY_S / 2


def test_payload_level_is_the_decoded_frames_level() -> None:
    for dbfs in (-10.0, -35.0, -60.0):
        payload = ulaw_encode(tone(1, dbfs))
        assert payload_level_db(payload) == pytest.approx(frame_level_db(ulaw_decode(payload)))
        assert payload_level_db(payload) == pytest.approx(dbfs, abs=0.6)
    assert payload_level_db(b"\xff" * FRAME_SAMPLES) == payload_level_db(b"")


def test_the_callees_level_is_its_own_sound_not_the_echo_under_it() -> None:
    script = CalleeScript(sounds=[Sound("s", tone(20, -30), at(500))], echo=Echo(0, 0))
    line = CalleeLine(script, start=0.01)
    run(line, tone(60, -10), robot_from=0.0, until=1.2)
    own = [p.level_db for p in line.log if p.direction == "out" and p.label == "s"]
    assert len(own) == 20
    assert np.median(own) == pytest.approx(-30, abs=0.5)  # the −10 dBFS echo is not in it
