"""The admin console's decisions, with no I/O: roles and what each may do, API key syntax, the
Client Options' effective values and where they come from, catalog diffs, form reading. Every
function is table-tested in tests/unit/test_admin_rules.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from services.admin.masking import mask_account
from services.router.rules import normalise_field
from shared.catalog.model import FieldType

# --- Roles -------------------------------------------------------------------------------------

Role = Literal["owner", "admin", "operator", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)

# What a route needs. Every route of the console and its API names one of these (web.py refuses
# to start otherwise), and the role table below is the only place that says who has it.
Permission = Literal["read", "operate", "configure", "manage_staff"]

GRANTS: dict[Role, frozenset[Permission]] = {
    "viewer": frozenset({"read"}),
    # Day-to-day work: returns, dead letters, paused accounts, orders, re-routing.
    "operator": frozenset({"read", "operate"}),
    # And the catalog: Client Options, clients, accounts, groups, orders' definitions; own API keys.
    "admin": frozenset({"read", "operate", "configure"}),
    # And staff users and their roles, and every API key.
    "owner": frozenset({"read", "operate", "configure", "manage_staff"}),
}

ROLE_RANK: dict[Role, int] = {"viewer": 0, "operator": 1, "admin": 2, "owner": 3}


def may(role: Role, permission: Permission) -> bool:
    return permission in GRANTS[role]


def effective_role(user_role: Role, key_role: Role | None = None) -> Role:
    """What a request may do: the user's role, or for an API key the lesser of the key's role and
    its user's role now (demoting a user demotes their keys at once)."""
    if key_role is None:
        return user_role
    return key_role if ROLE_RANK[key_role] <= ROLE_RANK[user_role] else user_role


def may_grant(actor: Role, role: Role) -> bool:
    """A key (or a staff user, by an owner) gets at most its maker's role."""
    return ROLE_RANK[role] <= ROLE_RANK[actor]


def parse_role(value: str) -> Role | None:
    return next((r for r in ROLES if r == value), None)


# --- API keys ------------------------------------------------------------------------------------

KEY_PREFIX = "lw_staff_"
_KEY = re.compile(r"^lw_staff_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})$")


def format_key(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}{key_id}_{secret}"


def parse_key(value: str) -> tuple[str, str] | None:
    """(key id, secret) of `lw_staff_<16 hex>_<secret>`, or None."""
    match = _KEY.match(value.strip())
    return (match.group(1), match.group(2)) if match else None


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


# --- Staff users ---------------------------------------------------------------------------------

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def email_problem(email: str) -> str | None:
    if not email:
        return "Enter an email address."
    if len(email) > 320 or not EMAIL.match(email):
        return "Enter a valid email address."
    return None


def key_name_problem(name: str) -> str | None:
    if not name.strip():
        return "Name the key (what uses it)."
    if len(name) > 100:
        return "A key name has at most 100 characters."
    return None


@dataclass(frozen=True)
class Staff:
    """Who is asking: a staff user through a session (console) or an API key (API)."""

    staff_id: str
    email: str
    name: str
    role: Role  # the effective role of this request
    via: Literal["console", "api"]
    api_key_id: str | None = None
    session_id: str | None = None

    def may(self, permission: Permission) -> bool:
        return may(self.role, permission)


SIGNED_OUT_REASONS = {
    "signed_out": "You are signed out.",
    "expired": "Your session ended. Please sign in again.",
}


def safe_next(value: str | None, base_path: str) -> str | None:
    """A post-login redirect target: only a path of this console (never another site)."""
    if not value or len(value) > 2000 or not value.startswith(f"{base_path}/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 32 for c in value):
        return None
    return value


# --- Client Options ------------------------------------------------------------------------------

OptionSource = Literal["global", "client", "group", "account", "order"]


@dataclass(frozen=True)
class OptionSpec:
    key: str  # the global option's name in `options`
    label: str  # the seed's name for it
    kind: Literal["bool", "int", "percent", "choice"]
    help: str
    client_key: str | None = None  # the per-client override in `clients[].options`, if any


# The seed's options, in the seed's order (../shared/seeds/client-settings-options.txt).
OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "apply_groups_as_criteria",
        "Apply Groups as Criteria",
        "bool",
        "Yes: deliveries are exclusive within a client group (one client of the group gets a lead, then the "
        "next group). The default for groups that do not set it; each group may override it.",
    ),
    OptionSpec(
        "allow_confirm_price",
        "Allow Confirm Price",
        "bool",
        "Yes: a price returned by the buyer's API after delivery replaces the delivery account's price.",
        "allow_confirm_price",
    ),
    OptionSpec(
        "disable_portal_for_inactive_clients",
        "Disable Access to Portal for Inactive Users",
        "bool",
        "Yes: users of inactive clients cannot sign in to the Client Portal.",
    ),
    OptionSpec(
        "expire_portal_email_link_days",
        "Expire Portal Email Link",
        "int",
        "Days an emailed portal link keeps working; 0 means it never expires.",
    ),
    OptionSpec(
        "delivery_force_id_mapping",
        "Delivery Force ID Mapping",
        "choice",
        "Which client field a lead's force id is matched against.",
    ),
    OptionSpec(
        "route_duplicate_leads",
        "Route Duplicate Leads",
        "bool",
        "Yes: duplicates are delivered to buyers after the original (never to a client that had the original).",
        "route_duplicate_leads",
    ),
    OptionSpec(
        "default_return_pct_delivery_accounts",
        "Default Return Percentage on Delivery Accounts",
        "percent",
        "Return cap of a delivery account without its own; each client may override it.",
        "return_pct_delivery_accounts",
    ),
    OptionSpec(
        "default_return_pct_orders",
        "Default Return Percentage on Orders",
        "percent",
        "Return allowance of an order without its own; each client may override it.",
        "return_pct_orders",
    ),
)
FORCE_ID_CHOICES = ("client_id", "external_ref", "email", "name")
CLIENT_KEYS = tuple(s.client_key for s in OPTION_SPECS if s.client_key)


