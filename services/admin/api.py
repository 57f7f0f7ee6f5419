"""The JSON API under /admin/api/v1 (OpenAPI at /admin/api/v1/openapi.json). Each route calls the
same use case or query as its page; errors are `{"error": code, "message": text, "errors":
{field: message}}` with the HTTP status (400 bad input, 401 no valid key, 403 the key's role may
not, 404 nothing there, 409 a conflict such as a stale catalog version)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.admin import deadletters, masking, operations, queries, rules, store, usecases
from services.admin.auth import ApiConfigurer, ApiOperator, ApiOwner, ApiReader, console_of
from services.admin.console import jsonable
from services.admin.options import form_values
from services.admin.rules import Role, Staff
from shared import orders
from shared.catalog.store import load_latest
from shared.contracts.base import NUL_MESSAGE, nul_paths

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input; `errors` names each field in error"},
    401: {"description": "No valid API key"},
    403: {"description": "The key's role may not do this"},
}


class Body(BaseModel):
    """A request body: no unknown fields, and no NUL character anywhere (PostgreSQL refuses it)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if paths := nul_paths(data):
            raise ValueError(f"{', '.join(paths) or 'the body'} {NUL_MESSAGE}")
        return data


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


# --- The catalog and the Client Options ------------------------------------------------------------


def if_match(request: Request) -> int:
    """The catalog version an edit starts from: header `If-Match: <version>` (quotes allowed)."""
    raw = (request.headers.get("if-match") or "").strip().strip('"').removeprefix("W/").strip('"')
    if not raw:
        raise HTTPException(428, 'Send If-Match: "<catalog version>" (the version this edit starts from).')
    if not raw.isdigit() or len(raw) > 18:
        raise HTTPException(400, "If-Match must be a catalog version number.")
    return int(raw)


class Saved(BaseModel):
    version: int = Field(description="The catalog version now current")
    changed: bool = Field(description="False when the edit changed nothing (no new version)")


async def saved(request: Request, version: int | None) -> JSONResponse:
    current, _ = await load_latest(console_of(request).pool)
    return JSONResponse({"version": current, "changed": version is not None}, headers={"ETag": f'"{current}"'})


class CatalogDocument(BaseModel):
    version: int
    document: dict[str, Any]


@router.get("/catalog", responses=ERRORS)
async def get_catalog(request: Request, staff: Staff = ApiReader) -> JSONResponse:
    """The current catalog version and its document (as `leadwire catalog export` would print it,
    but as stored: orders with their applied status), buyers' credentials masked for every role
    (docs/admin.md, "Buyers' credentials"). The ETag is the version."""
    version, catalog = await load_latest(console_of(request).pool)
    body = CatalogDocument(version=version, document=masking.mask_document(catalog.model_dump(mode="json")))
    return JSONResponse(body.model_dump(mode="json"), headers={"ETag": f'"{version}"'})


class CatalogText(Body):
    yaml: str = Field(max_length=900_000, description="The whole catalog, as YAML (docs/catalog.md)")


CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "Someone saved another version since If-Match"}
}
PRECONDITION: dict[int | str, dict[str, Any]] = {428: {"model": Problem, "description": "No If-Match header"}}


@router.put("/catalog", responses={**ERRORS, **CONFLICT, **PRECONDITION}, response_model=Saved)
async def put_catalog(request: Request, body: CatalogText, staff: Staff = ApiConfigurer) -> JSONResponse:
    """Replace the whole catalog: validated exactly as `leadwire catalog apply` (`errors.yaml`
    lists every error with its line), applied as a new version only if the current version is
    still the one in If-Match."""
    version = await usecases.save_catalog_text(console_of(request).deps, staff, if_match(request), body.yaml)
    return await saved(request, version)


class EffectiveValue(BaseModel):
    key: str
    label: str
    value: str
    source: Literal["global", "client", "group", "account", "order"]
    detail: str


class ClientOptionsView(BaseModel):
    id: str
    name: str
    overrides: dict[str, Any]
    effective: list[EffectiveValue]


