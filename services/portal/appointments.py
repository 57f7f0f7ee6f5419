"""Appointments (D7, E1–E7): the lead page's Appointments panel with "Create Appointment" (the
editor opens below it), the Appointments tab, and editing and cancelling an appointment.

notifier owns appointments (and their emails and reminders); the portal sends it commands over
request-reply (appointments_client.py) and shows its answer: accepted, or refused with the
reason. Who sees which appointment follows the leads' rule (queries._appointment_visible):
admins all of the client's, others those assigned to them or, with View Downline, to their
downline. The assignee is any enabled user the creator may assign (queries.assignable_users).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.portal import appointments_client, queries, rules
from services.portal.appointments_client import NoAnswer, NotSent
from services.portal.auth import Session, SignedIn, portal_of, session_form
from services.portal.leads import LeadView, _visible_lead, render_lead
from services.portal.pages import LEAD_NOTICES, LEAD_PANELS, LeadPanel, Portal, field
from shared.contracts import AppointmentAccepted, AppointmentCancel, AppointmentCreate, AppointmentUpdate

router = APIRouter()

NOT_FOUND = "There is no such appointment in your portal."
REMINDER_LABELS = dict(rules.REMINDER_CHOICES)
NOT_CONFIRMED = (
    "The appointment was sent, but its confirmation has not come back yet. It will be saved; "
    "check the Appointments tab in a moment."
)
NOT_SENT = "The appointment could not be sent right now. Nothing was saved; please try again in a moment."


async def _assignees(portal: Portal, session: Session) -> list[tuple[uuid.UUID, str, str]]:
    async with portal.pool.acquire() as conn:
        users = await queries.assignable_users(conn, session.viewer)
    return [(u["id"], u["name"] or u["email"], u["email"]) for u in users]


def _row(portal: Portal, zone: str, a: asyncpg.Record) -> dict[str, Any]:
    fields = a["fields"]
    lead_type = portal.catalog.lead_types_by_id.get(a["lead_type_id"])
    return {
        "id": a["id"],
        "lead_id": a["lead_id"],
        "lead_name": rules.lead_name(lead_type, fields or {}) if fields is not None else "",
        "title": a["title"],
        "notes": a["notes"],
        "when": rules.format_local(a["starts_at"], zone),
        "starts_at": a["starts_at"],
        "reminder": REMINDER_LABELS.get(a["reminder_minutes"], f"{a['reminder_minutes']} minutes before"),
        "assignee": a["assigned_name"] or a["assigned_email"] or "",
        "cancelled": a["status"] == "cancelled",
    }


def _fresh_editor(session: Session) -> dict[str, Any]:
    """A new, empty editor: its appointment id is minted now, so the form saved twice makes one."""
    return {
        "appointment_id": str(uuid.uuid4()),
        "title": "",
        "date": "",
        "time": "",
        "reminder": "60",
        "notes": "",
        "assignee": str(session.identity.user_id),
    }


async def appointments_panel(portal: Portal, session: Session, view: LeadView) -> dict[str, Any]:
    zone = portal.time_zone(session.identity.client_id)
    async with portal.pool.acquire() as conn:
        rows = await queries.lead_appointments(conn, session.viewer, view.lead_id)
    return {
        "appointments": [_row(portal, zone, r) for r in rows],
        "editor": None,
        "errors": {},
        "zone": zone,
        "assignees": [],
        "reminders": rules.REMINDER_CHOICES,
    }


LEAD_PANELS.append(LeadPanel("appointments", "_lead_appointments.html", appointments_panel))
LEAD_NOTICES.update(
    {
        "appointment_created": "The appointment is saved; its assignee gets an email.",
        "appointment_repeated": "That appointment was saved already.",
    }
)


async def _lead_with_editor(
    request: Request,
    session: Session,
    view: LeadView,
    status: int,
    editor: dict[str, Any],
    errors: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    portal = portal_of(request)
    state = await appointments_panel(portal, session, view)
    state.update(editor=editor, errors=errors or {}, assignees=await _assignees(portal, session))
    return await render_lead(request, session, view, status, notice=notice, panel_state={"appointments": state})


@router.get("/leads/{lead_id}/appointments/new")
async def new_appointment(request: Request, lead_id: str, session: SignedIn) -> Response:
    """E1: the lead page with the appointment editor open below the lead's appointments."""
    view = await _visible_lead(request, session, lead_id)
    return await _lead_with_editor(request, session, view, 200, _fresh_editor(session))


