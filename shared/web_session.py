"""The sign-in plumbing Leadwire's HTML tiers (the Client Portal, the admin console) share: the
session cookie, the sign-in forms' pre-session nonce and CSRF token, the same-origin check of
every form post, and the way back to the sign-in page. Who the session belongs to, and how it is
checked (portal_auth over request-reply for the portal, the console's own tables for staff), stays
in each service: a tier builds a `WebSessions` from its settings and calls it.

- The session cookie holds the tier's session token: HttpOnly, SameSite=Lax, Path = the tier's
  base path, Secure when the tier is served over TLS (shared/web.py `set_session_cookie`).
- A signed-in user's forms carry HMAC(csrf secret, a binding of their session id) (`form_token`);
  the sign-in forms carry HMAC(secret, "pre:" + nonce), the nonce in a cookie of its own, so a
  sign-in form cannot be posted from another site either (login CSRF).
- Every POST must come from the tier's own pages (shared/web.py `cross_site`: Sec-Fetch-Site,
  Origin), checked before its form is read.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from shared.web import clear_cookie, cross_site, csrf_token, csrf_valid, served_over_tls, set_session_cookie, url_origin

FOREIGN_FORM = "This form was sent from another site, so it was refused."
MAX_TOKEN_LENGTH = 512  # a longer cookie is no token of ours: not even looked up
MAX_NONCE_LENGTH = 100


class SignInRequired(Exception):
    """No live session: back to the sign-in page, saying why (`reason`) and, for a page that was
    asked for (GET), where to come back to (`next_path`)."""

    def __init__(self, reason: str | None, next_path: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.next_path = next_path

    @classmethod
    def of(cls, request: Request, reason: str | None) -> SignInRequired:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return cls(reason, here if request.method == "GET" else None)


def form_text(form: Mapping[str, Any], name: str) -> str:
    """A form value as text; a file or a missing field is empty."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class WebSessions:
    """One tier's cookies and form checks. `public_url` is the tier's base URL as browsers reach
    it (its origin is accepted as ours; https makes the cookies Secure); `login_path` is the path
    of its sign-in page."""

    session_cookie: str
    presession_cookie: str
    csrf_secret: str
    public_url: str
    cookie_path: str
    login_path: str

    def secure(self, request: Request) -> bool:
        return served_over_tls(request, self.public_url)

    def session_token(self, request: Request) -> str | None:
        """The session cookie's token, or None when there is none (or it cannot be one)."""
        token = request.cookies.get(self.session_cookie)
        return token if token and len(token) <= MAX_TOKEN_LENGTH else None

    # --- form posts ----------------------------------------------------------------------------

    def refuse_cross_site(self, request: Request) -> None:
        if cross_site(request, [url_origin(self.public_url)]):
            raise HTTPException(403, FOREIGN_FORM)

    def form_token(self, binding: str) -> str:
        """The CSRF token of a signed-in user's forms, bound to (a label of) their session id."""
        return csrf_token(self.csrf_secret, binding)

    async def session_form(self, request: Request, binding: str) -> tuple[FormData, bool]:
        """A signed-in user's posted form after the same-origin check: (form, its CSRF token is
        the one of `binding`)."""
        self.refuse_cross_site(request)
        form = await request.form()
        return form, csrf_valid(self.csrf_secret, binding, form_text(form, "csrf"))

    def presession_csrf(self, request: Request, new_cookies: dict[str, Any]) -> str:
        """The token of a sign-in form; makes a nonce when the browser has none yet (put in
        `new_cookies`, set on the response by `keep_presession`)."""
        nonce = request.cookies.get(self.presession_cookie)
        if not nonce or len(nonce) > MAX_NONCE_LENGTH:
            nonce = secrets.token_urlsafe(24)
            new_cookies[self.presession_cookie] = nonce
        return csrf_token(self.csrf_secret, f"pre:{nonce}")

    def keep_presession(self, request: Request, response: Response, new_cookies: Mapping[str, Any]) -> None:
        for name, value in new_cookies.items():
            set_session_cookie(response, name, value, path=self.cookie_path, max_age=None, secure=self.secure(request))

    async def presession_form(self, request: Request) -> tuple[FormData, bool]:
        """A sign-in form (sign in, forgot, reset) after the same-origin check: (form, CSRF valid)."""
        self.refuse_cross_site(request)
        form = await request.form()
        nonce = request.cookies.get(self.presession_cookie, "")
        return form, csrf_valid(self.csrf_secret, f"pre:{nonce}", form_text(form, "csrf"))

    # --- the session cookie --------------------------------------------------------------------

    def start(self, request: Request, response: Response, token: str, max_age: int) -> None:
        set_session_cookie(
            response, self.session_cookie, token, path=self.cookie_path, max_age=max_age, secure=self.secure(request)
        )

    def end(self, request: Request, response: Response) -> None:
        clear_cookie(response, self.session_cookie, path=self.cookie_path, secure=self.secure(request))

    def sign_in_redirect(self, request: Request, exc: SignInRequired) -> Response:
        """To the sign-in page (with why, and where to come back to), dropping a dead session
        cookie. htmx follows redirects inside its request and would swap the sign-in page into
        the page's fragment; HX-Redirect makes the browser go there instead."""
        params = {k: v for k, v in (("reason", exc.reason), ("next", exc.next_path)) if v}
        target = self.login_path + (f"?{urlencode(params)}" if params else "")
        response: Response
        if request.headers.get("hx-request") == "true":
            response = Response(status_code=200, headers={"HX-Redirect": target})
        else:
            response = RedirectResponse(target, status_code=303)
        if request.cookies.get(self.session_cookie):
            self.end(request, response)
        return response
