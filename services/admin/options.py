"""The Client Options screen (Settings → Client Settings → Options), catalog version history
with diffs and YAML downloads, and the whole-catalog YAML editor. Every save is a new catalog
version through the same validation as `leadwire catalog apply`, refused when someone else saved
since the form was opened (optimistic concurrency on the catalog version)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.admin import masking, queries, rules, usecases
from services.admin.auth import Configurer, Reader, console_of
from services.admin.console import Console, field
from services.admin.rules import Staff
from shared.catalog.model import Catalog
from shared.catalog.store import load_latest

router = APIRouter(include_in_schema=False)


def form_values(catalog: Catalog) -> dict[str, str]:
    """The Client Options form's fields, filled from a catalog."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else rules.show(value)

    values = {f"global.{s.key}": text(getattr(catalog.options, s.key)) for s in rules.OPTION_SPECS}
    for client in catalog.clients:
        for key in rules.CLIENT_KEYS:
            values[f"client.{client.id}.{key}"] = text(getattr(client.options, key))
    for group in catalog.groups:
        values[f"group.{group.id}.apply_groups_as_criteria"] = text(group.apply_groups_as_criteria)
    return values


def parse_version(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


async def _options_page(
    request: Request,
    console: Console,
    status: int = 200,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    conflict_from: int | None = None,
) -> Response:
    version, catalog = await load_latest(console.pool)
    diff: list[tuple[str, str]] = []
    if conflict_from is not None:
        base = await queries.catalog_version(console.pool, conflict_from)
        before = masking.masked_yaml(base["document"] if base else None)
        diff = rules.text_diff(
            before,
            masking.masked_yaml(catalog),
            before_name=f"version {conflict_from}",
            after_name=f"version {version}",
        )
    return console.render(
        request,
        "options.html",
        status,
        version=version,
        catalog=catalog,
        values=values or form_values(catalog),
        errors=errors or {},
        specs=rules.OPTION_SPECS,
        force_choices=rules.FORCE_ID_CHOICES,
        effective={c.id: rules.effective_options(catalog, c.id) for c in catalog.clients},
        conflict_diff=diff,
        saved=request.query_params.get("saved", ""),
    )


@router.get("/options")
async def options_page(request: Request, staff: Staff = Reader) -> Response:
    return await _options_page(request, console_of(request))


@router.post("/options")
async def save_options(request: Request, staff: Staff = Configurer) -> Response:
    console = console_of(request)
    form = await request.form()
    submitted = {k: v for k, v in form.items() if isinstance(v, str) and k not in ("csrf", "version")}
    base = parse_version(field(form, "version"))
    if base is None:
        return await _options_page(
            request, console, 400, values=submitted, errors={"form": "This form is missing its catalog version."}
        )
    try:
        version = await usecases.save_options(console.deps, staff, base, form)
    except usecases.Conflict as conflict:
        return await _options_page(
            request, console, 409, values=submitted, errors=conflict.errors, conflict_from=conflict.expected
        )
    except usecases.Refused as refused:
        return await _options_page(request, console, refused.status, values=submitted, errors=refused.errors)
    return RedirectResponse(console.url("/options", {"saved": version or "unchanged"}), status_code=303)


# --- Versions ------------------------------------------------------------------------------------


@router.get("/catalog/versions")
async def versions_page(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    raw = request.query_params.get("before", "")
    before = parse_version(raw) if raw else None
    if raw and before is None:
        raise HTTPException(400, "That page link is not valid.")
    rows = await queries.catalog_versions(console.pool, before=before, limit=50)
    return console.render(
        request, "versions.html", versions=rows, next_before=rows[-1]["version"] if len(rows) == 50 else None
    )


async def _version(console: Console, version: int) -> Any:
    row = await queries.catalog_version(console.pool, version)
    if row is None:
        raise HTTPException(404, f"There is no catalog version {version}.")
    return row


@router.get("/catalog/versions/{version}")
async def version_page(request: Request, version: int, staff: Staff = Reader) -> Response:
    console = console_of(request)
    row = await _version(console, version)
    previous = await queries.previous_version(console.pool, version)
    text = masking.masked_yaml(row["document"])
    before = masking.masked_yaml(previous["document"] if previous else None)
    diff = rules.text_diff(
        before,
        text,
        before_name=f"version {previous['version']}" if previous else "(nothing)",
        after_name=f"version {version}",
    )
    return console.render(request, "version.html", row=row, diff=diff, previous=previous)


@router.get("/catalog/versions/{version}/catalog.yaml")
async def version_yaml(request: Request, version: int, staff: Staff = Reader) -> Response:
    row = await _version(console_of(request), version)
    return Response(
        masking.masked_yaml(row["document"]),
        media_type="application/yaml; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="catalog-v{version}.yaml"'},
    )


# --- The whole catalog as YAML -------------------------------------------------------------------


@router.get("/catalog/edit")
async def edit_page(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    version, catalog = await load_latest(console.pool)
    return console.render(request, "catalog_edit.html", version=version, text=masking.masked_yaml(catalog), errors={})


@router.post("/catalog/edit")
async def edit_catalog(request: Request, staff: Staff = Configurer) -> Response:
    console = console_of(request)
    form = await request.form()
    text = field(form, "yaml")
    base = parse_version(field(form, "version"))
    current, _ = await load_latest(console.pool)
    if base is None:
        errors = {"form": "This form is missing its catalog version."}
        return console.render(request, "catalog_edit.html", 400, version=current, text=text, errors=errors)
    try:
        version = await usecases.save_catalog_text(console.deps, staff, base, text)
    except usecases.Refused as refused:
        shown = current if isinstance(refused, usecases.Conflict) else base
        return console.render(
            request, "catalog_edit.html", refused.status, version=shown, text=text, errors=refused.errors
        )
    if version is None:
        return RedirectResponse(console.url("/catalog/versions", {"saved": "unchanged"}), status_code=303)
    return RedirectResponse(console.url(f"/catalog/versions/{version}"), status_code=303)


# --- Clients -------------------------------------------------------------------------------------


def client_values(client: Any) -> dict[str, Any]:
    if client is None:
        return {"id": "", "name": "", "active": True, "time_zone": "UTC", "auto_approve_returns": False}
    return {"id": client.id, **{name: getattr(client, name) for name in rules.CLIENT_FIELDS}}


@router.get("/clients")
async def clients_page(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    version, catalog = await load_latest(console.pool)
    users = await queries.portal_users_by_client(console.pool)
    return console.render(request, "clients.html", clients=catalog.clients, users=users, version=version)


async def _client_page(
    request: Request,
    console: Console,
    client_id: str | None,
    status: int = 200,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    invite: dict[str, str] | None = None,
) -> Response:
    version, catalog = await load_latest(console.pool)
    client = catalog.clients_by_id.get(client_id) if client_id else None
    if client_id is not None and client is None:
        raise HTTPException(404, f"There is no client {client_id}.")
    users = (await queries.portal_users_by_client(console.pool)).get(client_id or "", [])
    return console.render(
        request,
        "client.html",
        status,
        client_id=client_id,
        version=version,
        values=values or client_values(client),
        errors=errors or {},
        users=users,
        invite=invite or {"invite_email": client.email or "" if client else "", "invite_name": ""},
        saved=request.query_params.get("saved", ""),
    )


@router.get("/clients/new")
async def new_client_page(request: Request, staff: Staff = Reader) -> Response:
    return await _client_page(request, console_of(request), None)


@router.get("/clients/{client_id}")
async def client_page(request: Request, client_id: str, staff: Staff = Reader) -> Response:
    return await _client_page(request, console_of(request), client_id[:64])


def _typed(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {k: field(form, k) for k in ("id", *rules.CLIENT_FIELDS)}
    values["active"] = field(form, "active") == "on"
    values["auto_approve_returns"] = field(form, "auto_approve_returns") == "on"
    return values


async def _save_client(request: Request, staff: Staff, client_id: str | None) -> Response:
    console = console_of(request)
    form = await request.form()
    base = parse_version(field(form, "version"))
    try:
        if base is None:
            raise usecases.Refused({"form": "This form is missing its catalog version."})
        version = await usecases.save_client(console.deps, staff, base, client_id, form)
    except usecases.Refused as refused:
        return await _client_page(
            request, console, client_id, refused.status, values=_typed(form), errors=refused.errors
        )
    target = client_id or field(form, "id").strip()
    return RedirectResponse(console.url(f"/clients/{target}", {"saved": version or "unchanged"}), status_code=303)


@router.post("/clients")
async def create_client(request: Request, staff: Staff = Configurer) -> Response:
    return await _save_client(request, staff, None)


@router.post("/clients/{client_id}")
async def change_client(request: Request, client_id: str, staff: Staff = Configurer) -> Response:
    return await _save_client(request, staff, client_id[:64])


@router.post("/clients/{client_id}/invite")
async def invite_admin(request: Request, client_id: str, staff: Staff = Configurer) -> Response:
    console = console_of(request)
    form = await request.form()
    invite = {"invite_email": field(form, "invite_email"), "invite_name": field(form, "invite_name")}
    try:
        await usecases.invite_portal_admin(
            console.deps, staff, client_id[:64], invite["invite_email"], invite["invite_name"]
        )
    except usecases.Refused as refused:
        return await _client_page(
            request, console, client_id[:64], refused.status, errors=refused.errors, invite=invite
        )
    return RedirectResponse(
        console.url(f"/clients/{client_id}", {"saved": f"invited {invite['invite_email'].strip()}"}), status_code=303
    )
