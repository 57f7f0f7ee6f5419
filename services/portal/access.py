"""Access (A1–A7): sign in, sign out (here or everywhere), forgotten password, the reset (and
invitation) page, and the emailed lead link. Every answer comes from portal_auth; this module
turns it into a page, a cookie or a redirect.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from services.portal import queries, rules
from services.portal.auth import (
    SESSION_COOKIE,
    MaybeSignedIn,
    Session,
    SignedIn,
    end_session,
    keep_presession,
    portal_of,
    presession_csrf,
    presession_form,
    session_form,
    start_session,
)
from services.portal.leads import lead_view
from services.portal.pages import field
from shared.contracts.portal_auth import Failure, LoginOk

router = APIRouter()

FORM_EXPIRED = "This form expired. Please try again."


def _sign_in_page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """A page of the signed-out part (login, forgot, reset), with its CSRF nonce cookie."""
    cookies: dict[str, str] = {}
    csrf = presession_csrf(request, cookies)
    response = portal_of(request).render(request, template, status, csrf=csrf, **context)
    keep_presession(request, response, cookies)
    return response


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse(portal_of(request).url("/dashboard"), status_code=303)


@router.get("/login")
async def login_page(request: Request, session: MaybeSignedIn) -> Response:
    portal = portal_of(request)
    next_path = rules.safe_next(request.query_params.get("next"), portal.base_path)
    if session is not None:
        return RedirectResponse(next_path or portal.url("/dashboard"), status_code=303)
    reason = request.query_params.get("reason", "")
    return _sign_in_page(
        request,
        "login.html",
        notice=rules.SIGNED_OUT_REASONS.get(reason),
        next_path=next_path,
        email="",
        errors={},
    )


@router.post("/login")
async def login(request: Request) -> Response:
    portal = portal_of(request)
    form, csrf_ok = await presession_form(request)
    email = field(form, "email").strip()
    password = field(form, "password")
    next_path = rules.safe_next(field(form, "next"), portal.base_path)
    errors: dict[str, str] = {}
    if not csrf_ok:
        errors["form"] = FORM_EXPIRED
    if not email:
        errors["email"] = "Enter your email address."
    elif len(email) > 320 or "@" not in email:
        errors["email"] = "Enter the email address you sign in with."
    if not password:
        errors["password"] = "Enter your password."
    elif len(password) > 1024:
        errors["password"] = "That password is too long."
    if errors:
        return _sign_in_page(request, "login.html", 400, email=email[:320], next_path=next_path, errors=errors)

    answer = await portal.auth_client.login(email, password)
    if isinstance(answer, LoginOk):
        response = RedirectResponse(next_path or portal.url("/dashboard"), status_code=303)
        start_session(request, response, portal, answer.session_token, answer.identity)
        return response
    assert isinstance(answer, Failure)
    status = {"throttled": 429, "unavailable": 503, "deadline_exceeded": 503}.get(answer.error, 400)
    message = rules.login_failure_message(answer.error, answer.retry_after, portal.clock())
    return _sign_in_page(request, "login.html", status, email=email, next_path=next_path, errors={"form": message})


@router.post("/logout")
async def logout(request: Request, session: SignedIn) -> Response:
    return await _sign_out(request, session, everywhere=False)


@router.post("/logout-everywhere")
async def logout_everywhere(request: Request, session: SignedIn) -> Response:
    return await _sign_out(request, session, everywhere=True)


async def _sign_out(request: Request, session: Session, *, everywhere: bool) -> Response:
    portal = portal_of(request)
    await session_form(request, session)
    client = portal.auth_client
    answer = await (client.revoke_all(session.token) if everywhere else client.logout(session.token))
    if isinstance(answer, Failure) and answer.error in ("unavailable", "deadline_exceeded"):
        return portal.render(
            request,
            "error.html",
            503,
            title="Unavailable",
            message="Signing out did not go through: the sign-in service is not answering. Please try again.",
        )
    response = RedirectResponse(portal.url("/login", {"reason": "signed_out"}), status_code=303)
    end_session(request, response, portal)
    return response


@router.get("/forgot")
async def forgot_page(request: Request) -> Response:
    return _sign_in_page(request, "forgot.html", email="", errors={}, sent=False)


@router.post("/forgot")
async def forgot(request: Request) -> Response:
    portal = portal_of(request)
    form, csrf_ok = await presession_form(request)
    email = field(form, "email").strip()
    errors: dict[str, str] = {}
    if not csrf_ok:
        errors["form"] = FORM_EXPIRED
    elif not email or len(email) > 320 or "@" not in email:
        errors["email"] = "Enter the email address you sign in with."
    if errors:
        return _sign_in_page(request, "forgot.html", 400, email=email[:320], errors=errors, sent=False)
    answer = await portal.auth_client.request_password_reset(email)
    if isinstance(answer, Failure) and answer.error in ("unavailable", "deadline_exceeded"):
        errors["form"] = "The request did not go through: please try again in a moment."
        return _sign_in_page(request, "forgot.html", 503, email=email, errors=errors, sent=False)
    # The same answer whether or not the address has an account: the page reveals nothing.
    return _sign_in_page(request, "forgot.html", email=email, errors={}, sent=True)


@router.get("/reset/{token}")
async def reset_page(request: Request, token: str) -> Response:
    return _sign_in_page(request, "reset.html", token=token, errors={})


@router.post("/reset/{token}")
async def reset(request: Request, token: str) -> Response:
    portal = portal_of(request)
    form, csrf_ok = await presession_form(request)
    password, confirm = field(form, "password"), field(form, "confirm")
    errors: dict[str, str] = {}
    if not csrf_ok:
        errors["form"] = FORM_EXPIRED
    if not password:
        errors["password"] = "Choose a password."
    elif len(password) > 1024:
        errors["password"] = "Use at most 1024 characters."
    elif password != confirm:
        errors["confirm"] = "The two passwords are not the same."
    if len(token) > 512:
        errors["form"] = "This link is not valid. Ask for a new one."
    if errors:
        return _sign_in_page(request, "reset.html", 400, token=token, errors=errors)
    answer = await portal.auth_client.reset_password(token, password)
    if not isinstance(answer, Failure):
        return RedirectResponse(portal.url("/login", {"reason": "password_set"}), status_code=303)
    if answer.error == "weak_password":
        errors["password"] = answer.message[:1].upper() + answer.message[1:] + "."
    elif answer.error in ("unavailable", "deadline_exceeded"):
        errors["form"] = "The password was not changed: please try again in a moment."
    else:
        errors["form"] = "This link has expired or was already used. Ask for a new one below."
        errors["expired"] = "yes"
    status = 503 if answer.error in ("unavailable", "deadline_exceeded") else 400
    return _sign_in_page(request, "reset.html", status, token=token, errors=errors)


@router.get("/link/{token}")
async def emailed_link(request: Request, token: str, session: MaybeSignedIn) -> Response:
    """An emailed lead link (A7): one lead, read-only, no session needed. With a session of the
    same client that may see the lead, the full lead page instead."""
    portal = portal_of(request)
    if len(token) > 512:
        return _link_refused(request, "invalid")
    answer = await portal.auth_client.check_link(token, client_id=session.identity.client_id if session else None)
    if isinstance(answer, Failure):
        kind = {
            "link_expired": "expired",
            "link_wrong_client": "wrong_client",
            "client_inactive": "inactive",
            "unavailable": "unavailable",
            "deadline_exceeded": "unavailable",
        }.get(answer.error, "invalid")
        return _link_refused(request, kind)
    viewer = rules.Viewer.of_link(answer)
    if session is not None and session.identity.client_id == answer.client_id:
        async with portal.pool.acquire() as conn:
            if await queries.lead_detail(conn, session.viewer, answer.lead_id) is not None:
                return RedirectResponse(portal.url(f"/leads/{answer.lead_id}"), status_code=303)
        # Signed in as a user of this client whose scope does not cover the lead: the link does
        # not widen it (the email went to someone else, or the lead was assigned away since).
        return _link_refused(request, "other_user")
    view = await lead_view(portal, viewer, answer.lead_id)
    if view is None:
        return _link_refused(request, "invalid")
    return portal.render(
        request,
        "link_lead.html",
        lead=view,
        expires_at=answer.expires_at,
        time_zone=portal.time_zone(answer.client_id),
    )


LINK_REFUSALS = {
    "expired": (
        410,
        "This link has expired",
        "Links in lead emails work for a limited number of days. Sign in to see the lead.",
    ),
    "invalid": (404, "This link is not valid", "The link is incomplete or was changed. Sign in to find the lead."),
    "wrong_client": (
        404,
        "This link is for another account",
        "You are signed in to a different company's portal. Sign out, then open the link again.",
    ),
    "other_user": (
        404,
        "This lead is not yours to see",
        "You are signed in as a user who does not have this lead. Ask your portal admin to assign it to you.",
    ),
    "inactive": (403, "Portal access is turned off", rules.SIGNED_OUT_REASONS["inactive"]),
    "unavailable": (503, "Please try again", "The link could not be checked right now. Please try again in a moment."),
}


def _link_refused(request: Request, kind: str) -> Response:
    status, title, message = LINK_REFUSALS[kind]
    return portal_of(request).render(request, "link_refused.html", status, title=title, message=message, kind=kind)


__all__ = ["SESSION_COOKIE", "router"]
