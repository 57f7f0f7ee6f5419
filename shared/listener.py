"""One LISTEN connection per process, shared by the outbox relay and the catalog watcher.

NOTIFY only shortens the wait: both consumers also poll, so a lost connection or a missed
notification delays work by at most one poll interval and never loses it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger("leadwire.listener")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` passes (the poll loops' sleep); True when set."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False


class PgListener:
    def __init__(self, database_url: str, callbacks: dict[str, Callable[..., None]]) -> None:
        self._database_url = database_url
        self._callbacks = callbacks
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._database_url)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("LISTEN connection failed (%s); polling until it is back", exc)
                await self._sleep(1.0)
                continue
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel, callback in self._callbacks.items():
                    # The payload goes to the callback: the outbox relay wakes only for its own rows.
                    await conn.add_listener(channel, lambda _c, _pid, _ch, payload, cb=callback: cb(payload))
                    callback()  # anything notified while we were not listening
                stop = asyncio.ensure_future(self._stopping.wait())
                gone = asyncio.ensure_future(lost.wait())
                await asyncio.wait({stop, gone}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                gone.cancel()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN connection lost (%s)", exc)
            finally:
                if not conn.is_closed():
                    await conn.close(timeout=2)

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._stopping, seconds)

    def stop(self) -> None:
        self._stopping.set()
