"""The hot queues handled in batches (shared/batching.py, usecases.receive_leads; delivery's claims
and results), on the real broker and database: the same results as one by one, a failing lead dead-lettered alone, and a
SIGKILL in the middle of a batch losing nothing."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest
import yaml

from harness.processes import Processes, output, service_env
from services.delivery.main import build as build_delivery
from services.router import usecases
from services.router.main import build as build_router
from shared import db
from shared.catalog.store import load_latest
from shared.contracts import DeliveryFailed, DeliverySucceeded, InboundLead
from shared.process import Standalone
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


# --- delivery results in batches (usecases.record_delivery_results) -------------------------------

CAP = 25


def _shared_catalog(buyer, cap: int = CAP) -> str:
    """Four clients in one shared group that rotates (round robin), max sales 2: each lead goes to
    two accounts at once, in an order that differs from lead to lead, and a failed delivery's
    slot goes to the next account in line. Every account has cap counters (one has two periods),
    so transactions that route several leads take counters of several accounts."""

    def acct(client: str, caps: dict) -> dict:
        return {
            "id": f"{client}1",
            "client": client,
            "lead_type": "solar",
            "price": "10.00",
            "caps": caps,
            "delivery": {"method": "http", "url": buyer.url(f"/{client}1"), "timeout_seconds": 5},
        }

    return yaml.safe_dump(
        {
            "lead_types": [
                {
                    "id": "solar",
                    "name": "Solar",
                    "duplicate_fields": ["phone"],
                    "max_sales": 2,
                    "fields": [
                        {"name": "first_name"},
                        {"name": "phone", "type": "phone", "required": True},
                        {"name": "state"},
                    ],
                }
            ],
            "sources": [{"id": "web", "name": "Web"}],
            "clients": [{"id": c, "name": c} for c in "abcd"],
            "groups": [
                {
                    "id": "shared",
                    "name": "Shared",
                    "apply_groups_as_criteria": False,
                    "distribution": "round_robin",
                    "clients": ["a", "b", "c", "d"],
                }
            ],
            "delivery_accounts": [
                acct("a", {"daily": cap}),
                acct("b", {"daily": cap, "monthly": cap + 5}),
                acct("c", {"daily": cap}),
                acct("d", {"weekly": cap}),
            ],
        }
    )


def _inbound(n: int) -> tuple[InboundLead, usecases.LeadContext]:
    return InboundLead.model_validate(lead_body(_phone(n))), usecases.LeadContext(f"lead-{n}", routing_key="lead.solar")


async def _finish(conn, rows, outcome: str) -> list[tuple[DeliverySucceeded | DeliveryFailed, str]]:
    """Delivery's side of it: the deliveries' final status in the table, and the result messages."""
    await conn.execute(
        "UPDATE deliveries SET status = $2, completed_at = now() WHERE id = ANY($1::uuid[])",
        [r["id"] for r in rows],
        outcome,
    )
    results: list[tuple[DeliverySucceeded | DeliveryFailed, str]] = []
    for r in rows:
        common = {
            "delivery_id": r["id"],
            "lead_id": r["lead_id"],
            "client_id": r["client_id"],
            "delivery_account_id": r["delivery_account_id"],
            "attempts": 1,
        }
        if outcome == "succeeded":
            results.append((DeliverySucceeded(**common, price=r["price"]), f"result-{r['id']}"))
        else:
            results.append((DeliveryFailed(**common, reason="refused", rejected_by_buyer=True), f"result-{r['id']}"))
    return results


async def _requested(conn, lead_keys: list[str]) -> list:
    return await conn.fetch(
        "SELECT d.id, d.lead_id, d.client_id, d.delivery_account_id, d.price FROM deliveries d"
        " JOIN leads l ON l.id = d.lead_id WHERE l.idempotency_key = ANY($1::text[]) AND d.status = 'requested'"
        " ORDER BY length(l.idempotency_key), l.idempotency_key, d.created_at",
        lead_keys,
    )


async def _assert_caps_exact(conn, cap: int = CAP) -> None:
    """Every cap counter equals the deliveries holding it (requested or succeeded), none over its
    cap; no lead went to a client twice or past its max sales."""
    counters = await conn.fetch(
        "SELECT c.delivery_account_id, c.period, c.used, (SELECT count(*) FROM deliveries d,"
        " jsonb_array_elements(d.cap_keys) k WHERE d.delivery_account_id = c.delivery_account_id"
        " AND k->>0 = c.period AND (k->>1)::timestamp = c.period_start AND d.status <> 'failed') AS held"
        " FROM cap_usage c"
    )
    assert counters, "no cap counter was taken"
    for c in counters:
        assert c["used"] == c["held"], dict(c)
        assert c["used"] <= (cap + 5 if c["period"] == "monthly" else cap), dict(c)
    assert (
        await conn.fetchval(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM deliveries WHERE status <> 'failed'"
            " GROUP BY lead_id) x"
        )
        <= 2
    )
    assert (
        await conn.fetchval(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM deliveries GROUP BY lead_id, client_id) x"
        )
        == 1
    )


async def test_concurrent_batches_of_results_and_leads_over_the_same_accounts_never_deadlock_and_keep_caps_exact(
    database_url, buyer, conn
):
    """Batches that take the cap counters of several accounts, in orders the rotation makes differ,
    running at the same time (the use cases called directly, as two router replicas' batches
    would run them): every lock is taken up front in one order, so none waits crosswise —
    PostgreSQL would fail one of them after deadlock_timeout, and the gather would raise."""
    await apply_yaml(database_url, _shared_catalog(buyer))
    pool = await db.create_pool(database_url, min_size=1, max_size=8)
    try:
        deps = usecases.Deps(Standalone(pool, (await load_latest(conn))[1]))
        # 80 leads received in four concurrent batches: 160 requests over four accounts capped at 25.
        await asyncio.gather(*(usecases.receive_leads(deps, [_inbound(n) for n in range(b, 80, 4)]) for b in range(4)))
        await _assert_caps_exact(conn)
        # The caps did bind (the test proves little if no counter filled).
        assert await conn.fetchval("SELECT min(used) FROM cap_usage WHERE period = 'daily'") == CAP
        # Every delivery of leads 0-59 fails (their counters go back, their next accounts are
        # taken), in four concurrent batches of results, while two more batches of leads arrive.
        failed = await _finish(conn, await _requested(conn, [f"lead-{n}" for n in range(60)]), "failed")
        arriving = [[_inbound(n) for n in range(b, 120, 2)] for b in (80, 81)]
        await asyncio.gather(
            *(usecases.record_delivery_results(deps, failed[i::4]) for i in range(4)),
            *(usecases.receive_leads(deps, leads) for leads in arriving),
        )
    finally:
        await pool.close()
    await _assert_caps_exact(conn)
    # Each result recorded once; the freed slots were offered on: no lead is left routing with
    # nothing in flight.
    assert await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'router.delivery-results'") == len(failed)
    stuck = await conn.fetchval(
        "SELECT count(*) FROM leads l WHERE l.status = 'routing' AND NOT EXISTS"
        " (SELECT FROM deliveries d WHERE d.lead_id = l.id AND d.status = 'requested')"
    )
    assert stuck == 0


async def test_a_burst_of_results_recorded_in_batches_settles_each_once_and_moves_each_lead_on(settings, buyer, conn):
    await apply_yaml(settings.database_url, _shared_catalog(buyer, cap=100))
    await _declare(settings)
    router = build_router(settings)
    async with router.running():
        await usecases.receive_leads(usecases.Deps(router), [_inbound(n) for n in range(12)])
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
    keys = [f"lead-{n}" for n in range(12)]
    rows = await _requested(conn, keys)
    assert len(rows) == 24  # two deliveries per lead
    by_lead: dict = {}
    for r in rows:
        by_lead.setdefault(r["lead_id"], []).append(r)
    leads = list(by_lead.values())
    results = []
    results += await _finish(conn, [d for pair in leads[0:4] for d in pair], "succeeded")  # both sold
    results += await _finish(conn, [pair[0] for pair in leads[4:8]], "succeeded")  # one sold, one refused
    results += await _finish(conn, [pair[1] for pair in leads[4:8]], "failed")
    results += await _finish(conn, [d for pair in leads[8:12] for d in pair], "failed")  # both refused
    # Results of one lead side by side, and one message twice (the relay may publish a row again).
    for result, message_id in results:
        await publish_event(
            settings,
            f"delivery.{'succeeded' if isinstance(result, DeliverySucceeded) else 'failed'}",
            result.model_dump(mode="json"),
            message_id=message_id,
        )
    await publish_event(settings, "delivery.failed", results[-1][0].model_dump(mode="json"), message_id=results[-1][1])

    router = build_router(settings)
    async with EventTap(settings, "lead.*") as tap, router.running():
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 4 FROM leads WHERE status = 'sold'"), timeout=60)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 24 + 4 + 8 FROM deliveries"), timeout=60)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        await asyncio.sleep(0.3)  # a stray outcome or request would arrive by now
        stats = router.batchers["router.delivery-results"].stats
    assert stats.batches >= 1 and stats.fallbacks == 0, stats
    assert sorted(b["idempotency_key"] for b in tap.bodies("lead.sold")) == sorted(keys[0:4])
    assert len(tap.messages) == 4  # the others are still being offered
    per_lead = {
        r["key"]: r["n"]
        for r in await conn.fetch(
            "SELECT l.idempotency_key AS key, count(*) FILTER (WHERE d.status = 'requested') AS n"
            " FROM leads l JOIN deliveries d ON d.lead_id = l.id GROUP BY 1"
        )
    }
    assert [per_lead[k] for k in keys] == [0] * 4 + [1] * 4 + [2] * 4  # each freed slot offered once
    assert await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'router.delivery-results'") == 24
    await _assert_caps_exact(conn, cap=100)


async def test_a_result_that_fails_its_batch_is_dead_lettered_alone_and_the_others_are_recorded(
    settings, buyer, conn, monkeypatch
):
    await apply_yaml(settings.database_url, _shared_catalog(buyer, cap=100))
    await _declare(settings)
    router = build_router(settings)
    async with router.running():
        await usecases.receive_leads(usecases.Deps(router), [_inbound(n) for n in range(10)])
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
    results = await _finish(conn, await _requested(conn, [f"lead-{n}" for n in range(10)]), "succeeded")
    poison = results[7][0].lead_id
    advance = usecases._advance

    async def failing_advance(conn_, catalog, lead, deliveries, now, holders):  # a bug one lead meets
        if lead.lead_id == poison:
            raise ValueError("this result breaks the use case")
        return await advance(conn_, catalog, lead, deliveries, now, holders)

    monkeypatch.setattr(usecases, "_advance", failing_advance)
    for result, message_id in results:
        await publish_event(settings, "delivery.succeeded", result.model_dump(mode="json"), message_id=message_id)
    router = build_router(settings)
    async with router.running():
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 9 FROM leads WHERE status = 'sold'"), timeout=60)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 2 FROM dead_letters"), timeout=30)
        stats = router.batchers["router.delivery-results"].stats
    assert stats.fallbacks >= 1, stats
    dead = await dead_letters(settings, "router.delivery-results")
    # Both results of the poisoned lead (each fails alone); nothing of another lead.
    assert sorted(str(d.message_id) for d in dead) == sorted(m for r, m in results if r.lead_id == poison)
    assert await conn.fetchval("SELECT status FROM leads WHERE id = $1", poison) == "routing"
    await _assert_caps_exact(conn, cap=100)


async def test_sigkill_inside_a_batch_of_results_loses_nothing_and_settles_nothing_twice(settings, buyer, conn):
    await apply_yaml(settings.database_url, _shared_catalog(buyer, cap=100))
    await _declare(settings)
    router = build_router(settings)
    async with router.running():
        await usecases.receive_leads(usecases.Deps(router), [_inbound(n) for n in range(20)])
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
    keys = [f"lead-{n}" for n in range(20)]
    rows = await _requested(conn, keys)
    # One delivery of each lead fails: its counters go back and its slot goes to the next account.
    results = await _finish(conn, rows[0::2], "failed") + await _finish(conn, rows[1::2], "succeeded")
    for result, message_id in results:
        kind = "succeeded" if isinstance(result, DeliverySucceeded) else "failed"
        await publish_event(settings, f"delivery.{kind}", result.model_dump(mode="json"), message_id=message_id)
    crashing = Processes(service_env(settings, LEADWIRE_CRASH_POINT="router.mid_results"), output=subprocess.PIPE)
    process = crashing.service("router")
    code = await asyncio.to_thread(process.wait, 60)
    assert code == 86, output(process)  # died inside a batch's transaction
    assert await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'router.delivery-results'") < 40

    restarted = Processes(service_env(settings), output=subprocess.PIPE).service("router")
    try:
        await wait_for(
            lambda: conn.fetchval("SELECT count(*) = 40 FROM inbox WHERE consumer = 'router.delivery-results'"),
            timeout=60,
        )
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 60 FROM deliveries"), timeout=30)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
    finally:
        restarted.send_signal(signal.SIGTERM)
        await asyncio.to_thread(restarted.wait, 30)
    # Each failed slot offered on exactly once; each counter given back exactly once.
    assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'requested'") == 20
    await _assert_caps_exact(conn, cap=100)
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_one_batch_holding_both_results_of_a_lead_and_a_repeated_message_moves_each_lead_on_once(
    database_url, buyer, conn
):
    """The use case itself: a lead's two results side by side in one batch, one message twice in
    it, and the whole batch again (a redelivery after a lost ack) — each result counted once."""
    await apply_yaml(database_url, _shared_catalog(buyer, cap=100))
    pool = await db.create_pool(database_url, min_size=1, max_size=4)
    try:
        deps = usecases.Deps(Standalone(pool, (await load_latest(conn))[1]))
        await usecases.receive_leads(deps, [_inbound(n) for n in range(9)])
        keys = [f"lead-{n}" for n in range(9)]
        pairs: dict = {}
        for r in await _requested(conn, keys):
            pairs.setdefault(r["lead_id"], []).append(r)
        leads = list(pairs.values())
        assert [len(p) for p in leads] == [2] * 9
        batch = await _finish(conn, [d for p in leads[0:3] for d in p], "succeeded")  # sold
        batch += await _finish(conn, [p[0] for p in leads[3:6]], "succeeded")  # one slot freed
        batch += await _finish(conn, [p[1] for p in leads[3:6]], "failed")
        batch += await _finish(conn, [d for p in leads[6:9] for d in p], "failed")  # two slots freed
        batch.append(batch[-1])
        await usecases.record_delivery_results(deps, batch)
        await usecases.record_delivery_results(deps, batch)  # redelivered: nothing changes
    finally:
        await pool.close()
    statuses = {r["key"]: r["status"] for r in await conn.fetch("SELECT idempotency_key AS key, status FROM leads")}
    assert [statuses[k] for k in keys] == ["sold"] * 3 + ["routing"] * 6
    requested = {
        r["key"]: r["n"]
        for r in await conn.fetch(
            "SELECT l.idempotency_key AS key, count(*) FILTER (WHERE d.status = 'requested') AS n"
            " FROM leads l JOIN deliveries d ON d.lead_id = l.id GROUP BY 1"
        )
    }
    assert [requested[k] for k in keys] == [0] * 3 + [1] * 3 + [2] * 3  # each freed slot offered once
    assert await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'router.delivery-results'") == 18
    # One outcome event per sold lead, one request per freed slot.
    assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'lead.sold'") == 3
    assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key = 'delivery.requested'") == 18 + 9
    await _assert_caps_exact(conn, cap=100)
