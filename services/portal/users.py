"""Users (H4–H8), admins only: the client's portal users, "+New" user (an invitation email sets
the password), editing a user's details, flags (Admin Access, View Downline, Enabled) and parent,
and sending a password link again.

Every change is a command to portal_auth (`create_user`, `update_user`,
`request_password_reset`), which enforces the rules itself: the admin's own client only, parents
in the same client and no cycles, disabling ends the user's sessions at once, the last enabled
admin cannot be disabled or demoted. The page shows its refusals beside the field. A non-admin,
and any id that is not a user of the admin's client, gets 404.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.portal import queries, rules
from services.portal.auth import Session, SignedIn, portal_of, session_form
from services.portal.pages import field
from shared.contracts.portal_auth import Failure

router = APIRouter()

NOT_FOUND = "There is no such page here."
NO_SUCH_USER = "There is no such user in your portal."

NOTICES = {
    "created": "The user is added. An invitation to set a password is on its way to them.",
    "created_disabled": "The user is added, disabled: no invitation was sent.",
    "saved": "The user is saved.",
    "invited": "A link to set a password is on its way.",
}


def _admin(session: Session) -> None:
    if not session.identity.is_admin:
        raise HTTPException(404, NOT_FOUND)


def _user_row(user: asyncpg.Record, names: dict[uuid.UUID, str]) -> dict[str, Any]:
    return {
        "id": user["id"],
        "name": user["name"],
        "email": user["email"],
        "phone": user["phone"] or "",
        "is_admin": user["is_admin"],
        "view_downline": user["view_downline"],
        "enabled": user["enabled"],
        "notify_new_leads": user["notify_new_leads"],
        "has_password": user["has_password"],
        "parent_user_id": user["parent_user_id"],
        "parent": names.get(user["parent_user_id"], "") if user["parent_user_id"] else "",
    }


def _names(users: list[asyncpg.Record]) -> dict[uuid.UUID, str]:
    return {u["id"]: u["name"] or u["email"] for u in users}


@router.get("/users")
async def user_list(request: Request, session: SignedIn) -> Response:
    _admin(session)
    portal = portal_of(request)
    async with portal.pool.acquire() as conn:
        users = await queries.portal_users(conn, session.viewer)
    names = _names(users)
    return portal.render(
        request,
        "users.html",
        users=[_user_row(u, names) for u in users],
        notice=NOTICES.get(request.query_params.get("saved", "")),
    )


async def _editor(
    request: Request,
    session: Session,
    *,
    user: asyncpg.Record | None,
    status: int = 200,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    """The "+New" form (user None) or a user's edit form."""
    portal = portal_of(request)
    async with portal.pool.acquire() as conn:
        users = await queries.portal_users(conn, session.viewer)
    names = _names(users)
    values: dict[str, Any]
    if form is not None:
        values = form
    elif user is not None:
        values = _user_row(user, names)
    else:
        values = {"name": "", "email": "", "phone": "", "enabled": True, "parent_user_id": None}
        values.update(dict.fromkeys(("is_admin", "view_downline", "notify_new_leads"), False))
    parents = [(u["id"], names[u["id"]], u["email"]) for u in users if user is None or u["id"] != user["id"]]
    return portal.render(
        request,
        "user_edit.html",
        status,
        user=_user_row(user, names) if user is not None else None,
        values=values,
        parents=parents,
        errors=errors or {},
        notice=notice,
    )


@router.get("/users/new")
async def new_user_page(request: Request, session: SignedIn) -> Response:
    _admin(session)
    return await _editor(request, session, user=None)


def _typed(form: Any, creating: bool) -> dict[str, Any]:
    """The form's values as typed, to show it again with its errors."""
    values: dict[str, Any] = {k: field(form, k)[:400] for k in ("name", "email", "phone")}
    values.update({k: field(form, k) == "on" for k in rules.USER_FLAGS})
    values["parent_user_id"] = rules.parse_uuid(field(form, "parent"))
    if not creating:
        values.pop("email")
    return values


async def _parent_ids(request: Request, session: Session) -> list[uuid.UUID]:
    async with portal_of(request).pool.acquire() as conn:
        return [u["id"] for u in await queries.portal_users(conn, session.viewer)]


