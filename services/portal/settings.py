"""Settings (H1–H3): the signed-in user's contact details, the new-lead notification switch, a
new password (which ends the user's other sessions) and signing out everywhere.

The portal keeps none of it: every change is a command to portal_auth (`update_user` on the
user's own record, `change_password`), answered before the page is. The page shows the values
portal_auth holds (read from `portal_users`), never a copy.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from services.portal import queries, rules
from services.portal.auth import Session, SignedIn, portal_of, session_form
from services.portal.pages import field
from shared.contracts.portal_auth import Failure

router = APIRouter()

SAVED_NOTICES = {
    "contact": "Your contact details are saved.",
    "notifications": "Your notification setting is saved.",
    "password": "Your password is changed. Your other sessions have ended; this one goes on.",
}

UNAVAILABLE = ("unavailable", "deadline_exceeded")


async def _page(
    request: Request,
    session: Session,
    status: int = 200,
    *,
    errors: dict[str, dict[str, str]] | None = None,
    typed: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    portal = portal_of(request)
    async with portal.pool.acquire() as conn:
        me = await queries.portal_user(conn, session.viewer, session.identity.user_id)
    contact = {"name": me["name"] if me else "", "phone": (me["phone"] or "") if me else ""}
    contact.update(typed or {})
    return portal.render(
        request,
        "settings.html",
        status,
        me=me,
        contact=contact,
        errors=errors or {},
        notice=notice,
        password_rules=rules.PASSWORD_HINT,
    )


@router.get("/settings")
async def settings_page(request: Request, session: SignedIn) -> Response:
    return await _page(request, session, notice=SAVED_NOTICES.get(request.query_params.get("saved", "")))


def _saved(request: Request, what: str) -> Response:
    return RedirectResponse(portal_of(request).url("/settings", {"saved": what}), status_code=303)


def _failure_message(answer: Failure) -> tuple[int, str]:
    if answer.error in UNAVAILABLE:
        return 503, "Nothing was changed: the sign-in service is not answering. Please try again in a moment."
    return 400, rules.sentence(answer.message) if answer.message else "That change was refused."


@router.post("/settings/contact")
async def save_contact(request: Request, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    checked, errors = rules.check_contact_details(field(form, "name"), field(form, "phone"))
    typed = {"name": field(form, "name")[:300], "phone": field(form, "phone")[:100]}
    if checked is None:
        return await _page(request, session, 400, errors={"contact": errors}, typed=typed)
    answer = await portal.auth_client.update_user(
        session.token, session.identity.user_id, name=checked.name, phone=checked.phone
    )
    if isinstance(answer, Failure):
        status, message = _failure_message(answer)
        return await _page(request, session, status, errors={"contact": {"form": message}}, typed=typed)
    return _saved(request, "contact")


@router.post("/settings/notifications")
async def save_notifications(request: Request, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    wanted = field(form, "notify_new_leads") == "on"
    answer = await portal.auth_client.update_user(session.token, session.identity.user_id, notify_new_leads=wanted)
    if isinstance(answer, Failure):
        status, message = _failure_message(answer)
        return await _page(request, session, status, errors={"notifications": {"form": message}})
    return _saved(request, "notifications")


@router.post("/settings/password")
async def change_password(request: Request, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    current, new, confirm = field(form, "current"), field(form, "password"), field(form, "confirm")
    errors = rules.check_new_password(current, new, confirm)
    if errors:
        return await _page(request, session, 400, errors={"password": errors})
    answer = await portal.auth_client.change_password(session.token, current, new)
    if not isinstance(answer, Failure):
        return _saved(request, "password")
    found: dict[str, str] = {}
    status = 400
    if answer.error == "invalid_credentials":
        found["current"] = "That is not your current password."
    elif answer.error == "weak_password":
        found["password"] = rules.sentence(answer.message)
    elif answer.error == "throttled":
        status = 429
        found["current"] = (
            f"Too many wrong passwords. Try again in {rules.wait_words(answer.retry_after, portal.clock())}."
        )
    else:
        status, found["form"] = _failure_message(answer)
    return await _page(request, session, status, errors={"password": found})


__all__: list[Any] = ["router"]
