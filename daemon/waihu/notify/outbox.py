"""The delivery loop of one notifier: from the durable outbox to ``Notifier.deliver``.

A hot lead must reach sales staff even if their WeChat Work robot is rate
limited, their webhook endpoint is down for an hour, or the daemon restarts
meanwhile. So a notification is never handed to a notifier directly: it is
committed to the campaign store's outbox first (``put``), and one
``OutboxDelivery`` task per notifier takes due items from there, delivers
them one at a time, and marks each done — or due again later:

- delivered → ``outbox_done``;
- ``DeliveryFailed`` with ``retry_after`` → due again after that many seconds;
- ``DeliveryFailed`` without it → exponential backoff (``retry_delay``: 10 s,
  doubling with each try, at most 10 min, less up to a fifth at random so
  that many items failed together do not all come back at once);
- ``DeliveryFailed(permanent=True)`` → given up: done, with an error logged
  naming the notifier, the notification and the reason.

When nothing is due the task sleeps until the earliest due time it knows of
(items it retried, items ``put`` through it), until ``wake()``, or at most
``IDLE_CHECK_S`` — the store may hold items due later that it never saw
(put before a restart, or by another daemon sharing the store).

Delivery is at least once: if the store fails to mark a delivered item done,
it is delivered again later. Every notification carries a stable id for
endpoints to drop duplicates by.

Error handling: any other exception from a notifier (a bug in a plugin) is
logged with its traceback and treated as a retryable failure, so a buggy
plugin never stops delivery of later notifications. A notifier that hangs is
abandoned after ``DELIVER_DEADLINE_S`` and retried. A store error
(``ProviderError``) is logged and the loop tries again after
``STORAGE_PAUSE_S``. An item whose payload is not a notification is logged
with its payload and marked done (retrying cannot mend it).

What it is not: the decision of what to notify (``waihu.notify.leads``), the
message format (each notifier's), or the storage (``CampaignStore``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import trio

from waihu.api import (
    CampaignStore,
    DeliveryFailed,
    Notification,
    Notifier,
    OutboxItem,
    ProviderError,
)

from .leads import notification_from_json, notification_to_json

__all__ = [
    "BACKOFF_FIRST_S",
    "BACKOFF_MAX_S",
    "IDLE_CHECK_S",
    "OutboxDelivery",
    "retry_delay",
]

log = logging.getLogger("waihu.notify")

BATCH = 20  # items fetched per query; one at a time would be a query per delivery
BACKOFF_FIRST_S = 10.0  # wait after a first failure without retry_after
BACKOFF_MAX_S = 600.0  # backoff cap: a recovered endpoint hears from us within 10 min
BACKOFF_JITTER = 0.2  # up to this fraction is taken off each delay, at random
IDLE_CHECK_S = 30.0  # longest sleep with nothing due: picks up items this task never saw
MIN_RETRY_S = 1.0  # a retry_after of 0 must not turn the loop into a busy one
STORAGE_PAUSE_S = 5.0  # pause after a store error before trying the store again
# A deliver() still running after this long is abandoned and retried. Generous: a notifier
# may wait inside deliver for its own rate limit (WeChat Work: up to a minute or so).
DELIVER_DEADLINE_S = 600.0


def retry_delay(tries: int, *, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``tries``-th failure in a row (1 for the first).

    ``BACKOFF_FIRST_S`` doubled for each earlier failure, at most
    ``BACKOFF_MAX_S``, less a random part of up to ``BACKOFF_JITTER`` of it.
    """
    doublings = min(max(tries, 1) - 1, 32)  # 2**32 × 10 s is past any cap; no huge floats
    full = min(BACKOFF_FIRST_S * 2**doublings, BACKOFF_MAX_S)
    return full * (1.0 - BACKOFF_JITTER * rand())


