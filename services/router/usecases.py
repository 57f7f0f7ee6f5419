"""Router use cases: take a lead in, and move it on when a delivery succeeds or fails.

Each use case is one database transaction holding the state change and the events it causes
(outbox), so a crash at any point either leaves no trace (the message is redelivered) or leaves
the full decision with its events queued for the relay.

Everything that must hold across router replicas is held by PostgreSQL inside that transaction:
the lead row lock orders a lead's own steps, an advisory lock per fingerprint makes exactly one of
two identical leads the original (and serialises every step of leads of one person), cap counters
and order balances are taken with conditional updates under row locks, and a failed delivery gives
back what it took. The decisions themselves are in rules.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from services.router import rules, store
from services.router.store import DeliveryRow, NewDelivery, NewLead, RoutedLead
from shared import logs, metrics, orders
from shared.catalog.model import Catalog, DeliveryAccount, LeadType
from shared.contracts import (
    DeliveryFailed,
    DeliveryRequested,
    DeliverySucceeded,
    FieldError,
    InboundLead,
    LeadOutcome,
    SoldDelivery,
)
from shared.outbox import Event, Reply, add_many, add_reply, event
from shared.process import Process

RESULTS_CONSUMER = "router.delivery-results"


@dataclass(frozen=True)
class Deps:
    """What the router's use cases need from their process (built once, in main.py)."""

    process: Process
    after_commit: Callable[[], None] | None = None  # fault injection: right after a lead's commit
    mid_batch: Callable[[], None] | None = None  # fault injection: a batch of leads, before its commit


@dataclass(frozen=True)
class LeadContext:
    """Where a lead came from, as the broker told us: its properties fit to store
    (`rules.read_envelope`), the routing key it was published with, and what was wrong with them."""

    idempotency_key: str
    reply_to: str | None = None
    correlation_id: str | None = None
    routing_key: str | None = None
    problems: tuple[rules.FieldProblem, ...] = ()

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


class _Unavailable(Exception):
    """An account cannot take this lead after all (cap full, no order with room)."""


# --- receiving a lead: validate -> de-duplicate -> plan -> store -------------------------------------


@dataclass(frozen=True)
class _Arrival:
    """A lead as received, validated before its transaction: what it is, under which key, its
    normalised fields and problems, and (for a known lead type) its eligible accounts with the
    pauses and group turns that apply — read outside the transaction, in one round trip."""

    lead_id: uuid.UUID
    key: str
    lead: InboundLead
    ctx: LeadContext
    lead_type: LeadType | None
    fields: dict[str, Any]
    problems: list[rules.FieldProblem]
    candidates: list[DeliveryAccount]
    paused: frozenset[str]
    turns: dict[str, int]
    known_source: str | None  # the source, when the catalog knows it


