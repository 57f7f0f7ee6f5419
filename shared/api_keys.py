"""API keys for the HTTP APIs: lead sources' keys (post leads as one source) and buyers' keys (act
for one client). One format, one way to store and check them, used by `leadwire keys`, the
portal's API keys page and the intake service (docs/intake.md, docs/buyer-api.md).

A token is `lwsk.<key_id>.<secret>` (source) or `lwbk.<key_id>.<secret>` (buyer): `key_id` is
12 hex characters that find the row, `secret` 256 random bits (URL-safe base64). Only the
SHA-256 of the whole token is stored; it is shown once, at creation. A presented token is hashed
and compared with `hmac.compare_digest`, also when no row matches (against a dummy), so the
answer takes the same time whether the key id exists or not.

This module is the only writer of `source_api_keys` and `buyer_api_keys`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from shared import sql
from shared.sql import statement

KeyKind = Literal["source", "buyer"]
PREFIX: dict[KeyKind, str] = {"source": "lwsk", "buyer": "lwbk"}
_DUMMY_HASH = hashlib.sha256(b"no such key").digest()


@dataclass(frozen=True)
class NewKey:
    key_id: str
    token: str  # shown once, never stored
    owner: str  # the source id or the client id
    # A source key's callback signing secret (docs/intake.md "Callbacks"): shown once with the
    # token; stored as it is, since signing needs it. None for buyer keys.
    callback_secret: str | None = None


def new_callback_secret() -> str:
    return f"lwcs_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    owner: str  # source id (source keys) or client id (buyer keys)
    label: str
    created_at: datetime
    revoked_at: datetime | None
    rate_per_second: int
    test_mode: bool
    created_by: str | None = None


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def new_token(kind: KeyKind) -> tuple[str, str]:
    """(key_id, token) for a new key."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX[kind]}.{key_id}.{secrets.token_urlsafe(32)}"


def parse_token(kind: KeyKind, token: str) -> str | None:
    """The key id of a well-formed token of this kind, or None."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX[kind] or len(parts[1]) != 12 or not parts[2]:
        return None
    if any(c not in "0123456789abcdef" for c in parts[1]) or len(parts[2]) > 100:
        return None
    return parts[1]


def matches(stored_hash: bytes | None, token: str) -> bool:
    """Constant-time: does `token` hash to `stored_hash`? (A missing row compares against a dummy.)"""
    ok = hmac.compare_digest(stored_hash or _DUMMY_HASH, token_hash(token))
    return ok and stored_hash is not None


# --- SQL ------------------------------------------------------------------------------------------

_TABLE: dict[KeyKind, tuple[str, str]] = {
    "source": ("source_api_keys", "source_id"),
    "buyer": ("buyer_api_keys", "client_id"),
}


def _row(kind: KeyKind, r: asyncpg.Record) -> KeyRow:
    owner_col = _TABLE[kind][1]
    return KeyRow(
        key_id=r["key_id"],
        owner=r[owner_col],
        label=r["label"],
        created_at=r["created_at"],
        revoked_at=r["revoked_at"],
        rate_per_second=r["rate_per_second"],
        test_mode=bool(r.get("test_mode", False)),
        created_by=r.get("created_by"),
    )


async def create_source_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    source_id: str,
    *,
    label: str = "",
    rate_per_second: int = 50,
    test_mode: bool = False,
) -> NewKey:
    key_id, token = new_token("source")
    callback_secret = new_callback_secret()
    await sql.execute(
        conn,
        statement(
            "INSERT INTO source_api_keys"
            " (key_id, source_id, token_sha256, label, rate_per_second, test_mode, callback_secret)"
            " VALUES (:key_id, :source_id, :hash, :label, :rate, :test_mode, :callback_secret)",
            key_id=key_id,
            source_id=source_id,
            hash=token_hash(token),
            label=label,
            rate=rate_per_second,
            test_mode=test_mode,
            callback_secret=callback_secret,
        ),
    )
    return NewKey(key_id, token, source_id, callback_secret)


async def create_buyer_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    client_id: str,
    *,
    label: str = "",
    created_by: str | None = None,
    rate_per_second: int = 20,
) -> NewKey:
    key_id, token = new_token("buyer")
    await sql.execute(
        conn,
        statement(
            "INSERT INTO buyer_api_keys (key_id, client_id, token_sha256, label, created_by, rate_per_second)"
            " VALUES (:key_id, :client_id, :hash, :label, :created_by, :rate)",
            key_id=key_id,
            client_id=client_id,
            hash=token_hash(token),
            label=label,
            created_by=created_by,
            rate=rate_per_second,
        ),
    )
    return NewKey(key_id, token, client_id)


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool, kind: KeyKind, owner: str | None = None) -> list[KeyRow]:
    table, owner_col = _TABLE[kind]
    rows = await sql.fetch(
        conn,
        statement(
            f"SELECT * FROM {table} WHERE (:owner::text IS NULL OR {owner_col} = :owner) ORDER BY created_at, key_id",
            owner=owner,
        ),
    )
    return [_row(kind, r) for r in rows]


async def revoke(conn: asyncpg.Connection | asyncpg.Pool, kind: KeyKind, key_id: str, owner: str | None = None) -> bool:
    """Revoke a key (of `owner` only, when given). False when there is no such live key."""
    table, owner_col = _TABLE[kind]
    done = await sql.fetchval(
        conn,
        statement(
            f"UPDATE {table} SET revoked_at = now() WHERE key_id = :key_id AND revoked_at IS NULL"
            f" AND (:owner::text IS NULL OR {owner_col} = :owner) RETURNING true",
            key_id=key_id,
            owner=owner,
        ),
    )
    return bool(done)


async def authenticate(conn: asyncpg.Connection | asyncpg.Pool, kind: KeyKind, token: str) -> KeyRow | None:
    """The live key this token is, or None (malformed, unknown, wrong secret, revoked)."""
    key_id = parse_token(kind, token)
    table, _ = _TABLE[kind]
    row = None
    if key_id is not None:
        row = await sql.fetchrow(conn, statement(f"SELECT * FROM {table} WHERE key_id = :key_id", key_id=key_id))
    if not matches(row["token_sha256"] if row is not None else None, token) or row is None:
        return None
    if row["revoked_at"] is not None:
        return None
    return _row(kind, row)
