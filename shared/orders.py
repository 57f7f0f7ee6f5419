"""Orders: the arithmetic of a sale against an order, and the order SQL every service uses.

A sale takes its share of an order in two steps, each inside its caller's transaction:

- `reserve` (router, when it requests a delivery) locks the oldest open order covering the
  delivery account and takes 1 lead or the sale price from its room
  (room = total - received - reserved). Concurrent reservations serialise on the order row, so
  N racing sales against an order with k left succeed exactly k times.
- `settle` (router, when the delivery finishes) confirms the charge (received and cost grow) or
  releases it, fills the order when it has no room left, and closes or renews it.

The pure functions at the top hold every rule; the SQL below only applies them. docs/returns-and-orders.md
states the rules in prose.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg

from shared import sql
from shared.catalog.model import Catalog, DeliveryAccount
from shared.contracts.notifier import NotificationRequested, OrderFilledData
from shared.contracts.returns import OrderFiguresView, OrderFilled, OrderStatusChanged
from shared.outbox import add_event
from shared.sql import Statement, statement

ZERO = Decimal("0")
ONE = Decimal("1")

OrderType = Literal["lead_quantity", "dollar_amount"]
Renewal = Literal["on_fill", "close_at_end", "none"]
Action = Literal["pause", "resume", "close"]


# --- Pure rules ----------------------------------------------------------------------------------


def room(total: Decimal, received: Decimal, reserved: Decimal) -> Decimal:
    """What is left to sell right now: never negative, even if the total was lowered under sales."""
    return max(total - received - reserved, ZERO)


def take_for_sale(
    order_type: OrderType, total: Decimal, received: Decimal, reserved: Decimal, price: Decimal
) -> Decimal | None:
    """What a new sale takes from the order, or None when the order has no room for it.

    A lead-quantity order needs room for a whole lead. A dollar order takes the sale price, or
    only what is left when that is less (the rest of the price is overage, billed outside the
    order): a dollar order therefore fills exactly to its total."""
    left = room(total, received, reserved)
    if order_type == "lead_quantity":
        return ONE if left >= ONE else None
    if left <= ZERO:
        return None
    return min(price, left)


def charge_on_success(
    order_type: OrderType, total: Decimal, received: Decimal, reserved: Decimal, taken: Decimal, final_price: Decimal
) -> Decimal:
    """What a confirmed sale adds to `received`. `reserved` still includes this sale's `taken`.

    Dollar orders are charged the final price (a buyer-confirmed price may differ from the
    reserved one) but never past the total: the room this sale may use is what it reserved plus
    whatever no other sale holds. A lower final price frees the difference."""
    available = max(total - received - (reserved - taken), ZERO)
    if order_type == "lead_quantity":
        return ONE if available >= ONE else ZERO
    return min(max(final_price, ZERO), available)


def is_filled(order_type: OrderType, total: Decimal, received: Decimal) -> bool:
    """Filled: settled sales leave no room for another sale."""
    left = total - received
    return left < ONE if order_type == "lead_quantity" else left <= ZERO


AfterFill = Literal["renew", "stay_open", "close"]
_AFTER_FILL: dict[Renewal, AfterFill] = {"on_fill": "renew", "close_at_end": "stay_open", "none": "close"}


def after_fill(renewal: Renewal) -> AfterFill:
    """on_fill: a fresh period starts; close_at_end: stays open (full) until its end date, so a
    credited return makes room again; none: closes."""
    return _AFTER_FILL[renewal]


def renewed_period(today: date, start: date, end: date | None) -> tuple[date, date | None]:
    """The dates of the period that starts when an on_fill order fills on `today`: it starts that
    day and lasts as long as the period that just filled (open-ended stays open-ended)."""
    if end is None:
        return today, None
    return today, today + (end - start)


def client_today(now: datetime, time_zone: str) -> date:
    return now.astimezone(ZoneInfo(time_zone)).date()


# --- Records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusChange:
    order_id: str
    ok: bool
    status: str | None
    previous: str | None = None
    error: str | None = None


ORDER_COLUMNS = (
    "id, client_id, order_type, total, status, start_date, end_date, renewal, auto_charge, received,"
    " reserved, cost, amount_paid, period, period_start, period_end, filled_at, spec"
)


def _figures(row: asyncpg.Record) -> OrderFiguresView:
    return OrderFiguresView(
        order_id=row["id"],
        client_id=row["client_id"],
        order_type=row["order_type"],
        status=row["status"],
        renewal=row["renewal"],
        auto_charge=row["auto_charge"],
        start_date=row["period_start"] or row["start_date"],
        end_date=row["period_end"] if row["period_start"] is not None else row["end_date"],
        period=row["period"],
        total=row["total"],
        received=row["received"],
        remaining=row["total"] - row["received"],
        in_flight=row["reserved"],
        cost=row["cost"],
        amount_paid=row["amount_paid"],
    )


# --- Sales ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sale:
    """One sale of a lead to a delivery account, as orders see it."""

    delivery_id: uuid.UUID
    client_id: str
    account_id: str
    price: Decimal
    day: date  # in the client's time zone: what orders' dates are compared to

    @classmethod
    def of(
        cls, catalog: Catalog, account: DeliveryAccount, delivery_id: uuid.UUID, price: Decimal, now: datetime
    ) -> Sale:
        return cls(delivery_id, account.client, account.id, price, sale_day(catalog, account, now))


@dataclass(frozen=True)
class SaleLookup:
    """What `reserve` starts from: a charge this delivery already has (a repeat), and the open
    orders that cover the sale, oldest first."""

    existing: str | None
    existing_status: str | None
    candidates: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SaleLookup:
        return cls(row["existing"], row["existing_status"], tuple(row["candidates"]))


def sale_lookup(sale: Sale) -> Statement:
    """The select-list of a `SaleLookup` (columns existing, existing_status, candidates), as a
    fragment: the router reads it in the statement that takes the cap counters (one round trip
    per sale saved) and hands the result to `reserve`."""
    return statement(
        "(SELECT order_id FROM order_charges WHERE delivery_id = :sale_delivery) AS existing,"
        " (SELECT status FROM order_charges WHERE delivery_id = :sale_delivery) AS existing_status,"
        " array(SELECT id FROM orders WHERE client_id = :sale_client AND status = 'open' AND start_date <= :sale_day"
        "  AND (coalesce(period_end, end_date) IS NULL OR coalesce(period_end, end_date) >= :sale_day)"
        "  AND (spec->'accounts' = '\"all\"'::jsonb OR spec->'accounts' ? :sale_account)"
        "  ORDER BY start_date, id) AS candidates",
        sale_delivery=sale.delivery_id,
        sale_client=sale.client_id,
        sale_day=sale.day,
        sale_account=sale.account_id,
    )


def sale_day(catalog: Catalog, account: DeliveryAccount, now: datetime) -> date:
    """The day of a sale in the account's client's time zone: what orders' dates are compared to."""
    client = catalog.clients_by_id.get(account.client)
    return client_today(now, client.time_zone if client else "UTC")


