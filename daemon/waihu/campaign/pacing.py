"""Pacing: a token bucket that spaces call attempts to a rate per minute.

``take(now)`` either spends a token (returns 0.0: dial now) or says how many
seconds until one is due (returns the wait, spending nothing). Tokens accrue
at ``rate_per_minute / 60`` per second up to ``burst``; the bucket starts
full, so a campaign may place ``burst`` calls at once and then one every
``60 / rate_per_minute`` seconds.

It is kept as the "theoretical arrival time" of the next token (GCRA), which
is the same bucket counted without fractions of tokens: at 20 calls a minute
the due times are exact multiples of 3 s and never drift by rounding.

The time is a float passed in; the bucket reads no clock. If it goes
backwards (a wall-clock step), the schedule moves back with it: the bucket
neither mints tokens for time that did not pass nor stalls until the clock
catches up.

What it is not: the limit on simultaneous calls (the campaign's ``lines``),
or a timer — the caller sleeps for the returned wait.

Error handling: a rate ≤ 0 or a burst < 1 raises ValueError.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]

SECONDS_PER_MINUTE = 60.0


class TokenBucket:
    """At most ``burst`` takes at once, then ``rate_per_minute`` takes a minute."""

    def __init__(self, rate_per_minute: float, burst: int = 1) -> None:
        if not rate_per_minute > 0:
            raise ValueError(f"rate_per_minute must be greater than 0, not {rate_per_minute}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self._interval = SECONDS_PER_MINUTE / rate_per_minute  # seconds per token
        self._tolerance = (burst - 1) * self._interval  # how far ahead the schedule may run
        self._due: float | None = None  # from when the bucket is full again; None: full now
        self._last: float | None = None  # the latest ``now`` seen, to notice a clock step

    def take(self, now: float) -> float:
        """Spend a token and return 0.0, or return the seconds until one is available."""
        if self._last is not None and now < self._last and self._due is not None:
            self._due -= self._last - now  # the clock stepped back: shift, mint nothing
        self._last = now
        due = now if self._due is None else max(self._due, now)
        wait = due - self._tolerance - now
        if wait > 0:
            return wait
        self._due = due + self._interval
        return 0.0
