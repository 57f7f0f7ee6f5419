"""One HTTP connection pool per delivery account.

httpx's pool does bookkeeping over all its connections on every request, so in one shared pool
a slow buyer's dozens of open connections made every other buyer's posts cost more CPU (the
benchmark's slow-buyer phase). A pool per account keeps each buyer's connections to itself."""

from __future__ import annotations

import httpx


class BuyerClients:
    def __init__(self) -> None:
        self._clients: dict[str, httpx.AsyncClient] = {}

    def for_account(self, account_id: str) -> httpx.AsyncClient:
        client = self._clients.get(account_id)
        if client is None:
            client = self._clients[account_id] = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64), follow_redirects=False)
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
