"""PostgreSQL plumbing: the asyncpg pool and ordered SQL migrations.

Migrations are the files `shared/migrations/NNNN_name.sql`, applied in name order, each in its
own transaction, under a session advisory lock so that replicas starting together apply each
file exactly once (the others wait on the lock, then find nothing left to do).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# Arbitrary but fixed: every Leadwire process contends on this one key.
MIGRATION_LOCK_KEY = 0x1EAD_317E


# Every plan of ours is an interactive one (the portal's 100,000-row sorts included,
# bench/portal.py), and neither of these pays for it: JIT compilation costs ~100 ms the first time a
# plan crosses jit_above_cost, and parallel workers, on a few busy cores, made the portal's searches
# 5x slower (a 27 ms search took 170 ms with two workers started for it).
SESSION_SETTINGS = {"jit": "off", "max_parallel_workers_per_gather": "0"}


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Without these codecs jsonb comes back as str and would be re-published as text/plain.
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's reset query (one round trip per acquire, ~8 per lead). Safe
    because pooled connections keep no session state: locks are transaction-scoped
    (pg_advisory_xact_lock), nothing LISTENs or SETs on them; asyncpg still rolls back an open
    transaction before this runs."""


async def create_pool(database_url: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        # Bound every statement so a handler never outlives the broker's graceful timeout.
        command_timeout=10,
        server_settings=SESSION_SETTINGS,
    )


async def connect(database_url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(database_url, server_settings=SESSION_SETTINGS)
    await _init_connection(conn)
    return conn


@asynccontextmanager
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection for a short job (a CLI command), closed afterwards."""
    conn = await connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("shared") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


async def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; returns the names applied by this call."""
    conn = await asyncpg.connect(database_url)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for name, sql in migration_files():
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations(name) VALUES ($1)", name)
                applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


async def ensure_database(database_url: str) -> None:
    """Create the database named in the URL if it does not exist (developer and demo runs)."""
    name = database_name(database_url)
    conn = await asyncpg.connect(with_database(database_url, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Identifiers cannot be bound as parameters; quote_ident keeps the name safe.
            quoted = await conn.fetchval("SELECT quote_ident($1)", name)
            try:
                await conn.execute(f"CREATE DATABASE {quoted}")
            except asyncpg.DuplicateDatabaseError:
                pass  # a replica starting at the same moment created it
    finally:
        await conn.close()


async def drop_database(database_url: str) -> None:
    name = database_name(database_url)
    conn = await asyncpg.connect(with_database(database_url, "postgres"))
    try:
        quoted = await conn.fetchval("SELECT quote_ident($1)", name)
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()
