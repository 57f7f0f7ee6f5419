"""Liveness for containers: each service process touches a heartbeat file while it can reach
both RabbitMQ and PostgreSQL; `python -m shared.health` (the Docker HEALTHCHECK) passes while the
file is fresh. A file rather than an HTTP port, so replicas scaled with compose never collide.

Each process also reports, on the same beat, the catalog version it has loaded (`report`, table
`process_heartbeats`): the admin console shows every process, those whose catalog is behind and
those that stopped beating.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path

import asyncpg
from faststream.rabbit import RabbitBroker

HEALTH_FILE = Path(os.environ.get("LEADWIRE_HEALTH_FILE", "/tmp/leadwire-health"))
INTERVAL = 5.0
STALE_AFTER = 30.0


async def beat(broker: RabbitBroker, pool: asyncpg.Pool) -> None:
    """One heartbeat (run every INTERVAL by the runtime): touch the file while both answer. A
    failure leaves the file alone, and the loop logs it."""
    broker_ok = await broker.ping(timeout=2)
    db_ok = await pool.fetchval("SELECT true", timeout=2)
    if broker_ok and db_ok:
        HEALTH_FILE.touch()


# Rows of processes not seen for this long are dropped by the next report of any process.
FORGET_AFTER_HOURS = 24


async def report(pool: asyncpg.Pool, process_id: str, service: str, catalog_version: int, started_at: datetime) -> None:
    """This process is alive with `catalog_version` loaded (run every INTERVAL by the runtime)."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO process_heartbeats (process_id, service, catalog_version, started_at, seen_at)"
            " VALUES ($1, $2, $3, $4, now()) ON CONFLICT (process_id) DO UPDATE"
            " SET catalog_version = excluded.catalog_version, seen_at = excluded.seen_at",
            process_id,
            service,
            catalog_version,
            started_at,
            timeout=2,
        )
        await conn.execute(
            "DELETE FROM process_heartbeats WHERE seen_at < now() - make_interval(hours => $1)",
            FORGET_AFTER_HOURS,
            timeout=2,
        )


async def forget(pool: asyncpg.Pool, process_id: str) -> None:
    """A clean stop: the process leaves the list instead of showing as stale."""
    await pool.execute("DELETE FROM process_heartbeats WHERE process_id = $1", process_id, timeout=2)


def main() -> int:
    try:
        age = time.time() - HEALTH_FILE.stat().st_mtime
    except FileNotFoundError:
        print("unhealthy: no heartbeat yet")
        return 1
    if age > STALE_AFTER:
        print(f"unhealthy: last heartbeat {age:.0f}s ago")
        return 1
    print(f"healthy: heartbeat {age:.0f}s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
