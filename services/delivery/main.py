"""delivery entrypoint: `faststream run services.delivery.main:app`."""

from __future__ import annotations

from collections.abc import Sequence

from services.delivery import store, usecases
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

    async def claim_batch(wanted: Sequence[store.ToClaim]) -> list[store.Claimed | None]:
        return await store.claim_many(runtime.pool, wanted)

    async def claim_one(wanted: store.ToClaim) -> store.Claimed | None:
        return await usecases.claim_one(runtime.pool, wanted)

    async def finish_batch(finishes: Sequence[store.Finish]) -> list[bool]:
        return await store.log_and_finish_many(runtime.pool, finishes)

    async def finish_one(finish: store.Finish) -> bool:
        return await usecases.finish_one(runtime.pool, finish)

    # Claims and answered posts' results of concurrent handlers share a statement when several are
    # waiting (shared/batching.py); one alone goes at once.
    deps = usecases.Deps(
        runtime,
        http,
        runtime.topology,
        after_post=lambda: runtime.crash_point("delivery.after_post"),
        claims=runtime.batcher("delivery.claims", claim_batch, claim_one),
        finishes=runtime.batcher("delivery.finishes", finish_batch, finish_one),
    )

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
