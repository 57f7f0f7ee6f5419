"""The Client Portal at scale: 1,000,000 leads in the database, 100,000 of them delivered to one
client, and the pages that client's users open most, timed over real HTTP.

    .venv/bin/python -m bench.portal [--leads 1000000] [--client-leads 100000] [--requests 40]
                                     [--database NAME]  (filled once and kept, for repeated runs)

What it does, in its own database (created and dropped):
1. migrations, the portal's test catalog (clients acme and bolt);
2. the leads written straight into `leads` and `deliveries` by set-based SQL, as router and
   delivery leave them: `--client-leads` succeeded deliveries to acme over the last 60 days, the
   rest to bolt (so acme's pages must find its own among all of them);
3. portal_auth in this process and the portal served by uvicorn on 127.0.0.1, one acme user signed
   in through the login form; acme's sort keys set and the tables vacuumed and analysed;
4. each page requested `--requests` times after a warm-up, one at a time; the figure is the time
   from sending the request to the last byte, on loopback — server time plus a fraction of a
   millisecond;
5. the CSV export of every acme lead, streamed and thrown away, with this process's resident
   memory sampled while it streams; the same for a tenth of them: constant memory means the two
   peaks are about equal.

Prints one JSON object (also written to bench/results/portal.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import time
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from harness.catalog import apply_catalog_text
from services.portal import queries, rules
from services.portal.web import create_app
from services.portal_auth.main import build as build_portal_auth
from shared import db
from shared.settings import Settings
from tests.portal_auth_support import PASSWORD, fast_config, seed_user
from tests.portal_support import portal_catalog
from tests.web_support import serve

RESULTS = Path(__file__).parent / "results" / "portal.json"

# One statement per table: leads numbered 1..N, each delivered at a time spread evenly (by a hash of
# its number) over the last 60 days; lead i goes to acme when i <= client_leads.
LEADS_SQL = """
INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, fingerprint, status,
                   received_at, decided_at)
SELECT md5('lead' || i)::uuid, 'web', 'bench-' || i, 'solar',
       jsonb_build_object(
           'first_name', 'Person' || i, 'last_name', 'Surname' || i,
           'email', 'person' || i || '@leads.example', 'phone', (4150000000 + i)::text,
           'state', (ARRAY['CA', 'NV', 'OR', 'AZ', 'TX'])[1 + i % 5], 'zip', lpad((i % 99999)::text, 5, '0'),
           'monthly_bill', (50 + i % 400) || '.00'),
       'phone:' || (4150000000 + i), 'sold',
       $3::timestamptz - ((hashtext(i::text) & 2147483647) % (60 * 86400)) * interval '1 second',
       $3::timestamptz - ((hashtext(i::text) & 2147483647) % (60 * 86400)) * interval '1 second'
FROM generate_series($1::bigint, $2::bigint) AS i
"""

DELIVERIES_SQL = """
INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status, attempts,
                        created_at, completed_at)
SELECT md5('delivery' || i)::uuid, md5('lead' || i)::uuid,
       CASE WHEN i <= $4 THEN 'acme' ELSE 'bolt' END,
       CASE WHEN i <= $4 THEN 'acme-solar' ELSE 'bolt-solar' END,
       CASE WHEN i <= $4 THEN 25.00 ELSE 20.00 END, 'succeeded', 1,
       $3::timestamptz - ((hashtext(i::text) & 2147483647) % (60 * 86400)) * interval '1 second',
       $3::timestamptz - ((hashtext(i::text) & 2147483647) % (60 * 86400)) * interval '1 second'
FROM generate_series($1::bigint, $2::bigint) AS i
"""


async def fill(database_url: str, leads: int, client_leads: int) -> float:
    """Write the leads in chunks (each its own transaction); returns the seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    chunk = 100_000
    async with db.connection(database_url) as conn:
        for first in range(1, leads + 1, chunk):
            last = min(first + chunk - 1, leads)
            async with conn.transaction():
                await conn.execute(LEADS_SQL, first, last, now)
                await conn.execute(DELIVERIES_SQL, first, last, now, client_leads)
            print(f"  {last:,} leads written", flush=True)
    return time.perf_counter() - started


async def sign_in(client: httpx.AsyncClient, origin: str, email: str) -> None:
    page = await client.get("/portal/login")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    if match is None:
        raise RuntimeError("the login page has no CSRF token")
    answer = await client.post(
        "/portal/login",
        data={"email": email, "password": PASSWORD, "csrf": match.group(1)},
        headers={"Origin": origin},
    )
    if answer.status_code != 303 or "/portal/dashboard" not in answer.headers.get("location", ""):
        raise RuntimeError(f"sign-in failed: {answer.status_code} {answer.text[:200]}")


