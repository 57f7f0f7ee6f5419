"""Background loops: the work a service process repeats while it runs — the outbox relay, the
catalog watcher, the heartbeat, a service's own scheduler or sweep. One loop, written once:

    loop = every(0.5, relay.drain, name="outbox relay")
    loop.wake()      # run the next round now instead of at the end of the interval

A round that fails is logged and tried again one whole interval later (a wake-up does not cut that
wait short: a dependency that is away is not hammered); a round that succeeds waits the interval
or until woken. A service registers its loops with `runtime.every(...)`, which starts them after
the broker and stops them at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.listener import wait_event

log = logging.getLogger("leadwire.background")

Work = Callable[[], Awaitable[object]]


class Loop:
    """`work` every `interval` seconds until stopped. `rounds` counts the rounds finished,
    failed ones included; `done` adds up what the rounds returned when that is a number (rows
    relayed, reminders queued), so tests and logs can see progress."""

    def __init__(self, name: str, interval: float, work: Work, *, delay_first: bool = False) -> None:
        self.name = name
        self.interval = interval
        self.work = work
        self.delay_first = delay_first
        self.rounds = 0
        self.done = 0
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Run the next round now."""
        self._wake.set()

    def stop(self) -> None:
        """Finish: the loop returns after the round in progress, if any (also when stopped before
        it started)."""
        self._stopping = True
        self._wake.set()

    def rearm(self) -> None:
        """Make a stopped loop runnable again (a runtime started a second time)."""
        self._stopping = False
        self._wake.clear()

    async def run(self) -> None:
        if self.delay_first:
            await wait_event(self._wake, self.interval)
        while not self._stopping:
            self._wake.clear()
            try:
                result = await self.work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("%s failed; trying again in %g s", self.name, self.interval, exc_info=True)
                self.rounds += 1
                await self._sleep(self.interval)
                continue
            if isinstance(result, int) and not isinstance(result, bool):
                self.done += result
            self.rounds += 1
            await wait_event(self._wake, self.interval)

    async def _sleep(self, seconds: float) -> None:
        """Wait without being woken, except by stop()."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._stopping and (left := deadline - asyncio.get_running_loop().time()) > 0:
            self._wake.clear()
            await wait_event(self._wake, left)


def every(interval: float, work: Work, *, name: str, delay_first: bool = False) -> Loop:
    """A loop running `work` every `interval` seconds (`delay_first`: the first round one interval
    after the start rather than at once)."""
    return Loop(name, interval, work, delay_first=delay_first)
