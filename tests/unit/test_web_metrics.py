"""shared/web.py RequestMetrics: request latency by route template (never the raw path), method
and status; a request's trace id (tracing off) continued from its traceparent."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException
from fastapi.staticfiles import StaticFiles

from shared import metrics, tracing
from shared.web import RequestMetrics

SEEN: list[str | None] = []


def app(tmp_path) -> FastAPI:
    (tmp_path / "a.css").write_text("body{}")
    api = FastAPI()

    @api.get("/portal/leads/{lead_id}")
    async def lead(lead_id: str) -> dict[str, str]:
        SEEN.append(tracing.current_trace_id())
        if lead_id == "missing":
            raise HTTPException(404)
        return {"lead": lead_id}

    @api.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    api.mount("/portal/static", StaticFiles(directory=tmp_path), name="static")
    api.add_middleware(RequestMetrics)
    return api


def count(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return metrics.REGISTRY.get_sample_value("leadwire_http_request_duration_seconds_count", labels) or 0.0


async def test_requests_are_timed_by_route_template_and_status(tmp_path):
    before = {
        key: count(*key)
        for key in [
            ("/portal/leads/{lead_id}", "GET", "200"),
            ("/portal/leads/{lead_id}", "GET", "404"),
            ("/portal/static", "GET", "200"),
            ("unmatched", "GET", "404"),
            ("/boom", "GET", "500"),
        ]
    }
    transport = httpx.ASGITransport(app=app(tmp_path), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/portal/leads/1")).status_code == 200
        assert (await client.get("/portal/leads/2")).status_code == 200
        assert (await client.get("/portal/leads/missing")).status_code == 404
        assert (await client.get("/portal/static/a.css")).status_code == 200
        assert (await client.get("/nowhere/abc")).status_code == 404
        assert (await client.get("/boom")).status_code == 500
    after = {key: count(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        ("/portal/leads/{lead_id}", "GET", "200"): 2,
        ("/portal/leads/{lead_id}", "GET", "404"): 1,
        ("/portal/static", "GET", "200"): 1,
        ("unmatched", "GET", "404"): 1,
        ("/boom", "GET", "500"): 1,
    }


async def test_a_request_continues_the_callers_trace_or_starts_one(tmp_path):
    SEEN.clear()
    transport = httpx.ASGITransport(app=app(tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        await client.get("/portal/leads/1", headers={"traceparent": traceparent})
        await client.get("/portal/leads/2")
    assert SEEN[0] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert SEEN[1] is not None and len(SEEN[1]) == 32 and SEEN[1] != SEEN[0]


async def test_with_tracing_on_a_request_is_a_span_without_its_secrets(tmp_path):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shared.web import add_tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    api = FastAPI()

    @api.get("/portal/link/{token}")
    async def link(token: str) -> dict[str, str | None]:
        return {"trace": tracing.current_trace_id()}

    add_tracing(api, provider)
    tracing.use(provider)
    try:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            answer = await client.get("/portal/link/s3cret-token?x=1", headers={"traceparent": traceparent})
    finally:
        tracing.use(None)
    assert answer.json()["trace"] == "4bf92f3577b34da6a3ce929d0e0e4736"  # the caller's trace, continued
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
    assert span.name == "GET /portal/link/***"
    assert "s3cret-token" not in repr(dict(span.attributes or {}))
