"""The retry policy: after an attempt's outcome, is the contact done or dialled again when?

Each retryable outcome has a rule: how long to wait before the next attempt
and how many attempts that outcome allows in all. The campaign's overall
``max_attempts`` caps every rule. Defaults:

    outcome       delay      attempts
    busy          30 min     3
    no_answer     60 min     3
    unreachable   120 min    2
    failed        10 min     2
    interrupted   10 min     3
    switched_off  120 min    3
    voicemail     60 min     3

The outcomes in ``waihu.api.FINAL_OUTCOMES`` (answered, rejected,
invalid_number, opted_out) are never retried; neither is an outcome with no
rule. ``decide`` takes the time as a float and reads no clock.

What it is not: the calling windows (a retry due at night waits for the
window: the scheduler asks ``windows``), or a store of attempts.

Error handling: a policy with a rule for an unknown or final outcome, a
negative delay or fewer than one attempt raises ValueError when built;
``decide`` raises ValueError for an unknown outcome or fewer than one attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from waihu.api import FINAL_OUTCOMES, OUTCOMES, ContactState, at_least

__all__ = ["DEFAULT_MAX_ATTEMPTS", "DEFAULT_RULES", "RetryPolicy", "RetryRule"]

MINUTE = 60.0  # seconds


@attrs.frozen
class RetryRule:
    """Wait ``delay`` seconds before redialling; at most ``max_attempts`` attempts in all."""

    delay: float = attrs.field(validator=at_least(0))
    max_attempts: int = attrs.field(validator=at_least(1))


DEFAULT_RULES: Mapping[str, RetryRule] = MappingProxyType(
    {
        "busy": RetryRule(30 * MINUTE, 3),  # a busy line frees up soon
        "no_answer": RetryRule(60 * MINUTE, 3),  # out or occupied: try another hour
        "unreachable": RetryRule(120 * MINUTE, 2),  # off or out of coverage: give it time
        "failed": RetryRule(10 * MINUTE, 2),  # our or the trunk's fault: once more, soon
        "interrupted": RetryRule(10 * MINUTE, 3),  # the daemon stopped: not the callee's doing
        # a carrier said the phone is off (关机): like unreachable, it is back on later
        "switched_off": RetryRule(120 * MINUTE, 3),
        # voicemail or a call assistant took it: the callee was away, like no_answer
        "voicemail": RetryRule(60 * MINUTE, 3),
    }
)
DEFAULT_MAX_ATTEMPTS = 3


def _check_rules(_inst: Any, _attribute: attrs.Attribute[Any], rules: Mapping[str, Any]) -> None:
    for outcome in rules:
        if outcome not in OUTCOMES:
            raise ValueError(f"rules: unknown outcome {outcome!r} ({', '.join(OUTCOMES)})")
        if outcome in FINAL_OUTCOMES:
            raise ValueError(f"rules: {outcome!r} is final and is never retried")


@attrs.frozen
class RetryPolicy:
    """Per-outcome retry rules under an overall cap on attempts per contact."""

    rules: Mapping[str, RetryRule] = attrs.field(default=DEFAULT_RULES, validator=_check_rules)
    max_attempts: int = attrs.field(default=DEFAULT_MAX_ATTEMPTS, validator=at_least(1))

    def decide(self, outcome: str, attempts: int, now: float) -> tuple[ContactState, float]:
        """What becomes of a contact whose latest attempt ended with ``outcome`` at ``now``.

        ``attempts`` counts the attempts made so far, this one included. Returns
        ``("done", now)``, or ``("pending", now + delay)`` when the outcome has a
        rule and neither the rule's nor the overall attempt limit is reached.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r} ({', '.join(OUTCOMES)})")
        if attempts < 1:
            raise ValueError(f"attempts must count this one (at least 1), not {attempts}")
        rule = None if outcome in FINAL_OUTCOMES else self.rules.get(outcome)
        if rule is None or attempts >= min(rule.max_attempts, self.max_attempts):
            return "done", now
        return "pending", now + rule.delay
