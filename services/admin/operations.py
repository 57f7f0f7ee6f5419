"""The day-to-day pages: the returns queue, leads and their timeline, dead letters, paused
delivery accounts, orders. Reads through queries.py; every change through a use case (a command
to the owning service, or the console's own tables) with its audit row."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.admin import deadletters, masking, queries, rules, usecases
from services.admin.auth import Operator, Reader, console_of
from services.admin.console import Console, field
from services.admin.rules import Staff
from services.delivery.posting import mask_by_name
from services.notifier.rules import new_lead_notification_id
from services.returns import rules as return_rules
from shared import orders
from shared.catalog.model import Catalog, HttpDelivery
from shared.catalog.store import current_version

router = APIRouter(include_in_schema=False)


# --- Returns queue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapUsage:
    """One cap a return counts against, in the month its lead was delivered."""

    scope: str  # delivery_account or order
    key: str
    pct: Decimal
    delivered: int
    counted: int

    @property
    def allowed(self) -> int:
        return return_rules.allowed_returns(self.delivered, self.pct)

    @property
    def over(self) -> bool:
        return self.counted > self.allowed


async def cap_usage(pool: Any, catalog: Catalog, row: Any) -> list[CapUsage]:
    """The client's cap usage behind a return, as the returns service's rule counts it."""
    if row["delivered_at"] is None:
        return []
    client = catalog.clients_by_id.get(row["client_id"])
    start, end = return_rules.month_bounds(row["delivered_at"], client.time_zone if client else "UTC")
    caps = []
    if row["delivery_account_id"]:
        pct = return_rules.account_pct(catalog, row["client_id"], row["delivery_account_id"])
        delivered, counted = await queries.cap_usage(pool, "delivery_account", row["delivery_account_id"], start, end)
        caps.append(CapUsage("delivery_account", row["delivery_account_id"], pct, delivered, counted))
    if row["order_id"]:
        pct = return_rules.order_pct(catalog, row["client_id"], await queries.order_return_pct(pool, row["order_id"]))
        delivered, counted = await queries.cap_usage(pool, "order", row["order_id"], start, end)
        caps.append(CapUsage("order", row["order_id"], pct, delivered, counted))
    return caps


RETURN_STATUSES = ("pending", "approved", "denied", "all")


def read_returns_filters(params: Any, console: Console) -> tuple[dict[str, str], dict[str, str]]:
    status = params.get("status", "pending") or "pending"
    client = params.get("client", "")
    errors: dict[str, str] = {}
    if status not in RETURN_STATUSES:
        errors["status"] = "Choose pending, approved, denied or all."
    if client and client not in console.catalog.clients_by_id:
        errors["client"] = "Choose a client from the list."
    return {"status": status, "client": client}, errors


async def returns_rows(console: Console, filters: dict[str, str]) -> list[dict[str, Any]]:
    status = None if filters["status"] == "all" else filters["status"]
    rows = await queries.returns(console.pool, status=status, client_id=filters["client"] or None, limit=200)
    catalog = console.catalog
    out = []
    for row in rows:
        caps = await cap_usage(console.pool, catalog, row) if row["status"] == "pending" else []
        lead_type = catalog.lead_types_by_id.get(row["lead_type_id"])
        fields = row["fields"] or {}
        name = " ".join(str(fields.get(f, "")) for f in (lead_type.contact_name_fields if lead_type else ()))
        out.append({**dict(row), "caps": caps, "lead_name": name.strip()})
    return out


async def _returns_page(request: Request, status: int = 200, **context: Any) -> Response:
    console = console_of(request)
    filters, errors = read_returns_filters(request.query_params, console)
    rows = [] if errors else await returns_rows(console, filters)
    context.setdefault("errors", errors)
    context.setdefault("note", "")
    return console.render(
        request,
        "returns.html",
        400 if errors and status == 200 else status,
        rows=rows,
        filters=filters,
        statuses=RETURN_STATUSES,
        clients=console.catalog.clients,
        **context,
    )


@router.get("/returns")
async def returns_page(request: Request, staff: Staff = Reader) -> Response:
    return await _returns_page(request, sent=request.query_params.get("sent", ""))


def parse_ids(values: list[Any]) -> tuple[list[uuid.UUID], list[str]]:
    ids, bad = [], []
    for value in values:
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            bad.append(str(value)[:60])
    return ids, bad


@router.post("/returns/decide")
async def decide_returns(request: Request, staff: Staff = Operator) -> Response:
    """One form for both: the checked returns with the Approve / Deny buttons (bulk), or one row's
    own button (`one` = "approve:<id>" or "deny:<id>")."""
    console = console_of(request)
    form = await request.form()
    note = field(form, "note")
    one = field(form, "one")
    if one:
        decision, _, raw_id = one.partition(":")
        raw_ids: list[Any] = [raw_id]
    else:
        decision = field(form, "decision")
        raw_ids = form.getlist("return_id")
    ids, bad = parse_ids(raw_ids)
    try:
        if bad:
            raise usecases.Refused({"return_id": f"Not a return id: {', '.join(bad)}."})
        count = await usecases.decide_returns(console.deps, staff, ids, decision, note)
    except usecases.Refused as refused:
        checked = [] if one else [str(i) for i in raw_ids]  # a row's own button checks nothing
        return await _returns_page(request, refused.status, errors=refused.errors, note=note, checked=checked)
    verb = "approval" if decision == "approve" else "denial"
    back = {"status": field(form, "status") or "pending", "client": field(form, "client"), "sent": f"{count} {verb}"}
    return RedirectResponse(console.url("/returns", back), status_code=303)


# --- Leads ---------------------------------------------------------------------------------------


def masker(catalog: Catalog, account_ids: set[str]) -> tuple[Callable[[str | None], str | None], Any]:
    """(mask, mask_request) for a lead's logged posts, for the screen. Delivery masked the
    account's auth values and sensitive-looking fields when it logged them; this masks again for
    everyone: every secret the accounts hold now (masking.account_secrets: auth, secret headers,
    the URL's and body template's secret values), the by-name masking with the accounts' own
    `mask_fields` (the catalog may name more since), and in a request every header value that is
    not a plain protocol header (covers values an account held before)."""
    extra: tuple[str, ...] = ()
    values: list[str] = []
    for account_id in sorted(account_ids):
        account = catalog.accounts_by_id.get(account_id)
        if account is not None and isinstance(account.delivery, HttpDelivery):
            extra += account.delivery.mask_fields
            values += masking.account_secrets(account.model_dump(mode="json"))
    values = sorted(set(values), key=len, reverse=True)

    def mask(text: str | None) -> str | None:
        return None if text is None else mask_by_name(masking.mask_values(text, values), extra)

    def mask_request(text: str | None) -> str | None:
        return None if text is None else masking.mask_logged_request(mask(text) or "")

    return mask, mask_request


async def search(console: Console, params: Any) -> tuple[list[Any], dict[str, str], dict[str, str], str | None]:
    filters, errors, typed = rules.parse_lead_search(params, console.catalog.lead_types_by_id)
    if errors:
        return [], errors, typed, None
    rows = await queries.search_leads(console.pool, filters, limit=PAGE)
    after = f"{rows[-1]['received_at'].isoformat()}|{rows[-1]['id']}" if len(rows) == PAGE else None
    return rows, errors, typed, after


PAGE = 100


@router.get("/leads")
async def leads_page(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    rows, errors, typed, after = await search(console, request.query_params)
    return console.render(
        request,
        "leads.html",
        400 if errors else 200,
        rows=rows,
        errors=errors,
        q=typed,
        next_before=after,
        statuses=rules.LEAD_STATUSES,
        lead_types=console.catalog.lead_types,
        searched=any(typed.values()),
    )


async def lead_timeline(console: Console, lead_id: uuid.UUID) -> tuple[Any, list[rules.Step]]:
    lead = await queries.lead(console.pool, lead_id)
    if lead is None:
        raise HTTPException(404, f"There is no lead {lead_id}.")
    history = await queries.lead_history(console.pool, lead_id)
    users_by_client: dict[str, list[Any]] = {}
    for user in history["users"]:
        users_by_client.setdefault(user["client_id"], []).append(user["id"])
    ids = [d["id"] for d in history["deliveries"]]
    ids += [
        new_lead_notification_id(d["id"], user_id)
        for d in history["deliveries"]
        for user_id in users_by_client.get(d["client_id"], [])
    ]
    sent = await queries.emails(console.pool, ids) if ids else []
    accounts = {d["delivery_account_id"] for d in history["deliveries"]}
    return lead, rules.timeline(lead, history, sent, *masker(console.catalog, accounts))


def _lead_id(text: str) -> uuid.UUID:
    """A lead id from a path; anything else is a lead that does not exist (404)."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise HTTPException(404, "There is no such lead.") from None


