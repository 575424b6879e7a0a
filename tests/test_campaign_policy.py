"""Campaign rules: SIP answer → outcome, retry decisions, pacing, the trunk breaker."""

from __future__ import annotations

import pytest

from waihu.api import FINAL_OUTCOMES, OUTCOMES
from waihu.campaign import outcomes
from waihu.campaign.breaker import CircuitBreaker
from waihu.campaign.outcomes import OUTCOME_TABLE, is_trunk_fault, outcome_for, render_table
from waihu.campaign.pacing import TokenBucket
from waihu.campaign.retry import RetryPolicy, RetryRule

NOW = 1_772_000_000.0  # an instant in 2026
MINUTE = 60.0

# ───────────────────────── outcomes ─────────────────────────

# Written out again, not read from the module: (row, sip_status, trunk_error, outcome, fault)
EXPECTED_ROWS = [
    ("trunk error", None, True, "failed", True),
    ("no status", None, False, "failed", False),
    (401, 401, False, "failed", True),
    (403, 403, False, "failed", True),
    (404, 404, False, "invalid_number", False),
    (407, 407, False, "failed", True),
    (408, 408, False, "no_answer", False),
    (410, 410, False, "invalid_number", False),
    (480, 480, False, "no_answer", False),
    (484, 484, False, "invalid_number", False),
    (485, 485, False, "invalid_number", False),
    (486, 486, False, "busy", False),
    (487, 487, False, "no_answer", False),
    ("4xx", 488, False, "failed", False),
    ("4xx", 400, False, "failed", False),
    ("4xx", 499, False, "failed", False),
    (500, 500, False, "failed", True),
    (502, 502, False, "unreachable", True),
    (503, 503, False, "failed", True),
    (504, 504, False, "unreachable", True),
    ("5xx", 501, False, "failed", True),
    ("5xx", 580, False, "failed", True),
    (600, 600, False, "busy", False),
    (603, 603, False, "rejected", False),
    (604, 604, False, "invalid_number", False),
    (607, 607, False, "rejected", False),
    (608, 608, False, "rejected", False),
    ("6xx", 606, False, "rejected", False),
    ("6xx", 699, False, "rejected", False),
    ("other", 302, False, "failed", False),
    ("other", 700, False, "failed", False),
]


@pytest.mark.parametrize(("row", "status", "trunk_error", "outcome", "fault"), EXPECTED_ROWS)
def test_every_row_of_the_table(
    row: object, status: int | None, trunk_error: bool, outcome: str, fault: bool
) -> None:
    assert outcome_for(answered=False, sip_status=status, trunk_error=trunk_error) == outcome
    assert is_trunk_fault(status, trunk_error) is fault
    assert OUTCOME_TABLE[row].outcome == outcome  # type: ignore[index]


def test_the_expected_rows_cover_the_whole_table() -> None:
    assert {row for row, *_ in EXPECTED_ROWS} | {"answered"} == set(OUTCOME_TABLE)


def test_answered_wins_over_everything() -> None:
    assert outcome_for(answered=True, sip_status=200) == "answered"
    assert outcome_for(answered=True, sip_status=None) == "answered"
    assert outcome_for(answered=True, sip_status=503, trunk_error=True) == "answered"


def test_a_trunk_error_wins_over_a_status() -> None:
    assert outcome_for(answered=False, sip_status=486, trunk_error=True) == "failed"
    assert is_trunk_fault(486, True)


def test_table_outcomes_are_known_and_scheduler_only_outcomes_are_absent() -> None:
    produced = {rule.outcome for rule in OUTCOME_TABLE.values()}
    assert produced <= set(OUTCOMES)
    assert produced.isdisjoint({"interrupted", "opted_out"})
    # only the who-answered screen files these (waihu.who_answered), never a SIP answer
    assert produced.isdisjoint({"switched_off", "voicemail"})


def test_module_docstring_shows_the_table_as_rendered() -> None:
    table = render_table()
    assert len(table.splitlines()) == len(OUTCOME_TABLE) + 2  # header and rule
    indented = "\n".join("    " + line for line in table.splitlines())
    assert indented in (outcomes.__doc__ or "")


# ───────────────────────── retry ─────────────────────────


