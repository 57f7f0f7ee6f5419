"""The Client Portal's decisions, with no I/O: who sees which lead, what a lead list request asks
for (and what is wrong with it), days in the client's time zone, chart geometry, CSV cells that a
spreadsheet will not run, the sentences a sign-in failure shows, and the checks on the email forms.

Everything here is table-tested (tests/unit/test_portal_web_rules.py); the routes only call it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from services.returns.rules import account_pct, allowed_returns
from services.router.rules import normalise_field
from shared.catalog.model import Catalog, FieldType, LeadType
from shared.contracts.portal_auth import ErrorCode, Identity, LinkGrant, Scope

PAGE_SIZE = 50
# The count above the list stops here: counting a whole year of a big client on every page load
# would cost more than the page itself.
COUNT_CAP = 10_000
DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 366
EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2100, 12, 31)
MAX_SEARCH_LENGTH = 200
RECENT_LEADS = 10
UPCOMING_APPOINTMENTS = 10
# Emails a portal user may send about leads (contact + forward) per hour: enough for real work,
# too few to turn the portal into a spam relay.
EMAILS_PER_HOUR = 30
MAX_FORWARD_RECIPIENTS = 5
MAX_SUBJECT = 200
MAX_MESSAGE = 5000


# --- Who sees what -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """Whose eyes a query answers to: one client, and within it the users whose leads may be
    shown (None: every lead of the client). Built from a session's Identity, or from an emailed
    link's grant (one lead, the client's view)."""

    client_id: str
    scope: Scope
    user_ids: tuple[uuid.UUID, ...] | None
    user_id: uuid.UUID | None = None

    @classmethod
    def of(cls, identity: Identity) -> Viewer:
        if identity.scope == "all":
            users: tuple[uuid.UUID, ...] | None = None
        else:
            users = tuple(identity.visible_user_ids or (identity.user_id,))
        return cls(identity.client_id, identity.scope, users, identity.user_id)

    @classmethod
    def of_link(cls, grant: LinkGrant) -> Viewer:
        return cls(grant.client_id, "all", None, None)

    def sees(self, assigned_user_id: uuid.UUID | None) -> bool:
        """The visibility rule the queries apply in SQL: scope `all` sees every lead of the
        client, assigned or not; `own`/`downline` see the leads assigned to one of their users;
        a lead nobody was assigned is visible to admins only."""
        if self.user_ids is None:
            return True
        return assigned_user_id is not None and assigned_user_id in self.user_ids


# --- Settings and users (H1–H8) --------------------------------------------------------------------

MAX_NAME = 200
MAX_PHONE = 50
PASSWORD_HINT = "At least 10 characters, not your email address. A passphrase of a few words is easy to remember."


def sentence(text: str) -> str:
    """A reply's message ("the current password is wrong") as a sentence for the page."""
    text = text.strip()
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass(frozen=True)
class ContactDetails:
    name: str
    phone: str


def check_contact_details(name: str, phone: str) -> tuple[ContactDetails | None, dict[str, str]]:
    errors: dict[str, str] = {}
    name = " ".join(name.split())
    phone = " ".join(phone.split())
    if len(name) > MAX_NAME:
        errors["name"] = f"Keep the name under {MAX_NAME} characters."
    if len(phone) > MAX_PHONE:
        errors["phone"] = f"Keep the phone number under {MAX_PHONE} characters."
    elif phone and not re.fullmatch(r"[0-9+()./ x-]+", phone):
        errors["phone"] = "A phone number has digits, spaces and + ( ) - . / x only."
    return (ContactDetails(name, phone) if not errors else None), errors


def check_new_password(current: str, new: str, confirm: str) -> dict[str, str]:
    """The change-password form's own checks (portal_auth checks the policy itself)."""
    errors: dict[str, str] = {}
    if not current:
        errors["current"] = "Enter your current password."
    elif len(current) > 1024:
        errors["current"] = "That password is too long."
    if not new:
        errors["password"] = "Choose a new password."
    elif len(new) > 1024:
        errors["password"] = "Use at most 1024 characters."
    elif new != confirm:
        errors["confirm"] = "The two passwords are not the same."
    return errors


@dataclass(frozen=True)
class UserForm:
    """The "+New" / edit user form, checked. `email` is only used when creating."""

    name: str
    email: str
    phone: str
    is_admin: bool
    view_downline: bool
    enabled: bool
    notify_new_leads: bool
    parent_user_id: uuid.UUID | None


USER_FLAGS = ("is_admin", "view_downline", "enabled", "notify_new_leads")


def check_user_form(
    form: Mapping[str, str], *, creating: bool, parents: Iterable[uuid.UUID]
) -> tuple[UserForm | None, dict[str, str]]:
    """A user form as posted (checkboxes are "on" or absent). `parents`: the ids the parent
    picker offered (the client's users); anything else is refused here, and portal_auth checks
    again (same client, no cycles)."""
    errors: dict[str, str] = {}
    details, found = check_contact_details(form.get("name", ""), form.get("phone", ""))
    errors.update(found)
    email = form.get("email", "").strip()
    if creating:
        if not email:
            errors["email"] = "Enter the new user's email address."
        elif not valid_address(email):
            errors["email"] = "Enter a valid email address, like name@example.com."
    parent_text = form.get("parent", "").strip()
    parent: uuid.UUID | None = None
    if parent_text:
        parent = parse_uuid(parent_text)
        if parent is None or parent not in set(parents):
            errors["parent"] = "Choose the parent from the list."
    if errors or details is None:
        return None, errors
    flags = {name: form.get(name) == "on" for name in USER_FLAGS}
    return UserForm(details.name, email, details.phone, parent_user_id=parent, **flags), {}


