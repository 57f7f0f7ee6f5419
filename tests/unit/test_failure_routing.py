"""What a caller is told about a dead-lettered message, and how bodies are read (shared/service.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError

from shared.contracts import ReturnRequest
from shared.contracts.errors import BadMessage, Refused
from shared.service import TransientError, decode_json, error_reply, refuse_nul_properties


def fake(**attributes: Any) -> Any:
    """A stand-in for the broker's message object: only the attributes the code reads."""
    return SimpleNamespace(**attributes)


def _validation_error() -> ValidationError:
    try:
        ReturnRequest.model_validate({"lead_id": "nope", "password": "hunter2"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


@pytest.mark.parametrize(
    ("exc", "code", "says"),
    [
        (_validation_error(), "bad_request", "return_id"),
        (json.JSONDecodeError("Expecting value", "x", 0), "bad_request", "not JSON"),
        (BadMessage("returns.commands has no handler for routing key 'x'"), "bad_request", "routing key"),
        (Refused("portal user 1 is disabled"), "refused", "portal user 1 is disabled"),
        (TransientError("appointment 1 does not exist (yet)"), "unavailable", "does not exist"),
        (asyncpg.DeadlockDetectedError("deadlock"), "unavailable", "deadlock"),
        (KeyError("internal detail"), "failed", "KeyError"),
    ],
)
def test_the_error_reply_names_the_kind_of_failure(exc, code, says):
    reply = error_reply(exc)
    assert (reply.ok, reply.error) == (False, code)
    assert says in reply.message


def test_a_validation_reply_never_echoes_the_input():
    assert "hunter2" not in error_reply(_validation_error()).message


def test_a_bug_does_not_tell_the_caller_its_details():
    assert "internal detail" not in error_reply(KeyError("internal detail")).message


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "text/json", "application/octet-stream", None]
)
def test_every_body_is_read_as_json_whatever_its_content_type(content_type):
    message = fake(body=b'{"a": [1, "x"]}', content_type=content_type)
    assert decode_json(message) == {"a": [1, "x"]}


def test_a_body_that_is_not_json_fails_to_decode():
    with pytest.raises(json.JSONDecodeError):
        decode_json(fake(body=b"{nope", content_type="application/json"))


@pytest.mark.parametrize("name", ["message_id", "correlation_id", "reply_to"])
def test_a_nul_in_a_property_is_refused(name):
    raw = fake(message_id="m", correlation_id="c", reply_to="r")
    refuse_nul_properties(raw)
    setattr(raw, name, "x\x00")
    with pytest.raises(BadMessage, match=name):
        refuse_nul_properties(raw)
