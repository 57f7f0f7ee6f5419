"""Delivery SQL: the delivery row's state machine, the delivery log, account pause state and
price confirmations.

The attempt number doubles as a fencing token: a consumer may finish or release only the attempt
it claimed, so a consumer presumed dead whose lease was taken over cannot overwrite the outcome.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from shared import sql
from shared.contracts.delivery import PriceConfirmationResult
from shared.outbox import NOTIFY_CHANNEL, Event, with_event
from shared.sql import Statement, statement


@dataclass(frozen=True)
class Claimed:
    """A delivery this consumer now holds: its attempt number (the fencing token) and whether its
    account is paused."""

    attempt: int
    paused: bool
    paused_reason: str | None


async def claim(
    conn: asyncpg.Connection | asyncpg.Pool, delivery_id: uuid.UUID, account_id: str | None, *, lease_seconds: float
) -> Claimed | None:
    """Move a delivery to 'posting' under a lease and count the attempt. Only one consumer wins:
    a 'requested' delivery whose retry is due, or a 'posting' one whose holder's lease ran out
    (that consumer died mid-post). None when not ours to post.

    One statement, atomic on its own: the hot path claims without a BEGIN/COMMIT round trip each
    way, and reads the pause state in the same trip."""
    row = await sql.fetchrow(
        conn,
        statement(
            "WITH claimed AS ("
            " UPDATE deliveries SET status = 'posting', attempts = attempts + 1,"
            " lease_until = now() + make_interval(secs => :lease_seconds), not_before = NULL"
            " WHERE id = :delivery_id AND ("
            "   (status = 'requested' AND coalesce(not_before, '-infinity') <= now())"
            "   OR (status = 'posting' AND coalesce(lease_until, '-infinity') < now()))"
            " RETURNING attempts)"
            " SELECT claimed.attempts AS attempt, coalesce(s.paused, false) AS paused, s.paused_reason"
            " FROM claimed LEFT JOIN delivery_account_state s ON s.delivery_account_id = :account_id",
            delivery_id=delivery_id,
            lease_seconds=lease_seconds,
            account_id=account_id,
        ),
    )
    return Claimed(row["attempt"], row["paused"], row["paused_reason"]) if row is not None else None


@dataclass(frozen=True)
class ToClaim:
    delivery_id: uuid.UUID
    account_id: str | None
    lease_seconds: float


async def claim_many(pool: asyncpg.Pool, wanted: Sequence[ToClaim]) -> list[Claimed | None]:
    """`claim` for a batch of deliveries (shared/batching.py), in one statement: the same
    conditions row by row, so each is claimed exactly when `claim` would have claimed it. A
    delivery named twice in a batch (a redelivered request beside its first copy) is claimed by
    one of them: the statement updates a row once."""
    rows = await sql.fetch(
        pool,
        statement(
            "WITH w AS (SELECT * FROM unnest(:ids::uuid[], :accounts::text[], :leases::float8[])"
            "  WITH ORDINALITY AS w(delivery_id, account_id, lease_seconds, n)),"
            " first AS (SELECT DISTINCT ON (delivery_id) * FROM w ORDER BY delivery_id, n),"
            " claimed AS (UPDATE deliveries d SET status = 'posting', attempts = d.attempts + 1,"
            "  lease_until = now() + make_interval(secs => first.lease_seconds), not_before = NULL"
            "  FROM first WHERE d.id = first.delivery_id AND ("
            "   (d.status = 'requested' AND coalesce(d.not_before, '-infinity') <= now())"
            "   OR (d.status = 'posting' AND coalesce(d.lease_until, '-infinity') < now()))"
            "  RETURNING first.n, d.attempts)"
            " SELECT claimed.n, claimed.attempts AS attempt, coalesce(s.paused, false) AS paused, s.paused_reason"
            " FROM claimed JOIN w ON w.n = claimed.n"
            " LEFT JOIN delivery_account_state s ON s.delivery_account_id = w.account_id",
            ids=[c.delivery_id for c in wanted],
            accounts=[c.account_id for c in wanted],
            leases=[c.lease_seconds for c in wanted],
        ),
    )
    found: list[Claimed | None] = [None] * len(wanted)
    for r in rows:
        found[r["n"] - 1] = Claimed(r["attempt"], r["paused"], r["paused_reason"])
    return found


@dataclass(frozen=True)
class DeliveryState:
    status: str
    not_before: datetime | None
    lease_until: datetime | None
    now: datetime  # the database's clock, which the lease and the retry time are on


async def state(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> DeliveryState | None:
    row = await sql.fetchrow(
        conn,
        statement(
            "SELECT status, not_before, lease_until, now() AS now FROM deliveries WHERE id = :delivery_id",
            delivery_id=delivery_id,
        ),
    )
    return DeliveryState(row["status"], row["not_before"], row["lease_until"], row["now"]) if row is not None else None


@dataclass(frozen=True)
class AttemptLog:
    """One post to a buyer (or hand-over to notifier) as the delivery log keeps it: the request
    and the answer already masked and truncated."""

    delivery_id: uuid.UUID
    attempt: int
    started_at: datetime
    duration_ms: int
    request: str
    status_code: int | None
    response: str | None
    outcome: str
    error: str | None


def _logged(entry: AttemptLog, reset_failures_of: str | None) -> Statement:
    """CTEs `logged`, the delivery log entry, and `reset`: when the buyer answered, the end of its
    account's consecutive-failure count. Shared by the log alone and by the one-statement finish."""
    return statement(
        "logged AS (INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, request,"
        " status_code, response, outcome, error) VALUES (:delivery_id, :attempt, :started_at, :duration_ms,"
        " :request, :status_code, :response, :outcome, :error)),"
        # Touches the row only when there is something to reset: a busy account's successes do
        # not all queue on its row lock.
        " reset AS (UPDATE delivery_account_state SET consecutive_failures = 0"
        " WHERE :reset_failures_of::text IS NOT NULL AND delivery_account_id = :reset_failures_of"
        " AND consecutive_failures <> 0 RETURNING 1)",
        delivery_id=entry.delivery_id,
        attempt=entry.attempt,
        started_at=entry.started_at,
        duration_ms=entry.duration_ms,
        request=entry.request,
        status_code=entry.status_code,
        response=entry.response,
        outcome=entry.outcome,
        error=entry.error,
        reset_failures_of=reset_failures_of,
    )