@dataclass(frozen=True)
class Effective:
    """One option as it applies to one client: its value, and where that value comes from."""

    key: str
    label: str
    value: str
    source: OptionSource
    detail: str = ""


def show(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def effective_options(catalog: Any, client_id: str) -> list[Effective]:
    """Every option as it applies to `client_id`, with its source: the client's own override,
    its group's setting, a delivery account's or an order's own return cap, else the global
    option (the seed's troubleshooting: "review both default settings and individual client
    settings")."""
    options = catalog.options
    client = catalog.clients_by_id[client_id]
    own = client.options
    rows: list[Effective] = []
    group = next((g for g in catalog.groups if client_id in g.clients), None)
    if group is not None and group.apply_groups_as_criteria is not None:
        rows.append(
            Effective(
                "apply_groups_as_criteria",
                "Apply Groups as Criteria",
                show(group.apply_groups_as_criteria),
                "group",
                f"group {group.id}",
            )
        )
    else:
        where = f"group {group.id} does not set it" if group else "in no group (the last, implicit group)"
        rows.append(
            Effective(
                "apply_groups_as_criteria",
                "Apply Groups as Criteria",
                show(options.apply_groups_as_criteria),
                "global",
                where,
            )
        )
    for spec in OPTION_SPECS[1:]:
        override = getattr(own, spec.client_key) if spec.client_key else None
        if override is not None:
            rows.append(Effective(spec.key, spec.label, show(override), "client"))
            continue
        value = getattr(options, spec.key)
        detail = ""
        if spec.key == "expire_portal_email_link_days":
            detail = "never expires" if value == 0 else f"{value} days"
        elif spec.key == "delivery_force_id_mapping":
            mapped = client.id if show(value) == "client_id" else getattr(client, show(value))
            detail = (
                f"this client's {show(value)}: {mapped}" if mapped is not None else f"this client has no {show(value)}"
            )
        rows.append(Effective(spec.key, spec.label, show(value), "global", detail))
    for account in catalog.delivery_accounts:
        if account.client == client_id and account.max_return_pct is not None:
            rows.append(
                Effective(
                    "default_return_pct_delivery_accounts",
                    "Return Percentage on Delivery Account",
                    show(account.max_return_pct),
                    "account",
                    f"account {account.id}",
                )
            )
    for order in catalog.orders:
        if order.client == client_id and order.max_return_pct is not None:
            rows.append(
                Effective(
                    "default_return_pct_orders",
                    "Return Percentage on Order",
                    show(order.max_return_pct),
                    "order",
                    f"order {order.id}",
                )
            )
    return rows


def _bool_field(value: str, *, inherit: bool) -> tuple[bool | None, str | None]:
    if inherit and value == "":
        return None, None
    if value in ("true", "false"):
        return value == "true", None
    return None, ("Choose yes, no or the default." if inherit else "Choose yes or no.")


def options_patch(document: dict[str, Any], form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The catalog document with the Client Options form applied (global options, each client's
    overrides, each group's Apply Groups as Criteria), and the errors found before validation
    (a choice that is not one of the offered ones). Numbers stay text here: the catalog's own
    validation judges them, exactly as `leadwire catalog apply` would."""
    doc = {**document}
    errors: dict[str, str] = {}
    options = dict(doc.get("options") or {})
    for spec in OPTION_SPECS:
        name = f"global.{spec.key}"
        raw = str(form.get(name) or "").strip()
        if spec.kind == "bool":
            value, problem = _bool_field(raw, inherit=False)
            if problem:
                errors[name] = problem
            else:
                options[spec.key] = value
        elif spec.kind == "choice":
            if raw not in FORCE_ID_CHOICES:
                errors[name] = "Choose one of the offered fields."
            else:
                options[spec.key] = raw
        elif raw == "":
            errors[name] = "Enter a number."
        else:
            options[spec.key] = raw
    doc["options"] = options

    clients = []
    for client in doc.get("clients") or []:
        client = {**client}
        own = dict(client.get("options") or {})
        for key in CLIENT_KEYS:
            name = f"client.{client['id']}.{key}"
            if name not in form:
                continue  # not on the form (a client added since): left as it is
            raw = str(form.get(name) or "").strip()
            if key in ("allow_confirm_price", "route_duplicate_leads"):
                value, problem = _bool_field(raw, inherit=True)
                if problem:
                    errors[name] = problem
                    continue
                own[key] = value
            else:
                own[key] = raw or None
        client["options"] = {k: v for k, v in own.items() if v is not None}
        clients.append(client)
    doc["clients"] = clients

    groups = []
    for group in doc.get("groups") or []:
        group = {**group}
        name = f"group.{group['id']}.apply_groups_as_criteria"
        if name in form:
            value, problem = _bool_field(str(form.get(name) or "").strip(), inherit=True)
            if problem:
                errors[name] = problem
            else:
                group["apply_groups_as_criteria"] = value
        groups.append(group)
    doc["groups"] = groups
    return doc, errors


_CLIENT_OPTION = re.compile(r"^clients\[\d+\] \((.+?)\)\.options\.(\w+)$")
_GROUP_OPTION = re.compile(r"^groups\[\d+\] \((.+?)\)\.apply_groups_as_criteria$")
_FORCE_VALUE = re.compile(r"^clients\[\d+\] \((.+?)\)\.(external_ref|email|name)$")


def option_field(location: str) -> str | None:
    """The Client Options form field a catalog error belongs beside (None: not one of the form's)."""
    if location.startswith("options."):
        return "global." + location.removeprefix("options.").split(".")[0]
    if match := _CLIENT_OPTION.match(location):
        return f"client.{match.group(1)}.{match.group(2)}"
    if match := _GROUP_OPTION.match(location):
        return f"group.{match.group(1)}.apply_groups_as_criteria"
    if _FORCE_VALUE.match(location):
        # Two clients share the value the force id mapping now points at.
        return "global.delivery_force_id_mapping"
    return None


# --- Catalog versions ----------------------------------------------------------------------------


def text_diff(before: str, after: str, *, before_name: str, after_name: str) -> list[tuple[str, str]]:
    """A unified diff as (kind, line) with kind add / del / hunk / same, for the page to colour."""
    import difflib

    out: list[tuple[str, str]] = []
    for line in difflib.unified_diff(
        before.splitlines(), after.splitlines(), fromfile=before_name, tofile=after_name, lineterm="", n=3
    ):
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append((kind, line))
    return out


def option_changes(before: Any, after: Any) -> dict[str, Any]:
    """What a save changed in the Client Options (global, per client, per group): name ->
    [before, after], for the audit."""
    changes: dict[str, Any] = {}
    old_opts, new_opts = before.options.model_dump(mode="json"), after.options.model_dump(mode="json")
    for key in new_opts:
        if old_opts.get(key) != new_opts[key]:
            changes[f"options.{key}"] = [old_opts.get(key), new_opts[key]]
    old_clients = {c.id: c.options.model_dump(mode="json") for c in before.clients}
    for client in after.clients:
        mine = client.options.model_dump(mode="json")
        theirs = old_clients.get(client.id, {})
        for key in mine:
            if theirs.get(key) != mine[key]:
                changes[f"clients.{client.id}.options.{key}"] = [theirs.get(key), mine[key]]
    old_groups = {g.id: g.apply_groups_as_criteria for g in before.groups}
    for group in after.groups:
        if old_groups.get(group.id) != group.apply_groups_as_criteria:
            changes[f"groups.{group.id}.apply_groups_as_criteria"] = [
                old_groups.get(group.id),
                group.apply_groups_as_criteria,
            ]
    return changes


# --- Leads ---------------------------------------------------------------------------------------

LEAD_STATUSES = ("routing", "sold", "unsold", "duplicate", "rejected")


def parse_lead_search(params: Any, lead_types: Any) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(filters for queries.search_leads, errors by field, the values as typed) of the lead search
    form. Dates are UTC days: `to` includes its whole day."""
    import uuid as uuid_module
    from datetime import UTC, date, datetime, time, timedelta

    typed = {
        k: str(params.get(k) or "").strip()
        for k in ("id", "source", "key", "status", "type", "from", "to", "contact", "before")
    }
    errors: dict[str, str] = {}
    filters: dict[str, Any] = {}
    if typed["id"]:
        try:
            filters["id"] = uuid_module.UUID(typed["id"])
        except ValueError:
            errors["id"] = "A lead id looks like 3f2b8c1e-…: 32 hex digits."
    for name, label in (("source", "A source id"), ("key", "An idempotency key")):
        if len(typed[name]) > 200:
            errors[name] = f"{label} has at most 200 characters."
        elif typed[name]:
            filters[name] = typed[name]
    if typed["status"]:
        if typed["status"] in LEAD_STATUSES:
            filters["status"] = typed["status"]
        else:
            errors["status"] = "Choose a status from the list."
    if typed["type"]:
        if typed["type"] in lead_types:
            filters["type"] = typed["type"]
        else:
            errors["type"] = "Choose a lead type from the list."
    days: dict[str, date] = {}
    for name in ("from", "to"):
        if typed[name]:
            try:
                day = date.fromisoformat(typed[name])
                if not 2000 <= day.year <= 2100:
                    raise ValueError
                days[name] = day
            except ValueError:
                errors[name] = "Enter a date as YYYY-MM-DD (between 2000 and 2100)."
    if "from" in days:
        filters["from"] = datetime.combine(days["from"], time(0), UTC)
    if "to" in days:
        filters["to"] = datetime.combine(days["to"], time(0), UTC) + timedelta(days=1)
    if "from" in days and "to" in days and days["to"] < days["from"]:
        errors["to"] = "The end date is before the start date."
    contact = typed["contact"]
    if contact:
        if len(contact) > 200:
            errors["contact"] = "Search for at most 200 characters."
        elif "@" not in contact and sum(c.isdigit() for c in contact) >= 7 and not any(c.isalpha() for c in contact):
            # Valid leads keep phones as the router normalises them (10 digits: "+1 (415) 555-0100"
            # is 4155550100), so the search term goes through the same function; a partial number
            # keeps its digits. Duplicates and rejected leads keep phones as sent: also as typed.
            filters["contact"] = search_phone(contact)
            filters["contact_as_typed"] = _like(contact)
        elif len(contact) < 3:
            errors["contact"] = "Enter at least 3 characters of an email or a phone number."
        else:
            filters["contact"] = _like(contact)
    if typed["before"]:
        at, _, lead_id = typed["before"].partition("|")
        try:
            filters["before_at"] = datetime.fromisoformat(at)
            filters["before_id"] = uuid_module.UUID(lead_id)
            if filters["before_at"].tzinfo is None:
                raise ValueError
        except ValueError:
            errors["before"] = "That page link is not valid any more."
    return filters, errors, typed


def search_phone(text: str) -> str:
    """A phone number as the router stores it (`normalise_field`, the function the router and the
    portal's search use), or its digits when it is not a whole number."""
    try:
        return str(normalise_field(FieldType.phone, text))
    except ValueError:
        return "".join(c for c in text if c.isdigit())


def _like(text: str) -> str:
    """Text for inside ILIKE '%…%': its own wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Step:
    """One line of a lead's timeline."""

    at: Any  # datetime or None (a step with no time of its own sorts after its parent)
    kind: str  # received, duplicate_check, plan, delivery, attempt, price, delivery_done, outcome, return, email
    title: str
    detail: str = ""
    body: str = ""  # a masked request or response


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


def timeline(lead: Any, history: dict[str, Any], emails: list[Any], mask: Any, mask_request: Any = None) -> list[Step]:
    """received → duplicate check → plan → deliveries and their post attempts (the lead's fields
    and the response masked by `mask`, the request by `mask_request`, default `mask`) → outcome
    → returns → emails, in time order (steps without a time of their own keep their place)."""
    mask_request = mask_request or mask
    steps = [
        Step(
            lead["received_at"],
            "received",
            f"Received from source {lead['source_id']} as {lead['lead_type_id']}",
            f"idempotency key {lead['idempotency_key']}"
            + (f"; force id {lead['force_id']}" if lead["force_id"] else ""),
            mask(_json(lead["fields"])) or "",
        )
    ]
    if lead["status"] == "rejected":
        steps.append(
            Step(
                lead["received_at"],
                "duplicate_check",
                "Rejected before routing",
                lead["reason"] or "",
                _json(lead["errors"]) if lead["errors"] else "",
            )
        )
    elif lead["status"] == "duplicate" or lead["original_lead_id"] is not None:
        steps.append(
            Step(
                lead["received_at"],
                "duplicate_check",
                f"Duplicate of lead {lead['original_lead_id']}",
                "routed as a duplicate" if lead["status"] != "duplicate" else "recorded, not routed",
            )
        )
    elif lead["fingerprint"]:
        steps.append(
            Step(
                lead["received_at"],
                "duplicate_check",
                "Duplicate check: an original",
                f"fingerprint {lead['fingerprint'][:16]}…",
            )
        )
    else:
        steps.append(
            Step(
                lead["received_at"], "duplicate_check", "Duplicate check: none (the lead type has no duplicate fields)"
            )
        )
    if lead["plan"] or lead["skipped"]:
        steps.append(
            Step(
                lead["received_at"],
                "plan",
                "Plan: client groups in order",
                f"max sales {lead['max_sales']}",
                _json({"plan": lead["plan"], "skipped": lead["skipped"]}),
            )
        )
    attempts: dict[Any, list[Any]] = {}
    for attempt in history["attempts"]:
        attempts.setdefault(attempt["delivery_id"], []).append(attempt)
    for delivery in history["deliveries"]:
        steps.append(
            Step(
                delivery["created_at"],
                "delivery",
                f"Delivery to {delivery['client_id']} / {delivery['delivery_account_id']} at {delivery['price']}",
                f"delivery {delivery['id']}"
                + (f", group {delivery['group_id']}" if delivery["group_id"] else "")
                + (f", order {delivery['order_id']}" if delivery["order_id"] else ""),
            )
        )
        for attempt in attempts.get(delivery["id"], []):
            status = f"HTTP {attempt['status_code']}" if attempt["status_code"] is not None else "no answer"
            steps.append(
                Step(
                    attempt["started_at"],
                    "attempt",
                    f"Post attempt {attempt['attempt']}: {attempt['outcome']} ({status}, {attempt['duration_ms']} ms)",
                    mask(attempt["error"]) or "",  # an error may quote the URL
                    f"request:\n{mask_request(attempt['request']) or ''}"
                    f"\n\nresponse:\n{mask(attempt['response']) or ''}",
                )
            )
        if delivery["completed_at"] is not None or delivery["status"] == "failed":
            steps.append(
                Step(
                    delivery["completed_at"],
                    "delivery_done",
                    f"Delivery {delivery['status']}"
                    f" ({delivery['delivery_account_id']}, {delivery['attempts']} attempt(s))",
                    mask(delivery["reason"]) or "",
                )
            )
    for c in history["confirmations"]:
        steps.append(
            Step(
                c["created_at"],
                "price",
                f"Price confirmation {c['outcome']}: {c['price_before']} → {c['price_after']}",
                c["reason"] or f"offered {c['offered']}",
            )
        )
    if lead["decided_at"] is not None:
        steps.append(Step(lead["decided_at"], "outcome", f"Outcome: {lead['status']}", lead["reason"] or ""))
    for r in history["returns"]:
        steps.append(
            Step(
                r["requested_at"], "return", f"Return requested by {r['client_id']}: {r['reason']}", r["comment"] or ""
            )
        )
        if r["decided_at"] is not None:
            steps.append(
                Step(
                    r["decided_at"],
                    "return",
                    f"Return {r['status']} ({r['decision_reason']})",
                    " ".join(
                        x
                        for x in (
                            r["note"] or "",
                            f"by {r['decided_by']}" if r["decided_by"] else "",
                            f"credit {r['credit']}" if r["credit"] else "",
                        )
                        if x
                    ),
                )
            )
    for e in emails:
        steps.append(
            Step(
                e["created_at"],
                "email",
                f"Email {e['kind']}: {e['status']}",
                f"to {', '.join(e['recipients'])}; {e['subject']}"
                + (f"; last error: {e['last_error']}" if e["last_error"] else ""),
            )
        )
    # A step without a time of its own stays right after the step before it.
    keyed, last = [], lead["received_at"]
    for position, step in enumerate(steps):
        last = step.at or last
        keyed.append((last, position, step))
    return [step for _, _, step in sorted(keyed, key=lambda k: (k[0], k[1]))]


# --- Clients (catalog editing) -------------------------------------------------------------------

CLIENT_FIELDS = (
    "name",
    "active",
    "time_zone",
    "email",
    "phone",
    "contact_name",
    "external_ref",
    "auto_approve_returns",
)


def client_patch(document: dict[str, Any], client_id: str | None, form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The catalog document with one client changed (or, `client_id` None, added at the end) from
    the client form; text stays text for the catalog's own validation. Blank optional fields are
    removed."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name in CLIENT_FIELDS:
        raw = str(form.get(name) or "").strip()
        if name in ("active", "auto_approve_returns"):
            values[name] = raw == "on"
        elif name in ("name", "time_zone"):
            if not raw:
                errors[name] = "Enter a name." if name == "name" else "Enter a time zone, such as America/New_York."
            values[name] = raw
        elif raw:
            values[name] = raw
    doc = {**document, "clients": [dict(c) for c in document.get("clients") or []]}
    if client_id is None:
        new_id = str(form.get("id") or "").strip()
        if not new_id:
            errors["id"] = "Enter an id (letters, digits, _ . : -)."
        doc["clients"].append({"id": new_id, **values})
    else:
        for client in doc["clients"]:
            if client["id"] == client_id:
                for name in CLIENT_FIELDS:
                    client.pop(name, None)
                client.update(values)
    return doc, errors


_CLIENT_FIELD = re.compile(r"^clients\[\d+\] \((.+?)\)\.(\w+)")
_CLIENT_ENTRY = re.compile(r"^clients\[\d+\](?: \((.+?)\))?(?:\.(\w+))?")


def client_field(location: str) -> str | None:
    """The client form field a catalog error belongs beside."""
    match = _CLIENT_ENTRY.match(location)
    if match is None:
        return None
    name = match.group(2)
    if name in CLIENT_FIELDS or name == "id":
        return name
    return None


# --- Catalog entries: delivery accounts, groups, orders (catalog editing) --------------------------
#
# Each form's fields are named by the entry's own paths in the catalog ("price", "caps.daily",
# "delivery.url", "criteria.0.op"), so an error the catalog reports at
# "delivery_accounts[3] (acme-solar).delivery.url" lands beside the field "delivery.url", and the
# API's JSON errors use the same names. Values stay text: the catalog's own validation parses them
# (and says what is wrong), exactly as it would parse them from a YAML file.

EntryKind = Literal["account", "group", "order"]
# kind -> (catalog section, what the screen calls one)
ENTRY_KINDS: dict[EntryKind, tuple[str, str]] = {
    "account": ("delivery_accounts", "delivery account"),
    "group": ("groups", "group"),
    "order": ("orders", "order"),
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CRITERION_OPS = ("equals", "not_equals", "in", "not_in", "regex", "range", "zip_list")
LIST_OPS = ("in", "not_in", "zip_list")
CRITERION_PARTS = ("field", "op", "value", "min", "max")
BLANK_CRITERIA_ROWS = 2  # empty rows under a form's criteria, to add new ones without script
SECRET_MASK = "********"

# The fields each form shows an error beside (criteria rows: "criteria.<i>" and its parts).
ACCOUNT_FORM_FIELDS = (
    "id",
    "client",
    "lead_type",
    "active",
    "price",
    "priority",
    "weight",
    "require_order",
    "max_return_pct",
    "caps.hourly",
    "caps.daily",
    "caps.weekly",
    "caps.monthly",
    "schedule.days",
    "schedule.start",
    "schedule.end",
    "delivery",
    "delivery.method",
    "delivery.url",
    "delivery.http_method",
    "delivery.format",
    "delivery.timeout_seconds",
    "delivery.field_map",
    "delivery.headers",
    "delivery.body_template",
    "delivery.auth",
    "delivery.auth.type",
    "delivery.auth.username",
    "delivery.auth.password",
    "delivery.auth.token",
    "delivery.retry.count",
    "delivery.retry.delay_seconds",
    "delivery.pause_after_failures",
    "delivery.max_in_flight",
    "delivery.mask_fields",
    "delivery.to",
    "criteria",
)
GROUP_FORM_FIELDS = ("id", "name", "apply_groups_as_criteria", "distribution", "clients")
ORDER_FORM_FIELDS = (
    "id",
    "client",
    "type",
    "total",
    "start_date",
    "end_date",
    "renewal",
    "auto_charge",
    "accounts",
    "max_return_pct",
)


class FormLike:
    """What the entry forms read: a mapping of text values, and every value of a repeated field
    (Starlette's FormData has `getlist`; a plain dict holds lists)."""

    def __init__(self, form: Any) -> None:
        self.form = form

    def text(self, name: str) -> str:
        value = self.form.get(name)
        return value.strip() if isinstance(value, str) else ""

    def raw(self, name: str) -> str:
        value = self.form.get(name)
        return value if isinstance(value, str) else ""

    def many(self, name: str) -> list[str]:
        if hasattr(self.form, "getlist"):
            return [v for v in self.form.getlist(name) if isinstance(v, str)]
        value = self.form.get(name)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []

    def checked(self, name: str) -> bool:
        return self.text(name) in ("on", "true", "1", "yes")


def _words(text: str) -> list[str]:
    """A list typed as text: comma- or line-separated, blanks dropped."""
    return [w.strip() for w in re.split(r"[,\n]", text) if w.strip()]


def _set(entry: dict[str, Any], key: str, value: str) -> None:
    """An optional value: blank removes it (the catalog's default applies)."""
    if value:
        entry[key] = value
    else:
        entry.pop(key, None)


def _pairs(text: str, separator: str, name: str, errors: dict[str, str], example: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, found, value = line.partition(separator)
        if not found or not key.strip():
            errors[name] = f"Line {number}: write {example}, one a line."
            continue
        out[key.strip()] = value.strip()
    return out


def criteria_rows(form: FormLike) -> list[int]:
    """The criteria row numbers present on a submitted form, in order."""
    found = set()
    for key in form.form:
        match = re.match(r"^criteria\.(\d{1,3})\.(\w+)$", str(key))
        if match:
            found.add(int(match.group(1)))
    return sorted(found)


def _start_entry(
    form: FormLike, current: dict[str, Any] | None, required: tuple[tuple[str, str], ...]
) -> tuple[dict[str, Any], dict[str, str]]:
    """An entry form's common start: the current entry (kept where the form says nothing), the id
    of a new one, and the required fields with what to say when one is blank."""
    errors: dict[str, str] = {}
    entry: dict[str, Any] = dict(current or {})
    if current is None:
        entry["id"] = form.text("id")
        if not entry["id"]:
            errors["id"] = "Enter an id (letters, digits, _ . : -)."
    for name, missing in required:
        entry[name] = form.text(name)
        if not entry[name]:
            errors[name] = missing
    return entry, errors


def account_entry(
    form_data: Any, current: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, str], dict[int, int]]:
    """A delivery account's catalog entry from its form, on top of `current` (the entry as it is,
    None for a new one): settings the form does not show (the success, price and rejection
    rules) stay as they are; a blank password or token keeps the current one. Returns the entry,
    the errors found reading the form, and where each criterion came from (entry index -> form
    row), so the catalog's errors about a criterion land beside its row."""
    form = FormLike(form_data)
    required = (
        ("client", "Choose the client."),
        ("lead_type", "Choose the lead type."),
        ("price", "Enter a price, such as 25.00."),
    )
    entry, errors = _start_entry(form, current, required)
    entry["active"] = form.checked("active")
    entry["require_order"] = form.checked("require_order")
    for name in ("priority", "weight", "max_return_pct"):
        _set(entry, name, form.text(name))
    entry["caps"] = {
        k: form.text(f"caps.{k}") for k in ("hourly", "daily", "weekly", "monthly") if form.text(f"caps.{k}")
    }
    days = [d for d in WEEKDAYS if d in form.many("schedule.days")]
    if not days:
        errors["schedule.days"] = "Choose at least one day (or untick Active to stop the account)."
    schedule: dict[str, Any] = {"days": days}
    for name in ("start", "end"):
        _set(schedule, name, form.text(f"schedule.{name}"))
    entry["schedule"] = schedule

    criteria: list[dict[str, Any]] = []
    origin: dict[int, int] = {}
    for row in criteria_rows(form):
        parts = {p: form.text(f"criteria.{row}.{p}") for p in CRITERION_PARTS}
        if not any(parts.values()):
            continue  # an empty row: nothing, or a criterion removed by blanking it
        criterion: dict[str, Any] = {"field": parts["field"], "op": parts["op"]}
        if not parts["field"]:
            errors[f"criteria.{row}.field"] = "Enter the lead field this criterion tests."
        if parts["op"] not in CRITERION_OPS:
            errors[f"criteria.{row}.op"] = "Choose how to compare."
        if parts["op"] in LIST_OPS:
            criterion["value"] = _words(parts["value"])
        elif parts["value"]:
            criterion["value"] = parts["value"]
        for bound in ("min", "max"):
            if parts[bound]:
                criterion[bound] = parts[bound]
        origin[len(criteria)] = row
        criteria.append(criterion)
    entry["criteria"] = criteria

    method = form.text("delivery.method")
    before = dict(entry.get("delivery") or {})
    delivery: dict[str, Any] = before if before.get("method") == method else {}
    delivery["method"] = method
    if method == "http":
        delivery["url"] = form.text("delivery.url")
        if not delivery["url"]:
            errors["delivery.url"] = "Enter the buyer's URL (http:// or https://)."
        for name in ("http_method", "format", "timeout_seconds", "pause_after_failures", "max_in_flight"):
            _set(delivery, name, form.text(f"delivery.{name}"))
        retry = {
            k: form.text(f"delivery.retry.{k}") for k in ("count", "delay_seconds") if form.text(f"delivery.retry.{k}")
        }
        _set_mapping(delivery, "retry", retry)
        _set_mapping(
            delivery,
            "field_map",
            _pairs(form.raw("delivery.field_map"), "=", "delivery.field_map", errors, "buyer_field = lead_field"),
        )
        _set_mapping(
            delivery, "headers", _pairs(form.raw("delivery.headers"), ":", "delivery.headers", errors, "Name: value")
        )
        body_template = form.raw("delivery.body_template")
        _set(delivery, "body_template", body_template if body_template.strip() else "")
        masked = _words(form.raw("delivery.mask_fields"))
        if masked:
            delivery["mask_fields"] = masked
        else:
            delivery.pop("mask_fields", None)
        delivery_auth(form, before.get("auth") if before.get("method") == "http" else None, delivery, errors)
    elif method == "email":
        delivery["to"] = _words(form.raw("delivery.to"))
        if not delivery["to"]:
            errors["delivery.to"] = "Enter at least one email address."
    else:
        errors["delivery.method"] = "Choose how leads are delivered: http or email."
    entry["delivery"] = delivery
    return entry, errors, origin


def _set_mapping(entry: dict[str, Any], key: str, value: dict[str, Any]) -> None:
    if value:
        entry[key] = value
    else:
        entry.pop(key, None)


def delivery_auth(
    form: FormLike, current: dict[str, Any] | None, delivery: dict[str, Any], errors: dict[str, str]
) -> None:
    """The post's authentication. A secret is never shown on the page: its box is blank, and
    blank keeps the current secret (of the same kind of auth)."""
    kind = form.text("delivery.auth.type")
    if kind == "":
        delivery.pop("auth", None)
        return
    if kind not in ("basic", "bearer"):
        errors["delivery.auth.type"] = "Choose none, basic or bearer."
        return
    same = current if current and current.get("type") == kind else {}
    auth: dict[str, Any] = {"type": kind}
    if kind == "basic":
        auth["username"] = form.text("delivery.auth.username")
        auth["password"] = form.raw("delivery.auth.password") or same.get("password") or ""
        if not auth["username"]:
            errors["delivery.auth.username"] = "Enter the user name for basic auth."
        if not auth["password"]:
            errors["delivery.auth.password"] = "Enter the password for basic auth."
    else:
        auth["token"] = form.raw("delivery.auth.token").strip() or same.get("token") or ""
        if not auth["token"]:
            errors["delivery.auth.token"] = "Enter the bearer token."
    delivery["auth"] = auth


def group_entry(
    form_data: Any, current: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, str], dict[int, int]]:
    """A client group's catalog entry from its form: clients in order (the group's priority order),
    Apply Groups as Criteria yes / no / blank = the global option."""
    form = FormLike(form_data)
    entry, errors = _start_entry(form, current, (("name", "Enter a name."),))
    apply_as = form.text("apply_groups_as_criteria")
    if apply_as in ("true", "false"):
        entry["apply_groups_as_criteria"] = apply_as == "true"
    elif apply_as == "":
        entry.pop("apply_groups_as_criteria", None)
    else:
        errors["apply_groups_as_criteria"] = "Choose yes, no or the global option."
    _set(entry, "distribution", form.text("distribution"))
    entry["clients"] = _words(form.raw("clients"))
    if not entry["clients"]:
        errors["clients"] = "Name at least one client (client ids, in order)."
    return entry, errors, {}


def order_entry(
    form_data: Any, current: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, str], dict[int, int]]:
    """An order's catalog entry from its form. Its status is not on the form: the Orders page
    pauses, resumes and closes (the returns service owns the live status)."""
    form = FormLike(form_data)
    required = (
        ("client", "Choose the client."),
        ("type", "Choose lead_quantity or dollar_amount."),
        ("total", "Enter the order's total (leads or dollars)."),
        ("start_date", "Enter the start date, YYYY-MM-DD."),
    )
    entry, errors = _start_entry(form, current, required)
    for name in ("end_date", "renewal", "max_return_pct"):
        _set(entry, name, form.text(name))
    entry["auto_charge"] = form.checked("auto_charge")
    accounts = _words(form.raw("accounts"))
    entry["accounts"] = "all" if not accounts or accounts == ["all"] else accounts
    return entry, errors, {}


ENTRY_BUILDERS = {"account": account_entry, "group": group_entry, "order": order_entry}
ENTRY_FORM_FIELDS: dict[EntryKind, tuple[str, ...]] = {
    "account": ACCOUNT_FORM_FIELDS,
    "group": GROUP_FORM_FIELDS,
    "order": ORDER_FORM_FIELDS,
}


def entry_field(kind: EntryKind, index: int, location: str, origin: dict[int, int]) -> str | None:
    """The form field beside which a catalog error at `location` belongs, when it is about the
    entry at `index` of the kind's section ("delivery_accounts[3] (x).caps.daily" -> "caps.daily");
    None for an error elsewhere in the catalog. A path the form has no field for goes to the
    nearest field that holds it ("schedule.days[2]" -> "schedule.days")."""
    section, _ = ENTRY_KINDS[kind]
    match = re.match(rf"^{section}\[{index}\](?: \([^)]*\))?(?:\.(.*))?$", location)
    if match is None:
        return None
    path = re.sub(r"\[(\d+)\]", r".\1", match.group(1) or "")
    parts = path.split(".") if path else []
    if kind == "account" and len(parts) >= 2 and parts[0] == "criteria" and parts[1].isdigit():
        row = origin.get(int(parts[1]), int(parts[1]))
        return ".".join(["criteria", str(row), *parts[2:3]])
    known = ENTRY_FORM_FIELDS[kind]
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in known:
            return name
    return None


def entry_form_values(kind: EntryKind, entry: dict[str, Any] | None) -> dict[str, Any]:
    """A form's fields filled from a catalog entry (as JSON), the inverse of the *_entry
    functions. Secrets are never put in a page."""
    e = entry or {}

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    if kind == "group":
        apply_as = e.get("apply_groups_as_criteria")
        return {
            "id": text(e.get("id")),
            "name": text(e.get("name")),
            "apply_groups_as_criteria": "" if apply_as is None else ("true" if apply_as else "false"),
            "distribution": text(e.get("distribution") or "priority"),
            "clients": ", ".join(e.get("clients") or []),
        }
    if kind == "order":
        accounts = e.get("accounts", "all")
        return {
            "id": text(e.get("id")),
            "client": text(e.get("client")),
            "type": text(e.get("type") or "lead_quantity"),
            "total": text(e.get("total")),
            "start_date": text(e.get("start_date")),
            "end_date": text(e.get("end_date")),
            "renewal": text(e.get("renewal") or "none"),
            "auto_charge": bool(e.get("auto_charge")),
            "accounts": "all" if accounts == "all" else ", ".join(accounts),
            "max_return_pct": text(e.get("max_return_pct")),
            "status": text(e.get("status") or "open"),
        }
    delivery = e.get("delivery") or {"method": "http"}
    auth = delivery.get("auth") or {}
    schedule = e.get("schedule") or {}
    values: dict[str, Any] = {
        "id": text(e.get("id")),
        "client": text(e.get("client")),
        "lead_type": text(e.get("lead_type")),
        "active": e.get("active", True),
        "price": text(e.get("price")),
        "priority": text(e.get("priority", 0)),
        "weight": text(e.get("weight", 1)),
        "require_order": bool(e.get("require_order")),
        "max_return_pct": text(e.get("max_return_pct")),
        "schedule.days": list(schedule.get("days", WEEKDAYS)),
        "schedule.start": text(schedule.get("start", "00:00:00")),
        "schedule.end": text(schedule.get("end", "23:59:59")),
        "delivery.method": delivery.get("method", "http"),
        "delivery.url": text(delivery.get("url")),
        "delivery.http_method": text(delivery.get("http_method", "POST")),
        "delivery.format": text(delivery.get("format", "json")),
        "delivery.timeout_seconds": text(delivery.get("timeout_seconds", "")),
        "delivery.pause_after_failures": text(delivery.get("pause_after_failures", "")),
        "delivery.max_in_flight": text(delivery.get("max_in_flight")),
        "delivery.retry.count": text((delivery.get("retry") or {}).get("count", "")),
        "delivery.retry.delay_seconds": text((delivery.get("retry") or {}).get("delay_seconds", "")),
        "delivery.field_map": "\n".join(f"{k} = {v}" for k, v in (delivery.get("field_map") or {}).items()),
        "delivery.headers": "\n".join(f"{k}: {v}" for k, v in (delivery.get("headers") or {}).items()),
        "delivery.body_template": text(delivery.get("body_template")),
        "delivery.mask_fields": ", ".join(delivery.get("mask_fields") or []),
        "delivery.auth.type": text(auth.get("type")),
        "delivery.auth.username": text(auth.get("username")),
        "delivery.auth.has_secret": bool(auth.get("password") or auth.get("token")),
        "delivery.to": ", ".join(delivery.get("to") or []),
    }
    for cap in ("hourly", "daily", "weekly", "monthly"):
        values[f"caps.{cap}"] = text((e.get("caps") or {}).get(cap))
    criteria = list(e.get("criteria") or [])
    for row, criterion in enumerate(criteria):
        value = criterion.get("value")
        values[f"criteria.{row}.field"] = text(criterion.get("field"))
        values[f"criteria.{row}.op"] = text(criterion.get("op"))
        values[f"criteria.{row}.value"] = ", ".join(map(str, value)) if isinstance(value, list) else text(value)
        values[f"criteria.{row}.min"] = text(criterion.get("min"))
        values[f"criteria.{row}.max"] = text(criterion.get("max"))
    values["criteria_rows"] = list(range(len(criteria) + BLANK_CRITERIA_ROWS))
    return values


def typed_form_values(kind: EntryKind, form_data: Any) -> dict[str, Any]:
    """What was typed, to show the form again after an error (secrets left out)."""
    form = FormLike(form_data)
    values: dict[str, Any] = {k: form.raw(k) for k in ENTRY_FORM_FIELDS[kind] if "." not in k or kind == "account"}
    if kind == "account":
        for name in ("active", "require_order"):
            values[name] = form.checked(name)
        values["schedule.days"] = form.many("schedule.days")
        values["delivery.auth.password"] = ""
        values["delivery.auth.token"] = ""
        rows = criteria_rows(form)
        for row in rows:
            for part in CRITERION_PARTS:
                values[f"criteria.{row}.{part}"] = form.raw(f"criteria.{row}.{part}")
        values["criteria_rows"] = rows
    if kind == "order":
        values["auto_charge"] = form.checked("auto_charge")
    return values


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A JSON value as {"a.b.0": leaf}, for an entry's changes in the audit."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list | tuple) and value and any(isinstance(v, dict) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flat(item, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


SECRET_PATHS = re.compile(r"(^|\.)(auth\.(password|token)|headers\.[^.]+)$")


def entry_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, list[Any]]:
    """What an entry edit changed, as path -> [before, after]; secret values (auth, every header,
    the secret parts of the URL and body template) masked, so the audit never holds a buyer's
    credentials — a changed secret shows as a change from the mask to the mask."""
    old, new = flat(before or {}), flat(after)
    shown_old, shown_new = flat(mask_account(before or {})), flat(mask_account(after))
    changes: dict[str, list[Any]] = {}
    for path in sorted(set(old) | set(new)):
        if old.get(path) != new.get(path):
            pair = [shown_old.get(path), shown_new.get(path)]
            if SECRET_PATHS.search(path):
                pair = [SECRET_MASK if v is not None else None for v in pair]
            changes[path] = pair
    return changes


# --- Processes: the catalog version each has loaded ------------------------------------------------

# A process that has not reported for this long is shown as stale (it reports every 5 s: six
# missed beats, the container health check's own limit).
PROCESS_STALE_SECONDS = 30.0


def process_state(catalog_version: int, current_version: int, seen_seconds_ago: float) -> str:
    """How a process stands: `stale` (stopped reporting: dead, hung or cut off), `behind` (alive
    with an older catalog than the current one), or `current`."""
    if seen_seconds_ago > PROCESS_STALE_SECONDS:
        return "stale"
    if catalog_version < current_version:
        return "behind"
    return "current"
