"""The hot queues handled in batches (shared/batching.py, usecases.receive_leads; delivery's claims
and results), on the real broker and database: the same results as one by one, a failing lead dead-lettered alone, and a
SIGKILL in the middle of a batch losing nothing."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

from harness.processes import Processes, output, service_env
from services.delivery.main import build as build_delivery
from services.router import usecases
from services.router.main import build as build_router
from shared.service import Runtime
from tests.delivery_support import account, catalog, seed_delivery
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


async def _declare(settings) -> None:
    """The topology, so that leads wait in the router's queue until a router starts: they are
    then handed over together and make batches."""
    async with Runtime("setup", settings).running():
        pass


def _phone(n: int) -> str:
    return f"415-555-{n:04d}"


async def test_a_burst_received_in_batches_keeps_one_original_per_person_and_one_lead_per_key(settings, buyer, conn):
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    await _declare(settings)
    router = build_router(settings)
    # A person known before the burst.
    async with router.running():
        await publish_raw(settings, lead_body(_phone(9000)), message_id="before")
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM leads"))

    sent: list[tuple[str, dict]] = []
    for n in range(25):
        sent.append((f"new-{n}", lead_body(_phone(n))))
    for n in range(5):  # the same person again, under a new key, in the same burst
        sent.append((f"again-{n}", lead_body(_phone(n), first_name="Again")))
    for n in range(3):  # the source re-sends a key of the burst
        sent.append((f"new-{n}", lead_body(_phone(n))))
    for n in range(4):  # invalid: no state
        body = lead_body(_phone(100 + n))
        del body["fields"]["state"]
        sent.append((f"bad-{n}", body))
    for n in range(3):  # the person known before
        sent.append((f"known-{n}", lead_body(_phone(9000), first_name="Known")))
    for key, body in sent:
        await publish_raw(settings, body, message_id=key)

    router = build_router(settings)
    async with EventTap(settings, "lead.*") as tap, router.running():
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 + 25 + 5 + 4 + 3 FROM leads"), timeout=60)
        await wait_for(lambda: len(tap.messages) >= 5 + 4 + 3)
        await asyncio.sleep(0.3)  # a stray second outcome would arrive by now
        stats = router.batchers["router.leads"].stats
    assert stats.batches >= 1, stats  # the burst did make batches

    rows = await conn.fetch(
        "SELECT idempotency_key, status, fields->>'phone' AS phone, id, original_lead_id FROM leads"
    )
    by_key = {r["idempotency_key"]: r for r in rows}
    assert len(by_key) == len(rows)  # one lead per key: the re-sends were recognised
    assert {by_key[f"new-{n}"]["status"] for n in range(25)} == {"routing"}
    assert {by_key[f"bad-{n}"]["status"] for n in range(4)} == {"rejected"}
    for n in range(5):  # one original per person: the first of the burst
        assert by_key[f"again-{n}"]["status"] == "duplicate"
        assert by_key[f"again-{n}"]["original_lead_id"] == by_key[f"new-{n}"]["id"]
    for n in range(3):
        assert by_key[f"known-{n}"]["status"] == "duplicate"
        assert by_key[f"known-{n}"]["original_lead_id"] == by_key["before"]["id"]
    # Each routed lead asked for exactly one delivery (max sales 1); each decided lead had one outcome.
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 1 + 25
    assert await conn.fetchval("SELECT count(DISTINCT lead_id) FROM deliveries") == 1 + 25
    outcomes = [(k, b["idempotency_key"]) for k, b, _ in tap.messages]
    assert sorted(outcomes) == sorted(
        [("lead.duplicate", f"again-{n}") for n in range(5)]
        + [("lead.rejected", f"bad-{n}") for n in range(4)]
        + [("lead.duplicate", f"known-{n}") for n in range(3)]
    )


async def test_a_lead_that_fails_its_batch_is_dead_lettered_alone_and_the_others_are_received(
    settings, buyer, conn, monkeypatch
):
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    await _declare(settings)
    judge = usecases._judge

    def failing_judge(catalog, arrival, duplicates, now):  # a bug only this lead meets
        if arrival.lead.fields.get("first_name") == "Poison":
            raise ValueError("this lead breaks the use case")
        return judge(catalog, arrival, duplicates, now)

    monkeypatch.setattr(usecases, "_judge", failing_judge)
    for n in range(20):
        body = lead_body(_phone(n), first_name="Poison" if n == 10 else "Ada")
        await publish_raw(settings, body, message_id=f"lead-{n}")
    router = build_router(settings)
    async with router.running():
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 19 FROM leads"), timeout=60)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM dead_letters"))
        stats = router.batchers["router.leads"].stats
    assert stats.fallbacks >= 1, stats  # its batch failed, and each of its leads went alone
    dead = await dead_letters(settings, "router.leads")
    assert [d.message_id for d in dead] == ["lead-10"]
    assert "this lead breaks the use case" in dead[0].headers["x-error"]
    keys = {r["idempotency_key"] for r in await conn.fetch("SELECT idempotency_key FROM leads")}
    assert keys == {f"lead-{n}" for n in range(20) if n != 10}
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 19


async def test_sigkill_in_the_middle_of_a_batch_loses_nothing_and_doubles_nothing(settings, buyer, conn):
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    await _declare(settings)
    for n in range(30):
        await publish_raw(settings, lead_body(_phone(n)), message_id=f"lead-{n}")
    crashing = Processes(service_env(settings, LEADWIRE_CRASH_POINT="router.mid_batch"), output=subprocess.PIPE)
    process = crashing.service("router")
    code = await asyncio.to_thread(process.wait, 60)
    assert code == 86, output(process)  # died inside a batch's transaction
    # Only leads received alone (before the first batch formed) were committed.
    committed = await conn.fetchval("SELECT count(*) FROM leads")
    assert committed < 30

    async with EventTap(settings, "delivery.requested") as tap:
        restarted = Processes(service_env(settings), output=subprocess.PIPE).service("router")
        try:
            await wait_for(lambda: conn.fetchval("SELECT count(*) = 30 FROM leads"), timeout=60)
            await wait_for(lambda: len({m.message_id for _, _, m in tap.messages}) >= 30 - committed, timeout=30)
            await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        finally:
            restarted.send_signal(signal.SIGTERM)
            await asyncio.to_thread(restarted.wait, 30)
    keys = [r["idempotency_key"] for r in await conn.fetch("SELECT idempotency_key FROM leads")]
    assert sorted(keys) == sorted(f"lead-{n}" for n in range(30))
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 30
    assert await conn.fetchval("SELECT count(DISTINCT lead_id) FROM deliveries") == 30
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_delivery_claims_and_results_of_a_burst_share_statements_and_each_post_happens_once(
    settings, buyer, conn
):
    await apply_yaml(settings.database_url, catalog(account("acme-post", "acme", buyer)))
    buyer.on("/acme-post", body='{"status": "accepted"}')
    requests = [await seed_delivery(conn, "acme-post", "acme") for _ in range(40)]
    # A redelivered copy of one request beside its first copy: claimed by one of them only.
    requests.append(requests[0])
    await _declare(settings)
    for request in requests:
        await publish_event(settings, "delivery.requested", request)
    delivery = build_delivery(settings)
    async with EventTap(settings, "delivery.*") as tap, delivery.running():
        await wait_for(lambda: len([k for k, _, _ in tap.messages if k == "delivery.succeeded"]) >= 40, timeout=60)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        await asyncio.sleep(0.3)  # a second result of one delivery would arrive by now
        claims, finishes = delivery.batchers["delivery.claims"].stats, delivery.batchers["delivery.finishes"].stats
    assert claims.batches >= 1 and finishes.batches >= 1, (claims, finishes)
    succeeded = [b["delivery_id"] for k, b, _ in tap.messages if k == "delivery.succeeded"]
    assert sorted(succeeded) == sorted({str(r.delivery_id) for r in requests})  # one result each
    posted = [p.headers["Idempotency-Key"] for p in buyer.received]
    assert sorted(posted) == sorted({str(r.delivery_id) for r in requests})  # one post each
    assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'succeeded' AND attempts = 1") == 40
    assert await conn.fetchval("SELECT count(*) FROM delivery_attempts") == 40
