"""Who is asking, and whether they may: every route of the console and of its API depends on
`require(permission)` (pages) or `api_require(permission)` (the JSON API). web.py refuses to
start when a route has neither, so no route can be added without saying who may use it.

- Pages: cookie `lw_staff_session` = a staff session token, checked against the database on
  every request; every POST must come from our own pages and carry the CSRF token
  HMAC(ADMIN_CSRF_SECRET, "staff:" + session id); the sign-in form carries HMAC(secret, nonce)
  with the nonce in cookie `lw_staff_presession`. The cookie and form plumbing is the portal's
  too: shared/web_session.py (`Console.web`); what is the console's own is here.
- API: `Authorization: Bearer lw_staff_<id>_<secret>`; no cookies, so no CSRF to forge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import FormData

from services.admin import usecases
from services.admin.console import PRESESSION_COOKIE, SESSION_COOKIE, Console
from services.admin.rules import Permission, Staff
from shared.contracts.base import NUL
from shared.web_session import SignInRequired

__all__ = ["PRESESSION_COOKIE", "SESSION_COOKIE", "SignInRequired"]

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def refuse_nul(form: FormData) -> None:
    """PostgreSQL cannot store U+0000: a form holding one is refused before anything reads it."""
    for name, value in form.multi_items():
        if NUL in name or (isinstance(value, str) and NUL in value):
            raise HTTPException(400, "This form contains a NUL character (\\u0000), which cannot be saved.")


def csrf_binding(staff: Staff) -> str:
    return f"staff:{staff.session_id}"


async def session_staff(request: Request) -> Staff:
    console = console_of(request)
    token = console.web.session_token(request)
    if token is None:
        raise SignInRequired.of(request, None)
    staff = await usecases.verify_session(console.deps, token)
    if staff is None:
        raise SignInRequired.of(request, "expired")
    request.state.staff = staff
    request.state.csrf = console.web.form_token(csrf_binding(staff))
    return staff


def require(permission: Permission) -> Callable[[Request], Awaitable[Staff]]:
    """A page route's dependency: a signed-in staff user whose role has `permission`. A POST also
    passes the same-origin and CSRF checks here, before the route reads its form."""

    async def dependency(request: Request) -> Staff:
        staff = await session_staff(request)
        if request.method not in SAFE_METHODS:
            form, csrf_ok = await console_of(request).web.session_form(request, csrf_binding(staff))
            refuse_nul(form)
            if not csrf_ok:
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
    return console_of(request).web.sign_in_redirect(request, exc)


def start_session(request: Request, response: Response, token: str) -> None:
    console = console_of(request)
    console.web.start(request, response, token, max_age=int(console.config.session_hours * 3600))


def end_session(request: Request, response: Response) -> None:
    console_of(request).web.end(request, response)


def presession_csrf(request: Request, new_cookies: dict[str, Any]) -> str:
    return console_of(request).web.presession_csrf(request, new_cookies)


def keep_presession(request: Request, response: Response, new_cookies: dict[str, Any]) -> None:
    console_of(request).web.keep_presession(request, response, new_cookies)


async def presession_form(request: Request) -> tuple[FormData, bool]:
    form, csrf_ok = await console_of(request).web.presession_form(request)
    refuse_nul(form)
    return form, csrf_ok


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
