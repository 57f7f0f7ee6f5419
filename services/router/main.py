"""router entrypoint: `faststream run services.router.main:app`.

Handlers validate the message, call one use case, and return. Malformed messages never reach the
use case: FastStream's contract validation fails first and failure routing dead-letters them.
"""

from __future__ import annotations

from services.router import usecases
from shared.contracts import DeliveryFailed, DeliveryRequested, DeliverySucceeded, InboundLead, LeadOutcome
from shared.service import Runtime, incoming
from shared.settings import Settings

IDEMPOTENCY_HEADER = "idempotency-key"


def build(settings: Settings | None = None) -> Runtime:
    runtime = Runtime("router", settings)
    deps = usecases.Deps(runtime, after_commit=lambda: runtime.crash_point("router.after_commit"))

    @runtime.subscriber("router.leads", title="router: inbound leads")
    async def on_inbound_lead(lead: InboundLead) -> None:
        raw = incoming()
        # The header wins: aio-pika fills in a random message_id when a publisher sets none.
        key = str((raw.headers or {}).get(IDEMPOTENCY_HEADER) or raw.message_id or "")
        await usecases.receive_lead(
            deps, lead, usecases.LeadContext(key, reply_to=raw.reply_to, correlation_id=raw.correlation_id)
        )

    @runtime.subscriber("router.delivery-results", title="router: delivery results")
    async def on_delivery_result(result: DeliverySucceeded | DeliveryFailed) -> None:
        message_id = incoming().message_id
        if not message_id:
            raise ValueError("a delivery result without a message_id cannot be told from its repeats")
        await usecases.record_delivery_result(deps, result, message_id)

    for status in ("sold", "unsold", "duplicate", "rejected"):
        runtime.publishes(f"lead.{status}", LeadOutcome, "The lead's one terminal outcome (also its reply-to reply).")
    runtime.publishes("delivery.requested", DeliveryRequested, "Post this lead to this delivery account.")
    return runtime


runtime = build()
app = runtime.app("Validates leads, checks duplicates and decides which delivery accounts get each lead.")
