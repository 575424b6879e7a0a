"""A sliding-window send limit: at most N sends in any ``period`` seconds.

The WeChat Work group robot API accepts 20 messages a minute per robot and
answers errcode 45009 beyond that. Counting our own sends over a sliding
window (the times of the last N sends) keeps us under it in any minute the
server may count, calendar-aligned or not; ``block_until`` holds all sends
back after the server said 45009 anyway (another program using the same
robot key, say).

Sans-IO: the caller passes the time and does the waiting, so the rule is
tested without a clock.

What it is not: a queue. One caller at a time asks ``delay``, waits that
long, sends, then ``record``-s the send.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """Allows at most ``limit`` sends in any ``period`` seconds (plus ``margin``)."""

    def __init__(self, limit: int, period: float, *, margin: float = 0.0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.period = period + margin  # margin: the server may see our sends closer together
        self._sends: deque[float] = deque(maxlen=limit)  # times of the last `limit` sends
        self._blocked_until = float("-inf")

    def delay(self, now: float) -> float:
        """Seconds to wait from ``now`` before the next send is allowed (0 if at once)."""
        wait = self._blocked_until - now
        if len(self._sends) == self._sends.maxlen:
            # the oldest of the last `limit` sends must leave the window first
            wait = max(wait, self._sends[0] + self.period - now)
        return max(0.0, wait)

    def record(self, now: float) -> None:
        """A send happened at ``now``."""
        self._sends.append(now)

    def block_until(self, until: float) -> None:
        """Allow no send before ``until`` (the server said we sent too many)."""
        self._blocked_until = max(self._blocked_until, until)