def _typed(form: Any) -> dict[str, Any]:
    return {
        k: field(form, k)[:limit]
        for k, limit in (
            ("appointment_id", 64),
            ("command_id", 64),
            ("title", rules.MAX_APPOINTMENT_TITLE + 50),
            ("date", 20),
            ("time", 20),
            ("reminder", 10),
            ("notes", rules.MAX_APPOINTMENT_NOTES + 100),
            ("assignee", 64),
        )
    }


@router.post("/leads/{lead_id}/appointments")
async def create_appointment(request: Request, lead_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    view = await _visible_lead(request, session, lead_id)
    identity = session.identity
    typed = _typed(form)
    assignees = [a[0] for a in await _assignees(portal, session)]
    now = portal.clock()
    checked, errors = rules.check_appointment_form(
        typed, zone=portal.time_zone(identity.client_id), now=now, assignees=assignees
    )
    appointment_id = rules.parse_uuid(typed["appointment_id"])
    if appointment_id is None:
        errors["form"] = "This form expired. Please save it again."
        typed["appointment_id"] = str(uuid.uuid4())
    if checked is None or appointment_id is None:
        return await _lead_with_editor(request, session, view, 400, typed, errors)
    command = AppointmentCreate(
        appointment_id=appointment_id,
        client_id=identity.client_id,
        lead_id=view.lead_id,
        assigned_user_id=checked.assignee,
        created_by_user_id=identity.user_id,
        starts_at=checked.starts_at,
        reminder_minutes_before=checked.reminder_minutes,
        title=checked.title,
        notes=checked.notes,
        requested_at=datetime.now(UTC),
    )
    answer = await appointments_client.send(
        request.app.state.rpc, portal.runtime.topology, command, message_id=str(appointment_id)
    )
    if isinstance(answer, AppointmentAccepted):
        done = "appointment_created" if answer.applied else "appointment_repeated"
        return RedirectResponse(portal.url(f"/leads/{view.lead_id}", {"done": done}), status_code=303)
    if isinstance(answer, NoAnswer):
        return await _lead_with_editor(request, session, view, 202, typed, {"form": NOT_CONFIRMED})
    if isinstance(answer, NotSent):
        return await _lead_with_editor(request, session, view, 503, typed, {"form": NOT_SENT})
    return await _lead_with_editor(
        request, session, view, 400, typed, {"form": rules.appointment_refusal(answer.message)}
    )


# --- The Appointments tab and the editor of one appointment --------------------------------------------

VIEW_TITLES = {"upcoming": "Upcoming", "past": "Past", "cancelled": "Cancelled"}
DONE_NOTICES = {
    "saved": "The appointment is saved; its assignee gets an email.",
    "cancelled": "The appointment is cancelled; its assignee gets an email.",
    "unchanged": "Nothing changed.",
}


@router.get("/appointments")
async def appointment_tab(request: Request, session: SignedIn) -> Response:
    portal = portal_of(request)
    which = request.query_params.get("view", "upcoming")
    if which not in rules.APPOINTMENT_VIEWS:
        raise HTTPException(400, "Choose upcoming, past or cancelled appointments.")
    zone = portal.time_zone(session.identity.client_id)
    async with portal.pool.acquire() as conn:
        rows = await queries.appointment_list(
            conn, session.viewer, when=which, now=portal.clock(), limit=rules.APPOINTMENTS_SHOWN
        )
    return portal.render(
        request,
        "appointments.html",
        appointments=[_row(portal, zone, r) for r in rows],
        view=which,
        views=VIEW_TITLES,
        limit=rules.APPOINTMENTS_SHOWN,
        notice=DONE_NOTICES.get(request.query_params.get("done", "")),
    )


async def _visible_appointment(request: Request, session: Session, appointment_id: str) -> asyncpg.Record:
    parsed = rules.parse_uuid(appointment_id)
    row = None
    if parsed is not None:
        async with portal_of(request).pool.acquire() as conn:
            row = await queries.appointment(conn, session.viewer, parsed)
    if row is None:
        raise HTTPException(404, NOT_FOUND)
    return row


def _editor_of(row: asyncpg.Record, zone: str) -> dict[str, Any]:
    local = rules.format_local(row["starts_at"], zone)
    return {
        "command_id": str(uuid.uuid4()),
        "title": row["title"],
        "date": local[:10],
        "time": local[11:16],
        "reminder": str(row["reminder_minutes"]),
        "notes": row["notes"],
        "assignee": str(row["assigned_user_id"]),
    }


async def _edit_page(
    request: Request,
    session: Session,
    row: asyncpg.Record,
    status: int = 200,
    *,
    editor: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    portal = portal_of(request)
    zone = portal.time_zone(session.identity.client_id)
    return portal.render(
        request,
        "appointment_edit.html",
        status,
        appointment=_row(portal, zone, row),
        panel={
            "editor": editor or _editor_of(row, zone),
            "errors": errors or {},
            "zone": zone,
            "assignees": await _assignees(portal, session),
            "reminders": rules.REMINDER_CHOICES,
        },
        cancel_id=str(uuid.uuid4()),
        notice=DONE_NOTICES.get(request.query_params.get("done", "")),
    )


@router.get("/appointments/{appointment_id}")
async def edit_page(request: Request, appointment_id: str, session: SignedIn) -> Response:
    row = await _visible_appointment(request, session, appointment_id)
    return await _edit_page(request, session, row)


async def _answered(
    request: Request, session: Session, row: asyncpg.Record, answer: appointments_client.Answer, typed: dict[str, Any]
) -> Response:
    portal = portal_of(request)
    if isinstance(answer, AppointmentAccepted):
        done = ("cancelled" if answer.status == "cancelled" else "saved") if answer.applied else "unchanged"
        return RedirectResponse(portal.url(f"/appointments/{row['id']}", {"done": done}), status_code=303)
    if isinstance(answer, NoAnswer):
        return await _edit_page(request, session, row, 202, editor=typed, errors={"form": NOT_CONFIRMED})
    if isinstance(answer, NotSent):
        return await _edit_page(request, session, row, 503, editor=typed, errors={"form": NOT_SENT})
    return await _edit_page(
        request, session, row, 400, editor=typed, errors={"form": rules.appointment_refusal(answer.message)}
    )


@router.post("/appointments/{appointment_id}")
async def save_appointment(request: Request, appointment_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    row = await _visible_appointment(request, session, appointment_id)
    typed = _typed(form)
    if row["status"] == "cancelled":
        return await _edit_page(
            request,
            session,
            row,
            400,
            editor=typed,
            errors={"form": "This appointment is cancelled: it cannot be changed."},
        )
    assignees = [a[0] for a in await _assignees(portal, session)]
    checked, errors = rules.check_appointment_form(
        typed,
        zone=portal.time_zone(session.identity.client_id),
        now=portal.clock(),
        assignees=assignees,
        current_start=row["starts_at"],
    )
    command_id = rules.parse_uuid(typed["command_id"])
    if command_id is None:
        errors["form"] = "This form expired. Please save it again."
        typed["command_id"] = str(uuid.uuid4())
    if checked is None or command_id is None:
        return await _edit_page(request, session, row, 400, editor=typed, errors=errors)
    command = AppointmentUpdate(
        appointment_id=row["id"],
        client_id=session.identity.client_id,
        assigned_user_id=checked.assignee,
        starts_at=checked.starts_at,
        reminder_minutes_before=checked.reminder_minutes,
        title=checked.title,
        notes=checked.notes,
        requested_at=datetime.now(UTC),
    )
    answer = await appointments_client.send(
        request.app.state.rpc, portal.runtime.topology, command, message_id=str(command_id)
    )
    return await _answered(request, session, row, answer, typed)


@router.post("/appointments/{appointment_id}/cancel")
async def cancel_appointment(request: Request, appointment_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    row = await _visible_appointment(request, session, appointment_id)
    command_id = rules.parse_uuid(field(form, "command_id")) or uuid.uuid4()
    command = AppointmentCancel(
        appointment_id=row["id"], client_id=session.identity.client_id, requested_at=datetime.now(UTC)
    )
    answer = await appointments_client.send(
        request.app.state.rpc, portal.runtime.topology, command, message_id=str(command_id)
    )
    return await _answered(request, session, row, answer, _editor_of(row, portal.time_zone(row["client_id"])))
