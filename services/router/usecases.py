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
    mid_results: Callable[[], None] | None = None  # fault injection: a batch of results, before its commit


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
    if judged.routed is not None:
        await _lock_caps_ahead(conn, catalog, [(judged.routed, [], judged.holders)], now)
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
    # Every cap counter the routed leads may take, locked in one sorted step before any is taken.
    await _lock_caps_ahead(
        conn, catalog, [(j.routed, [], j.holders) for j in kept if j.routed is not None], now, predict_refusals=True
    )
    for j in kept:
        await _route_stored(conn, catalog, j, now)
    results = [a.lead_id if a.lead_id in stored else None for a in arrivals]
    for i in later:
        results[i] = await _receive(conn, catalog, arrivals[i], now)
    return results


# --- locking the cap counters up front, in one order ----------------------------------------------


_Routing = tuple[RoutedLead, list[DeliveryRow], frozenset[str]]  # a lead, its deliveries, its holders


_PERIOD_ORDER = {p: i for i, p in enumerate(rules.CAP_PERIODS)}


def _windows(catalog: Catalog, account_id: str, now: datetime) -> list[tuple[str, str, datetime, int]]:
    """The cap counters `_reserve_and_request` would take for this account now, with their caps."""
    account = catalog.accounts_by_id.get(account_id)
    client = catalog.clients_by_id.get(account.client) if account else None
    if account is None or client is None:
        return []
    return [(account.id, p, start, cap) for p, start, cap in rules.cap_windows(account.caps, client.time_zone, now)]


def _unavailable(catalog: Catalog, account_id: str) -> bool:
    """An account `_reserve_and_request` refuses without touching a counter."""
    account = catalog.accounts_by_id.get(account_id)
    client = catalog.clients_by_id.get(account.client) if account else None
    return account is None or client is None or not account.active or not client.active


def _held_keys(delivery: DeliveryRow) -> list[tuple[str, str, datetime]]:
    """The cap counters a delivery holds (given back when it failed)."""
    return [(delivery.account_id, p, datetime.fromisoformat(start)) for p, start in delivery.cap_keys]


