"""Sign-in and sign-out, the overview, staff users (owners) and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from services.admin import queries, rules, store, usecases
from services.admin.auth import (
    Configurer,
    Owner,
    Reader,
    console_of,
    end_session,
    keep_presession,
    presession_csrf,
    presession_form,
    public,
    start_session,
)
from services.admin.console import field
from services.admin.rules import Staff

router = APIRouter(include_in_schema=False)

FORM_EXPIRED = "This form expired. Please try again."


def _sign_in_page(request: Request, status: int = 200, **context: Any) -> Response:
    cookies: dict[str, str] = {}
    csrf = presession_csrf(request, cookies)
    response = console_of(request).render(request, "login.html", status, csrf=csrf, **context)
    keep_presession(request, response, cookies)
    return response


@router.get("/login")
@public
async def login_page(request: Request) -> Response:
    console = console_of(request)
    reason = request.query_params.get("reason", "")
    return _sign_in_page(
        request,
        notice=rules.SIGNED_OUT_REASONS.get(reason),
        next_path=rules.safe_next(request.query_params.get("next"), console.base_path),
        email="",
        errors={},
    )


def _retry_message(retry_after: datetime | None, now: datetime) -> str:
    if retry_after is None:
        return "Too many failed attempts. Please wait and try again."
    seconds = max(1, int((retry_after - now).total_seconds()))
    wait = f"{seconds} seconds" if seconds < 120 else f"{seconds // 60} minutes"
    return f"Too many failed attempts. Try again in {wait}."


@router.post("/login")
@public
async def login(request: Request) -> Response:
    console = console_of(request)
    form, csrf_ok = await presession_form(request)
    email = field(form, "email").strip()
    password = field(form, "password")
    next_path = rules.safe_next(field(form, "next"), console.base_path)
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
        return _sign_in_page(request, 400, email=email[:320], next_path=next_path, errors=errors)
    answer = await usecases.login(console.deps, email, password)
    if isinstance(answer, usecases.LoginRefused):
        message = {
            "invalid_credentials": "That email and password do not match a staff account.",
            "disabled": "This staff account is disabled.",
        }.get(answer.reason) or _retry_message(answer.retry_after, console.deps.clock())
        status = 429 if answer.reason == "throttled" else 400
        return _sign_in_page(request, status, email=email, next_path=next_path, errors={"form": message})
    token, _ = answer
    response = RedirectResponse(next_path or console.url("/"), status_code=303)
    start_session(request, response, token)
    return response


@router.post("/logout")
async def logout(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    await usecases.logout(console.deps, staff)
    response = RedirectResponse(console.url("/login", {"reason": "signed_out"}), status_code=303)
    end_session(request, response)
    return response


@router.get("/")
async def overview(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    figures = await queries.overview(console.pool)
    return console.render(request, "overview.html", figures=figures)


# --- Staff users ---------------------------------------------------------------------------------


async def _staff_page(request: Request, status: int = 200, **context: Any) -> Response:
    console = console_of(request)
    people = await store.list_staff(console.pool)
    context.setdefault("form", {"email": "", "name": "", "role": "viewer"})
    return console.render(request, "staff.html", status, people=people, roles=rules.ROLES, **context)


@router.get("/staff")
async def staff_page(request: Request, staff: Staff = Reader) -> Response:
    return await _staff_page(request)


@router.post("/staff")
async def create_staff(request: Request, staff: Staff = Owner) -> Response:
    console = console_of(request)
    form = await request.form()
    values = {k: field(form, k) for k in ("email", "name", "role", "password")}
    try:
        async with console.pool.acquire() as conn:
            await usecases.create_staff(
                conn,
                console.deps,
                staff,
                email=values["email"],
                name=values["name"],
                role=values["role"],
                password=values["password"],
            )
    except usecases.Refused as refused:
        values.pop("password")
        return await _staff_page(request, refused.status, errors=refused.errors, form=values)
    return RedirectResponse(console.url("/staff", {"created": values["email"].strip()}), status_code=303)


@router.post("/staff/{staff_id}")
async def change_staff(request: Request, staff_id: uuid.UUID, staff: Staff = Owner) -> Response:
    console = console_of(request)
    form = await request.form()
    try:
        await usecases.change_staff(
            console.deps, staff, staff_id, role=field(form, "role"), enabled=field(form, "enabled") == "on"
        )
    except usecases.Refused as refused:
        errors = {f"{staff_id}.{k}": v for k, v in refused.errors.items()}
        return await _staff_page(request, refused.status, errors=errors)
    return RedirectResponse(console.url("/staff"), status_code=303)


# --- API keys ------------------------------------------------------------------------------------


async def _keys_page(request: Request, staff: Staff, status: int = 200, **context: Any) -> Response:
    console = console_of(request)
    keys = await store.list_keys(console.pool, None if staff.may("manage_staff") else uuid.UUID(staff.staff_id))
    context.setdefault("form", {"name": "", "role": "viewer"})
    grantable = [r for r in rules.ROLES if rules.may_grant(staff.role, r)]
    return console.render(request, "api_keys.html", status, keys=keys, roles=grantable, **context)


@router.get("/api-keys")
async def keys_page(request: Request, staff: Staff = Reader) -> Response:
    return await _keys_page(request, staff)


@router.post("/api-keys")
async def create_key(request: Request, staff: Staff = Configurer) -> Response:
    """Admins and owners make keys for themselves (a key is a change of who may act)."""
    console = console_of(request)
    form = await request.form()
    values = {"name": field(form, "name"), "role": field(form, "role")}
    try:
        key_id, key = await usecases.create_key(console.deps, staff, name=values["name"], role=values["role"])
    except usecases.Refused as refused:
        return await _keys_page(request, staff, refused.status, errors=refused.errors, form=values)
    return await _keys_page(request, staff, 201, new_key=key, new_key_id=key_id)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, staff: Staff = Configurer) -> Response:
    console = console_of(request)
    try:
        await usecases.revoke_key(console.deps, staff, key_id[:64])
    except usecases.Refused as refused:
        return await _keys_page(request, staff, refused.status, errors=refused.errors)
    return RedirectResponse(console.url("/api-keys"), status_code=303)


# --- Audit ---------------------------------------------------------------------------------------


@router.get("/audit")
async def audit_page(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    params = request.query_params
    errors: dict[str, str] = {}
    before: int | None = None
    raw_before = params.get("before", "")
    if raw_before:
        if raw_before.isdigit() and 0 < len(raw_before) < 19:
            before = int(raw_before)
        else:
            errors["before"] = "That page link is not valid."
    action = params.get("action", "")[:65]
    actor = params.get("actor", "")[:321]
    if len(action) > 64:
        errors["action"] = "An action has at most 64 characters."
    if len(actor) > 320:
        errors["actor"] = "Who has at most 320 characters."
    entries = [] if errors else await queries.audit(console.pool, before=before, action=action, actor=actor, limit=100)
    next_before = entries[-1]["id"] if len(entries) == 100 else None
    return console.render(
        request,
        "audit.html",
        400 if errors else 200,
        entries=entries,
        errors=errors,
        action=action,
        actor=actor,
        next_before=next_before,
    )
