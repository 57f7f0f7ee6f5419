"""delivery entrypoint: `faststream run services.delivery.main:app`."""

from __future__ import annotations

import httpx
from faststream.rabbit.annotations import RabbitMessage

from services.delivery import usecases
from shared.contracts import DeliveryRequested
from shared.service import Runtime
from shared.settings import Settings


def build(settings: Settings | None = None) -> Runtime:
    runtime = Runtime("delivery", settings)
    # One connection pool for every buyer; each request sets its own account's timeout.
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=500, max_keepalive_connections=100),
                             follow_redirects=False)
    runtime.on_close(http.aclose)

    @runtime.subscriber("delivery.requests", title="delivery: post leads to buyers")
    async def on_delivery_requested(request: DeliveryRequested, message: RabbitMessage) -> None:
        await usecases.deliver(
            runtime.pool, http, runtime.catalog, runtime.topology, request,
            redelivered=bool(message.raw_message.redelivered),
        )

    return runtime


runtime = build()
app = runtime.app("Posts leads to buyers' endpoints, confirms prices and retries transient failures.")
