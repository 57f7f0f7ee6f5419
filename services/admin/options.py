"""The Client Options screen (Settings → Client Settings → Options), catalog version history
with diffs and YAML downloads, and the whole-catalog YAML editor. Every save is a new catalog
version through the same validation as `leadwire catalog apply`, refused when someone else saved
since the form was opened (optimistic concurrency on the catalog version)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.admin import queries, rules, usecases
from services.admin.auth import Configurer, Reader, console_of
from services.admin.console import Console, field
from services.admin.rules import Staff
from shared.catalog.loader import dump_catalog
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
        before = dump_catalog(Catalog.model_validate(base["document"])) if base else ""
        diff = rules.text_diff(
            before, dump_catalog(catalog), before_name=f"version {conflict_from}", after_name=f"version {version}"
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
    text = dump_catalog(Catalog.model_validate(row["document"]))
    before = dump_catalog(Catalog.model_validate(previous["document"])) if previous else ""
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
        dump_catalog(Catalog.model_validate(row["document"])),
        media_type="application/yaml; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="catalog-v{version}.yaml"'},
    )


# --- The whole catalog as YAML -------------------------------------------------------------------


@router.get("/catalog/edit")
async def edit_page(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    version, catalog = await load_latest(console.pool)
    return console.render(request, "catalog_edit.html", version=version, text=dump_catalog(catalog), errors={})


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
