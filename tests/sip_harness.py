"""The SIP trunk as the SIP tests run it: built and started as the core does, and dialled in
the background while a test plays the far end by hand.

Not for: the far ends themselves (``waihu.testing.sipp``: sipp and ``UdpPeer``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

import waihu.api
from waihu.api import CallFailed
from waihu.testing.sipp import UdpPeer
from waihu_sip.leg import SipCallLeg
from waihu_sip.trunk import SipTrunk

LOGGER = "waihu.test.sip"  # tests that read the trunk's log capture this logger


def sip_trunk(tmp_path: Path, *, local_port: int = 0, **config: object) -> SipTrunk:
    """A SipTrunk built as the core builds providers (not started); port 0 picks a free one.
    OPTIONS probes are off unless ``probe_interval`` is given: the tests play the far end."""
    config.setdefault("probe_interval", 0)
    cfg = SipTrunk.Config(local_port=local_port, **config)
    ctx = waihu.api.ProviderContext(
        name="t", state_dir=tmp_path, log=logging.getLogger(LOGGER),
        cpu_limiter=trio.CapacityLimiter(1),
    )  # fmt: skip
    return SipTrunk(cfg, ctx)


@asynccontextmanager
async def running_trunk(tmp_path: Path, **config: object) -> AsyncIterator[SipTrunk]:
    """A started SipTrunk on a free port; stopped when the block ends."""
    trunk = sip_trunk(tmp_path, **config)
    async with trio.open_nursery() as nursery:
        await nursery.start(trunk.run)
        yield trunk
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def trunk_and_peer(
    tmp_path: Path, **config: object
) -> AsyncIterator[tuple[SipTrunk, UdpPeer]]:
    """A running trunk whose proxy is a fresh UdpPeer."""
    peer = UdpPeer()
    try:
        async with running_trunk(tmp_path, proxy=await peer.bind(), **config) as trunk:
            yield trunk, peer
    finally:
        peer.close()


@attrs.define
class DialOutcome:
    """What a dial in the background came to: the answered leg, or the ``CallFailed``."""

    leg: SipCallLeg | None = None
    failure: CallFailed | None = None


@asynccontextmanager
async def dialling(trunk: SipTrunk, target: str = "1001") -> AsyncIterator[DialOutcome]:
    """Dial ``target`` in the background while the block plays the far end.

    The block's end waits for the dial to finish; a ``CallFailed`` is kept in
    the outcome, anything else is raised.
    """
    outcome = DialOutcome()

    async def dial() -> None:
        try:
            outcome.leg = await trunk.dial(target)
        except CallFailed as exc:
            outcome.failure = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dial)
        yield outcome
