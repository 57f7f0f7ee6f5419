"""Helpers for the Client Portal's tests: its catalog, leads sold straight into the database (as
router and delivery leave them), users, assignments, and a running portal with the real services
behind it (portal_auth, notifier; router and delivery when a test sells through them)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import asyncpg
import yaml

from harness.catalog import apply_catalog_text
from harness.smtp import SmtpSink
from services.portal.web import create_app
from shared import db
from shared.service import Runtime
from shared.settings import Settings
from tests.portal_auth_support import PASSWORD, fast_config, seed_user
from tests.support import wait_for
from tests.web_support import serve

LA = "America/Los_Angeles"


def portal_catalog(
    buyer_url: str = "http://127.0.0.1:9/buyer", *, acme_active: bool = True, extra: dict[str, Any] | None = None
) -> str:
    """Two clients of two lead types; solar has display metadata (labels, list columns, contact)."""
    doc: dict[str, Any] = {
        "options": {"disable_portal_for_inactive_clients": True, "expire_portal_email_link_days": 7},
        "lead_types": [
            {
                "id": "solar",
                "name": "Residential solar",
                "duplicate_fields": ["phone"],
                "return_reasons": ["wrong_number", "out_of_area"],
                "fields": [
                    {"name": "first_name", "type": "text", "required": True, "list_column": True},
                    {"name": "last_name", "type": "text", "list_column": True},
                    {"name": "email", "type": "email", "label": "Email address"},
                    {"name": "phone", "type": "phone", "required": True, "list_column": True},
                    {"name": "state", "type": "us_state", "required": True, "list_column": True},
                    {"name": "zip", "type": "zip", "label": "ZIP code"},
                    {"name": "monthly_bill", "type": "money", "list_column": True},
                ],
            },
            {
                "id": "auto",
                "name": "Auto insurance",
                "duplicate_fields": ["phone"],
                "fields": [
                    {"name": "first_name", "type": "text", "required": True},
                    {"name": "phone", "type": "phone", "required": True},
                    {"name": "state", "type": "us_state", "required": True},
                    {"name": "vehicles", "type": "number"},
                ],
            },
        ],
        "sources": [{"id": "web", "name": "Web"}],
        "clients": [
            {"id": "acme", "name": "Acme Solar", "time_zone": LA, "active": acme_active},
            {"id": "bolt", "name": "Bolt Energy", "time_zone": "America/New_York"},
        ],
        "delivery_accounts": [
            _account("acme-solar", "acme", "solar", "25.00", buyer_url + "/acme", 0),
            _account("acme-auto", "acme", "auto", "12.50", buyer_url + "/acme", 0),
            _account("bolt-solar", "bolt", "solar", "20.00", buyer_url + "/bolt", 1),
        ],
    }
    doc.update(extra or {})
    return yaml.safe_dump(doc)


def _account(account_id: str, client: str, lead_type: str, price: str, url: str, priority: int) -> dict[str, Any]:
    return {
        "id": account_id,
        "client": client,
        "lead_type": lead_type,
        "price": price,
        "priority": priority,
        "delivery": {"method": "http", "url": url, "timeout_seconds": 5, "retry": {"count": 1, "delay_seconds": 1}},
    }


async def sell(
    conn: asyncpg.Connection,
    client_id: str,
    fields: dict[str, Any],
    *,
    lead_type: str = "solar",
    completed_at: datetime | None = None,
    price: str | Decimal = "25.00",
    status: str = "succeeded",
) -> uuid.UUID:
    """A lead delivered to `client_id` at `completed_at` (default: now), as router and delivery
    leave it: the lead row and its delivery row."""
    lead_id = uuid.uuid4()
    completed_at = completed_at or datetime.now(UTC)
    await conn.execute(
        "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, status, received_at, decided_at)"
        " VALUES ($1, 'web', $2, $3, $4, 'sold', $5, $5)",
        lead_id,
        str(lead_id),
        lead_type,
        fields,
        completed_at - timedelta(seconds=1),
    )
    await conn.execute(
        "INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status, attempts,"
        " created_at, completed_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)",
        uuid.uuid4(),
        lead_id,
        client_id,
        f"{client_id}-{lead_type}",
        Decimal(str(price)),
        status,
        completed_at - timedelta(seconds=1),
        completed_at if status == "succeeded" else None,
    )
    return lead_id


async def assign(conn: asyncpg.Connection, client_id: str, lead_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO lead_assignments (client_id, lead_id, user_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (client_id, lead_id) DO UPDATE SET user_id = excluded.user_id",
        client_id,
        lead_id,
        user_id,
    )


def person(n: int, **overrides: Any) -> dict[str, Any]:
    """Field values of a solar lead, as the router stores them (normalised)."""
    values = {
        "first_name": f"Person{n}",
        "last_name": f"Surname{n}",
        "email": f"person{n}@leads.example",
        "phone": f"415555{n:04d}",
        "state": "CA",
        "zip": "94110",
        "monthly_bill": f"{100 + n}.00",
    }
    values.update(overrides)
    return values


@dataclass
class PortalSite:
    """A running portal (uvicorn on 127.0.0.1) with portal_auth and notifier behind it."""

    url: str  # the portal's base URL, e.g. http://127.0.0.1:41234/portal
    origin: str
    settings: Settings
    smtp: SmtpSink
    app: Any = None
    runtimes: dict[str, Runtime] = field(default_factory=dict)

    @property
    def auth(self) -> Any:
        """The portal's own PortalAuthClient (for ops the part-1 pages do not offer yet)."""
        return self.app.state.portal.auth_client

    async def user(self, client_id: str, email: str, **flags: Any) -> uuid.UUID:
        return await seed_user(self.settings.database_url, client_id, email, **flags)

    @asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection]:
        async with db.connection(self.settings.database_url) as conn:
            yield conn

    async def apply_catalog(self, text: str) -> None:
        """Apply a catalog and wait until every running service has loaded it."""
        version = await apply_catalog_text(self.settings.database_url, text)
        if version is not None:
            for runtime in self.runtimes.values():
                await wait_for(partial(_loaded, runtime, version))

    async def login(self, page: Any, email: str, password: str = PASSWORD) -> None:
        await page.goto(f"{self.url}/login")
        await page.fill("#email", email)
        await page.fill("#password", password)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{self.url}/dashboard")

    async def emails(self, count: int, timeout: float = 15.0) -> None:
        await wait_for(lambda: len(self.smtp.received) >= count, timeout=timeout)