async def time_page(client: httpx.AsyncClient, url: str, requests: int) -> dict[str, Any]:
    for _ in range(3):  # warm-up: plans cached, pages in shared buffers
        answer = await client.get(url)
        if answer.status_code != 200:
            raise RuntimeError(f"{url}: {answer.status_code} {answer.text[:300]}")
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = await client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{url}: {answer.status_code}")
    times.sort()
    return {
        "url": url,
        "requests": requests,
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
        "max_ms": round(times[-1], 1),
    }


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def export(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """Stream the CSV, count its rows, and sample resident memory while it streams."""
    before = resident_kib()
    peak = before
    rows = 0
    started = time.perf_counter()
    async with client.stream("GET", url) as answer:
        if answer.status_code != 200:
            raise RuntimeError(f"{url}: {answer.status_code}")
        async for chunk in answer.aiter_bytes():
            rows += chunk.count(b"\n")
            peak = max(peak, resident_kib())
    return {
        "url": url,
        "rows": rows - 1,  # the header line
        "seconds": round(time.perf_counter() - started, 1),
        "rss_before_mib": round(before / 1024, 1),
        "rss_growth_mib": round((peak - before) / 1024, 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = args.database or f"leadwire_bench_portal_{uuid.uuid4().hex[:8]}"
    database_url = db.with_database(server, name)
    settings = Settings(
        AMQP_URL=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        DATABASE_URL=database_url,
        LEADWIRE_NAMESPACE=f"bench-portal-{uuid.uuid4().hex[:8]}",
    )
    await db.ensure_database(database_url)
    try:
        await db.migrate(database_url)
        await apply_catalog_text(database_url, portal_catalog())
        async with db.connection(database_url) as conn:
            filled = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM leads)")
        fill_seconds = None
        if not filled:  # a kept database (--database) is filled once
            print(f"writing {args.leads:,} leads ({args.client_leads:,} to acme) ...", flush=True)
            fill_seconds = round(await fill(database_url, args.leads, args.client_leads), 1)
            await seed_user(database_url, "acme", "bench@acme.example", is_admin=True)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(build_portal_auth(settings, config=fast_config()).running())
            app = create_app(settings)
            origin = await stack.enter_async_context(serve(app))
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=origin, timeout=120))
            await sign_in(client, origin, "bench@acme.example")
            # acme's rows keyed by its list columns (portal_leads' sort keys) as the portal's first
            # field sort would, here on a connection without the pool's 10 s statement limit (on a
            # busy machine re-keying 100,000 rows takes longer: that first sort fails until it
            # fits — docs/benchmark.md); then the tables vacuumed and analysed as autovacuum
            # leaves a live database: planner statistics for the rows just written, and a
            # visibility map that lets counts run as index-only scans.
            portal = app.state.portal
            columns = rules.sort_columns(portal.lead_types_of("acme").values())
            async with db.connection(database_url) as conn:
                await queries.ensure_sort_columns(conn, "acme", columns, portal.runtime.catalog_cache.version)
                for table in ("leads", "deliveries", "portal_leads"):
                    await conn.execute(f"VACUUM ANALYZE {table}")
            today = datetime.now(UTC).date()
            span = f"from={(today - timedelta(days=61)).isoformat()}&to={today.isoformat()}"
            pages = {
                "dashboard": "/portal/dashboard",
                "lead list, first page (default: last 30 days)": "/portal/leads",
                "lead list, first page (60 days, all 100k)": f"/portal/leads?{span}",
                "search, one lead (email)": f"/portal/leads?{span}&q=person54321%40leads.example",
                "search, one lead (phone as typed)": f"/portal/leads?{span}&q=(415)%20005-4321",
                "search, 1,111 leads match (Surname12…)": f"/portal/leads?{span}&q=Surname12",
                "sort by a lead field (monthly_bill, numeric)": f"/portal/leads?{span}&sort=f.monthly_bill&dir=desc",
                "sort by a lead field (last_name, text)": f"/portal/leads?{span}&sort=f.last_name&dir=asc",
            }
            load_before = os.getloadavg()[0]
            timings = {name: await time_page(client, url, args.requests) for name, url in pages.items()}
            exports = {
                "tenth": await export(client, f"/portal/leads/export.csv?{span}&q=Surname1"),
                "all": await export(client, f"/portal/leads/export.csv?{span}"),
            }
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "leads": args.leads,
            "client_leads": args.client_leads,
            "fill_seconds": fill_seconds,
            # The machine's 1-minute load average when the timing began and when it ended: the
            # figures are only comparable at a similar load (the machine is shared).
            "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "pages": timings,
            "exports": exports,
        }
    finally:
        if not args.database:
            await db.drop_database(database_url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--client-leads", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--database", help="a database to fill once and keep (default: a new one, dropped)")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