async def reserve(
    conn: asyncpg.Connection,
    *,
    catalog: Catalog,
    account: DeliveryAccount,
    delivery_id: uuid.UUID,
    price: Decimal,
    now: datetime,
    lookup: SaleLookup | None = None,
) -> str | None:
    """Take one sale from the oldest open order of `account`'s client that covers the account and
    has room; returns its id, or None. Idempotent per delivery_id. Call inside a transaction.
    `lookup`: the sale's `SaleLookup` (`sale_lookup`), when the caller read it already.

    Orders past their end date (in the client's time zone) are not used from that day on; the
    returns service's sweep also closes them."""
    sale = Sale.of(catalog, account, delivery_id, price, now)
    if lookup is None:
        # The repeat check and the candidate orders in one round trip: reserve runs for every sale.
        row = await sql.fetchrow(conn, statement("SELECT :lookup", lookup=sale_lookup(sale)))
        assert row is not None  # a select-list without FROM: always one row
        lookup = SaleLookup.from_row(row)
    if lookup.existing is not None:
        return lookup.existing if lookup.existing_status in ("reserved", "confirmed") else None
    for candidate in lookup.candidates:
        # Re-read under the lock: another replica may have taken the last of it, or paused it.
        order = await conn.fetchrow(
            "SELECT order_type, total, received, reserved, status, period FROM orders WHERE id = $1 FOR UPDATE",
            candidate,
        )
        if order is None or order["status"] != "open":
            continue
        taken = take_for_sale(order["order_type"], order["total"], order["received"], order["reserved"], sale.price)
        if taken is None:
            continue
        await conn.execute("UPDATE orders SET reserved = reserved + $2 WHERE id = $1", candidate, taken)
        await conn.execute(
            "INSERT INTO order_charges (delivery_id, order_id, client_id, period, amount, price, status, reserved_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'reserved', $7)",
            sale.delivery_id,
            candidate,
            sale.client_id,
            order["period"],
            taken,
            sale.price,
            now,
        )
        return candidate
    return None


