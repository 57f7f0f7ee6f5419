"""Metrics and logs as an operator sees them: router and delivery run as real processes, each
serving /metrics on a port of its own; after a known run of leads the scraped counters equal what
happened — sold, unsold, duplicate and rejected leads, posts by account and result, retries — and
the log line a lead's retry causes is one JSON object naming the lead, the message and the trace."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from collections import defaultdict
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.broker import consumer_count
from harness.buyer import Answer, ReceivedRequest
from harness.processes import Processes, service_env
from shared.service import Runtime
from tests.support import (
    EventTap,
    apply_yaml,
    catalog_yaml,
    lead_body,
    lead_statuses,
    publish_raw,
    start_buyer,
    wait_for,
)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


async def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name, then by their labels (without `service` and `replica`, checked apart)."""
    text = await asyncio.to_thread(scrape_text, port)
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("service", "replica")))
            samples[sample.name][labels] = sample.value
    return samples


async def served_labels(port: int) -> set[tuple[str, str]]:
    """The (service, "pid <pid>") pairs the samples of an endpoint carry."""
    text = await asyncio.to_thread(scrape_text, port)
    return {
        (sample.labels["service"], "pid " + sample.labels["replica"].rsplit(":", 1)[1])
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by(samples: dict[tuple[tuple[str, str], ...], float], *names: str) -> dict[tuple[str, ...], float]:
    """A metric's samples keyed by the values of `names` (other labels summed over), zeros left out."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in samples.items():
        found = dict(labels)
        out[tuple(found.get(n, "") for n in names)] += value
    return {k: v for k, v in out.items() if v}


async def test_scraped_counters_equal_what_happened(settings, conn, tmp_path):
    buyer, stop_buyer = start_buyer()
    flaky_seen: list[str] = []

    def acme(request: ReceivedRequest) -> Answer:
        name = request.json().get("first_name")
        if name == "Nope":
            return 422, '{"status": "no"}', 0.0
        if name == "Flaky" and not flaky_seen:
            flaky_seen.append(name)
            return 503, "busy", 0.0
        return 200, '{"status": "accepted"}', 0.0

    buyer.responses["/acme"] = acme
    buyer.responses["/bolt"] = lambda _r: (422, '{"status": "no"}', 0.0)
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    async with Runtime("setup", settings).running():
        pass  # the topology exists before the processes consume
    ports = {"router": free_port(), "delivery": free_port()}
    processes = Processes(service_env(settings, LEADWIRE_DB_POOL_MAX="4"), log_dir=tmp_path)
    for name, port in ports.items():
        processes.service(name, LEADWIRE_METRICS_PORT=str(port))
    tap = EventTap(settings, "lead.*")
    await tap.__aenter__()
    try:
        await wait_for(lambda: _consumed(settings, "router.leads"), timeout=60)
        await wait_for(lambda: _consumed(settings, "delivery.requests"), timeout=60)

        # sold at the first post; then its duplicate; unsold (both buyers refuse); sold after one
        # retry (the first answer is 503); rejected twice (a bad phone, an unknown source).
        await publish_raw(settings, lead_body("415-555-0101"), headers={"idempotency-key": "m-1"})
        await wait_for(lambda: _decided(conn, 1), timeout=30)
        await publish_raw(settings, lead_body("415-555-0101"), headers={"idempotency-key": "m-2"})
        await publish_raw(settings, lead_body("415-555-0102", first_name="Nope"), headers={"idempotency-key": "m-3"})
        await publish_raw(settings, lead_body("415-555-0103", first_name="Flaky"), headers={"idempotency-key": "m-4"})
        await publish_raw(settings, lead_body("555"), headers={"idempotency-key": "m-5"})
        unknown: dict[str, Any] = {**lead_body("415-555-0105"), "source": "nowhere"}
        await publish_raw(settings, unknown, headers={"idempotency-key": "m-6"})
        await wait_for(lambda: _decided(conn, 6), timeout=60)
        assert sorted(await lead_statuses(conn)) == ["duplicate", "rejected", "rejected", "sold", "sold", "unsold"]

        async def counted() -> bool:  # the counts follow each handler's commit by microseconds
            router = await scrape(ports["router"])
            delivery = await scrape(ports["delivery"])
            return sum(router["leadwire_leads_total"].values()) == 6 and (
                sum(delivery["leadwire_posts_total"].values()) >= 5
            )

        await wait_for(counted, timeout=20)
        router = await scrape(ports["router"])
        delivery = await scrape(ports["delivery"])
        processes_pids = processes.pids()
        served_by = {name: await served_labels(port) for name, port in ports.items()}
    finally:
        processes.stop(grace=20)
        stop_buyer()
        await tap.__aexit__()

    # The numbers below are this run's when nothing but the buyer failed; a database or broker
    # failure meanwhile (a shared machine out of connections) makes handlers retry, and may repeat
    # a post: that is what happened then, and the failure routing's counter says so.
    disturbed = sum(router["leadwire_message_retries_total"].values()) + sum(
        delivery["leadwire_message_retries_total"].values()
    )
    assert disturbed == 0, f"{disturbed} handler retries: the database or broker failed during the run"
    assert by(router["leadwire_leads_total"], "source", "lead_type", "outcome") == {
        ("web", "solar", "sold"): 2,
        ("web", "solar", "duplicate"): 1,
        ("web", "solar", "unsold"): 1,
        ("web", "solar", "rejected"): 1,
        ("unknown", "solar", "rejected"): 1,
    }
    assert by(delivery["leadwire_posts_total"], "account", "result") == {
        ("acme-post", "accepted"): 2,
        ("acme-post", "rejected"): 1,
        ("acme-post", "transient"): 1,
        ("bolt-post", "rejected"): 1,
    }
    # The database agrees with the counters: one attempt row per post.
    attempts = await conn.fetch(
        "SELECT d.delivery_account_id, a.outcome, count(*) AS n FROM delivery_attempts a"
        " JOIN deliveries d ON d.id = a.delivery_id GROUP BY 1, 2"
    )
    assert {(r[0], r[1]): r[2] for r in attempts} == by(delivery["leadwire_posts_total"], "account", "result")
    assert by(delivery["leadwire_post_retries_total"], "account") == {("acme-post",): 1}
    assert by(delivery["leadwire_buyer_response_seconds_count"], "account") == {("acme-post",): 4, ("bolt-post",): 1}
    assert sum(delivery["leadwire_dead_letters_total"].values()) == 0
    assert sum(router["leadwire_dead_letters_total"].values()) == 0
    # FastStream's middleware counted every message each handler received: 6 leads (and 4
    # results, one per finished delivery) on the router; 4 requests plus the retried one on delivery.
    assert (
        sum(v for k, v in router["faststream_received_messages_total"].items() if "inbound" in dict(k)["handler"]) == 6
    )
    assert sum(delivery["faststream_received_processed_messages_total"].values()) == 5
    assert by(router["leadwire_routing_seconds_count"], "step") == {("receive",): 6, ("result",): 4}
    # Every sample names its process: the service, and hostname:pid of the replica.
    assert served_by == {
        "router": {("router", f"pid {processes_pids['router']}")},
        "delivery": {("delivery", f"pid {processes_pids['delivery']}")},
    }

    # The retry's log line: JSON, naming the lead, the message and the trace; the same trace id
    # travelled with the lead through delivery and back to the router, into its lead.sold event.
    flaky = await conn.fetchval("SELECT id FROM leads WHERE fields->>'first_name' = 'Flaky'")
    lines = [json.loads(line) for line in (tmp_path / "delivery.log").read_text().splitlines()]
    retried = [line for line in lines if "trying again" in line["msg"]]
    assert len(retried) == 1
    line = retried[0]
    assert line["lead_id"] == str(flaky) and line["service"] == "delivery" and line["level"] == "info"
    assert line["message_id"] and len(line["trace_id"]) == 32
    sold = next(m for k, b, m in tap.messages if k == "lead.sold" and b["lead_id"] == str(flaky))
    assert str((sold.headers or {})["traceparent"]).split("-")[1] == line["trace_id"]


async def _consumed(settings, logical: str) -> bool:
    return bool(await consumer_count(settings.amqp_url, f"{settings.namespace}.{logical}"))


async def _decided(conn, count: int) -> bool:
    return await conn.fetchval("SELECT count(*) FROM leads WHERE status <> 'routing'") >= count
