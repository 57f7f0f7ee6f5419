"""Building the buyer's request and judging the buyer's answer — no I/O.

`build_request` turns a lead and an account's HTTP delivery settings into the exact request;
`judge_response` turns the buyer's answer into accepted / rejected / transient, with the confirmed
price and the buyer's rejection reason when the account says where to find them.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from string import Template
from typing import Any, Literal, assert_never
from urllib.parse import urlencode
from xml.sax.saxutils import escape as xml_escape

from shared.catalog.model import DeliveryFormat as Format
from shared.catalog.model import HttpDelivery, PriceRule

IDEMPOTENCY_HEADER = "Idempotency-Key"
TRANSIENT_STATUSES = frozenset({408, 425, 429})
LOG_LIMIT = 4000
MAX_PRICE = Decimal("9999999999.99")  # numeric(12, 2)
# Field and header names whose values never reach the delivery log.
SENSITIVE_NAME = re.compile(
    r"pass(word|wd|phrase)?|secret|token|(^|[-_])key$|api[-_]?key|auth|signature|credential|cookie|session",
    re.IGNORECASE,
)
MASK = "***"
# Shorter "secrets" would mask ordinary text everywhere; their fields are still masked by name.
MIN_SECRET_LENGTH = 4


@dataclass(frozen=True)
class BuyerRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # values to mask in the delivery log
    masked_names: tuple[str, ...] = ()  # extra field names whose values the log masks


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["accepted", "rejected", "transient"]
    reason: str | None = None
    price: Decimal | None = None  # a price the buyer confirmed, valid and non-negative
    price_problem: str | None = None  # why a price found in the answer was refused


def payload_fields(config: HttpDelivery, fields: dict[str, Any], lead_id: str, price: Decimal) -> dict[str, Any]:
    extra = {"lead_id": lead_id, "price": format(price, "f")}
    if not config.field_map:
        return {**fields, "lead_id": lead_id}
    return {buyer: fields.get(ours, extra.get(ours)) for buyer, ours in config.field_map.items()}


def _to_xml(values: dict[str, Any]) -> str:
    items = "".join(f"<{k}>{xml_escape('' if v is None else str(v))}</{k}>" for k, v in values.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><lead>{items}</lead>'


def _escape(fmt: Format, text: str) -> str:
    """A value as it goes into a body template of this format."""
    match fmt:
        case "json":
            return json.dumps(text)[1:-1]
        case "xml":
            return xml_escape(text)
        case "form":
            return text
        case _:
            assert_never(fmt)


def _encode(fmt: Format, values: dict[str, Any]) -> str:
    """The body of a post in this format, without a template."""
    match fmt:
        case "json":
            return json.dumps(values)
        case "form":
            return urlencode({k: "" if v is None else str(v) for k, v in values.items()})
        case "xml":
            return _to_xml(values)
        case _:
            assert_never(fmt)


def content_type(fmt: Format) -> str:
    match fmt:
        case "json":
            return "application/json"
        case "form":
            return "application/x-www-form-urlencoded"
        case "xml":
            return "application/xml"
        case _:
            assert_never(fmt)


def _render_template(template: str, values: dict[str, Any], fmt: Format) -> str:
    return Template(template).safe_substitute({k: _escape(fmt, "" if v is None else str(v)) for k, v in values.items()})


def build_request(
    config: HttpDelivery, fields: dict[str, Any], *, lead_id: str, delivery_id: str, price: Decimal
) -> BuyerRequest:
    values = payload_fields(config, fields, lead_id, price)
    headers = {IDEMPOTENCY_HEADER: delivery_id, **config.headers}
    secrets: list[str] = [v for k, v in config.headers.items() if is_sensitive(k, config.mask_fields)]
    secrets += [str(v) for k, v in values.items() if v is not None and is_sensitive(k, config.mask_fields)]
    if config.auth is not None:
        if config.auth.type == "basic":
            token = base64.b64encode(f"{config.auth.username}:{config.auth.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
            secrets += [config.auth.password or "", token]
        else:
            headers["Authorization"] = f"Bearer {config.auth.token}"
            secrets.append(config.auth.token or "")
    kept = tuple(sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True))
    if config.http_method == "GET":
        params = {k: "" if v is None else str(v) for k, v in values.items()}
        return BuyerRequest("GET", config.url, headers, None, params, kept, config.mask_fields)
    if config.body_template is not None:
        body = _render_template(config.body_template, values, config.format)
    else:
        body = _encode(config.format, values)
    headers.setdefault("Content-Type", content_type(config.format))
    return BuyerRequest(config.http_method, config.url, headers, body.encode(), {}, kept, config.mask_fields)


def json_path(document: Any, path: str) -> Any:
    """A small JSON path: `a.b.0.c` or `$.a.b[0].c`. Returns None when any step is missing."""
    steps = [s for s in re.split(r"[.\[\]]", path.removeprefix("$")) if s]
    node = document
    for step in steps:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    return node


def _find(rule: PriceRule, text: str, document: Any) -> Any:
    if rule.json_path is not None and document is not None:
        found = json_path(document, rule.json_path)
        if found is not None:
            return found
    if rule.regex is not None:
        match = re.search(rule.regex, text)
        if match:
            return match.group(1) if match.groups() else match.group(0)
    return None


CENT = Decimal("0.01")


def parse_price(value: Any) -> tuple[Decimal | None, str | None]:
    """(price, None) for a valid price; (None, why) otherwise."""
    if isinstance(value, bool) or value is None:
        return None, f"price {value!r} is not a number"
    try:
        price = Decimal(str(value).strip().lstrip("$").replace(",", ""))
    except InvalidOperation:
        return None, f"price {value!r} is not a number"
    if not price.is_finite():
        return None, f"price {value!r} is not a number"
    if price < 0:
        return None, f"price {value!r} is negative"
    if price > MAX_PRICE:
        return None, f"price {value!r} is too large"
    # To cents, half to even (banker's rounding): 12.345 -> 12.34, 12.355 -> 12.36.
    return price.quantize(CENT, rounding=ROUND_HALF_EVEN), None


def judge_response(config: HttpDelivery, status_code: int, text: str) -> Verdict:
    try:
        document = json.loads(text) if text else None
    except ValueError:
        document = None
    if status_code >= 500 or status_code in TRANSIENT_STATUSES:
        return Verdict("transient", reason=f"buyer answered HTTP {status_code}")

    rule = config.success
    reasons = []
    if status_code not in rule.status_codes:
        reasons.append(f"HTTP {status_code}")
    if rule.contains is not None and rule.contains not in text:
        reasons.append(f"response lacks {rule.contains!r}")
    if rule.regex is not None and not re.search(rule.regex, text):
        reasons.append(f"response does not match {rule.regex!r}")
    if rule.json_path is not None and json_path(document, rule.json_path) != rule.json_equals:
        reasons.append(f"{rule.json_path} is not {rule.json_equals!r}")
    if reasons:
        buyer_reason = _find(config.rejection_reason, text, document) if config.rejection_reason else None
        reason = (
            f"buyer rejected: {buyer_reason}" if buyer_reason is not None else "buyer rejected: " + "; ".join(reasons)
        )
        return Verdict("rejected", reason=reason)

    if config.price is None:
        return Verdict("accepted")
    found = _find(config.price, text, document)
    if found is None:
        return Verdict("accepted")
    price, problem = parse_price(found)
    return Verdict("accepted", price=price, price_problem=problem)


def is_sensitive(name: str, extra: tuple[str, ...] = ()) -> bool:
    if name.lower() == IDEMPOTENCY_HEADER.lower():
        return False  # the delivery id: buyers and admins match posts by it
    return name in extra or bool(SENSITIVE_NAME.search(name))


_JSON_PAIR = re.compile(r'"([^"\\]{1,100})"(\s*:\s*)("(?:[^"\\]|\\.)*"|[^\s,}\]]+)')
_FORM_PAIR = re.compile(r"(^|[?&\s])([^=&?\s]{1,100})=([^&\s]*)")
_XML_ELEMENT = re.compile(r"<([A-Za-z_][\w.-]{0,99})>([^<]*)</\1>")
_HEADER_LINE = re.compile(r"^([A-Za-z0-9-]{1,100}): (.*)$", re.MULTILINE)
_URL_USERINFO = re.compile(r"(://[^/:@\s]+:)[^@/\s]+@")


def mask_by_name(text: str, extra: tuple[str, ...] = ()) -> str:
    """Mask the values of sensitive-looking fields wherever the text shows them as JSON pairs,
    form or query pairs, XML elements, header lines, or URL credentials."""
    text = _JSON_PAIR.sub(lambda m: f'"{m[1]}"{m[2]}"{MASK}"' if is_sensitive(m[1], extra) else m[0], text)
    text = _FORM_PAIR.sub(lambda m: f"{m[1]}{m[2]}={MASK}" if is_sensitive(m[2], extra) else m[0], text)
    text = _XML_ELEMENT.sub(lambda m: f"<{m[1]}>{MASK}</{m[1]}>" if is_sensitive(m[1], extra) else m[0], text)
    text = _HEADER_LINE.sub(lambda m: f"{m[1]}: {MASK}" if is_sensitive(m[1], extra) else m[0], text)
    return _URL_USERINFO.sub(lambda m: f"{m[1]}{MASK}@", text)


def masked(text: str | bytes | None, secrets: tuple[str, ...], names: tuple[str, ...] = ()) -> str | None:
    """The text as the delivery log keeps it: known secret values and sensitive fields masked,
    then truncated (masking first, so a cut never reveals half a secret)."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = mask_by_name(text, names)
    return text if len(text) <= LOG_LIMIT else text[:LOG_LIMIT] + "…[truncated]"


def describe_request(request: BuyerRequest) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
    query = f"?{urlencode(request.params)}" if request.params else ""
    body = request.body.decode("utf-8", "replace") if request.body else ""
    return (
        masked(f"{request.method} {request.url}{query}\n{headers}\n\n{body}", request.secrets, request.masked_names)
        or ""
    )
