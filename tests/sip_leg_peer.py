"""A far end scripted by hand for the answered-call tests (tests/test_sip_leg_*.py).

``Callee`` wraps a ``UdpPeer`` (a plain UDP socket on 127.0.0.1) that has
answered one of our calls: it sends in-dialog requests with the right tags and
CSeq, answers ours, and owns an RTP socket to see whether our media arrives.
Tests use it for what sipp cannot do on demand (answer with chosen headers,
check exact fields, hold back an answer); the sipp tests cover the same
features against a real peer.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from waihu.testing.sipp import UdpPeer
from waihu_sip.leg import SipCallLeg
from waihu_sip.message import Headers, SipRequest, SipResponse, make_response
from waihu_sip.trunk import SipTrunk

from sip_harness import dialling, trunk_and_peer

Address = tuple[str, int]


def sdp(
    port: int, *, formats: str = "0 101", direction: str = "", host: str = "127.0.0.1"
) -> bytes:
    """An SDP body for the callee's audio."""
    lines = [
        "v=0", "o=callee 1 1 IN IP4 127.0.0.1", "s=-", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {port} RTP/AVP {formats}", "a=rtpmap:101 telephone-event/8000",
    ]  # fmt: skip
    if direction:
        lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


@attrs.define
class Callee:
    """The far end of one answered call, driven by the test."""

    trunk: SipTrunk
    peer: UdpPeer
    leg: SipCallLeg
    invite: SipRequest
    rtp: trio.socket.SocketType
    cseq: int = 1
    branches: int = 0

    @property
    def trunk_address(self) -> Address:
        assert self.trunk.local_address is not None
        return self.trunk.local_address

    @property
    def rtp_port(self) -> int:
        return int(self.rtp.getsockname()[1])

    def request(
        self,
        method: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        cseq: int | None = None,
    ) -> SipRequest:
        """An in-dialog request from the callee (From/To swapped, the next CSeq)."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        self.branches += 1
        our_tag = self.invite.from_.tag
        fields = Headers(
            [
                ("Via", f"SIP/2.0/UDP {self.peer.address()};branch=z9hG4bKcallee{self.branches}"),
                ("From", f"<sip:callee@{self.peer.address()}>;tag=callee1"),
                ("To", f"<sip:waihu@127.0.0.1>;tag={our_tag}"),
                ("Call-ID", self.invite.call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Max-Forwards", "70"),
                ("Contact", f"<sip:callee@{self.peer.address()}>"),
                *headers,
            ]
        )
        if body and "Content-Type" not in fields:
            fields.add("Content-Type", "application/sdp")
        return SipRequest(headers=fields, body=body, method=method, uri="sip:waihu@127.0.0.1")

    async def ask(self, request: SipRequest) -> SipResponse:
        """Send ``request`` to the trunk and return its final answer."""
        await self.peer.send(request, self.trunk_address)
        while True:
            response = await self.peer.receive_response()
            if response.status >= 200:
                return response

    async def ack(self, invite: SipRequest, body: bytes = b"") -> None:
        """ACK our 2xx to one of the callee's re-INVITEs."""
        ack = self.request("ACK", cseq=invite.cseq.number, body=body)
        await self.peer.send(ack, self.trunk_address)

    async def answer_next(
        self, status: int = 200, *, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
    ) -> SipRequest:
        """Receive the trunk's next request (skipping ACKs) and answer it."""
        while True:
            request, source, _ = await self.peer.receive_request()
            if request.method != "ACK":
                break
        extra = list(headers)
        if body:
            extra.append(("Content-Type", "application/sdp"))
        await self.peer.send(make_response(request, status, extra=extra, body=body), source)
        return request

    async def media_arrives(self, seconds: float = 0.3) -> bool:
        """Send one RTP-ish datagram from the leg and say whether it reached our RTP socket."""
        self.leg.send_media(b"\x80\x00probe")
        with trio.move_on_after(seconds):
            await self.rtp.recv(100)
            return True
        return False


@asynccontextmanager
async def answered_call(
    tmp_path: Path,
    *,
    answer_headers: Sequence[tuple[str, str]] = (),
    **config: object,
) -> AsyncIterator[Callee]:
    """A running trunk, dialled through a UdpPeer that answers 200 with PCMU (+101) SDP
    pointing at its own RTP socket; ``answer_headers`` go on that 200."""
    rtp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await rtp.bind(("127.0.0.1", 0))
    try:
        async with trunk_and_peer(tmp_path, **config) as (trunk, peer):
            async with dialling(trunk) as outcome:
                invite, source, _ = await peer.receive_request()
                extra = [("Contact", f"<sip:callee@{peer.address()}>"), *answer_headers]
                extra.append(("Content-Type", "application/sdp"))
                answer = make_response(
                    invite, 200, to_tag="callee1", extra=extra, body=sdp(rtp.getsockname()[1])
                )
                await peer.send(answer, source)
                await peer.receive_request()  # the ACK
            assert outcome.leg is not None, outcome.failure
            outcome.leg.follow_answer(answer)  # what the trunk does once make_leg gets the 2xx
            yield Callee(trunk, peer, outcome.leg, invite, rtp)
    finally:
        rtp.close()
