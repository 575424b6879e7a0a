"""End to end: a real waihud places a call over TCP, configured as an operator would.

The callee is sipp over TCP (``-t t1``) running ``hangup_mid.xml``: it answers,
waits, and sends its BYE down the connection waihud opened; waihud must take
that request on its own connection, answer it there, and file the call as
hung up by the callee. The daemon's configuration says ``transport = "tcp"``
and nothing else about it, so the key reaches the trunk the way the daemon
builds providers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from waihu.testing.daemon import running_waihud, write_config
from waihu.testing.sipp_stream import sipp_tcp

pytestmark = pytest.mark.e2e

CALL_TIMEOUT = 60.0
TEST_TIMEOUT = 150.0  # generous: the daemon loads a speech model on a shared machine


async def test_waihud_places_a_call_over_tcp(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with sipp_tcp(
            "hangup_mid.xml", tmp_path, keys={"wait": "1500"}, timeout=CALL_TIMEOUT
        ) as callee:
            config = write_config(
                tmp_path / "waihud", proxy=callee.hostport, trunk={"transport": "tcp"}
            )
            async with running_waihud(config) as daemon:
                reply = await daemon.request("call", target="1001", script="demo-ko")
                record = await daemon.wait_call(reply["call_id"], timeout=CALL_TIMEOUT)
                assert await callee.wait() == 0, callee.report()  # its BYE got its 200
                assert await daemon.stop() == 0, daemon.log_text()[-3000:]
    assert (record["status"], record["sip_status"], record["hangup_by"]) == (
        "ended",
        200,
        "callee",
    ), record
    trace = callee.messages()
    assert "Via: SIP/2.0/TCP 127.0.0.1:" in trace
    assert "TCP message sent" in trace and "UDP" not in trace
