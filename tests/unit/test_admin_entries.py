"""The catalog entry forms (delivery accounts, groups, orders): form -> catalog entry, catalog
error -> the field it belongs beside, entry -> form, and the audit's masked changes."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from starlette.datastructures import FormData, UploadFile

from services.admin import rules
from shared.catalog.loader import CatalogInvalid, parse_catalog

CATALOG: dict[str, Any] = {
    "lead_types": [{"id": "solar", "name": "Solar", "fields": [{"name": "state"}, {"name": "phone", "type": "phone"}]}],
    "clients": [{"id": "acme", "name": "Acme"}, {"id": "bolt", "name": "Bolt"}],
    "delivery_accounts": [
        {
            "id": "acme-solar",
            "client": "acme",
            "lead_type": "solar",
            "price": "10",
            "delivery": {
                "method": "http",
                "url": "https://buyer.example/post",
                "auth": {"type": "bearer", "token": "sekret"},
                "success": {"contains": "OK"},
            },
        }
    ],
}


def account_form(**overrides: str | list[str]) -> FormData:
    values: dict[str, str | list[str]] = {
        "client": "acme",
        "lead_type": "solar",
        "active": "on",
        "price": "12.50",
        "schedule.days": ["mon", "tue"],
        "schedule.start": "09:00",
        "schedule.end": "17:00",
        "caps.daily": "20",
        "criteria.0.field": "state",
        "criteria.0.op": "in",
        "criteria.0.value": "CA, NV",
        "criteria.1.field": "",
        "criteria.1.op": "",
        "criteria.2.field": "phone",
        "criteria.2.op": "regex",
        "criteria.2.value": "^1",
        "delivery.method": "http",
        "delivery.url": "https://buyer.example/v2",
        "delivery.format": "form",
        "delivery.field_map": "st = state\nph = phone",
        "delivery.auth.type": "bearer",
        "delivery.auth.token": "",
    }
    values.update(overrides)
    items: list[tuple[str, str | UploadFile]] = [
        (k, x) for k, v in values.items() for x in (v if isinstance(v, list) else [v])
    ]
    return FormData(items)


def test_an_account_form_becomes_an_entry_keeping_what_the_form_does_not_show():
    current = CATALOG["delivery_accounts"][0]
    entry, errors, origin = rules.account_entry(account_form(), current)
    assert errors == {}
    assert entry["price"] == "12.50" and entry["caps"] == {"daily": "20"}
    assert entry["schedule"] == {"days": ["mon", "tue"], "start": "09:00", "end": "17:00"}
    assert entry["criteria"] == [
        {"field": "state", "op": "in", "value": ["CA", "NV"]},
        {"field": "phone", "op": "regex", "value": "^1"},
    ]
    assert origin == {0: 0, 1: 2}  # the blank middle row is gone; errors map back to row 2
    delivery = entry["delivery"]
    assert delivery["auth"] == {"type": "bearer", "token": "sekret"}  # blank keeps the secret
    assert delivery["success"] == {"contains": "OK"}  # not on the form: kept
    assert delivery["field_map"] == {"st": "state", "ph": "phone"}
    parse_catalog(yaml.safe_dump({**CATALOG, "delivery_accounts": [entry]}))


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"price": ""}, "price", "Enter a price"),
        ({"schedule.days": []}, "schedule.days", "at least one day"),
        ({"delivery.method": "fax"}, "delivery.method", "http or email"),
        ({"delivery.url": ""}, "delivery.url", "buyer's URL"),
        ({"delivery.field_map": "no equals sign"}, "delivery.field_map", "Line 1"),
        ({"delivery.auth.type": "basic"}, "delivery.auth.username", "user name"),
        ({"criteria.1.op": "equals"}, "criteria.1.field", "lead field"),
    ],
)
def test_an_account_form_refuses_what_it_can_tell(overrides, field, message):
    _, errors, _ = rules.account_entry(account_form(**overrides), CATALOG["delivery_accounts"][0])
    assert message in errors[field]


def catalog_errors_for(entry: dict) -> list[str]:
    try:
        parse_catalog(yaml.safe_dump({**CATALOG, "delivery_accounts": [entry]}))
    except CatalogInvalid as exc:
        return [e.location for e in exc.errors]
    return []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"price": "lots"}, "price"),
        ({"caps.daily": "-1"}, "caps.daily"),
        ({"schedule.start": "25:99"}, "schedule.start"),
        ({"delivery.url": "ftp://x"}, "delivery.url"),
        ({"criteria.2.field": "nope"}, "criteria.2.field"),
        ({"criteria.2.value": "("}, "criteria.2"),
        ({"client": "nobody"}, "client"),
        ({"delivery.format": "csv"}, "delivery.format"),
    ],
)
def test_catalog_errors_land_beside_their_field(overrides, field):
    entry, errors, origin = rules.account_entry(account_form(**overrides), CATALOG["delivery_accounts"][0])
    assert errors == {}
    locations = catalog_errors_for(entry)
    assert locations, "the catalog should refuse it"
    assert {rules.entry_field("account", 0, loc, origin) for loc in locations} == {field}


@pytest.mark.parametrize(
    ("location", "field"),
    [
        ("delivery_accounts[0] (acme-solar).caps.daily", "caps.daily"),
        ("delivery_accounts[0].schedule.days[3]", "schedule.days"),
        ("delivery_accounts[0] (acme-solar).delivery.success.regex", "delivery"),
        ("delivery_accounts[1] (other).price", None),
        ("orders[0] (o1).accounts[0]", None),
    ],
)
def test_entry_field(location, field):
    assert rules.entry_field("account", 0, location, {}) == field


def test_entry_form_values_round_trip_and_never_show_a_secret():
    values = rules.entry_form_values("account", CATALOG["delivery_accounts"][0])
    assert "sekret" not in str(values)
    assert values["delivery.auth.has_secret"] is True
    assert values["criteria_rows"] == [0, 1]  # no criteria, two blank rows
    group = rules.entry_form_values("group", {"id": "g", "name": "G", "clients": ["acme", "bolt"]})
    entry, errors, _ = rules.group_entry(FormData({**group, "apply_groups_as_criteria": "false"}), {"id": "g"})
    assert errors == {} and entry["clients"] == ["acme", "bolt"] and entry["apply_groups_as_criteria"] is False


def test_order_form():
    form = FormData(
        {
            "id": "o1",
            "client": "acme",
            "type": "dollar_amount",
            "total": "500",
            "start_date": "2026-01-01",
            "accounts": "",
        }
    )
    entry, errors, _ = rules.order_entry(form, None)
    assert errors == {} and entry["accounts"] == "all" and entry["auto_charge"] is False
    _, errors, _ = rules.order_entry(FormData({"accounts": "a, b"}), None)
    assert set(errors) == {"id", "client", "type", "total", "start_date"}


def test_entry_changes_mask_secrets():
    before = CATALOG["delivery_accounts"][0]
    after = {**before, "price": "11", "delivery": {**before["delivery"], "auth": {"type": "bearer", "token": "new"}}}
    changes = rules.entry_changes(before, after)
    assert changes["price"] == ["10", "11"]
    assert changes["delivery.auth.token"] == [rules.SECRET_MASK, rules.SECRET_MASK]
    assert "sekret" not in str(changes) and "new" not in str(changes)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("+1 (415) 555-0100", "4155550100"),
        ("415.555.0100", "4155550100"),
        ("1-415-555-0100", "4155550100"),
        ("555-0100", "5550100"),  # partial: its digits
    ],
)
def test_lead_search_normalises_a_phone_as_the_router_stores_it(typed, stored):
    filters, errors, _ = rules.parse_lead_search({"contact": typed}, {})
    assert errors == {}
    assert filters["contact"] == stored


@pytest.mark.parametrize(
    ("loaded", "current", "ago", "state"),
    [(3, 3, 1, "current"), (2, 3, 1, "behind"), (3, 3, 31, "stale"), (2, 3, 120, "stale"), (3, 3, 30, "current")],
)
def test_process_state(loaded, current, ago, state):
    assert rules.process_state(loaded, current, ago) == state
