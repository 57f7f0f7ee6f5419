"""Adaptive batching of a queue's messages: one use-case call, one transaction, for what is waiting.

FastStream hands a process up to `prefetch` messages of a queue at once, each to its own handler
call. Under load most of them wait for a database connection and pay their own transaction, round
trips and statement encoding. A `Batcher` lets those handler calls share the work:

    leads = runtime.batcher("router.leads", usecases.receive_leads, usecases.receive_one)

    @runtime.subscriber("router.leads")
    async def on_lead(lead: InboundLead) -> None:
        await leads.submit((lead, context_of(incoming())))

- `submit` puts the item in the queue's collector and waits for its outcome. A drain starts at
  once when fewer than `concurrency` drains run; it takes what is already waiting, up to `limit`,
  and never waits for more: a lone message runs alone, through `run_one` (today's one-message use
  case), with no added delay. Under load the messages that arrived while a drain ran make the next
  batch, so the batch size follows the queue.
- A batch of several runs `run_batch(items)`: one call, one transaction (the use case's business),
  results in the items' order. Each handler returns (and FastStream acks its message) only after
  that call returned, i.e. after the commit. A SIGKILL mid-batch commits nothing: every message of
  the batch is unacked and redelivered.
- If the batch call fails (a bug one message triggers, a deadlock, the database away), each item
  is run again alone through `run_one`, and each handler gets its own item's result or error. So
  one failing message never sinks the others, and the failure routing (retry tiers, the
  dead-letter queue) sees exactly the message that failed, as without batching.

The drains run as tasks of their own, inside `scope` (the runtime's: outbox rows a batch writes
wake the process's relay after the batch commits, metrics counted then), not in one handler's
context: a handler may return, or be cancelled at shutdown, while a batch it started goes on. An
item run alone runs in its submitter's context (a copy), so what it writes carries its own
message's trace; a batch of several runs in the drain's context, so the events a batch writes
start traces of their own (docs/operations.md, "Traces").
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("leadwire.batching")

Item = TypeVar("Item")
Result = TypeVar("Result")


@asynccontextmanager
async def _no_scope() -> AsyncIterator[None]:
    yield


@dataclass
class BatchStats:
    """What a batcher did, for tests and the benchmark's reading of batch sizes."""

    batches: int = 0  # run_batch calls (batches of two or more)
    alone: int = 0  # run_one calls for a lone item
    fallbacks: int = 0  # batches that failed and were run again one item at a time
    sizes: list[int] = field(default_factory=list)  # every drain's size, the last 1,000

    def summary(self) -> str:
        sizes = sorted(self.sizes)
        median = sizes[len(sizes) // 2] if sizes else 0
        return (
            f"{self.batches} batches, {self.alone} alone, {self.fallbacks} fallbacks;"
            f" last {len(sizes)} drains: median size {median}, largest {sizes[-1] if sizes else 0}"
        )

    def record(self, size: int) -> None:
        self.sizes.append(size)
        if len(self.sizes) > 1000:
            del self.sizes[:500]


class Batcher(Generic[Item, Result]):
    def __init__(
        self,
        name: str,
        run_batch: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        run_one: Callable[[Item], Awaitable[Result]],
        *,
        limit: int = 32,
        concurrency: int = 1,
        scope: Callable[[], AbstractAsyncContextManager[object]] = _no_scope,
    ) -> None:
        if limit < 1 or concurrency < 1:
            raise ValueError("a batcher needs limit >= 1 and concurrency >= 1")
        self.name = name
        self._run_batch = run_batch
        self._run_one = run_one
        self.limit = limit
        self.concurrency = concurrency
        self._scope = scope
        # Each item with its future and its submitter's context (the handler's trace, ...).
        self._waiting: deque[tuple[Item, asyncio.Future[Result], contextvars.Context]] = deque()
        self._draining = 0  # drains started and not finished
        self._starting = False  # a drain started that has not taken its batch yet
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = BatchStats()

    async def submit(self, item: Item) -> Result:
        """The item's result once its batch (or it alone) has committed; its own error if it failed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future, contextvars.copy_context()))
        self._start_drains()
        return await future

    def _start_drains(self) -> None:
        # One drain at a time is started and not yet running: when it runs it takes everything
        # that arrived by then (the rest of a burst the broker handed over in one read), not just
        # the item that started it.
        if self._waiting and not self._starting and self._draining < self.concurrency:
            self._starting = True
            self._draining += 1
            # A context of its own: not the context of whichever handler happened to start it.
            task = asyncio.get_running_loop().create_task(
                self._drain(), name=f"batch {self.name}", context=contextvars.Context()
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        self._starting = False
        batch = [self._waiting.popleft() for _ in range(min(self.limit, len(self._waiting)))]
        # Items left over start another drain now if the concurrency allows.
        self._start_drains()
        try:
            # Items whose handler is gone (cancelled at shutdown) are left out: their messages go
            # back to the broker with the channel.
            batch = [(item, future, context) for item, future, context in batch if not future.done()]
            if batch:
                self.stats.record(len(batch))
                await self._run(batch)
        except BaseException as exc:
            # Never leave a handler waiting: cancelled with the drain, or told what broke.
            for _, future, _context in batch:
                if not future.done():
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
            raise
        finally:
            self._draining -= 1
            # What arrived meanwhile is the next batch.
            self._start_drains()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result], contextvars.Context]]) -> None:
        if len(batch) > 1:
            self.stats.batches += 1
            try:
                async with self._scope():
                    results = await self._run_batch([item for item, _, _context in batch])
                    if len(results) != len(batch):  # a use-case bug: no item can trust its result
                        raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every item is run again alone
                self.stats.fallbacks += 1
                log.warning(
                    "%s: a batch of %d failed (%s: %s); running each alone",
                    self.name,
                    len(batch),
                    type(exc).__name__,
                    exc,
                )
            else:
                for (_, future, _context), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                return
        else:
            self.stats.alone += 1
        for item, future, context in batch:
            if future.done():
                continue
            try:
                # In its submitter's context: the work an item does alone (its outbox rows, their
                # trace headers) belongs to its own message's trace, as without batching.
                result = await asyncio.get_running_loop().create_task(self._one(item), context=context)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the item's handler routes its own failure
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    async def _one(self, item: Item) -> Result:
        async with self._scope():
            return await self._run_one(item)

    async def close(self) -> None:
        """Wait for the drains under way (a stopping service's in-flight batches)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
