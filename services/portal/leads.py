"""The lead workspace (C1–C6, D1–D4, D8): the lead list with its filters, sort and pages, its CSV
export, a lead's page, its print sheet and exports, and the two email forms.

A lead id that is not this client's, or not within the user's scope, is answered exactly like an
id that does not exist: 404.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from services.portal import queries, rules, usecases
from services.portal.auth import Session, SignedIn, portal_of, session_form
from services.portal.pages import LEAD_NOTICES, LEAD_PANELS, Portal, field
from shared import db
from shared.catalog.model import LeadType

router = APIRouter()

NOT_FOUND = "There is no such lead in your portal."


# --- The list -------------------------------------------------------------------------------------


@router.get("/leads")
async def lead_list(request: Request, session: SignedIn) -> Response:
    portal = portal_of(request)
    identity = session.identity
    zone = portal.time_zone(identity.client_id)
    types = portal.lead_types_of(identity.client_id)
    today = rules.local_day(portal.clock(), zone)
    params = dict(request.query_params)
    result = rules.parse_lead_filter(params, today=today, lead_types=types)
    context: dict[str, Any] = {
        "types": types,
        "form": {k: str(params.get(k, ""))[:300] for k in ("from", "to", "type", "q", "sort", "dir", "assigned")},
        "errors": result.errors,
        "rows": [],
        "columns": [],
        "count": 0,
        "count_cap": rules.COUNT_CAP,
        "next_page": None,
        "filter": None,
    }
    context["bulk_notice"], context["bulk_error"] = rules.bulk_notice(params)
    if rules.may_assign(session.viewer):
        # The "Assigned to" filter: the users whose leads the viewer sees (admins: anyone's, or
        # nobody's); "Assign selected": the enabled ones among them.
        async with portal.pool.acquire() as conn:
            context["bulk_assignees"] = [
                (str(u["id"]), u["name"] or u["email"]) for u in await queries.assignable_users(conn, session.viewer)
            ]
            context["assignees"] = [
                (str(u["id"]), u["name"] or u["email"]) for u in await queries.portal_users(conn, session.viewer)
            ]
    f = result.filter
    if f is None:
        return portal.render(request, "leads.html", 400, **context)
    await _sort_keys_ready(portal, identity.client_id, f)
    async with portal.pool.acquire() as conn:
        rows = await queries.lead_page(conn, session.viewer, f, zone)
        count = await queries.lead_count(conn, session.viewer, f, zone)
    shown_types = [types[f.lead_type]] if f.lead_type else list(types.values())
    page = rows[: rules.PAGE_SIZE]
    next_page = None
    if len(rows) > rules.PAGE_SIZE:
        last_row = page[-1]
        cursor = rules.encode_cursor(f.sort, last_row["sort_key"], last_row["completed_at"], last_row["delivery_id"])
        next_page = portal.url("/leads", f.params(after=cursor))
    columns = rules.list_columns(shown_types)
    context.update(
        form=f.params(),
        filter=f,
        columns=columns,
        rows=[_list_row(portal, r, zone, columns) for r in page],
        count=count,
        next_page=next_page,
        first_page=portal.url("/leads", f.params()) if f.after else None,
        export_url=portal.url("/leads/export.csv", f.params()),
        sort_links=_sort_links(portal, f, columns, rules.sort_columns(types.values())),
    )
    return portal.render(request, "leads.html", **context)


async def _sort_keys_ready(portal: Portal, client_id: str, f: rules.LeadFilter) -> None:
    """Before a sort by a lead field: portal_leads holds the client's sort keys as this catalog
    assigns them (checked once per catalog version and process; re-keyed when they differ)."""
    if f.sort.kind != "field":
        return
    version = portal.runtime.catalog_cache.version
    if portal.sort_columns_checked.get(client_id) == version:
        return
    columns = rules.sort_columns(portal.lead_types_of(client_id).values())
    async with portal.pool.acquire() as conn:
        if await queries.ensure_sort_columns(conn, client_id, columns, version):
            portal.sort_columns_checked[client_id] = version


def _list_row(portal: Portal, row: Any, zone: str, columns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """One row of the table, its cells already in column order: a call from the template per cell
    and per link made the 51 rows' rendering the largest part of a list page."""
    lead_type = portal.catalog.lead_types_by_id.get(row["lead_type_id"])
    fields = row["fields"] or {}
    return {
        "lead_id": row["lead_id"],
        "href": portal.url(f"/leads/{row['lead_id']}"),
        "cells": [(name, fields.get(name, "")) for name, _ in columns],
        "delivered": rules.format_local(row["completed_at"], zone),
        "type": lead_type.name if lead_type else row["lead_type_id"],
        "price": row["price"],
        "name": rules.lead_name(lead_type, fields),
        "return": rules.return_label(row["return_status"]),
        "return_status": row["return_status"],
        "assigned_to": row["assigned_to"] or "",
    }


