"""The admin console's web tier: server-rendered pages and the JSON API under /admin/api/v1, one
FastAPI app per uvicorn worker process.

    uvicorn --factory services.admin.web:create_app --host 0.0.0.0 --port 8081

It runs the admin `Runtime` (database pool, catalog cache, outbox relay — the console's commands
to other services leave through its outbox) and a request-reply client in its lifespan
(shared/web.py), keeps nothing about users or requests in the process, and serves everything under
the path of ADMIN_BASE_URL (default /admin). Read: auth.py (who may do what), console.py (pages),
access.py, options.py, operations.py (the pages), api.py (the JSON API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote_plus

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from services.admin import access, api, entries, operations, options, usecases
from services.admin.auth import SignInRequired, sign_in_redirect
from services.admin.config import AdminConfig
from services.admin.console import Console, api_error, error_page
from shared.service import Runtime
from shared.settings import Settings
from shared.web import create_web_app, static_files

HERE = Path(__file__).parent
PAGES = (access, options, operations, entries)
# Forms carry a few KB; a catalog YAML upload or an options form with many clients more.
MAX_BODY_BYTES = 1024 * 1024


def create_app(
    settings: Settings | None = None,
    *,
    config: AdminConfig | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    runtime = Runtime("admin", settings)
    config = config or AdminConfig()
    deps = usecases.Deps(runtime, config, usecases.Deps.passwords_for(config), clock or (lambda: datetime.now(UTC)))
    console = Console.build(runtime, config, deps, HERE / "templates")
    base = console.base_path

    app = create_web_app(
        runtime,
        title="Leadwire admin API",
        description=(
            "The seller's side of Leadwire: Client Options and catalog versions, returns, leads, "
            "dead letters, paused accounts, orders and the audit. Every call needs an API key "
            "(`Authorization: Bearer lw_staff_<id>_<secret>`) whose role allows it; see docs/admin.md."
        ),
        version="1",
        openapi_url=f"{base}/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        render_error=error_page(console),
        max_body_bytes=MAX_BODY_BYTES,
    )
    app.state.console = console

    refuse = error_page(console)

    @app.middleware("http")
    async def page_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # PostgreSQL cannot store or compare U+0000: a NUL in the path or the query is bad input.
        if "\x00" in request.url.path or "\x00" in unquote_plus(request.url.query):
            return refuse(request, 400, "The address contains a NUL character (\\u0000).")
        response = await call_next(request)
        if not request.url.path.startswith(console.static_path):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.add_exception_handler(SignInRequired, sign_in_redirect)  # type: ignore[arg-type]
    app.add_exception_handler(usecases.Refused, refused_answer)  # type: ignore[arg-type]
    app.mount(console.static_path, static_files(HERE / "static"), name="static")
    for module in PAGES:
        app.include_router(module.router, prefix=base)
    app.include_router(api.router, prefix=f"{base}/api/v1")
    unguarded = [f"{sorted(r.methods or ())} {path}" for path, r in console_routes(base) if route_permission(r) is None]
    if unguarded:
        raise RuntimeError(f"admin routes without a permission: {unguarded}")
    return app


async def refused_answer(request: Request, exc: usecases.Refused) -> Response:
    """A use case's refusal that its route did not turn into a page: the API's error answer
    (`errors` by field), or the error page."""
    console: Console = request.app.state.console
    if console.is_api(request):
        code = {404: "not_found", 409: "conflict"}.get(exc.status, "bad_request")
        return api_error(exc.status, code, "; ".join(exc.errors.values()), exc.errors)
    return error_page(console)(request, exc.status, "; ".join(exc.errors.values()))


def route_permission(route: APIRoute) -> str | None:
    """The permission a route requires (from its `require` / `api_require` dependency), "public"
    for the sign-in routes, None when it says nothing (web.py refuses to start then)."""
    if getattr(route.endpoint, "public", False):
        return "public"
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        permission = getattr(dependency.call, "permission", None)
        if permission is not None:
            return str(permission)
        stack.extend(dependency.dependencies)
    return None


def console_routes(base: str) -> list[tuple[str, APIRoute]]:
    """(full path, route) of every page and API route (the role-enforcement tests walk these)."""
    found = [(f"{base}{r.path}", r) for module in PAGES for r in module.router.routes if isinstance(r, APIRoute)]
    found += [(f"{base}/api/v1{r.path}", r) for r in api.router.routes if isinstance(r, APIRoute)]
    return found
