"""Routing decisions with no I/O: field validation, the duplicate fingerprint, eligibility, the plan.

Everything here is a plain function of its arguments so it can be tested with tables of cases.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, assert_never
from zoneinfo import ZoneInfo

from shared.catalog.model import (
    Caps,
    Catalog,
    Client,
    Criterion,
    DeliveryAccount,
    Distribution,
    FieldType,
    ForceIdMapping,
    LeadType,
    Schedule,
)
from shared.contracts.base import NUL, NUL_MESSAGE, REPLACEMENT

# fmt: off
US_STATES = frozenset([
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC",
    "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
    "PR", "VI", "GU", "AS", "MP",
])
# fmt: on
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
        exponent = amount.as_tuple().exponent if amount is not None else 0
        if amount is None or amount < 0 or not isinstance(exponent, int) or exponent < -2:
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


# --- What the broker told us about a lead ---------------------------------------------------------

IDEMPOTENCY_HEADER = "idempotency-key"


@dataclass(frozen=True)
class Envelope:
    """A lead's AMQP properties and headers, fit to store: each NUL replaced by U+FFFD and reported
    (PostgreSQL cannot store it, and the lead is kept and rejected rather than lost)."""

    idempotency_key: str
    reply_to: str | None
    correlation_id: str | None
    problems: tuple[FieldProblem, ...] = ()


def read_envelope(
    headers: dict[str, Any] | None, message_id: str | None, reply_to: str | None, correlation_id: str | None
) -> Envelope:
    """The idempotency key is the `idempotency-key` header, its name matched whatever its case
    (`Idempotency-Key`, as Leadwire itself sends buyers), else the `message_id` property; the header
    wins (aio-pika fills in a random message_id when a publisher sets none)."""
    header = next((v for k, v in (headers or {}).items() if k.lower() == IDEMPOTENCY_HEADER and v), None)
    if isinstance(header, bytes):
        header = header.decode("utf-8", "replace")
    key = str(header or message_id or "")
    problems = []
    cleaned: dict[str, str | None] = {}
    for name, value in (("idempotency_key", key), ("reply_to", reply_to), ("correlation_id", correlation_id)):
        if value is not None and NUL in value:
            problems.append(FieldProblem(name, NUL_MESSAGE))
            value = value.replace(NUL, REPLACEMENT)
        cleaned[name] = value
    return Envelope(str(cleaned["idempotency_key"]), cleaned["reply_to"], cleaned["correlation_id"], tuple(problems))


def body_problems(nul_paths: list[str], lead_type: str, routing_key: str) -> list[FieldProblem]:
    """What is wrong with a lead's body before its lead type is looked at: a NUL anywhere (each
    reported at its field: `fields.first_name` as `first_name`), and a `lead_type` that disagrees
    with the routing key it was published with (`lead.<lead_type>`)."""
    problems = [FieldProblem(p.removeprefix("fields.").split(".")[0] or p, NUL_MESSAGE) for p in nul_paths]
    if routing_key != f"lead.{lead_type}":
        message = f"{lead_type!r} does not match the routing key {routing_key!r} (expected 'lead.{lead_type}')"
        problems.append(FieldProblem("lead_type", message))
    return problems


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


def eligible_accounts(
    catalog: Catalog,
    lead_type_id: str,
    fields: dict[str, Any],
    now: datetime,
    *,
    paused: frozenset[str] = frozenset(),
    excluded_clients: frozenset[str] = frozenset(),
    only_client: str | None = None,
) -> list[DeliveryAccount]:
    """Accounts that may take this lead before counting caps and orders: active account and client,
    not auto-paused, same lead type, every criterion met, inside the schedule in the client's time
    zone, no cap of 0."""
    result = []
    for account in catalog.accounts_by_lead_type.get(lead_type_id, ()):
        client = catalog.clients_by_id.get(account.client)
        if not account.active or client is None or not client.active:
            continue
        if not _wanted(account, paused, excluded_clients, only_client):
            continue
        if caps_closed(account.caps):
            continue
        if not all(criterion_matches(c, fields) for c in account.criteria):
            continue
        if not in_schedule(account.schedule, client.time_zone, now):
            continue
        result.append(account)
    return result


def narrow(
    accounts: list[DeliveryAccount],
    *,
    paused: frozenset[str] = frozenset(),
    excluded_clients: frozenset[str] = frozenset(),
    only_client: str | None = None,
) -> list[DeliveryAccount]:
    """`eligible_accounts` with pauses, exclusions and a forced client applied afterwards: the
    same accounts as passing them to `eligible_accounts`, without checking criteria again."""
    return [a for a in accounts if _wanted(a, paused, excluded_clients, only_client)]


def _wanted(
    account: DeliveryAccount, paused: frozenset[str], excluded_clients: frozenset[str], only_client: str | None
) -> bool:
    return (
        account.id not in paused
        and account.client not in excluded_clients
        and (only_client is None or account.client == only_client)
    )


# --- Groups, stages and the next step -------------------------------------------------------------

UNGROUPED = "(ungrouped)"


@dataclass(frozen=True)
class Stage:
    """One client group's turn at a lead: its eligible accounts in the order they are offered."""

    group: str
    exclusive: bool
    accounts: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "exclusive": self.exclusive, "accounts": list(self.accounts)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stage:
        return cls(data["group"], data["exclusive"], tuple(data["accounts"]))


