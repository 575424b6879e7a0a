"""The daemon's CPU limiter: a fixed number of worker threads for CPU-bound native work
(decoding speech, synthesising it, classifying), shared by every call, with an urgent lane.

``CpuLimiter`` is a capacity limiter in the shape ``trio.to_thread.run_sync`` takes
(``acquire_on_behalf_of``/``release_on_behalf_of``). Jobs taken through it wait in
arrival order; jobs taken through its ``urgent`` view wait in arrival order too, but
every freed thread goes to an urgent job first. Why: with forty callees answering
at once, every call's recogniser hands a worker thread a batch of audio several times
a second, and the end of an utterance — the one job a callee waits on, since the robot
answers after it — would otherwise queue behind all the other calls' batches. Work done
ahead of time (a partial result nobody waits on yet) is what should wait instead.

``urgent_lane(limiter)`` gives the urgent view of a ``CpuLimiter`` and any other
limiter unchanged (a plain ``trio.CapacityLimiter`` in a test has one lane).

Why not ``trio.CapacityLimiter``: it is final (no subclass) and serves one queue.
What it is not: a scheduler of the threads themselves (the kernel runs them).
"""

from __future__ import annotations

from collections import deque

import attrs
import trio

__all__ = ["CpuLimiter", "UrgentLane", "urgent_lane"]


@attrs.define(eq=False)
class _Waiter:
    borrower: object
    event: trio.Event = attrs.Factory(trio.Event)


class CpuLimiter:
    """At most ``total_tokens`` borrowers at once; ``urgent`` borrowers go first.

    Error handling: a borrower acquiring twice, or releasing what it does not hold,
    is a ``RuntimeError`` (as with ``trio.CapacityLimiter``).
    """

    def __init__(self, total_tokens: int) -> None:
        if total_tokens < 1:
            raise ValueError(f"a CPU limiter needs at least one token, not {total_tokens}")
        self.total_tokens = total_tokens
        self._borrowers: set[object] = set()
        self._urgent: deque[_Waiter] = deque()
        self._normal: deque[_Waiter] = deque()
        self.urgent = UrgentLane(self)

    @property
    def borrowed_tokens(self) -> int:
        """Tokens held now."""
        return len(self._borrowers)

    @property
    def waiting(self) -> tuple[int, int]:
        """Borrowers waiting: (urgent, normal)."""
        return len(self._urgent), len(self._normal)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Wait for a token for ``borrower``, behind every urgent waiter and every earlier one."""
        await self._acquire(borrower, self._normal)

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give ``borrower``'s token back: to the first urgent waiter, else the first one."""
        if borrower not in self._borrowers:
            raise RuntimeError(f"{borrower!r} holds no token of this CPU limiter")
        self._borrowers.remove(borrower)
        self._hand_on()

    async def _acquire(self, borrower: object, queue: deque[_Waiter]) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if borrower in self._borrowers:
            raise RuntimeError(f"{borrower!r} already holds a token of this CPU limiter")
        # a token is free only while nobody waits: a release hands it to the first waiter
        if len(self._borrowers) < self.total_tokens:
            self._borrowers.add(borrower)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter(borrower)
        queue.append(waiter)
        try:
            await waiter.event.wait()
        except trio.Cancelled:
            # only a waiter still parked can be cancelled: one handed a token was
            # rescheduled with it and takes it
            queue.remove(waiter)
            raise

    def _hand_on(self) -> None:
        while len(self._borrowers) < self.total_tokens and (self._urgent or self._normal):
            waiter = (self._urgent or self._normal).popleft()
            self._borrowers.add(waiter.borrower)
            waiter.event.set()


class UrgentLane:
    """The urgent view of a ``CpuLimiter``: the same tokens, taken before the others'."""

    def __init__(self, limiter: CpuLimiter) -> None:
        self.limiter = limiter

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Wait for a token for ``borrower``, behind earlier urgent waiters only."""
        limiter = self.limiter
        await limiter._acquire(borrower, limiter._urgent)

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give ``borrower``'s token back."""
        self.limiter.release_on_behalf_of(borrower)


def urgent_lane(
    limiter: CpuLimiter | UrgentLane | trio.CapacityLimiter,
) -> UrgentLane | trio.CapacityLimiter:
    """The lane of ``limiter`` for work someone is waiting on now (any other: itself)."""
    return limiter.urgent if isinstance(limiter, CpuLimiter) else limiter