async def receive_lead(
    deps: Deps, lead: InboundLead, ctx: LeadContext, now: datetime | None = None
) -> uuid.UUID | None:
    """Validate and store a lead, then reject it, mark it duplicate, or start offering it to the
    delivery accounts of its plan. Returns the lead id, or None for a lead already received."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    pool, catalog = deps.process.pool, deps.process.catalog
    arrival = await _validate(pool, catalog, lead, ctx, now)
    async with pool.acquire() as conn:
        async with conn.transaction():
            lead_id = await _receive(conn, catalog, arrival, now)
        if deps.after_commit is not None:
            deps.after_commit()
    metrics.ROUTING_SECONDS.labels("receive").observe(time.perf_counter() - started)
    return lead_id


async def _validate(
    pool: asyncpg.Pool, catalog: Catalog, lead: InboundLead, ctx: LeadContext, now: datetime
) -> _Arrival:
    arrival = _arrive(catalog, lead, ctx, now)
    if arrival.lead_type is None:
        return arrival
    # Eligibility before pauses: the pause list and the rotating groups' turns then come in
    # one round trip (a turn taken for a group whose accounts turn out paused is harmless).
    paused, turns = await store.pauses_and_turns(pool, rules.rotating_groups(catalog, arrival.candidates))
    return replace(arrival, paused=paused, turns=turns)


def _arrive(catalog: Catalog, lead: InboundLead, ctx: LeadContext, now: datetime) -> _Arrival:
    """A lead validated, without its pauses and turns (read from the database by the caller)."""
    lead_id = uuid.uuid4()
    logs.bind_lead(lead_id)  # every log line from here on names the lead
    # A lead without a key is kept and answered like any invalid lead, under a key of its own:
    # without a key from the source a re-send cannot be recognised.
    key = ctx.idempotency_key or f"missing:{lead_id}"
    lead_type = catalog.lead_types_by_id.get(lead.lead_type)
    fields, field_problems = rules.validate_fields(lead_type, lead.fields) if lead_type else (lead.fields, [])
    # What the envelope and the body carry wrong (a NUL, a lead_type its routing key contradicts)
    # comes first, then every other reason to reject the lead.
    problems = list(ctx.problems)
    problems += rules.body_problems(lead.nul_paths, lead.lead_type, ctx.routing_key or f"lead.{lead.lead_type}")
    problems += rules.lead_problems(
        catalog, lead.lead_type, lead.source, field_problems, has_key=bool(ctx.idempotency_key)
    )
    candidates = rules.eligible_accounts(catalog, lead_type.id, fields, now) if lead_type is not None else []
    known_source = lead.source if lead.source in catalog.sources_by_id else None
    return _Arrival(lead_id, key, lead, ctx, lead_type, fields, problems, candidates, frozenset(), {}, known_source)


@dataclass(frozen=True)
class _Duplicates:
    """What the duplicate check found: the lead's fingerprint; the original it repeats, if any;
    whether it may be routed at all (some client takes duplicates); the clients it must not go to,
    and the clients holding its person through another lead."""

    fingerprint: str | None = None
    original_lead_id: uuid.UUID | None = None
    routed: bool = True
    excluded: frozenset[str] = frozenset()
    holders: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Judgement:
    """What is decided for a lead before it is stored: its row, and either its outcome (decided at
    once: rejected, duplicate, unsold) or the routed lead to send to its first accounts."""

    arrival: _Arrival
    stored: NewLead
    outcome: LeadOutcome | None = None
    routed: RoutedLead | None = None
    holders: frozenset[str] = frozenset()


async def _receive(conn: asyncpg.Connection, catalog: Catalog, arrival: _Arrival, now: datetime) -> uuid.UUID | None:
    """One lead: de-duplicate under its fingerprint lock, judge, store, act. None when this source
    already sent this key (a redelivery, or a re-send): then nothing of this decision stays."""
    duplicates = _Duplicates()
    if not arrival.problems:
        assert arrival.lead_type is not None  # no problems: a known lead type
        duplicates = await _deduplicate(conn, catalog, arrival.lead_type, arrival.fields, now)
    judged = _judge(catalog, arrival, duplicates, now)
    if not await store.insert_lead(conn, judged.stored):
        return None
    if judged.outcome is not None:
        await add_many(conn, _outcome_messages(judged))
    await _route_stored(conn, catalog, judged, now)
    return arrival.lead_id


def _judge(catalog: Catalog, arrival: _Arrival, duplicates: _Duplicates, now: datetime) -> _Judgement:
    if arrival.problems:
        errors = [FieldError(field=p.field, message=p.message) for p in arrival.problems]
        return _at_once(arrival, now, "rejected", "invalid lead", errors=errors)
    assert arrival.lead_type is not None  # no problems: a known lead type
    if not duplicates.routed:
        return _at_once(arrival, now, "duplicate", "duplicate lead", duplicates=duplicates)
    planned = rules.plan(
        catalog,
        arrival.lead_type.id,
        arrival.lead.source,
        arrival.lead.force_id,
        arrival.candidates,
        paused=arrival.paused,
        excluded=duplicates.excluded,
        turns=arrival.turns,
    )
    if isinstance(planned, rules.Unsold):
        return _at_once(arrival, now, "unsold", planned.reason, duplicates=duplicates)
    return _to_route(arrival, duplicates, planned)


async def _deduplicate(
    conn: asyncpg.Connection, catalog: Catalog, lead_type: LeadType, fields: dict[str, Any], now: datetime
) -> _Duplicates:
    """The fingerprint lock makes the check and the insert one atomic step across replicas: the
    lead row inserted under the lock becomes visible to the next holder at commit. The lead is
    stored only once decided or planned (one row version, not two): a redelivered lead is
    recognised at that insert, after the lock, and what was decided for it is dropped."""
    fingerprint = rules.fingerprint(lead_type, fields)
    if fingerprint is None:
        return _Duplicates()
    await store.lock_fingerprint(conn, fingerprint)
    since = now - timedelta(days=lead_type.duplicate_window_days)
    original = await store.find_original(conn, lead_type.id, fingerprint, since)
    return await _duplicates_of(conn, catalog, lead_type, fingerprint, original, now)


async def _duplicates_of(
    conn: asyncpg.Connection,
    catalog: Catalog,
    lead_type: LeadType,
    fingerprint: str,
    original: uuid.UUID | None,
    now: datetime,
) -> _Duplicates:
    """What the duplicate check found, from the original read under the fingerprint lock."""
    if original is None:
        return _Duplicates(fingerprint)
    if not rules.routes_duplicates(catalog):
        return _Duplicates(fingerprint, original, routed=False)
    # Route Duplicate Leads: only to clients that take duplicates and never had this person.
    since = now - timedelta(days=lead_type.duplicate_window_days)
    holders = frozenset(await store.clients_with_fingerprint(conn, lead_type.id, fingerprint, since))
    return _Duplicates(fingerprint, original, excluded=rules.duplicate_exclusions(catalog, holders), holders=holders)


def _at_once(
    arrival: _Arrival,
    now: datetime,
    status: str,
    reason: str,
    *,
    errors: list[FieldError] | None = None,
    duplicates: _Duplicates = _Duplicates(),
) -> _Judgement:
    """A lead decided at once (rejected, duplicate, unsold): its row and its outcome."""
    lead, ctx = arrival.lead, arrival.ctx
    stored = NewLead(
        lead_id=arrival.lead_id,
        source_id=lead.source,
        idempotency_key=arrival.key,
        lead_type_id=lead.lead_type,
        fields=lead.fields,
        force_id=lead.force_id,
        reply_to=ctx.reply_to,
        correlation_id=ctx.correlation_id,
        status=status,
        reason=reason,
        errors=[e.model_dump() for e in errors] if errors else None,
        fingerprint=duplicates.fingerprint,
        original_lead_id=duplicates.original_lead_id,
    )
    outcome = LeadOutcome(
        lead_id=arrival.lead_id,
        status=status,
        source=lead.source,
        idempotency_key=arrival.key,
        lead_type=lead.lead_type,
        decided_at=now,
        reason=reason,
        errors=errors or [],
        original_lead_id=duplicates.original_lead_id,
    )
    return _Judgement(arrival, stored, outcome=outcome)


def _outcome_messages(judged: _Judgement) -> list[Event | Reply]:
    """The outcome event of a lead decided at once, and its reply; counted once committed."""
    assert judged.outcome is not None
    arrival, outcome = judged.arrival, judged.outcome
    messages: list[Event | Reply] = [event(f"lead.{outcome.status}", outcome)]
    if arrival.ctx.reply_to:
        messages.append(Reply(arrival.ctx.reply_to, arrival.ctx.correlation_id, outcome))
    _count_outcome(arrival.known_source, arrival.lead_type.id if arrival.lead_type else None, outcome.status)
    return messages


def _count_outcome(source: str | None, lead_type: str | None, status: str) -> None:
    """One lead decided: counted once its transaction commits. A source or lead type the catalog
    does not know is counted as `unknown` (what a source sends must not mint label values)."""
    metrics.lead_decided(source or "unknown", lead_type or "unknown", status)


def _to_route(arrival: _Arrival, duplicates: _Duplicates, planned: rules.Plan) -> _Judgement:
    """A lead to route: its row with its plan, and the lead as routing reads it."""
    lead, ctx = arrival.lead, arrival.ctx
    routed = RoutedLead(
        lead_id=arrival.lead_id,
        source_id=lead.source,
        idempotency_key=arrival.key,
        lead_type_id=lead.lead_type,
        fields=arrival.fields,
        fingerprint=duplicates.fingerprint,
        status="routing",
        stages=planned.stages,
        skipped=frozenset(),
        max_sales=planned.max_sales,
        original_lead_id=duplicates.original_lead_id,
        reply_to=ctx.reply_to,
        correlation_id=ctx.correlation_id,
    )
    stored = NewLead(
        lead_id=routed.lead_id,
        source_id=routed.source_id,
        idempotency_key=routed.idempotency_key,
        lead_type_id=routed.lead_type_id,
        fields=routed.fields,
        force_id=lead.force_id,
        reply_to=routed.reply_to,
        correlation_id=routed.correlation_id,
        status="routing",
        fingerprint=routed.fingerprint,
        plan=[s.to_json() for s in planned.stages],
        max_sales=planned.max_sales,
        excluded_clients=sorted(duplicates.excluded),
        original_lead_id=routed.original_lead_id,
    )
    return _Judgement(arrival, stored, routed=routed, holders=duplicates.holders)


async def _route_stored(conn: asyncpg.Connection, catalog: Catalog, judged: _Judgement, now: datetime) -> None:
    """Send a stored lead to its first account(s)."""
    if judged.routed is not None:
        await _advance(conn, catalog, judged.routed, [], now, judged.holders)


# --- receiving a batch of leads: the same steps, one statement per step for the batch -------------


async def receive_leads(
    deps: Deps, items: Sequence[tuple[InboundLead, LeadContext]], now: datetime | None = None
) -> list[uuid.UUID | None]:
    """`receive_lead` for the leads a batcher collected (shared/batching.py), in one transaction,
    with the steps every lead takes done once for the batch: the rotating groups' turns and the
    pauses, the fingerprint locks, the duplicate lookup, the lead rows, the outcome events. What
    each lead does after (its reservations and delivery requests) is its own, in the batch's
    transaction. The same results as receiving them one by one in the batch's order: a failure
    fails the batch, and the batcher then receives each lead alone."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    pool, catalog = deps.process.pool, deps.process.catalog
    arrivals = [_arrive(catalog, lead, ctx, now) for lead, ctx in items]
    typed = [i for i, a in enumerate(arrivals) if a.lead_type is not None]
    if typed:
        paused, turns = await store.pauses_and_turns_of_batch(
            pool, [rules.rotating_groups(catalog, arrivals[i].candidates) for i in typed]
        )
        for i, mine in zip(typed, turns, strict=True):
            arrivals[i] = replace(arrivals[i], paused=paused, turns=mine)
    async with pool.acquire() as conn:
        async with conn.transaction():
            lead_ids = await _receive_batch(conn, catalog, arrivals, now)
            if deps.mid_batch is not None:
                deps.mid_batch()
        if deps.after_commit is not None:
            deps.after_commit()
    elapsed = time.perf_counter() - started
    for _ in arrivals:
        metrics.ROUTING_SECONDS.labels("receive").observe(elapsed)
    return lead_ids


