"""router entrypoint: `faststream run services.router.main:app`.

Handlers validate the message, call one use case, and return. Malformed messages never reach the
use case: FastStream's contract validation fails first and failure routing dead-letters them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.router import reroute, usecases
from shared.contracts import DeliveryFailed, DeliverySucceeded, InboundLead, LeadReroute
from shared.service import Runtime, incoming, original_routing_key
from shared.settings import Settings


def build(settings: Settings | None = None) -> Runtime:
    runtime = Runtime("router", settings)
    deps = usecases.Deps(
        runtime,
        after_commit=lambda: runtime.crash_point("router.after_commit"),
        mid_batch=lambda: runtime.crash_point("router.mid_batch"),
        mid_results=lambda: runtime.crash_point("router.mid_results"),
    )

    async def receive_batch(items: Sequence[tuple[InboundLead, usecases.LeadContext]]) -> list[uuid.UUID | None]:
        return await usecases.receive_leads(deps, items)

    async def receive_one(item: tuple[InboundLead, usecases.LeadContext]) -> uuid.UUID | None:
        return await usecases.receive_lead(deps, *item)

    # Leads waiting together are received together (shared/batching.py); a lone lead alone.
    leads = runtime.batcher("router.leads", receive_batch, receive_one)

    # A NUL in a property is the lead's problem to report (it is kept and rejected), not a reason
    # to refuse the message.
    @runtime.subscriber("router.leads", keeps_bad_properties=True, title="router: inbound leads")
    async def on_inbound_lead(lead: InboundLead) -> None:
        raw = incoming()
        ctx = usecases.LeadContext.from_message(
            raw.headers, raw.message_id, raw.reply_to, raw.correlation_id, original_routing_key(raw)
        )
        await leads.submit((lead, ctx))

    async def record_batch(items: Sequence[tuple[DeliverySucceeded | DeliveryFailed, str]]) -> list[None]:
        return await usecases.record_delivery_results(deps, items)

    async def record_one(item: tuple[DeliverySucceeded | DeliveryFailed, str]) -> None:
        await usecases.record_delivery_result(deps, *item)

    # Results waiting together are recorded together; a lone result alone.
    results = runtime.batcher("router.delivery-results", record_batch, record_one)

    @runtime.subscriber("router.delivery-results", title="router: delivery results")
    async def on_delivery_result(result: DeliverySucceeded | DeliveryFailed) -> None:
        message_id = incoming().message_id
        if not message_id:
            raise ValueError("a delivery result without a message_id cannot be told from its repeats")
        await results.submit((result, message_id))

    @runtime.subscriber("router.reroutes", title="router: re-route an unsold lead")
    async def on_reroute(command: LeadReroute) -> None:
        message_id = incoming().message_id
        if not message_id:
            raise ValueError("a re-route command without a message_id cannot be told from its repeats")
        await reroute.reroute_lead(deps, command, message_id)

    return runtime


runtime = build()
app = runtime.app("Validates leads, checks duplicates and decides which delivery accounts get each lead.")
