"""What every Leadwire web tier shares (portal, admin, intake): the service runtime in the ASGI
lifespan, the process's multiplexed request-reply client, security headers, a health route, an
access log that never prints a token, and — for the HTML tiers — error pages, a request body limit,
CSRF tokens, the same-origin check and session cookie flags.

A web service builds its FastAPI app with `create_web_app(runtime, ...)` and is served by uvicorn
(`uvicorn --factory services.<name>.web:create_app`). Each uvicorn worker process has its own
Runtime (pool, catalog cache, outbox relay) and its own `RequestReply`; nothing a request needs is
kept in the process between requests, so any number of replicas can stand behind a load balancer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import logs, metrics, tracing
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


class BodySizeLimit:
    """Refuses a request body larger than `max_bytes` with 413, before reading it when its
    Content-Length says so, and as soon as the bytes received pass the limit otherwise (chunked
    bodies). Raised as an HTTPException from `receive`, so the app's own handlers shape the answer."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: Callable[[Scope], int | None] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Routes that take more (file uploads): the request's own limit, or None for the default.
        self.larger = larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = (self.larger(scope) if self.larger is not None else None) or self.max_bytes

        def too_large() -> HTTPException:
            return HTTPException(413, f"the request body is larger than {limit} bytes")

        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            # Through the app's exception handlers, without reading a byte of the body.
            await self.app(scope, _refusing_receive(too_large), send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large()
            return message

        await self.app(scope, counting_receive, send)


class ResponseHeaders:
    """Adds headers to every HTTP response: `headers(scope)` gives (defaults, overrides) for the
    request — defaults kept where the route set its own, overrides always. Plain ASGI: Starlette's
    `@app.middleware("http")` runs each request through a task and a memory stream of its own, a
    cost every page paid twice."""

    def __init__(self, app: ASGIApp, headers: Callable[[Scope], tuple[Mapping[str, str], Mapping[str, str]]]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        defaults, overrides = self.headers(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in defaults.items():
                    headers.setdefault(name, value)
                for name, value in overrides.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestMetrics:
    """Starts the request's trace id when tracing is off (shared/tracing.py `start`: a
    `traceparent` header is continued). Times every HTTP request into
    `leadwire_http_request_duration_seconds` by route template (`/portal/leads/{lead_id}`, never
    the raw path: bounded labels, no ids or tokens), method and status. A request no route matched
    is labelled with its mount's path (static files) or `unmatched`; one that raised, status 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        root = scope.get("root_path", "")
        # Tracing off: the request still has a trace id for its log lines and what it sends.
        if not tracing.enabled():
            traceparent = next((v for k, v in scope.get("headers") or () if k == b"traceparent"), None)
            tracing.start({tracing.HEADER: traceparent} if traceparent else None)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                mounted = scope.get("root_path", "")
                route = mounted[len(root) :] if mounted != root else "unmatched"
            metrics.HTTP_SECONDS.labels(route, scope["method"], str(status)).observe(time.perf_counter() - started)


def add_tracing(app: FastAPI, tracer_provider: Any) -> None:
    """OpenTelemetry's ASGI middleware: a span per request (continuing a caller's traceparent),
    the current span while the request runs, so what it sends by request-reply or through the
    outbox joins the trace; secret link segments masked in the span's name and URL attributes."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app.add_middleware(
        OpenTelemetryMiddleware,
        tracer_provider=tracer_provider,
        exclude_spans=["receive", "send"],
        default_span_details=_span_details,
        server_request_hook=_mask_span_secrets,
    )


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """A request span's name: the method and the path with secret segments masked (the route
    template is not known yet when the span starts)."""
    path = mask_secrets(str(scope.get("path", "")))
    return f"{scope.get('method', 'HTTP')} {path}", {"http.target": path}


def _mask_span_secrets(span: Any, scope: Scope) -> None:
    """The request span's URL attributes with secret path segments masked, as in access logs."""
    for key, value in dict(getattr(span, "attributes", None) or {}).items():
        if isinstance(value, str) and SECRET_PATHS.search(value):
            span.set_attribute(key, mask_secrets(value))


def _refusing_receive(error: Callable[[], HTTPException]) -> Receive:
    async def receive() -> Message:
        raise error()

    return receive


# --- Forms: CSRF tokens, the same-origin check, session cookies ----------------------------------


def csrf_token(secret: str, binding: str) -> str:
    """A synchronizer token for HTML forms (OWASP), derived rather than stored: the HMAC of what it
    is bound to — a session id, or a pre-session nonce kept in a cookie for the sign-in forms. A
    token lifted from one session is worthless in another."""
    digest = hmac.new(secret.encode(), f"csrf:{binding}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_valid(secret: str, binding: str, token: str | None) -> bool:
    """Constant-time check of a form's token against what it must be bound to."""
    if not token or not binding:
        return False
    return hmac.compare_digest(csrf_token(secret, binding).encode(), token.encode())


def request_origin(request: Request) -> str:
    """scheme://host[:port] as this request reached us (behind a proxy: run uvicorn with
    --proxy-headers so the scheme is the client's)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def url_origin(url: str) -> str:
    match = re.match(r"^(https?://[^/?#]+)", url)
    return match.group(1) if match else ""


def cross_site(request: Request, allowed_origins: Iterable[str] = ()) -> bool:
    """True when a state-changing request was not sent by one of our own pages. Browsers that send
    Sec-Fetch-Site (all current ones) are judged by it: same-origin or none (typed, bookmarked)
    pass. Otherwise an Origin header must name us; "null" (sent under Referrer-Policy
    no-referrer) and no header at all (old browsers, curl) are left to the CSRF token, which every
    form carries anyway: this check is defence in depth beside it."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return False
    return origin not in {request_origin(request), *allowed_origins}


def served_over_tls(request: Request, public_url: str | None = None) -> bool:
    return request.url.scheme == "https" or bool(public_url and public_url.startswith("https://"))


def set_session_cookie(
    response: Response, name: str, value: str, *, path: str, max_age: int | None, secure: bool
) -> None:
    """A cookie scripts cannot read (HttpOnly), that cross-site subrequests and form posts do not
    carry (SameSite=Lax), sent only over TLS when the site is served over TLS (Secure)."""
    response.set_cookie(name, value, max_age=max_age, path=path, httponly=True, samesite="lax", secure=secure)


def clear_cookie(response: Response, name: str, *, path: str, secure: bool) -> None:
    response.delete_cookie(name, path=path, httponly=True, samesite="lax", secure=secure)


# --- Static files ----------------------------------------------------------------------------------


def static_files(directory: Path) -> StaticFiles:
    """A tier's static files: its own `directory` first, then what the tiers share (`shared/static`:
    the one vendored copy of htmx), all under the tier's own static path."""
    return StaticFiles(directory=directory, packages=[("shared", "static")])


# --- Error pages ---------------------------------------------------------------------------------

ErrorRenderer = Callable[[Request, int, str], Response | Awaitable[Response]]

STATUS_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "Too large",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Unavailable",
}


def html_error_page(request: Request, status: int, message: str) -> Response:
    """A self-contained error page (no template, no script, nothing from the request but the
    escaped message). Tiers with a layout pass their own renderer to `create_web_app`."""
    title = html.escape(STATUS_TITLES.get(status, "Error"))
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{title}</title>"
        f"<h1>{title}</h1><p>{html.escape(message)}</p></html>"
    )
    return HTMLResponse(body, status_code=status)