def _close(
    delivery_id: uuid.UUID, attempt: int, status: str, price: Decimal | None, reason: str | None, posted: bool
) -> Statement:
    """The UPDATE closing a delivery claimed as `attempt` (returns a row only while it is still
    that attempt's): its status, the final price (the account's price kept when they differ), the
    reason. `posted=False` (failed before posting): the claim's attempt is not counted."""
    return statement(
        "UPDATE deliveries SET status = :status::text,"
        " account_price = CASE WHEN :price::numeric IS NOT NULL AND :price::numeric <> price"
        "   THEN coalesce(account_price, price) ELSE account_price END,"
        " price = coalesce(:price::numeric, price), reason = :reason::text, completed_at = now(),"
        " lease_until = NULL, attempts = attempts - CASE WHEN :posted::boolean THEN 0 ELSE 1 END"
        " WHERE id = :delivery_id AND status = 'posting' AND attempts = :attempt RETURNING true",
        delivery_id=delivery_id,
        attempt=attempt,
        status=status,
        price=price,
        reason=reason,
        posted=posted,
    )


async def log_attempt(conn: asyncpg.Connection, entry: AttemptLog, *, reset_failures_of: str | None = None) -> None:
    """Append to the delivery log. `reset_failures_of`: the account whose consecutive-failure
    count this attempt ends (an answer from the buyer), reset in the same round trip."""
    await sql.execute(conn, statement("WITH :logged SELECT 1", logged=_logged(entry, reset_failures_of)))


async def finish(
    conn: asyncpg.Connection,
    delivery_id: uuid.UUID,
    attempt: int,
    status: str,
    *,
    price: Decimal | None = None,
    reason: str | None = None,
    posted: bool = True,
) -> bool:
    """Close the delivery this consumer claimed as `attempt`; False when it is no longer ours (a
    takeover, or someone finished it). `posted=False`: failed before posting, the claim's attempt
    is not counted."""
    return bool(await sql.fetchval(conn, _close(delivery_id, attempt, status, price, reason, posted)))


async def log_and_finish(
    conn: asyncpg.Connection | asyncpg.Pool,
    entry: AttemptLog,
    *,
    reset_failures_of: str | None,
    status: str,
    price: Decimal | None,
    reason: str | None,
    event: Event,
) -> bool:
    """The buyer answered: log the attempt, end the account's failure count, close the delivery
    and write its result event — one statement, atomic on its own, so the hot path commits
    without a BEGIN/COMMIT round trip each way. The event is written only when the delivery was
    still ours to close; False when it was not (the attempt is logged either way, as in the
    transaction this replaces)."""
    ctes = statement(
        ":logged, done AS (:close)",
        logged=_logged(entry, reset_failures_of),
        close=_close(entry.delivery_id, entry.attempt, status, price, reason, posted=True),
    )
    row = await sql.fetchrow(
        conn, with_event(ctes, event, source="done", select="EXISTS (SELECT FROM done) AS finished")
    )
    return bool(row is not None and row["finished"])