async def _lock_caps_ahead(
    conn: asyncpg.Connection,
    catalog: Catalog,
    leads: list[_Routing],
    now: datetime,
    released: Sequence[tuple[str, str, datetime]] = (),
    *,
    predict_refusals: bool = False,
) -> None:
    """Lock every cap counter the transaction will touch — those of the accounts each lead's step
    tries (`rules.accounts_tried`), and those it gives back (`released`) — in one statement,
    sorted (account, then period in the order `store.take_caps` takes an account's windows, then
    start), before it takes any. Transactions that take counters of several accounts one by one,
    in their plans' orders (which rotation makes differ), could otherwise each hold one and wait
    for the other's: a deadlock PostgreSQL breaks after a second by failing one of them.

    Which accounts a step tries depends on which refuse. A batch (`predict_refusals`) first reads
    which of its leads' accounts are at a cap (one statement, no lock); a lone lead or result
    assumes none is. The lock statement returns which locked counters are at their cap — exact,
    since they are now held: a full one cannot be freed, a free one cannot fill — and when that
    changes what the steps try (a counter filled or freed between the read and the lock), the
    further accounts are locked in a second statement: the one window, of milliseconds, left for
    a deadlock PostgreSQL would have to break. Locking every account a step could reach instead
    would lock every counter of a long plan (the benchmark's 50 accounts) in every transaction and
    serialise them all. Counters of one account only need no statement: `take_caps` takes them in
    this order."""
    # Per account once, not per lead: a batch's leads share most of their plans' accounts.
    planned = {a for lead, _d, _h in leads for s in lead.stages for a in s.accounts}
    unavailable = {a for a in planned if _unavailable(catalog, a)}
    windows: dict[str, list[tuple[str, str, datetime, int]]] = {}

    def windows_of(account: str) -> list[tuple[str, str, datetime, int]]:
        if account not in windows:
            windows[account] = _windows(catalog, account, now)
        return windows[account]

    full: set[str] = set()
    if predict_refusals and planned - unavailable:
        every = {a: windows_of(a) for a in planned - unavailable}
        full = {a for a, mine in every.items() if any(cap == 0 for _a, _p, _s, cap in mine)}
        full |= await store.accounts_at_cap(conn, sorted(w for mine in every.values() for w in mine if w[3] > 0))
    client_of = {a: catalog.accounts_by_id[a].client for a in planned if a in catalog.accounts_by_id}

    def tried(refused: set[str]) -> set[str]:
        accounts: set[str] = set()
        for lead, deliveries, holders in leads:
            attempts = [d.attempt() for d in deliveries]
            accounts.update(
                rules.accounts_tried(
                    list(lead.stages), attempts, set(lead.skipped), lead.max_sales, client_of, holders, refused
                )
            )
        return accounts - unavailable

    locked: set[str] = set()
    # Each counter once (one statement cannot lock a row twice), with its cap when it is taken.
    keys: dict[tuple[str, str, datetime], int | None] = dict.fromkeys(released)
    for first in (True, False):
        for account in tried(unavailable | full) - locked:
            keys.update({(a, p, start): cap for a, p, start, cap in windows_of(account)})
        if not keys or (first and len({account for account, _, _ in keys}) < 2):
            return  # nothing, or one account's counters: `take_caps` takes them in this order
        ordered = sorted(keys, key=lambda k: (k[0], _PERIOD_ORDER.get(k[1], len(_PERIOD_ORDER)), k[1], k[2]))
        at_cap = await store.lock_caps(conn, [(*k, keys[k]) for k in ordered])
        locked |= {account for account, _, _ in keys}
        keys = {}
        # What the locked counters say now is exact: when it differs from what the steps were
        # worked out from, they are worked out again.
        exact = (full - locked) | at_cap
        if exact == full:
            return
        full = exact


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
        routing = lead is not None and lead.status == "routing"
        holders = await _holders(conn, catalog, lead, now) if lead is not None and routing else frozenset()
        this = next((d for d in deliveries if d.delivery_id == result.delivery_id), None)
        succeeded = isinstance(result, DeliverySucceeded)
        # The counters this result gives back and those the lead's next step may take, in the
        # order every transaction locks them (`_lock_caps_ahead`).
        await _lock_caps_ahead(
            conn,
            catalog,
            [(lead, deliveries, holders)] if lead is not None and routing else [],
            now,
            _held_keys(this) if this is not None and not succeeded else [],
        )
        # Settle first, whatever the lead's state: another delivery's result may already have
        # decided the lead from the statuses in the database, but this delivery's cap units and
        # order share are settled only here, once (the inbox claim above).
        if not succeeded:
            await store.release_caps(conn, result.delivery_id)
        await _settle(deps, conn, result, this, now)
        if lead is None or not routing:
            return  # already decided: nothing more to send
        await _advance(conn, catalog, lead, deliveries, now, holders)


async def _settle(
    deps: Deps,
    conn: asyncpg.Connection,
    result: DeliverySucceeded | DeliveryFailed,
    this: DeliveryRow | None,
    now: datetime,
) -> None:
    """Confirm or release the order share the delivery reserved (none: no statement)."""
    if this is None or this.order_id is not None:
        await orders.settle(
            conn,
            delivery_id=result.delivery_id,
            succeeded=isinstance(result, DeliverySucceeded),
            final_price=result.price if isinstance(result, DeliverySucceeded) else Decimal(0),
            now=now,
            notify_to=[deps.process.settings.admin_email],
        )


# --- delivery results in a batch: one statement per step for the batch -----------------------------


