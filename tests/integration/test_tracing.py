"""Traces across hops: with tracing on, one trace holds a lead's way router → delivery → router,
through the outbox (the relay publishes in the writer's trace) and FastStream's OpenTelemetry
middleware (context in the message headers). Spans are kept by an in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.delivery.main import build as build_delivery
from services.router.main import build as build_router
from shared import tracing
from tests.support import EventTap, apply_yaml, catalog_yaml, lead_body, publish_raw, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


def processed(spans: InMemorySpanExporter, destination: str) -> list[ReadableSpan]:
    """The spans of messages handled whose destination (`<exchange>.<routing key>`) ends so."""
    return [
        s
        for s in spans.get_finished_spans()
        if s.kind is SpanKind.CONSUMER
        and s.name.endswith(" process")
        and s.name[: -len(" process")].endswith(destination)
    ]


async def test_a_trace_id_propagates_router_delivery_router(settings, conn, buyer, spans):
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    async with (
        build_router(settings).running(),
        build_delivery(settings).running(),
        EventTap(settings, "lead.*") as tap,
    ):
        await publish_raw(settings, lead_body(), headers={"idempotency-key": "traced-1"})
        await wait_for(lambda: tap.bodies("lead.sold"), timeout=30)
        await wait_for(lambda: processed(spans, ".delivery.succeeded"), timeout=10)

    lead = processed(spans, ".inbound.lead.solar")
    post = processed(spans, ".events.delivery.requested")
    result = processed(spans, ".events.delivery.succeeded")
    assert len(lead) == 1 and len(post) == 1 and len(result) == 1
    trace_id = lead[0].context.trace_id
    # One trace: the lead's arrival at the router, its post by delivery, the result back at the router.
    assert post[0].context.trace_id == trace_id
    assert result[0].context.trace_id == trace_id
    # ... and the lead.sold event the router published from its outbox carries it on.
    sold = next(m for k, _b, m in tap.messages if k == "lead.sold")
    assert str((sold.headers or {}).get("traceparent")).split("-")[1] == format(trace_id, "032x")
    # Every span of the trace has its parent in it (no hop started a trace of its own).
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    ids = {s.context.span_id for s in in_trace}
    roots = [s for s in in_trace if s.parent is None or s.parent.span_id not in ids]
    assert len(roots) == 1, [s.name for s in roots]
