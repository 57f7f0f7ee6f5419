"""Graceful shutdown: SIGTERM to a delivery process in the middle of a slow post finishes that post
within the grace period, records it, and nothing is lost or posted twice."""

from __future__ import annotations

import asyncio
import signal

import pytest

from harness.broker import consumer_count
from harness.processes import Processes, service_env
from services.router.main import build as build_router
from shared.service import Runtime
from tests.support import apply_yaml, catalog_yaml, lead_body, publish_raw, start_buyer, wait_for

pytestmark = pytest.mark.integration


async def test_sigterm_mid_delivery_finishes_the_post_and_loses_nothing(settings, conn):
    buyer, stop_buyer = start_buyer()
    # Slow enough that SIGTERM surely lands mid-post, well inside the 15 s grace period.
    buyer.on("/acme", delay=3.0)
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    async with Runtime("setup", settings).running():
        pass  # the topology exists before the delivery process consumes
    delivery = Processes(
        service_env(
            settings, LEADWIRE_DB_POOL_MAX="4", LEADWIRE_HEALTH_FILE=f"/tmp/leadwire-{settings.namespace}-health"
        )
    ).service("delivery")
    try:
        await wait_for(lambda: _consuming(settings), timeout=60)
        async with build_router(settings).running():
            await publish_raw(settings, lead_body(), message_id="graceful-1")
            await wait_for(lambda: len(buyer.received) == 1, timeout=30)
            delivery.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(delivery.wait, 30)
            # The process waited for the post: the delivery was recorded before it exited.
            status = await conn.fetchval("SELECT status FROM deliveries")
            assert status == "succeeded"
            assert code == 0
            # The result reaches the router even if the exiting process left it in its outbox.
            await wait_for(lambda: conn.fetchval("SELECT status = 'sold' FROM leads"), timeout=20)
    finally:
        if delivery.poll() is None:
            delivery.kill()
            delivery.wait()
        stop_buyer()
    assert buyer.paths() == ["/acme"]  # posted once: finished, not redelivered
    assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


async def _consuming(settings) -> bool:
    return await consumer_count(settings.amqp_url, f"{settings.namespace}.delivery.requests") == 1
