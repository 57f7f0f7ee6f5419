"""The intake's pure decisions: reading a post (JSON or form), the wait a request asks for, the
idempotency key, the API key in the headers, and the HTTP answer a lead's state gives. No I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from shared import dispositions
from shared.catalog.model import Catalog

# How long a post waits for its outcome when it does not say, and the most it may ask for.
DEFAULT_WAIT = 2.0
MAX_WAIT = 10.0
MAX_KEY_LENGTH = 200
MAX_FORCE_ID = 200
MAX_CALLBACK_URL = 2000
# Top-level names of a flat post that are not lead fields.
RESERVED = ("force_id", "callback_url")
# What a structured post (the AMQP body's shape, `{"fields": {...}}`) may carry beside `fields`.
STRUCTURED = frozenset({"fields", "force_id", "callback_url", "source", "lead_type", "version"})

JSON_TYPES = ("application/json", "text/json")
FORM_TYPES = ("application/x-www-form-urlencoded",)


class BadPost(ValueError):
    """The request cannot be read as a lead post (400, nothing stored)."""


class IdempotencyConflict(ValueError):
    """The Idempotency-Key was used before for another request (409, nothing stored or sent)."""


class WrongSource(ValueError):
    """The body names a source other than the key's (403, nothing stored)."""


@dataclass(frozen=True)
class Post:
    fields: dict[str, Any]
    force_id: str | None = None
    callback_url: str | None = None
    flat: bool = True  # the fields at the top level (JSON or a form), not under "fields"


