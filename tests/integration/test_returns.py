"""Returns on the real broker and database: the caps under a burst of concurrent requests, every
request rule, auto-approval and admin decisions with their credits, and the monthly period."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aio_pika
import pytest
import pytest_asyncio

from services.returns import usecases
from services.returns.main import build as build_returns
from shared import db
from shared.catalog.model import Catalog
from shared.contracts import ReturnDecide, ReturnRequest
from shared.process import Standalone
from tests.returns_support import catalog_of, order_row, outbox_keys, returns_catalog, sell
from tests.support import EventTap, apply_yaml, wait_for

pytestmark = pytest.mark.integration


def deps(pool, catalog: Catalog) -> usecases.Deps:
    return usecases.Deps(Standalone(pool, catalog))


D = Decimal
NOW = datetime(2026, 6, 15, 15, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def pool(settings):
    p = await db.create_pool(settings.database_url, min_size=1, max_size=4)
    yield p
    await p.close()


def ask(lead_id: uuid.UUID, reason: str = "bad phone", client_id: str = "acme", **kw) -> ReturnRequest:
    return ReturnRequest(
        return_id=kw.pop("return_id", uuid.uuid4()), client_id=client_id, lead_id=lead_id, reason=reason, **kw
    )


async def test_fifty_concurrent_requests_against_a_ten_percent_cap_leave_exactly_ten(settings, conn):
    await apply_yaml(settings.database_url, returns_catalog(options={"default_return_pct_delivery_accounts": "10"}))
    at = datetime.now(UTC) - timedelta(minutes=5)
    sold = await sell(conn, at=at, count=100)
    # Two replicas consume the same queue, each with many messages in flight.
    replica_a, replica_b = build_returns(settings), build_returns(settings)
    async with replica_a.running(), replica_b.running(), EventTap(settings, binding="return.*") as tap:
        await asyncio.gather(
            *(
                replica_a.broker.publish(
                    ask(lead_id, comment=f"#{i}").model_dump(mode="json"),
                    exchange=replica_a.topology.events,
                    routing_key="return.request",
                    message_id=str(uuid.uuid4()),
                    persist=True,
                )
                for i, (lead_id, _) in enumerate(sold[:50])
            )
        )
        await wait_for(lambda: len(tap.bodies("return.requested")) == 50, timeout=30)
        statuses = {
            r["status"]: r["n"] for r in await conn.fetch("SELECT status, count(*) AS n FROM returns GROUP BY status")
        }
        assert statuses == {"pending": 10, "denied": 40}
        await wait_for(lambda: len(tap.bodies("return.decided")) == 40)
    assert {b["decision_reason"] for b in tap.bodies("return.decided")} == {"cap_exceeded"}
    assert await conn.fetchval("SELECT count(*) FROM returns WHERE holds_lead") == 10


async def test_request_rules_each_deny_at_once_with_their_reason(settings, conn, pool):
    await apply_yaml(settings.database_url, returns_catalog(options={"default_return_pct_delivery_accounts": "100"}))
    catalog = await catalog_of(conn)
    ((fresh, _),) = await sell(conn, at=NOW - timedelta(days=1))
    ((old, _),) = await sell(conn, at=NOW - timedelta(days=31))
    ((bolts, _),) = await sell(conn, at=NOW - timedelta(days=1), client_id="bolt", account_id="bolt-post")

    async def status(req: ReturnRequest) -> tuple[str, str | None]:
        out = await usecases.request_return(deps(pool, catalog), req, now=NOW)
        return out.status, out.decision_reason

    assert await status(ask(bolts)) == ("denied", "not_delivered")  # sold to another client
    assert await status(ask(uuid.uuid4())) == ("denied", "not_delivered")  # no such lead
    assert await status(ask(old)) == ("denied", "window_expired")
    assert await status(ask(fresh, reason="changed my mind")) == ("denied", "invalid_reason")
    # A rule denial does not hold the lead: a corrected request goes through.
    first = ask(fresh, comment="wrong number")
    assert await status(first) == ("pending", None)
    assert await status(ask(fresh)) == ("denied", "already_returned")
    # The same request again (same return id) is the same request: nothing new is recorded.
    assert await status(first) == ("pending", None)
    assert await conn.fetchval("SELECT count(*) FROM returns") == 6
    row = await conn.fetchrow("SELECT comment, delivery_account_id FROM returns WHERE id = $1", first.return_id)
    assert (row["comment"], row["delivery_account_id"]) == ("wrong number", "acme-post")
    keys = await outbox_keys(conn)
    assert keys.count("return.requested") == 6 and keys.count("return.decided") == 5


async def test_auto_approval_credits_the_order_and_the_balance_within_the_caps(settings, conn, pool):
    await apply_yaml(
        settings.database_url,
        returns_catalog(
            client={"auto_approve_returns": True},
            options={"default_return_pct_delivery_accounts": "100"},
            orders_=[
                {
                    "id": "o1",
                    "client": "acme",
                    "type": "lead_quantity",
                    "total": "10",
                    "start_date": "2026-06-01",
                    "max_return_pct": "50",
                }
            ],
        ),
    )
    catalog = await catalog_of(conn)
    sold = await sell(conn, at=NOW - timedelta(hours=1), count=4, catalog=catalog)
    assert (await order_row(conn, "o1"))["received"] == D("4")
    outcomes = [await usecases.request_return(deps(pool, catalog), ask(lead_id), now=NOW) for lead_id, _ in sold[:3]]
    # The order allows floor(4 × 50%) = 2 returns: the third is over its cap.
    assert [(o.status, o.decision_reason) for o in outcomes] == [
        ("approved", "auto_approved"),
        ("approved", "auto_approved"),
        ("denied", "cap_exceeded"),
    ]
    assert "order cap 50%" in (outcomes[2].detail or "")
    row = await order_row(conn, "o1")
    assert (row["received"], row["cost"]) == (D("2"), D("50.00"))
    assert await conn.fetchval("SELECT balance FROM client_balances WHERE client_id = 'acme'") == D("50.00")
    credited = await conn.fetch("SELECT status FROM order_charges WHERE status = 'credited'")
    assert len(credited) == 2


async def test_admin_decisions_by_cli_and_by_message(settings, conn, pool):
    await apply_yaml(
        settings.database_url,
        returns_catalog(
            options={"default_return_pct_delivery_accounts": "100", "default_return_pct_orders": "100"},
            orders_=[
                {"id": "o1", "client": "acme", "type": "dollar_amount", "total": "100", "start_date": "2026-06-01"}
            ],
        ),
    )
    catalog = await catalog_of(conn)
    at = datetime.now(UTC) - timedelta(minutes=5)
    sold = await sell(conn, at=at, count=3, catalog=catalog)
    reqs = [ask(lead_id) for lead_id, _ in sold]
    for req in reqs:
        assert (await usecases.request_return(deps(pool, catalog), req)).status == "pending"

    env = {**os.environ, "DATABASE_URL": settings.database_url}
    cli = [os.path.join(os.path.dirname(sys.executable), "leadwire"), "returns"]
    done = subprocess.run(
        [*cli, "approve", str(reqs[0].return_id), "--note", "verified bad phone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    row = await conn.fetchrow("SELECT status, note, decided_by, credit FROM returns WHERE id = $1", reqs[0].return_id)
    assert (row["status"], row["note"], row["credit"]) == ("approved", "verified bad phone", D("25.00"))
    assert row["decided_by"].startswith("cli:")
    order = await order_row(conn, "o1")
    assert (order["received"], order["cost"]) == (D("50.00"), D("50.00"))
    # Deciding it again the other way is refused, and changes nothing.
    again = subprocess.run(
        [*cli, "deny", str(reqs[0].return_id), "--note", "oops"], env=env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 1 and "already approved" in again.stderr

    service = build_returns(settings)
    async with service.running(), EventTap(settings, binding="return.decided") as tap:
        for req, decision in ((reqs[1], "deny"), (reqs[2], "approve")):
            await service.broker.publish(
                ReturnDecide(
                    return_id=req.return_id,
                    decision=decision,
                    note=f"{decision} by admin",
                    decided_by="admin@example.com",
                ).model_dump(mode="json"),
                exchange=service.topology.events,
                routing_key="return.decide",
                message_id=str(uuid.uuid4()),
                persist=True,
            )
        wanted = {str(reqs[1].return_id), str(reqs[2].return_id)}
        await wait_for(lambda: wanted <= {b["return_id"] for b in tap.bodies("return.decided")})
    by_id = {b["return_id"]: b for b in tap.bodies("return.decided")}
    denied = by_id[str(reqs[1].return_id)]
    assert (denied["status"], denied["note"], denied["credit"]) == ("denied", "deny by admin", "0")
    assert by_id[str(reqs[2].return_id)]["order_credit"] == "25.00"
    assert await conn.fetchval("SELECT balance FROM client_balances WHERE client_id = 'acme'") == D("50.00")
    assert (await order_row(conn, "o1"))["received"] == D("25.00")
    # An admin's denial still holds the lead: it cannot be asked for again.
    assert (await usecases.request_return(deps(pool, catalog), ask(sold[1][0]))).decision_reason == "already_returned"


async def test_the_cap_period_is_the_calendar_month_of_delivery_in_the_clients_zone(settings, conn, pool):
    await apply_yaml(
        settings.database_url,
        returns_catalog(lead_type={"return_window_days": 90}, options={"default_return_pct_delivery_accounts": "10"}),
    )
    catalog = await catalog_of(conn)
    # 02:00 UTC on June 1st is still May 31st in New York: these ten belong to May.
    may = await sell(conn, at=datetime(2026, 6, 1, 2, 0, tzinfo=UTC), count=10)
    june = await sell(conn, at=datetime(2026, 6, 1, 5, 0, tzinfo=UTC), count=19)
    got = [
        (await usecases.request_return(deps(pool, catalog), ask(lead), now=NOW)).status
        for lead, _ in (may[0], may[1], june[0], june[1])
    ]
    # 10% of 10 is 1 for May; 10% of 19 rounds down to 1 for June.
    assert got == ["pending", "denied", "pending", "denied"]
    # One more June delivery makes room for a second June return.
    await sell(conn, at=datetime(2026, 6, 10, tzinfo=UTC), count=1)
    assert (await usecases.request_return(deps(pool, catalog), ask(june[2][0]), now=NOW)).status == "pending"


async def test_a_lead_sold_through_router_and_delivery_is_returned_with_a_reply(settings, conn):
    from services.delivery.main import build as build_delivery
    from services.router.main import build as build_router
    from tests.support import catalog_yaml, lead_body, publish_raw, start_buyer

    buyer, stop = start_buyer()
    try:
        await apply_yaml(
            settings.database_url,
            catalog_yaml(
                buyer, options={"route_duplicate_leads": False, "default_return_pct_delivery_accounts": "100"}
            ),
        )
        router, delivery, returns = build_router(settings), build_delivery(settings), build_returns(settings)
        async with router.running(), delivery.running(), returns.running(), EventTap(settings, "lead.sold") as tap:
            await publish_raw(settings, lead_body(), message_id="sold-1")
            await wait_for(lambda: tap.bodies("lead.sold"))
            sold = tap.bodies("lead.sold")[0]
            connection = await aio_pika.connect(settings.amqp_url)
            try:
                channel = await connection.channel()
                replies: asyncio.Queue = asyncio.Queue()
                reply_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
                await reply_queue.consume(replies.put, no_ack=True)
                exchange = await channel.get_exchange(f"{settings.namespace}.events")
                request = ask(uuid.UUID(sold["lead_id"]), reason="not interested")
                await exchange.publish(
                    aio_pika.Message(
                        request.model_dump_json().encode(),
                        message_id=str(uuid.uuid4()),
                        correlation_id="ret-1",
                        reply_to="amq.rabbitmq.reply-to",
                        content_type="application/json",
                    ),
                    routing_key="return.request",
                )
                reply = await asyncio.wait_for(replies.get(), 15)
            finally:
                await connection.close()
    finally:
        stop()
    outcome = json.loads(reply.body)
    assert reply.correlation_id == "ret-1"
    assert (outcome["status"], outcome["delivery_account_id"]) == ("pending", "acme-post")
    assert outcome["delivery_id"] == sold["deliveries"][0]["delivery_id"]
