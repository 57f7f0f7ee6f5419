"""The synchronous outcome over HTTP next to the AMQP path, in one run (docs/benchmark.md, "HTTP
intake").

  .venv/bin/python -m bench.intake [--seconds 8] [--rates 100,200] [--wait 10]

On a database and broker namespace of its own (dropped afterwards): router and delivery as
`faststream run` processes, the intake as a uvicorn process, a buyer endpoint answering at once
(in this process's thread), one lead type and one client. For each offered rate, for `--seconds`
each, open loop (a request is sent on schedule whether or not earlier ones have been answered):

  http   POST /v1/leads/solar?wait=W with a source key: send -> the HTTP answer (200 sold)
  amqp   publish InboundLead to <ns>.inbound with reply_to: publish -> the LeadOutcome reply

and prints p50/p95/p99 of each, how many answers came, and (HTTP) how many were not 200.
Each lead is a new person (no duplicates). Keep a run short on a shared machine: 2 rates x 2
paths x 8 s = 32 s of load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.broker import wait_for_consumers  # noqa: E402
from harness.buyer import FakeBuyer  # noqa: E402
from harness.catalog import apply_catalog_text  # noqa: E402
from harness.processes import Processes, service_env  # noqa: E402
from shared import api_keys, db  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.topology import Topology  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uvicorn_address(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]


def catalog(buyer: FakeBuyer) -> str:
    return yaml.safe_dump(
        {
            "lead_types": [
                {
                    "id": "solar",
                    "name": "Solar",
                    "duplicate_fields": ["phone"],
                    "fields": [
                        {"name": "first_name", "type": "text", "required": True},
                        {"name": "phone", "type": "phone", "required": True},
                        {"name": "state", "type": "us_state", "required": True},
                    ],
                }
            ],
            "sources": [{"id": "web", "name": "Web"}],
            "clients": [{"id": "acme", "name": "Acme"}],
            "delivery_accounts": [
                {
                    "id": "acme-post",
                    "client": "acme",
                    "lead_type": "solar",
                    "price": "25.00",
                    "delivery": {"method": "http", "url": buyer.url("/acme"), "timeout_seconds": 5},
                }
            ],
        }
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": round(statistics.median(ordered) * 1000, 1), "p95": at(0.95), "p99": at(0.99)}


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def phone(self) -> str:
        self.n += 1
        return f"415{2000000 + self.n:07d}"


async def http_path(url: str, key: str, rate: float, seconds: float, wait: float, phones: Counter) -> dict[str, Any]:
    latencies: list[float] = []
    other: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            body = {"first_name": "Ada", "phone": phones.phone(), "state": "CA"}
            headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())}
            started = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/leads/solar?wait={wait}", json=body, headers=headers) as answer:
                    data = await answer.json()
                    status = answer.status
            except aiohttp.ClientError as exc:
                other[type(exc).__name__] = other.get(type(exc).__name__, 0) + 1
                return
            if status == 200 and data.get("status") == "sold":
                latencies.append(time.perf_counter() - started)
            else:
                label = f"{status} {data.get('status', data.get('error'))}"
                other[label] = other.get(label, 0) + 1

        sent = await _open_loop(one, rate, seconds)
    return {"sent": sent, "answered": len(latencies), "other": other, "latency_ms": percentiles(latencies)}


async def amqp_path(settings: Settings, rate: float, seconds: float, phones: Counter) -> dict[str, Any]:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    latencies: list[float] = []
    other: dict[str, int] = {}
    try:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await channel.get_exchange(f"{settings.namespace}.inbound", ensure=False)
        started_at: dict[str, float] = {}
        done: dict[str, asyncio.Future[None]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            corr = message.correlation_id or ""
            if corr in started_at:
                status = json.loads(message.body).get("status")
                if status == "sold":
                    latencies.append(time.perf_counter() - started_at[corr])
                else:
                    other[str(status)] = other.get(str(status), 0) + 1
                future = done.pop(corr, None)
                if future is not None and not future.done():
                    future.set_result(None)

        await replies.consume(on_reply, no_ack=True)

        async def one() -> None:
            corr = str(uuid.uuid4())
            lead = {
                "lead_type": "solar",
                "source": "web",
                "fields": {"first_name": "Ada", "phone": phones.phone(), "state": "CA"},
            }
            done[corr] = asyncio.get_running_loop().create_future()
            started_at[corr] = time.perf_counter()
            await exchange.publish(
                aio_pika.Message(
                    json.dumps(lead).encode(),
                    content_type="application/json",
                    headers={"idempotency-key": corr},
                    reply_to=replies.name,
                    correlation_id=corr,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="lead.solar",
            )
            try:
                await asyncio.wait_for(done[corr], timeout=30)
            except TimeoutError:
                other["no reply in 30 s"] = other.get("no reply in 30 s", 0) + 1

        sent = await _open_loop(one, rate, seconds)
    finally:
        await connection.close()
    return {"sent": sent, "answered": len(latencies), "other": other, "latency_ms": percentiles(latencies)}


async def _open_loop(one: Any, rate: float, seconds: float) -> int:
    tasks = []
    start = time.perf_counter()
    n = 0
    while (at := start + n / rate) < start + seconds:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
        n += 1
    await asyncio.gather(*tasks)
    return n


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="load per path and rate")
    p.add_argument("--rates", default="100,200", help="offered requests (leads) per second")
    p.add_argument("--wait", type=float, default=10.0, help="the HTTP posts' ?wait= (seconds)")
    args = p.parse_args(argv)
    base = Settings()
    name = f"leadwire_ibench_{uuid.uuid4().hex[:8]}"
    settings = Settings.model_validate(
        {
            "AMQP_URL": base.amqp_url,
            "DATABASE_URL": db.with_database(base.database_url, name),
            "LEADWIRE_NAMESPACE": f"ib{uuid.uuid4().hex[:8]}",
            "LEADWIRE_DB_POOL_MAX": 10,
        }
    )
    await db.ensure_database(settings.database_url)
    await db.migrate(settings.database_url)
    buyer = FakeBuyer(record=False).start()
    processes = Processes(service_env(settings), output=subprocess.DEVNULL)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        await apply_catalog_text(settings.database_url, catalog(buyer))
        for service in ("router", "delivery"):
            processes.service(service)
        processes.spawn(
            "intake",
            [sys.executable, "-m", "uvicorn", "--factory", "services.intake.web:create_app", *uvicorn_address(port)],
        )
        topology = Topology(settings.namespace, settings.retry_delays)
        await wait_for_consumers(
            settings.amqp_url,
            {topology.queue_name("router.leads"): 1, topology.queue_name("delivery.requests"): 1},
            check=processes.check_alive,
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{url}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        conn = await db.connect(settings.database_url)
        try:
            key = (await api_keys.create_source_key(conn, "web", rate_per_second=100_000)).token
        finally:
            await conn.close()
        phones = Counter()
        # Warm up both paths (connections, caches, the catalog).
        await http_path(url, key, 20, 1, args.wait, phones)
        await amqp_path(settings, 20, 1, phones)
        for rate in [float(r) for r in args.rates.split(",")]:
            for path in ("http", "amqp"):
                before = {slot: cpu_seconds(pid) for slot, pid in processes.pids().items()}
                if path == "http":
                    result = await http_path(url, key, rate, args.seconds, args.wait, phones)
                else:
                    result = await amqp_path(settings, rate, args.seconds, phones)
                used = {slot: cpu_seconds(pid) - before[slot] for slot, pid in processes.pids().items()}
                result["cpu_ms_per_lead"] = {
                    slot: round(1000 * seconds / max(1, result["sent"]), 2) for slot, seconds in used.items()
                }
                results[f"{path}@{rate:g}"] = result
                lat = result["latency_ms"]
                print(
                    f"{path:4} {rate:5g}/s offered: {result['answered']}/{result['sent']} sold answers,"
                    f" p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms; other: {result['other'] or '-'};"
                    f" CPU ms per lead {result['cpu_ms_per_lead']}",
                    flush=True,
                )
                processes.check_alive()
    finally:
        processes.stop(grace=15)
        buyer.stop()
        await Topology(settings.namespace, settings.retry_delays).delete(settings.amqp_url)
        await db.drop_database(settings.database_url)
    out = ROOT / "bench" / "results" / "intake.json"
    out.write_text(json.dumps({"cpus": os.cpu_count(), "seconds": args.seconds, "results": results}, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