async def settle(
    conn: asyncpg.Connection,
    *,
    delivery_id: uuid.UUID,
    succeeded: bool,
    final_price: Decimal,
    now: datetime,
    notify_to: list[str] | None = None,
) -> None:
    """Confirm (succeeded) or release a reservation; fill, close or renew the order. Idempotent per
    delivery_id: only a charge still 'reserved' changes anything. Call inside a transaction.
    `notify_to`: who gets the order_filled email besides ADMIN_EMAIL, which notifier always adds
    to an admin alert (the router passes its ADMIN_EMAIL, so the request names it)."""
    charge = await conn.fetchrow(
        "SELECT order_id, amount, status FROM order_charges WHERE delivery_id = $1 FOR UPDATE", delivery_id
    )
    if charge is None or charge["status"] != "reserved":
        return
    order = await conn.fetchrow(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE", charge["order_id"])
    taken = charge["amount"]
    if not succeeded:
        await conn.execute("UPDATE orders SET reserved = greatest(reserved - $2, 0) WHERE id = $1", order["id"], taken)
        await conn.execute(
            "UPDATE order_charges SET status = 'released', settled_at = $2 WHERE delivery_id = $1", delivery_id, now
        )
        return
    charged = charge_on_success(
        order["order_type"], order["total"], order["received"], order["reserved"], taken, final_price
    )
    was_filled = is_filled(order["order_type"], order["total"], order["received"])
    received = order["received"] + charged
    cost = order["cost"] + final_price
    await conn.execute(
        "UPDATE orders SET received = $2, cost = $3, reserved = greatest(reserved - $4, 0) WHERE id = $1",
        order["id"],
        received,
        cost,
        taken,
    )
    await conn.execute(
        "UPDATE order_charges SET status = 'confirmed', amount = $2, price = $3, period = $4, settled_at = $5"
        " WHERE delivery_id = $1",
        delivery_id,
        charged,
        final_price,
        order["period"],
        now,
    )
    if was_filled or not is_filled(order["order_type"], order["total"], received):
        return
    await _fill(conn, order, received, cost, delivery_id, now, notify_to or [])


async def _fill(
    conn: asyncpg.Connection,
    order: asyncpg.Record,
    received: Decimal,
    cost: Decimal,
    delivery_id: uuid.UUID,
    now: datetime,
    notify_to: list[str],
) -> None:
    next_step = after_fill(order["renewal"])
    status = "closed" if next_step == "close" else "open"
    start = order["period_start"] or order["start_date"]
    end = order["period_end"] if order["period_start"] is not None else order["end_date"]
    if next_step == "renew":
        time_zone = await conn.fetchval("SELECT time_zone FROM clients WHERE id = $1", order["client_id"]) or "UTC"
        new_start, new_end = renewed_period(client_today(now, time_zone), start, end)
        await conn.execute(
            "INSERT INTO order_periods (order_id, period, started_on, ended_on, total, received, cost,"
            " amount_paid, filled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            order["id"],
            order["period"],
            start,
            end,
            order["total"],
            received,
            cost,
            order["amount_paid"],
            now,
        )
        await conn.execute(
            "UPDATE orders SET period = period + 1, period_start = $2, period_end = $3, received = 0, cost = 0,"
            " amount_paid = 0, filled_at = $4 WHERE id = $1",
            order["id"],
            new_start,
            new_end,
            now,
        )
    elif next_step == "close":
        await conn.execute(
            "UPDATE orders SET status = 'closed', closed_reason = 'filled', filled_at = $2 WHERE id = $1",
            order["id"],
            now,
        )
    else:
        await conn.execute("UPDATE orders SET filled_at = $2 WHERE id = $1", order["id"], now)

    filled = OrderFilled(
        order_id=order["id"],
        client_id=order["client_id"],
        order_type=order["order_type"],
        total=order["total"],
        received=received,
        cost=cost,
        period=order["period"],
        renewal=order["renewal"],
        status=status,
        renewed=next_step == "renew",
        filled_at=now,
    )
    await add_event(conn, "order.filled", filled)
    if next_step == "close":
        await add_event(
            conn,
            "order.closed",
            OrderStatusChanged(
                order_id=order["id"],
                client_id=order["client_id"],
                status="closed",
                previous_status="open",
                reason="filled",
                changed_at=now,
            ),
        )
    # The wording is notifier's (its order_filled template); the request carries the facts.
    await add_event(
        conn,
        "notify.order_filled",
        NotificationRequested(
            # One email per fill: the delivery that filled the order names it.
            notification_id=uuid.uuid5(uuid.NAMESPACE_URL, f"leadwire:order_filled:{delivery_id}"),
            kind="order_filled",
            to=notify_to,
            client_id=order["client_id"],
            data=OrderFilledData.model_validate(filled.model_dump(mode="json")),
        ),
    )


async def credit_sale(conn: asyncpg.Connection, *, delivery_id: uuid.UUID, now: datetime) -> tuple[str, Decimal] | None:
    """Give a returned sale back to its order: received and cost go down by what the sale took
    (never below zero), in the period the sale belongs to. Returns (order id, amount credited),
    or None when no confirmed charge exists. Call inside a transaction."""
    charge = await conn.fetchrow(
        "SELECT order_id, amount, price, period, status FROM order_charges WHERE delivery_id = $1 FOR UPDATE",
        delivery_id,
    )
    if charge is None or charge["status"] != "confirmed":
        return None
    order = await conn.fetchrow("SELECT period FROM orders WHERE id = $1 FOR UPDATE", charge["order_id"])
    if order["period"] == charge["period"]:
        await conn.execute(
            "UPDATE orders SET received = greatest(received - $2, 0), cost = greatest(cost - $3, 0) WHERE id = $1",
            charge["order_id"],
            charge["amount"],
            charge["price"],
        )
    else:
        await conn.execute(
            "UPDATE order_periods SET received = greatest(received - $3, 0), cost = greatest(cost - $4, 0)"
            " WHERE order_id = $1 AND period = $2",
            charge["order_id"],
            charge["period"],
            charge["amount"],
            charge["price"],
        )
    await conn.execute(
        "UPDATE order_charges SET status = 'credited', credited_at = $2 WHERE delivery_id = $1", delivery_id, now
    )
    return charge["order_id"], charge["amount"]


async def charge_of(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT delivery_id, order_id, client_id, period, amount, price, status FROM order_charges"
        " WHERE delivery_id = $1",
        delivery_id,
    )


# --- Commands and figures ------------------------------------------------------------------------

TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "pause": (("open",), "paused"),
    "resume": (("paused",), "open"),
    "close": (("open", "paused"), "closed"),
}


