"""portal_leads (migration 0620), the portal's own client-scoped copy of the leads delivered to a
client, against a real PostgreSQL: the triggers that keep it in step with deliveries and leads, the
backfill, the sort keys (re-keyed when the catalog moves a client's list columns), and the lead
list read through it — keyset pages exact with ties, the user's scope, and never another client's
lead."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from services.portal import queries, rules
from services.portal.rules import PAGE_SIZE, LeadFilter, Sort, Viewer
from shared import db
from tests.portal_auth_support import seed_user
from tests.portal_support import assign, person, sell

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
# The portal test catalog's solar list columns, as rules.sort_columns gives them.
COLUMNS = {"first_name": "t1", "last_name": "t2", "phone": "t3", "state": "t4", "monthly_bill": "n1"}
ADMIN = Viewer("acme", "all", None)


def every_day(**changes: Any) -> LeadFilter:
    return dataclasses.replace(LeadFilter(date(2026, 1, 1), date(2026, 12, 31)), **changes)


async def row_of(conn: asyncpg.Connection, lead_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM portal_leads WHERE lead_id = $1", lead_id)


async def keyed(conn: asyncpg.Connection, lead_id: uuid.UUID) -> asyncpg.Record:
    row = await row_of(conn, lead_id)
    assert row is not None
    return row


async def every_page(conn: asyncpg.Connection, viewer: Viewer, f: LeadFilter) -> list[asyncpg.Record]:
    """The whole list, page by page, each next page found through the cursor its link carries."""
    rows: list[asyncpg.Record] = []
    after = None
    while True:
        fetched = await queries.lead_page(conn, viewer, dataclasses.replace(f, after=after), "UTC")
        page = fetched[:PAGE_SIZE]
        rows += page
        if len(fetched) <= PAGE_SIZE:
            return rows
        last = page[-1]
        text = rules.encode_cursor(f.sort, last["sort_key"], last["completed_at"], last["delivery_id"])
        after = rules.decode_cursor(text, f.sort)
        assert after is not None


async def test_the_table_follows_deliveries_and_leads_in_their_own_transactions(conn):
    await queries.ensure_sort_columns(conn, "acme", COLUMNS, 1)
    sold = await sell(conn, "acme", person(1), completed_at=T0)
    row = await row_of(conn, sold)
    assert row is not None and (row["client_id"], row["lead_type_id"], row["completed_at"]) == ("acme", "solar", T0)
    assert "Surname1" in row["search"] and "4155550001" in row["search"]
    assert (row["t1"], row["t2"], row["n1"], row["t5"], row["n2"]) == (
        "Person1",
        "Surname1",
        Decimal("101.00"),
        None,
        None,
    )

    # Not (yet) a lead the client received: nothing; as delivery posts it and it succeeds: there.
    pending = await sell(conn, "acme", person(2), status="requested")
    await sell(conn, "acme", person(3), status="failed")
    assert await conn.fetchval("SELECT count(*) FROM portal_leads") == 1
    await conn.execute("UPDATE deliveries SET status = 'posting', attempts = 2 WHERE lead_id = $1", pending)
    assert await row_of(conn, pending) is None
    await conn.execute(
        "UPDATE deliveries SET status = 'succeeded', price = 30.00, completed_at = $2 WHERE lead_id = $1", pending, T0
    )
    row = await row_of(conn, pending)
    assert row is not None and row["price"] == Decimal("30.00") and row["t1"] == "Person2"

    # A price confirmed afterwards, a lead corrected by an operator: the row follows.
    await conn.execute("UPDATE deliveries SET price = 27.50 WHERE lead_id = $1", sold)
    await conn.execute(
        "UPDATE leads SET fields = $2 WHERE id = $1", sold, person(1, last_name="Newname", monthly_bill="n/a")
    )
    row = await row_of(conn, sold)
    assert row is not None and row["price"] == Decimal("27.50") and row["t2"] == "Newname"
    assert row["n1"] == Decimal("-1E+30")  # not a number: the first group, as before
    assert "Newname" in row["search"] and "Surname1" not in row["search"]

    # A delivery no longer succeeded, or deleted: its row goes with it.
    await conn.execute("UPDATE deliveries SET status = 'failed' WHERE lead_id = $1", pending)
    assert await row_of(conn, pending) is None
    await conn.execute("DELETE FROM deliveries WHERE lead_id = $1", sold)
    assert await conn.fetchval("SELECT count(*) FROM portal_leads") == 0


async def test_keyset_pages_are_exact_with_ties_in_every_order(conn):
    await queries.ensure_sort_columns(conn, "acme", COLUMNS, 1)
    times = [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    names = ["Ames", "Baker", "", "Ames ", "ames"]
    bills = ["100.00", "99.00", "n/a", "100.00", "-5"]
    for n in range(130):  # three pages, with many rows equal in key and in time
        fields = person(n, last_name=names[n % 5], monthly_bill=bills[n % 4])
        if n % 7 == 0:
            del fields["last_name"]  # missing sorts as ''
        await sell(conn, "acme", fields, completed_at=times[n % 3], price="25.00" if n % 2 else "12.50")
    rows = await conn.fetch(
        "SELECT d.id, d.completed_at, d.price, l.lead_type_id, l.fields"
        " FROM deliveries d JOIN leads l ON l.id = d.lead_id"
    )

    def bill(fields: dict[str, Any]) -> Decimal:
        value = fields.get("monthly_bill", "")
        try:
            return Decimal(value) if value.lstrip("-").replace(".", "", 1).isdigit() else Decimal("-1e30")
        except ArithmeticError:
            return Decimal("-1e30")

    keys = {
        "delivered": lambda r: (r["completed_at"], r["id"]),
        "price": lambda r: (r["price"], r["completed_at"], r["id"]),
        "type": lambda r: (r["lead_type_id"], r["completed_at"], r["id"]),
        "f.last_name": lambda r: (r["fields"].get("last_name", ""), r["completed_at"], r["id"]),
        "f.monthly_bill": lambda r: (bill(r["fields"]), r["completed_at"], r["id"]),
    }
    types = {"solar": _solar()}
    for param, key in keys.items():
        for direction in ("asc", "desc"):
            parsed = rules.parse_lead_filter(
                {"from": "2026-01-01", "to": "2026-12-31", "sort": param, "dir": direction},
                today=date(2026, 12, 31),
                lead_types=types,
            )
            assert parsed.filter is not None, parsed.errors
            shown = [r["delivery_id"] for r in await every_page(conn, ADMIN, parsed.filter)]
            expected = [r["id"] for r in sorted(rows, key=key, reverse=direction == "desc")]
            assert shown == expected, (param, direction)
            # The export walks the same order in batches of its own (here 7: ties across batches).
            exported = [r["delivery_id"] async for r in _export(conn, ADMIN, parsed.filter, batch=7)]
            assert exported == expected, (param, direction)


def _solar() -> Any:
    from shared.catalog.model import LeadType

    return LeadType.model_validate(
        {
            "id": "solar",
            "name": "Solar",
            "fields": [
                {"name": "first_name", "list_column": True},
                {"name": "last_name", "list_column": True},
                {"name": "phone", "type": "phone", "list_column": True},
                {"name": "state", "type": "us_state", "list_column": True},
                {"name": "monthly_bill", "type": "money", "list_column": True},
            ],
        }
    )


async def test_another_clients_leads_never_appear_and_the_users_scope_holds(conn, database_url):
    await queries.ensure_sort_columns(conn, "acme", COLUMNS, 1)
    await queries.ensure_sort_columns(conn, "bolt", COLUMNS, 1)
    ann = await seed_user(database_url, "acme", "ann@acme.example")
    bob = await seed_user(database_url, "acme", "bob@acme.example")
    acme = [await sell(conn, "acme", person(n, last_name="Common"), completed_at=T0) for n in range(60)]
    bolt = [await sell(conn, "bolt", person(n, last_name="Common"), completed_at=T0) for n in range(60, 200)]
    for lead in acme[:7]:
        await assign(conn, "acme", lead, ann)
    await assign(conn, "acme", acme[7], bob)

    search = every_day(search="common")
    for f in (every_day(), search, every_day(sort=Sort("field", "last_name", False, "asc", "t2"))):
        seen = {r["lead_id"] for r in await every_page(conn, ADMIN, f)}
        assert seen == set(acme)
        assert await queries.lead_count(conn, ADMIN, f, "UTC") == 60
        exported = [r["lead_id"] async for r in _export(conn, ADMIN, f)]
        assert sorted(exported) == sorted(acme)
    bolt_admin = Viewer("bolt", "all", None)
    assert {r["lead_id"] for r in await every_page(conn, bolt_admin, search)} == set(bolt)

    # Ann (scope own) sees the seven assigned to her, sorted or searched; with her downline, Bob's.
    own = Viewer("acme", "own", (ann,), ann)
    downline = Viewer("acme", "downline", (ann, bob), ann)
    for f in (every_day(), search, every_day(sort=Sort("field", "monthly_bill", True, "desc", "n1"))):
        assert {r["lead_id"] for r in await every_page(conn, own, f)} == set(acme[:7])
        assert {r["lead_id"] for r in await every_page(conn, downline, f)} == set(acme[:8])
    # A lead of bolt's assigned to Ann by mistake still is not acme's.
    await assign(conn, "bolt", bolt[0], ann)
    assert bolt[0] not in {r["lead_id"] for r in await every_page(conn, own, every_day())}


async def _export(conn: asyncpg.Connection, viewer: Viewer, f: LeadFilter, batch: int = 1000) -> Any:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in queries.export_rows(conn, viewer, f, "UTC", batch=batch):
            yield row


async def test_new_sort_columns_rekey_that_clients_rows_only_and_an_older_catalog_changes_nothing(conn):
    acme = await sell(conn, "acme", person(1), completed_at=T0)
    bolt = await sell(conn, "bolt", person(2), completed_at=T0)
    # Before the portal set any key columns the rows have none; setting them keys every row.
    assert (await keyed(conn, acme))["t1"] is None
    assert await queries.ensure_sort_columns(conn, "acme", COLUMNS, 3)
    assert await queries.ensure_sort_columns(conn, "bolt", COLUMNS, 3)
    assert (await keyed(conn, acme))["t1"] == "Person1"

    # The catalog moved acme's list columns: acme's rows are keyed anew, bolt's stay as they were.
    moved = {"state": "t1", "first_name": "t2", "zip": "t3", "monthly_bill": "n2"}
    assert await queries.ensure_sort_columns(conn, "acme", moved, 4)
    row = await keyed(conn, acme)
    assert (row["t1"], row["t2"], row["t3"], row["t4"], row["n1"], row["n2"]) == (
        "CA",
        "Person1",
        "94110",
        None,
        None,
        Decimal("101.00"),
    )
    assert (await keyed(conn, bolt))["t1"] == "Person2"
    # New deliveries follow the stored columns.
    later = await sell(conn, "acme", person(3), completed_at=T0)
    assert (await keyed(conn, later))["t1"] == "CA"

    # A portal process still on catalog 3 does not turn them back.
    assert not await queries.ensure_sort_columns(conn, "acme", COLUMNS, 3)
    assert (await keyed(conn, acme))["t1"] == "CA"
    stored = await conn.fetch("SELECT key_column, field FROM portal_sort_columns WHERE client_id = 'acme'")
    assert {r["key_column"]: r["field"] for r in stored} == {v: k for k, v in moved.items()}


async def test_the_migration_backfills_the_leads_already_delivered(database_server_url):
    url = db.with_database(database_server_url, f"leadwire_t_{uuid.uuid4().hex[:12]}")
    await db.ensure_database(url)
    try:
        connection = await db.connect(url)
        try:
            await connection.execute(
                "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for name, sql in db.migration_files():
                if name < "0620":
                    await connection.execute(sql)
                    await connection.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            sold = await sell(connection, "acme", person(1), completed_at=T0)
            other = await sell(connection, "bolt", person(2), completed_at=T0)
            await sell(connection, "acme", person(3), status="requested")
            applied = await db.migrate(url)
            assert "0620_portal_lead_list.sql" in applied
            rows = {r["lead_id"]: r for r in await connection.fetch("SELECT * FROM portal_leads")}
            assert set(rows) == {sold, other}
            assert rows[sold]["client_id"] == "acme" and "person1@leads.example" in rows[sold]["search"]
            # Sort keys come when the portal first sets the client's key columns.
            assert rows[sold]["t1"] is None
            await queries.ensure_sort_columns(connection, "acme", COLUMNS, 1)
            assert (await keyed(connection, sold))["t2"] == "Surname1"
            assert (await keyed(connection, other))["t2"] is None
        finally:
            await connection.close()
    finally:
        await db.drop_database(url)
