"""A UDP trunk sends a request over 1300 bytes by TCP (RFC 3261 §18.1.1).

The proof: the callee is sipp listening on TCP only (``-t t1``; sipp serves one
transport per instance), and the trunk is a plain UDP trunk. A call whose
INVITE is large (a long caller ID makes long From and Contact-free headers)
reaches it and is answered, ACKed and hung up — only possible because the
INVITE, and after it the ACK and BYE to the same address, went by TCP. With
``tcp_fallback = false``, or for a small INVITE, the request goes as a UDP
datagram: there the far end is ``UdpPeer`` (a plain UDP socket), which sees
exactly what arrives.
"""

from __future__ import annotations

from pathlib import Path

import trio

from waihu.api import CallFailed, TrunkError
from waihu.testing.sipp import UdpPeer
from waihu_sip.transport import UDP_SIZE_LIMIT
from waihu_sip.trunk import SipTrunk

from sip_harness import running_trunk
from transport_harness import sipp_tcp

REAL_TIME_LIMIT = 60  # seconds per real-time test; generous, the machine is shared
LONG_CALLER_ID = "8" * 700  # From carries it: the INVITE grows well past 1300 bytes


async def test_large_invite_goes_by_tcp_to_a_tcp_only_callee(tmp_path: Path) -> None:
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_tcp("answer.xml", tmp_path) as peer:
            async with running_trunk(tmp_path, proxy=peer.hostport) as trunk:  # UDP trunk
                leg = await trunk.dial("1001", caller_id=LONG_CALLER_ID)
                await leg.hangup()
                await leg.ended.wait()
                assert await peer.wait() == 0, peer.report()  # ACK and BYE came by TCP too
    trace = peer.messages()
    assert "Via: SIP/2.0/TCP 127.0.0.1:" in trace  # the Via says how it was sent
    assert "SIP/2.0/UDP" not in trace


async def test_small_invite_and_disabled_fallback_stay_on_udp(tmp_path: Path) -> None:
    """The far end is a plain UDP socket that records the INVITE datagram and never answers."""
    with trio.fail_after(REAL_TIME_LIMIT):
        for fallback, caller_id, large in ((True, None, False), (False, LONG_CALLER_ID, True)):
            peer = UdpPeer()
            try:
                proxy = await peer.bind()
                async with running_trunk(tmp_path, proxy=proxy, tcp_fallback=fallback) as trunk:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(dial_quietly, trunk, caller_id)
                        invite, _, _ = await peer.receive_request()
                        nursery.cancel_scope.cancel()
                assert invite.method == "INVITE"
                assert invite.top_via.transport == "UDP"
                assert (len(invite.to_bytes()) > UDP_SIZE_LIMIT) == large
            finally:
                peer.close()


async def dial_quietly(trunk: SipTrunk, caller_id: str | None) -> None:
    """Dial and ignore how it ends (the test cancels it once the INVITE was seen)."""
    try:
        await trunk.dial("1001", caller_id=caller_id)
    except (CallFailed, TrunkError):
        pass