def transition(action: Action, current: str) -> str | None:
    """The status an action leads to from `current`; the same status for a repeat (a no-op);
    None when the action is not allowed (a closed order cannot be resumed)."""
    allowed_from, target = TRANSITIONS[action]
    if current == target:
        return target
    return target if current in allowed_from else None


async def change_status(
    conn: asyncpg.Connection,
    *,
    order_id: str,
    action: Action,
    now: datetime,
    client_id: str | None = None,
    requested_by: str | None = None,
) -> StatusChange:
    """Pause, resume or close an order, with its event, in the caller's transaction. With
    `client_id` (the portal), an order of another client is reported as not found."""
    row = await conn.fetchrow("SELECT client_id, status FROM orders WHERE id = $1 FOR UPDATE", order_id)
    if row is None or (client_id is not None and row["client_id"] != client_id):
        return StatusChange(order_id, ok=False, status=None, error="order not found")
    target = transition(action, row["status"])
    if target is None:
        return StatusChange(
            order_id,
            ok=False,
            status=row["status"],
            previous=row["status"],
            error=f"cannot {action} an order that is {row['status']}",
        )
    if target == row["status"]:
        return StatusChange(order_id, ok=True, status=target, previous=row["status"])
    await conn.execute(
        "UPDATE orders SET status = $2, closed_reason = CASE WHEN $2 = 'closed' THEN 'command' END WHERE id = $1",
        order_id,
        target,
    )
    await add_event(
        conn,
        f"order.{target if target != 'open' else 'resumed'}",
        OrderStatusChanged(
            order_id=order_id,
            client_id=row["client_id"],
            status=target,
            previous_status=row["status"],
            reason=action,
            requested_by=requested_by,
            changed_at=now,
        ),
    )
    return StatusChange(order_id, ok=True, status=target, previous=row["status"])


