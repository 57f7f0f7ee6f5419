"""Delivery SQL: the delivery row's state machine, the delivery log, account pause state and
price confirmations.

The attempt number doubles as a fencing token: a consumer may finish or release only the attempt
it claimed, so a consumer presumed dead whose lease was taken over cannot overwrite the outcome.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from shared.outbox import event_in_statement


async def claim(
    conn: asyncpg.Connection | asyncpg.Pool, delivery_id: uuid.UUID, account_id: str | None, *, lease_seconds: float
) -> asyncpg.Record | None:
    """Move a delivery to 'posting' under a lease and count the attempt. Only one consumer wins:
    a 'requested' delivery whose retry is due, or a 'posting' one whose holder's lease ran out
    (that consumer died mid-post). Returns the attempt number with the account's pause state, or
    None when not ours to post.

    One statement, atomic on its own: the hot path claims without a BEGIN/COMMIT round trip each
    way, and reads the pause state in the same trip."""
    return await conn.fetchrow(
        "WITH claimed AS ("
        " UPDATE deliveries SET status = 'posting', attempts = attempts + 1,"
        " lease_until = now() + make_interval(secs => $2), not_before = NULL"
        " WHERE id = $1 AND ("
        "   (status = 'requested' AND coalesce(not_before, '-infinity') <= now())"
        "   OR (status = 'posting' AND coalesce(lease_until, '-infinity') < now()))"
        " RETURNING attempts)"
        " SELECT claimed.attempts AS attempt, coalesce(s.paused, false) AS paused, s.paused_reason"
        " FROM claimed LEFT JOIN delivery_account_state s ON s.delivery_account_id = $3",
        delivery_id,
        lease_seconds,
        account_id,
    )


async def state(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT status, not_before, lease_until, now() AS now FROM deliveries WHERE id = $1",
        delivery_id,
    )


# The delivery log entry ($1-$9) and, when the buyer answered, the end of the account's
# consecutive-failure count ($10): shared by the log alone and by the one-statement finish.
_LOG_ATTEMPT = (
    "logged AS (INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, request,"
    " status_code, response, outcome, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)),"
    # Touches the row only when there is something to reset: a busy account's successes do
    # not all queue on its row lock.
    " reset AS (UPDATE delivery_account_state SET consecutive_failures = 0"
    " WHERE $10::text IS NOT NULL AND delivery_account_id = $10 AND consecutive_failures <> 0 RETURNING 1)"
)


def _finish(first: int) -> str:
    """UPDATE closing delivery $1 claimed as attempt $2: status, price, reason, posted from $first."""
    status, price, reason, posted = (f"${first + i}" for i in range(4))
    return (
        f"UPDATE deliveries SET status = {status}::text,"
        f" account_price = CASE WHEN {price}::numeric IS NOT NULL AND {price}::numeric <> price"
        f"   THEN coalesce(account_price, price) ELSE account_price END,"
        f" price = coalesce({price}::numeric, price), reason = {reason}::text, completed_at = now(),"
        f" lease_until = NULL, attempts = attempts - CASE WHEN {posted}::boolean THEN 0 ELSE 1 END"
        f" WHERE id = $1 AND status = 'posting' AND attempts = $2 RETURNING true"
    )


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

    def params(self) -> list[Any]:
        return [
            self.delivery_id,
            self.attempt,
            self.started_at,
            self.duration_ms,
            self.request,
            self.status_code,
            self.response,
            self.outcome,
            self.error,
        ]


async def log_attempt(conn: asyncpg.Connection, entry: AttemptLog, *, reset_failures_of: str | None = None) -> None:
    """Append to the delivery log. `reset_failures_of`: the account whose consecutive-failure
    count this attempt ends (an answer from the buyer), reset in the same round trip."""
    await conn.execute(f"WITH {_LOG_ATTEMPT} SELECT 1", *entry.params(), reset_failures_of)


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
    done = await conn.fetchval(_finish(3), delivery_id, attempt, status, price, reason, posted)
    return bool(done)


async def log_and_finish(
    conn: asyncpg.Connection | asyncpg.Pool,
    entry: AttemptLog,
    *,
    reset_failures_of: str | None,
    status: str,
    price: Decimal | None,
    reason: str | None,
    event: list[Any],
) -> bool:
    """The buyer answered: log the attempt, end the account's failure count, close the delivery
    and write its result event (`outbox.event_params`) — one statement, atomic on its own, so the
    hot path commits without a BEGIN/COMMIT round trip each way. The event is written only when
    the delivery was still ours to close; False when it was not (the attempt is logged either
    way, as in the transaction this replaces)."""
    event_cte, notified = event_in_statement("done", 15)
    row = await conn.fetchrow(
        f"WITH {_LOG_ATTEMPT}, done AS ({_finish(11)}), {event_cte}"
        f" SELECT EXISTS (SELECT FROM done) AS finished, {notified} AS notified",
        *entry.params(),
        reset_failures_of,
        status,
        price,
        reason,
        True,
        *event,
    )
    return bool(row["finished"])


async def release_for_retry(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, attempt: int, reason: str, delay_seconds: float
) -> bool:
    done = await conn.fetchval(
        "UPDATE deliveries SET status = 'requested', reason = $3, lease_until = NULL,"
        " not_before = now() + make_interval(secs => $4)"
        " WHERE id = $1 AND status = 'posting' AND attempts = $2 RETURNING true",
        delivery_id,
        attempt,
        reason,
        delay_seconds,
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


async def lock_delivery(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, lead_id, client_id, delivery_account_id, price, status FROM deliveries WHERE id = $1 FOR UPDATE",
        delivery_id,
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
