"""The admin console's use cases. Each change is one transaction holding the change (or the
command to the owning service, through the outbox) and its audit row, so the audit never misses a
change and never records one that did not happen.

Staff sign-in is a realm of its own, done here with portal_auth's own pieces (argon2id hashing in
`services.portal_auth.credentials`, the throttling and session rules of
`services.portal_auth.rules`) on the console's own tables (migration 0700): see docs/admin.md,
"Staff sign-in".
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
import yaml

from services.admin import deadletters, masking, queries, rules, store
from services.admin.config import AdminConfig
from services.admin.rules import Role, Staff
from services.delivery import store as delivery_store
from services.portal_auth import credentials
from services.portal_auth import rules as auth_rules
from services.portal_auth import usecases as portal_auth_usecases
from services.portal_auth.config import PortalAuthConfig
from services.portal_auth.credentials import Passwords
from shared import orders
from shared.catalog.loader import CatalogInvalid, parse_catalog
from shared.catalog.model import Catalog
from shared.catalog.store import CatalogConflict, apply_catalog, load_latest
from shared.contracts import LeadReroute, OrderCommand, ReturnDecide
from shared.outbox import add_event
from shared.process import Process, Standalone
from shared.topology import Topology

log = logging.getLogger("leadwire.admin")


@dataclass
class Deps:
    process: Process
    config: AdminConfig
    passwords: Passwords
    clock: Callable[[], datetime]

    @property
    def pool(self) -> asyncpg.Pool:
        return self.process.pool

    @classmethod
    def passwords_for(cls, config: AdminConfig) -> Passwords:
        return Passwords(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            concurrency=config.hash_concurrency,
        )


class Refused(Exception):
    """A change that cannot be made: `errors` maps a form field (or "form") to its message."""

    def __init__(self, errors: dict[str, str], status: int = 400) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
        self.status = status


async def record(conn: asyncpg.Connection, who: Staff | str, action: str, target: str, **detail: Any) -> None:
    """The audit row of a change, in the change's transaction. `who`: the staff user of the
    request, or a text actor (the CLI)."""
    if isinstance(who, Staff):
        await store.audit(
            conn,
            actor=who.email,
            staff_id=who.staff_id,
            via=who.via,
            api_key_id=who.api_key_id,
            action=action,
            target=target,
            detail=detail,
        )
    else:
        await store.audit(
            conn, actor=who, staff_id=None, via="cli", api_key_id=None, action=action, target=target, detail=detail
        )


# --- Staff users ---------------------------------------------------------------------------------


async def create_staff(
    conn: asyncpg.Connection,
    deps: Deps,
    who: Staff | str,
    *,
    email: str,
    name: str,
    role: str,
    password: str,
) -> uuid.UUID:
    """A staff user with a password (the CLI's first owner, or an owner adding a colleague).
    Raises Refused with the field in error."""
    email = email.strip()
    errors: dict[str, str] = {}
    if (problem := rules.email_problem(email)) is not None:
        errors["email"] = problem
    parsed = rules.parse_role(role)
    if parsed is None:
        errors["role"] = "Choose a role: owner, admin, operator or viewer."
    if len(name) > 200:
        errors["name"] = "A name has at most 200 characters."
    if (problem := auth_rules.password_problem(password, email)) is not None:
        errors["password"] = problem[0].upper() + problem[1:] + "."
    if errors:
        raise Refused(errors)
    password_hash = await deps.passwords.hash(password)
    staff_id = uuid.uuid4()
    async with conn.transaction():
        created = await store.insert_staff(
            conn,
            staff_id=staff_id,
            email=email,
            email_key=auth_rules.email_key(email),
            name=name.strip(),
            role=str(parsed),
            password_hash=password_hash,
            now=deps.clock(),
        )
        if not created:
            raise Refused({"email": "A staff user with this email exists already."})
        await record(conn, who, "staff.create", email, role=parsed, staff_id=str(staff_id))
    return staff_id


async def change_staff(deps: Deps, who: Staff, staff_id: uuid.UUID, *, role: str, enabled: bool) -> None:
    """An owner changes a staff user's role or disables them; the last enabled owner stays one.
    Disabling ends the user's sessions; their API keys stop working at once (checked per call)."""
    parsed = rules.parse_role(role)
    if parsed is None:
        raise Refused({"role": "Choose a role: owner, admin, operator or viewer."})
    async with deps.pool.acquire() as conn, conn.transaction():
        await store.lock_staff_table(conn)
        target = await store.staff_by_id(conn, staff_id)
        if target is None:
            raise Refused({"form": "There is no such staff user."}, 404)
        was_owner = target["role"] == "owner" and target["enabled"]
        stays_owner = parsed == "owner" and enabled
        if was_owner and not stays_owner and await store.enabled_owners(conn) <= 1:
            raise Refused({"role": "The console keeps one enabled owner: make another owner first."})
        await store.update_staff(conn, staff_id, role=parsed, enabled=enabled)
        if not enabled:
            await store.revoke_staff_sessions(conn, staff_id, "disabled", deps.clock())
        await record(
            conn,
            who,
            "staff.change",
            target["email"],
            role={"from": target["role"], "to": parsed},
            enabled={"from": target["enabled"], "to": enabled},
        )


# --- Sign-in -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginRefused:
    reason: str  # invalid_credentials, throttled, disabled
    retry_after: datetime | None = None


async def login(deps: Deps, email: str, password: str) -> tuple[str, Staff] | LoginRefused:
    """A new session for a staff user, throttled per email exactly as portal_auth throttles
    portal logins: the attempt counts as failed until the password proves right."""
    key = auth_rules.email_key(email)
    now = deps.clock()
    policy = deps.config.login_policy()
    async with deps.pool.acquire() as conn, conn.transaction():
        counter = await store.lock_failures(conn, key)
        throttle = auth_rules.login_throttle(counter["failed_count"], counter["last_failed_at"], now, policy)
        if not throttle.allowed:
            return LoginRefused("throttled", throttle.retry_after)
        failures = auth_rules.current_failures(counter["failed_count"], counter["last_failed_at"], now, policy)
        await store.record_failure(conn, key, failures + 1, now)
        user = await store.staff_by_email(conn, key)
    if not await deps.passwords.verify(user["password_hash"] if user else None, password):
        return LoginRefused("invalid_credentials")
    assert user is not None
    rehash = await deps.passwords.hash(password) if deps.passwords.needs_rehash(user["password_hash"]) else None
    async with deps.pool.acquire() as conn, conn.transaction():
        await store.clear_failures(conn, key)
        if not user["enabled"]:
            return LoginRefused("disabled")
        if rehash is not None:
            await store.set_password(conn, user["id"], rehash, now)
        session_id, token, secret_hash = credentials.new_token()
        await store.insert_session(
            conn,
            session_id=session_id,
            staff_id=user["id"],
            secret_hash=secret_hash,
            now=now,
            expires_at=now + deps.config.session_policy().lifetime,
        )
    log.info("staff user %s signed in", user["id"])
    staff = Staff(str(user["id"]), user["email"], user["name"], user["role"], "console", session_id=str(session_id))
    return token, staff


async def verify_session(deps: Deps, token: str) -> Staff | None:
    """The staff user of a live session (read now, never cached: a role change or a disabled
    user takes effect at the next click), or None."""
    parts = credentials.split_token(token)
    if parts is None:
        return None
    now = deps.clock()
    async with deps.pool.acquire() as conn:
        row = await store.session_with_staff(conn, parts[0])
        if row is None or not credentials.secret_matches(parts[1], row["secret_hash"]):
            return None
        state = auth_rules.session_state(
            last_seen_at=row["last_seen_at"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
            now=now,
            policy=deps.config.session_policy(),
        )
        if state != "live" or not row["enabled"]:
            return None
        await store.touch_session(conn, row["session_id"], now)
    return Staff(
        str(row["staff_id"]), row["email"], row["name"], row["role"], "console", session_id=str(row["session_id"])
    )


async def logout(deps: Deps, staff: Staff) -> None:
    if staff.session_id is None:
        return
    async with deps.pool.acquire() as conn:
        await store.revoke_session(conn, uuid.UUID(staff.session_id), "logout", deps.clock())


# --- API keys ------------------------------------------------------------------------------------


async def verify_key(deps: Deps, presented: str) -> Staff | None:
    """The staff user an API key acts for, with the key's role capped by the user's role now;
    None for an unknown, wrong, revoked key or a disabled user. Checked against the database on
    every call: revoking takes effect at the next call."""
    parts = rules.parse_key(presented)
    if parts is None:
        return None
    key_id, secret = parts
    row = await store.key_with_staff(deps.pool, key_id)
    if row is None or not credentials.secret_matches(secret, row["secret_hash"]):
        return None
    if row["revoked_at"] is not None or not row["enabled"]:
        return None
    now = deps.clock()
    await store.touch_key(deps.pool, key_id, now, now - timedelta(seconds=deps.config.api_key_touch_seconds))
    role = rules.effective_role(row["role"], row["key_role"])
    return Staff(str(row["staff_id"]), row["email"], row["name"], role, "api", api_key_id=key_id)


async def create_key(deps: Deps, who: Staff, *, name: str, role: str) -> tuple[str, str]:
    """(key id, the key itself). The key is shown once: only SHA-256 of its secret is kept."""
    errors: dict[str, str] = {}
    if (problem := rules.key_name_problem(name)) is not None:
        errors["name"] = problem
    parsed = rules.parse_role(role)
    if parsed is None:
        errors["role"] = "Choose a role: owner, admin, operator or viewer."
    elif not rules.may_grant(who.role, parsed):
        errors["role"] = f"A key can have at most your own role ({who.role})."
    if errors:
        raise Refused(errors)
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    async with deps.pool.acquire() as conn, conn.transaction():
        await store.insert_key(
            conn,
            key_id=key_id,
            staff_id=uuid.UUID(who.staff_id),
            name=name.strip(),
            role=str(parsed),
            secret_hash=credentials.digest(secret),
            now=deps.clock(),
        )
        await record(conn, who, "api_key.create", key_id, name=name.strip(), role=parsed)
    return key_id, rules.format_key(key_id, secret)


async def revoke_key(deps: Deps, who: Staff, key_id: str) -> None:
    """A staff user revokes their own keys; an owner anyone's."""
    async with deps.pool.acquire() as conn, conn.transaction():
        owner = await store.key_owner(conn, key_id)
        if owner is None or (str(owner) != who.staff_id and not who.may("manage_staff")):
            raise Refused({"form": "There is no such API key."}, 404)
        revoked = await store.revoke_key(conn, key_id, who.email, deps.clock())
        if revoked is None:
            raise Refused({"form": "This key is revoked already."}, 409)
        await record(conn, who, "api_key.revoke", key_id, name=revoked["name"])


def role_of(value: str) -> Role:
    parsed = rules.parse_role(value)
    if parsed is None:
        raise ValueError(f"unknown role {value!r}")
    return parsed


# --- The catalog: Client Options and whole-catalog edits ------------------------------------------


class Conflict(Refused):
    """Someone else saved a catalog version after the one this edit started from."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            {
                "form": f"Someone else saved catalog version {current} while you were editing version {expected}. "
                "Nothing was saved: your changes are still in the form below. Review what changed, then save again."
            },
            409,
        )
        self.expected = expected
        self.current = current


def _catalog_errors(exc: CatalogInvalid, field_of: Callable[[str], str | None]) -> dict[str, str]:
    """Catalog errors by form field; those that belong to no field of the form under "form"."""
    errors: dict[str, str] = {}
    loose: list[str] = []
    for error in exc.errors:
        name = field_of(error.location)
        if name is None:
            loose.append(f"{error.location}: {error.message}")
        else:
            errors[name] = f"{errors[name]} {error.message}" if name in errors else error.message
    if loose:
        errors["form"] = "The catalog would not be valid: " + "; ".join(loose)
    return errors


async def _apply(deps: Deps, who: Staff, base_version: int, catalog: Catalog, action: str, **detail: Any) -> int | None:
    """Apply `catalog` as the version after `base_version` (or refuse with Conflict), and audit
    it in the same transaction. None: identical to the current catalog, nothing saved."""
    async with deps.pool.acquire() as conn, conn.transaction():
        try:
            version = await apply_catalog(conn, catalog, expected_version=base_version, applied_by=who.email)
        except CatalogConflict as exc:
            raise Conflict(exc.expected, exc.current) from exc
        except CatalogInvalid as exc:
            raise Refused(_catalog_errors(exc, lambda _: None)) from exc
        except asyncpg.CheckViolationError as exc:
            # The live figures the catalog cannot see, e.g. an order's total below what it has
            # received already (orders_check: received <= total).
            raise Refused({"form": f"The catalog cannot be stored as it is: {exc.message}."}) from exc
        if version is not None:
            await record(conn, who, action, f"catalog version {version}", from_version=base_version, **detail)
    return version


async def save_options(deps: Deps, who: Staff, base_version: int, form: Any) -> int | None:
    """The Client Options form: patch the latest catalog document, validate the whole catalog as
    `leadwire catalog apply` does (every error beside its field, nothing saved on any), apply it
    as a new version unless someone saved since `base_version`."""
    current, catalog = await load_latest(deps.pool)
    if current != base_version:
        raise Conflict(base_version, current)
    patched, errors = rules.options_patch(catalog.model_dump(mode="json"), form)
    try:
        new = parse_catalog(yaml.safe_dump(patched, sort_keys=False, allow_unicode=True))
    except CatalogInvalid as exc:
        errors = {**_catalog_errors(exc, rules.option_field), **errors}
    if errors:
        raise Refused(errors)
    return await _apply(deps, who, base_version, new, "options.save", changes=rules.option_changes(catalog, new))


async def save_catalog_text(deps: Deps, who: Staff, base_version: int, text: str) -> int | None:
    """A whole catalog as YAML (the console's catalog editor, `PUT /catalog`): exactly
    `leadwire catalog apply`, plus the version check and the audit."""
    try:
        catalog = parse_catalog(text)
    except CatalogInvalid as exc:
        raise Refused({"yaml": "\n".join(str(e) for e in exc.errors)}) from exc
    current, old = await load_latest(deps.pool)
    if current != base_version:
        raise Conflict(base_version, current)
    # The editor shows the catalog with its secrets masked: a mask sent back keeps the stored
    # value (the same account, the same place), and a mask with nothing to keep is refused.
    document = catalog.model_dump(mode="json")
    if problems := masking.restore_document(document, old.model_dump(mode="json")):
        raise Refused({"yaml": "\n".join(problems)})
    try:
        catalog = parse_catalog(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    except CatalogInvalid as exc:  # stored values are valid; kept for safety
        raise Refused({"yaml": "\n".join(str(e) for e in exc.errors)}) from exc
    return await _apply(deps, who, base_version, catalog, "catalog.apply", changes=rules.option_changes(old, catalog))


# --- Returns -------------------------------------------------------------------------------------

MAX_BULK = 200


async def decide_returns(deps: Deps, who: Staff, return_ids: list[uuid.UUID], decision: str, note: str) -> int:
    """Approve or deny pending returns: one `return.decide` command per return to the returns
    service (through the outbox: sent when this transaction commits), each with its audit row.
    All or nothing: a return that is unknown or no longer pending refuses the whole decision.
    The returns service decides each exactly once (its inbox), so a double submit changes nothing
    twice, and of two staff deciding one return at once the first command wins."""
    errors: dict[str, str] = {}
    if decision not in ("approve", "deny"):
        errors["decision"] = "Choose approve or deny."
    note = note.strip()
    if not note:
        errors["note"] = "Write a note: why (it is kept with the return and sent in return.decided)."
    elif len(note) > 2000:
        errors["note"] = "A note has at most 2000 characters."
    ids = list(dict.fromkeys(return_ids))
    if not ids:
        errors["return_id"] = "Choose at least one return."
    elif len(ids) > MAX_BULK:
        errors["return_id"] = f"Decide at most {MAX_BULK} returns at once."
    if errors:
        raise Refused(errors)
    async with deps.pool.acquire() as conn, conn.transaction():
        found = await queries.return_statuses(conn, ids)
        missing = [str(i) for i in ids if i not in found]
        decided = [str(i) for i in ids if i in found and found[i]["status"] != "pending"]
        if missing or decided:
            parts = []
            if missing:
                parts.append(f"no such return: {', '.join(missing)}")
            if decided:
                parts.append(f"already decided: {', '.join(decided)}")
            raise Refused({"return_id": "Nothing was decided — " + "; ".join(parts) + "."}, 409 if decided else 400)
        for return_id in ids:
            client_id = found[return_id]["client_id"]
            command = ReturnDecide(
                return_id=return_id, decision=decision, note=note, decided_by=who.email, client_id=client_id
            )
            await add_event(conn, "return.decide", command)
            await record(conn, who, "return.decide", str(return_id), decision=decision, note=note, client=client_id)
    return len(ids)


# --- Operations: dead letters, paused accounts, orders ----------------------------------------------


async def replay_dead_letter(deps: Deps, who: Staff, dead_letter_id: int) -> str:
    """Republish a dead letter to its queue under its own message id (deadletters.replay), marked
    replayed with its audit row in one transaction."""
    async with deps.pool.acquire() as conn, conn.transaction():
        try:
            source = await deadletters.replay(conn, deps.process.settings.amqp_url, dead_letter_id, who.email)
        except deadletters.ReplayRefused as exc:
            raise Refused({"form": str(exc)}, exc.status) from exc
        await record(conn, who, "dead_letter.replay", str(dead_letter_id), body_from=source)
    return source


async def purge_dead_letter(deps: Deps, who: Staff, dead_letter_id: int) -> bool:
    async with deps.pool.acquire() as conn, conn.transaction():
        try:
            removed = await deadletters.purge(conn, deps.process.settings.amqp_url, dead_letter_id, who.email)
        except deadletters.ReplayRefused as exc:
            raise Refused({"form": str(exc)}, exc.status) from exc
        await record(conn, who, "dead_letter.purge", str(dead_letter_id), dlq_copy_removed=removed)
    return removed


MAX_BULK_DEAD_LETTERS = 500


@dataclass(frozen=True)
class BulkOutcome:
    done: list[tuple[int, str]]  # (id, body_from for a replay / dlq_copy_removed for a purge)
    skipped: list[tuple[int, str]]  # (id, why: already replayed or purged, no such dead letter)


async def bulk_dead_letters(deps: Deps, who: Staff, action: str, ids: list[int], queue: str | None) -> BulkOutcome:
    """Replay or purge many dead letters: those chosen (`ids`), or every open one of a queue
    (`queue`, its full name; oldest first, at most MAX_BULK_DEAD_LETTERS a submit). Each one goes
    exactly as a single replay or purge does — its own transaction and its own audit row, under
    its own message id — so one that cannot be done (resolved meanwhile) is skipped and the others
    still go; then one audit row for the whole (`dead_letter.bulk_replay` / `bulk_purge`)."""
    errors: dict[str, str] = {}
    if action not in ("replay", "purge"):
        errors["action"] = "Choose replay or purge."
    chosen = list(dict.fromkeys(i for i in ids if 0 < i < 2**62))
    if queue is not None and not deadletters.full_queue_known(queue, Topology(deps.process.settings.namespace)):
        errors["queue"] = "Choose a queue from the list."
    elif queue is None and not chosen:
        errors["ids"] = "Choose at least one dead letter (or all of a queue)."
    elif len(chosen) > MAX_BULK_DEAD_LETTERS:
        errors["ids"] = f"Choose at most {MAX_BULK_DEAD_LETTERS} dead letters at once."
    if errors:
        raise Refused(errors)
    if queue is not None:
        chosen = await deadletters.open_ids(deps.pool, queue, MAX_BULK_DEAD_LETTERS)
    done: list[tuple[int, str]] = []
    skipped: list[tuple[int, str]] = []
    for dead_letter_id in chosen:
        try:
            if action == "replay":
                done.append((dead_letter_id, await replay_dead_letter(deps, who, dead_letter_id)))
            else:
                removed = await purge_dead_letter(deps, who, dead_letter_id)
                done.append((dead_letter_id, "dlq copy removed" if removed else "row only"))
        except Refused as refused:
            skipped.append((dead_letter_id, "; ".join(refused.errors.values())))
    async with deps.pool.acquire() as conn, conn.transaction():
        await record(
            conn,
            who,
            f"dead_letter.bulk_{action}",
            queue or "selected",
            done=[i for i, _ in done],
            skipped=[i for i, _ in skipped],
        )
    return BulkOutcome(done, skipped)


async def resume_account(deps: Deps, who: Staff, account_id: str) -> None:
    """Unpause a delivery account, as `leadwire delivery resume` does (delivery's own statement),
    with the audit row in the same transaction."""
    async with deps.pool.acquire() as conn, conn.transaction():
        if not await delivery_store.resume(conn, account_id):
            raise Refused({"form": f"Delivery account {account_id} is not paused."}, 409)
        await record(conn, who, "account.resume", account_id)


async def order_payment(deps: Deps, who: Staff, order_id: str, amount_text: str, note: str) -> Decimal:
    """Record a payment against the order's current period, as `leadwire orders payment` does
    (shared/orders.py), with the audit row in the same transaction."""
    errors: dict[str, str] = {}
    amount: Decimal | None = None
    try:
        amount = Decimal(amount_text.strip())
        if not amount.is_finite() or amount <= 0 or amount >= Decimal("1e10") or amount != round(amount, 2):
            raise InvalidOperation
    except InvalidOperation:
        errors["amount"] = "Enter an amount above 0 with at most 2 decimals, such as 250.00."
    if len(note) > 500:
        errors["note"] = "A note has at most 500 characters."
    if errors:
        raise Refused(errors)
    assert amount is not None
    async with deps.pool.acquire() as conn, conn.transaction():
        paid = await orders.record_payment(conn, order_id=order_id, amount=amount, note=note.strip() or None)
        if paid is None:
            raise Refused({"form": f"There is no order {order_id}."}, 404)
        await record(conn, who, "order.payment", order_id, amount=str(amount), note=note.strip(), amount_paid=str(paid))
    return paid


async def order_command(deps: Deps, who: Staff, order_id: str, action: str) -> None:
    """Pause, resume or close an order: an `order.command` to the returns service (through the
    outbox), with its audit row. The returns service refuses what cannot be done (closing a closed
    order); the Orders page shows the status it recorded."""
    if action not in ("pause", "resume", "close"):
        raise Refused({"action": "Choose pause, resume or close."})
    async with deps.pool.acquire() as conn, conn.transaction():
        if not await queries.order_exists(conn, order_id):
            raise Refused({"form": f"There is no order {order_id}."}, 404)
        await add_event(conn, "order.command", OrderCommand(order_id=order_id, action=action, requested_by=who.email))
        await record(conn, who, f"order.{action}", order_id)


# --- Clients -------------------------------------------------------------------------------------


async def save_client(deps: Deps, who: Staff, base_version: int, client_id: str | None, form: Any) -> int | None:
    """Create (client_id None) or change a client in the catalog: a new catalog version through
    the same validation as `leadwire catalog apply`, errors beside the client form's fields."""
    current, catalog = await load_latest(deps.pool)
    if current != base_version:
        raise Conflict(base_version, current)
    if client_id is not None and client_id not in catalog.clients_by_id:
        raise Refused({"form": f"There is no client {client_id}."}, 404)
    patched, errors = rules.client_patch(catalog.model_dump(mode="json"), client_id, form)
    try:
        new = parse_catalog(yaml.safe_dump(patched, sort_keys=False, allow_unicode=True))
    except CatalogInvalid as exc:
        errors = {**_catalog_errors(exc, rules.client_field), **errors}
    if errors:
        raise Refused(errors)
    target = client_id or str(form.get("id") or "").strip()
    before = catalog.clients_by_id.get(target)
    after = new.clients_by_id[target]
    changes = {
        name: [getattr(before, name) if before else None, getattr(after, name)]
        for name in rules.CLIENT_FIELDS
        if (getattr(before, name) if before else None) != getattr(after, name)
    }
    action = "client.create" if client_id is None else "client.change"
    return await _apply(deps, who, base_version, new, action, client=target, changes=changes)


async def invite_portal_admin(deps: Deps, who: Staff, client_id: str, email: str, name: str) -> None:
    """A client's first portal admin, invited by email to set a password — what `leadwire portal
    create-user --invite` does (portal_auth's own use case: the user, and the invite link queued
    for notifier), with the audit row in the same transaction."""
    errors: dict[str, str] = {}
    email = email.strip()
    if (problem := rules.email_problem(email)) is not None:
        errors["invite_email"] = problem
    if len(name) > 200:
        errors["invite_name"] = "A name has at most 200 characters."
    _, catalog = await load_latest(deps.pool)
    if client_id not in catalog.clients_by_id:
        raise Refused({"form": f"There is no client {client_id}."}, 404)
    if errors:
        raise Refused(errors)
    auth_deps = portal_auth_usecases.Deps(
        Standalone(deps.pool, catalog, deps.process.settings),
        config=PortalAuthConfig(),
        passwords=deps.passwords,
        clock=deps.clock,
    )
    async with deps.pool.acquire() as conn, conn.transaction():
        if await queries.portal_user_count(conn, client_id) > 0:
            raise Refused({"invite_email": "This client has portal users already: its admins invite the others."}, 409)
        try:
            user = await portal_auth_usecases.add_user(
                conn,
                auth_deps,
                client_id=client_id,
                email=email,
                name=name.strip(),
                password_hash=None,
                is_admin=True,
                now=deps.clock(),
            )
        except portal_auth_usecases.Refused as refused:
            message = (
                "This email is in use already." if refused.failure.error == "conflict" else refused.failure.message
            )
            raise Refused({"invite_email": message or "Refused."}) from refused
        await record(conn, who, "client.invite_admin", client_id, email=email, user_id=str(user["id"]))


# --- Catalog entries: delivery accounts, groups, orders --------------------------------------------

EntryBuilder = Callable[[dict[str, Any] | None], tuple[dict[str, Any], dict[str, str], dict[int, int]]]


async def save_entry(
    deps: Deps, who: Staff, base_version: int, kind: rules.EntryKind, entry_id: str | None, build: EntryBuilder
) -> tuple[int | None, str]:
    """Create (`entry_id` None) or change one delivery account, group or order of the catalog:
    the latest document with that one entry replaced by `build(current entry)` (its form, or the
    API's JSON), validated whole by `parse_catalog` as `leadwire catalog apply` validates it
    (every error beside its field, nothing saved on any), applied as the version after
    `base_version` with its audit row (`<kind>.create` / `<kind>.change`, the changes with
    secrets masked). Returns (the new version or None when nothing changed, the entry's id)."""
    section, noun = rules.ENTRY_KINDS[kind]
    current_version, catalog = await load_latest(deps.pool)
    if current_version != base_version:
        raise Conflict(base_version, current_version)
    document = catalog.model_dump(mode="json")
    items = list(document.get(section) or [])
    index = next((i for i, e in enumerate(items) if e["id"] == entry_id), None) if entry_id is not None else None
    if entry_id is not None and index is None:
        raise Refused({"form": f"There is no {noun} {entry_id}."}, 404)
    before = items[index] if index is not None else None
    entry, errors, origin = build(before)
    if kind == "account":
        # The page and the API show secrets masked; the mask sent back keeps the stored value.
        errors = {**masking.restore_account(entry, before), **errors}
    if index is None:
        index = len(items)
        items.append(entry)
    else:
        entry["id"] = entry_id  # an entry's id is its identity (deliveries, payments refer to it)
        items[index] = entry
    document[section] = items
    position = index
    try:
        new = parse_catalog(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    except CatalogInvalid as exc:
        errors = {**_catalog_errors(exc, lambda loc: rules.entry_field(kind, position, loc, origin)), **errors}
    if errors:
        raise Refused(errors)
    target = str(entry["id"])
    after = next(e for e in new.model_dump(mode="json")[section] if e["id"] == target)
    changes = rules.entry_changes(before, after)
    action = f"{kind}.create" if before is None else f"{kind}.change"
    version = await _apply(deps, who, base_version, new, action, **{kind: target}, changes=changes)
    return version, target


# --- Leads ---------------------------------------------------------------------------------------


async def reroute_lead(deps: Deps, who: Staff, lead_id: uuid.UUID) -> None:
    """Offer an unsold lead again under the current catalog: a `router.reroute` command to the
    router (through the outbox: sent when this transaction commits) with its audit row. Only an
    unsold lead (409 otherwise); the router checks again under the lead's lock, so two clicks, or
    a repeated command, re-route it once (services/router/reroute.py)."""
    async with deps.pool.acquire() as conn, conn.transaction():
        status = await queries.lead_status(conn, lead_id, lock=True)
        if status is None:
            raise Refused({"form": "There is no such lead."}, 404)
        if status != "unsold":
            raise Refused({"form": f"Only an unsold lead can be re-routed; this one is {status}."}, 409)
        await add_event(conn, "router.reroute", LeadReroute(lead_id=lead_id, requested_by=who.email))
        await record(conn, who, "lead.reroute", str(lead_id))
