"""Delivery use cases: post one lead to one buyer (or hand it to notifier for an email account),
log it, report the result; and apply a buyer's confirmed price.

The post itself cannot join a database transaction, so a delivery moves through states that make
a second post impossible while its poster lives: 'requested' -> 'posting' (claimed under a lease
in its own short transaction, before the post) -> 'succeeded' / 'failed' / back to 'requested'
with a not-before time for a retry (recorded with the attempt log and the resulting events in one
transaction, fenced by the attempt number). Only when a poster dies (or stalls past its lease)
mid-post does another consumer post again, with the same Idempotency-Key header so the buyer can
recognise the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from services.delivery import posting, rules, store
from services.delivery.buyers import BuyerClients, HttpError
from shared import metrics
from shared.batching import Batcher
from shared.catalog.model import Catalog, DeliveryAccount, EmailDelivery, HttpDelivery
from shared.contracts import (
    ConfirmPrice,
    DeliveryFailed,
    DeliveryPriceConfirmed,
    DeliveryRequested,
    DeliverySucceeded,
    NotificationRequested,
    PriceConfirmationResult,
)
from shared.contracts.errors import Refused
from shared.contracts.notifier import AccountPausedData, LeadDeliveryData
from shared.outbox import add_delayed, add_event, add_reply, claim_message, event
from shared.portal_links import issue_link_token, portal_link
from shared.process import Process
from shared.service import TransientError
from shared.settings import Settings
from shared.topology import Topology

log = logging.getLogger("leadwire.delivery")

REQUESTS = "delivery.requests"
CONFIRM_CONSUMER = "delivery.confirm-price"


class UnknownDelivery(Refused):
    """A message names a delivery this installation never made (dead-lettered with this error)."""


@dataclass(frozen=True)
class Deps:
    """What the delivery use cases need (built once, in main.py)."""

    process: Process
    http: BuyerClients
    topology: Topology
    in_flight: rules.InFlight = field(default_factory=rules.InFlight)
    after_post: Callable[[], None] | None = None  # fault injection: right after the buyer answered
    # The claims and the answered posts' finishes of concurrent handlers, each batch in one
    # statement (shared/batching.py; built in main.py). None: one statement each.
    claims: Batcher[store.ToClaim, store.Claimed | None] | None = None
    finishes: Batcher[store.Finish, bool] | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        return self.process.pool

    @property
    def settings(self) -> Settings:
        return self.process.settings


async def deliver(deps: Deps, request: DeliveryRequested) -> None:
    catalog = deps.process.catalog
    account = catalog.accounts_by_id.get(request.delivery_account_id)
    http_account = account if account is not None and isinstance(account.delivery, HttpDelivery) else None
    if http_account is not None:
        config = http_account.delivery
        assert isinstance(config, HttpDelivery)
        limit = rules.in_flight_limit(config.max_in_flight, deps.settings.prefetch_for("delivery"))
        if not deps.in_flight.try_acquire(http_account.id, limit):
            # Waiting here would hold a consumer slot other buyers need: wait in the broker instead,
            # for about as long as the leads ahead of this one will take at this buyer's pace.
            now = time.monotonic()
            seconds = rules.busy_park_seconds(
                deps.in_flight.typical_answer(http_account.id), deps.in_flight.waiting(http_account.id, now), limit
            )
            tier = await _park(deps, request, seconds, f"{http_account.id} has {limit} posts in flight")
            deps.in_flight.parked(http_account.id, now + tier)
            return
        try:
            await _deliver(deps, catalog, request, http_account)
        finally:
            deps.in_flight.release(http_account.id)
        return
    await _deliver(deps, catalog, request, account)


async def _park(deps: Deps, request: DeliveryRequested, seconds: float, why: str) -> int:
    """Send the request to the delay queue of about `seconds`; returns that queue's delay."""
    tier = rules.park_tier(seconds)
    log.debug("delivery %s waits %d s: %s", request.delivery_id, tier, why)
    async with deps.pool.acquire() as conn:  # one statement: atomic without BEGIN/COMMIT
        await add_delayed(conn, deps.topology.delay_name(REQUESTS, tier), request)
    return tier