class OutboxDelivery:
    """Delivers the outbox items of notifier ``name`` through ``notifier``, one at a time.

    ``now`` gives the time the store's due times are in (seconds since the
    epoch); tests pass one that follows trio's mock clock.
    """

    def __init__(
        self,
        store: CampaignStore,
        name: str,
        notifier: Notifier,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.name = name
        self.notifier = notifier
        self.now = now
        self._wakeup = trio.Event()
        self._next_due: float | None = None  # earliest due time known to be waiting
        self.delivered = 0  # counts, for status and tests
        self.failed = 0
        self.given_up = 0

    def wake(self) -> None:
        """Look at the outbox now (something was put). Safe to call from any trio task."""
        self._wakeup.set()

    async def put(self, notification: Notification) -> int:
        """Commit ``notification`` to the outbox, due now, and wake the loop; returns its id.

        Raises ProviderError if the store cannot keep it (the caller must know).
        """
        due = self.now()
        item_id = await self.store.outbox_put(
            self.name, notification_to_json(notification), due_at=due
        )
        self._expect(due)
        self.wake()
        return item_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver due items until cancelled; ``started`` at once (the outbox is durable)."""
        task_status.started()
        while True:
            # a fresh event before looking: a wake() from now on is not lost
            self._wakeup = trio.Event()
            try:
                await self._deliver_due()
            except ProviderError as exc:
                log.error(
                    "notify.%s: outbox: %s; trying again in %.0f s", self.name, exc, STORAGE_PAUSE_S
                )
                await trio.sleep(STORAGE_PAUSE_S)
                continue
            await self._idle()

    async def _deliver_due(self) -> None:
        """Deliver everything due now, batch after batch."""
        while True:
            now = self.now()
            if self._next_due is not None and self._next_due <= now:
                self._next_due = None  # this query takes care of it
            items = await self.store.outbox_due(self.name, now=now, limit=BATCH)
            if not items:
                return
            for item in items:
                await self._deliver(item)

    async def _idle(self) -> None:
        """Sleep until the earliest known due time, a wake(), or IDLE_CHECK_S."""
        delay = IDLE_CHECK_S
        if self._next_due is not None:
            delay = min(delay, max(0.0, self._next_due - self.now()))
        with trio.move_on_after(delay):
            await self._wakeup.wait()

    def _expect(self, due: float) -> None:
        if self._next_due is None or due < self._next_due:
            self._next_due = due

    async def _deliver(self, item: OutboxItem) -> None:
        try:
            notification = notification_from_json(item.payload)
        except ValueError as exc:
            log.error(
                "notify.%s: outbox item %d dropped, %s: %r",
                self.name,
                item.id,
                exc,
                dict(item.payload),
            )
            self.given_up += 1
            await self.store.outbox_done(item.id, at=self.now())
            return
        failure: DeliveryFailed | None = None
        with trio.move_on_after(DELIVER_DEADLINE_S) as deadline:
            try:
                await self.notifier.deliver(notification)
            except DeliveryFailed as exc:
                failure = exc
            except Exception as exc:  # a plugin's bug: log it, keep delivering
                log.exception("notify.%s: deliver raised for %s", self.name, notification.id)
                failure = DeliveryFailed(f"{type(exc).__name__}: {exc}")
        if deadline.cancelled_caught:
            failure = DeliveryFailed(f"no answer after {DELIVER_DEADLINE_S:.0f} s")
        if failure is None:
            self.delivered += 1
            await self.store.outbox_done(item.id, at=self.now())
        else:
            await self._failed(item, notification, failure)

    async def _failed(
        self, item: OutboxItem, notification: Notification, failure: DeliveryFailed
    ) -> None:
        if failure.permanent:
            log.error(
                "notify.%s: gave up on %s (%s, outbox item %d) after %d tries: %s",
                self.name,
                notification.id,
                notification.kind,
                item.id,
                item.tries + 1,
                failure,
            )
            self.given_up += 1
            await self.store.outbox_done(item.id, at=self.now())
            return
        self.failed += 1
        if failure.retry_after is not None:
            delay = max(MIN_RETRY_S, failure.retry_after)
        else:
            delay = retry_delay(item.tries + 1)
        due = self.now() + delay
        log.warning(
            "notify.%s: %s not delivered (try %d): %s; next try in %.0f s",
            self.name,
            notification.id,
            item.tries + 1,
            failure,
            delay,
        )
        await self.store.outbox_retry(item.id, due_at=due, error=str(failure))
        self._expect(due)
