"""Re-routing an unsold lead: an admin's `router.reroute` command (services/admin). Kept apart
from usecases.py, whose receive/advance path is the hot path: this module only plans the lead
again and then hands it to that same path (`usecases._advance`), so a re-routed lead is offered,
capped, reserved against orders and decided exactly as a new lead is.

What a re-route does, in one transaction with the command's inbox claim (a repeat of the command
does nothing):
- only a lead that is still `unsold` is touched (a lead sold, routing, duplicate or rejected stays
  as it is: the command is a no-op, logged);
- its fields are validated again against its lead type as the catalog has it now, and the plan is
  made from the catalog this router has loaded, with the accounts that are paused now and the
  clients that hold this person through another lead left out;
- accounts that already had the lead (a failed or refused post) are not offered it again — the
  plan's step rule counts those deliveries as tried;
- with a plan, the lead goes back to `routing` (its old reply_to dropped) and its first accounts
  are requested; without one, it stays unsold with the new reason.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from services.router import rules, store, usecases
from shared import logs
from shared.contracts import LeadReroute

log = logging.getLogger("leadwire.router")

REROUTE_CONSUMER = "router.reroutes"


async def reroute_lead(deps: usecases.Deps, command: LeadReroute, message_id: str, now: datetime | None = None) -> str:
    """Offer an unsold lead again. Returns what happened: rerouted, unsold, not_unsold, unknown,
    invalid, repeat."""
    now = now or datetime.now(UTC)
    pool, catalog = deps.process.pool, deps.process.catalog
    logs.bind_lead(command.lead_id)
    lead = await store.unsold_lead(pool, command.lead_id)
    if lead is None:
        log.warning("re-route of lead %s: no such lead", command.lead_id)
        return "unknown"
    if lead["status"] != "unsold":
        log.info("re-route of lead %s: it is %s, not unsold; nothing to do", command.lead_id, lead["status"])
        return "not_unsold"
    lead_type = catalog.lead_types_by_id.get(lead["lead_type_id"])
    fields, problems = rules.validate_fields(lead_type, lead["fields"]) if lead_type else (lead["fields"], [])
    if lead_type is None or problems:
        # The catalog no longer takes this lead as it is: it stays unsold, and says why.
        why = "its lead type is gone" if lead_type is None else "; ".join(f"{p.field}: {p.message}" for p in problems)
        async with pool.acquire() as conn, conn.transaction():
            claimed, locked = await store.claim_and_lock_unsold(conn, REROUTE_CONSUMER, message_id, command.lead_id)
            if claimed and locked:
                await store.note_unsold_again(conn, command.lead_id, f"re-route refused: {why}")
        return "invalid"
    candidates = rules.eligible_accounts(catalog, lead_type.id, fields, now)
    paused, turns = await store.pauses_and_turns(pool, rules.rotating_groups(catalog, candidates))
    async with pool.acquire() as conn, conn.transaction():
        claimed, locked = await store.claim_and_lock_unsold(conn, REROUTE_CONSUMER, message_id, command.lead_id)
        if not claimed:
            return "repeat"
        if not locked:
            return "not_unsold"  # decided otherwise since it was read (another re-route)
        holders: frozenset[str] = frozenset()
        if lead["fingerprint"] is not None:
            since = now - timedelta(days=lead_type.duplicate_window_days)
            holders = frozenset(
                await store.clients_with_fingerprint(
                    conn, lead_type.id, lead["fingerprint"], since, other_than=command.lead_id
                )
            )
        planned = rules.plan(
            catalog,
            lead_type.id,
            lead["source_id"],
            lead["force_id"],
            candidates,
            paused=paused,
            excluded=holders,
            turns=turns,
        )
        # No stage at all is a new lead's "no eligible delivery account": said here, without
        # sending the lead through routing for the same outcome (and a second lead.unsold).
        why = planned.reason if isinstance(planned, rules.Unsold) else "no eligible delivery account"
        if isinstance(planned, rules.Unsold) or not planned.stages:
            await store.note_unsold_again(conn, command.lead_id, f"re-routed by an admin: {why}")
            log.info("re-route of lead %s: still unsold (%s)", command.lead_id, why)
            return "unsold"
        routed = await store.replan_lead(
            conn,
            command.lead_id,
            fields=fields,
            plan=[s.to_json() for s in planned.stages],
            max_sales=planned.max_sales,
            excluded_clients=sorted(holders),
        )
        deliveries = await store.deliveries_of(conn, command.lead_id)
        # The cap counters it may take, up front in the global order (docs/architecture.md).
        await usecases._lock_caps_ahead(conn, catalog, [(routed, deliveries, holders)], now)
        await usecases._advance(conn, catalog, routed, deliveries, now, holders)
    log.info("lead %s re-routed by %s", command.lead_id, command.requested_by or "an admin")
    return "rerouted"
