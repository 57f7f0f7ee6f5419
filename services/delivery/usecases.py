"""Delivery use case: post one lead to one buyer, log it, and report the result.

The post itself cannot join a database transaction, so a delivery moves through states that make
a second successful post impossible in normal operation: 'requested' -> 'posting' (claimed in its
own short transaction, before the post) -> 'succeeded' / 'failed' / back to 'requested' for a
retry (recorded with the attempt log and the resulting event in one transaction). Every post
carries the delivery id as its Idempotency-Key header for the rare case a consumer dies mid-post
and the post is repeated.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg
import httpx

from services.delivery import posting, store
from shared.catalog.model import Catalog, HttpDelivery
from shared.contracts import DeliveryFailed, DeliveryRequested, DeliverySucceeded
from shared.outbox import add_delayed, add_event
from shared.topology import Topology


async def deliver(
    pool: asyncpg.Pool, http: httpx.AsyncClient, catalog: Catalog, topology: Topology,
    request: DeliveryRequested, *, redelivered: bool,
) -> None:
    async with pool.acquire() as conn:
        attempt = await store.claim(conn, request.delivery_id, reclaim=redelivered)
    if attempt is None:
        return  # finished already, or another consumer is posting it right now

    account = catalog.accounts_by_id.get(request.delivery_account_id)
    if account is None or not isinstance(account.delivery, HttpDelivery):
        reason = ("delivery account no longer in the catalog" if account is None
                  else f"delivery method {account.delivery.method!r} is not handled by HTTP delivery")
        async with pool.acquire() as conn, conn.transaction():
            if await store.finish(conn, request.delivery_id, "failed", reason=reason):
                await add_event(conn, "delivery.failed", _failed(request, reason, attempt, by_buyer=False))
        return

    config = account.delivery
    buyer_request = posting.build_request(
        config, request.fields, lead_id=str(request.lead_id), delivery_id=str(request.delivery_id),
        price=request.price,
    )
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    status_code: int | None = None
    response_text: str | None = None
    try:
        response = await http.request(
            buyer_request.method, buyer_request.url, headers=buyer_request.headers,
            content=buyer_request.body, params=buyer_request.params or None, timeout=config.timeout_seconds,
        )
        status_code, response_text = response.status_code, response.text
        verdict = posting.judge_response(config, status_code, response_text)
    except httpx.TimeoutException:
        verdict = posting.Verdict("transient", reason=f"no answer within {config.timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        verdict = posting.Verdict("transient", reason=f"connection failed: {type(exc).__name__}: {exc}")
    duration_ms = int((time.perf_counter() - clock) * 1000)

    note = verdict.reason
    final_price = request.price
    if verdict.outcome == "accepted" and (verdict.price is not None or verdict.price_problem):
        if not catalog.option(account.client, "allow_confirm_price"):
            shown = verdict.price if verdict.price is not None else verdict.price_problem
            note = f"confirmed price ignored: Allow Confirm Price is off (buyer said {shown})"
        elif verdict.price_problem:
            note = f"confirmed price refused: {verdict.price_problem}"
        else:
            final_price = verdict.price
            note = f"buyer confirmed price {verdict.price} (account price {request.price})"

    async with pool.acquire() as conn, conn.transaction():
        await store.log_attempt(
            conn, delivery_id=request.delivery_id, attempt=attempt, started_at=started_at,
            duration_ms=duration_ms, request=posting.describe_request(buyer_request), status_code=status_code,
            response=posting.masked(response_text, buyer_request.secrets), outcome=verdict.outcome, error=note,
        )
        if verdict.outcome == "accepted":
            if await store.finish(conn, request.delivery_id, "succeeded", price=final_price):
                await add_event(conn, "delivery.succeeded", DeliverySucceeded(
                    delivery_id=request.delivery_id, lead_id=request.lead_id, client_id=request.client_id,
                    delivery_account_id=request.delivery_account_id, price=final_price, attempts=attempt,
                ))
        elif verdict.outcome == "transient" and attempt <= config.retry.count:
            if await store.release_for_retry(conn, request.delivery_id, verdict.reason or "transient failure"):
                await add_delayed(conn, topology.delay_name("delivery.requests", config.retry.delay_seconds), request)
        else:
            reason = verdict.reason or "delivery failed"
            if verdict.outcome == "transient":
                reason = f"{reason} (gave up after {attempt} attempts)"
            if await store.finish(conn, request.delivery_id, "failed", reason=reason):
                await add_event(conn, "delivery.failed",
                                _failed(request, reason, attempt, by_buyer=verdict.outcome == "rejected"))


def _failed(request: DeliveryRequested, reason: str, attempts: int, *, by_buyer: bool) -> DeliveryFailed:
    return DeliveryFailed(
        delivery_id=request.delivery_id, lead_id=request.lead_id, client_id=request.client_id,
        delivery_account_id=request.delivery_account_id, reason=reason, attempts=attempts,
        rejected_by_buyer=by_buyer,
    )