@router.post("/users")
async def create_user(request: Request, session: SignedIn) -> Response:
    _admin(session)
    portal = portal_of(request)
    form = await session_form(request, session)
    plain = {k: field(form, k) for k in ("name", "email", "phone", "parent", *rules.USER_FLAGS)}
    checked, errors = rules.check_user_form(plain, creating=True, parents=await _parent_ids(request, session))
    if checked is None:
        return await _editor(request, session, user=None, status=400, form=_typed(form, True), errors=errors)
    answer = await portal.auth_client.create_user(
        session.token,
        checked.email,
        name=checked.name,
        phone=checked.phone or None,
        is_admin=checked.is_admin,
        view_downline=checked.view_downline,
        enabled=checked.enabled,
        notify_new_leads=checked.notify_new_leads,
        parent_user_id=checked.parent_user_id,
    )
    if isinstance(answer, Failure):
        where, message = rules.user_refusal(answer.error, answer.message)
        status = 503 if answer.error in ("unavailable", "deadline_exceeded") else 400
        return await _editor(
            request, session, user=None, status=status, form=_typed(form, True), errors={where: message}
        )
    saved = "created" if answer.user.enabled else "created_disabled"
    return RedirectResponse(portal.url("/users", {"saved": saved}), status_code=303)


async def _target(request: Request, session: Session, user_id: str) -> asyncpg.Record:
    _admin(session)
    parsed = rules.parse_uuid(user_id)
    user = None
    if parsed is not None:
        async with portal_of(request).pool.acquire() as conn:
            user = await queries.portal_user(conn, session.viewer, parsed)
    if user is None:
        raise HTTPException(404, NO_SUCH_USER)
    return user


@router.get("/users/{user_id}")
async def edit_user_page(request: Request, user_id: str, session: SignedIn) -> Response:
    user = await _target(request, session, user_id)
    return await _editor(request, session, user=user, notice=NOTICES.get(request.query_params.get("saved", "")))


@router.post("/users/{user_id}")
async def save_user(request: Request, user_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    user = await _target(request, session, user_id)
    plain = {k: field(form, k) for k in ("name", "phone", "parent", *rules.USER_FLAGS)}
    checked, errors = rules.check_user_form(plain, creating=False, parents=await _parent_ids(request, session))
    if checked is None:
        return await _editor(request, session, user=user, status=400, form=_typed(form, False), errors=errors)
    changes: dict[str, Any] = {
        "name": checked.name,
        "phone": checked.phone,
        "is_admin": checked.is_admin,
        "view_downline": checked.view_downline,
        "enabled": checked.enabled,
        "notify_new_leads": checked.notify_new_leads,
    }
    if checked.parent_user_id is not None:
        changes["parent_user_id"] = checked.parent_user_id
    else:
        changes["clear_parent"] = True
    answer = await portal.auth_client.update_user(session.token, user["id"], **changes)
    if isinstance(answer, Failure):
        where, message = rules.user_refusal(answer.error, answer.message)
        status = 503 if answer.error in ("unavailable", "deadline_exceeded") else 400
        return await _editor(
            request, session, user=user, status=status, form=_typed(form, False), errors={where: message}
        )
    if answer.user.id == session.identity.user_id and not (answer.user.enabled and answer.user.is_admin):
        # The admin took their own admin access (or account) away: this page is no longer theirs.
        return RedirectResponse(portal.url("/dashboard"), status_code=303)
    return RedirectResponse(portal.url(f"/users/{user['id']}", {"saved": "saved"}), status_code=303)


@router.post("/users/{user_id}/invite")
async def send_password_link(request: Request, user_id: str, session: SignedIn) -> Response:
    """Email the user a link to set a password (portal_auth's reset link: 60 minutes, at most one a
    minute); for a user who never accepted the invitation, or lost it."""
    portal = portal_of(request)
    await session_form(request, session)
    user = await _target(request, session, user_id)
    if not user["enabled"]:
        return await _editor(
            request,
            session,
            user=user,
            status=400,
            errors={"form": "Enable the user first: a disabled user gets no email."},
        )
    answer = await portal.auth_client.request_password_reset(user["email"])
    if isinstance(answer, Failure):
        _, message = rules.user_refusal(answer.error, answer.message)
        return await _editor(request, session, user=user, status=503, errors={"form": message})
    return RedirectResponse(portal.url(f"/users/{user['id']}", {"saved": "invited"}), status_code=303)