async def _receive_batch(
    conn: asyncpg.Connection, catalog: Catalog, arrivals: list[_Arrival], now: datetime
) -> list[uuid.UUID | None]:
    fingerprints = [
        rules.fingerprint(a.lead_type, a.fields) if a.lead_type is not None and not a.problems else None
        for a in arrivals
    ]
    # Every fingerprint of the batch, locked in one sorted step before anything is read.
    await store.lock_fingerprints(conn, [f for f in fingerprints if f is not None])
    # A lead whose person came earlier in this batch is received after the others, alone (under
    # the locks already held): its duplicate check must see the earlier lead's row.
    seen: set[str] = set()
    first: list[int] = []
    later: list[int] = []
    for i, fingerprint in enumerate(fingerprints):
        if fingerprint is not None and fingerprint in seen:
            later.append(i)
            continue
        if fingerprint is not None:
            seen.add(fingerprint)
        first.append(i)
    checked: list[tuple[int, LeadType, str]] = []
    for i in first:
        lead_type, fingerprint = arrivals[i].lead_type, fingerprints[i]
        if lead_type is not None and fingerprint is not None:
            checked.append((i, lead_type, fingerprint))
    found = await store.find_originals(
        conn, [(t.id, f, now - timedelta(days=t.duplicate_window_days)) for _, t, f in checked]
    )
    duplicates = {
        i: await _duplicates_of(conn, catalog, t, f, o, now) for (i, t, f), o in zip(checked, found, strict=True)
    }
    judged = [_judge(catalog, arrivals[i], duplicates.get(i, _Duplicates()), now) for i in first]
    stored = await store.insert_leads(conn, [j.stored for j in judged])
    kept = [j for j in judged if j.arrival.lead_id in stored]
    await add_many(conn, [m for j in kept if j.outcome is not None for m in _outcome_messages(j)])
    for j in kept:
        await _route_stored(conn, catalog, j, now)
    results = [a.lead_id if a.lead_id in stored else None for a in arrivals]
    for i in later:
        results[i] = await _receive(conn, catalog, arrivals[i], now)
    return results


