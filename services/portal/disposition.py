"""The lead's status in the buyer's own pipeline: the "Status" panel of the lead page and its
form. The same disposition the buyer API sets (new, contacted, quoted, won, lost, bad, with a
note; shared/dispositions.py), so a status set by the buyer's CRM over the API shows here, and one
set here is what the API lists. Any user who can see the lead may set it; the last write wins.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.portal.auth import Session, SignedIn, portal_of, session_form
from services.portal.leads import NOT_FOUND, LeadView, _visible_lead, render_lead
from services.portal.pages import LEAD_NOTICES, LEAD_PANELS, LeadPanel, Portal, field
from services.portal.rules import format_local
from shared import dispositions

router = APIRouter()


async def disposition_panel(portal: Portal, session: Session, view: LeadView) -> dict[str, Any]:
    current = await dispositions.disposition_of(portal.pool, session.viewer.client_id, view.lead_id)
    return {
        "choices": [(d, dispositions.LABELS[d]) for d in dispositions.DISPOSITIONS],
        "current": current,
        "at": format_local(current.updated_at, portal.time_zone(session.viewer.client_id)) if current else "",
        "chosen": current.disposition if current else "",
        "note": current.note if current else "",
        "max_note": dispositions.MAX_NOTE,
        "errors": {},
    }


LEAD_PANELS.append(LeadPanel("disposition", "_lead_disposition.html", disposition_panel))
LEAD_NOTICES["disposition"] = "The lead's status is saved."


@router.post("/leads/{lead_id}/disposition")
async def set_disposition(request: Request, lead_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    view = await _visible_lead(request, session, lead_id)
    # A browser sends a textarea's line breaks as CRLF; store them as the API does, "\n".
    chosen, note = field(form, "disposition").strip(), field(form, "note").replace("\r\n", "\n").strip()
    errors = dispositions.problems(chosen, note)
    if not errors:
        written = await dispositions.set_disposition(
            portal.pool,
            session.viewer.client_id,
            view.lead_id,
            chosen,
            note,
            dispositions.portal_user(session.identity.user_id),
        )
        if written is None:  # delivered no more (cannot happen today: deliveries are never undone)
            raise HTTPException(404, NOT_FOUND)
        return RedirectResponse(portal.url(f"/leads/{view.lead_id}", {"done": "disposition"}), status_code=303)
    state = await disposition_panel(portal, session, view)
    state.update(chosen=chosen, note=note[: dispositions.MAX_NOTE + 100], errors=errors)
    return await render_lead(request, session, view, 400, panel_state={"disposition": state})
