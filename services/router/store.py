"""Router SQL. Rows the routing logic reads come back as frozen values (`RoutedLead`,
`DeliveryRow`); a statement that does several things in one round trip is built from named
fragments (shared/sql.py), never from hand-numbered parameters."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from services.router.rules import Attempt, Stage
from shared import sql
from shared.orders import Sale, SaleLookup, sale_lookup
from shared.outbox import Event, claim, with_event
from shared.sql import statement


@dataclass(frozen=True)
class NewLead:
    """A lead as it is first stored: decided at once ('rejected', 'duplicate', 'unsold') or being
    routed ('routing', with its plan)."""

    lead_id: uuid.UUID
    source_id: str
    idempotency_key: str
    lead_type_id: str
    fields: dict[str, Any]
    force_id: str | None
    reply_to: str | None
    correlation_id: str | None
    status: str
    reason: str | None = None
    errors: list[dict[str, str]] | None = None
    fingerprint: str | None = None
    plan: list[dict[str, Any]] | None = None
    max_sales: int = 1
    excluded_clients: list[str] | None = None
    original_lead_id: uuid.UUID | None = None


@dataclass(frozen=True)
class RoutedLead:
    """A lead being routed, as a delivery result finds it (locked)."""

    lead_id: uuid.UUID
    source_id: str
    idempotency_key: str
    lead_type_id: str
    fields: dict[str, Any]
    fingerprint: str | None
    status: str
    stages: tuple[Stage, ...]
    skipped: frozenset[str]
    max_sales: int
    original_lead_id: uuid.UUID | None
    reply_to: str | None
    correlation_id: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RoutedLead:
        return cls(
            row["id"],
            row["source_id"],
            row["idempotency_key"],
            row["lead_type_id"],
            row["fields"],
            row["fingerprint"],
            row["status"],
            tuple(Stage.from_json(s) for s in row["plan"]),
            frozenset(row["skipped"]),
            row["max_sales"],
            row["original_lead_id"],
            row["reply_to"],
            row["correlation_id"],
        )


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery of a lead, as the router reads it back (delivery owns its status)."""

    delivery_id: uuid.UUID
    client_id: str
    account_id: str
    price: Decimal
    status: str  # requested | posting | succeeded | failed
    reason: str | None
    order_id: str | None
    cap_keys: tuple[tuple[str, str], ...] = ()  # the cap windows it holds: (period, start)

    def attempt(self) -> Attempt:
        return Attempt(self.account_id, self.client_id, self.status)


async def insert_lead(conn: asyncpg.Connection, lead: NewLead) -> bool:
    """Store a new lead. False when this source already sent this key: the (source, idempotency
    key) unique constraint is router.leads' inbox."""
    inserted = await sql.fetchval(
        conn,
        statement(
            "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, force_id, status, reply_to,"
            " correlation_id, reason, errors, fingerprint, plan, max_sales, excluded_clients, original_lead_id,"
            " decided_at) VALUES (:lead_id, :source_id, :idempotency_key, :lead_type_id, :fields, :force_id, :status,"
            " :reply_to, :correlation_id, :reason, :errors, :fingerprint, :plan, :max_sales, :excluded_clients,"
            " :original_lead_id, CASE WHEN :status = 'routing' THEN NULL ELSE now() END)"
            " ON CONFLICT (source_id, idempotency_key) DO NOTHING RETURNING true",
            lead_id=lead.lead_id,
            source_id=lead.source_id,
            idempotency_key=lead.idempotency_key,
            lead_type_id=lead.lead_type_id,
            fields=lead.fields,
            force_id=lead.force_id,
            status=lead.status,
            reply_to=lead.reply_to,
            correlation_id=lead.correlation_id,
            reason=lead.reason,
            errors=lead.errors,
            fingerprint=lead.fingerprint,
            plan=lead.plan or [],
            max_sales=lead.max_sales,
            excluded_clients=lead.excluded_clients or [],
            original_lead_id=lead.original_lead_id,
        ),
    )
    return bool(inserted)


