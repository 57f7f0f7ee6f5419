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


PREFLIGHT_SECONDS = 30
# Connections one test may hold at once (its services' pools, the test's own): below this many free
# slots the run would fail with "too many clients" somewhere in the middle, so it stops at once.
PREFLIGHT_FREE_CONNECTIONS = 40


async def _services_problem(amqp_url: str, database_url: str) -> str | None:
    """Why RabbitMQ or PostgreSQL cannot serve the integration tests, or None when both can.

    A port that accepts connections is not enough: a broker whose quorum-queue subsystem is wedged
    (seen after restarts with hundreds of quorum queues) accepts AMQP and then never answers a
    declare, so every test would hang to its timeout and the run would take hours to say so.
    """
    import aio_pika

    try:
        server = await asyncio.wait_for(asyncpg.connect(db.with_database(database_url, "postgres")), PREFLIGHT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - the reason is the message
        return f"PostgreSQL at {database_url}: {exc!r}"
    try:
        limit = int(await server.fetchval("SHOW max_connections"))
        reserved = int(await server.fetchval("SHOW superuser_reserved_connections"))
        used = int(await server.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
        if limit - reserved - used < PREFLIGHT_FREE_CONNECTIONS:
            return (
                f"PostgreSQL has {limit - reserved - used} free connections (max_connections {limit}, "
                f"{used} in use); the tests need {PREFLIGHT_FREE_CONNECTIONS}"
            )
    finally:
        await server.close()
    name = f"leadwire_preflight_{uuid.uuid4().hex[:10]}"

    async def declare_quorum_queue() -> None:
        connection = await aio_pika.connect(amqp_url, timeout=PREFLIGHT_SECONDS)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
            await channel.queue_delete(name)

    try:
        await asyncio.wait_for(declare_quorum_queue(), PREFLIGHT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - the reason is the message
        return f"RabbitMQ at {amqp_url} did not declare and delete a quorum queue within {PREFLIGHT_SECONDS} s: {exc!r}"
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    """With LEADWIRE_REQUIRE_SERVICES=1, stop the run at once when a service cannot serve it."""
    amqp_url, database_url = os.environ.get("AMQP_URL"), os.environ.get("DATABASE_URL")
    if not REQUIRE or not amqp_url or not database_url:
        return
    problem = asyncio.run(_services_problem(amqp_url, database_url))
    if problem is not None:
        pytest.exit(f"integration services not usable: {problem}", returncode=3)


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
