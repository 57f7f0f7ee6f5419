"""The JSON API under /admin/api/v1 (OpenAPI at /admin/api/v1/openapi.json). Each route calls the
same use case or query as its page; errors are `{"error": code, "message": text, "errors":
{field: message}}` with the HTTP status (400 bad input, 401 no valid key, 403 the key's role may
not, 404 nothing there, 409 a conflict such as a stale catalog version)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.admin import queries, store, usecases
from services.admin.auth import ApiConfigurer, ApiOwner, ApiReader, console_of
from services.admin.rules import Role, Staff

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input; `errors` names each field in error"},
    401: {"description": "No valid API key"},
    403: {"description": "The key's role may not do this"},
}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    error: str
    message: str
    errors: dict[str, str] | None = None


class Ok(BaseModel):
    ok: bool = True


class Me(BaseModel):
    staff_id: str
    email: str
    name: str
    role: Role
    api_key_id: str | None


@router.get("/me", responses=ERRORS)
async def me(staff: Staff = ApiReader) -> Me:
    """Who this key acts for, and with which role."""
    return Me(staff_id=staff.staff_id, email=staff.email, name=staff.name, role=staff.role, api_key_id=staff.api_key_id)


class StaffUser(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    role: Role
    enabled: bool
    created_at: datetime


@router.get("/staff", responses=ERRORS)
async def list_staff(request: Request, staff: Staff = ApiReader) -> list[StaffUser]:
    rows = await store.list_staff(console_of(request).pool)
    return [StaffUser(**dict(r)) for r in rows]


class NewStaff(Body):
    email: str = Field(max_length=320)
    name: str = Field("", max_length=200)
    role: Role
    password: str = Field(max_length=1024)


@router.post("/staff", status_code=201, responses=ERRORS)
async def create_staff(request: Request, body: NewStaff, staff: Staff = ApiOwner) -> StaffUser:
    """Owners only. The password is set here; the user signs in to the console with it."""
    console = console_of(request)
    async with console.pool.acquire() as conn:
        staff_id = await usecases.create_staff(
            conn, console.deps, staff, email=body.email, name=body.name, role=body.role, password=body.password
        )
    row = await store.staff_by_id(console.pool, staff_id)
    assert row is not None
    return StaffUser(**{k: row[k] for k in StaffUser.model_fields})


class StaffChange(Body):
    role: Role
    enabled: bool = True


@router.put("/staff/{staff_id}", responses={**ERRORS, 404: {"model": Problem}})
async def change_staff(request: Request, staff_id: uuid.UUID, body: StaffChange, staff: Staff = ApiOwner) -> Ok:
    """Owners only: a staff user's role and whether they may sign in. The last enabled owner stays."""
    console = console_of(request)
    await usecases.change_staff(console.deps, staff, staff_id, role=body.role, enabled=body.enabled)
    return Ok()


class ApiKey(BaseModel):
    id: str
    name: str
    role: Role
    staff_email: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@router.get("/api-keys", responses=ERRORS)
async def list_keys(request: Request, staff: Staff = ApiReader) -> list[ApiKey]:
    """This key's user's keys (an owner's key: everyone's). Secrets are never shown again."""
    console = console_of(request)
    rows = await store.list_keys(console.pool, None if staff.may("manage_staff") else uuid.UUID(staff.staff_id))
    return [ApiKey(**{k: r[k] for k in ApiKey.model_fields}) for r in rows]


class NewKey(Body):
    name: str = Field(max_length=100)
    role: Role


class CreatedKey(BaseModel):
    id: str
    key: str = Field(description="The key itself: shown in this answer only, never again")


@router.post("/api-keys", status_code=201, responses=ERRORS)
async def create_key(request: Request, body: NewKey, staff: Staff = ApiConfigurer) -> CreatedKey:
    console = console_of(request)
    key_id, key = await usecases.create_key(console.deps, staff, name=body.name, role=body.role)
    return CreatedKey(id=key_id, key=key)


@router.post("/api-keys/{key_id}/revoke", responses={**ERRORS, 404: {"model": Problem}, 409: {"model": Problem}})
async def revoke_key(request: Request, key_id: str = Path(max_length=64), staff: Staff = ApiConfigurer) -> Ok:
    console = console_of(request)
    await usecases.revoke_key(console.deps, staff, key_id)
    return Ok()


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    via: Literal["console", "api", "cli"]
    api_key_id: str | None
    action: str
    target: str
    detail: dict[str, Any]


@router.get("/audit", responses=ERRORS)
async def audit(
    request: Request,
    before: int | None = Query(None, ge=1, le=2**62, description="ids below this (the next page)"),
    action: str | None = Query(None, max_length=64),
    actor: str | None = Query(None, max_length=320),
    limit: int = Query(100, ge=1, le=500),
    staff: Staff = ApiReader,
) -> list[AuditEntry]:
    """Every change made in the console, its API or `leadwire staff`, newest first."""
    rows = await queries.audit(console_of(request).pool, before=before, action=action, actor=actor, limit=limit)
    return [AuditEntry(**{k: r[k] for k in AuditEntry.model_fields}) for r in rows]