def max_sales(catalog: Catalog, lead_type_id: str, source_id: str) -> int:
    """How many buyers one lead may be sold to: the lead type's limit, lowered by the source's."""
    limit = catalog.lead_types_by_id[lead_type_id].max_sales
    source = catalog.sources_by_id.get(source_id)
    if source is not None and source.max_sales is not None:
        limit = min(limit, source.max_sales)
    return limit


def force_value(client: Client, mapping: ForceIdMapping) -> str | None:
    """The client's value a force id is matched against (Delivery Force ID Mapping)."""
    match mapping:
        case ForceIdMapping.client_id:
            return client.id
        case ForceIdMapping.external_ref:
            return client.external_ref
        case ForceIdMapping.email:
            return client.email
        case ForceIdMapping.name:
            return client.name
        case _:
            assert_never(mapping)


def force_target(catalog: Catalog, force_id: str) -> str | None:
    """The client a force id names, through the Delivery Force ID Mapping option."""
    wanted = force_id.strip().casefold()
    for client in catalog.clients:
        value = force_value(client, catalog.options.delivery_force_id_mapping)
        if value is not None and str(value).strip().casefold() == wanted:
            return client.id
    return None


# Distribution methods that take turns: a counter per group, shared by every router replica.
ROTATING = frozenset({Distribution.round_robin, Distribution.weighted})


def order_accounts(
    method: Distribution, accounts: list[DeliveryAccount], position: dict[str, int], turn: int
) -> list[DeliveryAccount]:
    """The order in which an exclusive group offers a lead to its eligible accounts.

    priority: 0 first (negatives before it), ties by catalog order; highest_price: price, then
    priority; round_robin: catalog order rotated by the group's shared turn counter; weighted:
    the turn counter walks a cycle in which each account appears `weight` times, so over every
    cycle each account is offered first exactly weight/total of the time."""
    by_entry = sorted(accounts, key=lambda a: position[a.id])
    match method:
        case Distribution.priority:
            return sorted(by_entry, key=lambda a: a.priority)
        case Distribution.highest_price:
            return sorted(by_entry, key=lambda a: (-a.price, a.priority))
        case Distribution.round_robin:
            k = turn % len(by_entry) if by_entry else 0
            return by_entry[k:] + by_entry[:k]
        case Distribution.weighted:
            return _weighted_order(by_entry, turn)
        case _:
            # A new Distribution member fails type checking here until it is given its order.
            assert_never(method)