class OptionsView(BaseModel):
    version: int
    options: dict[str, Any]
    groups: dict[str, bool | None]
    clients: list[ClientOptionsView]


@router.get("/options", responses=ERRORS)
async def get_options(request: Request, staff: Staff = ApiReader) -> OptionsView:
    """The Client Options: global values, each group's Apply Groups as Criteria, each client's
    overrides and effective values with their source."""
    version, catalog = await load_latest(console_of(request).pool)
    return OptionsView(
        version=version,
        options=catalog.options.model_dump(mode="json"),
        groups={g.id: g.apply_groups_as_criteria for g in catalog.groups},
        clients=[
            ClientOptionsView(
                id=c.id,
                name=c.name,
                overrides=c.options.model_dump(mode="json", exclude_none=True),
                effective=[EffectiveValue(**vars(e)) for e in rules.effective_options(catalog, c.id)],
            )
            for c in catalog.clients
        ],
    )


Scalar = bool | int | float | str | None


class OptionsEdit(Body):
    options: dict[str, Scalar] = Field(
        default_factory=dict, description="Global options to change (others stay as they are)"
    )
    clients: dict[str, dict[str, Scalar]] = Field(
        default_factory=dict,
        description="Per client id: overrides to set; null removes an override (the client follows the global option)",
    )
    groups: dict[str, bool | None] = Field(
        default_factory=dict, description="Per group id: apply_groups_as_criteria; null follows the global option"
    )


def _form_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@router.put("/options", responses={**ERRORS, **CONFLICT, **PRECONDITION}, response_model=Saved)
async def put_options(request: Request, body: OptionsEdit, staff: Staff = ApiConfigurer) -> JSONResponse:
    """Change Client Options: the same use case as the screen (errors by field, named as the
    screen's fields: `global.<option>`, `client.<id>.<override>`, `group.<id>.apply_groups_as_criteria`)."""
    console = console_of(request)
    base = if_match(request)
    _, catalog = await load_latest(console.pool)
    form = form_values(catalog)
    errors: dict[str, str] = {}
    for key, value in body.options.items():
        if f"global.{key}" not in form:
            errors[f"global.{key}"] = "There is no such option."
        form[f"global.{key}"] = _form_text(value)
    for client_id, overrides in body.clients.items():
        for key, value in overrides.items():
            name = f"client.{client_id}.{key}"
            if name not in form:
                errors[name] = "There is no such client or override."
            form[name] = _form_text(value)
    for group_id, group_value in body.groups.items():
        name = f"group.{group_id}.apply_groups_as_criteria"
        if name not in form:
            errors[name] = "There is no such group."
        form[name] = _form_text(group_value)
    if errors:
        raise usecases.Refused(errors)
    version = await usecases.save_options(console.deps, staff, base, form)
    return await saved(request, version)


class VersionSummary(BaseModel):
    version: int
    applied_at: datetime
    applied_by: str
    digest: str


@router.get("/catalog/versions", responses=ERRORS)
async def list_versions(
    request: Request,
    before: int | None = Query(None, ge=1, le=2**62),
    limit: int = Query(50, ge=1, le=500),
    staff: Staff = ApiReader,
) -> list[VersionSummary]:
    rows = await queries.catalog_versions(console_of(request).pool, before=before, limit=limit)
    return [VersionSummary(**dict(r)) for r in rows]


class VersionView(VersionSummary):
    document: dict[str, Any]
    diff: list[str] = Field(description="Unified diff of the YAML against the previous version")


@router.get("/catalog/versions/{version}", responses={**ERRORS, 404: {"model": Problem}})
async def get_version(request: Request, version: int = Path(ge=1, le=2**62), staff: Staff = ApiReader) -> VersionView:
    pool = console_of(request).pool
    row = await queries.catalog_version(pool, version)
    if row is None:
        raise HTTPException(404, f"There is no catalog version {version}.")
    previous = await queries.previous_version(pool, version)
    before = masking.masked_yaml(previous["document"] if previous else None)
    diff = rules.text_diff(
        before,
        masking.masked_yaml(row["document"]),
        before_name=f"version {previous['version']}" if previous else "(nothing)",
        after_name=f"version {version}",
    )
    shown = {**dict(row), "document": masking.mask_document(dict(row["document"]))}
    return VersionView(**shown, diff=[line for _, line in diff])


