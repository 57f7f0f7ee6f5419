"""Routing decisions with no I/O: field validation, the duplicate fingerprint, eligibility, the plan.

Everything here is a plain function of its arguments so it can be tested with tables of cases.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from shared.catalog.model import Catalog, Criterion, DeliveryAccount, FieldType, LeadType, Schedule

US_STATES = frozenset(
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM "
    "NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR VI GU AS MP".split()
)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ZIP = re.compile(r"^(\d{5})(?:-?(\d{4}))?$")
MONEY = re.compile(r"^\$?\s*(-?[\d,]*\.?\d*)$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


def _number(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float | Decimal):
        result = Decimal(str(value))
    elif isinstance(value, str):
        result = Decimal(value.strip().replace(",", ""))
    else:
        raise ValueError
    if not result.is_finite():
        raise ValueError
    return result


def normalise_field(ftype: FieldType, value: Any, choices: tuple[str, ...] = ()) -> Any:
    """The canonical form of one field value; raises ValueError with the reason when invalid."""
    if ftype is FieldType.number:
        try:
            return format(_number(value), "f")
        except (ValueError, InvalidOperation):
            raise ValueError("must be a number") from None
    if ftype is FieldType.money:
        text = str(value).strip() if not isinstance(value, bool) else ""
        match = MONEY.match(text)
        try:
            amount = _number(match.group(1)) if match and match.group(1) else None
        except (ValueError, InvalidOperation):
            amount = None
        if amount is None or amount < 0 or amount.as_tuple().exponent < -2:
            raise ValueError("must be an amount of money (non-negative, at most 2 decimals)")
        return format(amount.quantize(Decimal("0.01")), "f")
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError("must be a string")
    text = " ".join(str(value).split())
    if ftype is FieldType.text:
        return text
    if ftype is FieldType.email:
        if not EMAIL.match(text):
            raise ValueError("must be an email address")
        return text.lower()
    if ftype is FieldType.phone:
        digits = re.sub(r"\D", "", text)
        if len(digits) == 11 and digits.startswith("1"):
            digits = digits[1:]
        if len(digits) != 10 or digits[0] in "01":
            raise ValueError("must be a 10-digit US phone number")
        return digits
    if ftype is FieldType.us_state:
        if text.upper() not in US_STATES:
            raise ValueError("must be a US state code")
        return text.upper()
    if ftype is FieldType.zip:
        match = ZIP.match(text)
        if not match:
            raise ValueError("must be a 5-digit ZIP code (optionally ZIP+4)")
        return match.group(1) + (f"-{match.group(2)}" if match.group(2) else "")
    if ftype is FieldType.date:
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise ValueError("must be a date (YYYY-MM-DD)") from None
    if ftype is FieldType.choice:
        for choice in choices:
            if choice.casefold() == text.casefold():
                return choice
        raise ValueError(f"must be one of: {', '.join(choices)}")
    raise ValueError(f"unsupported field type {ftype}")  # pragma: no cover - enum is closed


def validate_fields(lead_type: LeadType, fields: dict[str, Any]) -> tuple[dict[str, Any], list[FieldProblem]]:
    """Check every field against the lead type; returns (normalised fields, every problem)."""
    clean: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    for name in fields:
        if name not in lead_type.field_names:
            problems.append(FieldProblem(name, f"not a field of lead type {lead_type.id!r}"))
    for spec in lead_type.fields:
        value = fields.get(spec.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if spec.required:
                problems.append(FieldProblem(spec.name, "is required"))
            continue
        try:
            normalised = normalise_field(spec.type, value, spec.choices)
        except ValueError as exc:
            problems.append(FieldProblem(spec.name, str(exc)))
            continue
        if isinstance(normalised, str) and len(normalised) > spec.max_length:
            problems.append(FieldProblem(spec.name, f"is longer than {spec.max_length} characters"))
            continue
        clean[spec.name] = normalised
    return clean, problems


def fingerprint(lead_type: LeadType, fields: dict[str, Any]) -> str | None:
    """Identity of a lead for duplicate checks: its duplicate fields, already normalised (case,
    spaces, phone digits, email), hashed. None when the lead type checks no duplicates or the
    lead lacks every duplicate field."""
    if not lead_type.duplicate_fields:
        return None
    parts = [str(fields.get(name, "")).casefold() for name in lead_type.duplicate_fields]
    if not any(parts):
        return None
    return hashlib.sha256("\x1f".join([lead_type.id, *parts]).encode()).hexdigest()


def criterion_matches(criterion: Criterion, fields: dict[str, Any]) -> bool:
    value = fields.get(criterion.field)
    op = criterion.op
    if op == "not_in":
        return value is None or str(value).casefold() not in {str(v).casefold() for v in criterion.value}
    if op == "not_equals":
        return value is None or str(value).casefold() != str(criterion.value).casefold()
    if value is None:
        return False
    if op == "equals":
        return str(value).casefold() == str(criterion.value).casefold()
    if op == "in":
        return str(value).casefold() in {str(v).casefold() for v in criterion.value}
    if op == "regex":
        return re.search(criterion.value, str(value)) is not None
    if op == "range":
        try:
            number = _number(value)
        except (ValueError, InvalidOperation):
            return False
        return (criterion.min is None or number >= criterion.min) and (criterion.max is None or number <= criterion.max)
    if op == "zip_list":
        zip5 = str(value)[:5]
        return any(zip5.startswith(str(z)) for z in criterion.value)
    return False  # pragma: no cover - op is a closed Literal


def in_schedule(schedule: Schedule, time_zone: str, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(time_zone))
    if WEEKDAYS[local.weekday()] not in schedule.days:
        return False
    return schedule.start <= local.time().replace(tzinfo=None) <= schedule.end


def eligible_accounts(catalog: Catalog, lead_type_id: str, fields: dict[str, Any], now: datetime) -> list[DeliveryAccount]:
    """Accounts that may take this lead: active account and client, same lead type, every
    criterion met, inside the schedule in the client's time zone."""
    result = []
    for account in catalog.accounts_by_lead_type.get(lead_type_id, ()):
        client = catalog.clients_by_id.get(account.client)
        if not account.active or client is None or not client.active:
            continue
        if not all(criterion_matches(c, fields) for c in account.criteria):
            continue
        if not in_schedule(account.schedule, client.time_zone, now):
            continue
        result.append(account)
    return result


def plan(catalog: Catalog, accounts: list[DeliveryAccount]) -> list[str]:
    """The order in which accounts are offered the lead: priority (0 highest), then price, then
    the order the accounts appear in the catalog. Groups, exclusivity, caps and orders refine
    this (see docs/router.md)."""
    position = {a.id: i for i, a in enumerate(catalog.delivery_accounts)}
    ranked = sorted(accounts, key=lambda a: (a.priority, -a.price, position[a.id]))
    return [a.id for a in ranked]
