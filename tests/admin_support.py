"""Helpers for the admin console's tests: a running console (uvicorn on 127.0.0.1), staff users
and API keys seeded through the console's own use cases, and a signed-in browser page."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import httpx

from harness.catalog import apply_catalog_text
from services.admin import usecases
from services.admin.config import AdminConfig
from services.admin.web import create_app
from shared import db
from shared.process import Standalone
from shared.service import Runtime
from shared.settings import Settings
from tests.support import wait_for
from tests.web_support import serve

PASSWORD = "staff password 1"


def fast_config(**overrides: Any) -> AdminConfig:
    """Cheap argon2id (still argon2id) and a quick lock, so tests spend their time on behaviour."""
    values: dict[str, Any] = dict(
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        argon2_parallelism=1,
        login_free_attempts=2,
        login_base_delay_seconds=30,
        login_max_delay_seconds=60,
        login_lock_after=4,
        login_lock_minutes=15,
        api_key_touch_seconds=0,
    )
    values.update(overrides)
    return AdminConfig(**values)


def deps_for(pool: asyncpg.Pool | None, settings: Settings, config: AdminConfig) -> usecases.Deps:
    return usecases.Deps(
        Standalone(pool, settings=settings),
        config,
        usecases.Deps.passwords_for(config),
        lambda: datetime.now(UTC),
    )


@dataclass
class AdminSite:
    url: str  # e.g. http://127.0.0.1:41234/admin
    origin: str
    settings: Settings
    config: AdminConfig
    app: Any
    runtimes: dict[str, Runtime] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    @asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection]:
        async with db.connection(self.settings.database_url) as conn:
            yield conn

    async def staff(self, email: str, role: str, password: str = PASSWORD) -> uuid.UUID:
        async with self.db() as conn:
            return await usecases.create_staff(
                conn,
                deps_for(None, self.settings, self.config),
                "cli:test",
                email=email,
                name=email.split("@")[0].title(),
                role=role,
                password=password,
            )

    async def key(self, email: str, role: str | None = None) -> str:
        """An API key of staff user `email` (made as that user would make it)."""
        from services.admin import store
        from services.admin.rules import Staff

        pool = await db.create_pool(self.settings.database_url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                row = await store.staff_by_email(conn, email.lower())
            assert row is not None
            who = Staff(str(row["id"]), row["email"], row["name"], row["role"], "console")
            _, key = await usecases.create_key(
                deps_for(pool, self.settings, self.config), who, name="test", role=role or row["role"]
            )
        finally:
            await pool.close()
        return key

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.origin, headers=headers, follow_redirects=False, timeout=30)

    async def login(self, page: Any, email: str, password: str = PASSWORD) -> None:
        await page.goto(f"{self.url}/login")
        await page.fill("#email", email)
        await page.fill("#password", password)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{self.url}/")

    async def apply_catalog(self, text: str) -> int | None:
        """Apply a catalog and wait until the console (and any service running) has loaded it."""
        version = await apply_catalog_text(self.settings.database_url, text)
        if version is not None:
            for runtime in self.runtimes.values():
                await wait_for(partial(_loaded, runtime, version))
        return version


def _loaded(runtime: Runtime, version: int) -> bool:
    return runtime.catalog_cache is not None and runtime.catalog_cache.version >= version


@asynccontextmanager
async def running_console(
    settings: Settings, *, config: AdminConfig | None = None, services: tuple[str, ...] = ()
) -> AsyncIterator[AdminSite]:
    """The console served for real, with the named services (e.g. "returns") running in this
    process beside it."""
    config = config or fast_config()
    async with AsyncExitStack() as stack:
        runtimes: dict[str, Runtime] = {}
        for name in services:
            module = __import__(f"services.{name}.main", fromlist=["build"])
            runtime = module.build(settings)
            await stack.enter_async_context(runtime.running())
            runtimes[name] = runtime
        probe = AdminConfig(base_url="http://127.0.0.1:1/admin")  # the path; the port is known once served
        app = create_app(settings, config=config.model_copy(update={"base_url": probe.base_url}))
        origin = await stack.enter_async_context(serve(app))
        app.state.console.config = config.model_copy(update={"base_url": f"{origin}/admin"})
        runtimes["admin"] = app.state.runtime
        yield AdminSite(f"{origin}/admin", origin, settings, config, app, runtimes)