def _weighted_order(by_entry: list[DeliveryAccount], turn: int) -> list[DeliveryAccount]:
    weighted = [a for a in by_entry if a.weight > 0]
    total = sum(a.weight for a in weighted)
    if total == 0:
        return by_entry
    slot = turn % total
    for i, account in enumerate(weighted):
        if slot < account.weight:
            first = weighted[i:] + weighted[:i]
            return first + [a for a in by_entry if a.weight == 0]
        slot -= account.weight
    return by_entry  # pragma: no cover - slot always lands


def group_layout(catalog: Catalog) -> list[tuple[str, bool, Distribution, tuple[str, ...]]]:
    """(group id, exclusive, method, client ids) in scan order; clients in no group come last, in
    one group that follows the global Apply Groups as Criteria option."""
    layout = []
    grouped: set[str] = set()
    for group in catalog.groups:
        exclusive = (
            group.apply_groups_as_criteria
            if group.apply_groups_as_criteria is not None
            else catalog.options.apply_groups_as_criteria
        )
        layout.append((group.id, exclusive, group.distribution, group.clients))
        grouped.update(group.clients)
    rest = tuple(c.id for c in catalog.clients if c.id not in grouped)
    if rest:
        layout.append((UNGROUPED, catalog.options.apply_groups_as_criteria, Distribution.priority, rest))
    return layout


def rotating_groups(catalog: Catalog, accounts: list[DeliveryAccount]) -> list[str]:
    """Groups that need a shared turn counter for this lead (round robin or weighted, with at
    least two eligible accounts)."""
    clients = {a.client for a in accounts}
    result = []
    for group_id, exclusive, method, members in group_layout(catalog):
        rotating = exclusive and method in ROTATING
        if rotating and sum(1 for a in accounts if a.client in members) > 1 and clients & set(members):
            result.append(group_id)
    return result


def build_stages(catalog: Catalog, accounts: list[DeliveryAccount], turns: dict[str, int]) -> list[Stage]:
    position = {a.id: i for i, a in enumerate(catalog.delivery_accounts)}
    stages = []
    for group_id, exclusive, method, members in group_layout(catalog):
        member_set = set(members)
        in_group = [a for a in accounts if a.client in member_set]
        if not in_group:
            continue
        if exclusive:
            ordered = order_accounts(method, in_group, position, turns.get(group_id, 0))
        else:
            ordered = sorted(in_group, key=lambda a: (a.priority, position[a.id]))
        stages.append(Stage(group_id, exclusive, tuple(a.id for a in ordered)))
    return stages


def forced_stages(catalog: Catalog, accounts: list[DeliveryAccount], client_id: str) -> list[Stage]:
    position = {a.id: i for i, a in enumerate(catalog.delivery_accounts)}
    mine = sorted((a for a in accounts if a.client == client_id), key=lambda a: (a.priority, position[a.id]))
    return [Stage(f"force:{client_id}", True, tuple(a.id for a in mine))] if mine else []


@dataclass(frozen=True)
class Attempt:
    """A delivery of this lead as the router sees it."""

    account: str
    client: str
    status: str  # requested | posting | succeeded | failed
    reason: str | None = None  # why it failed


@dataclass(frozen=True)
class NextStep:
    request: tuple[tuple[str, str], ...] = ()  # (group, account) to reserve and send now
    done: bool = False  # nothing in flight and nothing left to try
    sold: bool = False


IN_FLIGHT = frozenset({"requested", "posting"})