async def _deliver(deps: Deps, catalog: Catalog, request: DeliveryRequested, account: DeliveryAccount | None) -> None:
    config = account.delivery if account is not None else None
    lease = (config.timeout_seconds if isinstance(config, HttpDelivery) else 0) + rules.LEASE_GRACE_SECONDS
    wanted = store.ToClaim(request.delivery_id, account.id if account is not None else None, lease)
    claimed = await (deps.claims.submit(wanted) if deps.claims is not None else claim_one(deps.pool, wanted))
    if claimed is None:
        await _missed_claim(deps, request)
        return
    attempt = claimed.attempt
    refusal = rules.refusal_before_post(
        account_known=account is not None,
        account_active=account is not None and account.active,
        paused=claimed.paused,
        paused_reason=claimed.paused_reason,
        attempt=attempt,
        retry_count=config.retry.count if isinstance(config, HttpDelivery) else 0,
    )
    if refusal is not None:
        async with deps.pool.acquire() as conn, conn.transaction():
            if await store.finish(conn, request.delivery_id, attempt, "failed", reason=refusal, posted=False):
                await add_event(conn, "delivery.failed", _failed(request, refusal, attempt - 1, by_buyer=False))
        log.info("delivery %s failed before posting: %s", request.delivery_id, refusal)
        return
    if isinstance(config, EmailDelivery):
        async with deps.pool.acquire() as conn, conn.transaction():
            await _send_by_email(conn, deps.settings, request, config, attempt)
        return
    assert account is not None and isinstance(config, HttpDelivery)
    await _post(deps, catalog, request, account, config, attempt)


async def claim_one(pool: asyncpg.Pool, wanted: store.ToClaim) -> store.Claimed | None:
    return await store.claim(pool, wanted.delivery_id, wanted.account_id, lease_seconds=wanted.lease_seconds)


async def finish_one(pool: asyncpg.Pool, finish: store.Finish) -> bool:
    """An answered post's log, failure-count reset, close and result event: one statement."""
    return await store.log_and_finish(
        pool,
        finish.entry,
        reset_failures_of=finish.reset_failures_of,
        status=finish.status,
        price=finish.price,
        reason=finish.reason,
        event=finish.event,
    )


async def _missed_claim(deps: Deps, request: DeliveryRequested) -> None:
    """Someone else holds the delivery, it is finished, or its retry is not due: park or drop."""
    async with deps.pool.acquire() as conn, conn.transaction():
        found = await store.state(conn, request.delivery_id)
        missed = rules.after_missed_claim(
            found.status if found else None,
            found.now if found else datetime.now(UTC),
            not_before=found.not_before if found else None,
            lease_until=found.lease_until if found else None,
        )
        if missed.action == "park":
            tier = rules.park_tier(missed.seconds)
            await add_delayed(conn, deps.topology.delay_name(REQUESTS, tier), request)
    log.debug("delivery %s not claimed (%s): %s", request.delivery_id, missed.why, missed.action)


async def _send_by_email(
    conn: asyncpg.Connection, settings: Settings, request: DeliveryRequested, config: EmailDelivery, attempt: int
) -> None:
    """Hand the lead to notifier; the delivery succeeds once the request is committed. The
    notification id is the delivery id, so notifier sends it at most once."""
    started_at = datetime.now(UTC)
    token = issue_link_token(
        settings.portal_link_secret, client_id=request.client_id, lead_id=request.lead_id, issued_at=started_at
    )
    await add_event(
        conn,
        "notify.lead_delivery",
        NotificationRequested(
            notification_id=request.delivery_id,
            kind="lead_delivery",
            to=list(config.to),
            client_id=request.client_id,
            lead_id=request.lead_id,
            lead_fields=request.fields,
            portal_link=portal_link(settings.portal_base_url, token),
            data=LeadDeliveryData(
                delivery_id=str(request.delivery_id), delivery_account_id=request.delivery_account_id
            ),
        ),
    )
    await store.log_attempt(
        conn,
        store.AttemptLog(
            delivery_id=request.delivery_id,
            attempt=attempt,
            started_at=started_at,
            duration_ms=0,
            request=f"EMAIL to {', '.join(config.to)} (lead_delivery notification {request.delivery_id})",
            status_code=None,
            response=None,
            outcome="accepted",
            error=None,
        ),
    )
    if await store.finish(conn, request.delivery_id, attempt, "succeeded", price=request.price):
        await add_event(conn, "delivery.succeeded", _succeeded(request, request.price, attempt))


