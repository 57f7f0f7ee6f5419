"""The Client Options screen's pure parts: effective values and their source, the form patch,
which field a catalog error belongs beside."""

from __future__ import annotations

import pytest
import yaml

from services.admin import rules
from shared.catalog.loader import CatalogInvalid, parse_catalog

CATALOG = parse_catalog(
    yaml.safe_dump(
        {
            "options": {"apply_groups_as_criteria": False, "default_return_pct_delivery_accounts": "12"},
            "lead_types": [{"id": "solar", "name": "Solar", "fields": [{"name": "phone"}]}],
            "clients": [
                {"id": "acme", "name": "Acme", "external_ref": "A-1", "options": {"allow_confirm_price": True}},
                {"id": "bolt", "name": "Bolt", "options": {"return_pct_orders": "3"}},
                {"id": "cody", "name": "Cody"},
            ],
            "groups": [
                {"id": "east", "name": "East", "clients": ["acme"], "apply_groups_as_criteria": True},
                {"id": "west", "name": "West", "clients": ["bolt"]},
            ],
            "delivery_accounts": [
                {
                    "id": "acme-solar",
                    "client": "acme",
                    "lead_type": "solar",
                    "price": "5",
                    "max_return_pct": "20",
                    "delivery": {"method": "email", "to": ["a@acme.test"]},
                }
            ],
            "orders": [
                {
                    "id": "o1",
                    "client": "acme",
                    "type": "lead_quantity",
                    "total": 5,
                    "start_date": "2026-01-01",
                    "max_return_pct": "7",
                },
            ],
        }
    )
)


def sources(client_id: str) -> list[tuple[str, str, str, str]]:
    return [(e.key, e.value, e.source, e.detail) for e in rules.effective_options(CATALOG, client_id)]


@pytest.mark.parametrize(
    ("client_id", "expected"),
    [
        (
            "acme",
            [
                ("apply_groups_as_criteria", "yes", "group", "group east"),
                ("allow_confirm_price", "yes", "client", ""),
                ("disable_portal_for_inactive_clients", "yes", "global", ""),
                ("expire_portal_email_link_days", "7", "global", "7 days"),
                ("delivery_force_id_mapping", "client_id", "global", "this client's client_id: acme"),
                ("route_duplicate_leads", "no", "global", ""),
                ("default_return_pct_delivery_accounts", "12", "global", ""),
                ("default_return_pct_orders", "10", "global", ""),
                ("default_return_pct_delivery_accounts", "20", "account", "account acme-solar"),
                ("default_return_pct_orders", "7", "order", "order o1"),
            ],
        ),
        (
            "bolt",
            [
                ("apply_groups_as_criteria", "no", "global", "group west does not set it"),
                ("allow_confirm_price", "no", "global", ""),
                ("disable_portal_for_inactive_clients", "yes", "global", ""),
                ("expire_portal_email_link_days", "7", "global", "7 days"),
                ("delivery_force_id_mapping", "client_id", "global", "this client's client_id: bolt"),
                ("route_duplicate_leads", "no", "global", ""),
                ("default_return_pct_delivery_accounts", "12", "global", ""),
                ("default_return_pct_orders", "3", "client", ""),
            ],
        ),
    ],
)
def test_effective_values_and_where_they_come_from(client_id, expected):
    assert sources(client_id) == expected


def test_a_client_in_no_group_follows_the_global_option_of_the_implicit_group():
    assert sources("cody")[0] == (
        "apply_groups_as_criteria",
        "no",
        "global",
        "in no group (the last, implicit group)",
    )


def full_form(**changes: str) -> dict[str, str]:
    form = {
        "global.apply_groups_as_criteria": "false",
        "global.allow_confirm_price": "false",
        "global.disable_portal_for_inactive_clients": "true",
        "global.expire_portal_email_link_days": "7",
        "global.delivery_force_id_mapping": "client_id",
        "global.route_duplicate_leads": "false",
        "global.default_return_pct_delivery_accounts": "12",
        "global.default_return_pct_orders": "10",
        "client.acme.allow_confirm_price": "true",
        "client.acme.route_duplicate_leads": "",
        "client.acme.return_pct_delivery_accounts": "",
        "client.acme.return_pct_orders": "",
        "group.east.apply_groups_as_criteria": "true",
    }
    form.update(changes)
    return form


def test_the_unchanged_form_patches_nothing():
    doc = CATALOG.model_dump(mode="json")
    patched, errors = rules.options_patch(doc, full_form())
    assert errors == {}
    assert parse_catalog(yaml.safe_dump(patched)) == CATALOG


def test_the_form_sets_and_clears_overrides():
    doc = CATALOG.model_dump(mode="json")
    form = full_form(
        **{
            "client.acme.allow_confirm_price": "",
            "client.acme.return_pct_orders": "4.5",
            "group.east.apply_groups_as_criteria": "",
            "global.expire_portal_email_link_days": "0",
        }
    )
    patched, errors = rules.options_patch(doc, form)
    assert errors == {}
    new = parse_catalog(yaml.safe_dump(patched))
    assert new.clients_by_id["acme"].options.allow_confirm_price is None
    assert str(new.clients_by_id["acme"].options.return_pct_orders) == "4.5"
    assert new.groups[0].apply_groups_as_criteria is None
    assert new.options.expire_portal_email_link_days == 0
    # bolt was not on the form: its override stays.
    assert str(new.clients_by_id["bolt"].options.return_pct_orders) == "3"
    changes = rules.option_changes(CATALOG, new)
    assert changes["clients.acme.options.allow_confirm_price"] == [True, None]
    assert changes["options.expire_portal_email_link_days"] == [7, 0]


def test_bad_values_are_errors_beside_their_fields():
    doc = CATALOG.model_dump(mode="json")
    form = full_form(
        **{
            "global.allow_confirm_price": "maybe",
            "global.delivery_force_id_mapping": "phone",
            "global.default_return_pct_orders": "",
            "global.expire_portal_email_link_days": "soon",
            "client.acme.return_pct_delivery_accounts": "150",
            "client.acme.route_duplicate_leads": "perhaps",
        }
    )
    patched, errors = rules.options_patch(doc, form)
    assert set(errors) == {
        "global.allow_confirm_price",
        "global.delivery_force_id_mapping",
        "global.default_return_pct_orders",
        "client.acme.route_duplicate_leads",
    }
    with pytest.raises(CatalogInvalid) as caught:
        parse_catalog(yaml.safe_dump(patched))
    fields = {rules.option_field(e.location) for e in caught.value.errors}
    assert fields == {"global.expire_portal_email_link_days", "client.acme.return_pct_delivery_accounts"}


@pytest.mark.parametrize(
    ("location", "field"),
    [
        ("options.default_return_pct_orders", "global.default_return_pct_orders"),
        ("clients[3] (a.b:c).options.return_pct_orders", "client.a.b:c.return_pct_orders"),
        ("groups[0] (east).apply_groups_as_criteria", "group.east.apply_groups_as_criteria"),
        ("clients[1] (bolt).external_ref", "global.delivery_force_id_mapping"),
        ("delivery_accounts[0] (x).price", None),
    ],
)
def test_option_field(location, field):
    assert rules.option_field(location) == field


def test_text_diff_marks_lines():
    diff = rules.text_diff("a\nb\n", "a\nc\n", before_name="v1", after_name="v2")
    assert ("del", "-b") in diff and ("add", "+c") in diff
