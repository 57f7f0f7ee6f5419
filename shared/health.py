"""Liveness for containers: each service process touches a heartbeat file while it can reach
both RabbitMQ and PostgreSQL; `python -m shared.health` (the Docker HEALTHCHECK) passes while the
file is fresh. A file rather than an HTTP port, so replicas scaled with compose never collide.
"""

from __future__ import annotations

import os
import sys
import time
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