def post_fingerprint(lead_type: str, post: Post) -> bytes:
    """What a post asks for, hashed: two posts with one Idempotency-Key must ask for the same
    thing. The parsed post, not the raw bytes: key order and whitespace do not count; a field's
    value (and its JSON type: 5 is not "5"), the lead type, force_id and callback_url do."""
    canonical = json.dumps(
        {"lead_type": lead_type, "fields": post.fields, "force_id": post.force_id, "callback_url": post.callback_url},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()


# Callbacks are signed (docs/intake.md, "Callbacks"): HMAC-SHA256 with the posting key's callback
# secret over `<timestamp>.<body>`, the timestamp in unix seconds.
SIGNATURE_HEADER = "Leadwire-Signature"
TIMESTAMP_HEADER = "Leadwire-Timestamp"
KEY_ID_HEADER = "Leadwire-Key-Id"


def callback_signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def callback_headers(key_id: str, secret: str | None, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one callback request (unsigned when its key has no secret: a key made
    before callbacks were signed)."""
    headers = {"Content-Type": "application/json", KEY_ID_HEADER: key_id}
    if secret:
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = callback_signature(secret, timestamp, body)
    return headers


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def parse_post(content_type: str | None, body: bytes, *, source: str, lead_type: str) -> Post:
    """A post's fields, force id and callback URL. JSON (an object: the lead's fields, with
    `force_id` and `callback_url` beside them; or the AMQP body's shape `{"fields": {...},
    "force_id": ..., "source": ..., "lead_type": ...}`) or form-encoded (`field=value&...`)."""
    kind = media_type(content_type)
    if kind in FORM_TYPES:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadPost("the form body is not UTF-8") from None
        pairs = parse_qsl(text, keep_blank_values=True)
        data: dict[str, Any] = {}
        for name, value in pairs:
            if name in data:
                raise BadPost(f"the form names {name!r} more than once")
            data[name] = value
        return _flat(data)
    if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise BadPost(f"unsupported Content-Type {kind!r}: send application/json or application/x-www-form-urlencoded")
    if not body.strip():
        raise BadPost("the body is empty: send the lead's fields as a JSON object")
    try:
        value = json.loads(body)
    except UnicodeDecodeError:
        raise BadPost("the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadPost(f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadPost("the body is not JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise BadPost(f"the body must be a JSON object, not {_json_kind(value)}")
    if isinstance(value.get("fields"), dict):
        unknown = sorted(set(value) - STRUCTURED)
        if unknown:
            raise BadPost(f"unknown top-level key(s) beside 'fields': {', '.join(unknown)}")
        if "source" in value and value["source"] != source:
            raise WrongSource(f"this API key posts as source {source!r} only; the body names {value['source']!r}")
        if "lead_type" in value and value["lead_type"] != lead_type:
            raise BadPost(f"the body's lead_type {value['lead_type']!r} does not match the URL's {lead_type!r}")
        if "version" in value and value["version"] != 1:
            raise BadPost("version must be 1")
        post = _post(value["fields"], value.get("force_id"), value.get("callback_url"))
        return Post(post.fields, post.force_id, post.callback_url, flat=False)
    return _flat(value)


def own_claims(post: Post, *, source: str, lead_type: str, field_names: frozenset[str]) -> Post:
    """A flat post may name its `source` and `lead_type` at the top level as the AMQP body does,
    unless the lead type has a field of that name: another source than the key's is refused
    (WrongSource), another lead type than the URL's is a BadPost, and the same ones are dropped."""
    if not post.flat:
        return post
    fields = dict(post.fields)
    claimed_source = fields.pop("source", source) if "source" not in field_names else source
    claimed_type = fields.pop("lead_type", lead_type) if "lead_type" not in field_names else lead_type
    if claimed_source != source:
        raise WrongSource(f"this API key posts as source {source!r} only; the body names another source")
    if claimed_type != lead_type:
        raise BadPost(f"the body's lead_type does not match the URL's {lead_type!r}")
    return Post(fields, post.force_id, post.callback_url)


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def form_post(pairs: list[tuple[str, Any]]) -> Post:
    """A post from form fields (multipart/form-data, read by the web tier): text fields only."""
    data: dict[str, Any] = {}
    for name, value in pairs:
        if not isinstance(value, str):
            raise BadPost(f"{name!r} is a file: send the lead's fields as text")
        if name in data:
            raise BadPost(f"the form names {name!r} more than once")
        data[name] = value
    return _flat(data)


def _flat(data: dict[str, Any]) -> Post:
    fields = {k: v for k, v in data.items() if k not in RESERVED}
    return _post(fields, data.get("force_id"), data.get("callback_url"))


def _post(fields: dict[str, Any], force_id: Any, callback_url: Any) -> Post:
    if force_id == "":
        force_id = None
    if force_id is not None:
        if not isinstance(force_id, str | int) or isinstance(force_id, bool):
            raise BadPost("force_id must be a string")
        force_id = str(force_id)
        if len(force_id) > MAX_FORCE_ID:
            raise BadPost(f"force_id must be at most {MAX_FORCE_ID} characters")
        if "\x00" in force_id:
            raise BadPost("force_id must not contain the NUL character (\\u0000)")
    if callback_url == "":
        callback_url = None
    if callback_url is not None:
        callback_url = check_callback_url(callback_url)
    return Post(dict(fields), force_id, callback_url)


def check_callback_url(value: Any) -> str:
    if (
        not isinstance(value, str)
        or len(value) > MAX_CALLBACK_URL
        or not re.match(r"^https?://[^\s/?#]+[^\s]*$", value)
    ):
        raise BadPost(f"callback_url must be an http:// or https:// URL of at most {MAX_CALLBACK_URL} characters")
    return value


def read_test(query: str | None) -> bool:
    """`?test=1` (or true/yes): validate and plan, never sell."""
    if query is None or query == "":
        return False
    if query.lower() in ("1", "true", "yes"):
        return True
    if query.lower() in ("0", "false", "no"):
        return False
    raise BadPost("test must be 1 or 0 (true or false)")


def read_wait(query: str | None, prefer: str | None) -> float:
    """Seconds to wait for the outcome: `?wait=N`, else `Prefer: wait=N` (RFC 7240), else the
    default; capped at MAX_WAIT; 0 answers at once."""
    raw = query
    if raw is None and prefer:
        match = re.search(r"(?:^|[,;\s])wait=(\d+(?:\.\d+)?)", prefer)
        raw = match.group(1) if match else None
    if raw is None:
        return DEFAULT_WAIT
    try:
        seconds = float(raw)
    except ValueError:
        raise BadPost(f"wait must be a number of seconds (0 to {MAX_WAIT:g})") from None
    if not seconds >= 0:  # also NaN
        raise BadPost(f"wait must be a number of seconds (0 to {MAX_WAIT:g})")
    return min(seconds, MAX_WAIT)


def read_idempotency_key(header: str | None) -> str:
    """The Idempotency-Key header; a post without one gets a key of its own (`http:<uuid>`), so
    each such post is a new lead."""
    if header is None:
        return f"http:{uuid.uuid4()}"
    key = header.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise BadPost(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    if "\x00" in key:
        raise BadPost("Idempotency-Key must not contain the NUL character")
    return key


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key a request carries: `Authorization: Bearer <key>`, or `X-Api-Key: <key>`."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


# --- answers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadState:
    """What the intake knows of a posted lead: its receipt, and the router's lead once it exists."""

    receipt_id: uuid.UUID
    lead_type: str
    lead_id: uuid.UUID | None = None
    status: str | None = None  # routing, sold, unsold, duplicate, rejected; None: not received yet
    reason: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    price: Decimal = Decimal("0")
    buyers: int = 0
    test: bool = False

    @property
    def decided(self) -> bool:
        return self.status in ("sold", "unsold", "duplicate", "rejected")


def status_path(state: LeadState, prefix: str = "/v1") -> str:
    return f"{prefix}/leads/{state.lead_id or state.receipt_id}"


def answer(state: LeadState, *, polling: bool = False) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for a lead's state. A post answers 200 when decided (sold, unsold,
    duplicate), 422 when rejected, 202 while pending; a status poll (`polling`) answers 200 for
    every state it finds. Buyer identities are never shown."""
    body: dict[str, Any] = {
        "receipt_id": str(state.receipt_id),
        "lead_id": str(state.lead_id) if state.lead_id else None,
        "lead_type": state.lead_type,
        "status": state.status if state.decided else "pending",
        "status_url": status_path(state),
    }
    if state.status == "sold":
        body["price"] = format(state.price, "f")
        body["buyers"] = state.buyers
    elif state.decided:
        body["reason"] = state.reason
    if state.status == "rejected":
        body["errors"] = [{"field": e.get("field"), "message": e.get("message")} for e in state.errors]
    if polling:
        return 200, body
    if not state.decided:
        return 202, body
    return (422 if state.status == "rejected" else 200), body


def error_body(status: int, message: str) -> dict[str, str]:
    codes = {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "too_large",
        415: "unsupported_media_type",
        429: "rate_limited",
        503: "unavailable",
    }
    return {"error": codes.get(status, "error" if status < 500 else "failed"), "message": message}


# --- the buyer API ----------------------------------------------------------------------------------

DISPOSITIONS = dispositions.DISPOSITIONS
MAX_NOTE = dispositions.MAX_NOTE
MAX_PAGE = 200


def json_object(content_type: str | None, body: bytes) -> dict[str, Any]:
    """A buyer API body: a JSON object (an empty body is an empty object)."""
    kind = media_type(content_type)
    if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise BadPost(f"unsupported Content-Type {kind!r}: send application/json")
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, RecursionError):
        raise BadPost("the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise BadPost(f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(value, dict):
        raise BadPost(f"the body must be a JSON object, not {_json_kind(value)}")
    return value


def text_field(data: dict[str, Any], name: str, *, required: bool, max_length: int) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise BadPost(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise BadPost(f"{name} must be a string")
    if len(value) > max_length:
        raise BadPost(f"{name} must be at most {max_length} characters")
    if "\x00" in value:
        raise BadPost(f"{name} must not contain the NUL character")
    return value


def read_disposition(data: dict[str, Any]) -> tuple[str, str]:
    disposition = text_field(data, "disposition", required=True, max_length=20)
    if disposition not in DISPOSITIONS:
        raise BadPost(f"disposition must be one of {', '.join(DISPOSITIONS)}")
    return disposition, text_field(data, "note", required=False, max_length=MAX_NOTE) or ""


def read_price(data: dict[str, Any]) -> str | int | float:
    price = data.get("price")
    if price is None or isinstance(price, bool) or not isinstance(price, str | int | float):
        raise BadPost('price is required: a number or a string such as "12.50"')
    if isinstance(price, str) and (len(price) > 50 or "\x00" in price):
        raise BadPost("price must be at most 50 characters")
    return price


def read_instant(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 date or date-time (a date is its midnight UTC; a time without zone is UTC)."""
    if value is None or value == "":
        return None
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadPost(f"{name} must be an ISO 8601 date or date-time") from None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def read_limit(value: str | None) -> int:
    if value is None or value == "":
        return 50
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadPost(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(value)


def encode_cursor(delivered_at: datetime, delivery_id: uuid.UUID) -> str:
    raw = f"{delivered_at.isoformat()}|{delivery_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str | None) -> tuple[datetime, uuid.UUID] | None:
    if value is None or value == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        at, _, delivery = raw.partition("|")
        return datetime.fromisoformat(at), uuid.UUID(delivery)
    except (ValueError, UnicodeDecodeError):
        raise BadPost("cursor is not one this API gave") from None


def return_id_for(client_id: str, idempotency_key: str | None) -> uuid.UUID:
    """The return id of a buyer's return request: derived from its Idempotency-Key (the same key
    is the same request), else new."""
    if idempotency_key is None:
        return uuid.uuid4()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"leadwire:buyer-return:{client_id}:{idempotency_key}")


# --- test mode --------------------------------------------------------------------------------------


def dry_run(
    catalog: Catalog, lead_type_id: str, source_id: str, post: Post, now: datetime, paused: frozenset[str]
) -> tuple[int, dict[str, Any]]:
    """A test post's answer: the router's own pure rules (services/router/rules.py) validate the
    lead and plan it — what it would be offered to — and nothing is stored, published or sold.
    Duplicates, caps and orders are not looked at (they need the router's transaction)."""
    from services.router import rules as router_rules
    from shared.contracts.base import nul_paths

    fields = post.fields
    lead_type = catalog.lead_types_by_id.get(lead_type_id)
    clean, field_problems = router_rules.validate_fields(lead_type, fields) if lead_type else (fields, [])
    problems = router_rules.body_problems(nul_paths(fields, "fields"), lead_type_id, f"lead.{lead_type_id}")
    problems += router_rules.lead_problems(catalog, lead_type_id, source_id, field_problems, has_key=True)
    body: dict[str, Any] = {"test": True, "lead_id": None, "lead_type": lead_type_id}
    if problems:
        body.update(
            status="rejected",
            reason="invalid lead",
            errors=[{"field": p.field, "message": p.message} for p in problems],
        )
        return 422, body
    candidates = router_rules.eligible_accounts(catalog, lead_type_id, clean, now)
    planned = router_rules.plan(
        catalog, lead_type_id, source_id, post.force_id, candidates, paused=paused, excluded=frozenset(), turns={}
    )
    if isinstance(planned, router_rules.Unsold):
        body.update(status="unsold", reason=planned.reason)
        return 200, body
    offered = {a for stage in planned.stages for a in stage.accounts}
    body.update(status="would_route", accounts=len(offered), max_sales=planned.max_sales)
    return 200, body
