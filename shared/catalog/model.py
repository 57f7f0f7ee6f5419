"""The catalog schema: lead types, sources, clients, groups, delivery accounts, orders and the
Client Options (../shared/seeds/client-settings-options.txt) with their per-client overrides.

Field-level rules live on the models; rules that span entities (references, duplicate ids, a
criterion naming a field its lead type lacks) live in `cross_check`, which returns every problem
with its location instead of stopping at the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
Percent = Annotated[Decimal, Field(ge=0, le=100, max_digits=5, decimal_places=2)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- Client Options ------------------------------------------------------------------------------


class ForceIdMapping(StrEnum):
    """Which client field a lead's force id is matched against (Delivery Force ID Mapping)."""

    client_id = "client_id"
    external_ref = "external_ref"
    email = "email"
    name = "name"


class Options(Strict):
    """Global Client Options. Groups and clients may override where noted."""

    # Default for groups that do not set their own apply_groups_as_criteria.
    apply_groups_as_criteria: bool = True
    allow_confirm_price: bool = False  # per-client override
    disable_portal_for_inactive_clients: bool = True
    # Days an emailed portal link keeps working; 0 means links never expire.
    expire_portal_email_link_days: int = Field(7, ge=0, le=3650)
    delivery_force_id_mapping: ForceIdMapping = ForceIdMapping.client_id
    route_duplicate_leads: bool = False  # per-client override
    default_return_pct_delivery_accounts: Percent = Decimal("10")  # per-client override
    default_return_pct_orders: Percent = Decimal("10")  # per-client override
    # The portal's Files tab (attachments on leads); per-client override.
    portal_file_attachments: bool = True


class ClientOptionOverrides(Strict):
    allow_confirm_price: bool | None = None
    route_duplicate_leads: bool | None = None
    return_pct_delivery_accounts: Percent | None = None
    return_pct_orders: Percent | None = None
    portal_file_attachments: bool | None = None


@dataclass(frozen=True)
class ClientOptions:
    """The Client Options as they apply to one client (`Catalog.client_options`): the client's
    override where it has one, else the global option."""

    allow_confirm_price: bool
    route_duplicate_leads: bool
    return_pct_delivery_accounts: Decimal
    return_pct_orders: Decimal
    disable_portal_for_inactive_clients: bool
    expire_portal_email_link_days: int
    portal_file_attachments: bool

    @classmethod
    def resolve(cls, options: Options, own: ClientOptionOverrides) -> ClientOptions:
        def pick(override: Any, default: Any) -> Any:
            return default if override is None else override

        return cls(
            allow_confirm_price=pick(own.allow_confirm_price, options.allow_confirm_price),
            route_duplicate_leads=pick(own.route_duplicate_leads, options.route_duplicate_leads),
            return_pct_delivery_accounts=pick(
                own.return_pct_delivery_accounts, options.default_return_pct_delivery_accounts
            ),
            return_pct_orders=pick(own.return_pct_orders, options.default_return_pct_orders),
            disable_portal_for_inactive_clients=options.disable_portal_for_inactive_clients,
            expire_portal_email_link_days=options.expire_portal_email_link_days,
            portal_file_attachments=pick(own.portal_file_attachments, options.portal_file_attachments),
        )


# --- Lead types and sources ----------------------------------------------------------------------


class FieldType(StrEnum):
    text = "text"
    email = "email"
    phone = "phone"
    us_state = "us_state"
    zip = "zip"
    number = "number"
    money = "money"
    date = "date"
    choice = "choice"


