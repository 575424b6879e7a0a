"""The daemon's CPU limiter: a fixed number of tokens, urgent borrowers served first.

Real trio tasks and real worker threads (``trio.to_thread.run_sync``); a token is
held by a task until the test lets it go, so the order is decided by the limiter
alone, never by timing.
"""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from waihu.api import CpuLimiter, urgent_lane


async def test_it_lends_at_most_its_tokens_and_takes_them_back() -> None:
    limiter = CpuLimiter(2)
    await limiter.acquire_on_behalf_of("a")
    await limiter.urgent.acquire_on_behalf_of("b")
    assert limiter.borrowed_tokens == 2
    with trio.move_on_after(0.01):
        await limiter.acquire_on_behalf_of("c")
        pytest.fail("a third borrower got a token of two")
    assert limiter.waiting == (0, 0)  # the cancelled waiter left the queue
    limiter.release_on_behalf_of("a")
    limiter.urgent.release_on_behalf_of("b")
    assert limiter.borrowed_tokens == 0


async def test_a_freed_token_goes_to_urgent_waiters_first_then_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = CpuLimiter(1)
    await limiter.acquire_on_behalf_of("holder")
    order: list[str] = []

    async def borrow(name: str, *, urgent: bool) -> None:
        lane = limiter.urgent if urgent else limiter
        await lane.acquire_on_behalf_of(name)
        order.append(name)
        assert limiter.borrowed_tokens == 1  # never more than it has
        await trio.sleep(1)
        lane.release_on_behalf_of(name)

    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + 60
        for name, urgent in (("batch 1", False), ("batch 2", False), ("final 1", True)):
            nursery.start_soon(lambda n=name, u=urgent: borrow(n, urgent=u))
            await trio.testing.wait_all_tasks_blocked()
        assert limiter.waiting == (1, 2)
        nursery.start_soon(lambda: borrow("final 2", urgent=True))
        await trio.testing.wait_all_tasks_blocked()
        limiter.release_on_behalf_of("holder")
    assert order == ["final 1", "final 2", "batch 1", "batch 2"]


async def test_a_normal_borrower_does_not_jump_a_queue_when_a_token_is_free() -> None:
    # tokens are handed over at release; a newcomer never takes one meant for a waiter
    limiter = CpuLimiter(1)
    await limiter.acquire_on_behalf_of("holder")
    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + 60
        nursery.start_soon(limiter.urgent.acquire_on_behalf_of, "waiter")
        await trio.testing.wait_all_tasks_blocked()
        limiter.release_on_behalf_of("holder")
        with trio.move_on_after(0.01):
            await limiter.acquire_on_behalf_of("newcomer")
            pytest.fail("a newcomer took the token handed to a waiter")
    assert limiter.borrowed_tokens == 1
    limiter.release_on_behalf_of("waiter")


async def test_a_cancelled_waiter_leaves_the_queue_to_the_next() -> None:
    limiter = CpuLimiter(1)
    await limiter.acquire_on_behalf_of("holder")
    got: list[str] = []

    async def borrow(name: str) -> None:
        await limiter.acquire_on_behalf_of(name)
        got.append(name)

    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + 60
        with trio.CancelScope() as first:
            async with trio.open_nursery() as inner:
                inner.start_soon(borrow, "cancelled")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(borrow, "next")
                await trio.testing.wait_all_tasks_blocked()
                assert limiter.waiting == (0, 2)
                first.cancel()
        assert limiter.waiting == (0, 1)
        limiter.release_on_behalf_of("holder")
    assert got == ["next"]
    assert limiter.borrowed_tokens == 1


async def test_errors_name_the_borrower() -> None:
    limiter = CpuLimiter(1)
    await limiter.acquire_on_behalf_of("a")
    with pytest.raises(RuntimeError, match="'a' already holds"), trio.fail_after(5):
        await limiter.acquire_on_behalf_of("a")
    with pytest.raises(RuntimeError, match="'b' holds no token"):
        limiter.release_on_behalf_of("b")
    with pytest.raises(ValueError, match="at least one token"):
        CpuLimiter(0)


async def test_worker_threads_take_the_urgent_job_before_queued_ones() -> None:
    limiter = CpuLimiter(1)
    gate = threading.Event()
    ran: list[str] = []

    def job(name: str) -> None:
        if name == "blocker":
            gate.wait(30)
        ran.append(name)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: trio.to_thread.run_sync(job, "blocker", limiter=limiter))
            await trio.testing.wait_all_tasks_blocked()
            for name in ("batch a", "batch b"):
                nursery.start_soon(lambda n=name: trio.to_thread.run_sync(job, n, limiter=limiter))
                await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(
                lambda: trio.to_thread.run_sync(job, "final", limiter=urgent_lane(limiter))
            )
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert ran == ["blocker", "final", "batch a", "batch b"]


def test_other_limiters_have_one_lane() -> None:
    plain = trio.CapacityLimiter(1)
    assert urgent_lane(plain) is plain
    limiter = CpuLimiter(1)
    assert urgent_lane(limiter) is limiter.urgent
    assert urgent_lane(limiter.urgent) is limiter.urgent