async def close_expired(conn: asyncpg.Connection, now: datetime) -> list[str]:
    """Close every open or paused order whose end date has passed in its client's time zone, with
    an `order.closed` event each. Returns the ids closed."""
    rows = await conn.fetch(
        "SELECT o.id, o.client_id, o.status FROM orders o JOIN clients c ON c.id = o.client_id"
        " WHERE o.status IN ('open', 'paused')"
        " AND coalesce(o.period_end, o.end_date) < ($1::timestamptz AT TIME ZONE c.time_zone)::date"
        " ORDER BY o.id FOR UPDATE OF o SKIP LOCKED",
        now,
    )
    for row in rows:
        await conn.execute("UPDATE orders SET status = 'closed', closed_reason = 'ended' WHERE id = $1", row["id"])
        await add_event(
            conn,
            "order.closed",
            OrderStatusChanged(
                order_id=row["id"],
                client_id=row["client_id"],
                status="closed",
                previous_status=row["status"],
                reason="ended",
                changed_at=now,
            ),
        )
    return [r["id"] for r in rows]


async def record_payment(
    conn: asyncpg.Connection, *, order_id: str, amount: Decimal, note: str | None = None
) -> Decimal | None:
    """Add a payment to the order's current period; returns the new amount paid (None: no order)."""
    period = await conn.fetchval("SELECT period FROM orders WHERE id = $1 FOR UPDATE", order_id)
    if period is None:
        return None
    await conn.execute(
        "INSERT INTO order_payments (order_id, period, amount, note) VALUES ($1, $2, $3, $4)",
        order_id,
        period,
        amount,
        note,
    )
    return await conn.fetchval(
        "UPDATE orders SET amount_paid = amount_paid + $2 WHERE id = $1 RETURNING amount_paid", order_id, amount
    )


async def order_figures(
    conn: asyncpg.Connection | asyncpg.Pool, *, client_id: str | None = None, order_id: str | None = None
) -> list[OrderFiguresView]:
    """The Order Manager's figures, for one client (the portal: always pass client_id), one
    order, or every order (admin)."""
    rows = await conn.fetch(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE ($1::text IS NULL OR client_id = $1)"
        " AND ($2::text IS NULL OR id = $2) ORDER BY start_date, id",
        client_id,
        order_id,
    )
    return [_figures(r) for r in rows]


__all__ = [
    "StatusChange",
    "after_fill",
    "change_status",
    "charge_of",
    "charge_on_success",
    "client_today",
    "close_expired",
    "credit_sale",
    "is_filled",
    "order_figures",
    "record_payment",
    "renewed_period",
    "reserve",
    "room",
    "settle",
    "take_for_sale",
    "transition",
]
