"""Lead assignment (H5): the "Assigned to" panel of the lead page and its form.

Admins assign any lead of the client to any enabled user (or to nobody: then only admins see it);
View Downline users assign the leads they see to an enabled user of their downline. The write is
the portal's own (table `lead_assignments`, usecases.assign_lead), with a `lead.assigned` event
for notifier's new-lead emails.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.portal import queries, rules, usecases
from services.portal.auth import Session, SignedIn, portal_of, session_form
from services.portal.leads import NOT_FOUND, LeadView, _visible_lead, render_lead
from services.portal.pages import LEAD_NOTICES, LEAD_PANELS, LeadPanel, Portal, field

router = APIRouter()

NOBODY = "nobody"


async def assignment_panel(portal: Portal, session: Session, view: LeadView) -> dict[str, Any]:
    viewer = session.viewer
    users = []
    if rules.may_assign(viewer):
        async with portal.pool.acquire() as conn:
            users = [
                (u["id"], u["name"] or u["email"], u["email"]) for u in await queries.assignable_users(conn, viewer)
            ]
    return {
        "assigned": view.assigned,
        "assigned_user_id": view.assigned_user_id,
        "may_assign": rules.may_assign(viewer),
        "may_unassign": viewer.scope == "all",
        "users": users,
        "errors": {},
    }


LEAD_PANELS.append(LeadPanel("assignment", "_lead_assignment.html", assignment_panel))
LEAD_NOTICES.update(
    {
        "assigned": "The lead is assigned.",
        "unassigned": "The lead is no longer assigned: only admins see it now.",
        "unchanged": "The lead was already assigned so.",
    }
)


@router.post("/leads/{lead_id}/assign")
async def assign(request: Request, lead_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    view = await _visible_lead(request, session, lead_id)
    chosen = field(form, "assignee").strip()
    user_id = None if chosen == NOBODY else rules.parse_uuid(chosen)
    if user_id is None and chosen != NOBODY:
        outcome: usecases.Assigned | usecases.Refused = usecases.Refused({"assignee": "Choose a user from the list."})
    else:
        try:
            outcome = await usecases.assign_lead(portal.pool, session.identity, view.lead_id, user_id, portal.clock())
        except usecases.LeadNotFound:
            raise HTTPException(404, NOT_FOUND) from None
    if isinstance(outcome, usecases.Assigned):
        done = "unchanged" if not outcome.changed else ("assigned" if outcome.user_id else "unassigned")
        # The lead may have left the user's own scope (assigned away): then the list, not a 404.
        async with portal.pool.acquire() as conn:
            still = await queries.lead_detail(conn, session.viewer, view.lead_id)
        target = f"/leads/{view.lead_id}" if still is not None else "/leads"
        return RedirectResponse(portal.url(target, {"done": done}), status_code=303)
    state = await assignment_panel(portal, session, view)
    state["errors"] = outcome.errors
    return await render_lead(request, session, view, 400, panel_state={"assignment": state})


# --- Many leads at once, from the lead list ------------------------------------------------------


@router.post("/leads/assign")
async def assign_many(request: Request, session: SignedIn) -> Response:
    """The lead list's "Assign selected": each ticked lead (at most a page) assigned as the lead
    page would, one transaction each; back to the same list with how many were assigned and how
    many could not be (not visible any more, or the assignee refused)."""
    portal = portal_of(request)
    form = await session_form(request, session)
    back = rules.safe_next(field(form, "back"), portal.base_path) or portal.url("/leads")
    chosen = field(form, "assignee").strip()
    user_id = None if chosen == NOBODY else rules.parse_uuid(chosen)
    leads = [rules.parse_uuid(v) for v in form.getlist("lead")[: rules.PAGE_SIZE] if isinstance(v, str)]
    if not rules.may_assign(session.viewer):
        raise HTTPException(404, "There is no such page here.")
    outcome = rules.BulkOutcome()
    if not leads or (user_id is None and chosen != NOBODY):
        outcome = rules.BulkOutcome(problem="choose" if not leads else "assignee")
    else:
        for lead_id in leads:
            if lead_id is None:
                outcome = outcome.add("skipped")
                continue
            try:
                result = await usecases.assign_lead(portal.pool, session.identity, lead_id, user_id, portal.clock())
            except usecases.LeadNotFound:
                outcome = outcome.add("skipped")
                continue
            outcome = outcome.add("skipped" if isinstance(result, usecases.Refused) else "assigned")
    separator = "&" if "?" in back else "?"
    return RedirectResponse(back + separator + urlencode(outcome.params()), status_code=303)