# --- moving a lead on -----------------------------------------------------------------------------


async def _advance(
    conn: asyncpg.Connection,
    catalog: Catalog,
    lead: RoutedLead,
    deliveries: list[DeliveryRow],
    now: datetime,
    holders: frozenset[str],
) -> None:
    """Send the lead to whatever its plan says comes next, or decide its outcome. `holders` are the
    clients that hold this person through another lead, read under the fingerprint lock: the lead
    skips them (Route Duplicate Leads, in both directions)."""
    attempts = [d.attempt() for d in deliveries]
    client_of = {
        a: catalog.accounts_by_id[a].client for s in lead.stages for a in s.accounts if a in catalog.accounts_by_id
    }
    skipped = set(lead.skipped)
    while True:
        step = rules.next_step(list(lead.stages), attempts, skipped, lead.max_sales, client_of, holders)
        if step.done:
            await _decide(conn, lead, deliveries, bool(skipped), now)
            break
        if not step.request:
            break
        for group_id, account_id in step.request:
            if await _reserve_and_request(conn, catalog, lead, group_id, account_id, now):
                attempts.append(rules.Attempt(account_id, client_of[account_id], "requested"))
            else:
                skipped.add(account_id)
    if skipped != lead.skipped:
        await store.save_skipped(conn, lead.lead_id, sorted(skipped))