# --- Returns -------------------------------------------------------------------------------------


class CapView(BaseModel):
    scope: Literal["delivery_account", "order"]
    key: str
    pct: str
    delivered: int
    counted: int
    allowed: int


class ReturnView(BaseModel):
    id: uuid.UUID
    client_id: str
    lead_id: uuid.UUID
    lead_type_id: str
    source_id: str
    delivery_id: uuid.UUID | None
    delivery_account_id: str | None
    order_id: str | None
    price: str | None
    reason: str
    comment: str | None
    status: str
    decision_reason: str | None
    note: str | None
    requested_by: str | None
    decided_by: str | None
    delivered_at: datetime | None
    requested_at: datetime
    decided_at: datetime | None
    caps: list[CapView] = Field(description="For a pending return: the caps it counts against, this month")


@router.get("/returns", responses=ERRORS)
async def list_returns(
    request: Request,
    status: Literal["pending", "approved", "denied", "all"] = "pending",
    client: str | None = Query(None, max_length=64),
    staff: Staff = ApiReader,
) -> list[ReturnView]:
    """The returns queue (default: pending, oldest first) with lead, delivery and cap usage."""
    console = console_of(request)
    if client and client not in console.catalog.clients_by_id:
        raise usecases.Refused({"client": "There is no such client."})
    rows = await operations.returns_rows(console, {"status": status, "client": client or ""})
    return [
        ReturnView(
            **{k: v for k, v in row.items() if k in ReturnView.model_fields and k not in ("caps", "price")},
            price=None if row["price"] is None else str(row["price"]),
            caps=[
                CapView(
                    scope=c.scope,
                    key=c.key,
                    pct=str(c.pct),
                    delivered=c.delivered,
                    counted=c.counted,
                    allowed=c.allowed,
                )
                for c in row["caps"]
            ],
        )
        for row in rows
    ]


class Decisions(Body):
    return_ids: list[uuid.UUID] = Field(min_length=1, max_length=usecases.MAX_BULK)
    decision: Literal["approve", "deny"]
    note: str = Field(min_length=1, max_length=2000)


class Sent(BaseModel):
    sent: int = Field(description="return.decide commands sent to the returns service")


@router.post("/returns/decisions", status_code=202, responses={**ERRORS, 409: {"model": Problem}})
async def decide_returns(request: Request, body: Decisions, staff: Staff = ApiOperator) -> Sent:
    """Approve or deny pending returns (all or nothing); the returns service applies each command
    once. 202: sent; poll `GET /returns?status=all` for the outcome."""
    count = await usecases.decide_returns(console_of(request).deps, staff, body.return_ids, body.decision, body.note)
    return Sent(sent=count)


# --- Leads ---------------------------------------------------------------------------------------


class LeadSummary(BaseModel):
    id: uuid.UUID
    source_id: str
    idempotency_key: str
    lead_type_id: str
    status: str
    reason: str | None
    received_at: datetime
    decided_at: datetime | None
    sold_to: str | None


class LeadPage(BaseModel):
    leads: list[LeadSummary]
    next_before: str | None = Field(description="Pass as `before` for the next (older) page")


@router.get("/leads", responses=ERRORS)
async def search_leads(
    request: Request,
    id: str | None = Query(None, max_length=100),
    source: str | None = Query(None, max_length=200),
    key: str | None = Query(None, max_length=200, description="idempotency key"),
    status: str | None = Query(None, max_length=20),
    type: str | None = Query(None, max_length=64, description="lead type id"),
    from_: str | None = Query(None, alias="from", max_length=10, description="received on or after (YYYY-MM-DD, UTC)"),
    to: str | None = Query(None, max_length=10, description="received on or before (YYYY-MM-DD, UTC)"),
    contact: str | None = Query(None, max_length=200, description="an email or phone (any field value)"),
    before: str | None = Query(None, max_length=200),
    staff: Staff = ApiReader,
) -> LeadPage:
    """Lead search, newest first, 100 a page; the same filters and errors as the Leads page."""
    rows, errors, _, after = await operations.search(console_of(request), request.query_params)
    if errors:
        raise usecases.Refused(errors)
    return LeadPage(leads=[LeadSummary(**{k: r[k] for k in LeadSummary.model_fields}) for r in rows], next_before=after)


