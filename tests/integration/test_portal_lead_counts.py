"""portal_lead_counts (migration 0630), the dashboard's leads-per-day counted ahead, against a real
PostgreSQL: the trigger keeps it equal to portal_leads through every kind of change, concurrent
deliveries lose no count, the backfill counts what was there, and the dashboard's per-day counts
equal the leads' own local days in zones with DST and with offsets of 30 and 45 minutes."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from services.portal import queries, rules, store
from services.portal.rules import Viewer
from shared import db
from tests.portal_auth_support import seed_user
from tests.portal_support import assign, person, sell

pytestmark = pytest.mark.integration

ADMIN = Viewer("acme", "all", None)


async def disagreements(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """(client, bucket) where the counts kept ahead differ from the rows themselves."""
    return await conn.fetch(
        "WITH kept AS (SELECT client_id, bucket, sum(n) AS n FROM portal_lead_counts GROUP BY 1, 2),"
        " real AS (SELECT client_id, portal_lead_bucket(completed_at) AS bucket, count(*) AS n"
        "          FROM portal_leads GROUP BY 1, 2)"
        " SELECT * FROM kept FULL JOIN real USING (client_id, bucket)"
        " WHERE coalesce(kept.n, 0) <> coalesce(real.n, 0)"
    )


async def local_days(conn: asyncpg.Connection, client: str, zone: str) -> dict[date, int]:
    """The leads' own local days, as PostgreSQL's time zone database says."""
    rows = await conn.fetch(
        "SELECT (completed_at AT TIME ZONE $2)::date AS day, count(*) AS n FROM portal_leads"
        " WHERE client_id = $1 GROUP BY 1",
        client,
        zone,
    )
    return {r["day"]: r["n"] for r in rows}


async def test_the_counts_follow_every_change_of_the_leads(conn):
    t0 = datetime(2026, 3, 10, 12, 7, tzinfo=UTC)
    first = await sell(conn, "acme", person(1), completed_at=t0)
    await sell(conn, "acme", person(2), completed_at=t0 + timedelta(minutes=3))
    await sell(conn, "bolt", person(3), completed_at=t0)
    pending = await sell(conn, "acme", person(4), status="requested")
    assert await disagreements(conn) == []
    assert await conn.fetchval("SELECT sum(n) FROM portal_lead_counts WHERE client_id = 'acme'") == 2

    # Succeeded later; its price confirmed (rewritten, same time: no count moves); moved in time.
    await conn.execute("UPDATE deliveries SET status = 'succeeded', completed_at = $2 WHERE lead_id = $1", pending, t0)
    await conn.execute("UPDATE deliveries SET price = 30.00 WHERE lead_id = $1", pending)
    await conn.execute("UPDATE deliveries SET completed_at = $2 WHERE lead_id = $1", first, t0 + timedelta(days=1))
    assert await disagreements(conn) == []
    assert await conn.fetchval("SELECT sum(n) FROM portal_lead_counts WHERE client_id = 'acme'") == 3

    # Given to another client (an operator's correction), no longer succeeded, deleted.
    await conn.execute("UPDATE deliveries SET client_id = 'bolt' WHERE lead_id = $1", first)
    await conn.execute("UPDATE deliveries SET status = 'failed' WHERE lead_id = $1", pending)
    assert await disagreements(conn) == []
    await conn.execute("DELETE FROM deliveries")
    assert await disagreements(conn) == []
    assert await conn.fetchval("SELECT coalesce(sum(n), 0) FROM portal_lead_counts") == 0


async def test_concurrent_deliveries_lose_no_count(database_url):
    """Eight connections deliver at once to two clients in the same bucket, each transaction to
    both clients in a random order (as a delivery batch may), while merges run: no delivery waits
    for another (a statement timeout or a deadlock fails the test), and no count is lost."""
    at = datetime.now(UTC).replace(microsecond=0)
    pool = await db.create_pool(database_url, min_size=8, max_size=8)
    assert pool is not None

    async def deliver_pair(worker: int, i: int) -> None:
        clients = ["acme", "bolt"]
        random.shuffle(clients)
        async with pool.acquire() as c, c.transaction():
            for n, client in enumerate(clients):
                await sell(c, client, person(worker * 1000 + i * 2 + n), completed_at=at)

    async def worker(w: int) -> None:
        for i in range(25):
            await deliver_pair(w, i)
            if i % 5 == 0:
                await store.merge_lead_counts(pool)

    try:
        await asyncio.gather(*(worker(w) for w in range(7)), worker(7))
        async with pool.acquire() as c:
            assert await disagreements(c) == []
            await store.merge_lead_counts(pool)
            assert await disagreements(c) == []
            # Merged: one row per client and bucket.
            assert await c.fetchval("SELECT count(*) FROM portal_lead_counts") == 2
            kept = await c.fetch("SELECT client_id, sum(n) AS n FROM portal_lead_counts GROUP BY 1 ORDER BY 1")
            assert [(r["client_id"], r["n"]) for r in kept] == [("acme", 200), ("bolt", 200)]
    finally:
        await pool.close()


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Asia/Kathmandu", "Australia/Lord_Howe", "UTC"])
async def test_the_days_are_the_clients_local_days_exactly(conn, zone):
    """Leads every 37 minutes over two months that hold a DST change (Los Angeles: 8 March;
    Lord Howe: a 30-minute shift on 5 April) and at each local midnight's edges: each day's
    count from the counts kept ahead equals the leads' own local dates in the zone."""
    last_month = date(2026, 3, 1)
    start, end = rules.day_start(last_month, zone), rules.day_start(date(2026, 5, 1), zone)
    instants = []
    at = start
    while at < end:
        instants.append(at)
        at += timedelta(minutes=37)
    for day in range(61):
        midnight = rules.day_start(last_month + timedelta(days=day), zone)
        instants += [midnight, midnight - timedelta(microseconds=1)]
    await conn.executemany(
        "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, status, received_at, decided_at)"
        " VALUES ($1, 'web', $2, 'solar', '{}', 'sold', $3, $3)",
        [(uuid.uuid5(uuid.NAMESPACE_URL, f"{zone}{i}"), f"{zone}{i}", t) for i, t in enumerate(instants)],
    )
    await conn.execute(
        "INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status, attempts,"
        " created_at, completed_at)"
        " SELECT gen_random_uuid(), id, 'acme', 'acme-solar', 25, 'succeeded', 1, received_at, received_at"
        " FROM leads"
    )
    days = (date(2026, 5, 1) - last_month).days
    counted = await queries.leads_per_day(conn, ADMIN, last_month, days, zone)
    truth = {d: n for d, n in (await local_days(conn, "acme", zone)).items() if last_month <= d < date(2026, 5, 1)}
    assert counted == truth
    assert sum(counted.values()) == len([t for t in instants if start <= t < end])


