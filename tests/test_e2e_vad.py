"""End to end: a real waihud whose calls use the Silero VAD converses with a sipp callee.

The daemon is configured with ``[media] vad = "s"`` and ``[vad.s] type =
"silero"``; sipp answers and speaks "네" (espeak-ng, streamed as RTP) once the
greeting is over. The call must converse as with the built-in VAD: the answer
is heard, recognised and routed, and the daemon's log shows the Silero model
was started as ``vad.s``. On a daemon without the vad kind the config itself is
refused. Deadlines are generous: the machine is shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from vad_site import site_env

from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp import Play, sipp_peer
from waihu.testing.speech import synthesize, to_ulaw

pytestmark = pytest.mark.e2e

AFTER_GREETING_MS = 7500  # the demo greeting lasts about 6.4 s
CALL_TIMEOUT = 120.0


async def test_a_call_with_the_silero_vad_still_converses(tmp_path: Path) -> None:
    answer = to_ulaw(synthesize("네"), tmp_path / "ne.ul")
    with trio.fail_after(CALL_TIMEOUT + 60):
        async with sipp_peer(
            "answer.xml", tmp_path, plays=[Play(AFTER_GREETING_MS, answer)], timeout=CALL_TIMEOUT
        ) as peer:
            config = write_config(
                tmp_path / "waihud",
                proxy=peer.hostport,
                media={"vad": "s"},
                extra='[vad.s]\ntype = "silero"\nthreshold = 0.5\n',
            )
            async with running_waihud(config, env=site_env(tmp_path / "site")) as daemon:
                reply = await daemon.request("call", target="1001", script="demo-ko")
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                result = await peer.wait()
                assert await daemon.stop() == 0, daemon.log_text()[-3000:]
            result.check()
    log = daemon.log_text()
    assert "starting vad.s (silero)" in log, log[-3000:]
    assert "silero ready" in log
    assert "waihu.vad.s: detector opened at 8000 Hz" in log  # the call listened with it
    assert record["status"] == "ended", record
    callee = [(t["text"], t["intent"]) for t in record["turns"] if t["speaker"] == "callee"]
    assert callee == [("네", "affirm")]
    robot = [t["node"] for t in record["turns"] if t["speaker"] == "robot"]
    assert robot == ["greeting", "bye_interested"]
    assert (record["grade"], record["hangup_by"]) == ("A", "robot")