class StepView(BaseModel):
    at: datetime | None
    kind: str
    title: str
    detail: str
    body: str


class LeadView(BaseModel):
    lead: LeadSummary
    timeline: list[StepView]


@router.get("/leads/{lead_id}", responses={**ERRORS, 404: {"model": Problem}})
async def get_lead(request: Request, lead_id: uuid.UUID, staff: Staff = ApiReader) -> LeadView:
    """A lead and its timeline (post requests and responses masked)."""
    lead, steps = await operations.lead_timeline(console_of(request), lead_id)
    summary = LeadSummary(**{k: lead[k] for k in LeadSummary.model_fields if k != "sold_to"}, sold_to=None)
    return LeadView(lead=summary, timeline=[StepView(**vars(s)) for s in steps])


# --- Operations ----------------------------------------------------------------------------------


class QueueView(BaseModel):
    logical: str
    name: str
    depth: int | None
    consumers: int | None
    dlq_depth: int | None
    open_rows: int
    last_error: str | None
    last_at: datetime | None


@router.post(
    "/leads/{lead_id}/reroute",
    status_code=202,
    responses={**ERRORS, 404: {"model": Problem}, 409: {"model": Problem, "description": "The lead is not unsold"}},
)
async def reroute_lead(request: Request, lead_id: uuid.UUID, staff: Staff = ApiOperator) -> Ok:
    """Offer an unsold lead again under the current catalog: sent to the router as
    `router.reroute`; `GET /leads/{id}` shows what became of it."""
    await usecases.reroute_lead(console_of(request).deps, staff, lead_id)
    return Ok()


class DeadLetterView(BaseModel):
    id: int
    queue: str
    message_id: str | None
    error: str
    body_preview: str
    headers: dict[str, Any]
    created_at: datetime


class DeadLetters(BaseModel):
    queues: list[QueueView]
    open: list[DeadLetterView]


@router.get("/dead-letters", responses=ERRORS)
async def list_dead_letters(
    request: Request, queue: str | None = Query(None, max_length=300), staff: Staff = ApiReader
) -> DeadLetters:
    """Per work queue: depth, consumers, DLQ depth, open dead letters and the latest error; and the
    open dead letters (200 newest; one queue with `queue` = its full name)."""
    console = console_of(request)
    if queue and not deadletters.full_queue_known(queue, console.runtime.topology):
        raise usecases.Refused({"queue": "There is no such queue."})
    figures = await deadletters.figures(console.pool, console.settings.amqp_url, console.runtime.topology)
    rows = await deadletters.open_rows(console.pool, queue or None)
    return DeadLetters(
        queues=[QueueView(**vars(q)) for q in figures],
        open=[
            DeadLetterView(
                **{k: r[k] for k in ("id", "queue", "message_id", "error", "headers", "created_at")},
                body_preview=deadletters.preview(r["body"]),
            )
            for r in rows
        ],
    )


class Replayed(BaseModel):
    id: int
    body_from: Literal["dlq", "table"]


DL_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"model": Problem},
    409: {"model": Problem, "description": "Already replayed or purged"},
}


class BulkDeadLetters(Body):
    action: Literal["replay", "purge"]
    ids: list[int] = Field(default_factory=list, max_length=500, description="Dead letter ids (or give `queue`)")
    queue: str | None = Field(
        None, max_length=300, description="A queue's full name: every open dead letter of it (oldest first, ≤ 500)"
    )


class BulkItem(BaseModel):
    id: int
    result: str = Field(description="replay: dlq/table (where the body came from); purge: what was removed")


class BulkSkipped(BaseModel):
    id: int
    reason: str


