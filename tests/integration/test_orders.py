"""Orders on the real database (and broker for the commands): racing sales, settlement, fill,
renewal, end dates, pause/resume/close, and the Order Manager figures."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from services.returns.main import build as build_returns
from shared import db, orders
from tests.returns_support import catalog_of, order_row, outbox_keys, returns_catalog, sell
from tests.support import EventTap, apply_yaml, wait_for

pytestmark = pytest.mark.integration

D = Decimal
NOW = datetime(2026, 6, 15, 15, 0, tzinfo=UTC)


def order(id_: str = "o1", **kw) -> dict:
    return {"id": id_, "client": "acme", "type": "lead_quantity", "total": "10", "start_date": "2026-06-01", **kw}


async def race_reservations(
    database_url: str, catalog, account_id: str, n: int, price: D
) -> list[tuple[uuid.UUID, str | None]]:
    """n reservations at once, each on its own connection and transaction (as n router replicas)."""
    account = catalog.accounts_by_id[account_id]
    pool = await db.create_pool(database_url, min_size=n, max_size=n)
    start = asyncio.Event()

    async def one() -> tuple[uuid.UUID, str | None]:
        delivery_id = uuid.uuid4()
        async with pool.acquire() as conn:
            await start.wait()
            async with conn.transaction():
                got = await orders.reserve(
                    conn, catalog=catalog, account=account, delivery_id=delivery_id, price=price, now=NOW
                )
        return delivery_id, got

    try:
        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0)  # let every task take its connection before the start signal
        start.set()
        return await asyncio.gather(*tasks)
    finally:
        await pool.close()


async def test_racing_reservations_take_exactly_what_the_order_has(settings, conn):
    await apply_yaml(settings.database_url, returns_catalog(orders_=[order(total="10")]))
    catalog = await catalog_of(conn)
    results = await race_reservations(settings.database_url, catalog, "acme-post", 30, D("25"))
    won = [d for d, got in results if got == "o1"]
    assert len(won) == 10 and all(got in ("o1", None) for _, got in results)
    row = await order_row(conn, "o1")
    assert (row["received"], row["reserved"]) == (D("0"), D("10"))

    # Four deliveries fail, six succeed: the failures give their room back.
    for i, delivery_id in enumerate(won):
        async with conn.transaction():
            await orders.settle(
                conn,
                delivery_id=delivery_id,
                succeeded=i >= 4,
                final_price=D("25"),
                now=NOW,
                notify_to=["admin@example.com"],
            )
    row = await order_row(conn, "o1")
    assert (row["received"], row["reserved"], row["cost"], row["status"]) == (D("6"), D("0"), D("150.00"), "open")

    again = await race_reservations(settings.database_url, catalog, "acme-post", 10, D("25"))
    assert sum(got == "o1" for _, got in again) == 4


async def test_racing_dollar_sales_fill_exactly_to_the_total_and_close(settings, conn):
    await apply_yaml(
        settings.database_url, returns_catalog(orders_=[order(type="dollar_amount", total="100.00", renewal="none")])
    )
    catalog = await catalog_of(conn)
    results = await race_reservations(settings.database_url, catalog, "acme-post", 12, D("30"))
    won = [d for d, got in results if got]
    assert len(won) == 4  # 30 + 30 + 30 + the last 10
    taken = sorted(
        [r["amount"] for r in await conn.fetch("SELECT amount FROM order_charges WHERE status = 'reserved'")]
    )
    assert taken == [D("10"), D("30"), D("30"), D("30")]
    for delivery_id in won:
        async with conn.transaction():
            await orders.settle(
                conn,
                delivery_id=delivery_id,
                succeeded=True,
                final_price=D("30"),
                now=NOW,
                notify_to=["admin@example.com"],
            )
    row = await order_row(conn, "o1")
    # received never passes the total; cost is what the client paid for the four leads.
    assert (row["received"], row["cost"], row["status"], row["closed_reason"]) == (
        D("100"),
        D("120"),
        "closed",
        "filled",
    )
    keys = await outbox_keys(conn)
    assert keys.count("order.filled") == 1 and keys.count("notify.order_filled") == 1 and "order.closed" in keys
    notice = await conn.fetchval("SELECT payload FROM outbox WHERE routing_key = 'notify.order_filled'")
    assert notice["kind"] == "order_filled" and notice["to"] == ["admin@example.com"] and notice["client_id"] == "acme"


async def test_settle_is_idempotent_per_delivery(settings, conn):
    await apply_yaml(settings.database_url, returns_catalog(orders_=[order(total="3")]))
    catalog = await catalog_of(conn)
    delivery_id = uuid.uuid4()
    async with conn.transaction():
        assert (
            await orders.reserve(
                conn,
                catalog=catalog,
                account=catalog.accounts_by_id["acme-post"],
                delivery_id=delivery_id,
                price=D("25"),
                now=NOW,
            )
            == "o1"
        )
        # Reserving the same delivery again takes nothing more.
        assert (
            await orders.reserve(
                conn,
                catalog=catalog,
                account=catalog.accounts_by_id["acme-post"],
                delivery_id=delivery_id,
                price=D("25"),
                now=NOW,
            )
            == "o1"
        )
    for succeeded in (True, True, False):
        async with conn.transaction():
            await orders.settle(conn, delivery_id=delivery_id, succeeded=succeeded, final_price=D("25"), now=NOW)
    row = await order_row(conn, "o1")
    assert (row["received"], row["reserved"], row["cost"]) == (D("1"), D("0"), D("25"))


async def test_confirmed_price_moves_a_dollar_order_within_its_total(settings, conn):
    await apply_yaml(settings.database_url, returns_catalog(orders_=[order(type="dollar_amount", total="50")]))
    catalog = await catalog_of(conn)
    account = catalog.accounts_by_id["acme-post"]
    ids = [uuid.uuid4(), uuid.uuid4()]
    async with conn.transaction():
        for d in ids:
            assert await orders.reserve(conn, catalog=catalog, account=account, delivery_id=d, price=D("25"), now=NOW)
    async with conn.transaction():
        # The buyer confirmed 40 for the first: only the 25 it reserved is free, the other 25 is held.
        await orders.settle(conn, delivery_id=ids[0], succeeded=True, final_price=D("40"), now=NOW)
    row = await order_row(conn, "o1")
    assert (row["received"], row["reserved"], row["cost"]) == (D("25"), D("25"), D("40"))
    async with conn.transaction():
        await orders.settle(conn, delivery_id=ids[1], succeeded=True, final_price=D("10"), now=NOW)
    row = await order_row(conn, "o1")
    assert (row["received"], row["reserved"], row["cost"], row["status"]) == (D("35"), D("0"), D("50"), "open")


async def test_on_fill_renewal_starts_a_fresh_period_and_archives_the_old(settings, conn):
    await apply_yaml(
        settings.database_url,
        returns_catalog(orders_=[order(total="2", renewal="on_fill", start_date="2026-06-01", end_date="2026-06-30")]),
    )
    catalog = await catalog_of(conn)
    await sell(conn, at=NOW, count=2, catalog=catalog)
    row = await order_row(conn, "o1")
    # Filled on June 15 (New York): the new period starts that day and lasts 29 days like the first.
    assert (row["status"], row["period"], row["received"], row["cost"]) == ("open", 2, D("0"), D("0"))
    assert (row["period_start"], row["period_end"]) == (date(2026, 6, 15), date(2026, 7, 14))
    archived = await conn.fetchrow("SELECT * FROM order_periods WHERE order_id = 'o1'")
    assert (archived["period"], archived["received"], archived["cost"]) == (1, D("2"), D("50.00"))
    assert (await outbox_keys(conn)).count("order.filled") == 1
    filled = await conn.fetchval("SELECT payload FROM outbox WHERE routing_key = 'order.filled'")
    assert filled["renewed"] is True and filled["status"] == "open" and filled["period"] == 1
    # The new period sells again, past the old end date.
    later = datetime(2026, 7, 10, 12, tzinfo=UTC)
    await sell(conn, at=later, count=1, catalog=catalog)
    assert (await order_row(conn, "o1"))["received"] == D("1")


async def test_close_at_end_stays_open_but_full(settings, conn):
    await apply_yaml(settings.database_url, returns_catalog(orders_=[order(total="1", renewal="close_at_end")]))
    catalog = await catalog_of(conn)
    await sell(conn, at=NOW, count=1, catalog=catalog)
    row = await order_row(conn, "o1")
    assert (row["status"], row["received"]) == ("open", D("1"))
    async with conn.transaction():
        assert (
            await orders.reserve(
                conn,
                catalog=catalog,
                account=catalog.accounts_by_id["acme-post"],
                delivery_id=uuid.uuid4(),
                price=D("25"),
                now=NOW,
            )
            is None
        )


async def test_oldest_covering_order_first_and_account_lists_respected(settings, conn):
    await apply_yaml(
        settings.database_url,
        returns_catalog(
            orders_=[
                order("newer", total="5", start_date="2026-06-10"),
                order("older", total="1", start_date="2026-06-01"),
                order("other-only", total="5", start_date="2026-05-01", accounts=["acme-other"]),
                order("future", total="5", start_date="2026-07-01"),
            ]
        ),
    )
    catalog = await catalog_of(conn)
    account = catalog.accounts_by_id["acme-post"]
    got = []
    for _ in range(3):
        async with conn.transaction():
            got.append(
                await orders.reserve(
                    conn, catalog=catalog, account=account, delivery_id=uuid.uuid4(), price=D("25"), now=NOW
                )
            )
    assert got == ["older", "newer", "newer"]
    bolt = catalog.accounts_by_id["bolt-post"]
    async with conn.transaction():
        assert (
            await orders.reserve(conn, catalog=catalog, account=bolt, delivery_id=uuid.uuid4(), price=D("20"), now=NOW)
            is None
        )


async def test_orders_past_their_end_are_skipped_and_swept_closed(settings, conn):
    await apply_yaml(
        settings.database_url,
        returns_catalog(orders_=[order("ends", end_date="2026-06-14"), order("lasts", end_date="2026-06-30")]),
    )
    catalog = await catalog_of(conn)
    account = catalog.accounts_by_id["acme-post"]
    # 02:00 UTC on June 15 is still June 14 in New York: the order is still usable.
    evening = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
    async with conn.transaction():
        assert (
            await orders.reserve(
                conn, catalog=catalog, account=account, delivery_id=uuid.uuid4(), price=D("25"), now=evening
            )
            == "ends"
        )
        assert await orders.close_expired(conn, evening) == []
    async with conn.transaction():
        assert (
            await orders.reserve(
                conn, catalog=catalog, account=account, delivery_id=uuid.uuid4(), price=D("25"), now=NOW
            )
            == "lasts"
        )
        assert await orders.close_expired(conn, NOW) == ["ends"]
    row = await order_row(conn, "ends")
    assert (row["status"], row["closed_reason"]) == ("closed", "ended")
    assert "order.closed" in await outbox_keys(conn)


async def test_pause_and_resume_through_the_broker_stop_and_restart_reservations(settings, conn):
    await apply_yaml(settings.database_url, returns_catalog(orders_=[order()]))
    catalog = await catalog_of(conn)
    account = catalog.accounts_by_id["acme-post"]

    async def reserve_now() -> str | None:
        async with conn.transaction():
            return await orders.reserve(
                conn, catalog=catalog, account=account, delivery_id=uuid.uuid4(), price=D("25"), now=datetime.now(UTC)
            )

    service = build_returns(settings)
    async with service.running(), EventTap(settings, binding="order.*") as tap:
        assert await reserve_now() == "o1"
        await service.broker.publish(
            {"order_id": "o1", "action": "pause"},
            exchange=service.topology.events,
            routing_key="order.command",
            message_id="cmd-1",
            persist=True,
        )
        await wait_for(lambda: tap.bodies("order.paused"))
        assert await reserve_now() is None
        # The portal names its client: another client's order is not found, and nothing changes.
        await service.broker.publish(
            {"order_id": "o1", "action": "resume", "client_id": "bolt"},
            exchange=service.topology.events,
            routing_key="order.command",
            message_id="cmd-2",
            persist=True,
        )
        await service.broker.publish(
            {"order_id": "o1", "action": "resume", "client_id": "acme"},
            exchange=service.topology.events,
            routing_key="order.command",
            message_id="cmd-3",
            persist=True,
        )
        await wait_for(lambda: tap.bodies("order.resumed"))
        assert await reserve_now() == "o1"
    assert len(tap.bodies("order.resumed")) == 1
    assert await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'returns.order-command'") == 3


async def test_order_manager_figures_are_exact_and_scoped(settings, conn):
    await apply_yaml(
        settings.database_url,
        returns_catalog(
            orders_=[
                order("lq", total="10", accounts=["acme-post"]),
                order("usd", type="dollar_amount", total="200", accounts=["acme-other"]),
                {"id": "b1", "client": "bolt", "type": "lead_quantity", "total": "5", "start_date": "2026-06-01"},
            ]
        ),
    )
    catalog = await catalog_of(conn)
    await sell(conn, at=NOW, count=3, catalog=catalog)
    await sell(conn, at=NOW, count=2, account_id="acme-other", price=D("30"), catalog=catalog)
    async with conn.transaction():
        await orders.reserve(
            conn,
            catalog=catalog,
            account=catalog.accounts_by_id["acme-post"],
            delivery_id=uuid.uuid4(),
            price=D("25"),
            now=NOW,
        )
        assert await orders.record_payment(conn, order_id="lq", amount=D("50")) == D("50")
    figures = {f.order_id: f for f in await orders.order_figures(conn, client_id="acme")}
    assert set(figures) == {"lq", "usd"}
    lq, usd = figures["lq"], figures["usd"]
    assert (lq.total, lq.received, lq.remaining, lq.in_flight, lq.cost, lq.amount_paid) == (
        D("10"),
        D("3"),
        D("7"),
        D("1"),
        D("75"),
        D("50"),
    )
    assert (usd.total, usd.received, usd.remaining, usd.in_flight, usd.cost, usd.amount_paid) == (
        D("200"),
        D("60"),
        D("140"),
        D("0"),
        D("60"),
        D("0"),
    )
    assert [f.order_id for f in await orders.order_figures(conn, client_id="bolt")] == ["b1"]


async def test_running_service_sweeps_ended_orders_and_cli_commands_change_status(settings, conn):
    import os
    import subprocess
    import sys

    await apply_yaml(
        settings.database_url,
        returns_catalog(orders_=[order("ended", start_date="2020-01-01", end_date="2020-01-31"), order("live")]),
    )
    service = build_returns(settings, sweep_interval=0.1)
    async with service.running():
        await wait_for(lambda: _status(conn, "ended", "closed"))
    assert (await order_row(conn, "live"))["status"] == "open"

    env = {**os.environ, "DATABASE_URL": settings.database_url}
    cli = os.path.join(os.path.dirname(sys.executable), "leadwire")
    paused = subprocess.run([cli, "orders", "pause", "live"], env=env, capture_output=True, text=True, timeout=60)
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
    assert (await order_row(conn, "live"))["status"] == "paused"
    refused = subprocess.run([cli, "orders", "resume", "ended"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "closed" in refused.stderr
    shown = subprocess.run(
        [cli, "orders", "show", "--client", "acme"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and "live" in shown.stdout and "ended" in shown.stdout


async def _status(conn, order_id: str, status: str) -> bool:
    return (await order_row(conn, order_id))["status"] == status