async def record_delivery_results(
    deps: Deps, items: Sequence[tuple[DeliverySucceeded | DeliveryFailed, str]], now: datetime | None = None
) -> list[None]:
    """`record_delivery_result` for the (result, message id) a batcher collected
    (shared/batching.py), in one transaction. Every lock is taken up front, in the one order every
    batch takes them in, so two batches (two router replicas, or results against leads being
    received) wait on each other but never crosswise: the inbox claims and the lead rows sorted
    (one statement), the routing leads' fingerprints sorted (one), then — after the leads'
    deliveries and the clients holding their persons are read (one each) — every cap counter the
    batch gives back or may take, sorted (one), and the orders it may settle or reserve from,
    sorted (one, only when any are in play). Then the failed deliveries' cap units go back (one),
    each result with an order share is settled, and each lead moves on once, whatever number of
    its results the batch holds: the lead's deliveries as read hold every one of them. A failure
    fails the batch, and the batcher then records each result alone."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    async with deps.process.pool.acquire() as conn, conn.transaction():
        await _record_results(deps, conn, items, now)
        if deps.mid_results is not None:
            deps.mid_results()
    elapsed = time.perf_counter() - started
    for _ in items:
        metrics.ROUTING_SECONDS.labels("result").observe(elapsed)
    return [None for _ in items]


async def _record_results(
    deps: Deps,
    conn: asyncpg.Connection,
    items: Sequence[tuple[DeliverySucceeded | DeliveryFailed, str]],
    now: datetime,
) -> None:
    catalog = deps.process.catalog
    # A message the batch holds twice (the relay may publish a row again) is claimed once.
    firsts: dict[str, DeliverySucceeded | DeliveryFailed] = {}
    for result, message_id in items:
        firsts.setdefault(message_id, result)
    claimed, leads = await store.claim_and_lock_leads(
        conn, RESULTS_CONSUMER, [(message_id, result.lead_id) for message_id, result in firsts.items()]
    )
    results = [result for message_id, result in firsts.items() if message_id in claimed]
    if not results:
        return
    routing = sorted((lead for lead in leads.values() if lead.status == "routing"), key=lambda lead: lead.lead_id)
    await store.lock_fingerprints(conn, [lead.fingerprint for lead in routing if lead.fingerprint is not None])
    deliveries = await store.deliveries_of_leads(conn, sorted({r.lead_id for r in results}))
    holders = await _holders_of(conn, catalog, routing, now)
    delivery = {d.delivery_id: d for rows in deliveries.values() for d in rows}
    failed = [r for r in results if not isinstance(r, DeliverySucceeded)]
    plans: list[_Routing] = [(lead, deliveries.get(lead.lead_id, []), holders[lead.lead_id]) for lead in routing]
    await _lock_caps_ahead(
        conn,
        catalog,
        plans,
        now,
        [k for r in failed if (d := delivery.get(r.delivery_id)) is not None for k in _held_keys(d)],
        predict_refusals=True,
    )
    # The orders in play: those the results' deliveries reserved from, and those of the clients
    # the leads may be sent to next. Without any, no statement.
    settling = [r for r in results if (d := delivery.get(r.delivery_id)) is None or d.order_id is not None]
    # (Every account of the leads' plans: orders are few, and a superset costs nothing here.)
    clients = {
        catalog.accounts_by_id[a].client
        for lead in routing
        for s in lead.stages
        for a in s.accounts
        if a in catalog.accounts_by_id
    }
    ordering = sorted(clients & {order.client for order in catalog.orders})
    if settling or ordering:
        await store.lock_orders(conn, [r.delivery_id for r in settling], ordering)
    if failed:
        await store.release_caps_of(conn, [r.delivery_id for r in failed])
    for result in settling:
        await _settle(deps, conn, result, delivery.get(result.delivery_id), now)
    for lead in routing:
        await _advance(conn, catalog, lead, deliveries.get(lead.lead_id, []), now, holders[lead.lead_id])


async def _holders_of(
    conn: asyncpg.Connection, catalog: Catalog, leads: list[RoutedLead], now: datetime
) -> dict[uuid.UUID, frozenset[str]]:
    """`_holders` of each lead, in one round trip (none without fingerprints)."""
    wanted = [lead for lead in leads if lead.fingerprint is not None]
    found = await store.clients_with_fingerprints(
        conn,
        [
            (lead.lead_type_id, lead.fingerprint or "", _window_start(catalog, lead, now), lead.lead_id)
            for lead in wanted
        ],
    )
    holders = {lead.lead_id: frozenset[str]() for lead in leads}
    for lead, clients in zip(wanted, found, strict=True):
        holders[lead.lead_id] = frozenset(clients)
    return holders


def _window_start(catalog: Catalog, lead: RoutedLead, now: datetime) -> datetime:
    """Where the lead's duplicate window starts. A lead type gone from the catalog has no window
    any more: every copy counts (the safe side)."""
    lead_type = catalog.lead_types_by_id.get(lead.lead_type_id)
    if lead_type is None:
        return datetime.min.replace(tzinfo=UTC)
    return now - timedelta(days=lead_type.duplicate_window_days)


async def _holders(conn: asyncpg.Connection, catalog: Catalog, lead: RoutedLead, now: datetime) -> frozenset[str]:
    """Clients holding this lead's person through another lead in the duplicate window — a copy
    that arrived after this lead included (a refused original must not be re-offered to the client
    that took its duplicate meanwhile). The caller holds the fingerprint lock
    (`store.claim_and_lock_lead`), the same lock a lead being received takes, so no copy can be
    sent to a client between this read and this lead's next request."""
    if lead.fingerprint is None:
        return frozenset()
    return frozenset(
        await store.clients_with_fingerprint(
            conn, lead.lead_type_id, lead.fingerprint, _window_start(catalog, lead, now), other_than=lead.lead_id
        )
    )