class BulkDone(BaseModel):
    done: list[BulkItem]
    skipped: list[BulkSkipped]


@router.post("/dead-letters/bulk", responses=ERRORS)
async def bulk_dead_letters(request: Request, body: BulkDeadLetters, staff: Staff = ApiOperator) -> BulkDone:
    """Replay or purge many dead letters: each exactly as the single call (same message id, its own
    audit row); one that cannot be done is listed under `skipped`, the others still go."""
    if body.ids and body.queue is not None:
        raise usecases.Refused({"ids": "Give ids or a queue, not both."})
    outcome = await usecases.bulk_dead_letters(console_of(request).deps, staff, body.action, body.ids, body.queue)
    return BulkDone(
        done=[BulkItem(id=i, result=r) for i, r in outcome.done],
        skipped=[BulkSkipped(id=i, reason=r) for i, r in outcome.skipped],
    )


@router.post("/dead-letters/{dead_letter_id}/replay", responses=DL_ERRORS)
async def replay_dead_letter(
    request: Request, dead_letter_id: int = Path(ge=1, le=2**62), staff: Staff = ApiOperator
) -> Replayed:
    """Republish to its queue with the same message id (consumers are idempotent), recorded."""
    source = await usecases.replay_dead_letter(console_of(request).deps, staff, dead_letter_id)
    return Replayed(id=dead_letter_id, body_from=source)


class Purged(BaseModel):
    id: int
    dlq_copy_removed: bool


@router.post("/dead-letters/{dead_letter_id}/purge", responses=DL_ERRORS)
async def purge_dead_letter(
    request: Request, dead_letter_id: int = Path(ge=1, le=2**62), staff: Staff = ApiOperator
) -> Purged:
    removed = await usecases.purge_dead_letter(console_of(request).deps, staff, dead_letter_id)
    return Purged(id=dead_letter_id, dlq_copy_removed=removed)


class AccountView(BaseModel):
    id: str
    client: str
    lead_type: str
    active: bool
    price: str
    method: str
    paused: bool
    paused_at: datetime | None
    paused_reason: str | None
    failures: int


@router.get("/accounts", responses=ERRORS)
async def list_accounts(request: Request, staff: Staff = ApiReader) -> list[AccountView]:
    """Delivery accounts with their pause state (paused first)."""
    rows = await operations.accounts_view(console_of(request))
    return [AccountView(**{**a, "price": str(a["price"])}) for a in rows]


@router.post(
    "/accounts/{account_id}/resume", responses={**ERRORS, 409: {"model": Problem, "description": "Not paused"}}
)
async def resume_account(request: Request, account_id: str = Path(max_length=64), staff: Staff = ApiOperator) -> Ok:
    await usecases.resume_account(console_of(request).deps, staff, account_id)
    return Ok()


class OrderView(BaseModel):
    order_id: str
    client_id: str
    order_type: str
    status: str
    period: int
    total: str
    received: str
    remaining: str
    in_flight: str
    cost: str
    amount_paid: str


@router.get("/orders", responses=ERRORS)
async def list_orders(request: Request, staff: Staff = ApiReader) -> list[OrderView]:
    figures = await orders.order_figures(console_of(request).pool)
    return [OrderView(**{k: jsonable(getattr(f, k)) for k in OrderView.model_fields}) for f in figures]


class Payment(Body):
    amount: str = Field(max_length=20, description="Above 0, at most 2 decimals")
    note: str = Field("", max_length=500)


class Paid(BaseModel):
    order_id: str
    amount_paid: str


@router.post("/orders/{order_id}/payment", responses={**ERRORS, 404: {"model": Problem}})
async def order_payment(
    request: Request, body: Payment, order_id: str = Path(max_length=64), staff: Staff = ApiOperator
) -> Paid:
    paid = await usecases.order_payment(console_of(request).deps, staff, order_id, body.amount, body.note)
    return Paid(order_id=order_id, amount_paid=str(paid))


class OrderAction(Body):
    action: Literal["pause", "resume", "close"]


