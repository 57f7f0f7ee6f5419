"""Helpers for portal_auth tests: a clock tests move, a portal catalog, users seeded straight into
the database, sold leads, and a running portal_auth with a client on a broker of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import yaml
from faststream.rabbit import RabbitBroker

from services.portal_auth import usecases
from services.portal_auth.client import PortalAuthClient
from services.portal_auth.config import PortalAuthConfig
from services.portal_auth.credentials import Passwords
from services.portal_auth.main import build
from shared import db
from shared.process import Standalone
from shared.rpc import RequestReply
from shared.service import Runtime
from shared.settings import Settings
from shared.topology import Topology
from tests.support import apply_yaml, wait_for

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


class Clock:
    """What portal_auth thinks the time is; tests move it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def fast_config(**overrides: Any) -> PortalAuthConfig:
    """Cheap argon2id (still argon2id) so tests spend their time on behaviour, not hashing."""
    values: dict[str, Any] = dict(
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        argon2_parallelism=1,
        login_free_attempts=2,
        login_base_delay_seconds=1,
        login_max_delay_seconds=4,
        login_lock_after=4,
        login_lock_minutes=15,
    )
    values.update(overrides)
    return PortalAuthConfig(**values)


def portal_catalog(*, acme_active: bool = True, lock_inactive: bool = True, link_days: int = 7) -> str:
    return yaml.safe_dump(
        {
            "options": {
                "disable_portal_for_inactive_clients": lock_inactive,
                "expire_portal_email_link_days": link_days,
            },
            "clients": [
                {"id": "acme", "name": "Acme", "active": acme_active},
                {"id": "bolt", "name": "Bolt"},
            ],
        }
    )


async def apply_catalog_and_wait(settings: Settings, runtime: Runtime, text: str) -> None:
    """Apply a catalog and wait until the running service has loaded it (NOTIFY or poll)."""
    version = await apply_yaml(settings.database_url, text)
    if version is not None:
        await wait_for(lambda: runtime.catalog_cache is not None and runtime.catalog_cache.version >= version)


async def seed_user(
    database_url: str,
    client_id: str,
    email: str,
    *,
    password: str | None = PASSWORD,
    is_admin: bool = False,
    view_downline: bool = False,
    parent: uuid.UUID | None = None,
    enabled: bool = True,
    config: PortalAuthConfig | None = None,
) -> uuid.UUID:
    """A user written the way the CLI does it (first user of a client: admin)."""
    config = config or fast_config()
    passwords = Passwords(
        time_cost=config.argon2_time_cost, memory_cost=config.argon2_memory_kib, parallelism=config.argon2_parallelism
    )
    deps = usecases.Deps(
        # add_user works on the connection it is given: no pool.
        Standalone(None),
        config=config,
        passwords=passwords,
        clock=lambda: T0,
    )
    conn = await db.connect(database_url)
    try:
        async with conn.transaction():
            user = await usecases.add_user(
                conn,
                deps,
                client_id=client_id,
                email=email,
                name=email.split("@")[0],
                password_hash=await passwords.hash(password) if password else None,
                is_admin=is_admin,
                view_downline=view_downline,
                enabled=enabled,
                parent_user_id=parent,
                now=T0,
            )
    finally:
        await conn.close()
    return user["id"]


async def sell_lead(conn: asyncpg.Connection, client_id: str) -> uuid.UUID:
    """A lead delivered to `client_id`, as router and delivery would have left it."""
    lead_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, status)"
        " VALUES ($1, 'web', $2, 'solar', '{}'::jsonb, 'sold')",
        lead_id,
        str(lead_id),
    )
    await conn.execute(
        "INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status)"
        " VALUES ($1, $2, $3, $4, 10, 'succeeded')",
        uuid.uuid4(),
        lead_id,
        client_id,
        f"{client_id}-email",
    )
    return lead_id


@dataclass
class Portal:
    runtime: Runtime
    client: PortalAuthClient
    broker: RabbitBroker
    clock: Clock
    settings: Settings

    async def raw_request(
        self, body: Any, *, routing_key: str = "portal_auth.login", timeout: float = 5.0, **kwargs: Any
    ) -> Any:
        """A request as any AMQP client could send it, bypassing PortalAuthClient."""
        reply = await self.broker.request(
            body, exchange=self.runtime.topology.events, routing_key=routing_key, timeout=timeout, **kwargs
        )
        return await reply.decode()


@asynccontextmanager
async def running_portal(
    settings: Settings,
    *,
    catalog: str | None = None,
    clock: Clock | None = None,
    config: PortalAuthConfig | None = None,
    timeout: float = 5.0,
) -> AsyncIterator[Portal]:
    clock = clock or Clock()
    if catalog is not None:
        await apply_yaml(settings.database_url, catalog)
    runtime = build(settings, config=config or fast_config(), clock=clock)
    async with runtime.running():
        broker = RabbitBroker(settings.amqp_url)
        await broker.connect()
        rpc = RequestReply(settings.amqp_url, name="tests", namespace=settings.namespace)
        await rpc.start()
        try:
            client = PortalAuthClient(rpc, Topology(settings.namespace, settings.retry_delays), timeout=timeout)
            yield Portal(runtime, client, broker, clock, settings)
        finally:
            await rpc.close()
            await broker.stop()