def next_step(
    stages: list[Stage],
    attempts: list[Attempt],
    skipped: set[str],
    max_sales: int,
    client_of: dict[str, str],
    holders: frozenset[str] = frozenset(),
) -> NextStep:
    """Where a lead stands and what to send next. Groups are served in order: a group's turn ends
    when it sold (exclusive), or when everything it could try has finished; a client never gets
    the same lead twice, nor a lead whose person it already holds through another lead (`holders`:
    clients that received, or are being sent, another lead with this fingerprint in the duplicate
    window, earlier or later); sales never exceed max_sales, counting deliveries still in flight."""
    sold = sum(1 for a in attempts if a.status == "succeeded")
    in_flight = sum(1 for a in attempts if a.status in IN_FLIGHT)
    tried = {a.account for a in attempts} | skipped
    taken_clients = {a.client for a in attempts if a.status == "succeeded" or a.status in IN_FLIGHT} | holders

    for stage in stages:
        mine = [a for a in attempts if a.account in stage.accounts]
        waiting = any(a.status in IN_FLIGHT for a in mine)
        room = max_sales - sold - in_flight
        candidates = [acc for acc in stage.accounts if acc not in tried and client_of.get(acc) not in taken_clients]
        if stage.exclusive:
            if any(a.status == "succeeded" for a in mine):
                continue  # this group has sold: on to the next group
            if waiting:
                return NextStep()  # one client at a time inside an exclusive group
            if room <= 0:
                break
            if candidates:
                return NextStep(request=((stage.group, candidates[0]),))
            continue
        # Shared: everyone eligible at once, up to the sales left; a slot freed by a failure goes
        # to the next account in line.
        chosen: list[str] = []
        for acc in candidates:
            if len(chosen) >= room:
                break
            if client_of[acc] not in {client_of[c] for c in chosen}:
                chosen.append(acc)
        if chosen:
            return NextStep(request=tuple((stage.group, acc) for acc in chosen))
        if waiting:
            return NextStep()  # groups are served in order: wait for this one to finish
        if room <= 0:
            break
    if in_flight:
        return NextStep()
    return NextStep(done=True, sold=sold > 0)


def accounts_tried(
    stages: list[Stage],
    attempts: list[Attempt],
    skipped: set[str],
    max_sales: int,
    client_of: dict[str, str],
    holders: frozenset[str],
    refused: set[str],
) -> list[str]:
    """The accounts a lead's step tries (`usecases._advance`: `next_step` again after each
    refusal), in order, when exactly the accounts in `refused` refuse it (a full cap, no order
    with room); the others are reserved. The cap counters a transaction locks up front, in one
    sorted order, before it takes any (docs/architecture.md, "Concurrency")."""
    attempts, skipped = list(attempts), set(skipped)
    tried: list[str] = []
    while True:
        step = next_step(stages, attempts, skipped, max_sales, client_of, holders)
        if step.done or not step.request:
            return tried
        for _group, account in step.request:
            tried.append(account)
            if account in refused:
                skipped.add(account)
            else:
                attempts.append(Attempt(account, client_of.get(account, ""), "requested"))


# --- A lead received: its problems, its duplicates, its plan; a lead finished: its outcome ------------

MISSING_KEY = FieldProblem(
    "message_id", "an idempotency key is required: set the AMQP message_id property or an 'idempotency-key' header"
)


def lead_problems(
    catalog: Catalog, lead_type_id: str, source_id: str, field_problems: list[FieldProblem], *, has_key: bool
) -> list[FieldProblem]:
    """Every reason to reject a lead, in the order the outcome lists them: no idempotency key, an
    unknown lead type, an unknown or inactive source, then its fields' problems."""
    problems = [] if has_key else [MISSING_KEY]
    if lead_type_id not in catalog.lead_types_by_id:
        problems.append(FieldProblem("lead_type", f"unknown lead type {lead_type_id!r}"))
    source = catalog.sources_by_id.get(source_id)
    if source is None:
        problems.append(FieldProblem("source", f"unknown lead source {source_id!r}"))
    elif not source.active:
        problems.append(FieldProblem("source", f"lead source {source_id!r} is inactive"))
    return problems + field_problems


