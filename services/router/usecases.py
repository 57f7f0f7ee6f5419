"""Router use cases: take a lead in, and move it on when a delivery succeeds or fails.

Each use case is one database transaction holding the state change and the events it causes
(outbox), so a crash at any point either leaves no trace (the message is redelivered) or leaves
the full decision with its events queued for the relay.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from services.router import rules, store
from shared.catalog.model import Catalog
from shared.contracts import (
    DeliveryFailed,
    DeliveryRequested,
    DeliverySucceeded,
    FieldError,
    InboundLead,
    LeadOutcome,
    SoldDelivery,
)
from shared.outbox import add_event, add_reply, claim_message

RESULTS_CONSUMER = "router.delivery-results"


class LeadContext:
    """Where a lead came from, as the broker told us."""

    def __init__(self, idempotency_key: str, reply_to: str | None = None, correlation_id: str | None = None) -> None:
        self.idempotency_key = idempotency_key
        self.reply_to = reply_to
        self.correlation_id = correlation_id


async def _emit_outcome(conn: asyncpg.Connection, outcome: LeadOutcome, reply_to: str | None,
                        correlation_id: str | None) -> None:
    await add_event(conn, f"lead.{outcome.status}", outcome)
    if reply_to:
        await add_reply(conn, reply_to, correlation_id, outcome)


async def receive_lead(
    pool: asyncpg.Pool, catalog: Catalog, lead: InboundLead, ctx: LeadContext, now: datetime | None = None,
    after_commit: Callable[[], None] | None = None,
) -> uuid.UUID | None:
    """Validate and store a lead, then reject it, mark it duplicate, or send it to the first
    eligible delivery account. Returns the lead id, or None for a lead already received."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn:
        async with conn.transaction():
            lead_id = await _receive(conn, catalog, lead, ctx, now)
        if after_commit is not None:
            after_commit()
    return lead_id


async def _receive(conn: asyncpg.Connection, catalog: Catalog, lead: InboundLead, ctx: LeadContext,
                   now: datetime) -> uuid.UUID | None:
    lead_id = uuid.uuid4()
    problems: list[rules.FieldProblem] = []
    if not ctx.idempotency_key:
        # Kept and answered like any invalid lead, under a key of its own: without a key from
        # the source a re-send cannot be recognised.
        ctx.idempotency_key = f"missing:{lead_id}"
        problems.append(rules.FieldProblem(
            "message_id", "an idempotency key is required: set the AMQP message_id property or an"
            " 'idempotency-key' header"))
    if not await store.insert_lead(
        conn, lead_id=lead_id, source_id=lead.source, idempotency_key=ctx.idempotency_key,
        lead_type_id=lead.lead_type, fields=lead.fields, force_id=lead.force_id,
        reply_to=ctx.reply_to, correlation_id=ctx.correlation_id,
    ):
        return None

    def outcome(status: str, **kw: object) -> LeadOutcome:
        return LeadOutcome(lead_id=lead_id, status=status, source=lead.source,
                           idempotency_key=ctx.idempotency_key, lead_type=lead.lead_type,
                           decided_at=now, **kw)

    lead_type = catalog.lead_types_by_id.get(lead.lead_type)
    source = catalog.sources_by_id.get(lead.source)
    if lead_type is None:
        problems.append(rules.FieldProblem("lead_type", f"unknown lead type {lead.lead_type!r}"))
    if source is None:
        problems.append(rules.FieldProblem("source", f"unknown lead source {lead.source!r}"))
    elif not source.active:
        problems.append(rules.FieldProblem("source", f"lead source {lead.source!r} is inactive"))
    fields = lead.fields
    if lead_type is not None:
        fields, field_problems = rules.validate_fields(lead_type, lead.fields)
        problems += field_problems
    if problems:
        errors = [FieldError(field=p.field, message=p.message) for p in problems]
        await store.decide_lead(conn, lead_id, "rejected", reason="invalid lead",
                                errors=[e.model_dump() for e in errors])
        await _emit_outcome(conn, outcome("rejected", reason="invalid lead", errors=errors),
                            ctx.reply_to, ctx.correlation_id)
        return lead_id

    fp = rules.fingerprint(lead_type, fields)
    if fp is not None:
        await store.lock_fingerprint(conn, fp)
        since = now - timedelta(days=lead_type.duplicate_window_days)
        original = await store.find_original(conn, lead_type.id, fp, since, lead_id)
        if original is not None:
            await store.decide_lead(conn, lead_id, "duplicate", reason="duplicate lead",
                                    original_lead_id=original["id"], fingerprint=fp)
            await _emit_outcome(conn, outcome("duplicate", reason="duplicate lead",
                                              original_lead_id=original["id"]),
                                ctx.reply_to, ctx.correlation_id)
            return lead_id

    candidates = rules.plan(catalog, rules.eligible_accounts(catalog, lead_type.id, fields, now))
    await store.set_lead_routing(conn, lead_id, fields, fp, candidates)
    if not candidates:
        reason = "no eligible delivery account"
        await store.decide_lead(conn, lead_id, "unsold", reason=reason)
        await _emit_outcome(conn, outcome("unsold", reason=reason), ctx.reply_to, ctx.correlation_id)
        return lead_id
    await _request_delivery(conn, catalog, lead_id, lead_type.id, fields, candidates[0])
    return lead_id