@router.get("/leads/{lead_id}")
async def lead_page(request: Request, lead_id: str, staff: Staff = Reader) -> Response:
    console = console_of(request)
    parsed = _lead_id(lead_id)
    lead, steps = await lead_timeline(console, parsed)
    return console.render(request, "lead.html", lead=lead, steps=steps, done=request.query_params.get("done", ""))


@router.post("/leads/{lead_id}/reroute")
async def reroute_lead(request: Request, lead_id: str, staff: Staff = Operator) -> Response:
    console = console_of(request)
    parsed = _lead_id(lead_id)
    try:
        await usecases.reroute_lead(console.deps, staff, parsed)
    except usecases.Refused as refused:
        if refused.status == 404:
            raise HTTPException(404, "There is no such lead.") from refused
        lead, steps = await lead_timeline(console, parsed)
        return console.render(request, "lead.html", refused.status, lead=lead, steps=steps, errors=refused.errors)
    done = "Re-route sent: the router offers the lead again under the current catalog."
    return RedirectResponse(console.url(f"/leads/{parsed}", {"done": done}), status_code=303)


# --- Dead letters --------------------------------------------------------------------------------


async def _dead_letters_page(request: Request, status: int = 200, **context: Any) -> Response:
    console = console_of(request)
    queue = request.query_params.get("queue", "")
    errors = dict(context.pop("errors", {}))
    if queue and not deadletters.full_queue_known(queue, console.runtime.topology):
        errors["queue"] = "Choose a queue from the list."
        status = 400
    queues = await deadletters.figures(console.pool, console.settings.amqp_url, console.runtime.topology)
    rows = [] if "queue" in errors else await deadletters.open_rows(console.pool, queue or None)
    return console.render(
        request,
        "dead_letters.html",
        status,
        queues=queues,
        rows=rows,
        queue=queue,
        errors=errors,
        preview=deadletters.preview,
        describe=deadletters.describe_headers,
        done=request.query_params.get("done", ""),
        **context,
    )


