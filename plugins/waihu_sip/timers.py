"""RFC 3261 §17 timer values (and RFC 6026's L and M), in seconds.

Kept apart so transactions, dialogs and tests agree on one set of numbers.
``TimerSet`` derives every transaction timer from T1, T2 and T4 and knows
which ones a reliable transport (TCP/TLS) sets to zero (RFC 3261 Table 4).

What it is not: ring timeouts or other call policy (those come from the caller).
"""

from __future__ import annotations

import attrs

__all__ = [
    "T1",
    "T2",
    "T4",
    "TIMER_B",
    "TIMER_D",
    "TIMER_F",
    "TIMER_H",
    "TIMER_J",
    "TimerSet",
]

T1 = 0.5  # RTT estimate: first retransmission interval
T2 = 4.0  # cap on non-INVITE request and INVITE-response retransmission intervals
T4 = 5.0  # longest time a message stays in the network
TIMER_B = 64 * T1  # INVITE transaction timeout
TIMER_F = 64 * T1  # non-INVITE transaction timeout
TIMER_D = 32.0  # keep re-ACKing retransmitted non-2xx finals this long (UDP ≥ 32 s)
TIMER_H = 64 * T1  # wait this long for the ACK of our final answer to an INVITE
TIMER_J = 64 * T1  # answer retransmitted non-INVITE requests from the cache this long
TIMER_D_MIN_UDP = 32.0  # RFC 3261 §17.1.1.2: "at least 32 seconds for unreliable transports"
TRANSACTION_TIMEOUT_FACTOR = 64  # Timers B, F, H, L, M and J are 64·T1


@attrs.frozen
class TimerSet:
    """The timers of one transaction: base values and whether the transport is reliable.

    On a reliable transport nothing is retransmitted (``retransmits`` is
    False) and the wait-for-retransmissions timers D, I, J and K are zero.
    """

    reliable: bool = False
    t1: float = T1
    t2: float = T2
    t4: float = T4

    @property
    def retransmits(self) -> bool:
        """True when requests/responses are retransmitted (unreliable transports only)."""
        return not self.reliable

    @property
    def timeout(self) -> float:
        """64·T1: Timers B, F, H, L and M."""
        return TRANSACTION_TIMEOUT_FACTOR * self.t1

    @property
    def d(self) -> float:
        """Timer D: how long an INVITE client absorbs retransmitted non-2xx finals."""
        return 0.0 if self.reliable else max(TIMER_D_MIN_UDP, self.timeout)

    @property
    def i(self) -> float:
        """Timer I: how long an INVITE server absorbs ACK retransmissions."""
        return 0.0 if self.reliable else self.t4

    @property
    def j(self) -> float:
        """Timer J: how long a non-INVITE server answers retransmitted requests."""
        return 0.0 if self.reliable else self.timeout

    @property
    def k(self) -> float:
        """Timer K: how long a non-INVITE client absorbs retransmitted finals."""
        return 0.0 if self.reliable else self.t4