@dataclass(frozen=True)
class Finish:
    """`log_and_finish`'s arguments, for a batch of them."""

    entry: AttemptLog
    reset_failures_of: str | None
    status: str
    price: Decimal | None
    reason: str | None
    event: Event


async def log_and_finish_many(pool: asyncpg.Pool, finishes: Sequence[Finish]) -> list[bool]:
    """`log_and_finish` for a batch of answered posts (shared/batching.py), in one statement:
    every attempt logged, the failure counts of the accounts that answered ended, each delivery
    closed while still its attempt's, and a result event for each one closed."""
    entries = [f.entry for f in finishes]
    notify = next((f.event.notify for f in finishes if f.event.notify is not None), None)
    row = await sql.fetchrow(
        pool,
        statement(
            "WITH f AS (SELECT * FROM unnest(:ids::uuid[], :attempts::int[], :started::timestamptz[],"
            "  :durations::int[], :requests::text[], :codes::int[], :responses::text[], :outcomes::text[],"
            "  :errors::text[], :resets::text[], :statuses::text[], :prices::numeric[], :reasons::text[],"
            "  :event_ids::uuid[], :event_exchanges::text[], :event_keys::text[], :payloads::text[], :headers::text[])"
            "  WITH ORDINALITY AS f(delivery_id, attempt, started_at, duration_ms, request, status_code, response,"
            "  outcome, error, reset_of, status, price, reason, event_id, event_exchange, event_key, payload,"
            "  headers, n)),"
            " logged AS (INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, request,"
            "  status_code, response, outcome, error) SELECT delivery_id, attempt, started_at, duration_ms, request,"
            "  status_code, response, outcome, error FROM f ORDER BY n),"
            " reset AS (UPDATE delivery_account_state SET consecutive_failures = 0"
            "  WHERE delivery_account_id IN (SELECT reset_of FROM f WHERE reset_of IS NOT NULL)"
            "  AND consecutive_failures <> 0 RETURNING 1),"
            " done AS (UPDATE deliveries d SET status = f.status,"
            "  account_price = CASE WHEN f.price IS NOT NULL AND f.price <> d.price"
            "   THEN coalesce(d.account_price, d.price) ELSE d.account_price END,"
            "  price = coalesce(f.price, d.price), reason = f.reason, completed_at = now(), lease_until = NULL"
            "  FROM f WHERE d.id = f.delivery_id AND d.status = 'posting' AND d.attempts = f.attempt"
            "  RETURNING f.n),"
            " event AS (INSERT INTO outbox (id, exchange, routing_key, payload, headers)"
            "  SELECT f.event_id, f.event_exchange, f.event_key, f.payload::jsonb, f.headers::jsonb"
            "  FROM f JOIN done ON done.n = f.n ORDER BY f.n RETURNING id)"
            " SELECT array(SELECT n FROM done) AS finished, (SELECT count(pg_notify(:notify_channel,"
            " :notify_payload::text)) FROM (SELECT FROM event LIMIT 1) e WHERE :notify_payload::text IS NOT NULL)"
            " AS notified",
            ids=[e.delivery_id for e in entries],
            attempts=[e.attempt for e in entries],
            started=[e.started_at for e in entries],
            durations=[e.duration_ms for e in entries],
            requests=[e.request for e in entries],
            codes=[e.status_code for e in entries],
            responses=[e.response for e in entries],
            outcomes=[e.outcome for e in entries],
            errors=[e.error for e in entries],
            resets=[f.reset_failures_of for f in finishes],
            statuses=[f.status for f in finishes],
            prices=[f.price for f in finishes],
            reasons=[f.reason for f in finishes],
            event_ids=[f.event.message_id for f in finishes],
            event_exchanges=[f.event.exchange for f in finishes],
            event_keys=[f.event.routing_key for f in finishes],
            payloads=[json.dumps(f.event.payload) for f in finishes],
            headers=[json.dumps(f.event.headers) for f in finishes],
            notify_channel=NOTIFY_CHANNEL,
            notify_payload=notify,
        ),
    )
    assert row is not None  # a select-list over CTEs: always one row
    done = set(row["finished"])
    return [i + 1 in done for i in range(len(finishes))]


