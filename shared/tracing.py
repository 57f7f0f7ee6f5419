"""Traces: OpenTelemetry across every hop, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.

On (`provider(service, settings)` returns a TracerProvider): the broker of every service process
carries FastStream's OpenTelemetry middleware (a span per message handled and per publish, the
context in the message's `traceparent` header), web tiers carry the ASGI middleware (a span per
request, continuing a caller's `traceparent`), and spans go to the OTLP/HTTP endpoint in batches.

The outbox is the one hop FastStream cannot see: an event is written inside a handler but
published later by the relay, from a task of its own. So `inject(headers)` writes the current
trace context into the event's headers when it is written (shared/outbox.py), and the relay
publishes each row inside the context those headers hold (`attached`): the publish span, and the
handler downstream, join the trace of the handler that wrote the event. Request-reply calls
(shared/rpc.py) inject the same header.

Off: no spans and no SDK work, but trace ids still travel, so that log lines of one lead share a
`trace_id` across services: a handler continues the `traceparent` of its message or starts a new
trace id (`start`), and `inject` writes it into what the handler sends. Such a header says
"sampled", so a service with tracing on records its part of a trace that began where tracing was
off (with a parent span no backend has).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from shared.settings import Settings

HEADER = "traceparent"

# The process's provider once tracing is on (one per process, as OpenTelemetry has it).
_provider: TracerProvider | None = None

# The trace id of the running handler or request while tracing is off.
_trace_id: ContextVar[str | None] = ContextVar("leadwire_trace_id", default=None)


def provider(service: str, settings: Settings) -> TracerProvider | None:
    """The process's TracerProvider when tracing is on (an OTLP endpoint is configured, or a test
    installed one with `use`); None when it is off."""
    global _provider
    if _provider is None and settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
            settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        )
        created = TracerProvider(resource=Resource.create({"service.name": f"leadwire-{service}"}))
        created.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        use(created)
    return _provider


def use(tracer_provider: TracerProvider | None) -> None:
    """Install (or, with None, remove) the process's provider; tests install one with an in-memory
    exporter. It is handed to the middlewares; OpenTelemetry's global provider is left alone."""
    global _provider
    _provider = tracer_provider


def enabled() -> bool:
    return _provider is not None


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of what runs now: the current span's with tracing on."""
    if _provider is not None:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            return format(span_context.trace_id, "032x")
        return None
    return _trace_id.get()


def _parse(value: Any) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), if it is one."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str) or len(value) < 55 or value[2] != "-" or value[35] != "-":
        return None
    trace_id = value[3:35].lower()
    if trace_id == "0" * 32 or any(c not in "0123456789abcdef" for c in trace_id):
        return None
    return trace_id


def start(headers: Mapping[str, Any] | None) -> None:
    """A handler or request begins (tracing off): continue the trace of its `traceparent` header,
    or start a new one. With tracing on, the middleware's span is the context: nothing to do."""
    if _provider is not None:
        return
    found = _parse(headers.get(HEADER)) if headers else None
    _trace_id.set(found or os.urandom(16).hex())


def inject(headers: MutableMapping[str, Any]) -> None:
    """Write the current trace context into `headers` of a message about to be sent or stored."""
    if _provider is not None:
        propagate.inject(headers)
        return
    trace_id = _trace_id.get()
    if trace_id is not None:
        headers[HEADER] = f"00-{trace_id}-{os.urandom(8).hex()}-01"


@contextmanager
def attached(headers: Mapping[str, Any] | None) -> Iterator[None]:
    """Run the block inside the trace context `headers` carry (the relay publishing a row)."""
    if _provider is None or not headers or HEADER not in headers:
        yield
        return
    token = otel_context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)