async def _reserve_and_request(
    conn: asyncpg.Connection, catalog: Catalog, lead: RoutedLead, group_id: str, account_id: str, now: datetime
) -> bool:
    """Take the account's cap units and order share, then ask delivery to post. All or nothing
    (a savepoint): an account that cannot take the lead keeps nothing reserved. False when it
    cannot take it."""
    account = catalog.accounts_by_id.get(account_id)
    client = catalog.clients_by_id.get(account.client) if account else None
    if account is None or client is None or not account.active or not client.active:
        return False  # left the catalog, or was deactivated, since the plan was made
    delivery_id = uuid.uuid4()
    # A savepoint, not compensation: rolling back to it also drops the row locks the failed
    # attempt took (a full cap counter, an order without room), which would otherwise be held
    # to commit while the lead tries other accounts, in an order other routers do not share.
    # Never released: a release is a round trip, and what it guards commits with the lead anyway.
    await conn.execute("SAVEPOINT reserve")
    try:
        sale = orders.Sale.of(catalog, account, delivery_id, account.price, now)
        cap_keys, lookup = await store.take_caps(
            conn, account.id, rules.cap_windows(account.caps, client.time_zone, now), sale
        )
        if cap_keys is None:
            raise _Unavailable("cap")
        order_id = await orders.reserve(
            conn, catalog=catalog, account=account, delivery_id=delivery_id, price=account.price, now=now, lookup=lookup
        )
        if account.require_order and order_id is None:
            raise _Unavailable("order")
    except _Unavailable as refusal:
        await conn.execute("ROLLBACK TO SAVEPOINT reserve")
        metrics.router_refused(account.id, str(refusal))
        return False
    requested = DeliveryRequested(
        delivery_id=delivery_id,
        lead_id=lead.lead_id,
        lead_type=lead.lead_type_id,
        client_id=account.client,
        delivery_account_id=account.id,
        price=account.price,
        fields=lead.fields,
    )
    await store.request_delivery(
        conn,
        NewDelivery(delivery_id, lead.lead_id, account.client, account.id, account.price, group_id, cap_keys, order_id),
        event("delivery.requested", requested),
    )
    return True


