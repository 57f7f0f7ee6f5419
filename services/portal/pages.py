"""What every portal page shares: the app's state (`Portal`), the navigation, and rendering a
template with the layout's context (who is signed in, their CSRF token, the menus).

Navigation is data: part 2 of the portal adds its pages (returns, appointments, orders, users,
settings) by adding entries here, with `admin_only` where only admins may go.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import asyncpg
from fastapi import Request, Response
from fastapi.templating import Jinja2Templates

from services.portal import rules
from services.portal_auth.client import PortalAuthClient
from shared.catalog.model import Catalog, Client, LeadType
from shared.service import Runtime
from shared.settings import Settings
from shared.web_session import WebSessions, form_text

SESSION_COOKIE = "lw_session"
PRESESSION_COOKIE = "lw_presession"

# Exports run on their own database connection; this many at once per process, so a burst of
# them cannot starve the pages (or the machine's other services) of connections and CPU.
EXPORTS_AT_ONCE = 2


@dataclass(frozen=True)
class NavEntry:
    label: str
    path: str  # under the portal's base path
    admin_only: bool = False


# The left navigation (A4), in order.
NAVIGATION: list[NavEntry] = [
    NavEntry("Dashboard", "/dashboard"),
    NavEntry("Leads", "/leads"),
    NavEntry("Returns", "/returns"),
    NavEntry("Orders", "/orders"),
    NavEntry("Appointments", "/appointments"),
    NavEntry("Users", "/users", admin_only=True),
]

# Links of the avatar menu (A5), above its sign-out buttons (which are forms, always there).
AVATAR_MENU: list[NavEntry] = [
    NavEntry("Settings", "/settings"),
    NavEntry("API keys", "/api-keys", admin_only=True),
]


@dataclass(frozen=True)
class LeadPanel:
    """A section of the lead page that another module adds (assignment, appointments, ...):
    `load(portal, session, lead view)` gives the context its template (`template`, included in
    lead.html with that context as `panel`) renders."""

    name: str
    template: str
    load: Callable[[Portal, Any, Any], Awaitable[dict[str, Any]]]


# The lead page's panels, in order, and the notices their forms may ask for after a redirect to
# the lead page (`?done=<key>`). Modules register theirs when web.py imports them.
LEAD_PANELS: list[LeadPanel] = []
LEAD_NOTICES: dict[str, str] = {}


@dataclass
class Portal:
    runtime: Runtime
    settings: Settings
    base_path: str  # "" or "/portal": the path of PORTAL_BASE_URL
    templates: Jinja2Templates
    clock: Callable[[], datetime]
    auth: PortalAuthClient | None = None
    exports: asyncio.Semaphore | None = None
    # client id -> the catalog version whose sort-key columns portal_leads was checked to hold.
    sort_columns_checked: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def build(cls, runtime: Runtime, *, clock: Callable[[], datetime], templates_dir: Path) -> Portal:
        base_path = urlsplit(runtime.settings.portal_base_url).path.rstrip("/")
        templates = Jinja2Templates(directory=templates_dir)
        portal = cls(runtime, runtime.settings, base_path, templates, clock)
        templates.env.globals["url"] = portal.url
        templates.env.globals["static"] = lambda name: f"{portal.static_path}/{name}"
        return portal

    @property
    def static_path(self) -> str:
        return f"{self.base_path}/static"

    @property
    def cookie_path(self) -> str:
        return self.base_path or "/"

    @property
    def web(self) -> WebSessions:
        """The portal's cookies and form checks (shared/web_session.py)."""
        return WebSessions(
            session_cookie=SESSION_COOKIE,
            presession_cookie=PRESESSION_COOKIE,
            csrf_secret=self.settings.portal_csrf_secret,
            public_url=self.settings.portal_base_url,
            cookie_path=self.cookie_path,
            login_path=f"{self.base_path}/login",
        )

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.runtime.pool is not None, "the portal is not started"
        return self.runtime.pool

    @property
    def catalog(self) -> Catalog:
        return self.runtime.catalog

    @property
    def auth_client(self) -> PortalAuthClient:
        assert self.auth is not None, "the portal is not started"
        return self.auth

    def export_slots(self) -> asyncio.Semaphore:
        if self.exports is None:
            self.exports = asyncio.Semaphore(EXPORTS_AT_ONCE)
        return self.exports

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        return f"{self.base_path}{path}" + (f"?{urlencode(query)}" if query else "")

    def client(self, client_id: str) -> Client | None:
        return self.catalog.clients_by_id.get(client_id)

    def time_zone(self, client_id: str) -> str:
        client = self.client(client_id)
        return client.time_zone if client else "UTC"

    def lead_types_of(self, client_id: str) -> dict[str, LeadType]:
        """The lead types the client buys (through its delivery accounts), in catalog order."""
        catalog = self.catalog
        bought = {a.lead_type for a in catalog.delivery_accounts if a.client == client_id}
        return {t.id: t for t in catalog.lead_types if t.id in bought}

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        session = getattr(request.state, "session", None)
        identity = session.identity if session is not None else None
        nav = [e for e in NAVIGATION if identity is not None and (not e.admin_only or identity.is_admin)]
        menu = [e for e in AVATAR_MENU if identity is not None and (not e.admin_only or identity.is_admin)]
        client = self.client(identity.client_id) if identity is not None else None
        base = {
            "portal": self,
            "identity": identity,
            "client": client,
            "csrf": session.csrf if session is not None else context.pop("csrf", ""),
            "nav": nav,
            "avatar_menu": menu,
            "current": request.url.path,
            "time_zone": client.time_zone if client else "UTC",
        }
        return self.templates.TemplateResponse(request, template, {**base, **context}, status_code=status)


def error_page(portal: Portal) -> Callable[[Request, int, str], Response]:
    def render(request: Request, status: int, message: str) -> Response:
        title = {404: "Not found", 403: "Not allowed", 413: "Too large", 429: "Busy", 503: "Unavailable"}.get(
            status, "Something went wrong" if status >= 500 else "Cannot do that"
        )
        if status == 404 and message in ("Not Found", ""):
            message = "There is no such page here."
        return portal.render(request, "error.html", status, title=title, message=message)

    return render


field = form_text  # a form value as text; a file or a missing field is empty


def local_time(portal: Portal, client_id: str) -> Callable[[datetime | None], str]:
    zone = portal.time_zone(client_id)
    return lambda instant: rules.format_local(instant, zone)