# portal_auth's refusals of create_user / update_user, as the page says them (field, sentence).
USER_REFUSALS: dict[str, tuple[str, str]] = {
    "conflict": ("email", "This email address already has a portal login (here or with another company)."),
    "not_found": ("form", "There is no such user in your portal."),
    "weak_password": ("form", "That password is too weak."),
}


def user_refusal(error: str, message: str) -> tuple[str, str]:
    """(field, sentence) for a refused user command."""
    if error in USER_REFUSALS:
        return USER_REFUSALS[error]
    if error == "forbidden" and "admin user" in message and "at least one" in message:
        return "form", "Your company needs at least one enabled admin: this change would leave it without one."
    if error == "forbidden":
        return "form", "Only an admin may do this."
    if error == "bad_request" and ("parent" in message or "below themselves" in message):
        return "parent", sentence(message)
    if error in ("unavailable", "deadline_exceeded"):
        return "form", "Nothing was changed: the sign-in service is not answering. Please try again in a moment."
    return "form", sentence(message) or "That change was refused."


def may_assign(viewer: Viewer) -> bool:
    """Who assigns leads (H5): admins (any lead, any enabled user) and View Downline users (the
    leads they see, to their downline); a user of scope `own` does not."""
    return viewer.scope in ("all", "downline")


# --- Appointments (D7, E1–E7) ------------------------------------------------------------------------

MAX_APPOINTMENT_TITLE = 200
MAX_APPOINTMENT_NOTES = 4000
# The reminder choices of the editor: minutes before the start (notifier takes 0 to 30 days).
REMINDER_CHOICES: tuple[tuple[int, str], ...] = (
    (0, "At the start time"),
    (15, "15 minutes before"),
    (30, "30 minutes before"),
    (60, "1 hour before"),
    (120, "2 hours before"),
    (1440, "1 day before"),
)
APPOINTMENT_VIEWS = ("upcoming", "past", "cancelled")
APPOINTMENTS_SHOWN = 200


@dataclass(frozen=True)
class AppointmentForm:
    title: str
    starts_at: datetime  # UTC
    reminder_minutes: int
    notes: str
    assignee: uuid.UUID


def local_instant(day: date, clock: time, zone: str) -> datetime | None:
    """The UTC instant of a wall-clock time in the zone; None for a time the zone skips (the hour
    lost when clocks go forward). A repeated hour (clocks going back) is its first occurrence."""
    tz = ZoneInfo(zone)
    local = datetime.combine(day, clock, tzinfo=tz)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None
    return instant


def parse_clock(text: str) -> time | None:
    if not re.fullmatch(r"\d{2}:\d{2}", text):
        return None
    try:
        return time.fromisoformat(text)
    except ValueError:
        return None


def check_appointment_form(
    form: Mapping[str, str],
    *,
    zone: str,
    now: datetime,
    assignees: Iterable[uuid.UUID],
    current_start: datetime | None = None,
) -> tuple[AppointmentForm | None, dict[str, str]]:
    """The appointment editor as posted: title, date and time (wall clock in the client's zone),
    reminder, notes, assignee (one of `assignees`: the users the creator may assign). A new time
    must be in the future; an edit may keep the time it has (`current_start`)."""
    errors: dict[str, str] = {}
    title = " ".join(form.get("title", "").split())
    if not title:
        errors["title"] = "Enter a title."
    elif len(title) > MAX_APPOINTMENT_TITLE:
        errors["title"] = f"Keep the title under {MAX_APPOINTMENT_TITLE} characters."
    day = parse_day(form.get("date", "").strip())
    clock = parse_clock(form.get("time", "").strip())
    starts_at: datetime | None = None
    if day is None:
        errors["date"] = "Enter the date as YYYY-MM-DD."
    if clock is None:
        errors["time"] = "Enter the time as HH:MM (24-hour clock)."
    if day is not None and clock is not None:
        starts_at = local_instant(day, clock, zone)
        if starts_at is None:
            errors["time"] = "That time does not exist on that day (the clocks go forward). Choose another."
        elif starts_at != current_start and starts_at <= now:
            errors["date"] = "Choose a time in the future."
    reminder_text = form.get("reminder", "").strip()
    reminder = int(reminder_text) if reminder_text.isdigit() and len(reminder_text) < 6 else None
    if reminder not in {minutes for minutes, _ in REMINDER_CHOICES}:
        errors["reminder"] = "Choose when to be reminded from the list."
    notes = form.get("notes", "").strip()
    if len(notes) > MAX_APPOINTMENT_NOTES:
        errors["notes"] = f"Keep the notes under {MAX_APPOINTMENT_NOTES} characters."
    assignee = parse_uuid(form.get("assignee", "").strip())
    if assignee is None or assignee not in set(assignees):
        errors["assignee"] = "Choose who the appointment is for from the list."
    if errors or starts_at is None or reminder is None or assignee is None:
        return None, errors
    return AppointmentForm(title, starts_at, reminder, notes, assignee), {}


def appointment_refusal(message: str) -> str:
    """notifier's reason for refusing an appointment command, as the page says it."""
    if "disabled" in message:
        return "The appointment was refused: the user it is for is disabled."
    if "not a user of client" in message:
        return "The appointment was refused: the user it is for is not one of your company's users."
    if "was not delivered" in message:
        return "The appointment was refused: this lead is not one of your company's leads."
    return "The appointment was refused: " + (sentence(message) or "no reason was given.")


@dataclass(frozen=True)
class BulkOutcome:
    """What "Assign selected" did: counts, or why it did nothing; carried back to the list in its
    query (`bulk_assigned`, `bulk_skipped`, `bulk_problem`)."""

    assigned: int = 0
    skipped: int = 0
    problem: str = ""  # "choose": no lead ticked; "assignee": no user chosen

    def add(self, what: Literal["assigned", "skipped"]) -> BulkOutcome:
        if what == "assigned":
            return BulkOutcome(self.assigned + 1, self.skipped, self.problem)
        return BulkOutcome(self.assigned, self.skipped + 1, self.problem)

    def params(self) -> dict[str, str]:
        if self.problem:
            return {"bulk_problem": self.problem}
        return {"bulk_assigned": str(self.assigned), "bulk_skipped": str(self.skipped)}


