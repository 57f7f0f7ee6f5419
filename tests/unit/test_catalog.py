"""The catalog file: what is accepted, and every error reported with where it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.catalog.loader import CatalogInvalid, dump_catalog, parse_catalog
from shared.topology import topic_matches

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"


def errors_of(text: str) -> list[str]:
    with pytest.raises(CatalogInvalid) as caught:
        parse_catalog(text)
    return [str(e) for e in caught.value.errors]


def test_example_catalog_is_valid_and_round_trips():
    catalog = parse_catalog(EXAMPLE.read_text())
    assert {c.id for c in catalog.clients} >= {"sunrise", "helios"}
    assert parse_catalog(dump_catalog(catalog)) == catalog


def test_client_options_resolve_overrides_before_globals():
    catalog = parse_catalog(EXAMPLE.read_text())
    assert catalog.client_options("sunrise").allow_confirm_price is True  # client override
    assert catalog.client_options("brightpath").allow_confirm_price is False  # global
    assert catalog.client_options("helios").return_pct_delivery_accounts == 15
    assert catalog.client_options("brightpath").return_pct_delivery_accounts == 10
    assert catalog.client_options("helios").route_duplicate_leads is True


def test_every_error_is_reported_with_its_line_and_path():
    text = """\
options:
  expire_portal_email_link_days: -1
lead_types:
  - id: solar
    name: Solar
    duplicate_fields: [phone, nope]
    fields:
      - {name: phone, type: phone}
clients:
  - id: a
    name: A
    time_zone: Mars/Base
  - {id: b, name: B}
groups:
  - {id: g, name: G, clients: [b, ghost]}
delivery_accounts:
  - id: x
    client: b
    lead_type: solar
    price: -3
    delivery: {method: http, url: ftp://x}
  - id: y
    client: zz
    lead_type: solar
    price: 3
    criteria: [{field: colour, op: equals, value: red}]
    delivery: {method: http, url: "http://x"}
"""
    errors = errors_of(text)
    assert "line 2: options.expire_portal_email_link_days: Input should be greater than or equal to 0" in errors
    assert any(e.startswith("line 12: clients[0] (a).time_zone") and "Mars/Base" in e for e in errors)
    assert any(e.startswith("line 20: delivery_accounts[0] (x).price") for e in errors)
    assert any(e.startswith("line 21: delivery_accounts[0] (x).delivery.url") for e in errors)
    # References are checked too, in the same run, against the entries that are valid:
    assert "line 6: lead_types[0] (solar).duplicate_fields[1]: no field 'nope' in lead type 'solar'" in errors
    assert "line 15: groups[0] (g).clients[1]: unknown client 'ghost'" in errors
    assert "line 23: delivery_accounts[1] (y).client: unknown client 'zz'" in errors
    assert "line 26: delivery_accounts[1] (y).criteria[0].field: no field 'colour' in lead type 'solar'" in errors


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("clients:\n  - {id: a, name: A}\n  - {id: a, name: A2}\n", "duplicate id 'a'"),
        ("lead_types:\n  - {id: t, name: T, fields: [{name: c, type: choice}]}\n", "choices"),
        ("nonsense: 1\n", "Extra inputs are not permitted"),
        ("clients: [\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping of sections"),
        ("options: {delivery_force_id_mapping: shoe_size}\n", "client_id"),
    ],
)
def test_individual_errors(snippet, message):
    assert any(message in e for e in errors_of(snippet))


def test_force_id_values_must_name_one_client():
    text = """\
options: {delivery_force_id_mapping: external_ref}
clients:
  - {id: a, name: A, external_ref: X1}
  - {id: b, name: B, external_ref: X1}
"""
    assert any("external_ref 'X1' is also used by client 'a'" in e for e in errors_of(text))


def test_order_accounts_must_belong_to_the_orders_client():
    text = EXAMPLE.read_text().replace("accounts: [helios-solar]", "accounts: [sunrise-solar]")
    assert any("belongs to client 'sunrise', not 'helios'" in e for e in errors_of(text))


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("lead.#", "lead.solar", True),
        ("lead.#", "lead", True),
        ("lead.*", "lead.solar.v2", False),
        ("notify.#", "notify.order_filled", True),
        ("delivery.succeeded", "delivery.failed", False),
        ("*.requested", "delivery.requested", True),
    ],
)
def test_topic_matching(pattern, key, matches):
    assert topic_matches(pattern, key) is matches