async def lock_fingerprint(conn: asyncpg.Connection, fingerprint: str) -> None:
    """Serialise leads with the same fingerprint across every router replica until commit, so two
    identical leads arriving together cannot both be the original."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", fingerprint)


# The original a lead repeats: the earliest lead of the person in the window that is not itself a
# duplicate, else the earliest. Leads stored by one transaction share `received_at` (now(), the
# transaction's start: a batch of leads, services/router/usecases.py), so "earliest" alone could
# name a duplicate stored beside its original.
_ORIGINAL_FIRST = "original_lead_id IS NOT NULL, received_at, id"


async def lock_fingerprints(conn: asyncpg.Connection, fingerprints: list[str]) -> None:
    """`lock_fingerprint` for a batch of leads, in one round trip. Taken in sorted order (unnest
    keeps the array's order), the order every batch takes them in, so two batches never wait on
    each other crosswise; a lead handled alone takes one lock, which cannot cross either."""
    await sql.execute(
        conn,
        statement(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(f, 0))) FROM unnest(:fingerprints::text[]) f",
            fingerprints=sorted(set(fingerprints)),
        ),
    )


async def find_originals(conn: asyncpg.Connection, wanted: list[tuple[str, str, datetime]]) -> list[uuid.UUID | None]:
    """`find_original` of each (lead type, fingerprint, since), in one round trip."""
    if not wanted:
        return []
    rows = await sql.fetch(
        conn,
        statement(
            "SELECT w.n, o.id FROM unnest(:lead_types::text[], :fingerprints::text[], :sinces::timestamptz[])"
            "  WITH ORDINALITY AS w(lead_type_id, fingerprint, since, n)"
            " LEFT JOIN LATERAL (SELECT id FROM leads WHERE lead_type_id = w.lead_type_id"
            "  AND fingerprint = w.fingerprint AND received_at >= w.since AND status <> 'rejected'"
            "  ORDER BY " + _ORIGINAL_FIRST + " LIMIT 1) o ON true ORDER BY w.n",
            lead_types=[t for t, _, _ in wanted],
            fingerprints=[f for _, f, _ in wanted],
            sinces=[s for _, _, s in wanted],
        ),
    )
    return [r["id"] for r in rows]


async def insert_leads(conn: asyncpg.Connection, leads: list[NewLead]) -> set[uuid.UUID]:
    """`insert_lead` for a batch, in one round trip: the ids of the leads stored (a lead whose
    source sent its key before, in an earlier transaction or earlier in this batch, is not)."""
    if not leads:
        return set()
    rows = await sql.fetch(
        conn,
        statement(
            "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, force_id, status, reply_to,"
            " correlation_id, reason, errors, fingerprint, plan, max_sales, excluded_clients, original_lead_id,"
            " decided_at)"
            " SELECT l.id, l.source_id, l.idempotency_key, l.lead_type_id, l.fields::jsonb, l.force_id, l.status,"
            "  l.reply_to, l.correlation_id, l.reason, l.errors::jsonb, l.fingerprint, l.plan::jsonb, l.max_sales,"
            "  l.excluded_clients::jsonb, l.original_lead_id, CASE WHEN l.status = 'routing' THEN NULL ELSE now() END"
            " FROM unnest(:ids::uuid[], :source_ids::text[], :keys::text[], :lead_types::text[], :fields::text[],"
            "  :force_ids::text[], :statuses::text[], :reply_tos::text[], :correlation_ids::text[], :reasons::text[],"
            "  :errors::text[], :fingerprints::text[], :plans::text[], :max_sales::int[], :excluded::text[],"
            "  :originals::uuid[]) WITH ORDINALITY AS l(id, source_id, idempotency_key, lead_type_id, fields,"
            "  force_id, status, reply_to, correlation_id, reason, errors, fingerprint, plan, max_sales,"
            "  excluded_clients, original_lead_id, n)"
            " ORDER BY l.n"
            " ON CONFLICT (source_id, idempotency_key) DO NOTHING RETURNING id",
            ids=[lead.lead_id for lead in leads],
            source_ids=[lead.source_id for lead in leads],
            keys=[lead.idempotency_key for lead in leads],
            lead_types=[lead.lead_type_id for lead in leads],
            fields=[json.dumps(lead.fields) for lead in leads],
            force_ids=[lead.force_id for lead in leads],
            statuses=[lead.status for lead in leads],
            reply_tos=[lead.reply_to for lead in leads],
            correlation_ids=[lead.correlation_id for lead in leads],
            reasons=[lead.reason for lead in leads],
            errors=[json.dumps(lead.errors) if lead.errors is not None else None for lead in leads],
            fingerprints=[lead.fingerprint for lead in leads],
            plans=[json.dumps(lead.plan or []) for lead in leads],
            max_sales=[lead.max_sales for lead in leads],
            excluded=[json.dumps(lead.excluded_clients or []) for lead in leads],
            originals=[lead.original_lead_id for lead in leads],
        ),
    )
    return {r["id"] for r in rows}


async def find_original(
    conn: asyncpg.Connection, lead_type_id: str, fingerprint: str, since: datetime
) -> uuid.UUID | None:
    """The earliest lead with this fingerprint received since `since` (rejected leads aside)."""
    found: uuid.UUID | None = await sql.fetchval(
        conn,
        statement(
            "SELECT id FROM leads WHERE lead_type_id = :lead_type_id AND fingerprint = :fingerprint"
            " AND received_at >= :since AND status <> 'rejected' ORDER BY " + _ORIGINAL_FIRST + " LIMIT 1",
            lead_type_id=lead_type_id,
            fingerprint=fingerprint,
            since=since,
        ),
    )
    return found


async def clients_with_fingerprint(
    conn: asyncpg.Connection,
    lead_type_id: str,
    fingerprint: str,
    since: datetime,
    other_than: uuid.UUID | None = None,
) -> set[str]:
    """Clients that received (or are being sent) a lead with this fingerprint received since
    `since`, other than lead `other_than`. Read under the fingerprint lock, in a statement of its
    own: one that waited for the lock would read the deliveries as of before the wait."""
    rows = await sql.fetch(
        conn,
        statement(
            "SELECT DISTINCT d.client_id FROM leads l JOIN deliveries d ON d.lead_id = l.id"
            " WHERE l.lead_type_id = :lead_type_id AND l.fingerprint = :fingerprint AND l.received_at >= :since"
            " AND l.id IS DISTINCT FROM :other_than AND d.status IN ('requested', 'posting', 'succeeded')",
            lead_type_id=lead_type_id,
            fingerprint=fingerprint,
            since=since,
            other_than=other_than,
        ),
    )
    return {r["client_id"] for r in rows}


async def pauses_and_turns(pool: asyncpg.Pool, rotating_groups: list[str]) -> tuple[frozenset[str], dict[str, int]]:
    """The auto-paused accounts, and the next turn of each rotating group, in one round trip.
    Deliberately outside the lead's transaction: a group's counter row is locked for this one
    statement, not for the whole routing decision; groups are taken in name order so two routers
    never wait on each other's rows crosswise."""
    row = await sql.fetchrow(
        pool,
        statement(
            "WITH turns AS ("
            " INSERT INTO group_rotation (group_id, counter) SELECT g, 0 FROM unnest(:groups::text[]) g ORDER BY g"
            " ON CONFLICT (group_id) DO UPDATE SET counter = group_rotation.counter + 1 RETURNING group_id, counter)"
            " SELECT array(SELECT delivery_account_id FROM delivery_account_state WHERE paused) AS paused,"
            " array(SELECT group_id FROM turns) AS groups, array(SELECT counter FROM turns) AS counters",
            groups=sorted(rotating_groups),
        ),
    )
    assert row is not None  # a select-list without FROM: always one row
    return frozenset(row["paused"]), dict(zip(row["groups"], row["counters"], strict=True))


async def pauses_and_turns_of_batch(
    pool: asyncpg.Pool, rotating_groups: list[list[str]]
) -> tuple[frozenset[str], list[dict[str, int]]]:
    """`pauses_and_turns` for a batch of leads (each lead's rotating groups), in one round trip:
    each group's counter moves by the number of leads that rotate it, and those leads take the
    turns in between, in the batch's order — the turns they would have taken one by one."""
    wanted: dict[str, int] = {}
    for groups in rotating_groups:
        for group in groups:
            wanted[group] = wanted.get(group, 0) + 1
    row = await sql.fetchrow(
        pool,
        statement(
            "WITH w AS (SELECT * FROM unnest(:groups::text[], :counts::int[]) AS w(group_id, n)),"
            " turns AS (INSERT INTO group_rotation (group_id, counter) SELECT group_id, n - 1 FROM w ORDER BY group_id"
            " ON CONFLICT (group_id) DO UPDATE SET counter = group_rotation.counter"
            "  + (SELECT w.n FROM w WHERE w.group_id = excluded.group_id) RETURNING group_id, counter)"
            " SELECT array(SELECT delivery_account_id FROM delivery_account_state WHERE paused) AS paused,"
            " array(SELECT group_id FROM turns) AS groups, array(SELECT counter FROM turns) AS counters",
            groups=sorted(wanted),
            counts=[wanted[g] for g in sorted(wanted)],
        ),
    )
    assert row is not None  # a select-list without FROM: always one row
    # The last turn taken per group; hand them out backwards from there.
    next_turn = {g: c - wanted[g] + 1 for g, c in zip(row["groups"], row["counters"], strict=True)}
    turns: list[dict[str, int]] = []
    for groups in rotating_groups:
        mine: dict[str, int] = {}
        for group in groups:
            mine[group] = next_turn[group]
            next_turn[group] += 1
        turns.append(mine)
    return frozenset(row["paused"]), turns


async def save_skipped(conn: asyncpg.Connection, lead_id: uuid.UUID, skipped: list[str]) -> None:
    await sql.execute(
        conn, statement("UPDATE leads SET skipped = :skipped WHERE id = :lead_id", lead_id=lead_id, skipped=skipped)
    )


async def decide_lead(
    conn: asyncpg.Connection, lead_id: uuid.UUID, status: str, reason: str | None, event: Event
) -> None:
    """The routed lead's outcome, once its deliveries are done, with its `lead.<status>` event, in
    one round trip."""
    decided = statement(
        "decided AS (UPDATE leads SET status = :status, reason = :reason, decided_at = now() WHERE id = :lead_id"
        " RETURNING id)",
        lead_id=lead_id,
        status=status,
        reason=reason,
    )
    await sql.execute(conn, with_event(decided, event, source="decided"))


async def claim_and_lock_lead(
    conn: asyncpg.Connection, consumer: str, message_id: str, lead_id: uuid.UUID
) -> tuple[bool, RoutedLead | None]:
    """Claim a message in the inbox and, the first time only, lock its lead and, while the lead is
    still routing, its fingerprint: (claimed, the lead or None). One round trip.

    Lock order: the lead row, then the fingerprint (the projection is computed from the locked
    row), then whatever caps and orders the step touches. A lead being received takes only the
    fingerprint, then caps and orders; it never waits on an existing lead's row, so the two orders
    cannot cross. The lead's deliveries, and the other clients holding its person, must be read by
    later statements: one that waited here for a lock would read them as of before the wait."""
    row = await sql.fetchrow(
        conn,
        statement(
            "WITH :claim"
            " SELECT c.claimed, l.*, CASE WHEN l.status = 'routing' AND l.fingerprint IS NOT NULL"
            "  THEN pg_advisory_xact_lock(hashtextextended(l.fingerprint, 0)) END AS fingerprint_locked"
            " FROM (SELECT EXISTS (SELECT FROM claim) AS claimed) c"
            " LEFT JOIN LATERAL (SELECT id, source_id, idempotency_key, lead_type_id, fields, fingerprint, status,"
            "  plan, skipped, max_sales, original_lead_id, reply_to, correlation_id FROM leads"
            "  WHERE id = :lead_id AND c.claimed FOR UPDATE) l ON true",
            claim=claim(consumer, message_id),
            lead_id=lead_id,
        ),
    )
    assert row is not None  # one row, claimed or not
    return row["claimed"], RoutedLead.from_row(row) if row["id"] is not None else None


async def claim_and_lock_leads(
    conn: asyncpg.Connection, consumer: str, messages: list[tuple[str, uuid.UUID]]
) -> tuple[set[str], dict[uuid.UUID, RoutedLead]]:
    """`claim_and_lock_lead` for a batch of (message id, lead id), message ids distinct, in one
    round trip: the messages claimed, and the leads of the claimed ones, locked. Claims are taken
    in message id order and the lead rows in id order, the order every batch takes them in; the
    caller then locks the routing leads' fingerprints, sorted, in a statement of its own
    (`lock_fingerprints`): the global order is lead rows, then fingerprints, then cap counters,
    then orders (docs/architecture.md, "Concurrency")."""
    rows = await sql.fetch(
        conn,
        statement(
            "WITH w AS (SELECT * FROM unnest(:message_ids::text[], :lead_ids::uuid[]) AS w(message_id, lead_id)),"
            " claimed AS (INSERT INTO inbox (consumer, message_id) SELECT :consumer, message_id FROM w"
            "  ORDER BY message_id ON CONFLICT DO NOTHING RETURNING message_id),"
            " locked AS (SELECT id, source_id, idempotency_key, lead_type_id, fields, fingerprint, status, plan,"
            "  skipped, max_sales, original_lead_id, reply_to, correlation_id FROM leads"
            "  WHERE id IN (SELECT w.lead_id FROM w JOIN claimed USING (message_id)) ORDER BY id FOR UPDATE)"
            " SELECT array(SELECT message_id FROM claimed) AS claimed, l.*"
            " FROM (SELECT 1) one LEFT JOIN locked l ON true",
            consumer=consumer,
            message_ids=[m for m, _ in messages],
            lead_ids=[lead for _, lead in messages],
        ),
    )
    claimed = set(rows[0]["claimed"]) if rows else set()
    return claimed, {r["id"]: RoutedLead.from_row(r) for r in rows if r["id"] is not None}


async def clients_with_fingerprints(
    conn: asyncpg.Connection, wanted: list[tuple[str, str, datetime, uuid.UUID]]
) -> list[set[str]]:
    """`clients_with_fingerprint` of each (lead type, fingerprint, since, other than), in one
    round trip; read under the fingerprint locks, in a statement of its own."""
    if not wanted:
        return []
    rows = await sql.fetch(
        conn,
        statement(
            "SELECT w.n, d.client_id FROM unnest(:lead_types::text[], :fingerprints::text[],"
            "  :sinces::timestamptz[], :others::uuid[]) WITH ORDINALITY AS w(lead_type_id, fingerprint, since,"
            "  other_than, n)"
            " JOIN leads l ON l.lead_type_id = w.lead_type_id AND l.fingerprint = w.fingerprint"
            "  AND l.received_at >= w.since AND l.id <> w.other_than"
            " JOIN deliveries d ON d.lead_id = l.id AND d.status IN ('requested', 'posting', 'succeeded')",
            lead_types=[t for t, _, _, _ in wanted],
            fingerprints=[f for _, f, _, _ in wanted],
            sinces=[s for _, _, s, _ in wanted],
            others=[o for _, _, _, o in wanted],
        ),
    )
    found: list[set[str]] = [set() for _ in wanted]
    for r in rows:
        found[r["n"] - 1].add(r["client_id"])
    return found


async def lock_caps(conn: asyncpg.Connection, keys: list[tuple[str, str, datetime, int | None]]) -> set[str]:
    """Lock the cap counters (account, period, window start) a transaction may take or give back,
    in one round trip, before it takes any: in the order given (the caller sorts them: account,
    then period as `take_caps` takes an account's windows, then start), so two transactions that
    both lock up front never hold two counters crosswise. A counter not there yet is created at
    0 (and held, as any uncommitted insert is); an existing one is locked by an update that
    changes nothing. Returns the accounts with a counter at its cap (the fourth element; None:
    not asked) as the locked rows say it — exact while they are held."""
    if not keys:
        return set()
    rows = await sql.fetch(
        conn,
        statement(
            "WITH w AS (SELECT * FROM unnest(:accounts::text[], :periods::text[], :starts::timestamp[],"
            "  :caps::int[]) WITH ORDINALITY AS w(a, p, s, cap, n)),"
            " locked AS (INSERT INTO cap_usage (delivery_account_id, period, period_start, used)"
            "  SELECT a, p, s, 0 FROM w ORDER BY n"
            "  ON CONFLICT (delivery_account_id, period, period_start) DO UPDATE SET used = cap_usage.used"
            "  RETURNING delivery_account_id, period, period_start, used)"
            " SELECT DISTINCT l.delivery_account_id FROM locked l JOIN w ON w.a = l.delivery_account_id"
            "  AND w.p = l.period AND w.s = l.period_start WHERE w.cap IS NOT NULL AND l.used >= w.cap",
            accounts=[a for a, _, _, _ in keys],
            periods=[p for _, p, _, _ in keys],
            starts=[s for _, _, s, _ in keys],
            caps=[c for _, _, _, c in keys],
        ),
    )
    return {r["delivery_account_id"] for r in rows}


async def accounts_at_cap(conn: asyncpg.Connection, windows: list[tuple[str, str, datetime, int]]) -> set[str]:
    """The accounts with a counter at its cap among (account, period, window start, cap), in one
    round trip, without locking: what a batch predicts will refuse (`usecases._lock_caps_ahead`)."""
    if not windows:
        return set()
    rows = await sql.fetch(
        conn,
        statement(
            "SELECT DISTINCT c.delivery_account_id FROM unnest(:accounts::text[], :periods::text[],"
            "  :starts::timestamp[], :caps::int[]) AS w(a, p, s, cap)"
            " JOIN cap_usage c ON c.delivery_account_id = w.a AND c.period = w.p AND c.period_start = w.s"
            " WHERE c.used >= w.cap",
            accounts=[a for a, _, _, _ in windows],
            periods=[p for _, p, _, _ in windows],
            starts=[s for _, _, s, _ in windows],
            caps=[c for _, _, _, c in windows],
        ),
    )
    return {r["delivery_account_id"] for r in rows}


async def lock_orders(conn: asyncpg.Connection, delivery_ids: list[uuid.UUID], client_ids: list[str]) -> None:
    """Lock, in id order, the orders a batch of delivery results may change: those the deliveries
    reserved from (settled now) and the open orders of the clients it may request from next.
    After the cap counters, as every transaction that locks up front does."""
    await sql.execute(
        conn,
        statement(
            "SELECT count(*) FROM (SELECT id FROM orders WHERE id IN (SELECT order_id FROM order_charges"
            "  WHERE delivery_id = ANY(:delivery_ids::uuid[]) AND status = 'reserved')"
            "  OR (client_id = ANY(:client_ids::text[]) AND status = 'open') ORDER BY id FOR UPDATE) o",
            delivery_ids=delivery_ids,
            client_ids=client_ids,
        ),
    )


async def release_caps_of(conn: asyncpg.Connection, delivery_ids: list[uuid.UUID]) -> None:
    """`release_caps` for several failed deliveries, in one round trip: a counter two of them
    hold goes down by two (one UPDATE changes a row once, so the units are counted first)."""
    await sql.execute(
        conn,
        statement(
            "UPDATE cap_usage c SET used = greatest(c.used - k.n, 0)"
            " FROM (SELECT d.delivery_account_id AS account, k->>0 AS period, (k->>1)::timestamp AS start,"
            "  count(*) AS n FROM deliveries d, jsonb_array_elements(d.cap_keys) k"
            "  WHERE d.id = ANY(:delivery_ids::uuid[]) GROUP BY 1, 2, 3) k"
            " WHERE c.delivery_account_id = k.account AND c.period = k.period AND c.period_start = k.start"
            " AND c.used > 0",
            delivery_ids=delivery_ids,
        ),
    )


async def take_caps(
    conn: asyncpg.Connection, account_id: str, windows: list[tuple[str, datetime, int]], sale: Sale
) -> tuple[list[list[str]] | None, SaleLookup | None]:
    """Count one sale in each of an account's cap windows, and read the sale's order lookup
    (`orders.sale_lookup`) in the same round trip. Returns the windows as [period, start] keys, or
    None when one of them is full — then the caller rolls back what this statement took (it runs
    in a savepoint) — and the lookup (None without windows: no statement is made). One statement
    for every window: each counter is updated under its row lock only while below its cap, so
    concurrent routers can never push a count past it, and every router locks an account's
    windows in the same order."""
    if not windows:
        return [], None
    row = await sql.fetchrow(
        conn,
        statement(
            "WITH w AS (SELECT * FROM unnest(:periods::text[], :starts::timestamp[], :caps::int[])"
            "  AS w(period, period_start, cap)),"
            " taken AS (INSERT INTO cap_usage (delivery_account_id, period, period_start, used)"
            "  SELECT :account_id, period, period_start, 1 FROM w"
            "  ON CONFLICT (delivery_account_id, period, period_start) DO UPDATE SET used = cap_usage.used + 1"
            "  WHERE cap_usage.used < (SELECT w.cap FROM w WHERE w.period = excluded.period)"
            "  RETURNING 1)"
            " SELECT (SELECT count(*) FROM taken) AS taken, :lookup",
            account_id=account_id,
            periods=[p for p, _, _ in windows],
            starts=[s for _, s, _ in windows],
            caps=[c for _, _, c in windows],
            lookup=sale_lookup(sale),
        ),
    )
    assert row is not None  # a select-list without FROM: always one row
    lookup = SaleLookup.from_row(row)
    if row["taken"] < len(windows):
        return None, lookup
    return [[period, start.isoformat()] for period, start, _cap in windows], lookup


async def release_caps(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> None:
    """Give back the cap units a failed delivery held."""
    await sql.execute(
        conn,
        statement(
            "UPDATE cap_usage c SET used = c.used - 1"
            " FROM deliveries d, jsonb_array_elements(d.cap_keys) k"
            " WHERE d.id = :delivery_id AND c.delivery_account_id = d.delivery_account_id"
            " AND c.period = k->>0 AND c.period_start = (k->>1)::timestamp AND c.used > 0",
            delivery_id=delivery_id,
        ),
    )


@dataclass(frozen=True)
class NewDelivery:
    delivery_id: uuid.UUID
    lead_id: uuid.UUID
    client_id: str
    account_id: str
    price: Decimal
    group_id: str
    cap_keys: list[list[str]]
    order_id: str | None


async def request_delivery(conn: asyncpg.Connection, delivery: NewDelivery, event: Event) -> None:
    """Insert the delivery and its `delivery.requested` event in one round trip."""
    inserted = statement(
        "delivery AS (INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status,"
        " group_id, cap_keys, order_id) VALUES (:delivery_id, :lead_id, :client_id, :account_id, :price,"
        " 'requested', :group_id, :cap_keys, :order_id) RETURNING id)",
        delivery_id=delivery.delivery_id,
        lead_id=delivery.lead_id,
        client_id=delivery.client_id,
        account_id=delivery.account_id,
        price=delivery.price,
        group_id=delivery.group_id,
        cap_keys=delivery.cap_keys,
        order_id=delivery.order_id,
    )
    await sql.execute(conn, with_event(inserted, event, source="delivery"))


async def deliveries_of(conn: asyncpg.Connection, lead_id: uuid.UUID) -> list[DeliveryRow]:
    return (await deliveries_of_leads(conn, [lead_id])).get(lead_id, [])


async def deliveries_of_leads(
    conn: asyncpg.Connection, lead_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[DeliveryRow]]:
    """Each lead's deliveries, oldest first, in one round trip (leads without any are absent)."""
    rows = await sql.fetch(
        conn,
        statement(
            "SELECT id, lead_id, client_id, delivery_account_id, price, status, reason, order_id, cap_keys"
            " FROM deliveries WHERE lead_id = ANY(:lead_ids::uuid[]) ORDER BY lead_id, created_at, id",
            lead_ids=lead_ids,
        ),
    )
    found: dict[uuid.UUID, list[DeliveryRow]] = {}
    for r in rows:
        found.setdefault(r["lead_id"], []).append(
            DeliveryRow(
                r["id"],
                r["client_id"],
                r["delivery_account_id"],
                r["price"],
                r["status"],
                r["reason"],
                r["order_id"],
                tuple((k[0], k[1]) for k in r["cap_keys"] or []),
            )
        )
    return found


# --- Re-routing an unsold lead (an admin's command; services/router/reroute.py) ---------------------


async def unsold_lead(conn: asyncpg.Connection | asyncpg.Pool, lead_id: uuid.UUID) -> Mapping[str, Any] | None:
    """The lead a re-route command names, unlocked (its plan is worked out before the
    transaction, as a new lead's is)."""
    return await sql.fetchrow(
        conn,
        statement(
            "SELECT id, source_id, lead_type_id, fields, force_id, fingerprint, status, original_lead_id FROM leads"
            " WHERE id = :lead_id",
            lead_id=lead_id,
        ),
    )


async def claim_and_lock_unsold(
    conn: asyncpg.Connection, consumer: str, message_id: str, lead_id: uuid.UUID
) -> tuple[bool, bool]:
    """Claim the command in the inbox and, the first time only, lock its lead while it is still
    unsold, then its fingerprint — the lock order of `claim_and_lock_lead`. (claimed, locked)."""
    row = await sql.fetchrow(
        conn,
        statement(
            "WITH :claim"
            " SELECT c.claimed, l.id IS NOT NULL AS locked, CASE WHEN l.fingerprint IS NOT NULL"
            "  THEN pg_advisory_xact_lock(hashtextextended(l.fingerprint, 0)) END AS fingerprint_locked"
            " FROM (SELECT EXISTS (SELECT FROM claim) AS claimed) c"
            " LEFT JOIN LATERAL (SELECT id, fingerprint FROM leads"
            "  WHERE id = :lead_id AND status = 'unsold' AND c.claimed FOR UPDATE) l ON true",
            claim=claim(consumer, message_id),
            lead_id=lead_id,
        ),
    )
    assert row is not None  # one row, claimed or not
    return row["claimed"], row["locked"]


async def replan_lead(
    conn: asyncpg.Connection,
    lead_id: uuid.UUID,
    *,
    fields: dict[str, Any],
    plan: list[dict[str, Any]],
    max_sales: int,
    excluded_clients: list[str],
) -> RoutedLead:
    """An unsold lead routed again with a new plan. Its reply_to is dropped: whoever sent it was
    answered when it was first decided, and must not get a second answer now."""
    row = await sql.fetchrow(
        conn,
        statement(
            "UPDATE leads SET status = 'routing', reason = NULL, decided_at = NULL, fields = :fields, plan = :plan,"
            " skipped = '[]', max_sales = :max_sales, excluded_clients = :excluded_clients, reply_to = NULL,"
            " correlation_id = NULL WHERE id = :lead_id AND status = 'unsold'"
            " RETURNING id, source_id, idempotency_key, lead_type_id, fields, fingerprint, status, plan, skipped,"
            " max_sales, original_lead_id, reply_to, correlation_id",
            lead_id=lead_id,
            fields=fields,
            plan=plan,
            max_sales=max_sales,
            excluded_clients=excluded_clients,
        ),
    )
    assert row is not None  # the caller holds the lead's row lock, taken while it was unsold
    return RoutedLead.from_row(row)


async def note_unsold_again(conn: asyncpg.Connection, lead_id: uuid.UUID, reason: str) -> None:
    """A re-route that found no buyer either: the lead stays unsold, with the new reason."""
    await sql.execute(
        conn,
        statement(
            "UPDATE leads SET reason = :reason WHERE id = :lead_id AND status = 'unsold'",
            lead_id=lead_id,
            reason=reason,
        ),
    )
