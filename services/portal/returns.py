"""Returns (D5, F1–F6): the Return form of a lead, and the Returns screen.

The returns service decides (its rules and caps, docs/returns-and-orders.md); the portal shows what
it will be judged on — the lead type's reasons, "returnable until", this month's allowance — sends
`return.request` with request-reply, and shows the answer. The form carries a return id minted
when it was rendered: the same form sent twice is one request, answered with the first outcome.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.portal import queries, returns_client, rules
from services.portal.auth import Session, SignedIn, portal_of, session_form
from services.portal.leads import NOT_FOUND, LeadView, lead_view
from services.portal.pages import Portal, field
from services.returns.rules import DEFAULT_WINDOW_DAYS, account_pct, month_bounds, order_pct
from shared.contracts import ReturnRequest, ReturnRequested

router = APIRouter()


def install(portal: Portal) -> None:
    """The lead page asks the templates whether to offer the Return button (F1)."""
    portal.templates.env.globals["returns_offered"] = lambda client_id: rules.returns_offered(portal.catalog, client_id)
    portal.templates.env.globals["may_request_return"] = rules.may_request_return


async def _lead(request: Request, session: Session, lead_id: str) -> LeadView:
    parsed = rules.parse_uuid(lead_id)
    view = await lead_view(portal_of(request), session.viewer, parsed) if parsed else None
    if view is None:
        raise HTTPException(404, NOT_FOUND)
    return view


async def _return_context(portal: Portal, session: Session, view: LeadView) -> dict[str, Any]:
    """What the Return form shows: the reasons, returnable until, the allowances, and whether
    this lead may be asked for at all."""
    viewer = session.viewer
    client_id = viewer.client_id
    zone = portal.time_zone(client_id)
    async with portal.pool.acquire() as conn:
        basis = await queries.return_basis(conn, viewer, view.lead_id)
        if basis is None:
            raise HTTPException(404, NOT_FOUND)
        start, end = month_bounds(basis["completed_at"], zone)
        month = start.date()
        account_id = basis["delivery_account_id"]
        pct = account_pct(portal.catalog, client_id, account_id)
        delivered, used = await queries.account_returns_month(conn, viewer, account_id, start, end)
        caps = [rules.allowance("delivery_account", view.type_name, pct, delivered, used, month)]
        if basis["order_id"] is not None:
            order_percent = order_pct(portal.catalog, client_id, basis["order_return_pct"])
            delivered, used = await queries.order_returns_month(conn, viewer, basis["order_id"], start, end)
            caps.append(rules.allowance("order", basis["order_id"], order_percent, delivered, used, month))
    lead_type = view.lead_type
    window = lead_type.return_window_days if lead_type is not None else DEFAULT_WINDOW_DAYS
    until = rules.returnable_until(basis["completed_at"], window)
    return {
        "reasons": list(lead_type.return_reasons) if lead_type is not None else [],
        "window_days": window,
        "returnable_until": rules.format_local(until, zone),
        "window_open": portal.clock() <= until,
        "allowances": caps,
        "allowed_by_contract": all(c.pct > 0 for c in caps),
        "may_request": rules.may_request_return(view.return_info),
    }


def _outcome(record: Any, zone: str) -> dict[str, Any]:
    kind, sentence = rules.return_answer(record["status"], record["decision_reason"], record["credit"])
    return {
        "return_id": record["id"],
        "kind": kind,
        "sentence": sentence,
        "status": rules.RETURN_STATUS_NAMES.get(record["status"], record["status"]),
        "reason": record["reason"],
        "comment": record["comment"],
        "note": record["note"] if record["decision_reason"] == "admin" else None,
        "requested": rules.format_local(record["requested_at"], zone),
    }


@router.get("/leads/{lead_id}/return")
async def return_page(request: Request, lead_id: str, session: SignedIn) -> Response:
    """The Return form; with `?return_id=` the answer to a request made from it."""
    portal = portal_of(request)
    view = await _lead(request, session, lead_id)
    outcome = None
    asked = request.query_params.get("return_id")
    if asked is not None:
        return_id = rules.parse_uuid(asked)
        async with portal.pool.acquire() as conn:
            record = await queries.return_of(conn, session.viewer, view.lead_id, return_id) if return_id else None
        if record is None:
            raise HTTPException(404, "There is no such return in your portal.")
        outcome = _outcome(record, portal.time_zone(session.identity.client_id))
    return await _render(request, session, view, outcome=outcome)


async def _render(
    request: Request,
    session: Session,
    view: LeadView,
    status: int = 200,
    *,
    outcome: dict[str, Any] | None = None,
    typed: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    processing: bool = False,
) -> Response:
    portal = portal_of(request)
    context = await _return_context(portal, session, view)
    form = typed or {"return_id": str(uuid.uuid4()), "reason": "", "comment": ""}
    return portal.render(
        request,
        "return.html",
        status,
        lead=view,
        outcome=outcome,
        form=form,
        errors=errors or {},
        processing=processing,
        **context,
    )


@router.post("/leads/{lead_id}/return")
async def request_return(request: Request, lead_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    form = await session_form(request, session)
    view = await _lead(request, session, lead_id)
    typed = {
        "return_id": field(form, "return_id")[:64],
        "reason": field(form, "reason")[: rules.MAX_RETURN_REASON + 50],
        "comment": field(form, "comment")[: rules.MAX_RETURN_COMMENT + 100],
    }
    reasons = list(view.lead_type.return_reasons) if view.lead_type is not None else []
    checked, errors = rules.check_return_form(typed["reason"], typed["comment"], reasons)
    return_id = rules.parse_uuid(typed["return_id"])
    if return_id is None:
        errors["form"] = "This form expired. Please send it again."
        typed["return_id"] = str(uuid.uuid4())
    if checked is None or return_id is None:
        return await _render(request, session, view, 400, typed=typed, errors=errors)
    identity = session.identity
    answer = await returns_client.request_return(
        request.app.state.rpc,
        portal.runtime.topology,
        ReturnRequest(
            return_id=return_id,
            client_id=identity.client_id,
            lead_id=view.lead_id,
            reason=checked.reason,
            comment=checked.comment,
            requested_by=identity.email[:200],
        ),
    )
    if isinstance(answer, ReturnRequested):
        return RedirectResponse(
            portal.url(f"/leads/{view.lead_id}/return", {"return_id": str(answer.return_id)}), status_code=303
        )
    if isinstance(answer, returns_client.NoAnswer):
        # Queued and durable: it will be decided; the Returns screen shows the outcome.
        return await _render(request, session, view, 202, typed=typed, processing=True)
    if isinstance(answer, returns_client.NotSent):
        errors["form"] = "The return could not be sent right now. Please try again in a moment."
        return await _render(request, session, view, 503, typed=typed, errors=errors)
    errors["form"] = "The returns service could not read this request. Please check the form and try again."
    return await _render(request, session, view, 400, typed=typed, errors=errors)


# --- The Returns screen ---------------------------------------------------------------------------


@router.get("/returns")
async def returns_screen(request: Request, session: SignedIn) -> Response:
    portal = portal_of(request)
    zone = portal.time_zone(session.identity.client_id)
    params = dict(request.query_params)
    f, errors = rules.parse_returns_filter(params)
    form = {k: str(params.get(k, ""))[:40] for k in ("status", "from", "to")}
    if f is None:
        return portal.render(request, "returns.html", 400, form=form, errors=errors, rows=[], filter=None)
    async with portal.pool.acquire() as conn:
        records = await queries.returns_page(conn, session.viewer, f, zone)
    page = records[: rules.RETURNS_PAGE_SIZE]
    next_page = None
    if len(records) > rules.RETURNS_PAGE_SIZE:
        last = page[-1]
        next_page = portal.url(
            "/returns", f.params(after=rules.encode_returns_cursor(last["requested_at"], last["id"]))
        )
    types = portal.catalog.lead_types_by_id
    rows = []
    for r in page:
        lead_type = types.get(r["lead_type_id"])
        rows.append(
            {
                "return_id": r["id"],
                "lead_id": r["lead_id"],
                "name": rules.lead_name(lead_type, r["fields"] or {}),
                "type": lead_type.name if lead_type else r["lead_type_id"],
                "requested": rules.format_local(r["requested_at"], zone),
                "decided": rules.format_local(r["decided_at"], zone),
                "reason": r["reason"],
                "comment": r["comment"],
                "status": r["status"],
                "status_name": rules.RETURN_STATUS_NAMES.get(r["status"], r["status"]),
                "returned": {"approved": "Yes", "denied": "No"}.get(r["status"], "Not yet"),
                "decision": rules.RETURN_DECISIONS.get(r["decision_reason"] or "", ""),
                "note": r["note"] if r["decision_reason"] == "admin" else None,
                "credit": r["credit"] if r["status"] == "approved" else None,
            }
        )
    return portal.render(
        request,
        "returns.html",
        form=f.params(),
        errors={},
        rows=rows,
        filter=f,
        next_page=next_page,
        first_page=portal.url("/returns", f.params()) if f.after else None,
    )
