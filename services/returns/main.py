"""returns entrypoint: `faststream run services.returns.main:app`.

One queue, `returns.commands`, carries three commands told apart by routing key: `return.request`,
`return.decide` and `order.command`; each has its typed handler. The service also sweeps orders past
their end date.
"""

from __future__ import annotations

from services.returns import usecases
from shared.contracts import OrderCommand, ReturnDecide, ReturnRequest
from shared.service import Runtime, incoming
from shared.settings import Settings

# Orders end on a date, so a minute's lag in closing them is harmless: reserve() itself stops
# using an order the day after its end date.
SWEEP_INTERVAL = 60.0


def build(settings: Settings | None = None, *, sweep_interval: float = SWEEP_INTERVAL) -> Runtime:
    runtime = Runtime("returns", settings)
    deps = usecases.Deps(runtime)

    with runtime.consumer("returns.commands", title="returns: return requests, decisions, order commands") as commands:

        @commands.on("return.request")
        async def on_return_request(request: ReturnRequest) -> None:
            raw = incoming()
            await usecases.request_return(deps, request, reply_to=raw.reply_to, correlation_id=raw.correlation_id)

        @commands.on("return.decide")
        async def on_return_decide(command: ReturnDecide) -> None:
            await usecases.decide_return(deps, command, message_id=incoming().message_id)

        @commands.on("order.command")
        async def on_order_command(command: OrderCommand) -> None:
            raw = incoming()
            await usecases.order_command(
                deps,
                command,
                message_id=raw.message_id,
                reply_to=raw.reply_to,
                correlation_id=raw.correlation_id,
            )

    runtime.every("order sweep", sweep_interval, lambda: usecases.sweep_orders(deps))
    return runtime


runtime = build()
app = runtime.app("Return requests under caps, admin decisions, and order commands (pause, resume, close).")
