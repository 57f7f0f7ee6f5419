"""Who is asking: the session cookie, checked with portal_auth on every request (never cached, so a
logout, a disabled user or an inactive client takes effect at the very next click), and the CSRF
checks every form post passes.

- Cookie `lw_session` = portal_auth's session token: HttpOnly, SameSite=Lax, Path = the portal's
  base path, Secure when the portal is served over TLS, Max-Age = the session's absolute expiry.
- Forms of a signed-in user carry HMAC(PORTAL_CSRF_SECRET, session id); the sign-in forms carry
  HMAC(secret, nonce) where the nonce is a cookie of its own (`lw_presession`), so a login form
  cannot be posted from another site either (login CSRF).
- Every POST must also come from our own pages: Sec-Fetch-Site same-origin (or none), and an
  Origin, when sent, that is ours.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from services.portal import rules
from services.portal.pages import Portal, field
from shared.contracts.portal_auth import Failure, Identity
from shared.web import (
    clear_cookie,
    cross_site,
    csrf_token,
    csrf_valid,
    served_over_tls,
    set_session_cookie,
    url_origin,
)

SESSION_COOKIE = "lw_session"
PRESESSION_COOKIE = "lw_presession"


@dataclass(frozen=True)
class Session:
    identity: Identity
    token: str
    csrf: str

    @property
    def viewer(self) -> rules.Viewer:
        return rules.Viewer.of(self.identity)


class SignInRequired(Exception):
    """No live session: back to the sign-in page, saying why (`reason`, see rules)."""

    def __init__(self, reason: str | None, next_path: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.next_path = next_path


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def secure_cookies(request: Request, portal: Portal) -> bool:
    return served_over_tls(request, portal.settings.portal_base_url)


def session_csrf(portal: Portal, identity: Identity) -> str:
    return csrf_token(portal.settings.portal_csrf_secret, f"session:{identity.session_id}")


async def current_session(request: Request) -> Session:
    """The signed-in user, verified with portal_auth now. Raises SignInRequired (handled by
    sign_in_redirect) when there is none, and 503 when portal_auth cannot answer — which is not
    a reason to sign anyone out."""
    portal = portal_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not token or len(token) > 512:
        raise SignInRequired(None, next_path if request.method == "GET" else None)
    answer = await portal.auth_client.verify(token)
    if isinstance(answer, Failure):
        if answer.error in ("unavailable", "deadline_exceeded"):
            raise HTTPException(503, "Sign-in checks are not answering right now. Please try again in a moment.")
        reason = rules.SESSION_FAILURE_REASONS.get(answer.error, "ended")
        raise SignInRequired(reason, next_path if request.method == "GET" else None)
    session = Session(answer, token, session_csrf(portal, answer))
    request.state.session = session
    return session


async def optional_session(request: Request) -> Session | None:
    """The signed-in user when there is one (pages anyone may open, like an emailed link)."""
    if not request.cookies.get(SESSION_COOKIE):
        return None
    try:
        return await current_session(request)
    except (SignInRequired, HTTPException):
        return None


# Route parameters: `session: SignedIn` (or the page sends the visitor to sign in first).
SignedIn = Annotated[Session, Depends(current_session)]
MaybeSignedIn = Annotated[Session | None, Depends(optional_session)]


async def sign_in_redirect(request: Request, exc: SignInRequired) -> Response:
    portal = portal_of(request)
    params = {k: v for k, v in (("reason", exc.reason), ("next", exc.next_path)) if v}
    target = portal.url("/login") + (f"?{urlencode(params)}" if params else "")
    # htmx follows redirects inside its request and would swap the sign-in page into the lead
    # table; HX-Redirect makes the browser go there instead.
    response: Response
    if request.headers.get("hx-request") == "true":
        response = Response(status_code=200, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        clear_cookie(response, SESSION_COOKIE, path=portal.cookie_path, secure=secure_cookies(request, portal))
    return response


def start_session(request: Request, response: Response, portal: Portal, token: str, identity: Identity) -> None:
    max_age = int((identity.session_expires_at - portal.clock()).total_seconds())
    set_session_cookie(
        response,
        SESSION_COOKIE,
        token,
        path=portal.cookie_path,
        max_age=max(max_age, 60),
        secure=secure_cookies(request, portal),
    )


def end_session(request: Request, response: Response, portal: Portal) -> None:
    clear_cookie(response, SESSION_COOKIE, path=portal.cookie_path, secure=secure_cookies(request, portal))


# --- Form posts -----------------------------------------------------------------------------------


def refuse_cross_site(request: Request, portal: Portal) -> None:
    if cross_site(request, [url_origin(portal.settings.portal_base_url)]):
        raise HTTPException(403, "This form was sent from another site, so it was refused.")


async def session_form(request: Request, session: Session) -> FormData:
    """The posted form of a signed-in user, after the same-origin and CSRF checks."""
    portal = portal_of(request)
    refuse_cross_site(request, portal)
    form = await request.form()
    if not csrf_valid(
        portal.settings.portal_csrf_secret, f"session:{session.identity.session_id}", field(form, "csrf")
    ):
        raise HTTPException(
            403, "This form has expired or did not come from this portal. Reload the page and try again."
        )
    return form


def presession_csrf(request: Request, response_cookies: dict[str, Any]) -> str:
    """The token for a sign-in form; makes a nonce cookie when the browser has none yet (it is
    set on the response by `keep_presession`)."""
    portal = portal_of(request)
    nonce = request.cookies.get(PRESESSION_COOKIE)
    if not nonce or len(nonce) > 100:
        nonce = secrets.token_urlsafe(24)
        response_cookies[PRESESSION_COOKIE] = nonce
    return csrf_token(portal.settings.portal_csrf_secret, f"pre:{nonce}")


def keep_presession(request: Request, response: Response, response_cookies: dict[str, Any]) -> None:
    portal = portal_of(request)
    for name, value in response_cookies.items():
        set_session_cookie(
            response,
            name,
            value,
            path=portal.cookie_path,
            max_age=None,
            secure=secure_cookies(request, portal),
        )


async def presession_form(request: Request) -> tuple[FormData, bool]:
    """A sign-in form (login, forgot, reset) after the same-origin check: (form, CSRF valid)."""
    portal = portal_of(request)
    refuse_cross_site(request, portal)
    form = await request.form()
    nonce = request.cookies.get(PRESESSION_COOKIE, "")
    return form, csrf_valid(portal.settings.portal_csrf_secret, f"pre:{nonce}", field(form, "csrf"))