@pytest.mark.parametrize(
    ("outcome", "delay_minutes", "allowed"),
    [("busy", 30, 3), ("no_answer", 60, 3), ("unreachable", 120, 2), ("failed", 10, 2)],
)
def test_default_rules_delay_then_stop_at_their_attempts(
    outcome: str, delay_minutes: float, allowed: int
) -> None:
    policy = RetryPolicy()
    for attempts in range(1, allowed):
        assert policy.decide(outcome, attempts, NOW) == ("pending", NOW + delay_minutes * MINUTE)
    assert policy.decide(outcome, allowed, NOW) == ("done", NOW)
    assert policy.decide(outcome, allowed + 1, NOW) == ("done", NOW)


def test_interrupted_is_retried_soon() -> None:
    policy = RetryPolicy()
    assert policy.decide("interrupted", 1, NOW) == ("pending", NOW + 10 * MINUTE)
    assert policy.decide("interrupted", 2, NOW) == ("pending", NOW + 10 * MINUTE)
    assert policy.decide("interrupted", 3, NOW) == ("done", NOW)


@pytest.mark.parametrize("outcome", sorted(FINAL_OUTCOMES))
def test_final_outcomes_are_never_retried(outcome: str) -> None:
    assert RetryPolicy().decide(outcome, 1, NOW) == ("done", NOW)


def test_the_overall_cap_limits_a_generous_rule() -> None:
    policy = RetryPolicy({"busy": RetryRule(5 * MINUTE, 10)}, max_attempts=4)
    assert policy.decide("busy", 3, NOW) == ("pending", NOW + 5 * MINUTE)
    assert policy.decide("busy", 4, NOW) == ("done", NOW)


def test_the_rule_limits_under_a_generous_cap() -> None:
    policy = RetryPolicy({"busy": RetryRule(5 * MINUTE, 2)}, max_attempts=10)
    assert policy.decide("busy", 1, NOW)[0] == "pending"
    assert policy.decide("busy", 2, NOW) == ("done", NOW)


def test_an_outcome_without_a_rule_is_done() -> None:
    policy = RetryPolicy({"busy": RetryRule(5 * MINUTE, 3)})
    assert policy.decide("no_answer", 1, NOW) == ("done", NOW)


def test_a_single_attempt_cap_never_retries() -> None:
    assert RetryPolicy(max_attempts=1).decide("busy", 1, NOW) == ("done", NOW)


def test_decide_refuses_unknown_outcomes_and_zero_attempts() -> None:
    with pytest.raises(ValueError, match="unknown outcome 'bussy'"):
        RetryPolicy().decide("bussy", 1, NOW)
    with pytest.raises(ValueError, match=r"\(at least 1\), not 0"):
        RetryPolicy().decide("busy", 0, NOW)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RetryPolicy({"answered": RetryRule(60, 2)}), "'answered' is final"),
        (lambda: RetryPolicy({"bussy": RetryRule(60, 2)}), "unknown outcome 'bussy'"),
        (lambda: RetryPolicy(max_attempts=0), "max_attempts: must be at least 1"),
        (lambda: RetryRule(-1, 2), "delay: must be at least 0"),
        (lambda: RetryRule(60, 0), "max_attempts: must be at least 1"),
    ],
)
def test_bad_policies_are_refused(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


# ───────────────────────── pacing ─────────────────────────


def test_sixty_a_minute_is_one_a_second_exactly() -> None:
    bucket = TokenBucket(60)
    assert bucket.take(NOW) == 0.0
    assert bucket.take(NOW) == pytest.approx(1.0)
    assert bucket.take(NOW + 0.5) == pytest.approx(0.5)
    for second in range(1, 100):
        assert bucket.take(NOW + second - 0.01) == pytest.approx(0.01)
        assert bucket.take(NOW + second) == 0.0


def test_waiting_the_returned_time_always_succeeds() -> None:
    bucket = TokenBucket(20)  # one every 3 s
    now, taken = NOW + 0.123, 0
    while taken < 50:
        wait = bucket.take(now)
        if wait:
            now += wait
        else:
            taken += 1
    assert now == pytest.approx(NOW + 0.123 + 49 * 3.0)


def test_burst_allows_that_many_at_once_then_paces() -> None:
    bucket = TokenBucket(30, burst=5)  # one every 2 s
    assert [bucket.take(NOW) for _ in range(5)] == [0.0] * 5
    assert bucket.take(NOW) == pytest.approx(2.0)
    assert bucket.take(NOW + 2) == 0.0
    assert bucket.take(NOW + 2) == pytest.approx(2.0)


def test_an_idle_bucket_refills_only_to_its_burst() -> None:
    bucket = TokenBucket(30, burst=3)
    assert bucket.take(NOW) == 0.0
    later = NOW + 3600
    assert [bucket.take(later) for _ in range(3)] == [0.0] * 3
    assert bucket.take(later) == pytest.approx(2.0)


def test_time_going_backwards_mints_no_tokens() -> None:
    bucket = TokenBucket(60)
    assert bucket.take(NOW) == 0.0
    assert bucket.take(NOW - 3600) == pytest.approx(1.0)  # a clock step back an hour
    assert bucket.take(NOW - 3600) == pytest.approx(1.0)
    assert bucket.take(NOW - 3600 + 1) == 0.0  # paced from the new reading, no stall
    assert bucket.take(NOW - 3600 + 1) == pytest.approx(1.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-5, 1), (10, 0)])
