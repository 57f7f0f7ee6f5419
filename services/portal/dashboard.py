"""The dashboard (B1–B5): leads received per day this month and last month (one chart), leads and
appointments per day this month, upcoming appointments, the most recent leads. Days are the
client's time zone; "received" is a succeeded delivery, by its completion time. Charts are SVG
drawn on the server (no script), each with its numbers in a table beside it.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from services.portal import queries, rules
from services.portal.auth import SignedIn, portal_of

router = APIRouter()


@router.get("/dashboard")
async def dashboard(request: Request, session: SignedIn) -> Response:
    portal = portal_of(request)
    viewer = session.viewer
    zone = portal.time_zone(viewer.client_id)
    now = portal.clock()
    today = rules.local_day(now, zone)
    this_month = rules.month_start(today)
    last_month = rules.add_months(this_month, -1)
    next_month = rules.add_months(this_month, 1)
    async with portal.pool.acquire() as conn:
        received = await queries.leads_per_day(conn, viewer, last_month, (next_month - last_month).days, zone)
        made = await queries.appointments_per_day(
            conn, viewer, rules.day_start(this_month, zone), rules.day_start(next_month, zone), zone
        )
        upcoming = await queries.upcoming_appointments(conn, viewer, now, rules.UPCOMING_APPOINTMENTS)
        recent = await queries.recent_leads(conn, viewer, rules.RECENT_LEADS)

    days_this, days_last = rules.days_in_month(this_month), rules.days_in_month(last_month)
    so_far = today.day
    this_series = rules.daily_counts(received, this_month, so_far)
    last_series = rules.daily_counts(received, last_month, days_last)
    appointment_series = rules.daily_counts(made, this_month, so_far)
    received_chart = rules.line_chart(
        [("Last month", "series-last", last_series), ("This month", "series-this", this_series)],
        max(days_this, days_last),
    )
    work_chart = rules.bar_chart(
        [("Leads", "series-this", this_series), ("Appointments", "series-appointments", appointment_series)],
        days_this,
    )
    lead_types = portal.catalog.lead_types_by_id
    return portal.render(
        request,
        "dashboard.html",
        today=today,
        this_month=this_month,
        last_month=last_month,
        totals={
            "this_month": sum(this_series),
            "last_month": sum(last_series),
            "last_month_to_date": sum(last_series[:so_far]),
            "appointments": sum(appointment_series),
        },
        received_chart=received_chart,
        work_chart=work_chart,
        received_table=[
            (day + 1, last_series[day] if day < days_last else None, this_series[day] if day < so_far else None)
            for day in range(max(days_this, days_last))
        ],
        work_table=[(this_month + timedelta(days=i), this_series[i], appointment_series[i]) for i in range(so_far)],
        upcoming=[
            {
                "lead_id": a["lead_id"],
                "when": rules.format_local(a["starts_at"], zone),
                "title": a["title"] or "Appointment",
                "lead": rules.lead_name(lead_types.get(a["lead_type_id"]), a["fields"] or {}),
                "assigned": a["assigned_name"] or a["assigned_email"] or "",
            }
            for a in upcoming
        ],
        recent=[
            {
                "lead_id": r["lead_id"],
                "delivered": rules.format_local(r["completed_at"], zone),
                "name": rules.lead_name(lead_types.get(r["lead_type_id"]), r["fields"] or {}),
                "type": lead_types[r["lead_type_id"]].name if r["lead_type_id"] in lead_types else r["lead_type_id"],
                "price": r["price"],
            }
            for r in recent
        ],
    )
