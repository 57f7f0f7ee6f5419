"""Delivery decisions: missed claims, refusals before posting, next steps, prices, pause, in-flight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.delivery import rules

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=7)
EARLIER = NOW - timedelta(seconds=3)


@pytest.mark.parametrize(
    ("status", "not_before", "lease_until", "action", "seconds"),
    [
        (None, None, None, "drop", 0),
        ("succeeded", None, None, "drop", 0),
        ("failed", None, LATER, "drop", 0),
        ("posting", None, LATER, "park", 7),  # someone is posting: wait for the lease to end
        ("requested", LATER, None, "park", 7),  # an early copy of a retry waits for its time
        ("posting", None, EARLIER, "park", 1),  # lease over but claim lost: look again soon
        ("requested", None, None, "park", 1),
    ],
)
def test_after_missed_claim(status, not_before, lease_until, action, seconds):
    missed = rules.after_missed_claim(status, NOW, not_before=not_before, lease_until=lease_until)
    assert (missed.action, missed.seconds if action == "park" else 0) == (action, seconds)


@pytest.mark.parametrize(
    ("seconds", "tier"),
    [
        (0.2, 1),
        (1, 1),
        (4.9, 1),
        (5, 5),
        (7, 5),
        (15, 15),
        (59, 30),
        (10_000, 3600),
    ],
)
def test_park_tier_never_overshoots_beyond_the_shortest_tier(seconds, tier):
    assert rules.park_tier(seconds) == tier


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (dict(account_known=False), "no longer in the catalog"),
        (dict(account_active=False), "inactive"),
        (dict(paused=True, paused_reason="10 consecutive failed attempts"), "paused (10 consecutive"),
        (dict(paused=True), "paused (by an administrator)"),
        (dict(attempt=7, retry_count=3), "gave up: 6 attempts already made"),
        (dict(attempt=6, retry_count=3), None),  # takeovers after crashes may exceed the budget a little
        (dict(attempt=4, retry_count=0), "gave up: 3 attempts already made"),
        (dict(), None),
    ],
)
def test_refusal_before_post(kw, expected):
    args = (
        dict(account_known=True, account_active=True, paused=False, paused_reason=None, attempt=1, retry_count=3) | kw
    )
    refusal = rules.refusal_before_post(**args)
    assert (refusal is None) if expected is None else (expected in (refusal or ""))


@pytest.mark.parametrize(
    ("outcome", "attempt", "count", "paused", "step"),
    [
        ("accepted", 1, 3, False, "succeed"),
        ("accepted", 4, 3, True, "succeed"),
        ("rejected", 1, 3, False, "fail"),  # a buyer's no is never retried
        ("transient", 1, 3, False, "retry"),
        ("transient", 3, 3, False, "retry"),
        ("transient", 4, 3, False, "fail"),  # count retries = count + 1 attempts
        ("transient", 1, 0, False, "fail"),
        ("transient", 1, 3, True, "fail"),  # a paused account is not retried
    ],
)
def test_next_step(outcome, attempt, count, paused, step):
    assert rules.next_step(outcome, attempt, count, paused=paused) == step


@pytest.mark.parametrize(
    ("outcome", "paused", "expected"),
    [
        ("transient", False, "HTTP 503 (gave up after 4 attempts)"),
        ("transient", True, "HTTP 503 (account paused after repeated failures; attempt 4)"),
        ("rejected", False, "HTTP 503"),
    ],
)
def test_failure_reason(outcome, paused, expected):
    assert rules.failure_reason("HTTP 503", outcome, 4, paused=paused) == expected


@pytest.mark.parametrize(("outcome", "counts"), [("transient", True), ("rejected", False), ("accepted", False)])
def test_only_technical_failures_count_toward_pause(outcome, counts):
    assert rules.counts_as_failure(outcome) is counts


@pytest.mark.parametrize(("failures", "threshold", "pause"), [(2, 3, False), (3, 3, True), (4, 3, True), (1, 1, True)])
def test_should_pause(failures, threshold, pause):
    assert rules.should_pause(failures, threshold) is pause


D = Decimal


@pytest.mark.parametrize(
    ("allow", "offered", "problem", "price", "note"),
    [
        (True, None, None, D("25.00"), None),
        (False, None, None, D("25.00"), None),
        (True, D("31.50"), None, D("31.50"), "buyer confirmed price 31.50 (account price 25.00)"),
        (False, D("31.50"), None, D("25.00"), "ignored: Allow Confirm Price is off (buyer said 31.50)"),
        (True, None, "price '-3' is negative", D("25.00"), "refused: price '-3' is negative"),
        (False, None, "price 'abc' is not a number", D("25.00"), "ignored"),
    ],
)
def test_settle_price_from_the_response(allow, offered, problem, price, note):
    final, text = rules.settle_price(allow, D("25.00"), offered, problem)
    assert final == price
    assert (text is None) if note is None else (note in (text or ""))


@pytest.mark.parametrize(
    ("allow", "status", "offered", "outcome", "price", "reason"),
    [
        (True, "succeeded", "31.5", "applied", D("31.50"), None),
        (True, "succeeded", 18, "applied", D("18.00"), None),
        (True, "succeeded", "$1,200.00", "applied", D("1200.00"), None),
        (True, "succeeded", 0, "applied", D("0.00"), None),
        (True, "succeeded", -1, "refused", None, "negative"),
        (True, "succeeded", "twelve", "refused", None, "not a number"),
        (True, "succeeded", None, "refused", None, "not a number"),
        (True, "succeeded", True, "refused", None, "not a number"),
        (True, "succeeded", "NaN", "refused", None, "not a number"),
        (True, "succeeded", "1e12", "refused", None, "too large"),
        (False, "succeeded", "31.5", "ignored", None, "Allow Confirm Price is off"),
        (False, "succeeded", "-1", "refused", None, "negative"),  # a bad price is refused either way
        (True, "failed", "31.5", "refused", None, "failed"),
        (True, "posting", "31.5", "wait", None, "still posting"),
        (True, "requested", "31.5", "wait", None, "still requested"),
    ],
)
def test_confirm_price_message(allow, status, offered, outcome, price, reason):
    decision = rules.confirm_price(allow, status, offered, D("25.00"))
    assert (decision.outcome, decision.price) == (outcome, price)
    assert (decision.reason is None) if reason is None else (reason in (decision.reason or ""))


@pytest.mark.parametrize(
    ("configured", "prefetch", "limit"),
    [
        (None, 32, 8),
        (None, 3, 1),
        (None, 1, 1),
        (4, 32, 4),
        (100, 32, 31),
        (1, 1, 1),
        (5, 2, 1),
    ],
)
def test_in_flight_limit_leaves_slots_for_other_buyers(configured, prefetch, limit):
    assert rules.in_flight_limit(configured, prefetch) == limit


def test_in_flight_counts_per_account_and_never_exceeds_the_limit():
    slots = rules.InFlight()
    assert [slots.try_acquire("slow", 2) for _ in range(3)] == [True, True, False]
    assert slots.try_acquire("fast", 2) is True
    slots.release("slow")
    assert slots.in_flight("slow") == 1 and slots.try_acquire("slow", 2) is True
    for _ in range(5):
        slots.release("fast")
    assert slots.in_flight("fast") == 0 and slots.try_acquire("fast", 1) is True


@pytest.mark.parametrize(
    ("typical", "waiting", "limit", "seconds"),
    [
        (None, 0, 8, rules.BUSY_PARK_SECONDS),  # nothing observed yet: the shortest wait
        (None, 500, 8, rules.BUSY_PARK_SECONDS),
        (0.01, 0, 8, rules.BUSY_PARK_SECONDS),  # a fast buyer: never below the shortest wait
        (2.0, 0, 8, rules.BUSY_PARK_SECONDS),  # 2 s / 8 slots: the next slot is 0.25 s away
        (2.0, 7, 8, 2.0),  # 8 leads ahead at 4 per second
        (2.0, 39, 8, 10.0),
        (2.0, 1000, 8, rules.BUSY_PARK_MAX_SECONDS),
        (1.0, 4, 1, 5.0),
        (1.0, 4, 0, 5.0),  # a zero limit is treated as one slot
    ],
)
def test_busy_park_waits_for_the_leads_ahead_at_the_buyers_pace(typical, waiting, limit, seconds):
    assert rules.busy_park_seconds(typical, waiting, limit) == pytest.approx(seconds)


def test_in_flight_learns_each_accounts_answer_time_and_forgets_parked_leads_that_came_back():
    slots = rules.InFlight()
    assert slots.typical_answer("slow") is None
    slots.observe("slow", 2.0)
    assert slots.typical_answer("slow") == 2.0
    slots.observe("slow", 1.0)
    assert slots.typical_answer("slow") == pytest.approx(2.0 - rules.ANSWER_TIME_WEIGHT)
    assert slots.typical_answer("fast") is None
    slots.parked("slow", until=105.0)
    slots.parked("slow", until=102.0)
    assert slots.waiting("slow", now=101.5) == 2
    assert slots.waiting("slow", now=103.0) == 1
    assert slots.waiting("slow", now=105.0) == 0
    assert slots.waiting("fast", now=0.0) == 0
