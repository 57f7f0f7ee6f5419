"""The lead source's contract at its edges (issue 14): NUL characters, content types, the
idempotency header's spelling, the routing key against the body's lead type. A lead that is JSON
is kept and answered; nothing here may end as a database error or a dead letter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.delivery.main import build as build_delivery
from services.router.main import build as build_router
from tests.support import EventTap, apply_yaml, catalog_yaml, lead_body, new_key, publish_raw, wait_for

pytestmark = pytest.mark.integration

NUL_ERROR = "must not contain the NUL character (\\u0000)"


@pytest_asyncio.fixture
async def system(settings, buyer) -> AsyncIterator[None]:
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    async with build_router(settings).running(), build_delivery(settings).running():
        yield


def _with(body: dict, **top) -> dict:
    return {**body, **top}


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        (lead_body(first_name="Ada\u0000"), None, "first_name"),
        (_with(lead_body(), source="web\u0000"), None, "source"),
        (_with(lead_body(), lead_type="solar\u0000"), None, "lead_type"),
        (_with(lead_body(), force_id="ACME\u0000"), None, "force_id"),
        (lead_body(**{"nick\u0000name": "x"}), None, "nick\ufffdname"),
        (lead_body(), {"idempotency-key": "key-\u0000"}, "idempotency_key"),
    ],
)
async def test_a_nul_anywhere_in_a_lead_keeps_it_and_rejects_it_with_the_reason(
    settings, system, conn, body, headers, field
):
    async with EventTap(settings) as tap:
        await publish_raw(settings, body, message_id=new_key(), headers=headers)
        await wait_for(lambda: tap.bodies("lead.rejected"))
    [outcome] = tap.bodies("lead.rejected")
    assert {"field": field, "message": NUL_ERROR} in outcome["errors"]
    row = await conn.fetchrow("SELECT status, errors FROM leads")
    assert row["status"] == "rejected" and {"field": field, "message": NUL_ERROR} in row["errors"]
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


@pytest.mark.parametrize("content_type", ["text/plain", "text/json", "application/octet-stream", None])
async def test_a_json_lead_is_a_lead_whatever_its_content_type(settings, system, conn, content_type):
    async with EventTap(settings) as tap:
        await publish_raw(settings, lead_body(), message_id="typed-1", content_type=content_type)
        await wait_for(lambda: tap.bodies("lead.sold"))
    assert tap.bodies("lead.sold")[0]["idempotency_key"] == "typed-1"
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_the_idempotency_key_header_is_matched_whatever_its_case(settings, system, conn, buyer):
    async with EventTap(settings) as tap:
        for spelling, message_id in (("Idempotency-Key", "m-1"), ("IDEMPOTENCY-KEY", "m-2")):
            await publish_raw(settings, lead_body(), message_id=message_id, headers={spelling: "same-lead"})
        await wait_for(lambda: tap.bodies("lead.sold"))
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
    assert await conn.fetchval("SELECT array_agg(idempotency_key) FROM leads") == ["same-lead"]
    assert len(tap.bodies()) == 1 and buyer.paths() == ["/acme"]


async def test_a_lead_type_that_disagrees_with_the_routing_key_is_rejected(settings, system):
    async with EventTap(settings) as tap:
        await publish_raw(settings, lead_body(), message_id=new_key(), routing_key="lead.roofing")
        await wait_for(lambda: tap.bodies("lead.rejected"))
    errors = tap.bodies("lead.rejected")[0]["errors"]
    assert [e["field"] for e in errors] == ["lead_type"]
    assert "'lead.roofing'" in errors[0]["message"]
