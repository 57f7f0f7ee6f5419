"""Intake use cases: take a lead posted over HTTP to the router and wait for its outcome; a lead's
state for its source; the rate limit of a key; the callbacks.

Why publish instead of deciding here: the router stays the only writer of `leads`, and HTTP and
AMQP leads take one path. A post is published to `<ns>.inbound` (persistent, confirmed by the
broker) with this process's reply queue as `reply_to`, unless the router already holds a lead
under the same (source, idempotency key); the router makes at most one lead per key, so
concurrent re-sends each publishing is harmless. The router answers only the copy it kept: every
waiting request therefore also polls the `leads` row, and finishes with whichever comes first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
from pydantic import BaseModel, ValidationError

from services.intake import rules, store
from services.intake.rules import LeadState, Post
from shared.api_keys import KeyRow
from shared.contracts import ConfirmPrice, InboundLead, LeadOutcome, ReturnRequest
from shared.process import Process
from shared.rpc import Reply, RequestFailed, RequestReply
from shared.topology import Topology

log = logging.getLogger("leadwire.intake")

# How often a waiting request reads the lead row: while it also waits for the router's reply
# (only a racing re-send, whose copy the router kept instead, needs the poll: rarely, so seldom —
# under a backlog hundreds of requests wait at once), and when it has no reply to wait for.
POLL_WITH_REPLY = 1.0
POLL_WITHOUT_REPLY = 0.1
# The broker's confirm of the publish, independent of how long the caller waits for the outcome.
PUBLISH_TIMEOUT = 5.0
CALLBACK_TIMEOUT = 5.0
CALLBACK_ATTEMPTS = 5
CALLBACK_RETRY = (5.0, 30.0, 120.0, 600.0)


@dataclass
class Deps:
    process: Process
    topology: Topology
    rpc: Callable[[], RequestReply]  # the process's request-reply client (started with the app)


class Unavailable(Exception):
    """The broker did not take the lead (503: nothing was published; send it again)."""


class NotALead(Exception):
    """The router dead-lettered what was published (should not happen: intake builds the body)."""


async def post_lead(
    deps: Deps, key: KeyRow, lead_type: str, post: Post, idempotency_key: str, wait: float
) -> LeadState:
    """Record the post, publish it unless its lead exists, and wait up to `wait` seconds for the
    outcome. Returns the state at the end of the wait (decided, or still pending). Raises
    IdempotencyConflict when the key was used before for another request."""
    pool = deps.process.pool
    recorded = await store.record_post(
        pool,
        source_id=key.owner,
        idempotency_key=idempotency_key,
        lead_type=lead_type,
        key_id=key.key_id,
        callback_url=post.callback_url,
        fingerprint=rules.post_fingerprint(lead_type, post),
    )
    if recorded.conflict:
        raise rules.IdempotencyConflict(
            f"Idempotency-Key {idempotency_key!r} was used for another request (a different lead type,"
            " field, force_id or callback_url); nothing was sent. A re-send must repeat the first"
            " request exactly; a new lead needs a new key."
        )
    state = recorded.state
    if state.decided:
        return state
    reply: asyncio.Future[Reply] | None = None
    correlation_id = str(uuid.uuid4())
    rpc = deps.rpc()
    if state.status is None:
        # No lead yet (the first post, a re-send racing it, or a post whose earlier attempt never
        # reached the broker): publish. The router keeps one lead per key whatever the copies.
        lead = InboundLead(lead_type=state.lead_type, source=key.owner, fields=post.fields, force_id=post.force_id)
        try:
            reply = await rpc.send(
                deps.topology.inbound.name,
                f"lead.{state.lead_type}",
                lead,
                timeout=PUBLISH_TIMEOUT,
                headers={"idempotency-key": idempotency_key},
                message_id=idempotency_key,
                correlation_id=correlation_id,
            )
        except (RequestFailed, TimeoutError) as exc:
            log.warning("could not publish a lead of source %s: %s", key.owner, exc)
            raise Unavailable(
                "the broker did not take the lead in time; send it again with the same Idempotency-Key"
            ) from exc
    try:
        return await _wait(deps, key.owner, idempotency_key, state, reply, wait)
    finally:
        rpc.forget(correlation_id)


async def _wait(
    deps: Deps,
    source_id: str,
    idempotency_key: str,
    state: LeadState,
    reply: asyncio.Future[Reply] | None,
    wait: float,
) -> LeadState:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return state
        if reply is not None:
            await asyncio.wait({reply}, timeout=min(remaining, POLL_WITH_REPLY))
            if reply.done():
                outcome = _outcome(reply)
                reply = None
                if outcome is not None:
                    return _from_outcome(state, outcome)
        else:
            await asyncio.sleep(min(remaining, POLL_WITHOUT_REPLY))
        found = await store.lead_state(deps.process.pool, source_id, idempotency_key)
        if found is not None:
            state = found
            if state.decided:
                return state


def _outcome(reply: asyncio.Future[Reply]) -> LeadOutcome | None:
    """The router's LeadOutcome, or None (the client closed; an error reply, logged)."""
    if reply.cancelled() or reply.exception() is not None:
        return None
    try:
        return LeadOutcome.model_validate_json(reply.result().body)
    except ValidationError:
        log.error("the router answered a lead with something else: %r", reply.result().body[:500])
        return None