async def _decide(
    conn: asyncpg.Connection, lead: RoutedLead, deliveries: list[DeliveryRow], skipped: bool, now: datetime
) -> None:
    status, reason = rules.outcome(
        [d.attempt() for d in deliveries], duplicate=lead.original_lead_id is not None, skipped=skipped
    )
    outcome = LeadOutcome(
        lead_id=lead.lead_id,
        status=status,
        source=lead.source_id,
        idempotency_key=lead.idempotency_key,
        lead_type=lead.lead_type_id,
        decided_at=now,
        reason=reason,
        original_lead_id=lead.original_lead_id,
        deliveries=[
            SoldDelivery(
                delivery_id=d.delivery_id, client_id=d.client_id, delivery_account_id=d.account_id, price=d.price
            )
            for d in deliveries
            if d.status == "succeeded"
        ],
    )
    await store.decide_lead(conn, lead.lead_id, status, reason, event(f"lead.{status}", outcome))
    if lead.reply_to:
        await add_reply(conn, lead.reply_to, lead.correlation_id, outcome)
    # Routed leads came from a known source and lead type (checked when they arrived).
    _count_outcome(lead.source_id, lead.lead_type_id, status)


async def record_delivery_result(
    deps: Deps, result: DeliverySucceeded | DeliveryFailed, message_id: str, now: datetime | None = None
) -> None:
    """A delivery finished: settle what it reserved, then move the lead on."""
    started = time.perf_counter()
    try:
        await _record_delivery_result(deps, result, message_id, now)
    finally:
        metrics.ROUTING_SECONDS.labels("result").observe(time.perf_counter() - started)


async def _record_delivery_result(
    deps: Deps, result: DeliverySucceeded | DeliveryFailed, message_id: str, now: datetime | None
) -> None:
    now = now or datetime.now(UTC)
    pool, catalog = deps.process.pool, deps.process.catalog
    async with pool.acquire() as conn, conn.transaction():
        claimed, lead = await store.claim_and_lock_lead(conn, RESULTS_CONSUMER, message_id, result.lead_id)
        if not claimed:
            return
        deliveries = await store.deliveries_of(conn, result.lead_id)
        this = next((d for d in deliveries if d.delivery_id == result.delivery_id), None)
        # Settle first, whatever the lead's state: another delivery's result may already have
        # decided the lead from the statuses in the database, but this delivery's cap units and
        # order share are settled only here, once (the inbox claim above).
        succeeded = isinstance(result, DeliverySucceeded)
        if not succeeded:
            await store.release_caps(conn, result.delivery_id)
        if this is None or this.order_id is not None:
            await orders.settle(
                conn,
                delivery_id=result.delivery_id,
                succeeded=succeeded,
                final_price=result.price if isinstance(result, DeliverySucceeded) else Decimal(0),
                now=now,
                notify_to=[deps.process.settings.admin_email],
            )
        if lead is None or lead.status != "routing":
            return  # already decided: nothing more to send
        await _advance(conn, catalog, lead, deliveries, now, await _holders(conn, catalog, lead, now))


async def _holders(conn: asyncpg.Connection, catalog: Catalog, lead: RoutedLead, now: datetime) -> frozenset[str]:
    """Clients holding this lead's person through another lead in the duplicate window — a copy
    that arrived after this lead included (a refused original must not be re-offered to the client
    that took its duplicate meanwhile). The caller holds the fingerprint lock
    (`store.claim_and_lock_lead`), the same lock a lead being received takes, so no copy can be
    sent to a client between this read and this lead's next request."""
    if lead.fingerprint is None:
        return frozenset()
    lead_type = catalog.lead_types_by_id.get(lead.lead_type_id)
    # A lead type gone from the catalog has no window any more: every copy counts (the safe side).
    since = (
        now - timedelta(days=lead_type.duplicate_window_days)
        if lead_type is not None
        else datetime.min.replace(tzinfo=UTC)
    )
    return frozenset(
        await store.clients_with_fingerprint(conn, lead.lead_type_id, lead.fingerprint, since, other_than=lead.lead_id)
    )
