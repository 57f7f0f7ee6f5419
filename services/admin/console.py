"""What every console page shares: the app's state (`Console`), the navigation, and rendering a
template with the layout's context (who is signed in, their CSRF token, what they may do)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates

from services.admin.config import AdminConfig
from services.admin.rules import Permission
from services.admin.usecases import Deps
from shared.catalog.model import Catalog
from shared.rpc import RequestReply
from shared.service import Runtime
from shared.settings import Settings
from shared.web_session import WebSessions, form_text

SESSION_COOKIE = "lw_staff_session"
PRESESSION_COOKIE = "lw_staff_presession"


@dataclass(frozen=True)
class NavEntry:
    label: str
    path: str
    permission: Permission = "read"


NAVIGATION: list[NavEntry] = [
    NavEntry("Overview", "/"),
    NavEntry("Clients", "/clients"),
    NavEntry("Groups", "/groups"),
    NavEntry("Client Options", "/options"),
    NavEntry("Catalog versions", "/catalog/versions"),
    NavEntry("Returns", "/returns"),
    NavEntry("Leads", "/leads"),
    NavEntry("Dead letters", "/dead-letters"),
    NavEntry("Accounts", "/accounts"),
    NavEntry("Orders", "/orders"),
    NavEntry("Processes", "/processes"),
    NavEntry("Audit", "/audit"),
    NavEntry("Staff", "/staff"),
    NavEntry("API keys", "/api-keys"),
]


def format_time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Console:
    runtime: Runtime
    config: AdminConfig
    templates: Jinja2Templates
    deps: Deps

    @classmethod
    def build(cls, runtime: Runtime, config: AdminConfig, deps: Deps, templates_dir: Path) -> Console:
        templates = Jinja2Templates(directory=templates_dir)
        console = cls(runtime, config, templates, deps)
        templates.env.globals["url"] = console.url
        templates.env.globals["static"] = lambda name: f"{console.static_path}/{name}"
        templates.env.filters["when"] = format_time
        templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
        return console

    @property
    def base_path(self) -> str:
        return self.config.base_path

    @property
    def static_path(self) -> str:
        return f"{self.base_path}/static"

    @property
    def api_path(self) -> str:
        return f"{self.base_path}/api/v1"

    @property
    def cookie_path(self) -> str:
        return self.base_path or "/"

    @property
    def web(self) -> WebSessions:
        """The console's cookies and form checks (shared/web_session.py), from its settings now
        (tests serve it on a port known only once it is up, then set `config.base_url`)."""
        return WebSessions(
            session_cookie=SESSION_COOKIE,
            presession_cookie=PRESESSION_COOKIE,
            csrf_secret=self.config.csrf_secret,
            public_url=self.config.base_url,
            cookie_path=self.cookie_path,
            login_path=f"{self.base_path}/login",
        )

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.runtime.pool is not None, "the console is not started"
        return self.runtime.pool

    @property
    def catalog(self) -> Catalog:
        return self.runtime.catalog

    def rpc(self, request: Request) -> RequestReply:
        rpc: RequestReply = request.app.state.rpc
        return rpc

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        return f"{self.base_path}{path}" + (f"?{urlencode(query, doseq=True)}" if query else "")

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        staff = getattr(request.state, "staff", None)
        nav = [e for e in NAVIGATION if staff is not None and staff.may(e.permission)]
        base: dict[str, Any] = {
            "console": self,
            "staff": staff,
            "csrf": getattr(request.state, "csrf", "") or context.pop("csrf", ""),
            "nav": nav,
            "current": request.url.path,
            "errors": {},
        }
        return self.templates.TemplateResponse(request, template, {**base, **context}, status_code=status)

    def is_api(self, request: Request) -> bool:
        return request.url.path.startswith(self.api_path + "/") or request.url.path == self.api_path


def api_error(status: int, code: str, message: str, errors: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if errors:
        body["errors"] = dict(errors)
    return JSONResponse(body, status_code=status)


API_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    428: "precondition_required",
    429: "throttled",
    503: "unavailable",
}


def error_page(console: Console) -> Callable[[Request, int, str], Response]:
    def render(request: Request, status: int, message: str) -> Response:
        if console.is_api(request):
            code = API_CODES.get(status, "error" if status < 500 else "internal")
            return api_error(status, code, message)
        title = {404: "Not found", 403: "Not allowed", 413: "Too large", 429: "Busy", 503: "Unavailable"}.get(
            status, "Something went wrong" if status >= 500 else "Cannot do that"
        )
        if status == 404 and message in ("Not Found", ""):
            message = "There is no such page here."
        return console.render(request, "error.html", status, title=title, message=message)

    return render


field = form_text  # a form value as text; a file or a missing field is empty


def jsonable(value: Any) -> Any:
    """Records and values as JSON the API can answer with (decimals as strings)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