def install_error_pages(app: FastAPI, render: ErrorRenderer) -> None:
    """Every error answers with a page from `render`: HTTP errors with their status and message,
    unreadable parameters with 400, anything unexpected with 500 (logged with its traceback,
    never shown)."""

    async def answer(request: Request, status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
        response = render(request, status, message)
        if inspect.isawaitable(response):
            response = await response
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return await answer(request, exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def unreadable(request: Request, exc: RequestValidationError) -> Response:
        return await answer(request, 400, "This page was asked for with a parameter it cannot read.")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, mask_secrets(request.url.path))
        return await answer(request, 500, "Something went wrong on our side. Please try again.")


def create_web_app(
    runtime: Runtime,
    *,
    title: str,
    description: str = "",
    with_rpc: bool = True,
    security_headers: dict[str, str] | None = None,
    openapi_url: str | None = None,
    on_startup: Callable[[FastAPI], Awaitable[None]] | None = None,
    max_body_bytes: int | None = None,
    larger_bodies: Callable[[Scope], int | None] | None = None,
    render_error: ErrorRenderer | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app whose lifespan runs `runtime` (pool, catalog, outbox relay, heartbeat) and,
    with `with_rpc`, a `RequestReply` client kept at `app.state.rpc`. `app.state.runtime` is the
    runtime. `GET /healthz` answers 200 while the database answers, 503 otherwise. With
    `max_body_bytes`, larger request bodies are refused with 413 (`BodySizeLimit`;
    `larger_bodies(scope)` may give a route, such as an upload, a limit of its own). HTML tiers
    pass `render_error`: every error becomes a page (`html_error_page` is a plain one), never a
    traceback or FastAPI's JSON."""
    headers = {**DEFAULT_SECURITY_HEADERS, **(security_headers or {})}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.configure(runtime.name, runtime.settings)
        install_access_log_masking()
        async with runtime.running():
            rpc: RequestReply | None = None
            if with_rpc:
                rpc = RequestReply(
                    runtime.settings.amqp_url,
                    name=runtime.name,
                    namespace=runtime.settings.namespace,
                    connect_timeout=runtime.settings.amqp_connect_timeout,
                )
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
    if max_body_bytes is not None:
        app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes, larger=larger_bodies)
    if render_error is not None:
        install_error_pages(app, render_error)

    app.add_middleware(ResponseHeaders, headers=lambda scope: (headers, {}))

    # Outermost: times every answer, the body limit's 413s and the error pages included.
    app.add_middleware(RequestMetrics)
    if runtime.tracer_provider is not None:
        add_tracing(app, runtime.tracer_provider)

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
