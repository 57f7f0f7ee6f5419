"""services/portal/rules.py, table by table: visibility, the lead list's request, cursors, search
terms, CSV cells, local days, charts, sign-in sentences, redirects and the email forms."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from services.portal import rules
from services.portal.rules import Cursor, LeadFilter, Sort, Viewer
from shared.catalog.model import LeadType
from shared.contracts.portal_auth import Identity

U1, U2, U3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
TODAY = date(2026, 3, 15)

SOLAR = LeadType.model_validate(
    {
        "id": "solar",
        "name": "Solar",
        "fields": [
            {"name": "first_name", "list_column": True},
            {"name": "last_name", "list_column": True},
            {"name": "email", "type": "email", "label": "Email address"},
            {"name": "phone", "type": "phone", "list_column": True},
            {"name": "monthly_bill", "type": "money"},
        ],
    }
)
AUTO = LeadType.model_validate(
    {
        "id": "auto",
        "name": "Auto",
        "fields": [{"name": "first_name"}, {"name": "phone", "type": "phone"}, {"name": "vehicles", "type": "number"}],
    }
)
TYPES = {"solar": SOLAR, "auto": AUTO}


def identity(scope: str, visible: list[uuid.UUID] | None) -> Identity:
    now = datetime(2026, 3, 15, tzinfo=UTC)
    return Identity(
        session_id=uuid.uuid4(),
        user_id=U1,
        client_id="acme",
        email="ann@acme.test",
        name="Ann",
        is_admin=scope == "all",
        view_downline=scope == "downline",
        scope=scope,
        visible_user_ids=visible,
        session_expires_at=now,
        idle_expires_at=now,
    )


@pytest.mark.parametrize(
    ("scope", "visible", "assigned", "sees"),
    [
        ("all", None, None, True),  # admins see unassigned leads
        ("all", None, U2, True),
        ("own", [U1], U1, True),
        ("own", [U1], U2, False),
        ("own", [U1], None, False),  # an unassigned lead is for admins only
        ("downline", [U1, U2], U2, True),
        ("downline", [U1, U2], U3, False),
        ("downline", [U1, U2], None, False),
    ],
)
def test_who_sees_a_lead(scope, visible, assigned, sees):
    assert Viewer.of(identity(scope, visible)).sees(assigned) is sees


def test_a_link_grant_sees_the_clients_view():
    viewer = Viewer.of(identity("own", [U1]))
    assert viewer.user_ids == (U1,) and viewer.client_id == "acme"


def parse(**params: str) -> rules.FilterResult:
    return rules.parse_lead_filter(params, today=TODAY, lead_types=TYPES)


@pytest.mark.parametrize(
    ("params", "first", "last"),
    [
        ({}, date(2026, 2, 14), TODAY),  # the last 30 days, today included
        ({"from": "2026-01-01", "to": "2026-01-31"}, date(2026, 1, 1), date(2026, 1, 31)),
        ({"from": "2026-03-01"}, date(2026, 3, 1), TODAY),  # from a day on: up to today
        ({"from": "2024-01-01"}, date(2024, 1, 1), date(2024, 12, 31)),  # ...at most 366 days
        ({"to": "2026-01-31"}, date(2026, 1, 2), date(2026, 1, 31)),  # up to a day: 30 days
        ({"from": " 2026-03-01 ", "to": "2026-03-01"}, date(2026, 3, 1), date(2026, 3, 1)),
    ],
)
def test_date_ranges(params, first, last):
    f = parse(**params).filter
    assert f is not None and (f.first_day, f.last_day) == (first, last)


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"from": "2026-02-30"}, "from", "Enter the start date as YYYY-MM-DD"),
        ({"from": "03/01/2026"}, "from", "Enter the start date"),
        ({"to": "1999-12-31"}, "to", "between 2000 and 2100"),
        ({"to": "2101-01-01"}, "to", "between 2000 and 2100"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "to", "before the start date"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, "to", "at most 366 days"),
        ({"type": "boats"}, "type", "Choose a lead type"),
        ({"q": "x" * 201}, "q", "at most 200 characters"),
        ({"sort": "fields"}, "sort", "cannot be sorted by “fields”"),
        ({"sort": "f.vehicles", "type": "solar"}, "sort", "cannot be sorted"),  # not a field of solar
        ({"sort": "f.vehicles"}, "sort", "cannot be sorted"),  # a field, but no list column: no index
        ({"sort": "f.monthly_bill"}, "sort", "cannot be sorted"),
        ({"sort": "f.last_name", "type": "auto"}, "sort", "cannot be sorted"),  # not a column of auto
        ({"sort": "f." + "x" * 100}, "sort", "…”"),
        ({"dir": "up"}, "dir", "asc or desc"),
        ({"after": "!!!"}, "after", "not valid any more"),
    ],
)
def test_bad_parameters_are_named_in_words(params, field, message):
    result = parse(**params)
    assert result.filter is None
    assert message in result.errors[field]


@pytest.mark.parametrize(
    ("params", "sort"),
    [
        ({}, Sort("delivered", None, False, "desc")),
        ({"sort": "price", "dir": "asc"}, Sort("price", None, False, "asc")),
        ({"sort": "type"}, Sort("type", None, False, "desc")),
        ({"sort": "f.first_name", "dir": "asc"}, Sort("field", "first_name", False, "asc", "t1")),
        ({"sort": "f.phone"}, Sort("field", "phone", False, "desc", "t3")),
        # A type shown alone keeps the client's key columns (those of every type it buys).
        ({"sort": "f.phone", "type": "auto"}, Sort("field", "phone", False, "desc", "t3")),
    ],
)
def test_sorts(params, sort):
    f = parse(**params).filter
    assert f is not None and f.sort == sort


def lead_type(type_id: str, *fields: tuple[str, str, bool]) -> LeadType:
    return LeadType.model_validate(
        {"id": type_id, "name": type_id, "fields": [{"name": n, "type": t, "list_column": c} for n, t, c in fields]}
    )


HOMES = lead_type("homes", ("city", "text", True), ("price", "money", True), ("rooms", "number", True))
BOATS = lead_type("boats", ("price", "text", True), ("length", "number", True), ("year", "number", True))
WIDE = lead_type("wide", *((f"c{i}", "text", True) for i in range(7)), ("m1", "money", True), ("notes", "text", False))


@pytest.mark.parametrize(
    ("types", "columns"),
    [
        ([SOLAR, AUTO], {"first_name": "t1", "last_name": "t2", "phone": "t3"}),  # the union, in order
        ([AUTO], {"first_name": "t1", "phone": "t2"}),  # no list_column marked: the contact's fields
        ([HOMES], {"city": "t1", "price": "n1", "rooms": "n2"}),
        # `price` is money in homes (first): numeric for both; the third number has no key left.
        ([HOMES, BOATS], {"city": "t1", "price": "n1", "rooms": "n2"}),
        ([BOATS, HOMES], {"price": "t1", "length": "n1", "year": "n2", "city": "t2"}),
        # Five text keys: c5 and c6 are shown but not sortable; not a list column: never a key.
        ([WIDE], {"c0": "t1", "c1": "t2", "c2": "t3", "c3": "t4", "c4": "t5", "m1": "n1"}),
        ([], {}),
    ],
)
def test_sort_columns_give_the_clients_list_columns_their_key_columns(types, columns):
    assert rules.sort_columns(types) == columns


def test_a_list_column_without_a_key_column_is_not_sortable():
    wide = {"wide": WIDE}
    assert rules.parse_lead_filter({"sort": "f.c4"}, today=TODAY, lead_types=wide).filter is not None
    result = rules.parse_lead_filter({"sort": "f.c5"}, today=TODAY, lead_types=wide)
    assert result.filter is None and "cannot be sorted" in result.errors["sort"]


def test_search_is_trimmed_and_kept_as_typed():
    f = parse(q="  (415)   555-0100 ").filter
    assert f is not None and f.search == "(415) 555-0100" and f.search_pattern == "%4155550100%"


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DID = uuid.uuid4()


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        (Sort("delivered"), NOW),
        (Sort("price"), Decimal("25.50")),
        (Sort("type"), "solar"),
        (Sort("field", "first_name"), "Ada"),
        (Sort("field", "first_name"), ""),
        (Sort("field", "monthly_bill", True), Decimal("-1E+30")),
        (Sort("field", "monthly_bill", True), Decimal("120.00")),
    ],
)
def test_cursors_round_trip_typed_for_their_sort(sort, key):
    text = rules.encode_cursor(sort, key, NOW, DID)
    assert rules.decode_cursor(text, sort) == Cursor(key, NOW, DID)


def _raw_cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("text", "sort"),
    [
        ("", Sort()),
        ("not base64 at all!", Sort()),
        (rules.encode_cursor(Sort("type"), "solar", NOW, DID), Sort("price")),  # text where a number goes
        (_raw_cursor(1, NOW.isoformat(), str(DID)), Sort("type")),  # a number where text goes
        (rules.encode_cursor(Sort("type"), "x", NOW.replace(tzinfo=None), DID), Sort("type")),  # naive time
        ("W10", Sort()),  # []
        ("x" * 601, Sort()),
    ],
)
def test_cursors_that_are_not_ours_are_refused(text, sort):
    assert rules.decode_cursor(text, sort) is None


def test_the_filter_as_parameters_for_links():
    f = LeadFilter(date(2026, 3, 1), date(2026, 3, 15), "solar", "ada", Sort("field", "first_name", False, "asc"))
    assert f.params() == {
        "from": "2026-03-01",
        "to": "2026-03-15",
        "type": "solar",
        "q": "ada",
        "sort": "f.first_name",
        "dir": "asc",
    }
    assert f.params(sort="price", dir="desc")["sort"] == "price"
    assert "type" not in LeadFilter(date(2026, 3, 1), date(2026, 3, 1)).params()


@pytest.mark.parametrize(
    ("typed", "term"),
    [
        ("(415) 555-0100", "4155550100"),  # as the router stores it
        ("+1 415 555 0100", "4155550100"),
        ("1-415-555-0100", "4155550100"),
        ("555-0100", "5550100"),  # part of a number: its digits
        ("415.555", "415555"),
        ("12", "12"),  # too short to be a phone number: as typed
        ("Ada Lovelace", "Ada Lovelace"),
        ("ada@example.com", "ada@example.com"),
        ("  two   spaces ", "two spaces"),
        ("94110-1234", "941101234"),  # looks like a number: digits (ZIPs are stored as typed)
    ],
)
def test_search_terms(typed, term):
    assert rules.search_term(typed) == term


@pytest.mark.parametrize(
    ("typed", "pattern"),
    [("ada", "%ada%"), ("100%", "%100\\%%"), ("a_b", "%a\\_b%"), ("back\\slash", "%back\\\\slash%")],
)
def test_search_patterns_match_wildcards_literally(typed, pattern):
    assert rules.search_pattern(typed) == pattern


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=SUM(A1)", "'=SUM(A1)"),
        ("+1 415", "'+1 415"),
        ("-5", "'-5"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("Ada", "Ada"),
        ("a=b", "a=b"),
        (None, ""),
        (True, "yes"),
        (12, "12"),
        ({"a": 1}, '{"a": 1}'),
    ],
)
def test_csv_cells_never_run_in_a_spreadsheet(value, cell):
    assert rules.csv_cell(value) == cell


def test_an_export_row():
    row = {
        "lead_id": DID,
        "completed_at": datetime(2026, 3, 1, 7, 30, tzinfo=UTC),
        "lead_type_id": "solar",
        "price": Decimal("25"),
        "return_status": "approved",
        "fields": {"first_name": "=cmd", "email": "a@b.example"},
    }
    columns = rules.export_columns([SOLAR])
    assert rules.export_header(columns)[:6] == [
        "Lead ID",
        "Delivered",
        "Lead type",
        "Price",
        "Return status",
        "First name",
    ]
    assert rules.export_row(row, columns, "America/Los_Angeles", {"solar": "Solar"})[:8] == [
        str(DID),
        "2026-02-28 23:30",
        "Solar",
        "25.00",
        "Returned",
        "'=cmd",
        "",
        "a@b.example",
    ]


@pytest.mark.parametrize(
    ("day", "zone", "start"),
    [
        (date(2026, 3, 1), "America/Los_Angeles", datetime(2026, 3, 1, 8, tzinfo=UTC)),
        (date(2026, 3, 8), "America/Los_Angeles", datetime(2026, 3, 8, 8, tzinfo=UTC)),  # DST starts that day
        (date(2026, 3, 9), "America/Los_Angeles", datetime(2026, 3, 9, 7, tzinfo=UTC)),
        (date(2026, 3, 1), "UTC", datetime(2026, 3, 1, tzinfo=UTC)),
        (date(2026, 3, 1), "Asia/Kolkata", datetime(2026, 2, 28, 18, 30, tzinfo=UTC)),
    ],
)
def test_local_days_begin_at_their_zones_midnight(day, zone, start):
    assert rules.day_start(day, zone) == start


def test_a_filters_bounds_cover_whole_local_days():
    f = LeadFilter(date(2026, 3, 7), date(2026, 3, 8))
    start, end = f.bounds("America/Los_Angeles")
    assert start == datetime(2026, 3, 7, 8, tzinfo=UTC) and end == datetime(2026, 3, 9, 7, tzinfo=UTC)
    assert end - start == timedelta(hours=47)  # one of the days had 23 hours


@pytest.mark.parametrize(
    ("day", "months", "result"),
    [
        (date(2026, 1, 1), -1, date(2025, 12, 1)),
        (date(2026, 12, 1), 1, date(2027, 1, 1)),
        (date(2026, 3, 1), -14, date(2025, 1, 1)),
    ],
)
def test_months(day, months, result):
    assert rules.add_months(day, months) == result


@pytest.mark.parametrize(("first", "days"), [(date(2026, 2, 1), 28), (date(2028, 2, 1), 29), (date(2026, 12, 1), 31)])
def test_days_in_month(first, days):
    assert rules.days_in_month(first) == days


@pytest.mark.parametrize(
    ("value", "top"), [(0, 5), (3, 5), (5, 5), (6, 10), (11, 20), (21, 50), (51, 100), (999, 1000)]
)
def test_the_y_axis_ends_on_a_round_number(value, top):
    assert rules.nice_top(value) == top


def test_line_chart_geometry():
    chart = rules.line_chart([("Last", "series-last", [0, 10, 5]), ("This", "series-this", [10])], days=3)
    left, top, right, bottom = rules.PLOT
    assert chart.top == 10
    last = chart.series[0][2]
    assert last[0] == (left, chart.height - bottom)  # 0 at the bottom, day 1 at the left
    assert last[1][1] == top  # the highest value at the top
    assert last[2][0] == chart.width - right  # the last day at the right
    assert len(chart.series[1][2]) == 1  # a month so far has as many points as days


def test_bar_chart_geometry():
    chart = rules.bar_chart([("Leads", "a", [4, 0]), ("Appointments", "b", [2, 1])], days=2)
    (_, _, leads), (_, _, appointments) = chart.bars
    assert chart.top == 5
    assert leads[1][3] == 0  # no bar for zero
    assert appointments[0][0] > leads[0][0]  # side by side within the day
    assert leads[0][3] == pytest.approx(2 * appointments[0][3])


@pytest.mark.parametrize(
    ("error", "after", "message"),
    [
        ("invalid_credentials", None, "Wrong email or password."),
        ("throttled", 8, "Too many failed sign-in attempts. Try again in 8 seconds."),
        ("throttled", 1, "Too many failed sign-in attempts. Try again in 1 second."),
        ("throttled", 0.2, "Try again in 1 second."),
        ("throttled", 900, "Try again in 15 minutes."),
        ("account_disabled", None, "Your user account is disabled."),
        ("client_inactive", None, "Portal access for your company is turned off."),
        ("unavailable", None, "Sign-in is not answering right now."),
        ("bad_request", None, "Sign-in failed."),
    ],
)
def test_sign_in_failures_in_words(error, after, message):
    retry_after = NOW + timedelta(seconds=after) if after is not None else None
    assert message in rules.login_failure_message(error, retry_after, NOW)


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/portal/leads?q=ada", "/portal/leads?q=ada"),
        ("/portal/dashboard", "/portal/dashboard"),
        ("https://evil.example/portal/", None),
        ("//evil.example/portal/x", None),
        ("/portal\\..\\evil", None),
        ("/portalx/leads", None),
        ("/portal/../admin", None),
        ("/portal/leads\r\nSet-Cookie: x", None),
        ("", None),
        (None, None),
        ("/portal/" + "x" * 3000, None),
    ],
)
def test_only_our_own_pages_are_a_next_step_after_sign_in(target, safe):
    assert rules.safe_next(target, "/portal") == safe


@pytest.mark.parametrize(
    ("text", "addresses", "problem"),
    [
        ("a@b.example", ["a@b.example"], None),
        (
            "A@B.example, c@d.example; e@f.example\ng@h.example",
            ["a@b.example", "c@d.example", "e@f.example", "g@h.example"],
            None,
        ),
        ("a@b.example a@b.example", ["a@b.example"], None),
        ("", [], "Enter at least one email address."),
        (" , ; ", [], "Enter at least one email address."),
        ("a@b", [], "“a@b” is not an email address."),
        ("<a@b.example>", [], "is not an email address."),
        ("x@y.example,1@2.ex,3@4.ex,5@6.ex,7@8.ex,9@0.ex", [], "at most 5 addresses"),
    ],
)
def test_forward_recipients(text, addresses, problem):
    found, said = rules.parse_recipients(text)
    assert found == addresses
    assert said == problem if problem is None or said is None else problem in said


@pytest.mark.parametrize(
    ("subject", "message", "errors"),
    [
        ("Hello", "Hi there", {}),
        ("  Hello \n world ", " Hi ", {}),
        ("", "Hi", {"subject": "Enter a subject."}),
        ("x" * 201, "Hi", {"subject": "Keep the subject under 200 characters."}),
        ("Hello", "", {"message": "Write a message."}),
        ("Hello", "m" * 5001, {"message": "Keep the message under 5000 characters."}),
    ],
)
def test_the_contact_form(subject, message, errors):
    form, found = rules.check_contact_form(subject, message)
    assert found == errors
    if not errors:
        assert form is not None and "\n" not in form.subject and form.message == message.strip()


def test_the_forward_form():
    form, errors = rules.check_forward_form("boss@acme.example", " note ")
    assert errors == {} and form == rules.ForwardForm(("boss@acme.example",), "note")
    assert rules.check_forward_form("x" * 2001, "")[1] == {"to": "That is too many addresses."}
    assert "note" in rules.check_forward_form("a@b.example", "n" * 5001)[1]


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"first_name": "Ada", "last_name": "Lovelace"}, "Ada Lovelace"),
        ({"first_name": "Ada"}, "Ada"),
        ({"email": "ada@example.com"}, "ada@example.com"),
        ({}, "(no name)"),
    ],
)
def test_lead_names(fields, name):
    assert rules.lead_name(SOLAR, fields) == name


def test_labelled_fields_follow_the_catalog_then_whatever_else_the_lead_has():
    fields = {"email": "a@b.example", "first_name": "Ada", "legacy": "x", "monthly_bill": None}
    assert rules.labelled_fields(SOLAR, fields) == [
        ("first_name", "First name", "Ada"),
        ("email", "Email address", "a@b.example"),
        ("monthly_bill", "Monthly bill", ""),
        ("legacy", "Legacy", "x"),
    ]


def test_list_and_export_columns():
    assert rules.list_columns([SOLAR]) == [("first_name", "First name"), ("last_name", "Last name"), ("phone", "Phone")]
    assert rules.list_columns([AUTO]) == [("first_name", "First name"), ("phone", "Phone")]  # its contact fields
    assert [n for n, _ in rules.list_columns([SOLAR, AUTO])] == ["first_name", "last_name", "phone"]
    assert [n for n, _ in rules.export_columns([SOLAR, AUTO])] == [
        "first_name",
        "last_name",
        "email",
        "phone",
        "monthly_bill",
        "vehicles",
    ]


@pytest.mark.parametrize(("text", "ok"), [(str(DID), True), ("nope", False), ("1" * 65, False), ("", False)])
def test_uuids_from_urls(text, ok):
    assert (rules.parse_uuid(text) is not None) is ok
