"""The Order Manager (G1–G14): the client's orders with every figure of the seed, and pause /
resume for admins — a command (`order.command`, request-reply) to the returns service, which owns
order status. Everything else about an order (total, dates, renewal) is the seller's, in the
catalog.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.portal import queries, returns_client, rules
from services.portal.auth import Session, SignedIn, portal_of, session_form
from shared.contracts import OrderCommand, OrderCommandResult, OrderFiguresView

router = APIRouter()

NOT_FOUND = "There is no such order in your portal."
NOTICES = {
    "paused": "Order {order} is paused: it takes no leads until it is resumed.",
    "resumed": "Order {order} is open again.",
}


def _row(order: OrderFiguresView, is_admin: bool) -> dict[str, Any]:
    unit = order.order_type
    return {
        "id": order.order_id,
        "type": "Leads" if unit == "lead_quantity" else "Dollars",
        "start": order.start_date.isoformat(),
        "end": order.end_date.isoformat() if order.end_date else "",
        "status": order.status,
        "status_name": rules.ORDER_STATUS_NAMES.get(order.status, order.status),
        "renewal": rules.RENEWAL_NAMES.get(order.renewal, order.renewal),
        "auto_charge": "Yes" if order.auto_charge else "No",
        "total": rules.order_amount(unit, order.total),
        "received": rules.order_amount(unit, order.received),
        "remaining": rules.order_amount(unit, order.remaining),
        "in_flight": rules.order_amount(unit, order.in_flight) if order.in_flight else "",
        "cost": f"${order.cost:,.2f}",
        "amount_paid": f"${order.amount_paid:,.2f}",
        "period": order.period,
        "actions": rules.order_actions(order.status, is_admin),
    }


async def _render(
    request: Request, session: Session, status: int = 200, *, notice: str | None = None, error: str | None = None
) -> Response:
    portal = portal_of(request)
    async with portal.pool.acquire() as conn:
        orders = await queries.orders_of(conn, session.viewer)
    rows = [_row(o, session.identity.is_admin) for o in orders]
    return portal.render(request, "orders.html", status, rows=rows, notice=notice, error=error)


@router.get("/orders")
async def orders_page(request: Request, session: SignedIn) -> Response:
    done, order = request.query_params.get("done", ""), request.query_params.get("order", "")
    notice = NOTICES[done].format(order=order) if done in NOTICES and rules.valid_order_id(order) else None
    return await _render(request, session, notice=notice)


@router.post("/orders/{order_id}/pause")
async def pause(request: Request, order_id: str, session: SignedIn) -> Response:
    return await _command(request, session, order_id, "pause")


@router.post("/orders/{order_id}/resume")
async def resume(request: Request, order_id: str, session: SignedIn) -> Response:
    return await _command(request, session, order_id, "resume")


async def _command(request: Request, session: Session, order_id: str, action: Literal["pause", "resume"]) -> Response:
    """CSRF, admins only, then the command to the returns service with the client's id (another
    client's order is "not found" there: 404 here); its answer decides the page."""
    portal = portal_of(request)
    await session_form(request, session)
    if not rules.valid_order_id(order_id):
        raise HTTPException(404, NOT_FOUND)
    identity = session.identity
    if not identity.is_admin:
        raise HTTPException(403, "Only admins can pause or resume orders.")
    answer = await returns_client.order_command(
        request.app.state.rpc,
        portal.runtime.topology,
        OrderCommand(order_id=order_id, action=action, client_id=identity.client_id, requested_by=identity.email[:200]),
    )
    if isinstance(answer, OrderCommandResult):
        if answer.ok:
            done = rules.ORDER_ACTIONS[action]
            return RedirectResponse(portal.url("/orders", {"done": done, "order": order_id}), status_code=303)
        if answer.error == "order not found":
            raise HTTPException(404, NOT_FOUND)
        return await _render(request, session, 409, error=rules.order_refusal(answer.error))
    if isinstance(answer, returns_client.NoAnswer):
        return await _render(
            request, session, 202, notice="Your change was sent and is being processed. Reload this page in a moment."
        )
    if isinstance(answer, returns_client.NotSent):
        return await _render(request, session, 503, error="The change could not be sent right now. Please try again.")
    return await _render(request, session, 400, error="The order service could not read this change.")
