"""Fixtures for integration tests against real RabbitMQ and PostgreSQL.

Where the services come from, in order: AMQP_URL / DATABASE_URL when set; testcontainers when a
Docker engine answers; otherwise the integration tests skip — unless LEADWIRE_REQUIRE_SERVICES=1
(set by .ci/run), where a missing service fails the run.

Isolation: every test gets its own database (a copy of a template migrated once per session) and
its own broker namespace (exchange and queue names), so tests pass in any order.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from shared import db
from shared.settings import Settings
from shared.topology import Topology

REQUIRE = os.environ.get("LEADWIRE_REQUIRE_SERVICES") == "1"


def _docker_ok() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means no usable Docker engine
        return False


def _missing(what: str) -> None:
    message = f"integration: {what} unavailable (set it, or provide a Docker engine for testcontainers)"
    if REQUIRE:
        pytest.fail(message + " — LEADWIRE_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
    pytest.skip(message)


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    if url := os.environ.get("AMQP_URL"):
        if not _reachable(url, 5672):
            _missing(f"RabbitMQ at {url}")
        yield url
        return
    if not _docker_ok():
        _missing("AMQP_URL")
    from testcontainers.community.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:4.1-management") as c:
        yield f"amqp://{c.username}:{c.password}@{c.get_container_host_ip()}:{c.get_exposed_port(c.port)}/"


@pytest.fixture(scope="session")
def database_server_url() -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        if not _reachable(url, 5432):
            _missing(f"PostgreSQL at {url}")
        yield url
        return
    if not _docker_ok():
        _missing("DATABASE_URL")
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as pg:
        yield pg.get_connection_url()


@pytest.fixture(scope="session")
def template_database(database_server_url: str) -> Iterator[str]:
    """A database with every migration applied, copied for each test."""
    name = f"leadwire_tpl_{uuid.uuid4().hex[:10]}"
    url = db.with_database(database_server_url, name)

    async def create() -> None:
        await db.ensure_database(url)
        await db.migrate(url)

    asyncio.run(create())
    yield name
    asyncio.run(db.drop_database(url))


@pytest_asyncio.fixture
async def database_url(database_server_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"leadwire_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(db.with_database(database_server_url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    url = db.with_database(database_server_url, name)
    yield url
    await db.drop_database(url)


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def settings(amqp_url: str, database_url: str, namespace: str) -> AsyncIterator[Settings]:
    s = Settings(
        AMQP_URL=amqp_url,
        DATABASE_URL=database_url,
        LEADWIRE_NAMESPACE=namespace,
        LEADWIRE_POLL_INTERVAL=0.1,
        LEADWIRE_RETRY_DELAYS=(0.2, 0.5),
        LEADWIRE_DB_POOL_MAX=10,
    )
    yield s
    await Topology(namespace, s.retry_delays).delete(amqp_url)


@pytest.fixture
def buyer():
    """A real HTTP buyer endpoint on 127.0.0.1 that records every request (tests/support.py)."""
    from tests.support import start_buyer

    endpoint, stop = start_buyer()
    yield endpoint
    stop()


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(database_url)
    yield connection
    await connection.close()