def _from_outcome(state: LeadState, outcome: LeadOutcome) -> LeadState:
    return LeadState(
        receipt_id=state.receipt_id,
        lead_type=state.lead_type,
        lead_id=outcome.lead_id,
        status=outcome.status,
        reason=outcome.reason,
        errors=[e.model_dump() for e in outcome.errors],
        price=sum((d.price for d in outcome.deliveries), Decimal("0")),
        buyers=len(outcome.deliveries),
    )


async def test_post(deps: Deps, key: KeyRow, lead_type: str, post: Post) -> tuple[int, dict[str, Any]]:
    """Test mode: validated and planned by the router's rules, never stored, published or sold."""
    paused = await store.paused_accounts(deps.process.pool)
    return rules.dry_run(deps.process.catalog, lead_type, key.owner, post, datetime.now(UTC), paused)


async def lead_for_source(deps: Deps, key: KeyRow, some_id: uuid.UUID) -> LeadState | None:
    return await store.state_by_id(deps.process.pool, key.owner, some_id)


async def over_rate(deps: Deps, bucket: str, limit: int) -> float | None:
    """None when this request is within the key's rate; else the seconds until it may try again."""
    hits, left = await store.hit(deps.process.pool, bucket)
    return None if hits <= limit else max(left, 0.001)


async def prune(deps: Deps) -> int:
    return await store.prune_windows(deps.process.pool)


# --- callbacks ----------------------------------------------------------------------------------------


async def call_back(deps: Deps, session: aiohttp.ClientSession, *, limit: int = 20) -> int:
    """One round of the callback relay: POST each decided lead's outcome (the body GET
    /v1/leads/{id} answers) to its callback URL, signed with the posting key's secret; a 2xx
    answer ends it, anything else is tried again later (CALLBACK_RETRY), up to CALLBACK_ATTEMPTS
    times in all."""
    pool = deps.process.pool
    due = await store.claim_callbacks(
        pool, limit=limit, lease_seconds=CALLBACK_TIMEOUT * 4, max_attempts=CALLBACK_ATTEMPTS
    )

    async def one(callback: store.DueCallback) -> None:
        # The exact bytes sent are the bytes signed; each attempt is signed with its own time.
        body = json.dumps(rules.answer(callback.state, polling=True)[1], separators=(",", ":")).encode()
        headers = rules.callback_headers(callback.key_id, callback.secret, int(time.time()), body)
        try:
            async with session.post(
                callback.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT)
            ) as response:
                done, result = 200 <= response.status < 300, f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            done, result = False, f"{type(exc).__name__}: {exc}"[:500]
        retry_in = CALLBACK_RETRY[min(callback.attempts - 1, len(CALLBACK_RETRY) - 1)]
        await store.finish_callback(pool, callback.receipt_id, done=done, result=result, retry_in=retry_in)

    await asyncio.gather(*(one(c) for c in due))
    return len(due)


# --- the buyer API: commands to the services that own the data ---------------------------------------

BUYER_COMMAND_TIMEOUT = 5.0


@dataclass(frozen=True)
class CommandAnswer:
    """What the owning service answered (`reply`), or None when it did not answer in time."""

    reply: dict[str, Any] | None


async def _command(deps: Deps, routing_key: str, message: BaseModel, message_id: str) -> CommandAnswer:
    try:
        reply = await deps.rpc().request(
            deps.topology.events.name, routing_key, message, timeout=BUYER_COMMAND_TIMEOUT, message_id=message_id
        )
    except TimeoutError:
        return CommandAnswer(None)
    except RequestFailed as exc:
        raise Unavailable(f"the command could not be sent; send it again ({exc})") from exc
    try:
        body = reply.json()
    except ValueError:
        body = None
    return CommandAnswer(body if isinstance(body, dict) else None)


async def confirm_price(
    deps: Deps, client_id: str, delivery_id: uuid.UUID, price: Any, message_id: str, confirmed_by: str
) -> CommandAnswer:
    """ConfirmPrice for the client's own delivery (delivery checks `client_id` again)."""
    command = ConfirmPrice(delivery_id=delivery_id, price=price, client_id=client_id, confirmed_by=confirmed_by)
    return await _command(deps, "delivery.confirm-price", command, message_id)


async def request_return(
    deps: Deps, client_id: str, lead_id: uuid.UUID, return_id: uuid.UUID, reason: str, comment: str | None, by: str
) -> CommandAnswer:
    command = ReturnRequest(
        return_id=return_id, client_id=client_id, lead_id=lead_id, reason=reason, comment=comment, requested_by=by
    )
    return await _command(deps, "return.request", command, str(return_id))
