"""What every Leadwire web tier shares (portal, admin, intake): the service runtime in the ASGI
lifespan, the process's multiplexed request-reply client, security headers, a health route, and an
access log that never prints a token.

A web service builds its FastAPI app with `create_web_app(runtime, ...)` and is served by uvicorn
(`uvicorn --factory services.<name>.web:create_app`). Each uvicorn worker process has its own
Runtime (pool, catalog cache, outbox relay) and its own `RequestReply`; nothing a request needs is
kept in the process between requests, so any number of replicas can stand behind a load balancer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from shared.rpc import RequestReply
from shared.service import Runtime

log = logging.getLogger("leadwire.web")

# Paths whose last segment is a secret (emailed links, password resets): masked in access logs.
SECRET_PATHS = re.compile(r"(/(?:link|reset|invite)/)[^/?\s\"]+")

DEFAULT_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def mask_secrets(text: str) -> str:
    """An access-log line (or any URL) with the secret path segments replaced by `***`."""
    return SECRET_PATHS.sub(r"\1***", text)


class MaskSecretsFilter(logging.Filter):
    """Installed on uvicorn's access logger: its records carry the request path in `args`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(mask_secrets(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = mask_secrets(record.msg)
        return True


def install_access_log_masking() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, MaskSecretsFilter) for f in logger.filters):
        logger.addFilter(MaskSecretsFilter())


def create_web_app(
    runtime: Runtime,
    *,
    title: str,
    description: str = "",
    with_rpc: bool = True,
    security_headers: dict[str, str] | None = None,
    openapi_url: str | None = None,
    on_startup: Callable[[FastAPI], Awaitable[None]] | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app whose lifespan runs `runtime` (pool, catalog, outbox relay, heartbeat) and,
    with `with_rpc`, a `RequestReply` client kept at `app.state.rpc`. `app.state.runtime` is the
    runtime. `GET /healthz` answers 200 while the database answers, 503 otherwise."""
    headers = {**DEFAULT_SECURITY_HEADERS, **(security_headers or {})}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_access_log_masking()
        async with runtime.running():
            rpc: RequestReply | None = None
            if with_rpc:
                rpc = RequestReply(runtime.settings.amqp_url, name=runtime.name, namespace=runtime.settings.namespace)
                await rpc.start()
            app.state.rpc = rpc
            try:
                if on_startup is not None:
                    await on_startup(app)
                yield
            finally:
                if rpc is not None:
                    await rpc.close()

    app = FastAPI(title=title, description=description, lifespan=lifespan, openapi_url=openapi_url, **fastapi_kwargs)
    app.state.runtime = runtime

    @app.middleware("http")
    async def add_security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        try:
            assert runtime.pool is not None
            await runtime.pool.fetchval("SELECT true", timeout=2)
        except Exception:  # any failure means "not healthy", with a reason logged
            log.warning("health check failed", exc_info=True)
            return JSONResponse({"status": "unhealthy"}, status_code=503)
        return JSONResponse({"status": "ok", "service": runtime.name})

    return app
