"""Routing rules as tables of cases: field validation, fingerprints, criteria, schedules."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal

import pytest

from services.router import rules
from shared.catalog.model import Criterion, FieldType, LeadField, LeadType, Schedule

T = FieldType


@pytest.mark.parametrize(
    ("ftype", "value", "expected"),
    [
        (T.text, "  Ada   Lovelace ", "Ada Lovelace"),
        (T.email, "Ada@Example.COM", "ada@example.com"),
        (T.phone, "(415) 555-0100", "4155550100"),
        (T.phone, "+1 415.555.0100", "4155550100"),
        (T.us_state, "ca", "CA"),
        (T.zip, "94107", "94107"),
        (T.zip, "94107-1234", "94107-1234"),
        (T.zip, "941071234", "94107-1234"),
        (T.number, "1,200", "1200"),
        (T.number, 3.5, "3.5"),
        (T.money, "$1,234.5", "1234.50"),
        (T.money, 20, "20.00"),
        (T.date, "2026-11-23", "2026-11-23"),
    ],
)
def test_valid_values_are_normalised(ftype, value, expected):
    assert rules.normalise_field(ftype, value) == expected


@pytest.mark.parametrize(
    ("ftype", "value", "reason"),
    [
        (T.email, "not-an-email", "email"),
        (T.phone, "555-0100", "10-digit"),
        (T.phone, "(015) 555-0100", "10-digit"),
        (T.us_state, "ZZ", "state"),
        (T.zip, "9410", "ZIP"),
        (T.number, "twelve", "number"),
        (T.number, True, "number"),
        (T.money, "-3", "money"),
        (T.money, "1.234", "money"),
        (T.date, "23/11/2026", "YYYY-MM-DD"),
        (T.text, {"a": 1}, "string"),
    ],
)
def test_invalid_values_say_why(ftype, value, reason):
    with pytest.raises(ValueError, match=reason):
        rules.normalise_field(ftype, value)


def test_choice_matches_case_insensitively_and_returns_the_canonical_choice():
    assert rules.normalise_field(T.choice, "YES", ("yes", "no")) == "yes"
    with pytest.raises(ValueError, match="one of: yes, no"):
        rules.normalise_field(T.choice, "maybe", ("yes", "no"))


LEAD_TYPE = LeadType(
    id="solar",
    name="Solar",
    duplicate_fields=("phone", "email"),
    fields=(
        LeadField(name="first_name", required=True),
        LeadField(name="phone", type=T.phone, required=True),
        LeadField(name="email", type=T.email),
        LeadField(name="note", max_length=5),
    ),
)


def test_validation_reports_every_problem_at_once():
    clean, problems = rules.validate_fields(LEAD_TYPE, {"phone": "12", "note": "too long", "colour": "red"})
    assert {(p.field, p.message.split()[0]) for p in problems} == {
        ("colour", "not"),
        ("first_name", "is"),
        ("phone", "must"),
        ("note", "is"),
    }
    assert clean == {}


def test_blank_optional_fields_are_dropped_and_blank_required_fields_are_errors():
    clean, problems = rules.validate_fields(LEAD_TYPE, {"first_name": " ", "phone": "4155550100", "email": ""})
    assert clean == {"phone": "4155550100"}
    assert [(p.field, p.message) for p in problems] == [("first_name", "is required")]


def test_fingerprint_ignores_formatting_and_depends_on_the_duplicate_fields_only():
    a, _ = rules.validate_fields(LEAD_TYPE, {"first_name": "Ada", "phone": "(415) 555-0100", "email": "A@x.io"})
    b, _ = rules.validate_fields(LEAD_TYPE, {"first_name": "Bob", "phone": "415 555 0100", "email": "a@X.IO"})
    c, _ = rules.validate_fields(LEAD_TYPE, {"first_name": "Ada", "phone": "415 555 0101", "email": "a@x.io"})
    assert rules.fingerprint(LEAD_TYPE, a) == rules.fingerprint(LEAD_TYPE, b)
    assert rules.fingerprint(LEAD_TYPE, a) != rules.fingerprint(LEAD_TYPE, c)
    no_dups = LEAD_TYPE.model_copy(update={"duplicate_fields": ()})
    assert rules.fingerprint(no_dups, a) is None


@pytest.mark.parametrize(
    ("criterion", "fields", "matches"),
    [
        (Criterion(field="state", op="equals", value="ca"), {"state": "CA"}, True),
        (Criterion(field="state", op="equals", value="CA"), {}, False),
        (Criterion(field="state", op="not_equals", value="NY"), {"state": "CA"}, True),
        (Criterion(field="state", op="not_equals", value="NY"), {}, True),
        (Criterion(field="state", op="in", value=["CA", "NV"]), {"state": "NV"}, True),
        (Criterion(field="state", op="in", value=["CA", "NV"]), {"state": "TX"}, False),
        (Criterion(field="state", op="not_in", value=["NY"]), {"state": "NY"}, False),
        (Criterion(field="email", op="regex", value=r"@gmail\.com$"), {"email": "a@gmail.com"}, True),
        (Criterion(field="email", op="regex", value=r"@gmail\.com$"), {"email": "a@yahoo.com"}, False),
        (Criterion(field="bill", op="range", min=Decimal(100)), {"bill": "150.00"}, True),
        (Criterion(field="bill", op="range", min=Decimal(100), max=Decimal(200)), {"bill": "250"}, False),
        (Criterion(field="bill", op="range", max=Decimal(200)), {"bill": "n/a"}, False),
        (Criterion(field="zip", op="zip_list", value=["941", "90210"]), {"zip": "94107-1234"}, True),
        (Criterion(field="zip", op="zip_list", value=["941", "90210"]), {"zip": "10001"}, False),
    ],
)
def test_criteria(criterion, fields, matches):
    assert rules.criterion_matches(criterion, fields) is matches


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (datetime(2026, 11, 23, 17, 0, tzinfo=UTC), True),  # Monday 09:00 in Los Angeles
        (datetime(2026, 11, 23, 15, 59, tzinfo=UTC), False),  # Monday 07:59 in Los Angeles
        (datetime(2026, 11, 24, 2, 0, tzinfo=UTC), False),  # Monday 18:00 LA: after hours
        (datetime(2026, 11, 22, 17, 0, tzinfo=UTC), False),  # Sunday
    ],
)
def test_schedule_is_read_in_the_clients_time_zone(now, inside):
    weekdays = Schedule(days=("mon", "tue", "wed", "thu", "fri"), start=time(8), end=time(17, 30))
    assert rules.in_schedule(weekdays, "America/Los_Angeles", now) is inside


@pytest.mark.parametrize(
    ("headers", "message_id", "key"),
    [
        ({"idempotency-key": "h-1"}, "m-1", "h-1"),  # the header wins
        ({"Idempotency-Key": "h-1"}, "m-1", "h-1"),  # whatever the case of its name
        ({"IDEMPOTENCY-KEY": b"h-1"}, None, "h-1"),
        ({"idempotency-key": ""}, "m-1", "m-1"),  # an empty header is no header
        ({}, "m-1", "m-1"),
        (None, None, ""),  # none: the use case rejects it under a key of its own
    ],
)
def test_the_idempotency_key_header_is_matched_whatever_its_case(headers, message_id, key):
    envelope = rules.read_envelope(headers, message_id, None, None)
    assert (envelope.idempotency_key, envelope.problems) == (key, ())


def test_a_nul_in_a_lead_property_is_replaced_and_reported():
    envelope = rules.read_envelope({"idempotency-key": "k\x00"}, None, "q\x00", "c\x00")
    assert (envelope.idempotency_key, envelope.reply_to, envelope.correlation_id) == ("k\ufffd", "q\ufffd", "c\ufffd")
    assert [p.field for p in envelope.problems] == ["idempotency_key", "reply_to", "correlation_id"]


@pytest.mark.parametrize(
    ("nul_paths", "lead_type", "routing_key", "fields"),
    [
        ([], "solar", "lead.solar", []),
        (["fields.first_name"], "solar", "lead.solar", ["first_name"]),
        (["source", "fields.notes.2", "force_id"], "solar", "lead.solar", ["source", "notes", "force_id"]),
        ([], "solar", "lead.roofing", ["lead_type"]),  # the body and the routing key disagree
        ([], "solar", "lead.solar.extra", ["lead_type"]),
        (["lead_type"], "sol\ufffdar", "lead.solar", ["lead_type", "lead_type"]),
    ],
)
def test_body_problems(nul_paths, lead_type, routing_key, fields):
    assert [p.field for p in rules.body_problems(nul_paths, lead_type, routing_key)] == fields