async def test_a_scoped_user_counts_only_the_leads_assigned_to_them(conn, database_url):
    user = await seed_user(database_url, "acme", "sam@acme.example")
    today = date.today()
    at = rules.day_start(today, "UTC") + timedelta(hours=1)
    mine = await sell(conn, "acme", person(1), completed_at=at)
    await sell(conn, "acme", person(2), completed_at=at)
    await assign(conn, "acme", mine, user)
    scoped = Viewer("acme", "own", (user,))
    assert await queries.leads_per_day(conn, scoped, today, 1, "UTC") == {today: 1}
    assert await queries.leads_per_day(conn, ADMIN, today, 1, "UTC") == {today: 2}


async def test_the_migration_counts_the_leads_already_delivered(database_server_url):
    url = db.with_database(database_server_url, f"leadwire_t_{uuid.uuid4().hex[:12]}")
    await db.ensure_database(url)
    try:
        connection = await db.connect(url)
        try:
            await connection.execute(
                "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for name, sql in db.migration_files():
                if name < "0630":
                    await connection.execute(sql)
                    await connection.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            t0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
            for i in range(3):
                await sell(connection, "acme", person(i), completed_at=t0 + timedelta(minutes=10 * i))
            await sell(connection, "bolt", person(9), completed_at=t0)
            assert "0630_portal_lead_counts.sql" in await db.migrate(url)
            assert await disagreements(connection) == []
            assert await connection.fetchval("SELECT sum(n) FROM portal_lead_counts WHERE client_id = 'acme'") == 3
        finally:
            await connection.close()
    finally:
        await db.drop_database(url)
