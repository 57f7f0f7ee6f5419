"""The Client Portal's web tier: a server-rendered FastAPI app, one per uvicorn worker process.

    uvicorn --factory services.portal.web:create_app --host 0.0.0.0 --port 8080

It runs the portal's `Runtime` (database pool, catalog cache, outbox relay) and a multiplexed
request-reply client in its lifespan (shared/web.py), keeps nothing about users or requests in the
process, and serves every page under the path of PORTAL_BASE_URL (default /portal). Read top to
bottom: this file wires the app; auth.py is the session and CSRF; pages.py the templates and
navigation; access.py, dashboard.py and leads.py the routes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from fastapi import FastAPI
from starlette.types import Scope

from services.portal import (
    access,
    appointments,
    assignment,
    dashboard,
    disposition,
    files,
    leads,
    orders,
    returns,
    store,
    users,
)
from services.portal import api_keys as api_key_pages
from services.portal import settings as settings_pages
from services.portal.auth import SignInRequired, sign_in_redirect
from services.portal.pages import Portal, error_page
from services.portal_auth.client import PortalAuthClient
from shared.service import Runtime
from shared.settings import Settings
from shared.web import ResponseHeaders, create_web_app, static_files

HERE = Path(__file__).parent
# The route modules, each an APIRouter mounted under the base path (and an optional
# `install(portal)` run once). Part 2's pages are added here.
PAGES: tuple[ModuleType, ...] = (access, dashboard, leads)
PAGES += (settings_pages,)  # H1–H3
PAGES += (api_key_pages,)  # buyer API keys (docs/buyer-api.md)
PAGES += (users,)  # H4–H8
PAGES += (returns,)  # D5, F1–F6
PAGES += (orders,)  # G1–G14
PAGES += (assignment,)  # H5 lead assignment
PAGES += (appointments,)  # D7, E1–E7
PAGES += (files,)  # D6
PAGES += (disposition,)  # the buyer's own status of a lead (shared with the buyer API)
LEAD_COUNT_MERGE_INTERVAL = 60.0
# Forms carry a few KB at most; anything larger is refused before it is parsed.
MAX_BODY_BYTES = 64 * 1024


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    auth_timeout: float = 5.0,
) -> FastAPI:
    """The portal app. `clock` lets tests decide what "today" is for dashboards and date ranges."""
    runtime = Runtime("portal", settings)
    portal = Portal.build(runtime, clock=clock or (lambda: datetime.now(UTC)), templates_dir=HERE / "templates")
    # Deliveries count into rows of their own transaction (migration 0630); merging them keeps the
    # dashboard's per-day sums reading about one row per client and 15 minutes.
    runtime.every("lead count merge", LEAD_COUNT_MERGE_INTERVAL, lambda: store.merge_lead_counts(portal.pool))

    async def on_startup(app: FastAPI) -> None:
        portal.auth = PortalAuthClient(app.state.rpc, runtime.topology, timeout=auth_timeout)

    app = create_web_app(
        runtime,
        title="Leadwire Client Portal",
        on_startup=on_startup,
        render_error=error_page(portal),
        max_body_bytes=MAX_BODY_BYTES,
        larger_bodies=lambda scope: files.upload_limit(
            portal.base_path, portal.settings.portal_max_file_bytes, scope["path"], scope["method"]
        ),
    )
    app.state.portal = portal

    token_pages = (f"{portal.base_path}/link/", f"{portal.base_path}/reset/")

    no_store = {"Cache-Control": "no-store"}
    no_referrer = {"Referrer-Policy": "no-referrer"}

    def page_headers(scope: Scope) -> tuple[Mapping[str, str], Mapping[str, str]]:
        path = scope["path"]
        # Lead data and signed-in pages stay out of browser and proxy caches; URLs that hold a
        # secret are never sent on as a Referer, not even to ourselves.
        return (
            {} if path.startswith(portal.static_path) else no_store,
            no_referrer if path.startswith(token_pages) else {},
        )

    app.add_middleware(ResponseHeaders, headers=page_headers)
    app.add_exception_handler(SignInRequired, sign_in_redirect)  # type: ignore[arg-type]
    app.mount(portal.static_path, static_files(HERE / "static"), name="static")
    for module in PAGES:
        app.include_router(module.router, prefix=portal.base_path)
        # A page module may hook into the shared templates (e.g. the lead page's Return button).
        install = getattr(module, "install", None)
        if install is not None:
            install(portal)
    return app
