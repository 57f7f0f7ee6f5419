"""Posting instructions generated from the catalog as it is now: the OpenAPI 3.1 document of the
intake and buyer API (`GET /v1/openapi.json`, one POST path per lead type with its fields) and an
HTML page per lead type with its fields and a curl example (`GET /v1/lead-types/{lead_type}`).
Pure functions of the catalog, plus their two routes."""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from services.intake import rules
from shared.catalog.model import Catalog, FieldType, LeadField, LeadType

router = APIRouter()

EXAMPLES: dict[FieldType, str] = {
    FieldType.text: "Ada",
    FieldType.email: "ada@example.com",
    FieldType.phone: "415-555-0100",
    FieldType.us_state: "CA",
    FieldType.zip: "94107",
    FieldType.number: "3",
    FieldType.money: "120.50",
    FieldType.date: "2026-12-01",
}
NAMED_EXAMPLES = {"first_name": "Ada", "last_name": "Lovelace", "name": "Ada Lovelace"}

# What a lead field accepts, in JSON Schema terms (the router normalises and checks it: docs/messages.md).
_SCHEMAS: dict[FieldType, dict[str, Any]] = {
    FieldType.text: {"type": "string"},
    FieldType.email: {"type": "string", "format": "email"},
    FieldType.phone: {"type": "string", "description": "a 10-digit US phone number, any punctuation"},
    FieldType.us_state: {"type": "string", "description": "a US state code (CA, NY, ...)"},
    FieldType.zip: {"type": "string", "pattern": r"^\d{5}(-?\d{4})?$"},
    FieldType.number: {"type": ["number", "string"], "description": "a number"},
    FieldType.money: {"type": ["number", "string"], "description": "a non-negative amount, at most 2 decimals"},
    FieldType.date: {"type": "string", "format": "date"},
    FieldType.choice: {"type": "string"},
}


def example_value(f: LeadField) -> str:
    if f.type is FieldType.choice:
        return f.choices[0]
    if f.type is FieldType.text and f.name in NAMED_EXAMPLES:
        return NAMED_EXAMPLES[f.name]
    return EXAMPLES[f.type]


def example_lead(lead_type: LeadType) -> dict[str, str]:
    return {f.name: example_value(f) for f in lead_type.fields}


def field_schema(f: LeadField) -> dict[str, Any]:
    schema = dict(_SCHEMAS[f.type])
    if f.type is FieldType.choice:
        schema["enum"] = list(f.choices)
    if schema.get("type") == "string":
        schema["maxLength"] = f.max_length
    schema["title"] = f.display_label
    return schema


def lead_schema(lead_type: LeadType) -> dict[str, Any]:
    properties = {f.name: field_schema(f) for f in lead_type.fields}
    properties["force_id"] = {
        "type": "string",
        "maxLength": rules.MAX_FORCE_ID,
        "description": "send the lead only to the client this Force ID names (Delivery Force ID Mapping)",
    }
    properties["callback_url"] = {
        "type": "string",
        "format": "uri",
        "maxLength": rules.MAX_CALLBACK_URL,
        "description": (
            "called once (POST, JSON) with the lead's outcome when it is decided, signed: Leadwire-Signature"
            " is sha256=HMAC-SHA256(the key's callback secret, Leadwire-Timestamp + '.' + body)"
        ),
    }
    return {
        "type": "object",
        "properties": properties,
        "required": [f.name for f in lead_type.fields if f.required],
        "additionalProperties": False,
        "example": example_lead(lead_type),
    }


_ANSWER = {
    "type": "object",
    "required": ["receipt_id", "lead_id", "lead_type", "status", "status_url"],
    "properties": {
        "receipt_id": {"type": "string", "format": "uuid"},
        "lead_id": {"type": ["string", "null"], "format": "uuid"},
        "lead_type": {"type": "string"},
        "status": {"enum": ["sold", "unsold", "duplicate", "rejected", "pending"]},
        "status_url": {"type": "string"},
        "price": {"type": "string", "description": "sold: what the lead sold for in all"},
        "buyers": {"type": "integer", "description": "sold: how many buyers bought it"},
        "reason": {"type": ["string", "null"]},
        "errors": {
            "type": "array",
            "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}},
        },
    },
}
_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