def routes_duplicates(catalog: Catalog) -> bool:
    """Whether a duplicate may be routed at all: some client takes duplicates (Route Duplicate
    Leads). When none does, a duplicate is decided 'duplicate' at once."""
    return any(catalog.client_options(c.id).route_duplicate_leads for c in catalog.clients)


def duplicate_exclusions(catalog: Catalog, holders: frozenset[str]) -> frozenset[str]:
    """The clients a duplicate must never go to: those that do not take duplicates, and those that
    hold this person through another lead (`holders`)."""
    refusing = {c.id for c in catalog.clients if not catalog.client_options(c.id).route_duplicate_leads}
    return frozenset(refusing) | holders


@dataclass(frozen=True)
class Plan:
    """A lead's route: the stages its accounts are offered in, and how many may buy it."""

    stages: tuple[Stage, ...]
    max_sales: int


@dataclass(frozen=True)
class Unsold:
    """A lead that cannot be offered to anyone, and why."""

    reason: str


def plan(
    catalog: Catalog,
    lead_type_id: str,
    source_id: str,
    force_id: str | None,
    candidates: list[DeliveryAccount],
    *,
    paused: frozenset[str],
    excluded: frozenset[str],
    turns: dict[str, int],
) -> Plan | Unsold:
    """The plan of a valid lead from its eligible accounts (`eligible_accounts`): with a force id,
    only the forced client's accounts, in one exclusive stage; otherwise the client groups in
    order. Paused accounts and excluded clients (duplicates) are left out."""
    if force_id:
        target = force_target(catalog, force_id)
        if target is None:
            mapping = catalog.options.delivery_force_id_mapping.value
            return Unsold(f"force id {force_id!r} matches no client ({mapping})")
        eligible = narrow(candidates, paused=paused, excluded_clients=excluded, only_client=target)
        stages = forced_stages(catalog, eligible, target)
        if not stages:
            return Unsold(f"no eligible delivery account of forced client {target!r}")
    else:
        stages = build_stages(catalog, narrow(candidates, paused=paused, excluded_clients=excluded), turns)
    return Plan(tuple(stages), max_sales(catalog, lead_type_id, source_id))


def outcome(attempts: list[Attempt], *, duplicate: bool, skipped: bool) -> tuple[str, str | None]:
    """A routed lead's status and reason once nothing is in flight and nothing is left to try:
    sold when any delivery succeeded; else a duplicate stays 'duplicate'; else unsold, saying why
    (the last buyer's refusal, caps and orders, or no eligible account)."""
    if any(a.status == "succeeded" for a in attempts):
        return "sold", None
    if duplicate:
        return "duplicate", "duplicate lead; no buyer that takes duplicates bought it"
    if attempts:
        last = next((a.reason for a in reversed(attempts) if a.reason), "refused")
        return "unsold", f"no delivery account accepted the lead (last: {last})"
    if skipped:
        return "unsold", "every eligible delivery account is at its cap or has no order with room"
    return "unsold", "no eligible delivery account"


# --- Caps ------------------------------------------------------------------------------------------

CAP_PERIODS = ("hourly", "daily", "weekly", "monthly")


def cap_windows(caps: Caps, time_zone: str, now: datetime) -> list[tuple[str, datetime, int]]:
    """(period, start of the current window in the client's local time, cap) for each cap set."""
    local = now.astimezone(ZoneInfo(time_zone)).replace(tzinfo=None)
    starts = {
        "hourly": local.replace(minute=0, second=0, microsecond=0),
        "daily": local.replace(hour=0, minute=0, second=0, microsecond=0),
        "weekly": (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0),
        "monthly": local.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
    }
    return [(p, starts[p], getattr(caps, p)) for p in CAP_PERIODS if getattr(caps, p) is not None]


def caps_closed(caps: Caps) -> bool:
    """A cap of 0 closes the account outright, no counting needed."""
    return any(getattr(caps, p) == 0 for p in CAP_PERIODS)