@router.get("/dead-letters")
async def dead_letters_page(request: Request, staff: Staff = Reader) -> Response:
    return await _dead_letters_page(request)


@router.post("/dead-letters/bulk")
async def dead_letters_bulk(request: Request, staff: Staff = Operator) -> Response:
    """Replay or purge the checked dead letters, or every open one of the shown queue."""
    console = console_of(request)
    form = await request.form()
    action = field(form, "action")
    scope_all = field(form, "scope") == "all"
    queue = field(form, "queue")
    ids = [int(v) for v in form.getlist("ids") if isinstance(v, str) and v.isdigit() and len(v) < 19]
    try:
        outcome = await usecases.bulk_dead_letters(
            console.deps, staff, action, [] if scope_all else ids, queue if scope_all else None
        )
    except usecases.Refused as refused:
        return await _dead_letters_page(request, refused.status, errors=refused.errors)
    verb = "replayed" if action == "replay" else "purged"
    done = f"{len(outcome.done)} dead letters {verb}."
    if outcome.skipped:
        done += f" Skipped {len(outcome.skipped)}: " + "; ".join(f"#{i}: {why}" for i, why in outcome.skipped[:20])
    return RedirectResponse(console.url("/dead-letters", {"queue": queue, "done": done}), status_code=303)


@router.post("/dead-letters/{dead_letter_id}/{action}")
async def dead_letter_action(request: Request, dead_letter_id: int, action: str, staff: Staff = Operator) -> Response:
    console = console_of(request)
    if action not in ("replay", "purge"):
        raise HTTPException(404, "There is no such action.")
    if not 0 < dead_letter_id < 2**62:
        raise HTTPException(404, "There is no such dead letter.")
    try:
        if action == "replay":
            source = await usecases.replay_dead_letter(console.deps, staff, dead_letter_id)
            done = f"Dead letter {dead_letter_id} replayed (body from the {'DLQ' if source == 'dlq' else 'table'})."
        else:
            removed = await usecases.purge_dead_letter(console.deps, staff, dead_letter_id)
            done = f"Dead letter {dead_letter_id} purged" + (" (and its DLQ copy)." if removed else ".")
    except usecases.Refused as refused:
        return await _dead_letters_page(request, refused.status, errors=refused.errors)
    form = await request.form()
    return RedirectResponse(
        console.url("/dead-letters", {"queue": field(form, "queue"), "done": done}), status_code=303
    )


