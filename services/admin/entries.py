"""The catalog entry forms: delivery accounts (endpoint, format, criteria, caps, schedule,
price), client groups and orders, each created and edited on its own page. A save is a new catalog
version through the same validation as `leadwire catalog apply` (usecases.save_entry): every
error beside its field, nothing saved on any, refused when someone else saved since the form was
opened (optimistic concurrency on the catalog version, as the Client Options screen)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.admin import masking, rules, usecases
from services.admin.auth import Configurer, Reader, console_of
from services.admin.console import field
from services.admin.options import parse_version
from services.admin.rules import EntryKind, Staff
from shared.catalog.store import load_latest

router = APIRouter(include_in_schema=False)

# kind -> (path of its pages, template)
PAGES: dict[EntryKind, tuple[str, str]] = {
    "account": ("/accounts", "account.html"),
    "group": ("/groups", "group.html"),
    "order": ("/orders", "order.html"),
}


async def _entry_page(
    request: Request,
    kind: EntryKind,
    entry_id: str | None,
    status: int = 200,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    console = console_of(request)
    version, catalog = await load_latest(console.pool)
    section, noun = rules.ENTRY_KINDS[kind]
    entries = {e["id"]: e for e in catalog.model_dump(mode="json")[section]}
    if entry_id is not None and entry_id not in entries:
        raise HTTPException(404, f"There is no {noun} {entry_id}.")
    entry = entries.get(entry_id) if entry_id else None
    if kind == "account" and entry is not None:
        entry = masking.mask_account(entry)  # for every role: the page never holds a credential
    path, template = PAGES[kind]
    return console.render(
        request,
        template,
        status,
        kind=kind,
        noun=noun,
        entry_id=entry_id,
        action=console.url(f"{path}/{entry_id}" if entry_id else path),
        version=version,
        catalog=catalog,
        values=values or rules.entry_form_values(kind, entry),
        errors=errors or {},
        weekdays=rules.WEEKDAYS,
        ops=rules.CRITERION_OPS,
        client_choices=[(c.id, f"{c.name} ({c.id})") for c in catalog.clients],
        lead_type_choices=[(t.id, f"{t.name} ({t.id})") for t in catalog.lead_types],
        saved=request.query_params.get("saved", ""),
    )


async def _save(request: Request, staff: Staff, kind: EntryKind, entry_id: str | None) -> Response:
    console = console_of(request)
    form = await request.form()
    base = parse_version(field(form, "version"))
    typed = rules.typed_form_values(kind, form)
    try:
        if base is None:
            raise usecases.Refused({"form": "This form is missing its catalog version."})
        builder = rules.ENTRY_BUILDERS[kind]
        version, target = await usecases.save_entry(
            console.deps, staff, base, kind, entry_id, lambda current: builder(form, current)
        )
    except usecases.Refused as refused:
        if refused.status == 404:
            raise HTTPException(404, refused.errors.get("form", "Not found.")) from refused
        return await _entry_page(request, kind, entry_id, refused.status, values=typed, errors=refused.errors)
    path, _ = PAGES[kind]
    return RedirectResponse(console.url(f"{path}/{target}", {"saved": version or "unchanged"}), status_code=303)


# --- Delivery accounts ---------------------------------------------------------------------------


@router.get("/accounts/new")
async def new_account_page(request: Request, staff: Staff = Reader) -> Response:
    return await _entry_page(request, "account", None)


@router.get("/accounts/{account_id}")
async def account_page(request: Request, account_id: str, staff: Staff = Reader) -> Response:
    return await _entry_page(request, "account", account_id[:64])


@router.post("/accounts")
async def create_account(request: Request, staff: Staff = Configurer) -> Response:
    return await _save(request, staff, "account", None)


@router.post("/accounts/{account_id}")
async def change_account(request: Request, account_id: str, staff: Staff = Configurer) -> Response:
    return await _save(request, staff, "account", account_id[:64])


# --- Groups --------------------------------------------------------------------------------------


@router.get("/groups")
async def groups_page(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    version, catalog = await load_latest(console.pool)
    return console.render(request, "groups.html", groups=catalog.groups, catalog=catalog, version=version)


@router.get("/groups/new")
async def new_group_page(request: Request, staff: Staff = Reader) -> Response:
    return await _entry_page(request, "group", None)


@router.get("/groups/{group_id}")
async def group_page(request: Request, group_id: str, staff: Staff = Reader) -> Response:
    return await _entry_page(request, "group", group_id[:64])


@router.post("/groups")
async def create_group(request: Request, staff: Staff = Configurer) -> Response:
    return await _save(request, staff, "group", None)


@router.post("/groups/{group_id}")
async def change_group(request: Request, group_id: str, staff: Staff = Configurer) -> Response:
    return await _save(request, staff, "group", group_id[:64])


# --- Orders (their definition; payments, pause, resume, close are on the Orders page) ----------------


@router.get("/orders/new")
async def new_order_page(request: Request, staff: Staff = Reader) -> Response:
    return await _entry_page(request, "order", None)


@router.get("/orders/{order_id}")
async def order_page(request: Request, order_id: str, staff: Staff = Reader) -> Response:
    return await _entry_page(request, "order", order_id[:64])


@router.post("/orders")
async def create_order(request: Request, staff: Staff = Configurer) -> Response:
    return await _save(request, staff, "order", None)


@router.post("/orders/{order_id}")
async def change_order(request: Request, order_id: str, staff: Staff = Configurer) -> Response:
    return await _save(request, staff, "order", order_id[:64])