def test_bad_bucket_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


# ───────────────────────── breaker ─────────────────────────


def trunk_failures(breaker: CircuitBreaker, count: int, status: int | None = 503) -> list[bool]:
    return [breaker.record("failed", status, status is None) for _ in range(count)]


def test_trips_at_the_threshold_exactly_once() -> None:
    breaker = CircuitBreaker(threshold=3)
    assert trunk_failures(breaker, 2) == [False, False]
    assert not breaker.tripped and breaker.reason is None
    assert trunk_failures(breaker, 1) == [True]
    assert breaker.tripped
    assert breaker.reason == "3 consecutive trunk failures (last: 503)"
    assert trunk_failures(breaker, 5) == [False] * 5  # calls already out: no second trip
    assert breaker.reason == "3 consecutive trunk failures (last: 503)"


def test_default_threshold_is_ten_and_names_a_trunk_error() -> None:
    breaker = CircuitBreaker()
    assert trunk_failures(breaker, 9) == [False] * 9
    assert trunk_failures(breaker, 1, status=None) == [True]
    assert breaker.reason == "10 consecutive trunk failures (last: trunk error)"


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("answered", 200), ("busy", 486), ("invalid_number", 404), ("no_answer", 408)],
)
def test_a_result_that_is_not_a_trunk_fault_resets_the_count(outcome: str, status: int) -> None:
    breaker = CircuitBreaker(threshold=3)
    trunk_failures(breaker, 2)
    assert not breaker.record(outcome, status, False)
    assert trunk_failures(breaker, 2) == [False, False]
    assert trunk_failures(breaker, 1) == [True]


def test_answered_resets_even_with_an_odd_status() -> None:
    breaker = CircuitBreaker(threshold=2)
    trunk_failures(breaker, 1)
    assert not breaker.record("answered", 503, False)
    assert not breaker.tripped and breaker.count == 0
    assert trunk_failures(breaker, 1) == [False]


def test_interrupted_attempts_neither_count_nor_reset() -> None:
    breaker = CircuitBreaker(threshold=3)
    trunk_failures(breaker, 2)
    assert not breaker.record("interrupted", None, False)
    assert not breaker.record("interrupted", 503, True)
    assert trunk_failures(breaker, 1) == [True]


def test_mixed_trunk_faults_count_together_and_reset_closes() -> None:
    breaker = CircuitBreaker(threshold=4)
    results = [
        breaker.record("failed", 500, False),
        breaker.record("unreachable", 502, False),
        breaker.record("failed", 401, False),
        breaker.record("unreachable", 504, False),
    ]
    assert results == [False, False, False, True]
    assert breaker.reason == "4 consecutive trunk failures (last: 504)"
    breaker.reset()
    assert not breaker.tripped and breaker.reason is None and breaker.count == 0
    assert trunk_failures(breaker, 3) == [False] * 3
    assert trunk_failures(breaker, 1) == [True]


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threshold must be at least 1"):
        CircuitBreaker(threshold=0)


def test_the_man_page_shows_the_outcome_table_as_the_code_has_it() -> None:
    """waihud(8) documents the outcomes for operators; it must not drift from the table."""
    from pathlib import Path

    from waihu.campaign.outcomes import render_table

    page = (Path(__file__).resolve().parents[1] / "man" / "waihud.8").read_text(encoding="utf-8")
    assert render_table() in page
