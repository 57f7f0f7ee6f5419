"""The buyer API (docs/buyer-api.md): a buyer's system, with a buyer API key, acting for its own
client only. Reads go through queries.py (client first, in the SQL); commands go to the service
that owns the data (delivery: ConfirmPrice; returns: ReturnRequest) with the key's client in
them, and that service checks it again. Another client's lead is a 404, never a 403."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from services.intake import queries, rules, usecases
from services.intake.auth import authenticate
from shared import dispositions
from shared.api_keys import KeyRow
from shared.catalog.model import Catalog

router = APIRouter()
PREFIX = "/v1/buyer"


async def _key(request: Request) -> KeyRow:
    return await authenticate(request, "buyer")


def _deps(request: Request) -> usecases.Deps:
    deps: usecases.Deps = request.app.state.deps
    return deps


def _lead_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise HTTPException(404, "no such lead") from None


async def _own_lead(request: Request, key: KeyRow, lead_id: str) -> queries.DeliveredLead:
    found = await queries.delivered_lead(_deps(request).process.pool, key.owner, _lead_id(lead_id))
    if found is None:
        raise HTTPException(404, "no such lead")
    return found


async def _body(request: Request) -> dict[str, Any]:
    try:
        return rules.json_object(request.headers.get("content-type"), await request.body())
    except rules.BadPost as exc:
        raise HTTPException(400, str(exc)) from None


def _idempotency_key(request: Request) -> str | None:
    header = request.headers.get("idempotency-key")
    if header is None:
        return None
    try:
        return rules.read_idempotency_key(header)
    except rules.BadPost as exc:
        raise HTTPException(400, str(exc)) from None


def _by(key: KeyRow) -> str:
    return f"api-key:{key.key_id}"


@router.get(PREFIX + "/leads")
async def list_leads(request: Request) -> Response:
    key = await _key(request)
    q = request.query_params
    try:
        found = queries.LeadFilter(
            since=rules.read_instant("since", q.get("since")),
            until=rules.read_instant("until", q.get("until")),
            lead_type=q.get("lead_type") or None,
            disposition=q.get("disposition") or None,
            after=rules.decode_cursor(q.get("cursor")),
            limit=rules.read_limit(q.get("limit")),
        )
    except rules.BadPost as exc:
        raise HTTPException(400, str(exc)) from None
    if found.disposition is not None and found.disposition not in (*rules.DISPOSITIONS, "none"):
        raise HTTPException(400, f"disposition must be one of {', '.join(rules.DISPOSITIONS)} or none")
    leads = await queries.delivered_leads(_deps(request).process.pool, key.owner, found)
    cursor = rules.encode_cursor(leads[-1].delivered_at, leads[-1].delivery_id) if len(leads) == found.limit else None
    return JSONResponse({"leads": [lead.to_json() for lead in leads], "next_cursor": cursor})


@router.get(PREFIX + "/leads/{lead_id}")
async def get_lead(request: Request, lead_id: str) -> Response:
    key = await _key(request)
    return JSONResponse((await _own_lead(request, key, lead_id)).to_json())


@router.post(PREFIX + "/leads/{lead_id}/confirm-price")
async def confirm_price(request: Request, lead_id: str) -> Response:
    key = await _key(request)
    lead = await _own_lead(request, key, lead_id)
    try:
        price = rules.read_price(await _body(request))
    except rules.BadPost as exc:
        raise HTTPException(400, str(exc)) from None
    idempotency_key = _idempotency_key(request)
    message_id = f"buyer:{key.owner}:{idempotency_key}" if idempotency_key else str(uuid.uuid4())
    try:
        answer = await usecases.confirm_price(_deps(request), key.owner, lead.delivery_id, price, message_id, _by(key))
    except usecases.Unavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from None
    reply = answer.reply
    if reply is None:
        return JSONResponse(
            {
                "status": "pending",
                "message": "sent; delivery did not answer in time (re-send with the same Idempotency-Key)",
            },
            status_code=202,
        )
    if reply.get("ok") is not True:
        raise HTTPException(404, "no such lead")  # refused by delivery: not this client's delivery
    return JSONResponse(
        {
            "lead_id": str(lead.lead_id),
            "outcome": reply["outcome"],
            "price": reply["price"],
            "reason": reply.get("reason"),
            "repeat": reply.get("repeat", False),
        }
    )


@router.post(PREFIX + "/leads/{lead_id}/return")
async def request_return(request: Request, lead_id: str) -> Response:
    key = await _key(request)
    lead = await _own_lead(request, key, lead_id)
    try:
        data = await _body(request)
        reason = rules.text_field(data, "reason", required=True, max_length=200)
        comment = rules.text_field(data, "comment", required=False, max_length=rules.MAX_NOTE)
    except rules.BadPost as exc:
        raise HTTPException(400, str(exc)) from None
    assert reason is not None
    return_id = rules.return_id_for(key.owner, _idempotency_key(request))
    try:
        answer = await usecases.request_return(
            _deps(request), key.owner, lead.lead_id, return_id, reason, comment, _by(key)
        )
    except usecases.Unavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from None
    reply = answer.reply
    if reply is None:
        return JSONResponse(
            {"return_id": str(return_id), "status": "pending", "message": "sent; returns did not answer in time"},
            status_code=202,
        )
    if reply.get("ok") is False:
        raise HTTPException(400, str(reply.get("message", "refused")))
    return JSONResponse(
        {
            "return_id": reply["return_id"],
            "lead_id": str(lead.lead_id),
            "status": reply["status"],
            "decision_reason": reply.get("decision_reason"),
            "detail": reply.get("detail"),
        }
    )


@router.put(PREFIX + "/leads/{lead_id}/disposition")
async def set_disposition(request: Request, lead_id: str) -> Response:
    key = await _key(request)
    some_id = _lead_id(lead_id)
    try:
        disposition, note = rules.read_disposition(await _body(request))
    except rules.BadPost as exc:
        raise HTTPException(400, str(exc)) from None
    at = await dispositions.set_disposition(
        _deps(request).process.pool, key.owner, some_id, disposition, note, _by(key)
    )
    if at is None:
        raise HTTPException(404, "no such lead")
    return JSONResponse(
        {"lead_id": str(some_id), "disposition": disposition, "note": note, "updated_at": at.isoformat()}
    )


# --- OpenAPI ----------------------------------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


_ERRORS = {
    "400": _json("Error", "unreadable request"),
    "401": _json("Error", "no valid buyer key"),
    "404": _json("Error", "no such lead of this client"),
    "429": _json("Error", "over the key's rate"),
}
_LEAD_PARAM = {"name": "lead_id", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY_PARAM = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": rules.MAX_KEY_LENGTH},
}


def openapi_parts(catalog: Catalog) -> tuple[dict[str, Any], dict[str, Any]]:
    """The buyer API's paths and schemas for the OpenAPI document."""
    security: list[dict[str, list[str]]] = [{"buyerKey": []}]

    def op(op_id: str, summary: str, ok: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "operationId": op_id,
            "summary": summary,
            "tags": ["buyers"],
            "security": security,
            "responses": {"200": ok, **_ERRORS},
            **extra,
        }

    def body(name: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}

    query = [
        {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "lead_type", "in": "query", "schema": {"type": "string"}},
        {"name": "disposition", "in": "query", "schema": {"enum": [*rules.DISPOSITIONS, "none"]}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": rules.MAX_PAGE}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    ]
    paths = {
        PREFIX + "/leads": {
            "get": op(
                "buyer_list_leads", "Leads delivered to this client", _json("BuyerLeadPage", "a page"), parameters=query
            )
        },
        PREFIX + "/leads/{lead_id}": {
            "get": op(
                "buyer_get_lead",
                "One lead delivered to this client",
                _json("BuyerLead", "the lead"),
                parameters=[_LEAD_PARAM],
            )
        },
        PREFIX + "/leads/{lead_id}/confirm-price": {
            "post": op(
                "buyer_confirm_price",
                "Confirm the price of a delivered lead (Allow Confirm Price)",
                _json("PriceAnswer", "what became of the price"),
                parameters=[_LEAD_PARAM, _KEY_PARAM],
                requestBody=body("PriceBody"),
            )
        },
        PREFIX + "/leads/{lead_id}/return": {
            "post": op(
                "buyer_request_return",
                "Ask to return a delivered lead",
                _json("ReturnAnswer", "the return as the returns service recorded it"),
                parameters=[_LEAD_PARAM, _KEY_PARAM],
                requestBody=body("ReturnBody"),
            )
        },
        PREFIX + "/leads/{lead_id}/disposition": {
            "put": op(
                "buyer_set_disposition",
                "Set the disposition of a delivered lead",
                _json("DispositionAnswer", "the disposition now"),
                parameters=[_LEAD_PARAM],
                requestBody=body("DispositionBody"),
            )
        },
    }
    lead = {
        "type": "object",
        "properties": {
            "lead_id": {"type": "string", "format": "uuid"},
            "delivery_id": {"type": "string", "format": "uuid"},
            "lead_type": {"type": "string"},
            "delivered_at": {"type": "string", "format": "date-time"},
            "price": {"type": "string"},
            "fields": {"type": "object"},
            "disposition": {"type": ["string", "null"]},
            "disposition_note": {"type": ["string", "null"]},
            "return_status": {"type": ["string", "null"]},
        },
    }
    schemas = {
        "BuyerLead": lead,
        "BuyerLeadPage": {
            "type": "object",
            "properties": {
                "leads": {"type": "array", "items": _ref("BuyerLead")},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "PriceBody": {
            "type": "object",
            "required": ["price"],
            "properties": {"price": {"type": ["number", "string"]}},
        },
        "PriceAnswer": {
            "type": "object",
            "properties": {
                "lead_id": {"type": "string"},
                "outcome": {"enum": ["applied", "ignored", "refused"]},
                "price": {"type": "string"},
                "reason": {"type": ["string", "null"]},
                "repeat": {"type": "boolean"},
            },
        },
        "ReturnBody": {
            "type": "object",
            "required": ["reason"],
            "properties": {
                "reason": {"type": "string", "minLength": 1, "maxLength": 200},
                "comment": {"type": "string", "maxLength": rules.MAX_NOTE},
            },
        },
        "ReturnAnswer": {
            "type": "object",
            "properties": {
                "return_id": {"type": "string"},
                "lead_id": {"type": "string"},
                "status": {"enum": ["pending", "approved", "denied"]},
                "decision_reason": {"type": ["string", "null"]},
                "detail": {"type": ["string", "null"]},
            },
        },
        "DispositionBody": {
            "type": "object",
            "required": ["disposition"],
            "properties": {
                "disposition": {"enum": list(rules.DISPOSITIONS)},
                "note": {"type": "string", "maxLength": rules.MAX_NOTE},
            },
        },
        "DispositionAnswer": {
            "type": "object",
            "properties": {
                "lead_id": {"type": "string"},
                "disposition": {"type": "string"},
                "note": {"type": "string"},
                "updated_at": {"type": "string", "format": "date-time"},
            },
        },
    }
    return paths, schemas