async def release_for_retry(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, attempt: int, reason: str, delay_seconds: float
) -> bool:
    """Back to 'requested' with a not-before time, for the retry waiting in a delay queue; False
    when the delivery is no longer this attempt's."""
    done = await sql.fetchval(
        conn,
        statement(
            "UPDATE deliveries SET status = 'requested', reason = :reason, lease_until = NULL,"
            " not_before = now() + make_interval(secs => :delay_seconds)"
            " WHERE id = :delivery_id AND status = 'posting' AND attempts = :attempt RETURNING true",
            delivery_id=delivery_id,
            attempt=attempt,
            reason=reason,
            delay_seconds=delay_seconds,
        ),
    )
    return bool(done)


# --- delivery accounts: consecutive failures and pause ------------------------------------------


async def count_failure(conn: asyncpg.Connection, account_id: str) -> int:
    return await conn.fetchval(
        "INSERT INTO delivery_account_state (delivery_account_id, consecutive_failures) VALUES ($1, 1)"
        " ON CONFLICT (delivery_account_id) DO UPDATE"
        " SET consecutive_failures = delivery_account_state.consecutive_failures + 1"
        " RETURNING consecutive_failures",
        account_id,
    )


async def pause(conn: asyncpg.Connection, account_id: str, reason: str) -> bool:
    """Pause an account; True only for the call that paused it (one alert per pause)."""
    done = await conn.fetchval(
        "UPDATE delivery_account_state SET paused = true, paused_at = now(), paused_reason = $2"
        " WHERE delivery_account_id = $1 AND NOT paused RETURNING true",
        account_id,
        reason,
    )
    return bool(done)


async def resume(conn: asyncpg.Connection, account_id: str) -> bool:
    done = await conn.fetchval(
        "UPDATE delivery_account_state SET paused = false, paused_at = NULL, paused_reason = NULL,"
        " consecutive_failures = 0 WHERE delivery_account_id = $1 AND paused RETURNING true",
        account_id,
    )
    return bool(done)


async def paused_accounts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT delivery_account_id, paused_at, paused_reason, consecutive_failures"
        " FROM delivery_account_state WHERE paused ORDER BY paused_at",
    )


# --- confirmed prices ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LockedDelivery:
    delivery_id: uuid.UUID
    lead_id: uuid.UUID
    client_id: str
    account_id: str
    price: Decimal
    status: str


async def lock_delivery(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> LockedDelivery | None:
    row = await sql.fetchrow(
        conn,
        statement(
            "SELECT id, lead_id, client_id, delivery_account_id, price, status FROM deliveries"
            " WHERE id = :delivery_id FOR UPDATE",
            delivery_id=delivery_id,
        ),
    )
    if row is None:
        return None
    return LockedDelivery(
        row["id"], row["lead_id"], row["client_id"], row["delivery_account_id"], row["price"], row["status"]
    )


async def set_confirmed_price(conn: asyncpg.Connection, delivery_id: uuid.UUID, price: Decimal) -> None:
    await conn.execute(
        "UPDATE deliveries SET account_price = coalesce(account_price, price), price = $2 WHERE id = $1",
        delivery_id,
        price,
    )


async def log_price_confirmation(
    conn: asyncpg.Connection,
    *,
    delivery_id: uuid.UUID,
    message_id: str | None,
    offered: str,
    outcome: str,
    price_before: Decimal,
    price_after: Decimal | None,
    reason: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO delivery_price_confirmations (delivery_id, message_id, offered, outcome, price_before,"
        " price_after, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        delivery_id,
        message_id,
        offered,
        outcome,
        price_before,
        price_after,
        reason,
    )


async def price_confirmation_of(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, message_id: str
) -> PriceConfirmationResult | None:
    """What the first copy of a confirm-price message (by its message id) came to."""
    row = await conn.fetchrow(
        "SELECT c.outcome, c.reason, d.price FROM delivery_price_confirmations c"
        " JOIN deliveries d ON d.id = c.delivery_id"
        " WHERE c.delivery_id = $1 AND c.message_id = $2 ORDER BY c.id LIMIT 1",
        delivery_id,
        message_id,
    )
    if row is None:
        return None
    return PriceConfirmationResult(
        delivery_id=delivery_id, outcome=row["outcome"], price=row["price"], reason=row["reason"]
    )
