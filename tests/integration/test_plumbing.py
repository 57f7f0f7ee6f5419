"""The plumbing every service stands on, on the real broker and database: dead letters, retries,
the outbox across a crash, migrations under concurrency, the catalog's all-or-nothing apply."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
import pytest

from harness.broker import consumer_count, publish
from harness.processes import Processes, output, service_env
from services.router.main import build as build_router
from shared import db
from shared.catalog.store import load_latest
from shared.contracts import OrderCommand, ReturnDecide
from shared.outbox import add_event
from shared.service import Runtime, TransientError
from shared.topology import WORK_QUEUES
from tests.support import (
    EventTap,
    apply_yaml,
    catalog_yaml,
    dead_letters,
    lead_body,
    publish_event,
    publish_raw,
    wait_for,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def test_malformed_messages_are_dead_lettered_with_their_error_and_consumer_goes_on(settings, buyer, conn):
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    router = build_router(settings)
    async with router.running():
        await publish_raw(settings, b"\x00\xffnot json at all", message_id="poison-1", content_type=None)
        await publish_raw(settings, b"{broken json", message_id="poison-2")
        await publish_raw(settings, {"lead_type": "solar", "fields": {}}, message_id="poison-3")  # no source
        await publish_raw(settings, lead_body(), message_id="good-1")
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 3 FROM dead_letters"))
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM leads"))
    dead = {m.message_id: m for m in await dead_letters(settings, "router.leads")}
    assert set(dead) == {"poison-1", "poison-2", "poison-3"}
    assert dead["poison-1"].body == b"\x00\xffnot json at all"  # kept byte for byte
    assert "JSONDecodeError" in dead["poison-2"].headers["x-error"]
    assert (
        "source" in dead["poison-3"].headers["x-error"]
        and dead["poison-3"].headers["x-error-type"] == "ValidationError"
    )
    assert {h.headers["x-original-queue"] for h in dead.values()} == {f"{settings.namespace}.router.leads"}
    recorded = await conn.fetch("SELECT message_id, error FROM dead_letters ORDER BY id")
    assert {r["message_id"] for r in recorded} == {"poison-1", "poison-2", "poison-3"}
    assert router.dead_lettered == 3


async def test_a_queue_of_several_kinds_dispatches_by_routing_key_and_dead_letters_the_rest(settings, conn):
    runtime = Runtime("probe", settings)
    seen: list[tuple[str, object]] = []

    with runtime.consumer("returns.commands") as commands:

        @commands.on("return.decide")
        async def on_decide(command: ReturnDecide) -> None:
            seen.append(("decide", command.decision))

        @commands.on("order.command")
        async def on_order(command: OrderCommand) -> None:
            seen.append(("order", command.action))

    decide = {"return_id": str(uuid.uuid4()), "decision": "approve"}
    async with runtime.running():
        await publish_event(settings, "order.command", {"order_id": "o1", "action": "pause"}, message_id="m1")
        await publish_event(settings, "return.decide", decide, message_id="m2")
        await publish_event(settings, "return.decide", {"return_id": "not a uuid"}, message_id="m3")
        # Straight into the queue: a key none of its handlers takes.
        await publish(settings.amqp_url, "", f"{settings.namespace}.returns.commands", decide, message_id="m4")
        await wait_for(lambda: len(seen) == 2 and runtime.dead_lettered == 2)
    assert sorted(seen) == [("decide", "approve"), ("order", "pause")]
    dead = {m.message_id: m.headers for m in await dead_letters(settings, "returns.commands")}
    assert set(dead) == {"m3", "m4"}
    assert dead["m3"]["x-error-type"] == "ValidationError" and "return_id" in dead["m3"]["x-error"]
    assert dead["m4"]["x-error"] == (
        f"BadMessage: returns.commands has no handler for routing key '{settings.namespace}.returns.commands'"
        " (it takes return.decide, order.command)"
    )


async def test_transient_failures_wait_in_retry_queues_then_dead_letter(settings, conn):
    runtime = Runtime("probe", settings)
    attempts: list[int] = []

    @runtime.subscriber("router.delivery-results")
    async def always_down(body: dict) -> None:
        attempts.append(1)
        raise TransientError("buyer database unreachable")

    async with runtime.running():
        async with runtime.pool.acquire() as c, c.transaction():
            await add_event(c, "delivery.succeeded", {"anything": 1})
        # Initial delivery plus one per retry tier (0.2 s, 0.5 s), then the dead-letter queue.
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM dead_letters"))
    assert len(attempts) == 1 + len(settings.retry_delays)
    [dead] = await dead_letters(settings, "router.delivery-results")
    assert dead.headers["x-error"] == "TransientError: buyer database unreachable"
    assert dead.headers["x-retry-count"] == len(settings.retry_delays)


async def test_outbox_publishes_persistent_messages_with_the_row_id(settings, conn):
    runtime = Runtime("probe", settings)
    async with runtime.running(), EventTap(settings, "lead.*") as tap:
        async with runtime.pool.acquire() as c, c.transaction():
            event_id = await add_event(c, "lead.unsold", {"hello": "world"})
        await wait_for(lambda: tap.messages)
    _, body, message = tap.messages[0]
    assert body == {"hello": "world"}
    assert message.message_id == str(event_id)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


async def test_outbox_row_rolled_back_with_its_transaction_is_never_published(settings, conn):
    runtime = Runtime("probe", settings)
    async with runtime.running(), EventTap(settings, "lead.*") as tap:
        with pytest.raises(RuntimeError):
            async with runtime.pool.acquire() as c, c.transaction():
                await add_event(c, "lead.unsold", {"n": 1})
                raise RuntimeError("state change failed")
        async with runtime.pool.acquire() as c, c.transaction():
            await add_event(c, "lead.unsold", {"n": 2})
        await wait_for(lambda: tap.messages)
        await asyncio.sleep(0.3)
    assert [b for _, b, _ in tap.messages] == [{"n": 2}]


def _start_router(settings, **extra: str) -> subprocess.Popen[bytes]:
    return Processes(service_env(settings, **extra), output=subprocess.PIPE).service("router")


async def test_killed_between_commit_and_publish_the_outbox_relays_after_restart(settings, buyer, conn):
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    # Declare the topology once so the lead waits in its queue for the router process.
    async with Runtime("setup", settings).running():
        pass
    crashing = _start_router(settings, LEADWIRE_CRASH_POINT="router.after_commit")
    async with EventTap(settings, "delivery.requested") as tap:
        await publish_raw(settings, lead_body(), message_id="crash-1")
        code = await asyncio.to_thread(crashing.wait, 60)
        assert code == 86, output(crashing)
        # Committed: the lead and its event are in the database; nothing was published.
        assert await conn.fetchval("SELECT status FROM leads WHERE idempotency_key = 'crash-1'") == "routing"
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'delivery.requested'") == 1
        assert tap.messages == []

        restarted = _start_router(settings)
        try:
            await wait_for(lambda: tap.messages, timeout=60)
            await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        finally:
            restarted.send_signal(signal.SIGTERM)
            await asyncio.to_thread(restarted.wait, 30)
    assert len(tap.messages) == 1
    assert tap.messages[0][1]["lead_id"] == str(await conn.fetchval("SELECT id FROM leads"))
    # The lead message was acknowledged only by the restarted router, after its own claim found
    # the lead already stored: one lead, one delivery.
    assert await conn.fetchval("SELECT count(*) FROM leads") == 1
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 1


async def test_replicas_starting_together_apply_each_migration_once(database_server_url):
    url = db.with_database(database_server_url, f"leadwire_m_{uuid.uuid4().hex[:10]}")
    await db.ensure_database(url)
    try:
        results = await asyncio.gather(*(db.migrate(url) for _ in range(6)))
        applied = [name for names in results for name in names]
        assert sorted(applied) == [name for name, _ in db.migration_files()]
        conn = await db.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(db.migration_files())
        finally:
            await conn.close()
    finally:
        await db.drop_database(url)


def _cli(settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        env=service_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


async def test_catalog_with_errors_is_refused_whole_and_names_each_error(settings, buyer, conn, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(catalog_yaml(buyer))
    assert _cli(settings, "catalog", "apply", str(good)).returncode == 0
    before = await conn.fetch("SELECT id, price FROM delivery_accounts ORDER BY id")

    bad = tmp_path / "bad.yaml"
    text = catalog_yaml(buyer).replace("price: '25.00'", "price: '-5'").replace("client: bolt", "client: nobody")
    text = text.replace("name: Bolt", "name: Bolt\n  time_zone: Mars/Olympus")
    bad.write_text(text)
    result = _cli(settings, "catalog", "apply", str(bad))
    assert result.returncode == 1
    assert "nothing was changed" in result.stderr
    assert "delivery_accounts[0] (acme-post).price" in result.stderr
    assert "unknown client 'nobody'" in result.stderr
    assert "Mars/Olympus" in result.stderr
    assert all("line " in line for line in result.stderr.splitlines()[1:])
    assert await conn.fetch("SELECT id, price FROM delivery_accounts ORDER BY id") == before
    assert await conn.fetchval("SELECT count(*) FROM catalog_versions") == 1


async def test_catalog_export_round_trips(settings, buyer, tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog_yaml(buyer))
    assert _cli(settings, "catalog", "apply", str(path)).returncode == 0
    exported = _cli(settings, "catalog", "export")
    assert exported.returncode == 0
    again = tmp_path / "again.yaml"
    again.write_text(exported.stdout)
    result = _cli(settings, "catalog", "apply", str(again))
    assert result.returncode == 0 and "unchanged" in result.stdout


async def test_catalog_change_reaches_a_running_service_within_two_seconds(settings, buyer, conn):
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    router = build_router(settings)
    async with router.running():
        assert router.catalog.accounts_by_id["acme-post"].price == 25
        version = await apply_yaml(settings.database_url, catalog_yaml(buyer).replace("'25.00'", "'31.00'"))
        # The bound: a catalog change reaches every running service within 2 s.
        await wait_for(lambda: router.catalog_cache.version == version, timeout=2.0)
        assert router.catalog.accounts_by_id["acme-post"].price == 31
    latest_version, _ = await load_latest(conn)
    assert latest_version == version


async def test_catalog_apply_keeps_an_orders_live_status_unless_the_file_changes_it(settings, buyer, conn):
    order = {"id": "o1", "client": "acme", "type": "lead_quantity", "total": 5, "start_date": "2026-01-01"}
    text = catalog_yaml(buyer, orders=[order])
    await apply_yaml(settings.database_url, text)
    await conn.execute("UPDATE orders SET status = 'paused' WHERE id = 'o1'")  # paused in the portal
    await apply_yaml(settings.database_url, text.replace("name: Bolt", "name: Bolt Energy"))
    assert await conn.fetchval("SELECT status FROM orders WHERE id = 'o1'") == "paused"
    await apply_yaml(settings.database_url, catalog_yaml(buyer, orders=[{**order, "status": "closed"}]))
    assert await conn.fetchval("SELECT status FROM orders WHERE id = 'o1'") == "closed"


async def test_a_handlers_outbox_rows_wake_its_own_relay_without_a_notify(settings, buyer, conn):
    # With a one-minute poll, only a direct wake-up can publish within the test's time: from the
    # handler's middleware for rows a handler commits (no NOTIFY sent), from a NOTIFY for rows
    # written anywhere else.
    settings = settings.model_copy(update={"poll_interval": 60.0})
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    notified: list[str] = []
    listener = await db.connect(settings.database_url)
    await listener.add_listener("leadwire_outbox", lambda *args: notified.append(args[-1]))
    try:
        async with (
            build_router(settings).running() as router,
            EventTap(settings, "delivery.requested") as requests,
            EventTap(settings, "lead.unsold") as outcomes,
        ):
            await publish_raw(settings, lead_body(), message_id="wake-1")
            await wait_for(lambda: requests.messages, timeout=20)
            assert notified == []
            async with router.pool.acquire() as c, c.transaction():
                await add_event(c, "lead.unsold", {"written": "outside a handler"})
            await wait_for(lambda: outcomes.messages, timeout=20)
            assert len(notified) == 1
    finally:
        await listener.close()
    assert [m[1]["lead_id"] for m in requests.messages] == [str(await conn.fetchval("SELECT id FROM leads"))]


DECLARE_TOPOLOGY = """
import asyncio
from faststream.rabbit import RabbitBroker
from shared.settings import Settings
from shared.topology import Topology

async def main():
    settings = Settings()
    broker = RabbitBroker(settings.amqp_url)
    await broker.connect()
    try:
        await Topology(settings.namespace, settings.retry_delays).declare(broker)
    finally:
        await broker.stop()

asyncio.run(main())
"""


async def test_ten_processes_declare_a_fresh_namespace_at_once(settings):
    """Issue 14 item 7: a process died at start-up with ChannelNotFoundEntity ("home node ... is down
    or inaccessible") when several declared the same new quorum queues at once. Every process must
    come up; the refusal itself is rare here (tests/unit/test_topology_declare.py forces it)."""
    processes = Processes(service_env(settings), output=subprocess.PIPE)
    for n in range(10):
        processes.spawn(f"declare#{n}", [sys.executable, "-c", DECLARE_TOPOLOGY])
    codes = {}
    for slot in processes.slots:
        process = processes[slot]
        output, _ = await asyncio.to_thread(process.communicate, timeout=120)
        codes[slot] = (process.returncode, output.decode(errors="replace")[-500:])
    assert {slot: code for slot, (code, _) in codes.items() if code != 0} == {}, codes
    for logical in WORK_QUEUES:
        assert await consumer_count(settings.amqp_url, f"{settings.namespace}.{logical}") == 0  # declared
