"""HTTP to buyers: one aiohttp session (connection pool) per delivery account.

aiohttp rather than httpx for its CPU cost per post (measured in docs/benchmark.md, second round).
A pool per account keeps a slow buyer's open connections away from the others' posts."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import aiohttp

# Errors of the exchange itself (refused connection, reset, bad URL, malformed answer): transient.
HttpError = aiohttp.ClientError


@dataclass(frozen=True)
class Answer:
    status: int
    text: str


class BuyerClients:
    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def for_account(self, account_id: str) -> aiohttp.ClientSession:
        session = self._sessions.get(account_id)
        if session is None or session.closed:
            session = self._sessions[account_id] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=0),
                # Timeouts are the caller's: one deadline over the whole exchange.
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return session

    async def post(
        self,
        account_id: str,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        body: bytes | None,
        params: dict[str, str] | None,
    ) -> Answer:
        """Send one request and read the whole answer. Redirects are answers, not followed."""
        async with self.for_account(account_id).request(
            method,
            url,
            headers=headers,
            data=body,
            params=params or None,
            allow_redirects=False,
        ) as response:
            raw = await response.read()
            return Answer(response.status, raw.decode(_charset(response.charset), errors="replace"))

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def _charset(declared: str | None) -> str:
    """The answer's declared charset when Python knows it, else UTF-8."""
    if declared:
        try:
            return codecs.lookup(declared).name
        except LookupError:
            pass
    return "utf-8"
