"""NUL characters never reach PostgreSQL through a contract (shared/contracts/base.py)."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from shared.contracts import AppointmentCancel, InboundLead, ReturnRequest
from shared.contracts.base import nul_paths, without_nul


@pytest.mark.parametrize(
    ("value", "paths"),
    [
        ({"a": "ok", "b": ["x", {"c": 1}]}, []),
        ({"a": "no\x00"}, ["a"]),
        ({"fields": {"first_name": "Ada\x00"}}, ["fields.first_name"]),
        ({"fields": {"na\x00me": "x"}}, ["fields.na\ufffdme"]),
        ({"tags": ["a", "b\x00"]}, ["tags.1"]),
        ({"a": {"b": {"c": "\x00"}}, "d": "\x00"}, ["a.b.c", "d"]),
    ],
)
def test_nul_paths_finds_every_nul_in_values_and_keys(value, paths):
    assert nul_paths(value) == paths
    assert nul_paths(without_nul(value)) == []


def test_without_nul_keeps_everything_else():
    assert without_nul({"a\x00": ["x\x00y", 1, None, {"b": "c"}]}) == {"a\ufffd": ["x\ufffdy", 1, None, {"b": "c"}]}


@pytest.mark.parametrize(
    ("contract", "data"),
    [
        (
            ReturnRequest,
            {"return_id": str(uuid.uuid4()), "client_id": "a", "lead_id": str(uuid.uuid4()), "reason": "x\x00"},
        ),
        (
            AppointmentCancel,
            {"appointment_id": str(uuid.uuid4()), "client_id": "a\x00", "requested_at": "2026-01-01T00:00Z"},
        ),
    ],
)
def test_a_command_with_a_nul_is_refused_naming_the_field(contract, data):
    with pytest.raises(ValidationError, match=r"(reason|client_id): must not contain the NUL character"):
        contract.model_validate(data)


def test_a_lead_with_a_nul_is_kept_with_the_places_to_report():
    lead = InboundLead.model_validate(
        {"lead_type": "solar", "source": "w\x00b", "fields": {"first_name": "Ada\x00"}, "force_id": "x\x00"}
    )
    assert (lead.source, lead.fields, lead.force_id) == ("w\ufffdb", {"first_name": "Ada\ufffd"}, "x\ufffd")
    assert lead.nul_paths == ["source", "fields.first_name", "force_id"]
    assert InboundLead.model_validate({"lead_type": "solar", "source": "web", "fields": {}}).nul_paths == []