def bulk_notice(params: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(notice, error) for the lead list after "Assign selected"."""
    problem = params.get("bulk_problem", "")
    if problem == "choose":
        return None, "Tick the leads to assign first."
    if problem == "assignee":
        return None, "Choose who gets the selected leads."
    assigned, skipped = params.get("bulk_assigned", ""), params.get("bulk_skipped", "")
    if not (assigned.isdigit() and len(assigned) < 4):
        return None, None
    notice = f"{assigned} lead{'' if assigned == '1' else 's'} assigned."
    if skipped.isdigit() and len(skipped) < 4 and skipped != "0":
        notice += f" {skipped} could not be (no longer yours to assign, or the user was refused)."
    return notice, None


# --- Days in the client's time zone --------------------------------------------------------------


def local_day(instant: datetime, zone: str) -> date:
    return instant.astimezone(ZoneInfo(zone)).date()


def day_start(day: date, zone: str) -> datetime:
    """The UTC instant a local day begins (DST-aware: a 23- or 25-hour day is still one day)."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)


# portal_lead_counts' buckets (migration 0630): 15 minutes of UTC, aligned to the epoch.
COUNT_BUCKET_SECONDS = 15 * 60


def on_count_grid(instant: datetime) -> bool:
    """Whether a day boundary falls on a bucket boundary (true for every zone's offset in use
    today), so the buckets sum to that day's count exactly."""
    return int(instant.timestamp()) % COUNT_BUCKET_SECONDS == 0 and instant.microsecond == 0


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def days_in_month(first: date) -> int:
    return (add_months(first, 1) - first).days


def format_local(instant: datetime | None, zone: str) -> str:
    if instant is None:
        return ""
    return instant.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


# --- The lead list's request ----------------------------------------------------------------------

SortKind = Literal["delivered", "price", "type", "field"]
Direction = Literal["asc", "desc"]
NUMERIC_TYPES = frozenset({FieldType.number, FieldType.money})


@dataclass(frozen=True)
class Sort:
    kind: SortKind = "delivered"
    field: str | None = None  # the lead field, for kind "field"
    numeric: bool = False  # sort a number/money field by value, not as text
    direction: Direction = "desc"
    column: str | None = None  # the field's sort-key column of portal_leads (sort_columns)

    @property
    def param(self) -> str:
        return f"f.{self.field}" if self.kind == "field" else self.kind


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: the last row's sort value, delivery time and delivery id."""

    key: Any
    completed_at: datetime
    delivery_id: uuid.UUID


@dataclass(frozen=True)
class LeadFilter:
    first_day: date
    last_day: date  # inclusive
    lead_type: str | None = None
    search: str = ""  # as typed (trimmed); `search_pattern` is what the query uses
    sort: Sort = Sort()
    after: Cursor | None = None
    # Whose leads (H5): "" any the viewer sees, "nobody" (unassigned), or one user's id.
    assigned: str = ""

    def bounds(self, zone: str) -> tuple[datetime, datetime]:
        """[start, end) in UTC of the local days first_day..last_day."""
        return day_start(self.first_day, zone), day_start(self.last_day + timedelta(days=1), zone)

    @property
    def search_pattern(self) -> str | None:
        return search_pattern(self.search) if self.search else None

    def params(self, **changes: Any) -> dict[str, str]:
        """This filter as query parameters (for links: sort headers, next page, export)."""
        values: dict[str, Any] = {
            "from": self.first_day.isoformat(),
            "to": self.last_day.isoformat(),
            "type": self.lead_type or "",
            "q": self.search,
            "sort": self.sort.param,
            "dir": self.sort.direction,
            "assigned": self.assigned,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in ("", None)}


@dataclass
class FilterResult:
    filter: LeadFilter | None
    errors: dict[str, str] = field(default_factory=dict)


def parse_day(text: str) -> date | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return day if EARLIEST_DAY <= day <= LATEST_DAY else None


def default_range(today: date) -> tuple[date, date]:
    return today - timedelta(days=DEFAULT_RANGE_DAYS - 1), today


def sortable_fields(lead_types: Iterable[LeadType]) -> dict[str, bool]:
    """Every field name of these lead types -> whether it sorts as a number."""
    fields: dict[str, bool] = {}
    for lead_type in lead_types:
        for f in lead_type.fields:
            fields.setdefault(f.name, f.type in NUMERIC_TYPES)
    return fields


# Sort-key columns of portal_leads (migration 0620): a client's list columns get them in order,
# text fields t1..t5, number and money fields n1..n2. Each is an index on every delivered lead, so
# there are few; a list column beyond them is shown but not sortable.
TEXT_KEYS = ("t1", "t2", "t3", "t4", "t5")
NUMBER_KEYS = ("n1", "n2")


def sort_columns(lead_types: Iterable[LeadType]) -> dict[str, str]:
    """A client's sortable lead fields -> their key column, from all the lead types it buys: its
    list columns (the union, in catalog order, as the list shows them with every type), a field
    numeric when the first type that has it says so. Only these fields sort fast (an index each),
    so only these are sortable: the list offers no other field to sort by."""
    types = list(lead_types)
    numeric = sortable_fields(types)
    free = {True: list(NUMBER_KEYS), False: list(TEXT_KEYS)}
    columns: dict[str, str] = {}
    for name, _label in list_columns(types):
        keys = free[numeric.get(name, False)]
        if keys:
            columns[name] = keys.pop(0)
    return columns


def parse_sort(
    sort: str, direction: str, lead_types: Iterable[LeadType], columns: Mapping[str, str] | None = None
) -> tuple[Sort | None, dict[str, str]]:
    """`columns`: the client's sort_columns (default: those of `lead_types`). A field sorts when it
    is a list column of `lead_types` (the types shown) and has a key column."""
    types = list(lead_types)
    columns = sort_columns(types) if columns is None else columns
    errors: dict[str, str] = {}
    if direction not in ("asc", "desc"):
        errors["dir"] = "The sort direction must be asc or desc."
    chosen: Sort | None = None
    dir_: Direction = "asc" if direction == "asc" else "desc"
    if sort in ("delivered", "price", "type"):
        chosen = Sort(sort, None, False, dir_)  # type: ignore[arg-type]
    elif sort.startswith("f."):
        name = sort[2:]
        offered = {column_name for column_name, _ in list_columns(types)}
        if name in offered and name in columns:
            column = columns[name]
            chosen = Sort("field", name, column in NUMBER_KEYS, dir_, column)
    if chosen is None:
        shown = sort if len(sort) <= 40 else sort[:40] + "…"
        errors["sort"] = f"The list cannot be sorted by “{shown}”."
    return (chosen if not errors else None), errors


def parse_lead_filter(params: Mapping[str, str], *, today: date, lead_types: Mapping[str, LeadType]) -> FilterResult:
    """A lead list request (query parameters as sent) read into a LeadFilter, or every problem
    with it, keyed by the parameter it concerns, in words a buyer understands."""
    errors: dict[str, str] = {}
    first_default, last_default = default_range(today)
    first, last = first_default, last_default
    raw_from = params.get("from", "").strip()
    raw_to = params.get("to", "").strip()
    for key, raw, which in (("from", raw_from, "start"), ("to", raw_to, "end")):
        parsed = parse_day(raw) if raw else None
        if raw and parsed is None:
            errors[key] = f"Enter the {which} date as YYYY-MM-DD (a real date between 2000 and 2100)."
        elif parsed is not None and key == "from":
            first = parsed
        elif parsed is not None:
            last = parsed
    if raw_from and not raw_to and "from" not in errors:
        last = max(first, min(today, first + timedelta(days=MAX_RANGE_DAYS - 1)))
    if raw_to and not raw_from and "to" not in errors:
        first = last - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if not errors:
        if first > last:
            errors["to"] = "The end date is before the start date."
        elif (last - first).days + 1 > MAX_RANGE_DAYS:
            errors["to"] = f"A date range can span at most {MAX_RANGE_DAYS} days."

    lead_type = params.get("type", "").strip() or None
    if lead_type is not None and lead_type not in lead_types:
        errors["type"] = "Choose a lead type from the list."

    search = " ".join(params.get("q", "").split())
    if len(search) > MAX_SEARCH_LENGTH:
        errors["q"] = f"Search for at most {MAX_SEARCH_LENGTH} characters."

    assigned = params.get("assigned", "").strip()
    if assigned and assigned != "nobody" and parse_uuid(assigned) is None:
        errors["assigned"] = "Choose whose leads to show from the list."

    types_for_sort = [lead_types[lead_type]] if lead_type and lead_type in lead_types else list(lead_types.values())
    sort, sort_errors = parse_sort(
        params.get("sort", "delivered"), params.get("dir", "desc"), types_for_sort, sort_columns(lead_types.values())
    )
    errors.update(sort_errors)

    after = None
    if params.get("after"):
        after = decode_cursor(params["after"], sort) if sort is not None else None
        if after is None:
            errors["after"] = "That page link is not valid any more: start again from the first page."
    if errors:
        return FilterResult(None, errors)
    assert sort is not None
    return FilterResult(LeadFilter(first, last, lead_type, search, sort, after, assigned))


# --- Keyset cursors -------------------------------------------------------------------------------


def _key_to_json(key: Any) -> Any:
    if isinstance(key, datetime):
        return key.isoformat()
    if isinstance(key, Decimal):
        return str(key)
    return key


def encode_cursor(sort: Sort, key: Any, completed_at: datetime, delivery_id: uuid.UUID) -> str:
    data = json.dumps([_key_to_json(key), completed_at.isoformat(), str(delivery_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).rstrip(b"=").decode()


def decode_cursor(text: str, sort: Sort) -> Cursor | None:
    """The cursor in a next-page link, typed for this sort; None when it is not one of ours. It
    is not signed: it only says where to continue inside the viewer's own leads."""
    if len(text) > 600:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        key_raw, completed_raw, delivery_raw = raw
        completed_at = datetime.fromisoformat(completed_raw)
        delivery_id = uuid.UUID(delivery_raw)
        if completed_at.tzinfo is None:
            return None
        key: Any
        if sort.kind == "delivered":
            key = datetime.fromisoformat(key_raw)
            if key.tzinfo is None:
                return None
        elif sort.kind == "price" or sort.numeric:
            key = Decimal(str(key_raw))
            if not key.is_finite():
                return None
        else:
            if not isinstance(key_raw, str):
                return None
            key = key_raw
    except (ValueError, TypeError, binascii.Error, InvalidOperation, UnicodeDecodeError):
        return None
    return Cursor(key, completed_at, delivery_id)


# --- Search ---------------------------------------------------------------------------------------

PHONE_LIKE = re.compile(r"^\+?[\d\s().\-]+$")


def search_term(text: str) -> str:
    """What a search looks for in the field values. Phone numbers are stored as the router
    normalises them (10 digits), so a phone number typed any way — "(415) 555-0100",
    "+1 415 555 0100" — is normalised the same way; a partial one ("555-0100") keeps its digits."""
    text = " ".join(text.split())
    if PHONE_LIKE.fullmatch(text) and sum(c.isdigit() for c in text) >= 3:
        try:
            return str(normalise_field(FieldType.phone, text))
        except ValueError:
            return re.sub(r"\D", "", text)
    return text


def search_pattern(text: str) -> str:
    """An ILIKE pattern matching the term anywhere; the term's own % _ and \\ match themselves."""
    term = search_term(text)
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# --- What a lead looks like ----------------------------------------------------------------------


def field_label(lead_type: LeadType | None, name: str) -> str:
    if lead_type is not None and name in lead_type.fields_by_name:
        return lead_type.fields_by_name[name].display_label
    return name.replace("_", " ").capitalize()


def lead_name(lead_type: LeadType | None, fields: Mapping[str, Any]) -> str:
    """The person behind the lead, for titles and lists."""
    names = lead_type.contact_name_fields if lead_type is not None else ("first_name", "last_name")
    name = " ".join(str(fields[n]).strip() for n in names if fields.get(n) not in (None, ""))
    if name:
        return name
    email_field = lead_type.contact_email_field if lead_type is not None else "email"
    return str(fields.get(email_field or "", "") or "") or "(no name)"


def labelled_fields(lead_type: LeadType | None, fields: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(name, label, value) for every field of the lead: the lead type's fields in catalog order,
    then any the lead carries that the type no longer lists."""
    order = [f.name for f in lead_type.fields] if lead_type is not None else []
    order += [name for name in fields if name not in order]
    return [(n, field_label(lead_type, n), _text(fields[n])) for n in order if n in fields]


def list_columns(lead_types: Sequence[LeadType]) -> list[tuple[str, str]]:
    """(field, label) of the list's field columns: the chosen lead type's list columns, or with
    every type shown, the union of theirs in order (a type without the field shows it empty)."""
    columns: dict[str, str] = {}
    for lead_type in lead_types:
        for name in lead_type.list_columns:
            columns.setdefault(name, field_label(lead_type, name))
    return list(columns.items())


def export_columns(lead_types: Sequence[LeadType]) -> list[tuple[str, str]]:
    """(field, label) of every field of these lead types, in catalog order, once each."""
    columns: dict[str, str] = {}
    for lead_type in lead_types:
        for f in lead_type.fields:
            columns.setdefault(f.name, f.display_label)
    return list(columns.items())


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


RETURN_STATUS_LABELS = {"pending": "Return pending", "approved": "Returned", "denied": "Return denied"}


def return_label(status: str | None) -> str:
    return RETURN_STATUS_LABELS.get(status or "", "")


# --- CSV ------------------------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text, never runs (OWASP CSV injection): a value starting
    with = + - @ tab or carriage return gets a leading apostrophe."""
    text = _text(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


EXPORT_FIXED = ("Lead ID", "Delivered", "Lead type", "Price", "Return status")


def export_header(columns: Sequence[tuple[str, str]]) -> list[str]:
    return [*EXPORT_FIXED, *(label for _, label in columns)]


def export_row(
    row: Mapping[str, Any], columns: Sequence[tuple[str, str]], zone: str, type_names: Mapping[str, str]
) -> list[str]:
    fields = row["fields"] or {}
    cells: list[Any] = [
        str(row["lead_id"]),
        format_local(row["completed_at"], zone),
        type_names.get(row["lead_type_id"], row["lead_type_id"]),
        f"{row['price']:.2f}",
        return_label(row["return_status"]) or "",
        *(fields.get(name) for name, _ in columns),
    ]
    return [csv_cell(c) for c in cells]


# --- Charts (server-drawn SVG) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    top: int  # the y axis' highest label
    series: tuple[tuple[str, str, tuple[tuple[float, float], ...]], ...]  # (name, css class, points)
    bars: tuple[tuple[str, str, tuple[tuple[float, float, float, float], ...]], ...]  # (name, class, rects)
    ticks: tuple[tuple[float, str], ...]  # (x, day label)


def nice_top(value: int) -> int:
    """The smallest 1/2/5×10^n at or above `value` (at least 5), for a readable y axis."""
    value = max(value, 5)
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


PLOT = (40, 10, 10, 24)  # left, top, right, bottom margins


def line_chart(
    series: Sequence[tuple[str, str, Sequence[int]]], days: int, width: int = 640, height: int = 220
) -> Chart:
    """Lines of daily counts over `days` slots (day 1 at the left). Series may be shorter (the
    current month so far)."""
    left, top_margin, right, bottom = PLOT
    top = nice_top(max((max(values, default=0) for _, _, values in series), default=0))
    plot_w, plot_h = width - left - right, height - top_margin - bottom
    step = plot_w / max(days - 1, 1)

    def point(i: int, value: int) -> tuple[float, float]:
        return round(left + i * step, 1), round(top_margin + plot_h - plot_h * value / top, 1)

    lines = tuple((name, css, tuple(point(i, v) for i, v in enumerate(values))) for name, css, values in series)
    ticks = tuple((left + i * step, str(i + 1)) for i in range(0, days, 5 if days > 10 else 1))
    return Chart(width, height, top, lines, (), ticks)


def bar_chart(
    series: Sequence[tuple[str, str, Sequence[int]]], days: int, width: int = 640, height: int = 220
) -> Chart:
    """Grouped bars of daily counts: one group per day, one bar per series."""
    left, top_margin, right, bottom = PLOT
    top = nice_top(max((max(values, default=0) for _, _, values in series), default=0))
    plot_w, plot_h = width - left - right, height - top_margin - bottom
    slot = plot_w / max(days, 1)
    bar_w = slot * 0.8 / max(len(series), 1)
    bars = []
    for s, (name, css, values) in enumerate(series):
        rects = []
        for i, value in enumerate(values):
            h = plot_h * value / top
            rects.append(
                (
                    round(left + i * slot + slot * 0.1 + s * bar_w, 1),
                    round(top_margin + plot_h - h, 1),
                    round(bar_w, 1),
                    round(h, 1),
                )
            )
        bars.append((name, css, tuple(rects)))
    ticks = tuple((left + i * slot + slot / 2, str(i + 1)) for i in range(0, days, 5 if days > 10 else 1))
    return Chart(width, height, top, (), tuple(bars), ticks)


def daily_counts(counts: Mapping[date, int], first: date, days: int) -> list[int]:
    return [counts.get(first + timedelta(days=i), 0) for i in range(days)]


# --- Signing in -----------------------------------------------------------------------------------

SIGNED_OUT_REASONS = {
    "signed_out": "You are signed out.",
    "expired": "Your session expired. Please sign in again.",
    "ended": "Your session has ended. Please sign in again.",
    "inactive": "Portal access for your company is turned off. Please contact your lead provider.",
    "disabled": "Your user account is disabled. Please ask your company's portal admin.",
    "password_set": "Your password is set. Sign in with it now.",
}

# portal_auth's answer to a session check -> why the buyer is back on the sign-in page.
SESSION_FAILURE_REASONS: dict[ErrorCode, str] = {
    "session_expired": "expired",
    "session_invalid": "ended",
    "client_inactive": "inactive",
    "account_disabled": "disabled",
}


def login_failure_message(error: ErrorCode, retry_after: datetime | None, now: datetime) -> str:
    if error == "throttled":
        return f"Too many failed sign-in attempts. Try again in {wait_words(retry_after, now)}."
    return {
        "invalid_credentials": "Wrong email or password.",
        "account_disabled": SIGNED_OUT_REASONS["disabled"],
        "client_inactive": SIGNED_OUT_REASONS["inactive"],
        "unavailable": "Sign-in is not answering right now. Please try again in a moment.",
        "deadline_exceeded": "Sign-in is not answering right now. Please try again in a moment.",
    }.get(error, "Sign-in failed. Please try again.")


def wait_words(retry_after: datetime | None, now: datetime) -> str:
    seconds = max(1, math.ceil((retry_after - now).total_seconds())) if retry_after else 60
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minutes"


def safe_next(target: str | None, base_path: str) -> str | None:
    """Where to go after signing in: only a path of this portal, never another site (an open
    redirect would make our sign-in page a phishing tool)."""
    if not target or len(target) > 2000:
        return None
    if not target.startswith(base_path + "/") or target.startswith("//") or "\\" in target:
        return None
    if any(ch in target for ch in "\r\n\t") or "/../" in target or target.endswith("/.."):
        return None
    return target


# --- The email forms ------------------------------------------------------------------------------

ADDRESS = re.compile(r"^[^@\s<>,;\"'()\[\]]+@[^@\s<>,;\"'()\[\]]+\.[^@\s<>,;\"'()\[\]]+$")


def valid_address(text: str) -> bool:
    return len(text) <= 254 and bool(ADDRESS.match(text))


def parse_recipients(text: str) -> tuple[list[str], str | None]:
    """Addresses separated by commas, semicolons, spaces or new lines: (addresses, problem)."""
    parts = [p for p in re.split(r"[\s,;]+", text.strip()) if p]
    if not parts:
        return [], "Enter at least one email address."
    if len(parts) > MAX_FORWARD_RECIPIENTS:
        return [], f"Forward to at most {MAX_FORWARD_RECIPIENTS} addresses at once."
    bad = [p for p in parts if not valid_address(p)]
    if bad:
        shown = bad[0] if len(bad[0]) <= 60 else bad[0][:60] + "…"
        return [], f"“{shown}” is not an email address."
    return list(dict.fromkeys(p.lower() for p in parts)), None


@dataclass(frozen=True)
class ContactForm:
    subject: str
    message: str


@dataclass(frozen=True)
class ForwardForm:
    to: tuple[str, ...]
    note: str


def check_contact_form(subject: str, message: str) -> tuple[ContactForm | None, dict[str, str]]:
    errors: dict[str, str] = {}
    subject = " ".join(subject.split())
    message = message.strip()
    if not subject:
        errors["subject"] = "Enter a subject."
    elif len(subject) > MAX_SUBJECT:
        errors["subject"] = f"Keep the subject under {MAX_SUBJECT} characters."
    if not message:
        errors["message"] = "Write a message."
    elif len(message) > MAX_MESSAGE:
        errors["message"] = f"Keep the message under {MAX_MESSAGE} characters."
    return (ContactForm(subject, message) if not errors else None), errors


def check_forward_form(to: str, note: str) -> tuple[ForwardForm | None, dict[str, str]]:
    errors: dict[str, str] = {}
    addresses, problem = parse_recipients(to) if len(to) <= 2000 else ([], "That is too many addresses.")
    if problem:
        errors["to"] = problem
    note = note.strip()
    if len(note) > MAX_MESSAGE:
        errors["note"] = f"Keep the note under {MAX_MESSAGE} characters."
    return (ForwardForm(tuple(addresses), note) if not errors else None), errors


def parse_uuid(text: str) -> uuid.UUID | None:
    if len(text) > 64:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


# --- Returns (D5, F1–F6) ---------------------------------------------------------------------------

MAX_RETURN_REASON = 200
MAX_RETURN_COMMENT = 2000
RETURN_STATUSES = ("pending", "approved", "denied")
RETURNS_PAGE_SIZE = 50

# What the returns service's decision reasons mean to a buyer (returns' DecisionReason).
RETURN_REFUSALS = {
    "window_expired": "the return window for this lead has closed",
    "cap_exceeded": "this month's return allowance is used up",
    "already_returned": "this lead was already returned",
    "invalid_reason": "that reason is not one this lead type accepts",
    "not_delivered": "this lead was not delivered to your company",
}
RETURN_DECISIONS = {
    "auto_approved": "Approved at once (within your allowance)",
    "admin": "Decided by your lead provider",
    **{k: v[0].upper() + v[1:] for k, v in RETURN_REFUSALS.items()},
}
RETURN_STATUS_NAMES = {"pending": "Pending", "approved": "Approved", "denied": "Denied"}


@dataclass(frozen=True)
class ReturnForm:
    reason: str
    comment: str | None


def check_return_form(reason: str, comment: str, reasons: Sequence[str]) -> tuple[ReturnForm | None, dict[str, str]]:
    """The Return form: a reason from the lead type's list (any reason when the type lists none)
    and an optional comment."""
    errors: dict[str, str] = {}
    reason = reason.strip()
    if not reason:
        errors["reason"] = "Choose a reason." if reasons else "Give a reason."
    elif reasons and reason not in reasons:
        errors["reason"] = "Choose one of the listed reasons."
    elif len(reason) > MAX_RETURN_REASON:
        errors["reason"] = f"Keep the reason under {MAX_RETURN_REASON} characters."
    elif "\x00" in reason:
        errors["reason"] = "The reason holds a character that cannot be stored."
    comment = comment.strip()
    if len(comment) > MAX_RETURN_COMMENT:
        errors["comment"] = f"Keep the comment under {MAX_RETURN_COMMENT} characters."
    elif "\x00" in comment:
        errors["comment"] = "The comment holds a character that cannot be stored."
    return (ReturnForm(reason, comment or None) if not errors else None), errors


def returnable_until(delivered_at: datetime, window_days: int) -> datetime:
    """The last instant a return is on time (the returns service's rule: now − delivered ≤ window)."""
    return delivered_at + timedelta(days=window_days)


def may_request_return(latest: Mapping[str, Any] | None) -> bool:
    """Whether a lead can be asked for again: never returned, or its last request was refused by a
    rule (which does not hold the lead). Pending, approved and admin-denied returns hold it."""
    if latest is None:
        return True
    return latest["status"] == "denied" and latest["decision_reason"] != "admin"


@dataclass(frozen=True)
class Allowance:
    """One return cap as the buyer sees it: `used` of `allowed` for leads delivered in `month`."""

    scope: Literal["delivery_account", "order"]
    name: str
    pct: Decimal
    delivered: int
    used: int
    allowed: int
    month: date

    @property
    def full(self) -> bool:
        return self.used >= self.allowed

    def words(self) -> str:
        return f"{self.used} of {self.allowed} used"


def return_answer(status: str, decision_reason: str | None, credit: Decimal | None = None) -> tuple[str, str]:
    """(kind, sentence) for a return request's outcome: kind is accepted or refused."""
    if status == "pending":
        return "accepted", "Return accepted: it is pending review by your lead provider."
    if status == "approved":
        money = f" ${credit:.2f} credited." if credit else ""
        return "accepted", "Return accepted and approved." + money
    if decision_reason == "admin":
        return "refused", "Return denied by your lead provider."
    why = RETURN_REFUSALS.get(decision_reason or "", "the return was not accepted")
    return "refused", f"Return refused: {why}."


@dataclass(frozen=True)
class ReturnsFilter:
    status: str | None
    first_day: date | None
    last_day: date | None
    after: tuple[datetime, uuid.UUID] | None

    def params(self, **changes: Any) -> dict[str, str]:
        values = {
            "status": self.status or "",
            "from": self.first_day.isoformat() if self.first_day else "",
            "to": self.last_day.isoformat() if self.last_day else "",
        }
        values.update({k: v for k, v in changes.items() if v is not None})
        return {k: v for k, v in values.items() if v}

    def bounds(self, zone: str) -> tuple[datetime | None, datetime | None]:
        start = day_start(self.first_day, zone) if self.first_day else None
        end = day_start(self.last_day + timedelta(days=1), zone) if self.last_day else None
        return start, end


def encode_returns_cursor(requested_at: datetime, return_id: uuid.UUID) -> str:
    return f"{requested_at.astimezone(UTC).isoformat()}_{return_id}"


def parse_returns_filter(params: Mapping[str, str]) -> tuple[ReturnsFilter | None, dict[str, str]]:
    """The Returns screen's filters: status (pending, approved, denied; empty for all), a return
    date range From–To (client days, both included, either optional) and a page cursor."""
    errors: dict[str, str] = {}
    status = params.get("status", "").strip()
    if status and status not in RETURN_STATUSES:
        errors["status"] = "Choose Pending, Approved, Denied or All."
    days: dict[str, date | None] = {}
    for key in ("from", "to"):
        text = params.get(key, "").strip()
        days[key] = parse_day(text) if text else None
        if text and days[key] is None:
            errors[key] = "Enter a date like 2026-03-31."
    first, last = days["from"], days["to"]
    if first and last and first > last:
        errors["to"] = "The end date is before the start date."
    after = None
    cursor = params.get("after", "")
    if cursor:
        stamp, _, ident = cursor.partition("_")
        parsed_id = parse_uuid(ident)
        try:
            at = datetime.fromisoformat(stamp) if len(stamp) <= 40 else None
        except ValueError:
            at = None
        if parsed_id is None or at is None or at.tzinfo is None:
            errors["after"] = "This page link is not valid. Start again from the first page."
        else:
            after = (at, parsed_id)
    if errors:
        return None, errors
    return ReturnsFilter(status or None, first, last, after), {}


def returns_offered(catalog: Catalog, client_id: str) -> bool:
    """F1, "depends on the contract": the client may return leads unless the effective return %
    (the account's, else the client's, else the global default) is 0 for every one of its
    delivery accounts. The lead page offers no Return button otherwise."""
    return any(account_pct(catalog, client_id, a.id) > 0 for a in catalog.delivery_accounts if a.client == client_id)


def allowance(
    scope: Literal["delivery_account", "order"], name: str, pct: Decimal, delivered: int, used: int, month: date
) -> Allowance:
    return Allowance(scope, name, pct, delivered, used, allowed_returns(delivered, pct), month)


# --- Order Manager (G1–G14) ------------------------------------------------------------------------

ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # the catalog's Id
ORDER_STATUS_NAMES = {"open": "Open", "paused": "Paused", "closed": "Closed"}
RENEWAL_NAMES = {"on_fill": "On fill", "close_at_end": "Close at end date", "none": "No renewal"}
ORDER_ACTIONS = {"pause": "paused", "resume": "resumed"}


def valid_order_id(text: str) -> bool:
    return bool(ORDER_ID.fullmatch(text))


def order_amount(order_type: str, value: Decimal) -> str:
    """A figure in the order's units: leads for a lead quantity order, dollars for a dollar one."""
    if order_type == "lead_quantity":
        count = value.to_integral_value() if value == value.to_integral_value() else value
        return f"{count:,} lead" + ("" if count == 1 else "s")
    return f"${value:,.2f}"


def order_actions(status: str, is_admin: bool) -> list[str]:
    """The buttons an order offers: admins pause open orders and resume paused ones (G3)."""
    if not is_admin:
        return []
    return {"open": ["pause"], "paused": ["resume"]}.get(status, [])


def order_refusal(error: str | None) -> str:
    """The returns service's refusal of an order command, as a sentence."""
    match = re.fullmatch(r"cannot (\w+) an order that is (\w+)", error or "")
    if match:
        done = {"pause": "paused", "resume": "resumed", "close": "closed"}.get(match[1], match[1])
        return f"This order is {match[2]}, so it cannot be {done}."
    return "The order could not be changed."


# --- Files (D6) ------------------------------------------------------------------------------------

FILE_CHUNK_BYTES = 1024 * 1024  # a stored chunk; an upload holds at most about one in memory
MAX_FILE_NAME = 255
# What a detection needs to see of a file's start.
FILE_HEAD_BYTES = 512


@dataclass(frozen=True)
class FileKind:
    content_type: str
    label: str
    magic: tuple[bytes, ...]  # the content must start with one of these; () for text


_OLE = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",)
_ZIP = (b"PK\x03\x04",)
# The allow-list, by extension; the content must agree with the extension (its magic bytes, or
# UTF-8 text without NUL). What the browser says the type is, is never trusted.
FILE_KINDS: dict[str, FileKind] = {
    "pdf": FileKind("application/pdf", "PDF", (b"%PDF-",)),
    "png": FileKind("image/png", "PNG image", (b"\x89PNG\r\n\x1a\n",)),
    "jpg": FileKind("image/jpeg", "JPEG image", (b"\xff\xd8\xff",)),
    "jpeg": FileKind("image/jpeg", "JPEG image", (b"\xff\xd8\xff",)),
    "gif": FileKind("image/gif", "GIF image", (b"GIF87a", b"GIF89a")),
    "webp": FileKind("image/webp", "WebP image", (b"RIFF",)),
    "txt": FileKind("text/plain; charset=utf-8", "Text", ()),
    "csv": FileKind("text/csv; charset=utf-8", "CSV", ()),
    "doc": FileKind("application/msword", "Word document", _OLE),
    "docx": FileKind("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "Word document", _ZIP),
    "xls": FileKind("application/vnd.ms-excel", "Excel workbook", _OLE),
    "xlsx": FileKind("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "Excel workbook", _ZIP),
}
ALLOWED_FILES = "PDF, PNG, JPEG, GIF, WebP, text, CSV, Word or Excel"


def clean_file_name(raw: str) -> tuple[str | None, str | None]:
    """(the name to store, or None; the problem). A name sent with a path (`C:\\x\\quote.pdf`,
    `../../quote.pdf`) keeps only its last part, as browsers do; control characters go."""
    base = re.split(r"[\\/]", raw)[-1]
    name = "".join(ch for ch in base if ch.isprintable()).strip()
    if name in ("", ".", ".."):
        return None, "Choose a file to upload."
    if len(name) > MAX_FILE_NAME:
        return None, f"The file name is too long (at most {MAX_FILE_NAME} characters)."
    return name, None


def file_kind(name: str, head: bytes) -> tuple[FileKind | None, str | None]:
    """The allowed kind of a file from its name's extension and its first bytes, or the problem."""
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    kind = FILE_KINDS.get(extension)
    if kind is None:
        return None, f"This type of file cannot be attached. Attach a {ALLOWED_FILES} file."
    if kind.magic:
        matches = any(head.startswith(m) for m in kind.magic)
        if extension == "webp":
            matches = matches and head[8:12] == b"WEBP"
    else:
        matches = b"\x00" not in head and _utf8_prefix(head)
    if not matches:
        return None, f"This file's content is not a {kind.label} file, as its name says."
    return kind, None


def _utf8_prefix(data: bytes) -> bool:
    """Whether `data` is UTF-8, allowing a character cut off at its end."""
    for cut in range(4):
        try:
            data[: len(data) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def content_disposition(name: str) -> str:
    """`attachment` with the name twice: an ASCII fallback and the exact UTF-8 name (RFC 6266,
    RFC 5987). Never `inline`: a file is always saved, never shown by the browser."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\;' else "_" for ch in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def file_size_words(size: int) -> str:
    if size < 1024:
        return f"{size} bytes" if size != 1 else "1 byte"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def may_delete_file(uploaded_by: uuid.UUID, user_id: uuid.UUID, is_admin: bool) -> bool:
    """The uploader, or an admin of the client."""
    return is_admin or uploaded_by == user_id
