"""The walking skeleton on real RabbitMQ, PostgreSQL and a real HTTP buyer endpoint."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator

import aio_pika
import pytest
import pytest_asyncio

from services.delivery.main import build as build_delivery
from services.router.main import build as build_router
from tests.support import (
    EventTap,
    apply_yaml,
    catalog_yaml,
    lead_body,
    new_key,
    publish_raw,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def system(settings, buyer) -> AsyncIterator[None]:
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    router, delivery = build_router(settings), build_delivery(settings)
    async with router.running(), delivery.running():
        yield


async def test_lead_from_raw_aio_pika_reaches_buyer_and_is_sold(settings, system, buyer, conn):
    async with EventTap(settings) as tap:
        await publish_raw(settings, lead_body(email="Ada@Example.com"), message_id="src-1")
        await wait_for(lambda: tap.bodies("lead.sold"))
    assert buyer.paths() == ["/acme"]
    request = buyer.received[0]
    assert request.method == "POST"
    body = request.json()
    assert body["first_name"] == "Ada" and body["phone"] == "4155550100" and body["email"] == "ada@example.com"
    outcome = tap.bodies("lead.sold")[0]
    assert outcome["idempotency_key"] == "src-1"
    assert [(d["client_id"], d["price"]) for d in outcome["deliveries"]] == [("acme", "25.00")]
    assert request.headers["Idempotency-Key"] == outcome["deliveries"][0]["delivery_id"]
    row = await conn.fetchrow("SELECT status, fields FROM leads")
    assert row["status"] == "sold" and row["fields"]["phone"] == "4155550100"
    attempts = await conn.fetch("SELECT outcome, status_code FROM delivery_attempts")
    assert [(a["outcome"], a["status_code"]) for a in attempts] == [("accepted", 200)]


@pytest.mark.skipif(shutil.which("amqp-publish") is None, reason="amqp-tools not installed")
async def test_lead_from_amqp_publish_cli_reaches_buyer(settings, system, buyer):
    async with EventTap(settings) as tap:
        subprocess.run(
            [
                "amqp-publish",
                "--url",
                settings.amqp_url.rstrip("/"),
                "-e",
                f"{settings.namespace}.inbound",
                "-r",
                "lead.solar",
                "-p",
                "-C",
                "application/json",
                "-H",
                "idempotency-key: cli-1",
                "-b",
                json.dumps(lead_body()),
            ],
            check=True,
            timeout=30,
        )
        await wait_for(lambda: tap.bodies("lead.sold"))
    assert buyer.paths() == ["/acme"]
    assert tap.bodies("lead.sold")[0]["idempotency_key"] == "cli-1"


async def test_reply_to_receives_the_terminal_outcome(settings, system):
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        replies: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        reply_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            replies.put_nowait(message)

        await reply_queue.consume(on_reply, no_ack=True)
        exchange = await channel.get_exchange(f"{settings.namespace}.inbound")
        await exchange.publish(
            aio_pika.Message(
                json.dumps(lead_body()).encode(),
                message_id="sync-1",
                correlation_id="corr-7",
                reply_to="amq.rabbitmq.reply-to",
                content_type="application/json",
            ),
            routing_key="lead.solar",
        )
        reply = await asyncio.wait_for(replies.get(), 15)
    finally:
        await connection.close()
    outcome = json.loads(reply.body)
    assert reply.correlation_id == "corr-7"
    assert outcome["status"] == "sold" and outcome["idempotency_key"] == "sync-1"


async def test_invalid_lead_is_kept_and_answered_with_every_field_error(settings, system, buyer, conn):
    async with EventTap(settings) as tap:
        await publish_raw(
            settings,
            {"lead_type": "solar", "source": "web", "fields": {"phone": "12", "state": "ZZ", "color": "red"}},
            message_id=new_key(),
        )
        await wait_for(lambda: tap.bodies("lead.rejected"))
    errors = {(e["field"], e["message"]) for e in tap.bodies("lead.rejected")[0]["errors"]}
    assert {f for f, _ in errors} == {"first_name", "phone", "state", "color"}
    assert ("first_name", "is required") in errors
    row = await conn.fetchrow("SELECT status, fields, errors FROM leads")
    assert row["status"] == "rejected" and row["fields"]["color"] == "red" and len(row["errors"]) == 4
    assert buyer.received == []


@pytest.mark.skipif(shutil.which("amqp-publish") is None, reason="amqp-tools not installed")
async def test_lead_without_idempotency_key_is_rejected_and_kept(settings, system, conn):
    # amqp-publish sets no message_id (aio-pika would invent one), so this lead has no key at all.
    async with EventTap(settings) as tap:
        subprocess.run(
            [
                "amqp-publish",
                "--url",
                settings.amqp_url.rstrip("/"),
                "-e",
                f"{settings.namespace}.inbound",
                "-r",
                "lead.solar",
                "-C",
                "application/json",
                "-b",
                json.dumps(lead_body()),
            ],
            check=True,
            timeout=30,
        )
        await wait_for(lambda: tap.bodies("lead.rejected"))
    assert [e["field"] for e in tap.bodies("lead.rejected")[0]["errors"]] == ["message_id"]
    assert await conn.fetchval("SELECT count(*) FROM leads WHERE status = 'rejected'") == 1


async def test_same_message_twice_changes_nothing_twice(settings, system, buyer, conn):
    async with EventTap(settings) as tap:
        for _ in range(3):
            await publish_raw(settings, lead_body(), message_id="again")
        await wait_for(lambda: tap.bodies("lead.sold"))
        await asyncio.sleep(0.5)  # give any second copy time to (wrongly) surface
    assert len(tap.bodies()) == 1
    assert await conn.fetchval("SELECT count(*) FROM leads") == 1
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 1
    assert buyer.paths() == ["/acme"]


async def test_duplicate_lead_is_recorded_with_its_original(settings, system, buyer):
    async with EventTap(settings) as tap:
        await publish_raw(settings, lead_body(phone="(415) 555-0100"), message_id="first")
        await wait_for(lambda: tap.bodies("lead.sold"))
        await publish_raw(settings, lead_body(phone="+1 415 555 0100"), message_id="second")
        await wait_for(lambda: tap.bodies("lead.duplicate"))
    sold, duplicate = tap.bodies("lead.sold")[0], tap.bodies("lead.duplicate")[0]
    assert duplicate["original_lead_id"] == sold["lead_id"]
    assert buyer.paths() == ["/acme"]


async def test_buyer_rejection_moves_the_lead_to_the_next_account(settings, system, buyer, conn):
    buyer.on("/acme", status=400, body='{"status": "rejected", "reason": "out of area"}')
    async with EventTap(settings) as tap:
        await publish_raw(settings, lead_body(), message_id=new_key())
        await wait_for(lambda: tap.bodies("lead.sold"))
    assert buyer.paths() == ["/acme", "/bolt"]
    assert [d["client_id"] for d in tap.bodies("lead.sold")[0]["deliveries"]] == ["bolt"]
    reasons = await conn.fetch("SELECT delivery_account_id, status, reason FROM deliveries ORDER BY created_at")
    assert [(r["delivery_account_id"], r["status"]) for r in reasons] == [
        ("acme-post", "failed"),
        ("bolt-post", "succeeded"),
    ]


async def test_every_buyer_refusing_ends_unsold(settings, system, buyer):
    buyer.on("/acme", status=400)
    buyer.on("/bolt", status=422)
    async with EventTap(settings) as tap:
        await publish_raw(settings, lead_body(), message_id=new_key())
        await wait_for(lambda: tap.bodies("lead.unsold"))
    assert "no delivery account accepted" in tap.bodies("lead.unsold")[0]["reason"]


async def test_transient_buyer_failure_is_retried_through_the_delay_queue(settings, system, buyer, conn):
    calls = iter([(503, "busy", 0.0)])
    buyer.responses["/acme"] = lambda _r: next(calls, (200, '{"status": "accepted"}', 0.0))
    async with EventTap(settings) as tap:
        await publish_raw(settings, lead_body(), message_id=new_key())
        await wait_for(lambda: tap.bodies("lead.sold"))
    assert buyer.paths() == ["/acme", "/acme"]
    # Both posts carry the same idempotency key: the buyer can tell it is one delivery.
    assert len({r.headers["Idempotency-Key"] for r in buyer.received}) == 1
    outcomes = [r["outcome"] for r in await conn.fetch("SELECT outcome FROM delivery_attempts ORDER BY attempt")]
    assert outcomes == ["transient", "accepted"]
