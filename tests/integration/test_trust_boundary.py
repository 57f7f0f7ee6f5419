"""The broker's trust boundary: commands acting for a client are checked against that client
(ConfirmPrice, ReturnDecide), and per-role broker users keep sources off `<ns>.events`
(`leadwire broker users`, shared/broker_users.py) — with real RabbitMQ users."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import aio_pika
import aiormq
import asyncpg
import pytest
import pytest_asyncio

from harness.buyer import FakeBuyer
from shared import broker_users, topology
from shared.contracts import ConfirmPrice, ErrorReply, PriceConfirmationResult, ReturnDecide, ReturnRequest
from shared.rpc import RequestReply
from shared.settings import Settings
from tests.intake_support import running_intake, solar
from tests.support import wait_for

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def rpc(settings: Settings) -> AsyncIterator[RequestReply]:
    client = RequestReply(settings.amqp_url, name="test", namespace=settings.namespace)
    await client.start()
    yield client
    await client.close()


async def test_confirm_price_acts_for_its_own_client_only(
    settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection, rpc: RequestReply
) -> None:
    async with running_intake(settings, buyer) as site, site.client(site.web_key) as http:
        sold = (await http.post("/v1/leads/solar", json=solar(), headers={"Idempotency-Key": "t-1"})).json()
        delivery_id = await conn.fetchval("SELECT id FROM deliveries WHERE lead_id = $1", uuid.UUID(sold["lead_id"]))
        events = f"{settings.namespace}.events"

        # Another client's delivery: refused, answered, nothing changed.
        other = ConfirmPrice(delivery_id=delivery_id, price="0.01", client_id="bolt")
        reply = await rpc.request(events, "delivery.confirm-price", other, timeout=10, message_id="cp-bolt")
        refused = ErrorReply.model_validate_json(reply.body)
        assert refused.error == "refused"
        assert "bolt" in refused.message and "acme" not in refused.message
        assert await conn.fetchval("SELECT price FROM deliveries WHERE id = $1", delivery_id) == Decimal("25.00")
        # A delivery that does not exist is answered in the same words.
        nowhere = ConfirmPrice(delivery_id=uuid.uuid4(), price="0.01", client_id="bolt")
        reply = await rpc.request(events, "delivery.confirm-price", nowhere, timeout=10)
        unknown = ErrorReply.model_validate_json(reply.body)
        assert unknown.error == "refused"
        assert unknown.message.replace(str(nowhere.delivery_id), "X") == refused.message.replace(str(delivery_id), "X")

        # Its own client's: applied and answered; the repeat gets the first answer.
        own = ConfirmPrice(delivery_id=delivery_id, price="12.00", client_id="acme", confirmed_by="test")
        reply = await rpc.request(events, "delivery.confirm-price", own, timeout=10, message_id="cp-acme")
        applied = PriceConfirmationResult.model_validate_json(reply.body)
        assert (applied.outcome, applied.price, applied.repeat) == ("applied", Decimal("12.00"), False)
        reply = await rpc.request(events, "delivery.confirm-price", own, timeout=10, message_id="cp-acme")
        repeat = PriceConfirmationResult.model_validate_json(reply.body)
        assert (repeat.outcome, repeat.price, repeat.repeat) == ("applied", Decimal("12.00"), True)
        assert await conn.fetchval("SELECT price FROM deliveries WHERE id = $1", delivery_id) == Decimal("12.00")

        # A bad price is refused with the reason, as a result (the command was well-formed).
        bad = ConfirmPrice(delivery_id=delivery_id, price="cheap", client_id="acme")
        reply = await rpc.request(events, "delivery.confirm-price", bad, timeout=10)
        assert PriceConfirmationResult.model_validate_json(reply.body).outcome == "refused"


async def test_return_decisions_act_for_their_own_client_only(
    settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection, rpc: RequestReply
) -> None:
    async with (
        running_intake(settings, buyer, services=("router", "delivery", "returns")) as site,
        site.client(site.web_key) as http,
    ):
        sold = (await http.post("/v1/leads/solar", json=solar(), headers={"Idempotency-Key": "t-2"})).json()
        events = f"{settings.namespace}.events"
        request = ReturnRequest(
            return_id=uuid.uuid4(), client_id="acme", lead_id=uuid.UUID(sold["lead_id"]), reason="wrong_number"
        )
        reply = await rpc.request(events, "return.request", request, timeout=10)
        assert reply.json()["status"] == "pending"

        wrong = ReturnDecide(return_id=request.return_id, decision="approve", client_id="bolt")
        reply = await rpc.request(events, "return.decide", wrong, timeout=10)
        assert ErrorReply.model_validate_json(reply.body).error == "refused"
        unknown = ReturnDecide(return_id=uuid.uuid4(), decision="approve", client_id="bolt")
        reply = await rpc.request(events, "return.decide", unknown, timeout=10)
        assert ErrorReply.model_validate_json(reply.body).error == "refused"
        status = "SELECT status FROM returns WHERE id = $1"
        assert await conn.fetchval(status, request.return_id) == "pending"

        right = ReturnDecide(return_id=request.return_id, decision="approve", client_id="acme")
        await rpc.send(events, "return.decide", right, timeout=10, correlation_id=str(uuid.uuid4()))
        await wait_for(lambda: _status_is(conn, request.return_id, "approved"))


async def _status_is(conn: asyncpg.Connection, return_id: uuid.UUID, wanted: str) -> bool:
    return await conn.fetchval("SELECT status FROM returns WHERE id = $1", return_id) == wanted


needs_rabbitmqctl = pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="rabbitmqctl is not installed here")


@needs_rabbitmqctl
async def test_broker_users_fence_sources_to_inbound_and_services_to_their_own_queues(
    settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection
) -> None:
    ns = settings.namespace
    users = {u.role: u for u in broker_users.plan(ns, ["web"], ["router", "delivery", "intake"])}
    try:
        broker_users.apply(list(users.values()))
    except RuntimeError as exc:  # not allowed to talk to the node (not root nor rabbitmq)
        pytest.skip(str(exc))
    as_user = {role: broker_users.amqp_url_for(settings.amqp_url, u) for role, u in users.items()}
    try:
        # A fenced service may not declare the topology (a queue with a dead-letter exchange needs
        # read permission on it); before the privileged set-up, it says what is missing.
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await topology.setup(as_user["router"], ns, settings.retry_delays)
        with pytest.raises(topology.TopologyMissing, match="leadwire broker setup"):
            await topology.Topology(ns, settings.retry_delays).check(as_user["router"], backoff=())
        await topology.setup(settings.amqp_url, ns, settings.retry_delays)  # the privileged step (guest)

        def fenced(role: str) -> Settings:
            return settings.model_copy(update={"amqp_url": as_user[role], "topology": "own", "db_pool_max": 5})

        async with running_intake(
            settings,
            buyer,
            services=(),
            restricted={role: fenced(role) for role in ("router", "delivery")},
            intake=fenced("intake"),
        ) as site:
            # The intake, router and delivery run as their own users: a lead posted over HTTP sells.
            async with site.client(site.web_key) as http:
                answer = await http.post(
                    "/v1/leads/solar", json=solar("415-555-0199"), headers={"Idempotency-Key": "http-1"}
                )
            assert answer.status_code == 200 and answer.json()["status"] == "sold", answer.text

            source = await aio_pika.connect(as_user["source"])
            try:
                channel = await source.channel(publisher_confirms=True)
                inbound = await channel.get_exchange(f"{ns}.inbound", ensure=False)
                await inbound.publish(
                    aio_pika.Message(
                        b'{"lead_type": "solar", "source": "web", "fields": '
                        b'{"first_name": "Ada", "phone": "4155550100", "state": "CA"}}',
                        headers={"idempotency-key": "by-broker-user"},
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key="lead.solar",
                )
                await wait_for(lambda: _lead_sold(conn, "by-broker-user"), timeout=20)
                delivery_id = await conn.fetchval(
                    "SELECT d.id FROM deliveries d JOIN leads l ON l.id = d.lead_id WHERE l.idempotency_key = $1",
                    "by-broker-user",
                )

                # The events exchange is closed to a source: the broker refuses the publish.
                events = await channel.get_exchange(f"{ns}.events", ensure=False)
                with pytest.raises((aiormq.exceptions.ChannelAccessRefused, aio_pika.exceptions.ChannelClosed)):
                    await events.publish(
                        aio_pika.Message(
                            ConfirmPrice(delivery_id=delivery_id, price="0.01").model_dump_json().encode(),
                            message_id="forged",
                        ),
                        routing_key="delivery.confirm-price",
                    )
            finally:
                await source.close()

            # Nor may a source read a service's queue; nor the router another service's queue.
            await _refused(as_user["source"], lambda ch: _get(ch, f"{ns}.delivery.requests"))
            await _refused(as_user["router"], lambda ch: _get(ch, f"{ns}.delivery.requests"))
            await _refused(as_user["router"], lambda ch: _consume(ch, f"{ns}.delivery.confirm-price"))
            await _refused(as_user["router"], lambda ch: _purge(ch, f"{ns}.delivery.requests"))
            await _refused(as_user["router"], lambda ch: _get(ch, f"{ns}.router.leads.dlq"))
            # Nor bind its own queue to the events exchange to copy other services' messages.
            await _refused(as_user["router"], lambda ch: _bind(ch, f"{ns}.router.leads", f"{ns}.events", "#"))
            # Nor declare (create, or change) a queue of the namespace.
            await _refused(as_user["router"], lambda ch: ch.declare_queue(f"{ns}.router.spy", durable=True))
            # Its own work queue it may read (nothing is waiting in it now).
            async with await aio_pika.connect(as_user["router"]) as router:
                assert await _get(await router.channel(), f"{ns}.router.leads") is None
        assert await conn.fetchval("SELECT price FROM deliveries WHERE id = $1", delivery_id) == Decimal("25.00")
    finally:
        broker_users.delete([u.name for u in users.values()])


async def _refused(url: str, action: Callable[[aio_pika.abc.AbstractChannel], Awaitable[object]]) -> None:
    """`action` on a channel of a connection as `url`'s user is refused by the broker (403)."""
    async with await aio_pika.connect(url) as connection:
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await action(await connection.channel())


async def _get(channel: aio_pika.abc.AbstractChannel, queue: str) -> object:
    return await (await channel.get_queue(queue, ensure=False)).get(fail=False)


async def _consume(channel: aio_pika.abc.AbstractChannel, queue: str) -> object:
    async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.nack(requeue=True)

    return await (await channel.get_queue(queue, ensure=False)).consume(ignore)


async def _purge(channel: aio_pika.abc.AbstractChannel, queue: str) -> object:
    return await (await channel.get_queue(queue, ensure=False)).purge()


async def _bind(channel: aio_pika.abc.AbstractChannel, queue: str, exchange: str, key: str) -> object:
    return await (await channel.get_queue(queue, ensure=False)).bind(exchange, routing_key=key)


async def _lead_sold(conn: asyncpg.Connection, key: str) -> bool:
    return await conn.fetchval("SELECT status FROM leads WHERE idempotency_key = $1", key) == "sold"
