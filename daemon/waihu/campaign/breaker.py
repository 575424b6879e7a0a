"""The trunk circuit breaker: pause a campaign after a run of trunk faults.

Every finished attempt is recorded. A trunk fault (``outcomes.is_trunk_fault``:
no response, 5xx, refused credentials) adds one to a count of *consecutive*
faults; any other result — answered, busy, not found… — shows the trunk
works and sets the count back to zero. When the count reaches ``threshold``
the breaker trips: ``record`` returns True that once, and ``tripped`` and
``reason`` stay set until ``reset()`` (the operator resumes the campaign).
Results recorded while tripped (calls that were already ringing) change
nothing.

``interrupted`` attempts (the daemon stopped mid-call) say nothing about the
trunk and are ignored.

What it is not: the pause itself (the scheduler pauses the campaign and
publishes the reason) or a timer that half-opens after a while — resuming
is an operator's decision.
"""

from __future__ import annotations

from waihu.campaign.outcomes import is_trunk_fault

__all__ = ["DEFAULT_THRESHOLD", "CircuitBreaker"]

DEFAULT_THRESHOLD = 10  # a normal list rarely has ten trunk faults in a row; a dead trunk does
IGNORED_OUTCOMES = frozenset({"interrupted"})  # ended by our own stop, not by the trunk


class CircuitBreaker:
    """Counts consecutive trunk faults and trips at ``threshold``."""

    def __init__(self, threshold: int = DEFAULT_THRESHOLD) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, not {threshold}")
        self.threshold = threshold
        self.count = 0  # consecutive trunk faults so far
        self.tripped = False
        self.reason: str | None = None  # set when tripped: "10 consecutive trunk failures…"

    def record(self, outcome: str, sip_status: int | None, trunk_error: bool) -> bool:
        """Count one attempt's result; True exactly when this result trips the breaker."""
        if self.tripped or outcome in IGNORED_OUTCOMES:
            return False
        if outcome == "answered" or not is_trunk_fault(sip_status, trunk_error):
            self.count = 0
            return False
        self.count += 1
        if self.count < self.threshold:
            return False
        last = "trunk error" if trunk_error or sip_status is None else str(sip_status)
        self.tripped = True
        self.reason = f"{self.count} consecutive trunk failures (last: {last})"
        return True

    def reset(self) -> None:
        """Close the breaker again, with the count at zero."""
        self.count = 0
        self.tripped = False
        self.reason = None
