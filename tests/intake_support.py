"""Helpers for the intake's tests: a catalog with two sources and two clients, the router and
delivery running for real (each with its own Runtime in this process, on the test's broker
namespace and database), and the intake app served by uvicorn on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import yaml
from fastapi import FastAPI

from harness.buyer import FakeBuyer
from harness.catalog import apply_catalog_text
from services.intake.web import create_app
from shared import api_keys, db
from shared.service import Runtime
from shared.settings import Settings
from tests.web_support import serve


def intake_catalog(buyer: FakeBuyer, **overrides: Any) -> str:
    """solar (sold to acme, else bolt) and auto (no delivery account: always unsold); sources web
    and partner; acme and bolt allow confirmed prices."""
    account = {
        "timeout_seconds": 5,
        "retry": {"count": 1, "delay_seconds": 1},
    }
    doc: dict[str, Any] = {
        "options": {
            "route_duplicate_leads": False,
            "allow_confirm_price": True,
            "default_return_pct_delivery_accounts": 100,
            "default_return_pct_orders": 100,
        },
        "lead_types": [
            {
                "id": "solar",
                "name": "Solar",
                "duplicate_fields": ["phone"],
                "return_reasons": ["wrong_number", "out_of_area"],
                "fields": [
                    {"name": "first_name", "type": "text", "required": True},
                    {"name": "phone", "type": "phone", "required": True},
                    {"name": "state", "type": "us_state", "required": True},
                    {"name": "email", "type": "email"},
                    {"name": "roof", "type": "choice", "choices": ["shingle", "tile", "metal"]},
                ],
            },
            {
                "id": "auto",
                "name": "Auto insurance",
                "fields": [
                    {"name": "first_name", "type": "text", "required": True},
                    {"name": "phone", "type": "phone", "required": True},
                ],
            },
        ],
        "sources": [{"id": "web", "name": "Web"}, {"id": "partner", "name": "Partner"}],
        "clients": [
            {"id": "acme", "name": "Acme", "external_ref": "ACME"},
            {"id": "bolt", "name": "Bolt", "external_ref": "BOLT"},
        ],
        "delivery_accounts": [
            {
                "id": "acme-post",
                "client": "acme",
                "lead_type": "solar",
                "price": "25.00",
                "priority": 0,
                "criteria": [{"field": "state", "op": "not_equals", "value": "NV"}],
                "delivery": {"method": "http", "url": buyer.url("/acme"), **account},
            },
            {
                "id": "bolt-post",
                "client": "bolt",
                "lead_type": "solar",
                "price": "20.00",
                "priority": 1,
                "delivery": {"method": "http", "url": buyer.url("/bolt"), **account},
            },
        ],
    }
    doc.update(overrides)
    return yaml.safe_dump(doc)


def solar(phone: str = "415-555-0100", **fields: Any) -> dict[str, Any]:
    return {"first_name": "Ada", "phone": phone, "state": "CA", **fields}


@dataclass
class IntakeSite:
    url: str
    settings: Settings
    app: FastAPI
    runtimes: dict[str, Runtime]
    web_key: str  # a source key of source "web"
    partner_key: str  # a source key of source "partner"

    def client(self, key: str | None = None, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers={**auth, **(headers or {})}, timeout=30)

    async def source_key(self, source: str, **kwargs: Any) -> str:
        async with db.connection(self.settings.database_url) as conn:
            return (await api_keys.create_source_key(conn, source, **kwargs)).token

    async def buyer_key(self, client: str, rate_per_second: int = 20) -> str:
        async with db.connection(self.settings.database_url) as conn:
            return (
                await api_keys.create_buyer_key(conn, client, created_by="test", rate_per_second=rate_per_second)
            ).token


@asynccontextmanager
async def running_intake(
    settings: Settings,
    buyer: FakeBuyer,
    *,
    catalog: str | None = None,
    services: tuple[str, ...] = ("router", "delivery"),
    restricted: dict[str, Settings] | None = None,
    intake: Settings | None = None,
) -> AsyncIterator[IntakeSite]:
    """The intake app with `services` running beside it on `settings`; `restricted` runs more
    services, each on settings of its own (another broker user); `intake`: the intake's own
    settings (another broker user), else `settings`."""
    from services.delivery.main import build as build_delivery
    from services.returns.main import build as build_returns
    from services.router.main import build as build_router

    await apply_catalog_text(settings.database_url, catalog or intake_catalog(buyer))
    # Small pools: the machine's one PostgreSQL serves every test run at once.
    settings = settings.model_copy(update={"db_pool_max": 4})
    builders = {"router": build_router, "delivery": build_delivery, "returns": build_returns}
    chosen = [(name, settings) for name in services] + list((restricted or {}).items())
    async with AsyncExitStack() as stack:
        started = await asyncio.gather(
            *(stack.enter_async_context(builders[name](own).running()) for name, own in chosen)
        )
        runtimes = dict(zip([name for name, _ in chosen], started, strict=True))
        app = create_app(intake.model_copy(update={"db_pool_max": 4}) if intake else settings)
        url = await stack.enter_async_context(serve(app))
        runtimes["intake"] = app.state.runtime
        async with db.connection(settings.database_url) as conn:
            web = await api_keys.create_source_key(conn, "web", rate_per_second=1000)
            partner = await api_keys.create_source_key(conn, "partner", rate_per_second=1000)
        yield IntakeSite(url, settings, app, runtimes, web.token, partner.token)