@router.post("/orders/{order_id}/status", status_code=202, responses={**ERRORS, 404: {"model": Problem}})
async def order_status(
    request: Request, body: OrderAction, order_id: str = Path(max_length=64), staff: Staff = ApiOperator
) -> Ok:
    """Sent as `order.command` to the returns service; `GET /orders` shows the status it records."""
    await usecases.order_command(console_of(request).deps, staff, order_id, body.action)
    return Ok()


# --- Clients -------------------------------------------------------------------------------------


class PortalAdmin(Body):
    email: str = Field(max_length=320)
    name: str = Field("", max_length=200)


@router.post(
    "/clients/{client_id}/portal-admin",
    status_code=201,
    responses={**ERRORS, 404: {"model": Problem}, 409: {"model": Problem, "description": "The client has users"}},
)
async def invite_portal_admin(
    request: Request, body: PortalAdmin, client_id: str = Path(max_length=64), staff: Staff = ApiConfigurer
) -> Ok:
    """A client's first portal admin, invited by email to set a password (errors under
    `invite_email` / `invite_name`). Clients themselves are edited with `PUT /catalog`."""
    await usecases.invite_portal_admin(console_of(request).deps, staff, client_id, body.email, body.name)
    return Ok()


# --- Catalog entries: delivery accounts, groups, orders --------------------------------------------


class CatalogEntry(Body):
    """One entry as it stands in the catalog (docs/catalog.md: `delivery_accounts`, `groups`,
    `orders`), validated by the catalog itself; every error is named by its path in the entry
    (`price`, `delivery.url`, `criteria.0.op`), as on the console's form."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})


class EntryView(BaseModel):
    version: int = Field(description="The catalog version it is from (also the ETag)")
    entry: dict[str, Any]


class EntryList(BaseModel):
    version: int
    entries: list[dict[str, Any]]


class EntrySaved(BaseModel):
    version: int = Field(description="The catalog version now current")
    changed: bool = Field(description="False when the edit changed nothing (no new version)")
    id: str


ENTRY_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, **CONFLICT, **PRECONDITION}


async def _get_entry(request: Request, kind: rules.EntryKind, entry_id: str) -> JSONResponse:
    version, catalog = await load_latest(console_of(request).pool)
    section, noun = rules.ENTRY_KINDS[kind]
    found = next((e for e in catalog.model_dump(mode="json")[section] if e["id"] == entry_id), None)
    if found is None:
        raise HTTPException(404, f"There is no {noun} {entry_id}.")
    if kind == "account":
        found = masking.mask_account(found)  # for every key's role; a PUT of the mask keeps the secret
    body = EntryView(version=version, entry=found).model_dump(mode="json")
    return JSONResponse(body, headers={"ETag": f'"{version}"'})


async def _save_entry(
    request: Request, staff: Staff, kind: rules.EntryKind, entry_id: str | None, body: CatalogEntry
) -> JSONResponse:
    base = if_match(request)
    entry = body.model_dump(mode="json")
    if entry_id is not None and "id" in entry and entry["id"] != entry_id:
        raise usecases.Refused({"id": "An entry's id cannot be changed (it is the address of this call)."})
    if entry_id is None and not isinstance(entry.get("id"), str):
        raise usecases.Refused({"id": "Give the new entry's id."})
    version, target = await usecases.save_entry(
        console_of(request).deps, staff, base, kind, entry_id, lambda _current: (dict(entry), {}, {})
    )
    current, _ = await load_latest(console_of(request).pool)
    answer = EntrySaved(version=current, changed=version is not None, id=target)
    return JSONResponse(
        answer.model_dump(), status_code=201 if entry_id is None else 200, headers={"ETag": f'"{current}"'}
    )


@router.get("/accounts/{account_id}", responses={**ERRORS, 404: {"model": Problem}}, response_model=EntryView)
async def get_account(
    request: Request, account_id: str = Path(max_length=64), staff: Staff = ApiReader
) -> JSONResponse:
    """A delivery account's catalog entry (endpoint, format, criteria, caps, schedule, price)."""
    return await _get_entry(request, "account", account_id)


