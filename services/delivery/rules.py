"""Delivery decisions with no I/O: what to do after an attempt, with a missed claim, with a
buyer's price, and when an account has failed too often.

`posting.py` builds the buyer's request and judges the answer; this module decides what the
answer means for the delivery, the price and the account. Both are plain functions of their
arguments, tested with tables of cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from services.delivery.posting import parse_price
from shared.topology import DELAY_TIERS

# After the post only one short transaction remains; a consumer that has not finished this long
# after its timeout is presumed dead and its delivery may be taken over (fenced by attempt number).
LEASE_GRACE_SECONDS = 2.0
# A lead for an account already at its in-flight limit waits at least this long in the broker,
# and at most BUSY_PARK_MAX_SECONDS (an account that speeds up again is not kept waiting long).
BUSY_PARK_SECONDS = 1
BUSY_PARK_MAX_SECONDS = 60
# Weight of the newest post in an account's typical answer time (exponential moving average).
ANSWER_TIME_WEIGHT = 0.2
# Posts beyond the retry budget allowed for takeovers after a consumer died mid-post: the repeat
# carries the same Idempotency-Key, so it is safer than abandoning a lead the buyer may hold. The
# bound stops a lead that crashes its consumer every time from being posted forever.
TAKEOVER_ALLOWANCE = 2


# --- in-flight limits ----------------------------------------------------------------------------


def in_flight_limit(configured: int | None, prefetch: int) -> int:
    """Posts one account may have in flight in one process. Never the whole prefetch: a hanging
    buyer must leave consumer slots for the others."""
    ceiling = max(1, prefetch - 1)
    wanted = configured if configured is not None else max(1, prefetch // 4)
    return max(1, min(wanted, ceiling))


def busy_park_seconds(typical_answer_seconds: float | None, waiting: int, limit: int) -> float:
    """How long a lead for an account at its in-flight limit should wait in the broker: about
    the time until the leads already parked for it, and this one, get a slot at the pace the
    account answers. Parking every such lead for the shortest tier instead brings a slow buyer's
    whole backlog back every second, and that churn is what its slowness then costs the others."""
    if typical_answer_seconds is None:
        return BUSY_PARK_SECONDS
    wait = typical_answer_seconds * (waiting + 1) / max(1, limit)
    return min(BUSY_PARK_MAX_SECONDS, max(BUSY_PARK_SECONDS, wait))


class InFlight:
    """Counts posts in flight per delivery account, with each account's typical answer time and
    the leads this process parked for it. Never waits: a full account is reported so the caller
    can park the lead in the broker instead of holding a consumer slot."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._answer_seconds: dict[str, float] = {}
        self._parked_until: dict[str, list[float]] = {}

    def observe(self, account_id: str, seconds: float) -> None:
        """A post to the account took `seconds` (answered or timed out)."""
        typical = self._answer_seconds.get(account_id)
        self._answer_seconds[account_id] = (
            seconds if typical is None else (typical + ANSWER_TIME_WEIGHT * (seconds - typical))
        )

    def typical_answer(self, account_id: str) -> float | None:
        return self._answer_seconds.get(account_id)

    def parked(self, account_id: str, until: float) -> None:
        """A lead for the account was parked by this process until `until` (monotonic seconds).
        Returned leads are forgotten by `waiting`, which the caller asks before each park."""
        self._parked_until.setdefault(account_id, []).append(until)

    def waiting(self, account_id: str, now: float) -> int:
        """Leads this process parked for the account that are still in the broker."""
        pending = [t for t in self._parked_until.get(account_id, ()) if t > now]
        if pending:
            self._parked_until[account_id] = pending
        else:
            self._parked_until.pop(account_id, None)
        return len(pending)

    def try_acquire(self, account_id: str, limit: int) -> bool:
        count = self._counts.get(account_id, 0)
        if count >= limit:
            return False
        self._counts[account_id] = count + 1
        return True

    def release(self, account_id: str) -> None:
        count = self._counts.get(account_id, 0) - 1
        if count > 0:
            self._counts[account_id] = count
        else:
            self._counts.pop(account_id, None)

    def in_flight(self, account_id: str) -> int:
        return self._counts.get(account_id, 0)


def park_tier(seconds: float) -> int:
    """The delay queue to wait in for about `seconds`: the longest tier not beyond it (at least
    the shortest), so a parked message comes back early rather than late and simply parks again."""
    fitting = [t for t in DELAY_TIERS if t <= seconds]
    return fitting[-1] if fitting else DELAY_TIERS[0]


