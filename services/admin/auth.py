"""Who is asking, and whether they may: every route of the console and of its API depends on
`require(permission)` (pages) or `api_require(permission)` (the JSON API). web.py refuses to
start when a route has neither, so no route can be added without saying who may use it.

- Pages: cookie `lw_staff_session` = a staff session token (HttpOnly, SameSite=Lax, Path = the
  console's base path, Secure over TLS), checked against the database on every request. Every
  POST must come from our own pages (Sec-Fetch-Site / Origin) and carry the CSRF token
  HMAC(ADMIN_CSRF_SECRET, session id); the sign-in form carries HMAC(secret, nonce) with the
  nonce in cookie `lw_staff_presession`.
- API: `Authorization: Bearer lw_staff_<id>_<secret>`; no cookies, so no CSRF to forge.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import FormData

from services.admin import usecases
from services.admin.console import Console, field
from services.admin.rules import Permission, Staff
from shared.contracts.base import NUL
from shared.web import (
    clear_cookie,
    cross_site,
    csrf_token,
    csrf_valid,
    served_over_tls,
    set_session_cookie,
    url_origin,
)

SESSION_COOKIE = "lw_staff_session"
PRESESSION_COOKIE = "lw_staff_presession"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class SignInRequired(Exception):
    def __init__(self, reason: str | None, next_path: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.next_path = next_path


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def secure_cookies(request: Request, console: Console) -> bool:
    return served_over_tls(request, console.config.base_url)


def refuse_cross_site(request: Request, console: Console) -> None:
    if cross_site(request, [url_origin(console.config.base_url)]):
        raise HTTPException(403, "This form was sent from another site, so it was refused.")


def refuse_nul(form: FormData) -> None:
    """PostgreSQL cannot store U+0000: a form holding one is refused before anything reads it."""
    for name, value in form.multi_items():
        if NUL in name or (isinstance(value, str) and NUL in value):
            raise HTTPException(400, "This form contains a NUL character (\\u0000), which cannot be saved.")


async def session_staff(request: Request) -> Staff:
    console = console_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not token or len(token) > 512:
        raise SignInRequired(None, next_path if request.method == "GET" else None)
    staff = await usecases.verify_session(console.deps, token)
    if staff is None:
        raise SignInRequired("expired", next_path if request.method == "GET" else None)
    request.state.staff = staff
    request.state.csrf = csrf_token(console.config.csrf_secret, f"staff:{staff.session_id}")
    return staff


def require(permission: Permission) -> Callable[[Request], Awaitable[Staff]]:
    """A page route's dependency: a signed-in staff user whose role has `permission`. A POST also
    passes the same-origin and CSRF checks here, before the route reads its form."""

    async def dependency(request: Request) -> Staff:
        staff = await session_staff(request)
        if request.method not in SAFE_METHODS:
            console = console_of(request)
            refuse_cross_site(request, console)
            form = await request.form()
            refuse_nul(form)
            if not csrf_valid(console.config.csrf_secret, f"staff:{staff.session_id}", field(form, "csrf")):
                raise HTTPException(403, "This form has expired or did not come from this console. Reload the page.")
        if not staff.may(permission):
            raise HTTPException(403, f"Your role ({staff.role}) may not do this.")
        return staff

    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


bearer_scheme = HTTPBearer(auto_error=False, description="An API key: `lw_staff_<id>_<secret>`.")


def api_require(permission: Permission) -> Callable[..., Awaitable[Staff]]:
    """An API route's dependency: a live API key whose (effective) role has `permission`."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
    ) -> Staff:
        unauthorized = HTTPException(
            401, "Send a valid API key: Authorization: Bearer lw_staff_...", {"WWW-Authenticate": "Bearer"}
        )
        if credentials is None or len(credentials.credentials) > 512:
            raise unauthorized
        staff = await usecases.verify_key(console_of(request).deps, credentials.credentials)
        if staff is None:
            raise unauthorized
        request.state.staff = staff
        if not staff.may(permission):
            raise HTTPException(403, f"This key's role ({staff.role}) may not do this.")
        return staff

    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency


async def sign_in_redirect(request: Request, exc: SignInRequired) -> Response:
    console = console_of(request)
    params = {k: v for k, v in (("reason", exc.reason), ("next", exc.next_path)) if v}
    target = console.url("/login", params)
    response: Response
    if request.headers.get("hx-request") == "true":
        response = Response(status_code=200, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        clear_cookie(response, SESSION_COOKIE, path=console.cookie_path, secure=secure_cookies(request, console))
    return response


def start_session(request: Request, response: Response, token: str) -> None:
    console = console_of(request)
    set_session_cookie(
        response,
        SESSION_COOKIE,
        token,
        path=console.cookie_path,
        max_age=int(console.config.session_hours * 3600),
        secure=secure_cookies(request, console),
    )


def end_session(request: Request, response: Response) -> None:
    console = console_of(request)
    clear_cookie(response, SESSION_COOKIE, path=console.cookie_path, secure=secure_cookies(request, console))


def presession_csrf(request: Request, new_cookies: dict[str, Any]) -> str:
    console = console_of(request)
    nonce = request.cookies.get(PRESESSION_COOKIE)
    if not nonce or len(nonce) > 100:
        nonce = secrets.token_urlsafe(24)
        new_cookies[PRESESSION_COOKIE] = nonce
    return csrf_token(console.config.csrf_secret, f"pre:{nonce}")


def keep_presession(request: Request, response: Response, new_cookies: dict[str, Any]) -> None:
    console = console_of(request)
    for name, value in new_cookies.items():
        set_session_cookie(
            response, name, value, path=console.cookie_path, max_age=None, secure=secure_cookies(request, console)
        )


async def presession_form(request: Request) -> tuple[FormData, bool]:
    console = console_of(request)
    refuse_cross_site(request, console)
    form = await request.form()
    refuse_nul(form)
    nonce = request.cookies.get(PRESESSION_COOKIE, "")
    return form, csrf_valid(console.config.csrf_secret, f"pre:{nonce}", field(form, "csrf"))


def public(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Marks a route anyone may call (the sign-in page and form): the one exception web.py
    accepts to "every route requires a permission"."""
    handler.public = True  # type: ignore[attr-defined]
    return handler


# Route parameters.
Reader = Depends(require("read"))
Operator = Depends(require("operate"))
Configurer = Depends(require("configure"))
Owner = Depends(require("manage_staff"))
ApiReader = Depends(api_require("read"))
ApiOperator = Depends(api_require("operate"))
ApiConfigurer = Depends(api_require("configure"))
ApiOwner = Depends(api_require("manage_staff"))
