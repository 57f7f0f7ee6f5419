"""Browser tests: one chromium for the whole session, a fresh context (cookies, storage) per test,
and per test its own database, broker namespace and SMTP server.

Playwright's async objects belong to the event loop that made them, so everything here — the
browser, the per-test services, the tests — runs in pytest-asyncio's session loop: tests use
`pytestmark = pytest.mark.asyncio(loop_scope="session")` and the fixtures below. (The suite's
function-loop fixtures `database_url` and `settings` cannot be mixed in; `web_settings` is their
session-loop twin.)
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio

from harness.smtp import SmtpSink, free_port
from shared import db
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import REQUIRE
from tests.web_support import chromium_problem, launch_chromium


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[object]:
    problem = chromium_problem()
    if problem is not None:
        if REQUIRE:
            pytest.fail(f"browser tests: {problem} — LEADWIRE_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
        pytest.skip(f"browser tests: {problem}")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser) -> AsyncIterator[object]:
    """A page in a fresh browser context (no cookies from other tests)."""
    context = await browser.new_context()
    context.set_default_timeout(10_000)
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def web_settings(database_server_url: str, template_database: str, amqp_url: str) -> AsyncIterator[Settings]:
    """Settings for one test: its own database (from the migrated template) and namespace."""
    name = f"leadwire_w_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(db.with_database(database_server_url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    namespace = f"w{uuid.uuid4().hex[:10]}"
    settings = Settings.model_validate(
        {
            "AMQP_URL": amqp_url,
            "DATABASE_URL": db.with_database(database_server_url, name),
            "LEADWIRE_NAMESPACE": namespace,
            "LEADWIRE_POLL_INTERVAL": 0.1,
            "LEADWIRE_RETRY_DELAYS": (0.2, 0.5),
            "LEADWIRE_DB_POOL_MAX": 5,
        }
    )
    try:
        yield settings
    finally:
        await Topology(namespace, settings.retry_delays).delete(amqp_url)
        await db.drop_database(settings.database_url)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink(free_port())
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def mail_settings(web_settings: Settings, smtp: SmtpSink) -> Settings:
    return web_settings.model_copy(update={"smtp_port": smtp.port, "smtp_from": "leadwire@mail.example.com"})
