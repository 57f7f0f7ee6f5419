"""returns entrypoint: `faststream run services.returns.main:app`.

One queue, `returns.commands`, carries three commands told apart by routing key: `return.request`,
`return.decide` and `order.command`. The service also sweeps orders past their end date.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from services.returns import usecases
from shared.contracts import OrderCommand, ReturnDecide, ReturnRequest
from shared.listener import wait_event
from shared.service import Runtime, incoming, original_routing_key
from shared.settings import Settings

log = logging.getLogger("leadwire.returns")

# Orders end on a date, so a minute's lag in closing them is harmless: reserve() itself stops
# using an order the day after its end date.
SWEEP_INTERVAL = 60.0


class ReturnsRuntime(Runtime):
    """The shared runtime plus the order sweep as one more background task."""

    def __init__(self, settings: Settings | None, sweep_interval: float) -> None:
        super().__init__("returns", settings)
        self.sweep_interval = sweep_interval
        self._sweep_stop = asyncio.Event()

    async def _sweep_loop(self) -> None:
        while not self._sweep_stop.is_set():
            try:
                await usecases.sweep_orders(self.pool)
            except asyncio.CancelledError:
                raise
            except Exception:  # database away: try again next round
                log.warning("order sweep failed; retrying", exc_info=True)
            await wait_event(self._sweep_stop, self.sweep_interval)

    async def start_background(self) -> None:
        await super().start_background()
        self._sweep_stop.clear()
        self._tasks.append(asyncio.create_task(self._sweep_loop()))

    async def stop_background(self) -> None:
        self._sweep_stop.set()
        await super().stop_background()


def build(settings: Settings | None = None, *, sweep_interval: float = SWEEP_INTERVAL) -> Runtime:
    runtime = ReturnsRuntime(settings, sweep_interval)

    @runtime.subscriber("returns.commands", title="returns: return requests, decisions, order commands")
    async def on_command(body: dict[str, Any]) -> None:
        raw = incoming()
        key = original_routing_key(raw)
        if key == "return.request":
            await usecases.request_return(
                runtime.pool,
                runtime.catalog,
                ReturnRequest.model_validate(body),
                reply_to=raw.reply_to,
                correlation_id=raw.correlation_id,
            )
        elif key == "return.decide":
            await usecases.decide_return(runtime.pool, ReturnDecide.model_validate(body), message_id=raw.message_id)
        elif key == "order.command":
            await usecases.order_command(
                runtime.pool,
                OrderCommand.model_validate(body),
                message_id=raw.message_id,
                reply_to=raw.reply_to,
                correlation_id=raw.correlation_id,
            )
        else:
            raise ValueError(f"returns.commands has no handler for routing key {key!r}")

    return runtime


runtime = build()
app = runtime.app("Return requests under caps, admin decisions, and order commands (pause, resume, close).")
