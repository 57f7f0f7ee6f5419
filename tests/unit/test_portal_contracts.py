"""portal_auth contracts and credentials: passwords stay out of reprs, tokens and hashes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from services.portal_auth import credentials
from services.portal_auth.credentials import Passwords
from shared.contracts.portal_auth import ChangePassword, Login, PortalAuthRequest, ResetPassword
from shared.service import validation_summary

# mypy reads TypeAdapter's argument as a class; an Annotated union is a special form pydantic takes.
REQUEST: TypeAdapter[PortalAuthRequest] = TypeAdapter(PortalAuthRequest)  # type: ignore[arg-type, unused-ignore]
SECRET = "correct horse battery staple"


@pytest.mark.parametrize(
    "request_",
    [
        Login(email="a@b.c", password=SecretStr(SECRET)),
        ChangePassword(token="t", current_password=SecretStr(SECRET), new_password=SecretStr(SECRET + "!")),
        ResetPassword(reset_token="t", new_password=SecretStr(SECRET)),
    ],
)
def test_passwords_travel_on_the_wire_but_never_show_in_reprs(request_):
    assert SECRET not in repr(request_) and SECRET not in str(request_)
    wire = request_.model_dump(mode="json")
    assert any(v.startswith(SECRET) for v in wire.values() if isinstance(v, str))
    assert REQUEST.validate_python(wire) == request_


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"op": "login", "email": "a@b.c"}, "password"),
        ({"op": "nope"}, "op"),
        ({"op": "login", "email": "a@b.c", "password": SECRET, "extra": 1}, "extra"),
        ({"op": "login", "email": "a@b.c", "password": "x" * 1025}, "password"),
    ],
)
def test_validation_summary_names_the_field_but_not_the_value(body, where):
    with pytest.raises(ValidationError) as info:
        REQUEST.validate_python(body)
    summary = validation_summary(info.value)
    assert where in summary
    assert SECRET not in summary and "x" * 20 not in summary


def test_tokens_store_only_a_digest_and_check_in_constant_time():
    row_id, token, stored = credentials.new_token()
    parsed = credentials.split_token(token)
    assert parsed is not None and parsed[0] == row_id
    assert parsed[1].encode() not in stored
    assert credentials.secret_matches(parsed[1], stored)
    assert not credentials.secret_matches(parsed[1] + "x", stored)


@pytest.mark.parametrize("token", ["", "abc", "not-a-uuid.secret", f"{uuid.uuid4()}.", "."])
def test_malformed_tokens_do_not_parse(token):
    assert credentials.split_token(token) is None


def test_argon2id_hashes_verify_and_refuse():
    passwords = Passwords(time_cost=1, memory_cost=8192, parallelism=1)

    async def run() -> tuple[str, bool, bool, bool]:
        stored = await passwords.hash(SECRET)
        return (
            stored,
            await passwords.verify(stored, SECRET),
            await passwords.verify(stored, SECRET + "x"),
            await passwords.verify(None, SECRET),
        )

    stored, right, wrong, missing = asyncio.run(run())
    assert stored.startswith("$argon2id$") and SECRET not in stored
    assert (right, wrong, missing) == (True, False, False)
    assert not passwords.needs_rehash(stored)
    assert Passwords(time_cost=2, memory_cost=8192, parallelism=1).needs_rehash(stored)


async def test_the_client_answers_a_request_its_contract_refuses_without_sending_it():
    """A NUL (or an over-long token) in what the portal passes on is `bad_request`, never an
    exception in the web tier (the portal's /link/%00 was a 500)."""
    from services.portal_auth.client import PortalAuthClient
    from shared.contracts.portal_auth import Failure
    from shared.topology import Topology

    class NoBroker:
        async def request(self, *args, **kwargs):
            raise AssertionError("nothing is sent")

    client = PortalAuthClient(NoBroker(), Topology("t"))  # type: ignore[arg-type, unused-ignore]
    for answer in (
        await client.check_link("\x00"),
        await client.verify("x" * 600),
        await client.login("a\x00@b.c", "pw"),
    ):
        assert isinstance(answer, Failure)
        assert (answer.ok, answer.error) == (False, "bad_request")