def _sort_links(
    portal: Portal, f: rules.LeadFilter, columns: Sequence[tuple[str, str]], sortable: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """For each sortable column: the link that sorts by it (flipping the direction when it is the
    current sort) and the arrow to show. A field column without a sort-key column (`sortable`,
    rules.sort_columns) has none: its header is plain text."""
    links: dict[str, dict[str, str]] = {}
    fields = [f"f.{name}" for name, _ in columns if name in sortable]
    for param in ["delivered", "type", "price", *fields]:
        current = f.sort.param == param
        if current:
            direction = "asc" if f.sort.direction == "desc" else "desc"
        else:
            direction = "desc" if param in ("delivered", "price") else "asc"
        arrow = ("▲" if f.sort.direction == "asc" else "▼") if current else ""
        links[param] = {"url": portal.url("/leads", f.params(sort=param, dir=direction)), "arrow": arrow}
    return links


@router.get("/leads/export.csv")
async def export_list(request: Request, session: SignedIn) -> Response:
    """Exactly the list's current filter and order, every page, as CSV, streamed."""
    portal = portal_of(request)
    identity = session.identity
    zone = portal.time_zone(identity.client_id)
    types = portal.lead_types_of(identity.client_id)
    today = rules.local_day(portal.clock(), zone)
    result = rules.parse_lead_filter(dict(request.query_params), today=today, lead_types=types)
    if result.filter is None:
        problems = " ".join(result.errors.values())
        raise HTTPException(400, f"The export was not made: {problems}")
    f = result.filter
    await _sort_keys_ready(portal, identity.client_id, f)
    columns = rules.export_columns([types[f.lead_type]] if f.lead_type else list(types.values()))
    slots = portal.export_slots()
    if slots.locked():
        raise HTTPException(429, "Other exports are running. Please try again in a minute.")
    name = f"leads-{f.first_day.isoformat()}-to-{f.last_day.isoformat()}.csv"
    return StreamingResponse(
        _stream_csv(portal, session.viewer, f, zone, columns),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _stream_csv(
    portal: Portal, viewer: rules.Viewer, f: rules.LeadFilter, zone: str, columns: list[tuple[str, str]]
) -> AsyncIterator[bytes]:
    type_names = {t.id: t.name for t in portal.catalog.lead_types}
    async with portal.export_slots():
        # Its own connection, in one read-only snapshot: a long export holds no pooled connection
        # and sees one consistent set of leads however long it takes.
        conn = await db.connect(portal.settings.database_url)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                buffer = io.StringIO()
                writer = csv.writer(buffer)
                buffer.write("\ufeff")  # a BOM: spreadsheets then read the file as UTF-8
                writer.writerow(rules.export_header(columns))
                rows = 0
                async for row in queries.export_rows(conn, viewer, f, zone):
                    writer.writerow(rules.export_row(row, columns, zone, type_names))
                    rows += 1
                    if rows % 500 == 0:
                        yield buffer.getvalue().encode()
                        buffer.seek(0)
                        buffer.truncate()
                yield buffer.getvalue().encode()
        finally:
            await conn.close()


# --- One lead -------------------------------------------------------------------------------------


@dataclass
class LeadView:
    lead_id: uuid.UUID
    name: str
    lead_type_id: str
    lead_type: LeadType | None
    type_name: str
    delivered: str
    completed_at: datetime
    price: Any
    fields: list[tuple[str, str, str]]
    raw_fields: dict[str, Any]
    contact_email: str | None
    contact_phone: str | None
    return_info: Any
    return_label: str
    assigned: str | None
    activity: list[Any]
    assigned_user_id: uuid.UUID | None = None


async def lead_view(portal: Portal, viewer: rules.Viewer, lead_id: uuid.UUID) -> LeadView | None:
    async with portal.pool.acquire() as conn:
        row = await queries.lead_detail(conn, viewer, lead_id)
        if row is None:
            return None
        returned = await queries.latest_return(conn, viewer, lead_id)
        activity = await queries.lead_activity(conn, viewer, lead_id) if viewer.user_id is not None else []
    zone = portal.time_zone(viewer.client_id)
    lead_type = portal.catalog.lead_types_by_id.get(row["lead_type_id"])
    fields = dict(row["fields"] or {})
    email_field = (lead_type.contact_email_field if lead_type else None) or "email"
    phone_field = (lead_type.contact_phone_field if lead_type else None) or "phone"
    email = str(fields.get(email_field) or "") or None
    return LeadView(
        lead_id=row["lead_id"],
        name=rules.lead_name(lead_type, fields),
        lead_type_id=row["lead_type_id"],
        lead_type=lead_type,
        type_name=lead_type.name if lead_type else row["lead_type_id"],
        delivered=rules.format_local(row["completed_at"], zone),
        completed_at=row["completed_at"],
        price=row["price"],
        fields=rules.labelled_fields(lead_type, fields),
        raw_fields=fields,
        contact_email=email if email and rules.valid_address(email) else None,
        contact_phone=str(fields.get(phone_field) or "") or None,
        return_info=returned,
        return_label=rules.return_label(returned["status"] if returned else None) or "Not returned",
        assigned=(row["assigned_name"] or row["assigned_email"]) if row["assigned_user_id"] else None,
        assigned_user_id=row["assigned_user_id"],
        activity=[
            {
                "kind": "Emailed the contact" if a["kind"] == "lead_contact" else "Forwarded",
                "to": ", ".join(a["recipients"]),
                "subject": a["subject"],
                "by": a["user_name"] or a["user_email"],
                "at": rules.format_local(a["created_at"], zone),
            }
            for a in activity
        ],
    )


async def _visible_lead(request: Request, session: Session, lead_id: str) -> LeadView:
    parsed = rules.parse_uuid(lead_id)
    view = await lead_view(portal_of(request), session.viewer, parsed) if parsed else None
    if view is None:
        raise HTTPException(404, NOT_FOUND)
    return view


SENT_NOTICES = {"contact": "Your email to the contact is on its way.", "forward": "The lead was forwarded."}


@router.get("/leads/{lead_id}")
async def lead_page(request: Request, lead_id: str, session: SignedIn) -> Response:
    view = await _visible_lead(request, session, lead_id)
    notice = SENT_NOTICES.get(request.query_params.get("sent", "")) or panel_notice(request)
    return await render_lead(request, session, view, notice=notice)


def panel_notice(request: Request) -> str | None:
    """A notice a lead panel's form asked for after its redirect (`?done=<key>`)."""
    return LEAD_NOTICES.get(request.query_params.get("done", ""))


async def render_lead(
    request: Request,
    session: Session,
    view: LeadView,
    status: int = 200,
    *,
    notice: str | None = None,
    typed: dict[str, dict[str, str]] | None = None,
    errors: dict[str, dict[str, str]] | None = None,
    open_form: str | None = None,
    panel_state: dict[str, dict[str, Any]] | None = None,
) -> Response:
    """The lead page. Its panels (pages.LEAD_PANELS: assignment, appointments, ...) each load their
    own context; `panel_state` overrides a panel's context (a form shown again with its errors)."""
    # Fresh ids for the forms: one email per rendered form, however often it is submitted. A form
    # shown again with its errors keeps its id.
    forms = {
        "contact": {"notification_id": str(uuid.uuid4()), "subject": "", "message": ""},
        "forward": {"notification_id": str(uuid.uuid4()), "to": "", "note": ""},
    }
    for name, values in (typed or {}).items():
        forms[name] = values
    portal = portal_of(request)
    panels = []
    for panel in LEAD_PANELS:
        context = await panel.load(portal, session, view)
        context.update((panel_state or {}).get(panel.name, {}))
        panels.append((panel.template, context))
    return portal.render(
        request,
        "lead.html",
        status,
        lead=view,
        notice=notice,
        forms=forms,
        errors=errors or {},
        open_form=open_form,
        panels=panels,
    )


@router.get("/leads/{lead_id}/print")
async def lead_print(request: Request, lead_id: str, session: SignedIn) -> Response:
    view = await _visible_lead(request, session, lead_id)
    return portal_of(request).render(request, "lead_print.html", lead=view)


@router.get("/leads/{lead_id}/export.csv")
async def lead_csv(request: Request, lead_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    view = await _visible_lead(request, session, lead_id)
    zone = portal.time_zone(session.identity.client_id)
    columns = rules.export_columns([view.lead_type] if view.lead_type else [])
    columns += [(n, rules.field_label(None, n)) for n in view.raw_fields if n not in dict(columns)]
    row = {
        "lead_id": view.lead_id,
        "completed_at": view.completed_at,
        "lead_type_id": view.lead_type_id,
        "price": view.price,
        "return_status": view.return_info["status"] if view.return_info else None,
        "fields": view.raw_fields,
    }
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer)
    writer.writerow(rules.export_header(columns))
    writer.writerow(rules.export_row(row, columns, zone, {view.lead_type_id: view.type_name}))
    return Response(
        buffer.getvalue().encode(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="lead-{view.lead_id}.csv"'},
    )


@router.get("/leads/{lead_id}/export.json")
async def lead_json(request: Request, lead_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    view = await _visible_lead(request, session, lead_id)
    document = {
        "lead_id": str(view.lead_id),
        "lead_type": view.lead_type_id,
        "lead_type_name": view.type_name,
        "delivered_at": view.completed_at.isoformat(),
        "delivered_local": view.delivered,
        "time_zone": portal.time_zone(session.identity.client_id),
        "price": f"{view.price:.2f}",
        "return_status": view.return_info["status"] if view.return_info else None,
        "fields": view.raw_fields,
        "labels": {name: label for name, label, _ in view.fields},
    }
    return Response(
        json.dumps(document, indent=2, ensure_ascii=False).encode(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="lead-{view.lead_id}.json"'},
    )


# --- The email forms ------------------------------------------------------------------------------


@router.post("/leads/{lead_id}/contact")
async def email_contact(request: Request, lead_id: str, session: SignedIn) -> Response:
    return await _email_form(request, lead_id, session, "contact", ("subject", "message"))


@router.post("/leads/{lead_id}/forward")
async def forward(request: Request, lead_id: str, session: SignedIn) -> Response:
    return await _email_form(request, lead_id, session, "forward", ("to", "note"))


async def _email_form(request: Request, lead_id: str, session: Session, name: str, fields: tuple[str, str]) -> Response:
    """Both email forms: CSRF, the lead (404 if not the viewer's), the fields checked (errors
    beside them, values kept), then the use case; sent -> back to the lead page with a notice."""
    portal = portal_of(request)
    form = await session_form(request, session)
    view = await _visible_lead(request, session, lead_id)
    typed = {k: field(form, k)[: rules.MAX_MESSAGE + 100] for k in ("notification_id", *fields)}
    checked: rules.ContactForm | rules.ForwardForm | None
    if name == "contact":
        checked, errors = rules.check_contact_form(typed["subject"], typed["message"])
    else:
        checked, errors = rules.check_forward_form(typed["to"], typed["note"])
    notification_id = rules.parse_uuid(typed["notification_id"])
    if notification_id is None:
        # No readable id: shown again with a new one (nothing was sent).
        errors["form"] = "This form expired. Please send it again."
        typed["notification_id"] = str(uuid.uuid4())
    if checked is not None and notification_id is not None:
        args = (portal.pool, portal.catalog, session.identity, view.lead_id, notification_id)
        try:
            if isinstance(checked, rules.ContactForm):
                outcome = await usecases.email_contact(*args, checked, portal.clock())
            else:
                outcome = await usecases.forward_lead(*args, checked, portal.clock())
        except usecases.LeadNotFound:
            raise HTTPException(404, NOT_FOUND) from None
        if isinstance(outcome, usecases.Sent):
            return RedirectResponse(portal.url(f"/leads/{view.lead_id}", {"sent": name}), status_code=303)
        errors = outcome.errors
    return await render_lead(request, session, view, 400, typed={name: typed}, errors={name: errors}, open_form=name)
