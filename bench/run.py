"""Leadwire end-to-end benchmark: leads per second and latency, against this machine's floor.

One run, on a database and broker namespace of its own (dropped afterwards):

  floor        the floor pipeline (bench/floor.py) at full speed, N leads
  design-floor the design's shape with no logic (bench/design_floor.py: 6 hops, 5 transactions,
               2 posts per lead) at full speed, N leads
  throughput   Leadwire at full speed, N leads: first publish -> last terminal outcome
  latency      Leadwire at a fixed offered rate (200/s): publish -> buyer received, publish -> outcome
  latency-low  the same at a rate it sustains (20/s): the latency of the pipeline itself
  baseline     Leadwire at full speed, S leads: the reference for the next two
  slow-buyer   the same S leads with one buyer answering after 2 s: throughput to the others
  history      the same S leads with H earlier leads (inside the duplicate window) in the database
  metrics-overhead  (only when asked for) S leads with the services' metrics on, then off, --repeat
               times alternating, the services restarted (and warmed up with S/10 leads) between: what
               metrics cost
               (docs/operations.md); "on" includes a scrape of every process every --scrape-interval

The services run as separate `faststream run` processes (router, delivery, notifier), the buyer
endpoint as another (bench/buyer.py). Results: bench/results/latest.json and latest.md.

  scripts/bench                              # the full run (about 10 minutes on 2 cores)
  scripts/bench --leads 2000 --history 100000 --phases throughput,history
  scripts/bench --phases metrics-overhead --sub-leads 1000 --repeat 2
  scripts/bench --metrics off              # every phase with the services' metrics off
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import buyer as buyer_mod  # noqa: E402
from bench import catalog as bench_catalog  # noqa: E402
from bench import design_floor as design_floor_mod  # noqa: E402
from bench import floor as floor_mod  # noqa: E402
from bench.load import HISTORY_PHONE_BASE, PHONE_BASE, Listener, Publisher, make_leads, percentiles  # noqa: E402
from bench.report import markdown  # noqa: E402
from harness.broker import wait_for_consumers  # noqa: E402
from harness.catalog import apply_catalog_text  # noqa: E402
from harness.processes import Processes, service_env  # noqa: E402
from shared import db  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.topology import Topology  # noqa: E402

PHASES = ("floor", "design-floor", "throughput", "latency", "latency-low", "baseline", "slow-buyer", "history")
# Phases run only when named in --phases.
EXTRA_PHASES = ("metrics-overhead",)
TERMINAL = ("sold", "unsold", "duplicate", "rejected")
# Everything a run writes; truncated between phases so each starts from the same empty state.
RUN_TABLES = (
    "leads",
    "deliveries",
    "delivery_attempts",
    "cap_usage",
    "group_rotation",
    "inbox",
    "outbox",
    "dead_letters",
    "delivery_account_state",
    "notification_sends",
    "order_charges",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--leads", type=int, default=20_000, help="N: leads for the throughput and floor runs")
    p.add_argument("--latency-leads", type=int, default=2_000, help="leads offered at --rate")
    p.add_argument("--rate", type=float, default=200, help="offered rate of the latency run (leads/s)")
    p.add_argument(
        "--low-rate",
        type=float,
        default=20,
        help="offered rate of the latency-low run: latency when nothing queues (leads/s)",
    )
    p.add_argument("--low-rate-leads", type=int, default=400)
    p.add_argument("--sub-leads", type=int, default=2_000, help="S: leads of the baseline, slow-buyer and history runs")
    p.add_argument("--history", type=int, default=1_000_000, help="H: earlier leads seeded for the history run")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure the baseline, slow-buyer and history phases this many times each"
        " (baseline and slow-buyer alternating) and judge their goals on the medians",
    )
    p.add_argument("--slow-seconds", type=float, default=2.0, help="the slow buyer's answer time")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument(
        "--no-caps", action="store_true", help="accounts without caps (shows what the per-account cap counters cost)"
    )
    p.add_argument("--duplicates", type=float, default=0.05, help="share of leads repeating an earlier person")
    p.add_argument("--routers", type=int, default=1, help="router processes")
    p.add_argument("--deliveries", type=int, default=1, help="delivery processes")
    p.add_argument(
        "--delivery-prefetch",
        type=int,
        default=None,
        help="LEADWIRE_PREFETCH of the delivery processes (default: delivery's own, 128)",
    )
    p.add_argument(
        "--router-prefetch",
        type=int,
        default=None,
        help="LEADWIRE_PREFETCH of the router processes (default: router's own, 32)",
    )
    p.add_argument(
        "--design-batch",
        type=int,
        default=1,
        help="leads per internal message and per transaction in the design floor (1: the design as it is;"
        " more: what batching the hops would allow)",
    )
    p.add_argument("--floor-workers", type=int, default=1, help="floor worker processes")
    p.add_argument(
        "--metrics",
        choices=("on", "off"),
        default="on",
        help="the services' Prometheus metrics (LEADWIRE_METRICS_PORT: a free port each, or off); on: scraped"
        " every --scrape-interval as Prometheus would",
    )
    p.add_argument("--scrape-interval", type=float, default=15.0, help="seconds between scrapes with metrics on")
    p.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES + EXTRA_PHASES)}"
    )
    p.add_argument("--stall-seconds", type=float, default=90, help="give up a phase after this long without progress")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="directory for latest.json/.md")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record py-spy flame graphs of router and delivery during the throughput run here",
    )
    p.add_argument("--attempts", type=int, default=3, help="measure a disturbed phase again, up to this many times")
    p.add_argument("--keep", action="store_true", help="keep the benchmark database (for inspection)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }


@dataclass
class Run:
    args: argparse.Namespace
    amqp_url: str
    database_url: str
    namespace: str
    buyer_port: int
    log_dir: Path
    processes: Processes
    pool: asyncpg.Pool | None = None
    outcomes: Listener | None = None
    results: dict[str, Any] = field(default_factory=dict)
    runs_of: collections.Counter[str] = field(default_factory=collections.Counter)  # measurements per phase
    keep_history: bool = False  # the history phase: reset keeps the seeded leads
    metrics_on: bool = True  # the services run with metrics (--metrics; the overhead phase switches)
    metrics_ports: dict[str, int] = field(default_factory=dict)  # slot -> its /metrics port
    scrapes: int = 0

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(text, flush=True)

    # --- processes -------------------------------------------------------------------------------

    def start_services(self) -> None:
        services = [("router", self.args.routers), ("delivery", self.args.deliveries), ("notifier", 1)]
        self.metrics_ports.clear()
        for service, count in services:
            env = {}
            if service == "delivery" and self.args.delivery_prefetch:
                env["LEADWIRE_PREFETCH"] = str(self.args.delivery_prefetch)
            if service == "router" and self.args.router_prefetch:
                env["LEADWIRE_PREFETCH"] = str(self.args.router_prefetch)
            for i in range(count):
                slot = f"{service}-{i}"
                port = free_port() if self.metrics_on else None
                env["LEADWIRE_METRICS_PORT"] = str(port) if port else "off"
                if port:
                    self.metrics_ports[slot] = port
                self.processes.service(service, slot=slot, **env)

    async def restart_services(self, metrics_on: bool) -> None:
        """Stop the services (gracefully) and start them again, with metrics on or off."""
        slots = [s for s in self.processes.slots if s.split("-")[0] in ("router", "delivery", "notifier")]
        self.processes.stop(slots)
        self.metrics_on = metrics_on
        self.start_services()
        topology = Topology(self.namespace)
        await self.wait_for_consumers(topology.queue_name("router.leads"), self.args.routers)
        await self.wait_for_consumers(topology.queue_name("delivery.requests"), self.args.deliveries)
        await self.wait_for_consumers(topology.queue_name("router.delivery-results"), self.args.routers)

    async def scrape_metrics(self) -> None:
        """Scrape every process's /metrics at once and then every --scrape-interval, as
        Prometheus would (while a phase runs with metrics on)."""
        while True:
            for port in list(self.metrics_ports.values()):
                try:
                    await asyncio.to_thread(_scrape, port)
                    self.scrapes += 1
                except OSError:
                    pass  # a process still starting: the next round
            await asyncio.sleep(self.args.scrape_interval)

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU time of each process so far (Linux /proc), to see who spends the machine."""
        ticks = os.sysconf("SC_CLK_TCK")
        used = {}
        for name, pid in self.processes.pids().items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                used[name] = (int(fields[11]) + int(fields[12])) / ticks
                used[f"{name}:system"] = int(fields[12]) / ticks
            except (OSError, IndexError, ValueError):
                pass
        return used

    def check_alive(self) -> None:
        self.processes.check_alive(f"; logs in {self.log_dir}")

    async def wait_for_consumers(self, queue: str, count: int, timeout: float = 60) -> None:
        await wait_for_consumers(self.amqp_url, {queue: count}, timeout=timeout, check=self.check_alive)

    # --- database ----------------------------------------------------------------------------------

    async def reset(self) -> None:
        """Wait until the previous phase left nothing in flight, then empty what runs write (with
        `keep_history`, only the plumbing tables: the seeded leads stay for the history phase)."""
        assert self.pool is not None
        if self.keep_history:
            await self.pool.execute("TRUNCATE outbox, inbox, dead_letters, cap_usage, group_rotation")
            return
        await self.drain()
        await self.pool.execute(f"TRUNCATE {', '.join(RUN_TABLES)} CASCADE")
        await self.pool.execute("VACUUM ANALYZE leads")

    async def transactions(self) -> int:
        """Committed transactions in the benchmark database so far (PostgreSQL's statistics,
        which lag by up to half a second: good enough per phase, not per lead)."""
        assert self.pool is not None
        await asyncio.sleep(0.6)
        return await self.pool.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")

    async def drain(self, timeout: float = 60) -> None:
        """Wait until no work is queued or in the outbox (a disturbed phase leaves some behind);
        past the timeout, purge this run's queues so the next phase starts clean."""
        assert self.pool is not None
        topology = Topology(self.namespace)
        names = [n for n in topology.all_queue_names() if not n.endswith(".dlq")]
        deadline = time.monotonic() + timeout
        connection = await aio_pika.connect(self.amqp_url)
        try:
            quiet = 0
            while quiet < 3:
                channel = await connection.channel()
                queued = 0
                for name in names:
                    try:
                        declared = await channel.declare_queue(name, passive=True)
                        queued += declared.declaration_result.message_count or 0
                    except aio_pika.exceptions.ChannelClosed:
                        channel = await connection.channel()
                queued += await self.pool.fetchval("SELECT count(*) FROM outbox")
                queued += await self.pool.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status IN ('requested', 'posting')"
                )
                await channel.close()
                quiet = quiet + 1 if queued == 0 else 0
                if time.monotonic() > deadline:
                    self.say(f"    {queued} messages still queued: purging")
                    channel = await connection.channel()
                    for name in names:
                        try:
                            await (await channel.declare_queue(name, passive=True)).purge()
                        except aio_pika.exceptions.ChannelClosed:
                            channel = await connection.channel()
                    return
                await asyncio.sleep(0.3)
        finally:
            await connection.close()

    async def seed_history(self, count: int) -> float:
        """`count` earlier sold leads spread over the last 29 days (inside the 30-day duplicate
        window), each with its delivery, in two INSERT ... SELECT statements."""
        assert self.pool is not None
        started = time.monotonic()
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, fingerprint, status,"
                " received_at, decided_at, max_sales)"
                " SELECT gen_random_uuid(), 'web', 'history-' || i, 'solar',"
                "  jsonb_build_object('ref', 'history-' || i, 'first_name', 'Ada', 'phone', ($2 + i)::text,"
                "   'state', 'CA', 'homeowner', 'yes', 'monthly_bill', '120.00'),"
                "  encode(sha256(convert_to('solar' || chr(31) || ($2 + i)::text, 'UTF8')), 'hex'),"
                "  'sold', t, t, 2"
                " FROM generate_series(1, $1::bigint) AS i,"
                "  LATERAL (SELECT now() - interval '29 days' * (i::float8 / $1)) AS r(t)",
                count,
                HISTORY_PHONE_BASE,
                timeout=3600,
            )
            await conn.execute(
                "INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status, attempts,"
                " created_at, completed_at)"
                " SELECT gen_random_uuid(), l.id,"
                "  'buyer' || lpad((abs(hashtext(l.idempotency_key)) % $1)::text, 2, '0'),"
                "  'buyer' || lpad((abs(hashtext(l.idempotency_key)) % $1)::text, 2, '0') || '-solar',"
                "  25.00, 'succeeded', 1, l.received_at, l.received_at"
                " FROM leads l WHERE l.idempotency_key LIKE 'history-%'",
                self.args.clients,
                timeout=3600,
            )
            await conn.execute("VACUUM ANALYZE leads", timeout=3600)
            await conn.execute("VACUUM ANALYZE deliveries", timeout=3600)
        return time.monotonic() - started

    # --- measuring ---------------------------------------------------------------------------------

    async def progress(
        self, phase: str, publisher: Publisher, done: Callable[[], int], total: int, stop: asyncio.Event
    ) -> None:
        started = time.monotonic()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 2)
            except TimeoutError:
                pass
            load = os.getloadavg()[0]
            self.say(
                f"    [{phase}] {time.monotonic() - started:6.1f}s  published {len(publisher.sent_at):>6}/{total}"
                f"  finished {done():>6}/{total}  load {load:.2f}"
            )

    async def drive(
        self, phase: str, keys: list[str], publish: Any, done_keys: dict[str, float], publisher: Publisher
    ) -> tuple[float, bool]:
        """Publish, and wait until every key is done or nothing moved for --stall-seconds."""
        wanted = set(keys)
        finished = lambda: sum(1 for k in wanted if k in done_keys)  # noqa: E731
        stop = asyncio.Event()
        reporter = asyncio.create_task(self.progress(phase, publisher, finished, len(keys), stop))
        try:
            await publish
            last, last_change = -1, time.monotonic()
            while True:
                self.check_alive()
                now_done = finished()
                if now_done >= len(wanted):
                    return time.monotonic(), True
                if now_done != last:
                    last, last_change = now_done, time.monotonic()
                elif time.monotonic() - last_change > self.args.stall_seconds:
                    return time.monotonic(), False
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await reporter

    async def leadwire_phase(
        self, phase: str, n: int, rate: float | None = None, slow: str | None = None
    ) -> dict[str, Any]:
        """Measure once; measure again when the broker went away mid-run (another engineer's
        fault injection restarts RabbitMQ now and then) or the run did not complete."""
        for attempt in range(1, self.args.attempts + 1):
            assert self.outcomes is not None
            reconnects = self.outcomes.reconnects
            result = await self._leadwire_phase(phase, n, rate, slow)
            disturbed = self.outcomes.reconnects != reconnects or result["publish_errors"] > 0
            result["attempt"] = attempt
            if not disturbed and result["complete"]:
                return result
            self.say(
                f"    {phase}: disturbed (broker reconnects {self.outcomes.reconnects - reconnects},"
                f" publish errors {result['publish_errors']}, complete {result['complete']})"
                + ("; measuring again" if attempt < self.args.attempts else "")
            )
            result["disturbed"] = disturbed
        return result

    async def _leadwire_phase(
        self, phase: str, n: int, rate: float | None = None, slow: str | None = None
    ) -> dict[str, Any]:
        assert self.outcomes is not None and self.pool is not None
        await self.reset()
        await buyer_mod.control(self.buyer_port, "/_control/dump")
        if slow:
            await buyer_mod.control(self.buyer_port, f"/_control/delay?client={slow}&seconds={self.args.slow_seconds}")
        tag = f"{phase}-{uuid.uuid4().hex[:6]}"
        self.runs_of[phase] += 1
        leads = make_leads(
            n,
            tag,
            duplicate_share=self.args.duplicates,
            first_phone=PHONE_BASE + 10_000_000 * (self.runs_of[phase] - 1),
        )
        keys = [k for k, _ in leads]
        self.outcomes.seen.clear()
        self.outcomes.statuses.clear()
        publisher = Publisher(self.amqp_url)
        load_before = os.getloadavg()[0]
        self.say(
            f"==> {phase}: {n} leads "
            + (f"at {rate:g}/s" if rate else "at full speed")
            + (f", buyer {slow} answering after {self.args.slow_seconds:g} s" if slow else "")
        )
        profilers = self.start_profilers(phase) if phase == "throughput" and self.args.profile else []
        cpu_before = self.cpu_seconds()
        xacts_before = await self.transactions()
        scraper = asyncio.create_task(self.scrape_metrics()) if self.metrics_on else None
        scrapes_before = self.scrapes
        try:
            _, complete = await self.drive(
                phase,
                keys,
                publisher.run(f"{self.namespace}.inbound", "lead.solar", leads, rate),
                self.outcomes.seen,
                publisher,
            )
        finally:
            self.stop_profilers(profilers)
            if scraper is not None:
                scraper.cancel()
                await asyncio.gather(scraper, return_exceptions=True)
        cpu_after = self.cpu_seconds()
        xacts = await self.transactions() - xacts_before
        if slow:
            await buyer_mod.control(self.buyer_port, f"/_control/delay?client={slow}&seconds=0")
        posts = await buyer_mod.control(self.buyer_port, "/_control/dump")
        sent = publisher.sent_at
        first = min(sent.values())
        seen = {k: t for k, t in self.outcomes.seen.items() if k in sent}
        last = max(seen.values()) if seen else first
        result: dict[str, Any] = {
            "leads": n,
            "offered_rate": rate,
            "complete": complete,
            "outcomes": len(seen),
            "statuses": dict(self.outcomes.statuses),
            "publish_errors": publisher.errors,
            "seconds": round(last - first, 3),
            "leads_per_second": round(len(seen) / (last - first), 1) if last > first else None,
            "publish_seconds": round(max(sent.values()) - first, 3),
            "buyer_posts": len(posts),
            "load_before": round(load_before, 2),
            "dead_letters": await self.pool.fetchval("SELECT count(*) FROM dead_letters"),
            "cpu_seconds": {k: round(cpu_after[k] - v, 1) for k, v in cpu_before.items() if k in cpu_after},
            "db_transactions_per_lead": round(xacts / n, 1),
            "metrics": "on" if self.metrics_on else "off",
            "scrapes": self.scrapes - scrapes_before,
        }
        first_post: dict[str, float] = {}
        for ref, _client, at in posts:
            if ref in sent and (ref not in first_post or at < first_post[ref]):
                first_post[ref] = at
        result["latency_ms"] = {
            "publish_to_buyer": percentiles([first_post[k] - sent[k] for k in first_post]),
            "publish_to_outcome": percentiles([seen[k] - sent[k] for k in seen]),
        }
        if slow is not None or phase == "baseline":
            slow_id = slow or bench_catalog.slow_client(self.args.clients)
            others = [at for _ref, client, at in posts if client != slow_id]
            result["slow_client"] = slow_id
            result["posts_to_slow_client"] = len(posts) - len(others)
            result["posts_to_others"] = len(others)
            span = (max(others) - first) if others else 0
            result["others_posts_per_second"] = round(len(others) / span, 1) if span > 0 else None
        if os.environ.get("BENCH_DUMP_POSTS"):
            Path(os.environ["BENCH_DUMP_POSTS"] + f".{phase}.json").write_text(
                json.dumps({"first": first, "slow": slow, "posts": posts, "sent": sent, "outcomes": seen})
            )
        self.say(
            f"    {phase}: {result['outcomes']}/{n} outcomes in {result['seconds']} s"
            f" = {result['leads_per_second']} leads/s; buyer p99 {result['latency_ms']['publish_to_buyer']['p99']} ms"
            f"; dead letters {result['dead_letters']}"
        )
        return result

    async def floor_phase(self, n: int, shape: str = "floor") -> dict[str, Any]:
        for attempt in range(1, self.args.attempts + 1):
            result = await self._floor_phase(n, shape)
            result["attempt"] = attempt
            if result["complete"] and not result["publish_errors"] and not result["disturbed"]:
                return result
            self.say(f"    {shape}: disturbed" + ("; measuring again" if attempt < self.args.attempts else ""))
        return result

    def _floor_workers(self, shape: str) -> tuple[dict[str, list[str]], list[str], str, str, list[tuple[str, int]]]:
        """The worker processes of a floor shape: ({process name: argv}, every queue, inbound queue,
        outbound queue, (queue, consumers) to wait for)."""
        common = ["--amqp-url", self.amqp_url, "--database-url", self.database_url, "--namespace", self.namespace]
        if shape == "floor":
            inbound, outbound = floor_mod.queue_names(self.namespace)
            workers = {
                f"floor-{i}": [sys.executable, "-m", "bench.floor", *common] for i in range(self.args.floor_workers)
            }
            return workers, [inbound, outbound], inbound, outbound, [(inbound, len(workers))]
        queues = design_floor_mod.queue_names(self.namespace)
        workers = {
            f"design-floor-{role}": [
                sys.executable,
                "-m",
                "bench.design_floor",
                "--role",
                role,
                *common,
                "--buyer-url",
                f"http://127.0.0.1:{self.buyer_port}",
                "--batch",
                str(self.args.design_batch),
            ]
            for role in ("router", "delivery")
        }
        return (
            workers,
            list(queues.values()),
            queues["leads"],
            queues["out"],
            [(queues["leads"], 1), (queues["results"], 1), (queues["requests"], 1)],
        )

    async def _floor_phase(self, n: int, shape: str) -> dict[str, Any]:
        workers, queues, inbound, outbound, consumers = self._floor_workers(shape)
        declare = floor_mod.declare if shape == "floor" else design_floor_mod.declare
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            await declare(channel, self.namespace)
            # A disturbed earlier attempt may have left messages: start from empty queues.
            for name in queues:
                await (await channel.get_queue(name)).purge()
        finally:
            await connection.close()
        for name, argv in workers.items():
            self.processes.spawn(name, argv)
        names = list(workers)
        listener = Listener(self.amqp_url, key_of=lambda m: m.message_id)
        cpu_before = cpu_after = {}
        try:
            for queue, count in consumers:
                await self.wait_for_consumers(queue, count)
            await listener.start(outbound)
            leads = make_leads(n, f"{shape}-{uuid.uuid4().hex[:6]}", duplicate_share=self.args.duplicates)
            publisher = Publisher(self.amqp_url)
            load_before = os.getloadavg()[0]
            cpu_before = self.cpu_seconds()
            xacts_before = await self.transactions()
            self.say(
                f"==> {shape}: {n} leads at full speed through {len(names)} plain aio-pika + asyncpg worker process(es)"
            )
            _, complete = await self.drive(
                shape, [k for k, _ in leads], publisher.run("", inbound, leads), listener.seen, publisher
            )
            cpu_after = self.cpu_seconds()
            xacts = await self.transactions() - xacts_before
        finally:
            await listener.stop()
            self.processes.stop(names)
        if shape != "floor":
            await buyer_mod.control(self.buyer_port, "/_control/dump")  # the buyer forgets these posts
        sent = publisher.sent_at
        first = min(sent.values())
        last = max(listener.seen.values()) if listener.seen else first
        result = {
            "leads": n,
            "complete": complete,
            "outcomes": len(listener.seen),
            "publish_errors": publisher.errors,
            "seconds": round(last - first, 3),
            "workers": len(names),
            "load_before": round(load_before, 2),
            "disturbed": listener.reconnects > 0,
            "cpu_seconds": {
                k: round(cpu_after[k] - v, 1) for k, v in cpu_before.items() if k in cpu_after and k in names
            },
            "db_transactions_per_lead": round(xacts / n, 1),
            "batch": 1 if shape == "floor" else self.args.design_batch,
            "leads_per_second": round(len(listener.seen) / (last - first), 1) if last > first else None,
            "latency_ms": {"publish_to_out": percentiles([listener.seen[k] - sent[k] for k in listener.seen])},
        }
        self.say(
            f"    {shape}: {result['outcomes']}/{n} in {result['seconds']} s = {result['leads_per_second']} leads/s"
        )
        return result

    def start_profilers(self, phase: str) -> list[subprocess.Popen]:
        self.args.profile.mkdir(parents=True, exist_ok=True)
        procs = []
        for name, pid in self.processes.pids().items():
            if name.startswith(("router", "delivery", "notifier")):
                for fmt, ext in (("flamegraph", "svg"), ("raw", "txt")):
                    out = self.args.profile / f"{phase}-{name}.{ext}"
                    procs.append(
                        subprocess.Popen(
                            [
                                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                                "record",
                                "--nonblocking",
                                "-p",
                                str(pid),
                                "-o",
                                str(out),
                                "--rate",
                                "100",
                                "--gil",
                                "-f",
                                fmt,
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
        return procs

    def stop_profilers(self, procs: list[subprocess.Popen]) -> None:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


MEDIAN_FIGURES = ("leads_per_second", "others_posts_per_second")


def with_medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase measured len(runs) times: the run with the median leads/s, carrying every run's
    figures (`repeats`) and the medians the goals are judged on (`median_<figure>`)."""
    if len(runs) == 1:
        return runs[0]
    chosen = dict(sorted(runs, key=lambda r: r["leads_per_second"] or 0)[len(runs) // 2])
    chosen["repeats"] = {f: [r.get(f) for r in runs] for f in MEDIAN_FIGURES if runs[0].get(f) is not None}
    for figure, values in chosen["repeats"].items():
        chosen[f"median_{figure}"] = statistics.median(v for v in values if v is not None)
    return chosen


def shape_ratios(phases: dict[str, Any]) -> dict[str, float]:
    """Not goals: where the design itself stands against the floor, and Leadwire against its design."""
    rate = {name: (phases.get(name) or {}).get("leads_per_second") for name in ("floor", "design-floor", "throughput")}
    ratios = {}
    if rate["design-floor"] and rate["floor"]:
        ratios["design_floor_vs_floor"] = round(rate["design-floor"] / rate["floor"], 3)
    if rate["throughput"] and rate["design-floor"]:
        ratios["pipeline_vs_design_floor"] = round(rate["throughput"] / rate["design-floor"], 3)
    return ratios


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The four goals of the benchmark, each as measured / target / met."""
    phases = results["phases"]
    goals: dict[str, Any] = {}

    def rate(name: str, key: str = "leads_per_second") -> float | None:
        phase = phases.get(name) or {}
        value = phase.get(f"median_{key}", phase.get(key))
        return float(value) if value else None

    throughput, floor = rate("throughput"), rate("floor")
    if throughput and floor:
        ratio = throughput / floor
        goals["pipeline_vs_floor"] = {"measured": round(ratio, 3), "target": ">= 0.5", "met": ratio >= 0.5}
    if "latency" in phases:
        p99 = phases["latency"]["latency_ms"]["publish_to_buyer"]["p99"]
        goals["p99_publish_to_buyer_ms"] = {"measured": p99, "target": "< 100", "met": p99 is not None and p99 < 100}
    baseline_others, slow_others = (
        rate("baseline", "others_posts_per_second"),
        rate("slow-buyer", "others_posts_per_second"),
    )
    if baseline_others and slow_others:
        cost = 1 - slow_others / baseline_others
        goals["slow_buyer_cost_to_others"] = {"measured": round(cost, 3), "target": "< 0.10", "met": cost < 0.10}
    metrics_on, metrics_off = rate("metrics-on"), rate("metrics-off")
    if metrics_on and metrics_off:
        cost = 1 - metrics_on / metrics_off
        goals["metrics_overhead"] = {"measured": round(cost, 3), "target": "< 0.05", "met": cost < 0.05}
    baseline, history = rate("baseline"), rate("history")
    if baseline and history:
        cost = 1 - history / baseline
        goals["history_cost"] = {"measured": round(cost, 3), "target": "< 0.10", "met": cost < 0.10}
    return goals


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES) - set(EXTRA_PHASES)
    if unknown:
        raise SystemExit(f"unknown phase(s): {', '.join(sorted(unknown))}")
    amqp_url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    run_id = uuid.uuid4().hex[:8]
    database_url = db.with_database(server_url, f"leadwire_bench_{run_id}")
    namespace = f"bench{run_id}"
    log_dir = Path(tempfile.mkdtemp(prefix=f"leadwire-bench-{run_id}-"))
    settings = Settings(AMQP_URL=amqp_url, DATABASE_URL=database_url, LEADWIRE_NAMESPACE=namespace)
    run = Run(
        args,
        amqp_url,
        database_url,
        namespace,
        free_port(),
        log_dir,
        Processes(service_env(settings), log_dir=log_dir),
        metrics_on=args.metrics == "on",
    )
    started_at = datetime.now(UTC)
    run.say(
        f"==> benchmark {run_id}: database {db.database_name(database_url)}, namespace {run.namespace},"
        f" logs {run.log_dir}"
    )
    run.say(f"    machine: {machine()['cpu']}, {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    results: dict[str, Any] = {
        "run_id": run_id,
        "started_at": started_at.isoformat(),
        "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "phases": {},
    }
    try:
        await db.ensure_database(database_url)
        await db.migrate(database_url)
        await apply_catalog_text(
            database_url,
            bench_catalog.build_yaml(f"http://127.0.0.1:{run.buyer_port}", args.clients, caps=not args.no_caps),
        )
        run.pool = await db.create_pool(database_url, min_size=1, max_size=2)
        results["machine"]["postgresql"] = await run.pool.fetchval("SHOW server_version")
        run.processes.spawn("buyer", [sys.executable, "-m", "bench.buyer", "--port", str(run.buyer_port)])
        topology = Topology(run.namespace)

        if "floor" in phases:
            results["phases"]["floor"] = await run.floor_phase(args.leads)
        if "design-floor" in phases:
            results["phases"]["design-floor"] = await run.floor_phase(args.leads, "design-floor")

        leadwire = [p for p in phases if p not in ("floor", "design-floor")]
        if leadwire:
            run.start_services()
            await run.wait_for_consumers(topology.queue_name("router.leads"), args.routers)
            await run.wait_for_consumers(topology.queue_name("delivery.requests"), args.deliveries)
            await run.wait_for_consumers(topology.queue_name("router.delivery-results"), args.routers)
            connection = await aio_pika.connect(amqp_url)
            try:
                channel = await connection.channel()
                # Durable: a broker restart mid-run must not lose the queue the measurement reads.
                outcomes_queue = await channel.declare_queue(f"{run.namespace}.bench.outcomes", durable=True)
                events = await channel.get_exchange(f"{run.namespace}.events")
                for status in TERMINAL:
                    await outcomes_queue.bind(events, f"lead.{status}")
            finally:
                await connection.close()
            run.outcomes = Listener(
                amqp_url,
                key_of=lambda m: json.loads(m.body).get("idempotency_key"),
                status_of=lambda m: (m.routing_key or "").removeprefix("lead."),
            )
            await run.outcomes.start(f"{run.namespace}.bench.outcomes")
            try:
                if "throughput" in phases:
                    results["phases"]["throughput"] = await run.leadwire_phase("throughput", args.leads)
                if "latency" in phases:
                    results["phases"]["latency"] = await run.leadwire_phase(
                        "latency", args.latency_leads, rate=args.rate
                    )
                if "latency-low" in phases:
                    results["phases"]["latency-low"] = await run.leadwire_phase(
                        "latency-low", args.low_rate_leads, rate=args.low_rate
                    )
                if {"baseline", "slow-buyer", "history"} & set(phases):
                    # Alternating, so that a drift of the machine's pace weighs on both alike.
                    repeats: dict[str, list[dict[str, Any]]] = {"baseline": [], "slow-buyer": []}
                    for _ in range(max(args.repeat, 1)):
                        repeats["baseline"].append(await run.leadwire_phase("baseline", args.sub_leads))
                        if "slow-buyer" in phases:
                            repeats["slow-buyer"].append(
                                await run.leadwire_phase(
                                    "slow-buyer", args.sub_leads, slow=bench_catalog.slow_client(args.clients)
                                )
                            )
                    for name, runs in repeats.items():
                        if runs:
                            results["phases"][name] = with_medians(runs)
                if "metrics-overhead" in phases:
                    # Alternating, restarted each time, so that a drift of the machine weighs on both.
                    measured: dict[str, list[dict[str, Any]]] = {"metrics-on": [], "metrics-off": []}
                    for _ in range(max(args.repeat, 1)):
                        for name, on in (("metrics-on", True), ("metrics-off", False)):
                            await run.restart_services(on)
                            # Unmeasured: fresh processes warm their pools and caches first.
                            await run.leadwire_phase("warm-up", max(args.sub_leads // 10, 20))
                            measured[name].append(await run.leadwire_phase(name, args.sub_leads))
                    for name, runs in measured.items():
                        results["phases"][name] = with_medians(runs)
                    await run.restart_services(args.metrics == "on")
                if "history" in phases:
                    await run.reset()
                    run.say(f"==> history: seeding {args.history} earlier leads (SQL INSERT ... SELECT)")
                    seeded = await run.seed_history(args.history)
                    run.say(f"    seeded in {seeded:.1f} s")
                    # leadwire_phase resets first: keep the seeded rows.
                    run.keep_history = True
                    try:
                        results["phases"]["history"] = with_medians(
                            [await run.leadwire_phase("history", args.sub_leads) for _ in range(max(args.repeat, 1))]
                        )
                    finally:
                        run.keep_history = False
                    results["phases"]["history"]["history_leads"] = args.history
                    results["phases"]["history"]["seed_seconds"] = round(seeded, 1)
            finally:
                await run.outcomes.stop()
        results["goals"] = summarise(results)
        results.update(shape_ratios(results["phases"]))
        results["finished_at"] = datetime.now(UTC).isoformat()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "latest.md").write_text(markdown(results))
        run.say(markdown(results))
        run.say(f"==> wrote {args.out / 'latest.json'} and {args.out / 'latest.md'}")
        return 0
    finally:
        run.processes.stop()
        if run.pool is not None:
            await run.pool.close()
        await _cleanup(run, args.keep)


def _scrape(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return len(answer.read())


async def _cleanup(run: Run, keep: bool) -> None:
    try:
        await Topology(run.namespace).delete(run.amqp_url)
        await floor_mod.delete(run.amqp_url, run.namespace)
        await design_floor_mod.delete(run.amqp_url, run.namespace)
        connection = await aio_pika.connect(run.amqp_url)
        try:
            await (await connection.channel()).queue_delete(f"{run.namespace}.bench.outcomes")
        finally:
            await connection.close()
    except Exception as exc:  # noqa: BLE001 - cleanup is best effort; the run's result stands
        print(f"warning: broker cleanup failed: {exc}", file=sys.stderr)
    if not keep:
        await db.drop_database(run.database_url)


async def cli() -> int:
    # Ctrl-C or SIGTERM: cancel the run, which stops the processes and drops the database.
    me = asyncio.current_task()
    assert me is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, me.cancel)
    try:
        return await main()
    except asyncio.CancelledError:
        print("benchmark interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(asyncio.run(cli()))
