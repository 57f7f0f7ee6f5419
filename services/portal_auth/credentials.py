"""Passwords (argon2id) and opaque tokens (sessions, password resets).

A token is `<row id>.<random secret>`; the database keeps only SHA-256(secret). The secret has 256
bits of entropy, so a fast hash is enough (unlike passwords), and the check is a constant-time
comparison of digests found by the row id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


def new_token() -> tuple[uuid.UUID, str, bytes]:
    """(row id, token to hand out, digest to store)."""
    row_id = uuid.uuid4()
    secret = secrets.token_urlsafe(32)
    return row_id, f"{row_id}.{secret}", digest(secret)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[uuid.UUID, str] | None:
    row_id, _, secret = token.partition(".")
    if not secret:
        return None
    try:
        return uuid.UUID(row_id), secret
    except ValueError:
        return None


def secret_matches(secret: str, stored_digest: bytes) -> bool:
    return hmac.compare_digest(digest(secret), bytes(stored_digest))


class Passwords:
    """argon2id hashing off the event loop (argon2-cffi releases the GIL), at most `concurrency`
    hashes at once so a burst of logins cannot take all the memory (64 MiB each by default)."""

    def __init__(
        self, *, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4, concurrency: int = 4
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        return self._dummy

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when `password` matches `stored`. With no stored hash (unknown email, user without
        a password) a dummy hash is checked anyway, so the answer takes as long either way."""
        target = stored or await self._dummy_hash()
        try:
            async with self._slots:
                matched = await asyncio.to_thread(self._hasher.verify, target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return bool(matched) and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True
