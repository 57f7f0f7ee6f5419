"""A return request sent twice at once (a double-clicked portal form, two replicas taking the two
copies) is one return with one set of events: the repeat waits for the first under the client's
lock, then answers with its outcome."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.returns import usecases
from shared import db
from shared.contracts import ReturnRequest
from shared.process import Standalone
from tests.returns_support import catalog_of, outbox_keys, returns_catalog, sell
from tests.support import apply_yaml

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def pool(settings):
    p = await db.create_pool(settings.database_url, min_size=1, max_size=12)
    yield p
    await p.close()


@pytest.mark.parametrize("auto_approve", [False, True])
async def test_copies_of_one_request_at_once_make_one_return_and_one_set_of_events(settings, conn, pool, auto_approve):
    await apply_yaml(
        settings.database_url,
        returns_catalog(
            options={"default_return_pct_delivery_accounts": "100"}, client={"auto_approve_returns": auto_approve}
        ),
    )
    deps = usecases.Deps(Standalone(pool, await catalog_of(conn)))
    ((lead_id, _),) = await sell(conn, at=datetime.now(UTC) - timedelta(hours=1))
    request = ReturnRequest(return_id=uuid.uuid4(), client_id="acme", lead_id=lead_id, reason="bad phone")
    outcomes = await asyncio.gather(*(usecases.request_return(deps, request) for _ in range(8)))
    status = "approved" if auto_approve else "pending"
    assert {(o.return_id, o.status, o.decision_reason) for o in outcomes} == {
        (request.return_id, status, "auto_approved" if auto_approve else None)
    }
    assert await conn.fetchval("SELECT count(*) FROM returns") == 1
    keys = await outbox_keys(conn)
    assert keys.count("return.requested") == 1
    assert keys.count("return.decided") == (1 if auto_approve else 0)
    if auto_approve:
        assert await conn.fetchval("SELECT count(*) FROM client_balance_entries") == 1