async def _request_delivery(conn: asyncpg.Connection, catalog: Catalog, lead_id: uuid.UUID,
                            lead_type_id: str, fields: dict, account_id: str) -> None:
    account = catalog.accounts_by_id[account_id]
    delivery_id = uuid.uuid4()
    await store.insert_delivery(conn, delivery_id, lead_id, account.client, account.id, account.price)
    await add_event(conn, "delivery.requested", DeliveryRequested(
        delivery_id=delivery_id, lead_id=lead_id, lead_type=lead_type_id, client_id=account.client,
        delivery_account_id=account.id, price=account.price, fields=fields,
    ))


async def record_delivery_result(
    pool: asyncpg.Pool, catalog: Catalog, result: DeliverySucceeded | DeliveryFailed, message_id: str,
    now: datetime | None = None,
) -> None:
    """A delivery finished: sell the lead, or offer it to the next account in its plan."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        if not await claim_message(conn, RESULTS_CONSUMER, message_id):
            return
        lead = await store.lock_lead(conn, result.lead_id)
        if lead is None or lead["status"] != "routing":
            return  # already decided: a late or repeated result changes nothing
        deliveries = await store.deliveries_of(conn, result.lead_id)

        def outcome(status: str, **kw: object) -> LeadOutcome:
            return LeadOutcome(lead_id=lead["id"], status=status, source=lead["source_id"],
                               idempotency_key=lead["idempotency_key"], lead_type=lead["lead_type_id"],
                               decided_at=now, **kw)

        if isinstance(result, DeliverySucceeded):
            sold = [SoldDelivery(delivery_id=d["id"], client_id=d["client_id"],
                                 delivery_account_id=d["delivery_account_id"], price=d["price"])
                    for d in deliveries if d["status"] == "succeeded"]
            await store.decide_lead(conn, lead["id"], "sold")
            await _emit_outcome(conn, outcome("sold", deliveries=sold), lead["reply_to"], lead["correlation_id"])
            return

        tried = {d["delivery_account_id"] for d in deliveries}
        remaining = [a for a in lead["plan"] if a not in tried and a in catalog.accounts_by_id]
        if remaining:
            await _request_delivery(conn, catalog, lead["id"], lead["lead_type_id"], lead["fields"], remaining[0])
            return
        reason = f"no delivery account accepted the lead (last: {result.reason})"
        await store.decide_lead(conn, lead["id"], "unsold", reason=reason)
        await _emit_outcome(conn, outcome("unsold", reason=reason), lead["reply_to"], lead["correlation_id"])