# --- Delivery accounts ---------------------------------------------------------------------------


async def accounts_view(console: Console) -> list[dict[str, Any]]:
    states = await queries.account_states(console.pool)
    out = []
    for account in console.catalog.delivery_accounts:
        state = states.get(account.id)
        out.append(
            {
                "id": account.id,
                "client": account.client,
                "lead_type": account.lead_type,
                "active": account.active,
                "price": account.price,
                "method": account.delivery.method,
                "paused": bool(state and state["paused"]),
                "paused_at": state["paused_at"] if state else None,
                "paused_reason": state["paused_reason"] if state else None,
                "failures": state["consecutive_failures"] if state else 0,
            }
        )
    out.sort(key=lambda a: (not a["paused"], a["client"], a["id"]))
    return out


@router.get("/accounts")
async def accounts_page(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    return console.render(
        request, "accounts.html", accounts=await accounts_view(console), done=request.query_params.get("done", "")
    )


@router.post("/accounts/{account_id}/resume")
async def resume_account(request: Request, account_id: str, staff: Staff = Operator) -> Response:
    console = console_of(request)
    try:
        await usecases.resume_account(console.deps, staff, account_id[:64])
    except usecases.Refused as refused:
        return console.render(
            request, "accounts.html", refused.status, accounts=await accounts_view(console), errors=refused.errors
        )
    return RedirectResponse(console.url("/accounts", {"done": f"{account_id} resumed"}), status_code=303)


# --- Orders --------------------------------------------------------------------------------------


async def _orders_page(request: Request, status: int = 200, **context: Any) -> Response:
    console = console_of(request)
    figures = await orders.order_figures(console.pool)
    return console.render(
        request,
        "orders.html",
        status,
        orders=figures,
        done=request.query_params.get("done", ""),
        form_order=context.pop("form_order", ""),
        form=context.pop("form", {}),
        **context,
    )


@router.get("/orders")
async def orders_page(request: Request, staff: Staff = Reader) -> Response:
    return await _orders_page(request)


@router.post("/orders/{order_id}/payment")
async def order_payment(request: Request, order_id: str, staff: Staff = Operator) -> Response:
    console = console_of(request)
    form = await request.form()
    values = {"amount": field(form, "amount"), "note": field(form, "note")}
    try:
        paid = await usecases.order_payment(console.deps, staff, order_id[:64], values["amount"], values["note"])
    except usecases.Refused as refused:
        return await _orders_page(request, refused.status, errors=refused.errors, form_order=order_id, form=values)
    return RedirectResponse(console.url("/orders", {"done": f"{order_id}: amount paid now {paid}"}), status_code=303)


@router.post("/orders/{order_id}/status")
async def order_status(request: Request, order_id: str, staff: Staff = Operator) -> Response:
    console = console_of(request)
    form = await request.form()
    action = field(form, "action")
    try:
        await usecases.order_command(console.deps, staff, order_id[:64], action)
    except usecases.Refused as refused:
        return await _orders_page(request, refused.status, errors=refused.errors, form_order=order_id)
    done = f"{order_id}: {action} sent to the returns service"
    return RedirectResponse(console.url("/orders", {"done": done}), status_code=303)


# --- Processes: the catalog version each service process has loaded ---------------------------------


async def processes_view(console: Console) -> tuple[int, list[dict[str, Any]]]:
    """(the current catalog version, every process with the version it has loaded and its state:
    current, behind or stale), stale and behind first."""
    current = await current_version(console.pool)
    rows = []
    for r in await queries.processes(console.pool):
        ago = (r["now"] - r["seen_at"]).total_seconds()
        rows.append(
            {
                "process_id": r["process_id"],
                "service": r["service"],
                "catalog_version": r["catalog_version"],
                "started_at": r["started_at"],
                "seen_at": r["seen_at"],
                "seen_seconds_ago": round(max(ago, 0.0), 1),
                "state": rules.process_state(r["catalog_version"], current, ago),
            }
        )
    order = {"stale": 0, "behind": 1, "current": 2}
    rows.sort(key=lambda p: (order[p["state"]], p["service"], p["process_id"]))
    return current, rows


@router.get("/processes")
async def processes_page(request: Request, staff: Staff = Reader) -> Response:
    console = console_of(request)
    current, rows = await processes_view(console)
    return console.render(
        request, "processes.html", current_version=current, processes=rows, stale_after=rules.PROCESS_STALE_SECONDS
    )
