"""delivery entrypoint: `faststream run services.delivery.main:app`."""

from __future__ import annotations

from services.delivery import usecases
from services.delivery.buyers import BuyerClients
from shared.contracts import (
    ConfirmPrice,
    DeliveryRequested,
)
from shared.service import Runtime, incoming
from shared.settings import Settings


def build(settings: Settings | None = None) -> Runtime:
    runtime = Runtime("delivery", settings)
    # A connection pool per delivery account; each request sets its own account's timeout.
    http = BuyerClients()
    runtime.on_close(http.aclose)
    deps = usecases.Deps(runtime, http, runtime.topology, after_post=lambda: runtime.crash_point("delivery.after_post"))

    @runtime.subscriber("delivery.requests", title="delivery: post leads to buyers")
    async def on_delivery_requested(request: DeliveryRequested) -> None:
        await usecases.deliver(deps, request)

    @runtime.subscriber("delivery.confirm-price", title="delivery: buyers' confirmed prices")
    async def on_confirm_price(message: ConfirmPrice) -> None:
        raw = incoming()
        await usecases.confirm_price(
            deps, message, raw.message_id, reply_to=raw.reply_to, correlation_id=raw.correlation_id
        )

    return runtime


runtime = build()
app = runtime.app("Posts leads to buyers' endpoints, confirms prices and retries transient failures.")
