"""Returns use cases: request a return, decide one, and the order commands and sweep.

Each is one transaction holding the state change and its events (outbox). A return request is
idempotent by its return_id (the returns primary key); decisions and order commands by the
domain state (only a pending return can be decided; a repeated pause changes nothing) and, for
messages, by the inbox.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from services.returns import rules, store
from shared import metrics, orders
from shared.contracts import (
    OrderCommand,
    OrderCommandResult,
    ReturnDecide,
    ReturnDecided,
    ReturnRequest,
    ReturnRequested,
)
from shared.contracts.errors import Refused
from shared.outbox import add_event, add_reply, claim_message
from shared.process import Process

log = logging.getLogger("leadwire.returns")

DECIDE_CONSUMER = "returns.decide"
ORDER_CONSUMER = "returns.order-command"


def _requested(record: store.ReturnRecord) -> ReturnRequested:
    return ReturnRequested(
        return_id=record.return_id,
        client_id=record.client_id,
        lead_id=record.lead_id,
        delivery_id=record.delivery_id,
        delivery_account_id=record.delivery_account_id,
        order_id=record.order_id,
        reason=record.reason,
        comment=record.comment,
        status=record.status,
        decision_reason=record.decision_reason,
        detail=record.note,
        requested_at=record.requested_at,
    )


def _decided(
    record: store.ReturnRecord,
    *,
    status: str,
    decision_reason: str | None,
    note: str | None,
    credit: Decimal,
    order_credit: Decimal,
    decided_at: datetime,
    decided_by: str | None = None,
) -> ReturnDecided:
    return ReturnDecided(
        return_id=record.return_id,
        client_id=record.client_id,
        lead_id=record.lead_id,
        delivery_id=record.delivery_id,
        order_id=record.order_id,
        status=status,
        decision_reason=decision_reason,
        note=note,
        decided_by=decided_by,
        credit=credit,
        order_credit=order_credit,
        decided_at=decided_at,
    )


@dataclass(frozen=True)
class Deps:
    """What the returns use cases need (built once, in main.py or by a CLI command)."""

    process: Process


async def request_return(
    deps: Deps,
    request: ReturnRequest,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> ReturnRequested:
    now = now or datetime.now(UTC)
    catalog = deps.process.catalog
    async with deps.process.pool.acquire() as conn, conn.transaction():
        # Under the client's lock, so a repeat that raced its first copy (a double-clicked form)
        # waits for it and then finds it, instead of being judged again.
        await store.lock_client(conn, request.client_id)
        existing = await store.find_return(conn, request.return_id)
        if existing is not None:
            # A repeat: answer with what happened the first time, change nothing.
            outcome = _requested(existing)
            if reply_to:
                await add_reply(conn, reply_to, correlation_id, outcome)
            return outcome

        delivery = await store.delivered_lead(conn, request.client_id, request.lead_id)
        delivered_at = delivery.completed_at if delivery else None
        lead_type = catalog.lead_types_by_id.get(delivery.lead_type_id) if delivery else None
        charge = await orders.charge_of(conn, delivery.delivery_id) if delivery else None
        order_id = charge["order_id"] if charge is not None and charge["status"] == "confirmed" else None

        decision = rules.check_request(
            delivered_at=delivered_at,
            already_returned=await store.lead_is_held(conn, request.client_id, request.lead_id),
            lead_type=lead_type,
            reason=request.reason,
            now=now,
        )
        if decision is None:
            assert delivery is not None  # admitted: the lead was delivered
            time_zone = await store.client_time_zone(conn, request.client_id)
            start, end = rules.month_bounds(delivery.completed_at, time_zone)
            caps = [
                rules.Cap(
                    "delivery_account",
                    rules.account_pct(catalog, request.client_id, delivery.account_id),
                    *await store.account_month(conn, delivery.account_id, start, end),
                )
            ]
            if order_id is not None:
                pct = rules.order_pct(catalog, request.client_id, await store.order_return_pct(conn, order_id))
                caps.append(rules.Cap("order", pct, *await store.order_month(conn, order_id, start, end)))
            client = catalog.clients_by_id.get(request.client_id)
            decision = rules.decide(caps, auto_approve=bool(client and client.auto_approve_returns))

        await store.insert_return(
            conn,
            return_id=request.return_id,
            client_id=request.client_id,
            lead_id=request.lead_id,
            delivery_id=delivery.delivery_id if delivery else None,
            delivery_account_id=delivery.account_id if delivery else None,
            order_id=order_id,
            reason=request.reason,
            comment=request.comment,
            status=decision.status,
            decision_reason=decision.reason,
            note=decision.detail,
            requested_by=request.requested_by,
            holds_lead=decision.holds_lead,
            delivered_at=delivered_at,
            now=now,
        )
        credit = order_credit = Decimal("0")
        if decision.status == "approved":
            assert delivery is not None  # approved within the caps of a delivered lead
            credit, order_credit = await _credit(conn, request.return_id, request.client_id, delivery.delivery_id, now)
        record = await store.find_return(conn, request.return_id)
        assert record is not None  # inserted above (or by a request with this id that won the race)
        outcome = _requested(record)
        await add_event(conn, "return.requested", outcome)
        metrics.return_decided(decision.status, "rules")
        if decision.status != "pending":
            decided = _decided(
                record,
                status=decision.status,
                decision_reason=decision.reason,
                note=decision.detail,
                credit=credit,
                order_credit=order_credit,
                decided_at=now,
            )
            await add_event(conn, "return.decided", decided)
        if reply_to:
            await add_reply(conn, reply_to, correlation_id, outcome)
        return outcome


async def _credit(
    conn: asyncpg.Connection, return_id: uuid.UUID, client_id: str, delivery_id: uuid.UUID, now: datetime
) -> tuple[Decimal, Decimal]:
    """Approval's money: the sale price back to the client's balance, the sale back to its order."""
    price = await store.delivery_price(conn, delivery_id)
    await store.credit_balance(conn, client_id, price, return_id)
    credited = await orders.credit_sale(conn, delivery_id=delivery_id, now=now)
    await store.set_credit(conn, return_id, price)
    return price, credited[1] if credited else Decimal("0")


@dataclass(frozen=True)
class DecideResult:
    ok: bool
    status: str | None
    message: str


async def decide_return(
    deps: Deps, command: ReturnDecide, *, message_id: str | None = None, now: datetime | None = None
) -> DecideResult:
    now = now or datetime.now(UTC)
    target = "approved" if command.decision == "approve" else "denied"
    async with deps.process.pool.acquire() as conn, conn.transaction():
        if message_id is not None and not await claim_message(conn, DECIDE_CONSUMER, message_id):
            return DecideResult(True, None, "repeated message")
        record = await store.find_return(conn, command.return_id, lock=True)
        if command.client_id is not None and (record is None or record.client_id != command.client_id):
            # A command acting for a client decides that client's returns only, and is answered
            # the same whether the return is another client's or does not exist at all.
            raise Refused(f"no return {command.return_id} of client {command.client_id!r}")
        if record is None:
            return DecideResult(False, None, f"no return {command.return_id}")
        if record.status != "pending":
            same = record.status == target
            return DecideResult(same, record.status, f"return is already {record.status}")
        credit = order_credit = Decimal("0")
        if target == "approved":
            assert record.delivery_id is not None  # pending: the lead was delivered
            credit, order_credit = await _credit(conn, record.return_id, record.client_id, record.delivery_id, now)
        # A denied return keeps holding its lead: an admin's denial is final for that lead.
        await store.decide(
            conn,
            record.return_id,
            status=target,
            decision_reason="admin",
            note=command.note or None,
            decided_by=command.decided_by,
            credit=credit,
            now=now,
        )
        await add_event(
            conn,
            "return.decided",
            _decided(
                record,
                status=target,
                decision_reason="admin",
                note=command.note or None,
                credit=credit,
                order_credit=order_credit,
                decided_at=now,
                decided_by=command.decided_by,
            ),
        )
        metrics.return_decided(target, "admin")
        return DecideResult(
            True,
            target,
            f"return {record.return_id} {target}"
            + (f"; {credit} credited to {record.client_id}" if target == "approved" else ""),
        )


async def order_command(
    deps: Deps,
    command: OrderCommand,
    *,
    message_id: str | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> orders.StatusChange:
    now = now or datetime.now(UTC)
    async with deps.process.pool.acquire() as conn, conn.transaction():
        if message_id is not None and not await claim_message(conn, ORDER_CONSUMER, message_id):
            return orders.StatusChange(command.order_id, ok=True, status=None, error="repeated message")
        change = await orders.change_status(
            conn,
            order_id=command.order_id,
            action=command.action,
            now=now,
            client_id=command.client_id,
            requested_by=command.requested_by,
        )
        if reply_to:
            await add_reply(
                conn,
                reply_to,
                correlation_id,
                OrderCommandResult(order_id=change.order_id, ok=change.ok, status=change.status, error=change.error),
            )
        return change


async def sweep_orders(deps: Deps, now: datetime | None = None) -> list[str]:
    """Close the orders whose end date has passed (the service's background loop)."""
    async with deps.process.pool.acquire() as conn, conn.transaction():
        closed = await orders.close_expired(conn, now or datetime.now(UTC))
    if closed:
        log.info("closed %d order(s) past their end date: %s", len(closed), ", ".join(closed))
    return closed