def _loaded(runtime: Runtime, version: int) -> bool:
    return runtime.catalog_cache is not None and runtime.catalog_cache.version >= version


@asynccontextmanager
async def running_site(
    settings: Settings,
    smtp: SmtpSink,
    *,
    catalog: str | None = None,
    services: tuple[str, ...] = ("portal_auth", "notifier"),
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[PortalSite]:
    """portal_auth, notifier (and router/delivery if asked) in this process, each with its own
    Runtime, and the portal app served by uvicorn on a free port."""
    from services.delivery.main import build as build_delivery
    from services.notifier.main import build as build_notifier
    from services.portal_auth.main import build as build_portal_auth
    from services.returns.main import build as build_returns
    from services.router.main import build as build_router

    await apply_catalog_text(settings.database_url, catalog or portal_catalog())
    builders = {
        "portal_auth": lambda: build_portal_auth(settings, config=fast_config()),
        "notifier": lambda: build_notifier(settings),
        "router": lambda: build_router(settings),
        "delivery": lambda: build_delivery(settings),
        "returns": lambda: build_returns(settings),
    }
    async with AsyncExitStack() as stack:
        runtimes: dict[str, Runtime] = {}
        started = await asyncio.gather(*(stack.enter_async_context(builders[name]().running()) for name in services))
        runtimes.update(zip(services, started, strict=True))
        app = create_app(settings, clock=clock)
        origin = await stack.enter_async_context(serve(app))
        runtimes["portal"] = app.state.runtime
        yield PortalSite(f"{origin}/portal", origin, settings, smtp, app, runtimes)