def _json(schema_ref: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
_ERRORS = {
    "400": _json("Error", "unreadable request (bad JSON, bad wait, bad Idempotency-Key); nothing stored"),
    "401": _json("Error", "no valid API key"),
    "413": _json("Error", "body larger than 64 KiB"),
    "429": _json("Error", "over the key's rate", _RETRY_AFTER),
}


def openapi(catalog: Catalog) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the intake as the catalog is now."""
    from services.intake import buyer_api

    paths: dict[str, Any] = {}
    wait_param = {
        "name": "wait",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "minimum": 0, "maximum": rules.MAX_WAIT, "default": rules.DEFAULT_WAIT},
        "description": "seconds to wait for the outcome (also `Prefer: wait=N`); capped",
    }
    key_param = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": rules.MAX_KEY_LENGTH},
        "description": "your id for this lead: a re-send with the same key gets the first post's answer",
    }
    test_param = {
        "name": "test",
        "in": "query",
        "required": False,
        "schema": {"enum": ["1", "0", "true", "false", "yes", "no"]},
        "description": "test mode: validate and plan, never store or sell (a test key is always in test mode)",
    }
    for lead_type in sorted(catalog.lead_types, key=lambda t: t.id):
        schema_name = f"Lead_{lead_type.id}"
        paths[f"/v1/leads/{lead_type.id}"] = {
            "post": {
                "operationId": f"post_{lead_type.id}".replace("-", "_").replace(".", "_").replace(":", "_"),
                "summary": f"Post a {lead_type.name} lead",
                "tags": ["sources"],
                "security": [{"sourceKey": []}],
                "parameters": [wait_param, key_param, test_param],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}},
                        "application/x-www-form-urlencoded": {
                            "schema": {"$ref": f"#/components/schemas/{schema_name}"}
                        },
                    },
                },
                "responses": {
                    "200": _json("LeadAnswer", "decided: sold (price, buyers), unsold or duplicate (reason)"),
                    "202": _json(
                        "LeadAnswer",
                        "not decided within the wait: poll status_url",
                        {"Location": {"schema": {"type": "string"}}, **_RETRY_AFTER},
                    ),
                    "403": _json("Error", "the body names another source than the key's"),
                    "409": _json("Error", "the Idempotency-Key was used before for another request; nothing sent"),
                    "422": _json("LeadAnswer", "rejected: every field error in `errors` (the lead is kept)"),
                    "503": _json("Error", "the broker did not take the lead; send it again", _RETRY_AFTER),
                    **_ERRORS,
                },
            }
        }
    paths["/v1/leads/{lead_id}"] = {
        "get": {
            "operationId": "get_lead",
            "summary": "A lead this source posted over HTTP, by lead id or receipt id",
            "tags": ["sources"],
            "security": [{"sourceKey": []}],
            "parameters": [{"name": "lead_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": _json("LeadAnswer", "its state now (status pending until decided)"),
                "404": _json("Error", "no such lead of this source"),
                **_ERRORS,
            },
        }
    }
    schemas: dict[str, Any] = {"LeadAnswer": _ANSWER, "Error": _ERROR}
    for lead_type in catalog.lead_types:
        schemas[f"Lead_{lead_type.id}"] = lead_schema(lead_type)
    buyer_paths, buyer_schemas = buyer_api.openapi_parts(catalog)
    paths.update(buyer_paths)
    schemas.update(buyer_schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Leadwire lead intake and buyer API",
            "version": "1",
            "description": "Generated from the catalog. Sources: docs/intake.md; buyers: docs/buyer-api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "sourceKey": {"type": "http", "scheme": "bearer", "description": "a source API key (lwsk....)"},
                "buyerKey": {"type": "http", "scheme": "bearer", "description": "a buyer API key (lwbk....)"},
            },
        },
    }


def curl_example(lead_type: LeadType, base_url: str) -> str:
    body = json.dumps(example_lead(lead_type))
    return (
        f"curl -sS -X POST '{base_url}/v1/leads/{lead_type.id}' \\\n"
        '  -H "Authorization: Bearer $LEADWIRE_SOURCE_KEY" \\\n'
        '  -H "Idempotency-Key: your-id-0001" \\\n'
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d '{body}'"
    )


def _e(value: object) -> str:
    return html.escape(str(value))


def lead_type_page(lead_type: LeadType, base_url: str) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(f.name)}</code></td><td>{_e(f.display_label)}</td><td>{_e(f.type.value)}</td>"
        f"<td>{'yes' if f.required else 'no'}</td>"
        f"<td>{_e(', '.join(f.choices)) if f.choices else ''}</td><td>{f.max_length}</td></tr>"
        for f in lead_type.fields
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>Posting {_e(lead_type.name)} leads</title>"
        f"<h1>Posting {_e(lead_type.name)} leads (<code>{_e(lead_type.id)}</code>)</h1>"
        f"<p><code>POST {_e(base_url)}/v1/leads/{_e(lead_type.id)}</code> with your source API key in "
        "<code>Authorization: Bearer &lt;key&gt;</code>, an <code>Idempotency-Key</code> header (your id for "
        "the lead: a re-send gets the first answer), and the fields below as a JSON object or form-encoded. "
        "Optional: <code>force_id</code>, <code>callback_url</code>; <code>?wait=N</code> seconds (default "
        f"{rules.DEFAULT_WAIT:g}, at most {rules.MAX_WAIT:g}).</p>"
        "<table><thead><tr><th>Field</th><th>Label</th><th>Type</th><th>Required</th><th>Choices</th>"
        f"<th>Max length</th></tr></thead><tbody>{rows}</tbody></table>"
        f"<h2>Example</h2><pre>{_e(curl_example(lead_type, base_url))}</pre>"
        "<h2>Answers</h2><ul>"
        '<li><code>200</code> <code>{"status": "sold", "price": "25.00", "buyers": 1, "lead_id": ...}</code>,'
        ' or <code>"unsold"</code> / <code>"duplicate"</code> with a <code>reason</code></li>'
        '<li><code>422</code> <code>{"status": "rejected", "errors": [{"field": ..., "message": ...}]}</code></li>'
        "<li><code>202</code> not decided yet: poll <code>status_url</code></li>"
        "<li><code>400</code> unreadable body, <code>401</code> no valid key, <code>403</code> another source "
        "named, <code>413</code> body over 64 KiB, <code>429</code> over your rate (see Retry-After)</li></ul>"
        '<p>Machine-readable: <a href="/v1/openapi.json">/v1/openapi.json</a>.</p></html>'
    )


def index_page(catalog: Catalog) -> str:
    items = "".join(
        f'<li><a href="/v1/lead-types/{_e(t.id)}">{_e(t.name)}</a> (<code>{_e(t.id)}</code>)</li>'
        for t in sorted(catalog.lead_types, key=lambda t: t.id)
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Leadwire lead intake</title>"
        f"<h1>Leadwire lead intake</h1><p>Posting instructions per lead type:</p><ul>{items}</ul>"
        '<p>OpenAPI: <a href="/v1/openapi.json">/v1/openapi.json</a></p></html>'
    )


def _base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


@router.get("/openapi.json", include_in_schema=False)
@router.get("/v1/openapi.json", include_in_schema=False)
async def openapi_document(request: Request) -> Response:
    return JSONResponse(openapi(request.app.state.deps.process.catalog))


@router.get("/v1/lead-types/{lead_type}", include_in_schema=False)
async def lead_type_instructions(request: Request, lead_type: str) -> Response:
    found = request.app.state.deps.process.catalog.lead_types_by_id.get(lead_type)
    if found is None:
        raise HTTPException(404, f"there is no lead type {lead_type!r}")
    return HTMLResponse(lead_type_page(found, _base_url(request)))
