"""The catalog's display metadata for the Client Portal: field labels, list columns, and which
fields are the lead's contact (shared/catalog/model.py, docs/catalog.md)."""

from __future__ import annotations

import pytest
import yaml

from shared.catalog.loader import CatalogInvalid, parse_catalog
from shared.catalog.model import LeadType


def lead_type(**overrides: object) -> LeadType:
    doc: dict[str, object] = {
        "id": "solar",
        "name": "Solar",
        "fields": [
            {"name": "first_name"},
            {"name": "last_name"},
            {"name": "work_email", "type": "email"},
            {"name": "home_email", "type": "email"},
            {"name": "mobile", "type": "phone"},
            {"name": "zip", "type": "zip", "label": "ZIP code"},
        ],
    }
    doc.update(overrides)
    return LeadType.model_validate(doc)


def test_labels_default_to_the_name_in_words():
    t = lead_type()
    assert [f.display_label for f in t.fields] == [
        "First name",
        "Last name",
        "Work email",
        "Home email",
        "Mobile",
        "ZIP code",
    ]


def test_the_contact_defaults_to_the_first_email_and_phone_and_the_name_fields():
    t = lead_type()
    assert (t.contact_email_field, t.contact_phone_field, t.contact_name_fields) == (
        "work_email",
        "mobile",
        ("first_name", "last_name"),
    )
    assert t.list_columns == ("first_name", "last_name", "mobile", "work_email")


def test_the_contact_and_list_columns_can_be_named():
    t = lead_type(
        contact={"email": "home_email", "name": ["last_name"]},
        fields=[
            {"name": "first_name"},
            {"name": "last_name", "list_column": True},
            {"name": "work_email", "type": "email"},
            {"name": "home_email", "type": "email", "list_column": True},
        ],
    )
    assert t.contact_email_field == "home_email" and t.contact_name_fields == ("last_name",)
    assert t.contact_phone_field is None
    assert t.list_columns == ("last_name", "home_email")


def test_a_type_without_contact_fields_lists_its_first_three():
    t = LeadType.model_validate(
        {"id": "x", "name": "X", "fields": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}
    )
    assert t.list_columns == ("a", "b", "c") and t.contact_email_field is None


@pytest.mark.parametrize(
    ("contact", "where"),
    [
        ({"email": "nope"}, "lead_types[0] (solar).contact.email"),
        ({"phone": "nope"}, "lead_types[0] (solar).contact.phone"),
        ({"name": ["first_name", "nope"]}, "lead_types[0] (solar).contact.name[1]"),
    ],
)
def test_contact_fields_must_exist(contact, where):
    doc = {
        "lead_types": [
            {"id": "solar", "name": "Solar", "fields": [{"name": "first_name"}], "contact": contact},
        ]
    }
    with pytest.raises(CatalogInvalid) as error:
        parse_catalog(yaml.safe_dump(doc))
    assert any(where in str(e) and "no field 'nope'" in str(e) for e in error.value.errors), error.value.errors


def test_labels_must_not_be_empty():
    with pytest.raises(ValueError):
        lead_type(fields=[{"name": "a", "label": ""}])