# --- claims --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Missed:
    """What to do with a delivery message whose claim failed."""

    action: Literal["drop", "park"]
    seconds: float = 0.0
    why: str = ""


def after_missed_claim(
    status: str | None, now: datetime, *, not_before: datetime | None, lease_until: datetime | None
) -> Missed:
    if status is None:
        return Missed("drop", why="no such delivery")
    if status in ("succeeded", "failed"):
        return Missed("drop", why=f"delivery already {status}")
    if status == "posting" and lease_until is not None and lease_until > now:
        # Someone holds it; if that consumer died, this copy takes over once the lease ends.
        return Missed("park", (lease_until - now).total_seconds(), "another consumer is posting it")
    if status == "requested" and not_before is not None and not_before > now:
        return Missed("park", (not_before - now).total_seconds(), "retry not due yet")
    # The row changed between the claim and this look: try again shortly.
    return Missed("park", DELAY_TIERS[0], "delivery changed while claiming")


def refusal_before_post(
    *,
    account_known: bool,
    account_active: bool,
    paused: bool,
    paused_reason: str | None,
    attempt: int,
    retry_count: int,
) -> str | None:
    """Why a claimed delivery must fail without posting, or None to post."""
    if not account_known:
        return "delivery account no longer in the catalog"
    if not account_active:
        return "delivery account is inactive"
    if paused:
        return f"delivery account is paused ({paused_reason or 'by an administrator'})"
    if attempt > retry_count + 1 + TAKEOVER_ALLOWANCE:
        # Only takeovers after crashed consumers get here, again and again.
        return f"gave up: {attempt - 1} attempts already made"
    return None


# --- after an attempt ----------------------------------------------------------------------------


def next_step(outcome: str, attempt: int, retry_count: int, *, paused: bool) -> Literal["succeed", "retry", "fail"]:
    if outcome == "accepted":
        return "succeed"
    if outcome == "transient" and attempt <= retry_count and not paused:
        return "retry"
    return "fail"


def failure_reason(reason: str | None, outcome: str, attempt: int, *, paused: bool) -> str:
    text = reason or "delivery failed"
    if outcome == "transient":
        if paused:
            return f"{text} (account paused after repeated failures; attempt {attempt})"
        return f"{text} (gave up after {attempt} attempts)"
    return text


def counts_as_failure(outcome: str) -> bool:
    """Only technical failures (no answer, 5xx, 429) count toward auto-pause. A buyer's refusal is
    an answer: the endpoint works, so it resets the count like a success."""
    return outcome == "transient"


def should_pause(consecutive_failures: int, threshold: int) -> bool:
    return consecutive_failures >= threshold


# --- prices --------------------------------------------------------------------------------------


def settle_price(
    allow_confirm_price: bool, account_price: Decimal, offered: Decimal | None, problem: str | None
) -> tuple[Decimal, str | None]:
    """The delivery's final price after the buyer's answer, and what the log should say."""
    if offered is None and problem is None:
        return account_price, None
    if not allow_confirm_price:
        shown = offered if offered is not None else problem
        return account_price, f"confirmed price ignored: Allow Confirm Price is off (buyer said {shown})"
    if problem is not None:
        return account_price, f"confirmed price refused: {problem}"
    assert offered is not None
    return offered, f"buyer confirmed price {offered} (account price {account_price})"


@dataclass(frozen=True)
class PriceDecision:
    outcome: Literal["applied", "ignored", "refused", "wait"]
    price: Decimal | None = None
    reason: str | None = None


def confirm_price(allow_confirm_price: bool, status: str, offered: Any, current: Decimal) -> PriceDecision:
    """A confirm-price message for a delivery in `status` currently priced `current`."""
    price, problem = parse_price(offered)
    if problem is not None:
        return PriceDecision("refused", reason=problem)
    if not allow_confirm_price:
        return PriceDecision("ignored", reason=f"Allow Confirm Price is off; {price} ignored, price stays {current}")
    if status == "failed":
        return PriceDecision("refused", reason="the delivery failed; there is nothing to price")
    if status != "succeeded":
        # Confirming now would be overwritten when the post finishes: wait for it.
        return PriceDecision("wait", reason=f"delivery is still {status}")
    return PriceDecision("applied", price=price)