async def _post(
    deps: Deps,
    catalog: Catalog,
    request: DeliveryRequested,
    account: DeliveryAccount,
    config: HttpDelivery,
    attempt: int,
) -> None:
    buyer_request = posting.build_request(
        config,
        request.fields,
        lead_id=str(request.lead_id),
        delivery_id=str(request.delivery_id),
        price=request.price,
    )
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    status_code: int | None = None
    response_text: str | None = None
    try:
        # One deadline over the whole exchange, so a buyer trickling bytes cannot outlive the lease.
        async with asyncio.timeout(config.timeout_seconds):
            answer = await deps.http.post(
                account.id,
                buyer_request.method,
                buyer_request.url,
                headers=buyer_request.headers,
                body=buyer_request.body,
                params=buyer_request.params,
            )
        status_code, response_text = answer.status, answer.text
        verdict = posting.judge_response(config, status_code, response_text)
    except TimeoutError:
        verdict = posting.Verdict("transient", reason=f"no answer within {config.timeout_seconds:g} s")
    except HttpError as exc:
        verdict = posting.Verdict("transient", reason=f"connection failed: {type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - clock
    duration_ms = int(seconds * 1000)
    deps.in_flight.observe(account.id, duration_ms / 1000)
    metrics.post_answered(account.id, verdict.outcome, seconds)
    if deps.after_post is not None:
        deps.after_post()

    final_price, note = request.price, verdict.reason
    if verdict.outcome == "accepted":
        final_price, note = rules.settle_price(
            catalog.client_options(account.client).allow_confirm_price,
            request.price,
            verdict.price,
            verdict.price_problem,
        )
        if note:
            log.info("delivery %s: %s", request.delivery_id, note)

    log_entry = store.AttemptLog(
        delivery_id=request.delivery_id,
        attempt=attempt,
        started_at=started_at,
        duration_ms=duration_ms,
        request=posting.describe_request(buyer_request),
        status_code=status_code,
        response=posting.masked(response_text, buyer_request.secrets, buyer_request.masked_names),
        outcome=verdict.outcome,
        error=note,
    )
    if not rules.counts_as_failure(verdict.outcome):
        # The buyer answered (the common case): it accepted or refused, nothing is retried or
        # counted toward a pause, and the whole outcome is one statement.
        if rules.next_step(verdict.outcome, attempt, config.retry.count, paused=False) == "succeed":
            status, price, reason = "succeeded", final_price, None
            result = event("delivery.succeeded", _succeeded(request, final_price, attempt))
        else:
            status, price = "failed", None
            reason = rules.failure_reason(verdict.reason, verdict.outcome, attempt, paused=False)
            result = event("delivery.failed", _failed(request, reason, attempt, by_buyer=True))
        finish = store.Finish(log_entry, account.id, status, price, reason, result)
        await (deps.finishes.submit(finish) if deps.finishes is not None else finish_one(deps.pool, finish))
        return

    # No answer, or 5xx/429: counted toward a pause, retried while the account's budget lasts.
    async with deps.pool.acquire() as conn, conn.transaction():
        await store.log_attempt(conn, log_entry)
        paused = await _count_for_pause(conn, deps.settings, account, config, verdict)
        if rules.next_step(verdict.outcome, attempt, config.retry.count, paused=paused) == "retry":
            reason = verdict.reason or "transient failure"
            if await store.release_for_retry(conn, request.delivery_id, attempt, reason, config.retry.delay_seconds):
                await add_delayed(conn, deps.topology.delay_name(REQUESTS, config.retry.delay_seconds), request)
                metrics.post_retry(account.id)
                log.info(
                    "delivery %s to %s: %s; attempt %d, trying again in %g s",
                    request.delivery_id,
                    account.id,
                    reason,
                    attempt,
                    config.retry.delay_seconds,
                )
        else:
            reason = rules.failure_reason(verdict.reason, verdict.outcome, attempt, paused=paused)
            if await store.finish(conn, request.delivery_id, attempt, "failed", reason=reason):
                await add_event(conn, "delivery.failed", _failed(request, reason, attempt, by_buyer=False))


async def _count_for_pause(
    conn: asyncpg.Connection,
    settings: Settings,
    account: DeliveryAccount,
    config: HttpDelivery,
    verdict: posting.Verdict,
) -> bool:
    """Count a technical failure (an answer resets the count, with the attempt's log entry); pause
    the account (once, with an alert) at the threshold. True when the account is paused now."""
    failures = await store.count_failure(conn, account.id)
    if not rules.should_pause(failures, config.pause_after_failures):
        return False
    reason = f"{failures} consecutive failed attempts; last: {verdict.reason}"
    if await store.pause(conn, account.id, reason):
        log.warning("delivery account %s paused: %s", account.id, reason)
        metrics.account_paused(account.id)
        # The wording is notifier's (templates.py); the alert carries the facts.
        await add_event(
            conn,
            "notify.account_paused",
            NotificationRequested(
                notification_id=uuid.uuid4(),
                kind="account_paused",
                to=[settings.admin_email],
                client_id=account.client,
                data=AccountPausedData(
                    delivery_account_id=account.id, consecutive_failures=failures, last_error=verdict.reason
                ),
            ),
        )
    return True


# --- confirmed prices ----------------------------------------------------------------------------


async def confirm_price(
    deps: Deps,
    message: ConfirmPrice,
    message_id: str | None,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
) -> str:
    """Apply (or ignore, or refuse) a buyer's confirmed price for a delivery; returns the outcome.
    A command acting for a client (`client_id`) may name only that client's deliveries: any other
    is refused as unknown (dead-lettered, and answered `refused`). With `reply_to`, the sender
    gets a `PriceConfirmationResult`, in the same transaction (a repeat: the first copy's)."""
    offered = str(message.price)
    catalog = deps.process.catalog
    async with deps.pool.acquire() as conn, conn.transaction():
        if message_id and not await claim_message(conn, CONFIRM_CONSUMER, message_id):
            if reply_to:
                first = await store.price_confirmation_of(conn, message.delivery_id, message_id)
                if first is not None:
                    await add_reply(conn, reply_to, correlation_id, first.model_copy(update={"repeat": True}))
            return "repeat"
        delivery = await store.lock_delivery(conn, message.delivery_id)
        if message.client_id is not None and (delivery is None or delivery.client_id != message.client_id):
            # The same words whether the delivery is another client's or does not exist at all.
            log.warning(
                "confirm-price for delivery %s refused: not client %r's", message.delivery_id, message.client_id
            )
            raise UnknownDelivery(f"no delivery {message.delivery_id} of client {message.client_id!r}")
        if delivery is None:
            raise UnknownDelivery(f"no delivery {message.delivery_id}")
        decision = rules.confirm_price(
            catalog.client_options(delivery.client_id).allow_confirm_price,
            delivery.status,
            message.price,
            delivery.price,
        )
        if decision.outcome == "wait":
            # Rolls back the inbox claim too: the retried message is processed afresh.
            raise TransientError(f"confirm-price for delivery {message.delivery_id}: {decision.reason}")
        await store.log_price_confirmation(
            conn,
            delivery_id=delivery.delivery_id,
            message_id=message_id,
            offered=offered[:200],
            outcome=decision.outcome,
            price_before=delivery.price,
            price_after=decision.price,
            reason=decision.reason,
        )
        if reply_to:
            answer = PriceConfirmationResult(
                delivery_id=delivery.delivery_id,
                outcome=decision.outcome,
                price=decision.price
                if decision.outcome == "applied" and decision.price is not None
                else delivery.price,
                reason=decision.reason,
            )
            await add_reply(conn, reply_to, correlation_id, answer)
        if decision.outcome != "applied":
            log.warning("confirm-price for delivery %s %s: %s", delivery.delivery_id, decision.outcome, decision.reason)
            return decision.outcome
        assert decision.price is not None
        await store.set_confirmed_price(conn, delivery.delivery_id, decision.price)
        await add_event(
            conn,
            "delivery.price-confirmed",
            DeliveryPriceConfirmed(
                delivery_id=delivery.delivery_id,
                lead_id=delivery.lead_id,
                client_id=delivery.client_id,
                delivery_account_id=delivery.account_id,
                previous_price=delivery.price,
                price=decision.price,
                confirmed_by=message.confirmed_by,
            ),
        )
        log.info("delivery %s price confirmed: %s (was %s)", delivery.delivery_id, decision.price, delivery.price)
        return "applied"


def _succeeded(request: DeliveryRequested, price: Decimal, attempts: int) -> DeliverySucceeded:
    return DeliverySucceeded(
        delivery_id=request.delivery_id,
        lead_id=request.lead_id,
        client_id=request.client_id,
        delivery_account_id=request.delivery_account_id,
        price=price,
        attempts=attempts,
    )


def _failed(request: DeliveryRequested, reason: str, attempts: int, *, by_buyer: bool) -> DeliveryFailed:
    return DeliveryFailed(
        delivery_id=request.delivery_id,
        lead_id=request.lead_id,
        client_id=request.client_id,
        delivery_account_id=request.delivery_account_id,
        reason=reason,
        attempts=attempts,
        rejected_by_buyer=by_buyer,
    )