class LeadField(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
    type: FieldType = FieldType.text
    required: bool = False
    choices: tuple[str, ...] = ()
    max_length: int = Field(500, ge=1, le=100_000)
    # Client Portal display: the label shown beside the value (default: the name, capitalised,
    # underscores as spaces) and whether the lead list shows the field as a column.
    label: str | None = Field(None, min_length=1, max_length=100)
    list_column: bool = False

    @property
    def display_label(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    @model_validator(mode="after")
    def _choices_only_for_choice(self) -> LeadField:
        if self.type is FieldType.choice and not self.choices:
            raise ValueError("a choice field needs a non-empty 'choices' list")
        if self.type is not FieldType.choice and self.choices:
            raise ValueError("'choices' is only allowed on a choice field")
        return self


class LeadContact(Strict):
    """Which fields of a lead type are the person behind the lead: the portal's "email the
    contact" goes to `email`; `name` (one or more fields, joined with spaces) names the lead.
    Unset: the first email-typed field, the first phone-typed field, and first_name + last_name
    (or a field called name)."""

    email: str | None = None
    phone: str | None = None
    name: tuple[str, ...] = ()


class LeadType(Strict):
    id: Id
    name: str
    fields: tuple[LeadField, ...] = Field(min_length=1)
    duplicate_fields: tuple[str, ...] = ()
    duplicate_window_days: int = Field(30, ge=0, le=3650)
    return_reasons: tuple[str, ...] = ()
    return_window_days: int = Field(30, ge=0, le=3650)
    max_sales: int = Field(1, ge=1, le=100)
    contact: LeadContact = LeadContact()

    @cached_property
    def field_names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    @cached_property
    def fields_by_name(self) -> dict[str, LeadField]:
        return {f.name: f for f in self.fields}

    def _first_of_type(self, ftype: FieldType) -> str | None:
        return next((f.name for f in self.fields if f.type is ftype), None)

    @cached_property
    def contact_email_field(self) -> str | None:
        return self.contact.email or self._first_of_type(FieldType.email)

    @cached_property
    def contact_phone_field(self) -> str | None:
        return self.contact.phone or self._first_of_type(FieldType.phone)

    @cached_property
    def contact_name_fields(self) -> tuple[str, ...]:
        if self.contact.name:
            return self.contact.name
        names = tuple(n for n in ("first_name", "last_name") if n in self.field_names)
        return names or (("name",) if "name" in self.field_names else ())

    @cached_property
    def list_columns(self) -> tuple[str, ...]:
        """The fields the portal's lead list shows: those marked `list_column`, else the
        contact's name, phone and email, else the first three fields."""
        marked = tuple(f.name for f in self.fields if f.list_column)
        if marked:
            return marked
        contact = (*self.contact_name_fields, self.contact_phone_field, self.contact_email_field)
        chosen = tuple(dict.fromkeys(n for n in contact if n))
        return chosen or tuple(f.name for f in self.fields[:3])


class LeadSource(Strict):
    id: Id
    name: str
    active: bool = True
    max_sales: int | None = Field(None, ge=1, le=100)


# --- Clients and groups --------------------------------------------------------------------------


class Client(Strict):
    id: Id
    name: str
    active: bool = True
    time_zone: str = "UTC"
    email: str | None = None
    phone: str | None = None
    contact_name: str | None = None
    external_ref: str | None = None
    options: ClientOptionOverrides = ClientOptionOverrides()
    # Returns from this client are approved at once when within the caps (trusted buyers).
    auto_approve_returns: bool = False

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class Distribution(StrEnum):
    priority = "priority"
    round_robin = "round_robin"
    weighted = "weighted"
    highest_price = "highest_price"


class ClientGroup(Strict):
    id: Id
    name: str
    # None: use the global option. True: at most one client of the group gets a lead.
    apply_groups_as_criteria: bool | None = None
    distribution: Distribution = Distribution.priority
    clients: tuple[Id, ...] = Field(min_length=1)


# --- Delivery accounts ---------------------------------------------------------------------------


class Criterion(Strict):
    field: str
    op: Literal["equals", "not_equals", "in", "not_in", "regex", "range", "zip_list"]
    value: Any = None
    min: Decimal | None = None
    max: Decimal | None = None

    @model_validator(mode="after")
    def _shape(self) -> Criterion:
        if self.op in ("in", "not_in", "zip_list"):
            if not isinstance(self.value, list | tuple) or not self.value:
                raise ValueError(f"'{self.op}' needs a non-empty list in 'value'")
        elif self.op == "regex":
            if not isinstance(self.value, str):
                raise ValueError("'regex' needs a pattern string in 'value'")
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        elif self.op == "range":
            if self.min is None and self.max is None:
                raise ValueError("'range' needs 'min', 'max' or both")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError("'range' has min greater than max")
        elif self.value is None:
            raise ValueError(f"'{self.op}' needs a 'value'")
        return self


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Schedule(Strict):
    """When an account takes leads, in its client's time zone. Default: always."""

    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    start: time = time(0, 0)
    end: time = time(23, 59, 59)


class Caps(Strict):
    hourly: int | None = Field(None, ge=0)
    daily: int | None = Field(None, ge=0)
    weekly: int | None = Field(None, ge=0)
    monthly: int | None = Field(None, ge=0)


class HttpAuth(Strict):
    type: Literal["basic", "bearer"]
    username: str | None = None
    password: str | None = None
    token: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> HttpAuth:
        if self.type == "basic" and (self.username is None or self.password is None):
            raise ValueError("basic auth needs 'username' and 'password'")
        if self.type == "bearer" and not self.token:
            raise ValueError("bearer auth needs 'token'")
        return self


class SuccessRule(Strict):
    status_codes: tuple[int, ...] = (200, 201, 202)
    contains: str | None = None
    regex: str | None = None
    json_path: str | None = None
    json_equals: Any = None


class PriceRule(Strict):
    json_path: str | None = None
    regex: str | None = None


class RetryPolicy(Strict):
    count: int = Field(3, ge=0, le=20)
    delay_seconds: int = Field(5, ge=1, le=3600)


# A new format: add it here, then the match statements in services/delivery/posting.py fail type
# checking until the format has its body, its template escaping and its Content-Type.
DeliveryFormat = Literal["json", "form", "xml"]


class HttpDelivery(Strict):
    method: Literal["http"] = "http"
    url: Annotated[str, Field(pattern=r"^https?://")]
    http_method: Literal["POST", "GET", "PUT"] = "POST"
    format: DeliveryFormat = "json"
    # buyer field name -> lead field name; empty means every lead field under its own name.
    field_map: dict[str, str] = {}
    body_template: str | None = None
    headers: dict[str, str] = {}
    auth: HttpAuth | None = None
    timeout_seconds: float = Field(30, gt=0, le=300)
    success: SuccessRule = SuccessRule()
    price: PriceRule | None = None
    rejection_reason: PriceRule | None = None
    retry: RetryPolicy = RetryPolicy()
    pause_after_failures: int = Field(10, ge=1, le=1000)
    # Posts to this account in flight at once in one delivery process; None: a quarter of the
    # prefetch. Extra leads for a busy account wait in the broker, not in a consumer slot.
    max_in_flight: int | None = Field(None, ge=1, le=1000)
    # Body or query fields whose values the delivery log masks, on top of the built-in names
    # (password, token, secret, api key...) and every auth value.
    mask_fields: tuple[str, ...] = ()


class EmailDelivery(Strict):
    method: Literal["email"]
    to: tuple[str, ...] = Field(min_length=1)


class DeliveryAccount(Strict):
    id: Id
    client: Id
    lead_type: Id
    active: bool = True
    price: Money
    priority: int = 0  # 0 is highest; negatives allowed
    weight: int = Field(1, ge=0, le=10_000)
    criteria: tuple[Criterion, ...] = ()
    schedule: Schedule = Schedule()
    caps: Caps = Caps()
    require_order: bool = False
    max_return_pct: Percent | None = None  # None: client's, then the global default
    delivery: Annotated[HttpDelivery | EmailDelivery, Field(discriminator="method")]


# The admin console shows an account's credentials as this mask (services/admin/masking.py) and
# puts the stored value back when the mask comes back to it; anywhere else the mask is not a
# credential, so `leadwire catalog apply` refuses a file holding it (a console download applied
# from the shell).
CONSOLE_MASK = "********"


def console_masks(catalog: Catalog) -> list[str]:
    """Where a catalog's delivery credentials hold the console's mask: `delivery_accounts[i]
    (id).delivery.<field>`; empty when none do."""
    found: list[str] = []
    for i, account in enumerate(catalog.delivery_accounts):
        delivery = account.delivery
        if not isinstance(delivery, HttpDelivery):
            continue
        texts = {"url": delivery.url, "body_template": delivery.body_template or ""}
        texts |= {f"headers.{k}": v for k, v in delivery.headers.items()}
        if delivery.auth is not None:
            texts |= {"auth.password": delivery.auth.password or "", "auth.token": delivery.auth.token or ""}
        found += [
            f"delivery_accounts[{i}] ({account.id}).delivery.{name}"
            for name, text in texts.items()
            if CONSOLE_MASK in text
        ]
    return found


# --- Orders --------------------------------------------------------------------------------------


class Order(Strict):
    id: Id
    client: Id
    type: Literal["lead_quantity", "dollar_amount"]
    total: Money
    start_date: date
    end_date: date | None = None
    status: Literal["open", "paused", "closed"] = "open"
    renewal: Literal["on_fill", "close_at_end", "none"] = "none"
    auto_charge: bool = False
    accounts: Literal["all"] | tuple[Id, ...] = "all"
    max_return_pct: Percent | None = None

    @model_validator(mode="after")
    def _dates(self) -> Order:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


# --- The whole catalog ---------------------------------------------------------------------------


class Catalog(Strict):
    options: Options = Options()
    lead_types: tuple[LeadType, ...] = ()
    sources: tuple[LeadSource, ...] = ()
    clients: tuple[Client, ...] = ()
    groups: tuple[ClientGroup, ...] = ()
    delivery_accounts: tuple[DeliveryAccount, ...] = ()
    orders: tuple[Order, ...] = ()

    # Indexes for the services' hot paths; built once per loaded catalog.
    @cached_property
    def lead_types_by_id(self) -> dict[str, LeadType]:
        return {t.id: t for t in self.lead_types}

    @cached_property
    def sources_by_id(self) -> dict[str, LeadSource]:
        return {s.id: s for s in self.sources}

    @cached_property
    def clients_by_id(self) -> dict[str, Client]:
        return {c.id: c for c in self.clients}

    @cached_property
    def accounts_by_id(self) -> dict[str, DeliveryAccount]:
        return {a.id: a for a in self.delivery_accounts}

    @cached_property
    def accounts_by_lead_type(self) -> dict[str, tuple[DeliveryAccount, ...]]:
        by_type: dict[str, list[DeliveryAccount]] = {}
        for account in self.delivery_accounts:
            by_type.setdefault(account.lead_type, []).append(account)
        return {k: tuple(v) for k, v in by_type.items()}

    @cached_property
    def _options_by_client(self) -> dict[str, ClientOptions]:
        return {c.id: ClientOptions.resolve(self.options, c.options) for c in self.clients}

    def client_options(self, client_id: str) -> ClientOptions:
        """The Client Options as they apply to one client (a client not in the catalog: the global
        ones)."""
        found = self._options_by_client.get(client_id)
        return found if found is not None else ClientOptions.resolve(self.options, ClientOptionOverrides())


Location = tuple[str | int, ...]


def cross_check(catalog: Catalog) -> list[tuple[Location, str]]:
    """Every rule that spans entities; returns (location, message) pairs, empty when valid."""
    errors: list[tuple[Location, str]] = []

    def unique(section: str, items: tuple[Any, ...]) -> set[str]:
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.id in seen:
                errors.append(((section, i, "id"), f"duplicate id {item.id!r}"))
            seen.add(item.id)
        return seen

    lead_types = {t.id: t for t in catalog.lead_types}
    unique("lead_types", catalog.lead_types)
    unique("sources", catalog.sources)
    clients = unique("clients", catalog.clients)
    unique("groups", catalog.groups)
    accounts = unique("delivery_accounts", catalog.delivery_accounts)
    unique("orders", catalog.orders)

    for i, lt in enumerate(catalog.lead_types):
        names = [f.name for f in lt.fields]
        for j, name in enumerate(names):
            if name in names[:j]:
                errors.append((("lead_types", i, "fields", j, "name"), f"duplicate field {name!r}"))
        for j, name in enumerate(lt.duplicate_fields):
            if name not in lt.field_names:
                errors.append((("lead_types", i, "duplicate_fields", j), f"no field {name!r} in lead type {lt.id!r}"))
        contact: list[tuple[Location, str | None]] = [(("email",), lt.contact.email), (("phone",), lt.contact.phone)]
        contact += [(("name", j), name) for j, name in enumerate(lt.contact.name)]
        for where, field in contact:
            if field is not None and field not in lt.field_names:
                errors.append((("lead_types", i, "contact", *where), f"no field {field!r} in lead type {lt.id!r}"))

    grouped: dict[str, str] = {}
    for i, group in enumerate(catalog.groups):
        for j, client_id in enumerate(group.clients):
            if client_id not in clients:
                errors.append((("groups", i, "clients", j), f"unknown client {client_id!r}"))
            elif client_id in grouped:
                errors.append(
                    (("groups", i, "clients", j), f"client {client_id!r} is already in group {grouped[client_id]!r}")
                )
            else:
                grouped[client_id] = group.id

    force_field = catalog.options.delivery_force_id_mapping
    if force_field is not ForceIdMapping.client_id:
        seen_values: dict[str, str] = {}
        for i, client in enumerate(catalog.clients):
            value = getattr(client, force_field.value)
            if value is None:
                continue
            if value in seen_values:
                errors.append(
                    (
                        ("clients", i, force_field.value),
                        f"{force_field.value} {value!r} is also used by client {seen_values[value]!r};"
                        " force ids must name one client",
                    )
                )
            seen_values[value] = client.id

    for i, account in enumerate(catalog.delivery_accounts):
        if account.client not in clients:
            errors.append((("delivery_accounts", i, "client"), f"unknown client {account.client!r}"))
        lead_type = lead_types.get(account.lead_type)
        if lead_type is None:
            errors.append((("delivery_accounts", i, "lead_type"), f"unknown lead type {account.lead_type!r}"))
            continue
        for j, criterion in enumerate(account.criteria):
            if criterion.field not in lead_type.field_names:
                errors.append(
                    (
                        ("delivery_accounts", i, "criteria", j, "field"),
                        f"no field {criterion.field!r} in lead type {lead_type.id!r}",
                    )
                )
        delivery = account.delivery
        if isinstance(delivery, HttpDelivery):
            for buyer_field, lead_field in delivery.field_map.items():
                if lead_field not in lead_type.field_names and lead_field not in ("lead_id", "price"):
                    errors.append(
                        (
                            ("delivery_accounts", i, "delivery", "field_map", buyer_field),
                            f"no field {lead_field!r} in lead type {lead_type.id!r}",
                        )
                    )

    account_clients = {a.id: a.client for a in catalog.delivery_accounts}
    for i, order in enumerate(catalog.orders):
        if order.client not in clients:
            errors.append((("orders", i, "client"), f"unknown client {order.client!r}"))
        if order.accounts != "all":
            for j, account_id in enumerate(order.accounts):
                if account_id not in accounts:
                    errors.append((("orders", i, "accounts", j), f"unknown delivery account {account_id!r}"))
                elif account_clients[account_id] != order.client:
                    errors.append(
                        (
                            ("orders", i, "accounts", j),
                            f"delivery account {account_id!r} belongs to client "
                            f"{account_clients[account_id]!r}, not {order.client!r}",
                        )
                    )
    return errors