@router.post("/accounts", status_code=201, responses=ENTRY_ERRORS, response_model=EntrySaved)
async def create_account(request: Request, body: CatalogEntry, staff: Staff = ApiConfigurer) -> JSONResponse:
    """Add a delivery account (with If-Match: the catalog version it starts from)."""
    return await _save_entry(request, staff, "account", None, body)


@router.put("/accounts/{account_id}", responses={**ENTRY_ERRORS, 404: {"model": Problem}}, response_model=EntrySaved)
async def change_account(
    request: Request, body: CatalogEntry, account_id: str = Path(max_length=64), staff: Staff = ApiConfigurer
) -> JSONResponse:
    """Replace a delivery account's entry (with If-Match)."""
    return await _save_entry(request, staff, "account", account_id, body)


@router.get("/groups", responses=ERRORS)
async def list_groups(request: Request, staff: Staff = ApiReader) -> EntryList:
    """The client groups of the current catalog, in order."""
    version, catalog = await load_latest(console_of(request).pool)
    return EntryList(version=version, entries=catalog.model_dump(mode="json")["groups"])


@router.get("/groups/{group_id}", responses={**ERRORS, 404: {"model": Problem}}, response_model=EntryView)
async def get_group(request: Request, group_id: str = Path(max_length=64), staff: Staff = ApiReader) -> JSONResponse:
    return await _get_entry(request, "group", group_id)


@router.post("/groups", status_code=201, responses=ENTRY_ERRORS, response_model=EntrySaved)
async def create_group(request: Request, body: CatalogEntry, staff: Staff = ApiConfigurer) -> JSONResponse:
    return await _save_entry(request, staff, "group", None, body)


@router.put("/groups/{group_id}", responses={**ENTRY_ERRORS, 404: {"model": Problem}}, response_model=EntrySaved)
async def change_group(
    request: Request, body: CatalogEntry, group_id: str = Path(max_length=64), staff: Staff = ApiConfigurer
) -> JSONResponse:
    return await _save_entry(request, staff, "group", group_id, body)


@router.get("/orders/{order_id}", responses={**ERRORS, 404: {"model": Problem}}, response_model=EntryView)
async def get_order(request: Request, order_id: str = Path(max_length=64), staff: Staff = ApiReader) -> JSONResponse:
    """An order's catalog entry (its status as applied; `GET /orders` has the live status)."""
    return await _get_entry(request, "order", order_id)


@router.post("/orders", status_code=201, responses=ENTRY_ERRORS, response_model=EntrySaved)
async def create_order(request: Request, body: CatalogEntry, staff: Staff = ApiConfigurer) -> JSONResponse:
    return await _save_entry(request, staff, "order", None, body)


@router.put("/orders/{order_id}", responses={**ENTRY_ERRORS, 404: {"model": Problem}}, response_model=EntrySaved)
async def change_order(
    request: Request, body: CatalogEntry, order_id: str = Path(max_length=64), staff: Staff = ApiConfigurer
) -> JSONResponse:
    """Replace an order's entry (with If-Match). Its `status` is the returns service's: send it as
    it is; pause, resume and close with `POST /orders/{id}/status`."""
    return await _save_entry(request, staff, "order", order_id, body)


# --- Processes -----------------------------------------------------------------------------------


class ProcessView(BaseModel):
    process_id: str = Field(description="<service>@<host>:<pid>")
    service: str
    catalog_version: int = Field(description="The catalog version the process has loaded")
    started_at: datetime
    seen_at: datetime = Field(description="Its last report (every 5 s)")
    seen_seconds_ago: float
    state: Literal["current", "behind", "stale"] = Field(
        description="stale: no report for 30 s; behind: an older catalog than the current one"
    )


class Processes(BaseModel):
    current_version: int
    processes: list[ProcessView]


@router.get("/processes", responses=ERRORS)
async def list_processes(request: Request, staff: Staff = ApiReader) -> Processes:
    """Every service process with the catalog version it has loaded (stale and behind first)."""
    current, rows = await operations.processes_view(console_of(request))
    return Processes(current_version=current, processes=[ProcessView(**r) for r in rows])
