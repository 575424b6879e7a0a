"""The non-INVITE client transaction over UDP (RFC 3261 §17.1.2): BYE and CANCEL.

Send the request, retransmit it on Timer E (T1 doubling up to T2, then every
T2 once a provisional came), return the first final response, or None when
Timer F (64·T1) runs out. Not for: INVITE (see ``outgoing``), server-side
transactions (``transport`` answers retransmitted requests from its cache).
"""

from __future__ import annotations

import trio

from waihu_sip.message import SipRequest, SipResponse
from waihu_sip.timers import T1, T2, TIMER_F
from waihu_sip.transport import Address, SipTransport

__all__ = ["send_non_invite"]


async def send_non_invite(
    transport: SipTransport, request: SipRequest, destination: Address
) -> SipResponse | None:
    """Run one non-INVITE client transaction; the final response, or None on Timer F."""
    branch = request.top_via.branch
    if branch is None:
        raise ValueError("request has no Via branch")
    with transport.client_transaction(branch, request.method) as responses:
        data = await transport.send(request, destination)
        give_up_at = trio.current_time() + TIMER_F
        interval = T1
        retransmit_at = trio.current_time() + interval
        while True:
            response = None
            with trio.move_on_at(min(retransmit_at, give_up_at)):
                response = await responses.receive()
            if response is not None:
                if response.status >= 200:
                    return response
                interval = T2  # §17.1.2.2: proceeding state retransmits every T2
                retransmit_at = min(retransmit_at, trio.current_time() + interval)
                continue
            now = trio.current_time()
            if now >= give_up_at:
                return None
            await transport.send_bytes(data, destination)
            interval = min(interval * 2, T2)
            retransmit_at = now + interval
