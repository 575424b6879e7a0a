"""RFC 3261 §17 timer values for SIP over UDP, in seconds.

Kept apart so transactions, dialogs and tests agree on one set of numbers.
Not for: ring timeouts or other call policy (those come from the caller).
"""

from __future__ import annotations

__all__ = ["T1", "T2", "TIMER_B", "TIMER_D", "TIMER_F", "TIMER_H", "TIMER_J"]

T1 = 0.5  # RTT estimate: first retransmission interval
T2 = 4.0  # cap on non-INVITE request and INVITE-response retransmission intervals
TIMER_B = 64 * T1  # INVITE transaction timeout
TIMER_F = 64 * T1  # non-INVITE transaction timeout
TIMER_D = 32.0  # keep re-ACKing retransmitted non-2xx finals this long (UDP ≥ 32 s)
TIMER_H = 64 * T1  # wait this long for the ACK of our final answer to an INVITE
TIMER_J = 64 * T1  # answer retransmitted non-INVITE requests from the cache this long
