"""Router use cases: take a lead in, and move it on when a delivery succeeds or fails.

Each use case is one database transaction holding the state change and the events it causes
(outbox), so a crash at any point either leaves no trace (the message is redelivered) or leaves
the full decision with its events queued for the relay.

Everything that must hold across router replicas is held by PostgreSQL inside that transaction:
the lead row lock orders a lead's own steps, an advisory lock per fingerprint makes exactly one of
two identical leads the original, cap counters and order balances are taken with conditional
updates under row locks, and a failed delivery gives back what it took.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.router import rules, store
from shared import orders
from shared.catalog.model import Catalog, DeliveryAccount
from shared.contracts import (
    DeliveryFailed,
    DeliveryRequested,
    DeliverySucceeded,
    FieldError,
    InboundLead,
    LeadOutcome,
    SoldDelivery,
)
from shared.outbox import add_event, add_reply, event_params

RESULTS_CONSUMER = "router.delivery-results"


class _Unavailable(Exception):
    """An account cannot take this lead after all (cap full, no order with room)."""


class LeadContext:
    """Where a lead came from, as the broker told us: its properties fit to store
    (`rules.read_envelope`), the routing key it was published with, and what was wrong with them."""

    def __init__(
        self,
        idempotency_key: str,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        routing_key: str | None = None,
        problems: tuple[rules.FieldProblem, ...] = (),
    ) -> None:
        self.idempotency_key = idempotency_key
        self.reply_to = reply_to
        self.correlation_id = correlation_id
        self.routing_key = routing_key
        self.problems = problems

    @classmethod
    def from_message(
        cls,
        headers: dict[str, Any] | None,
        message_id: str | None,
        reply_to: str | None,
        correlation_id: str | None,
        routing_key: str,
    ) -> LeadContext:
        envelope = rules.read_envelope(headers, message_id, reply_to, correlation_id)
        return cls(envelope.idempotency_key, envelope.reply_to, envelope.correlation_id, routing_key, envelope.problems)


async def receive_lead(
    pool: asyncpg.Pool,
    catalog: Catalog,
    lead: InboundLead,
    ctx: LeadContext,
    now: datetime | None = None,
    after_commit: Callable[[], None] | None = None,
) -> uuid.UUID | None:
    """Validate and store a lead, then reject it, mark it duplicate, or start offering it to the
    delivery accounts of its plan. Returns the lead id, or None for a lead already received."""
    now = now or datetime.now(UTC)
    lead_type = catalog.lead_types_by_id.get(lead.lead_type)
    turns: dict[str, int] = {}
    paused: frozenset[str] = frozenset()
    candidates: list[DeliveryAccount] = []
    validated: tuple[dict[str, Any], list[rules.FieldProblem]] = (lead.fields, [])
    if lead_type is not None:
        validated = rules.validate_fields(lead_type, lead.fields)
        # Eligibility before pauses: the pause list and the rotating groups' turns then come in
        # one round trip (a turn taken for a group whose accounts turn out paused is harmless).
        candidates = rules.eligible_accounts(catalog, lead_type.id, validated[0], now)
        paused, turns = await store.pauses_and_turns(pool, rules.rotating_groups(catalog, candidates))
    async with pool.acquire() as conn:
        async with conn.transaction():
            lead_id = await _receive(conn, catalog, lead, ctx, now, validated, turns, paused, candidates)
        if after_commit is not None:
            after_commit()
    return lead_id


async def _receive(
    conn: asyncpg.Connection,
    catalog: Catalog,
    lead: InboundLead,
    ctx: LeadContext,
    now: datetime,
    validated: tuple[dict[str, Any], list[rules.FieldProblem]],
    turns: dict[str, int],
    paused: frozenset[str],
    candidates: list[DeliveryAccount],
) -> uuid.UUID | None:
    lead_id = uuid.uuid4()
    problems = list(ctx.problems)
    problems += rules.body_problems(lead.nul_paths, lead.lead_type, ctx.routing_key or f"lead.{lead.lead_type}")
    if not ctx.idempotency_key:
        # Kept and answered like any invalid lead, under a key of its own: without a key from
        # the source a re-send cannot be recognised.
        ctx.idempotency_key = f"missing:{lead_id}"
        problems.append(
            rules.FieldProblem(
                "message_id",
                "an idempotency key is required: set the AMQP message_id property or an 'idempotency-key' header",
            )
        )

    async def store_lead(status: str, **decided: Any) -> bool:
        """Insert the lead with what was decided of it; False when this source already sent this
        key (a redelivery, or a re-send): then nothing of this decision stays."""
        return await store.insert_lead(
            conn,
            lead_id=lead_id,
            source_id=lead.source,
            idempotency_key=ctx.idempotency_key,
            lead_type_id=lead.lead_type,
            force_id=lead.force_id,
            reply_to=ctx.reply_to,
            correlation_id=ctx.correlation_id,
            status=status,
            **{"fields": lead.fields, **decided},
        )

    def outcome(status: str, **kw: Any) -> LeadOutcome:
        return LeadOutcome(
            lead_id=lead_id,
            status=status,
            source=lead.source,
            idempotency_key=ctx.idempotency_key,
            lead_type=lead.lead_type,
            decided_at=now,
            **kw,
        )

    async def finish(status: str, reason: str, **kw: Any) -> uuid.UUID | None:
        if not await store_lead(
            status, reason=reason, original_lead_id=kw.get("original_lead_id"), fingerprint=kw.pop("fingerprint", None)
        ):
            return None
        await _emit_outcome(conn, outcome(status, reason=reason, **kw), ctx.reply_to, ctx.correlation_id)
        return lead_id

    lead_type = catalog.lead_types_by_id.get(lead.lead_type)
    source = catalog.sources_by_id.get(lead.source)
    if lead_type is None:
        problems.append(rules.FieldProblem("lead_type", f"unknown lead type {lead.lead_type!r}"))
    if source is None:
        problems.append(rules.FieldProblem("source", f"unknown lead source {lead.source!r}"))
    elif not source.active:
        problems.append(rules.FieldProblem("source", f"lead source {lead.source!r} is inactive"))
    fields, field_problems = validated
    problems += field_problems
    if problems:
        errors = [FieldError(field=p.field, message=p.message) for p in problems]
        if not await store_lead("rejected", reason="invalid lead", errors=[e.model_dump() for e in errors]):
            return None
        await _emit_outcome(
            conn, outcome("rejected", reason="invalid lead", errors=errors), ctx.reply_to, ctx.correlation_id
        )
        return lead_id

    # Duplicates: the fingerprint lock makes the check and the insert one atomic step across
    # replicas; the lead row inserted below, under the lock, becomes visible to the next holder at
    # commit. The lead is stored only once decided or planned (one row version, not two): a
    # redelivered lead is recognised at that insert, after the lock, and what was decided for it
    # is dropped.
    fp = rules.fingerprint(lead_type, fields)
    original_id: uuid.UUID | None = None
    excluded: set[str] = set()
    holders: set[str] = set()
    if fp is not None:
        await store.lock_fingerprint(conn, fp)
        since = now - timedelta(days=lead_type.duplicate_window_days)
        original = await store.find_original(conn, lead_type.id, fp, since)
        if original is not None:
            original_id = original["id"]
            refusing = {c.id for c in catalog.clients if not catalog.option(c.id, "route_duplicate_leads")}
            if len(refusing) == len(catalog.clients):
                return await finish("duplicate", "duplicate lead", original_lead_id=original_id, fingerprint=fp)
            # Route Duplicate Leads: only to clients that take duplicates and never had this person.
            holders = await store.clients_with_fingerprint(conn, lead_type.id, fp, since)
            excluded = refusing | holders

    max_sales = rules.max_sales(catalog, lead_type.id, lead.source)
    if lead.force_id:
        target = rules.force_target(catalog, lead.force_id)
        if target is None:
            mapping = catalog.options.delivery_force_id_mapping.value
            return await finish(
                "unsold",
                f"force id {lead.force_id!r} matches no client ({mapping})",
                original_lead_id=original_id,
                fingerprint=fp,
            )
        eligible = rules.narrow(candidates, paused=paused, excluded_clients=frozenset(excluded), only_client=target)
        stages = rules.forced_stages(catalog, eligible, target)
        if not stages:
            return await finish(
                "unsold",
                f"no eligible delivery account of forced client {target!r}",
                original_lead_id=original_id,
                fingerprint=fp,
            )
    else:
        eligible = rules.narrow(candidates, paused=paused, excluded_clients=frozenset(excluded))
        stages = rules.build_stages(catalog, eligible, turns)

    if not await store_lead(
        "routing",
        fields=fields,
        fingerprint=fp,
        plan=[s.to_json() for s in stages],
        max_sales=max_sales,
        excluded_clients=sorted(excluded),
        original_lead_id=original_id,
    ):
        return None
    state = _LeadState(
        lead_id,
        lead.source,
        ctx.idempotency_key,
        lead_type.id,
        fields,
        fp,
        stages,
        set(),
        max_sales,
        original_id,
        ctx.reply_to,
        ctx.correlation_id,
    )
    await _advance(conn, catalog, state, [], now, frozenset(holders))
    return lead_id


class _LeadState:
    def __init__(
        self,
        lead_id: uuid.UUID,
        source: str,
        key: str,
        lead_type: str,
        fields: dict[str, Any],
        fingerprint: str | None,
        stages: list[rules.Stage],
        skipped: set[str],
        max_sales: int,
        original_lead_id: uuid.UUID | None,
        reply_to: str | None,
        correlation_id: str | None,
    ) -> None:
        self.lead_id, self.source, self.key, self.lead_type, self.fields = lead_id, source, key, lead_type, fields
        self.fingerprint = fingerprint
        self.stages, self.skipped, self.max_sales = stages, skipped, max_sales
        self.original_lead_id, self.reply_to, self.correlation_id = original_lead_id, reply_to, correlation_id

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> _LeadState:
        return cls(
            row["id"],
            row["source_id"],
            row["idempotency_key"],
            row["lead_type_id"],
            row["fields"],
            row["fingerprint"],
            [rules.Stage.from_json(s) for s in row["plan"]],
            set(row["skipped"]),
            row["max_sales"],
            row["original_lead_id"],
            row["reply_to"],
            row["correlation_id"],
        )


async def _emit_outcome(
    conn: asyncpg.Connection, outcome: LeadOutcome, reply_to: str | None, correlation_id: str | None
) -> None:
    await add_event(conn, f"lead.{outcome.status}", outcome)
    if reply_to:
        await add_reply(conn, reply_to, correlation_id, outcome)


async def _advance(
    conn: asyncpg.Connection,
    catalog: Catalog,
    lead: _LeadState,
    deliveries: list[asyncpg.Record],
    now: datetime,
    holders: frozenset[str],
) -> None:
    """Send the lead to whatever its plan says comes next, or decide its outcome. `holders` are the
    clients that hold this person through another lead, read under the fingerprint lock: the lead
    skips them (Route Duplicate Leads, in both directions)."""
    attempts = store.as_attempts(deliveries)
    client_of = {
        a: catalog.accounts_by_id[a].client for s in lead.stages for a in s.accounts if a in catalog.accounts_by_id
    }
    skipped_before = len(lead.skipped)
    while True:
        step = rules.next_step(lead.stages, attempts, lead.skipped, lead.max_sales, client_of, holders)
        if step.done:
            await _decide(conn, lead, deliveries, now)
            break
        if not step.request:
            break
        for group_id, account_id in step.request:
            delivery_id = await _reserve_and_request(conn, catalog, lead, group_id, account_id, now)
            if delivery_id is None:
                lead.skipped.add(account_id)
            else:
                attempts.append(rules.Attempt(account_id, client_of[account_id], "requested"))
    if len(lead.skipped) != skipped_before:
        await store.save_skipped(conn, lead.lead_id, sorted(lead.skipped))


async def _reserve_and_request(
    conn: asyncpg.Connection, catalog: Catalog, lead: _LeadState, group_id: str, account_id: str, now: datetime
) -> uuid.UUID | None:
    """Take the account's cap units and order share, then ask delivery to post. All or nothing
    (a savepoint): an account that cannot take the lead keeps nothing reserved."""
    account = catalog.accounts_by_id.get(account_id)
    client = catalog.clients_by_id.get(account.client) if account else None
    if account is None or client is None or not account.active or not client.active:
        return None  # left the catalog, or was deactivated, since the plan was made
    delivery_id = uuid.uuid4()
    # A savepoint, not compensation: rolling back to it also drops the row locks the failed
    # attempt took (a full cap counter, an order without room), which would otherwise be held
    # to commit while the lead tries other accounts, in an order other routers do not share.
    # Never released: a release is a round trip, and what it guards commits with the lead anyway.
    await conn.execute("SAVEPOINT reserve")
    try:
        cap_keys, found = await store.take_caps(
            conn,
            account.id,
            rules.cap_windows(account.caps, client.time_zone, now),
            (account.client, orders.sale_day(catalog, account, now), delivery_id),
        )
        if cap_keys is None:
            raise _Unavailable
        order_id = await orders.reserve(
            conn, catalog=catalog, account=account, delivery_id=delivery_id, price=account.price, now=now, found=found
        )
        if account.require_order and order_id is None:
            raise _Unavailable
    except _Unavailable:
        await conn.execute("ROLLBACK TO SAVEPOINT reserve")
        return None
    await store.request_delivery(
        conn,
        delivery_id,
        lead.lead_id,
        account.client,
        account.id,
        account.price,
        group_id,
        cap_keys,
        order_id,
        event_params(
            "delivery.requested",
            DeliveryRequested(
                delivery_id=delivery_id,
                lead_id=lead.lead_id,
                lead_type=lead.lead_type,
                client_id=account.client,
                delivery_account_id=account.id,
                price=account.price,
                fields=lead.fields,
            ),
        ),
    )
    return delivery_id


async def _decide(conn: asyncpg.Connection, lead: _LeadState, deliveries: list[asyncpg.Record], now: datetime) -> None:
    sold = [d for d in deliveries if d["status"] == "succeeded"]
    if sold:
        status, reason = "sold", None
    elif lead.original_lead_id is not None:
        status, reason = "duplicate", "duplicate lead; no buyer that takes duplicates bought it"
    elif deliveries:
        last = next((d["reason"] for d in reversed(deliveries) if d["reason"]), "refused")
        status, reason = "unsold", f"no delivery account accepted the lead (last: {last})"
    elif lead.skipped:
        status, reason = "unsold", "every eligible delivery account is at its cap or has no order with room"
    else:
        status, reason = "unsold", "no eligible delivery account"
    outcome = LeadOutcome(
        lead_id=lead.lead_id,
        status=status,
        source=lead.source,
        idempotency_key=lead.key,
        lead_type=lead.lead_type,
        decided_at=now,
        reason=reason,
        original_lead_id=lead.original_lead_id,
        deliveries=[
            SoldDelivery(
                delivery_id=d["id"],
                client_id=d["client_id"],
                delivery_account_id=d["delivery_account_id"],
                price=d["price"],
            )
            for d in sold
        ],
    )
    await store.decide_lead(conn, lead.lead_id, status, reason, event_params(f"lead.{status}", outcome))
    if lead.reply_to:
        await add_reply(conn, lead.reply_to, lead.correlation_id, outcome)


async def record_delivery_result(
    pool: asyncpg.Pool,
    catalog: Catalog,
    result: DeliverySucceeded | DeliveryFailed,
    message_id: str,
    now: datetime | None = None,
) -> None:
    """A delivery finished: settle what it reserved, then move the lead on."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        claimed, row = await store.claim_and_lock_lead(conn, RESULTS_CONSUMER, message_id, result.lead_id)
        if not claimed:
            return
        deliveries = await store.deliveries_of(conn, result.lead_id)
        this = next((d for d in deliveries if d["id"] == result.delivery_id), None)
        # Settle first, whatever the lead's state: another delivery's result may already have
        # decided the lead from the statuses in the database, but this delivery's cap units and
        # order share are settled only here, once (the inbox claim above).
        succeeded = isinstance(result, DeliverySucceeded)
        if not succeeded:
            await store.release_caps(conn, result.delivery_id)
        if this is None or this["order_id"] is not None:
            await orders.settle(
                conn,
                delivery_id=result.delivery_id,
                succeeded=succeeded,
                final_price=result.price if succeeded else 0,
                now=now,
            )
        if row is None or row["status"] != "routing":
            return  # already decided: nothing more to send
        lead = _LeadState.from_row(row)
        await _advance(conn, catalog, lead, deliveries, now, await _holders(conn, catalog, lead, now))


async def _holders(conn: asyncpg.Connection, catalog: Catalog, lead: _LeadState, now: datetime) -> frozenset[str]:
    """Clients holding this lead's person through another lead in the duplicate window — a copy
    that arrived after this lead included (a refused original must not be re-offered to the client
    that took its duplicate meanwhile). The caller holds the fingerprint lock
    (`store.claim_and_lock_lead`), the same lock a lead being received takes, so no copy can be
    sent to a client between this read and this lead's next request."""
    if lead.fingerprint is None:
        return frozenset()
    lead_type = catalog.lead_types_by_id.get(lead.lead_type)
    # A lead type gone from the catalog has no window any more: every copy counts (the safe side).
    since = (
        now - timedelta(days=lead_type.duplicate_window_days)
        if lead_type is not None
        else datetime.min.replace(tzinfo=UTC)
    )
    return frozenset(
        await store.clients_with_fingerprint(conn, lead.lead_type, lead.fingerprint, since, other_than=lead.lead_id)
    )
