"""The catalog as a running service sees it: the latest applied version, held in memory.

A catalog apply notifies `leadwire_catalog`; the watcher reloads on that signal and also polls
the version number, so a change reaches every process within one poll interval (0.5 s by
default) even when a notification is missed.
"""

from __future__ import annotations

import logging

import asyncpg

from shared.background import every
from shared.catalog.model import Catalog
from shared.catalog.store import current_version, load_latest

log = logging.getLogger("leadwire.catalog")


class CatalogCache:
    def __init__(self, pool: asyncpg.Pool, poll_interval: float = 0.5) -> None:
        self._pool = pool
        self.version = 0
        self.catalog = Catalog()
        # A failed refresh keeps serving the version we have.
        self.loop = every(poll_interval, self.refresh, name="catalog refresh")

    async def refresh(self) -> bool:
        """Load the latest version if it is newer; True when something changed."""
        if await current_version(self._pool) == self.version:
            return False
        version, catalog = await load_latest(self._pool)
        if version != self.version:
            self.version, self.catalog = version, catalog
            log.info("catalog version %s loaded", version)
            return True
        return False

    def wake(self) -> None:
        self.loop.wake()
