"""Who is asking: the session cookie, checked with portal_auth on every request (never cached, so a
logout, a disabled user or an inactive client takes effect at the very next click), and the CSRF
checks every form post passes.

- Cookie `lw_session` = portal_auth's session token: HttpOnly, SameSite=Lax, Path = the portal's
  base path, Secure when the portal is served over TLS, Max-Age = the session's absolute expiry.
- Forms of a signed-in user carry HMAC(PORTAL_CSRF_SECRET, "session:" + session id); the sign-in
  forms carry HMAC(secret, nonce) where the nonce is a cookie of its own (`lw_presession`), so a
  login form cannot be posted from another site either (login CSRF).
- Every POST must also come from our own pages: Sec-Fetch-Site same-origin (or none), and an
  Origin, when sent, that is ours.

The cookie and form plumbing is the admin console's too: shared/web_session.py (`Portal.web`);
what is the portal's own (portal_auth's verdict, the session's identity) is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from starlette.datastructures import FormData

from services.portal import rules
from services.portal.pages import PRESESSION_COOKIE, SESSION_COOKIE, Portal
from shared.contracts.portal_auth import Failure, Identity
from shared.web_session import SignInRequired

__all__ = ["PRESESSION_COOKIE", "SESSION_COOKIE", "SignInRequired"]


@dataclass(frozen=True)
class Session:
    identity: Identity
    token: str
    csrf: str

    @property
    def viewer(self) -> rules.Viewer:
        return rules.Viewer.of(self.identity)


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def csrf_binding(identity: Identity) -> str:
    return f"session:{identity.session_id}"


async def current_session(request: Request) -> Session:
    """The signed-in user, verified with portal_auth now. Raises SignInRequired (handled by
    sign_in_redirect) when there is none, and 503 when portal_auth cannot answer — which is not
    a reason to sign anyone out."""
    portal = portal_of(request)
    token = portal.web.session_token(request)
    if token is None:
        raise SignInRequired.of(request, None)
    answer = await portal.auth_client.verify(token)
    if isinstance(answer, Failure):
        if answer.error in ("unavailable", "deadline_exceeded"):
            raise HTTPException(503, "Sign-in checks are not answering right now. Please try again in a moment.")
        raise SignInRequired.of(request, rules.SESSION_FAILURE_REASONS.get(answer.error, "ended"))
    session = Session(answer, token, portal.web.form_token(csrf_binding(answer)))
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
    return portal_of(request).web.sign_in_redirect(request, exc)


def start_session(request: Request, response: Response, portal: Portal, token: str, identity: Identity) -> None:
    max_age = int((identity.session_expires_at - portal.clock()).total_seconds())
    portal.web.start(request, response, token, max_age=max(max_age, 60))


def end_session(request: Request, response: Response, portal: Portal) -> None:
    portal.web.end(request, response)


# --- Form posts -----------------------------------------------------------------------------------


def refuse_cross_site(request: Request, portal: Portal) -> None:
    portal.web.refuse_cross_site(request)


async def session_form(request: Request, session: Session) -> FormData:
    """The posted form of a signed-in user, after the same-origin and CSRF checks."""
    form, csrf_ok = await portal_of(request).web.session_form(request, csrf_binding(session.identity))
    if not csrf_ok:
        raise HTTPException(
            403, "This form has expired or did not come from this portal. Reload the page and try again."
        )
    return form


def presession_csrf(request: Request, response_cookies: dict[str, Any]) -> str:
    """The token for a sign-in form (shared/web_session.py `presession_csrf`)."""
    return portal_of(request).web.presession_csrf(request, response_cookies)


def keep_presession(request: Request, response: Response, response_cookies: dict[str, Any]) -> None:
    portal_of(request).web.keep_presession(request, response, response_cookies)


async def presession_form(request: Request) -> tuple[FormData, bool]:
    """A sign-in form (login, forgot, reset) after the same-origin check: (form, CSRF valid)."""
    return await portal_of(request).web.presession_form(request)
