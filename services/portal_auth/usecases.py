"""portal_auth use cases: one per request op, each answering with a reply contract.

Expected failures (a wrong password, an expired session, a forbidden change) are replies, never
exceptions: an exception would dead-letter the request and leave the caller waiting out its
timeout. An unexpected one (database away, a bug) is logged, without the request body, and
answered `unavailable`; the request is not retried, because its caller gave up long before a
retry tier would bring it back.

Passwords only exist as `SecretStr` in requests and as argon2id hashes in the database; neither
the request body nor a password is ever logged.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeGuard

import asyncpg
from pydantic import TypeAdapter, ValidationError

from services.portal_auth import credentials, rules, store
from services.portal_auth.config import PortalAuthConfig
from services.portal_auth.credentials import Passwords
from shared.catalog.model import Catalog
from shared.contracts.notifier import NotificationRequested, PasswordResetData
from shared.contracts.portal_auth import (
    ChangePassword,
    CheckLink,
    CreateUser,
    Done,
    ErrorCode,
    Failure,
    Identity,
    LinkGrant,
    ListUsers,
    Login,
    LoginOk,
    Logout,
    PortalAuthReply,
    PortalAuthRequest,
    PortalUser,
    RequestPasswordReset,
    ResetPassword,
    RevokeAll,
    UpdateUser,
    UserList,
    UserOk,
    Verify,
)
from shared.outbox import add_event, claim_message
from shared.portal_links import read_link_token
from shared.process import Process
from shared.service import describe, validation_summary
from shared.settings import Settings

log = logging.getLogger("leadwire.portal_auth")

CONSUMER = "portal_auth.rpc"
# Unix milliseconds as an integer: AMQP float headers are 32-bit and lose minutes at this size.
DEADLINE_HEADER = "x-deadline-ms"
# One reset email per user per minute at most, whatever is asked.
RESET_COOLDOWN = timedelta(minutes=1)

# mypy reads TypeAdapter's argument as a class; an Annotated union is a special form pydantic takes.
REQUEST: TypeAdapter[PortalAuthRequest] = TypeAdapter(PortalAuthRequest)  # type: ignore[arg-type, unused-ignore]

MESSAGES: dict[ErrorCode, str] = {
    "invalid_credentials": "wrong email or password",
    "throttled": "too many failed attempts; try again later",
    "account_disabled": "this portal user is disabled",
    "client_inactive": "portal access is disabled for this client",
    "session_invalid": "not logged in",
    "session_expired": "the session has expired; log in again",
    "forbidden": "only an admin user may do this",
    "not_found": "no such user",
    "conflict": "that email address is already in use",
    "reset_invalid": "this password reset link is invalid, used or expired",
    "link_invalid": "this link is not valid (it was altered or is incomplete)",
    "link_expired": "this link has expired; log in to the portal to see the lead",
    "link_wrong_client": "this link belongs to another client",
    "link_wrong_lead": "this link is for another lead",
    "duplicate_request": "this request was already handled",
    "deadline_exceeded": "the request arrived after its deadline",
    "unavailable": "portal_auth could not answer; try again",
}


def fail(error: ErrorCode, message: str | None = None, retry_after: datetime | None = None) -> Failure:
    return Failure(error=error, message=message or MESSAGES.get(error, error), retry_after=retry_after)


class Refused(Exception):
    """Ends a use case with a failure reply, rolling back the transaction it is raised in."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error)
        self.failure = failure


@dataclass(frozen=True)
class Deps:
    """What portal_auth's use cases need (built once, in main.py or by the CLI)."""

    process: Process
    config: PortalAuthConfig
    passwords: Passwords
    clock: Callable[[], datetime]  # tests decide what time it is

    @property
    def pool(self) -> asyncpg.Pool:
        return self.process.pool

    @property
    def catalog(self) -> Catalog:
        return self.process.catalog

    @property
    def settings(self) -> Settings:
        return self.process.settings


@dataclass(frozen=True)
class RequestMeta:
    message_id: str | None = None
    deadline: float | None = None  # unix seconds: the caller stops waiting then
    problem: str | None = None  # a malformed header: the request is answered bad_request

    @classmethod
    def from_message(cls, message_id: str | None, headers: dict[str, Any] | None) -> RequestMeta:
        try:
            return cls(message_id, rules.read_deadline((headers or {}).get(DEADLINE_HEADER)))
        except ValueError as exc:
            return cls(message_id, None, str(exc))


async def answer(deps: Deps, body: Any, meta: RequestMeta) -> PortalAuthReply:
    """The one entry point: validate, dispatch, and always produce a reply."""
    if meta.problem is not None:
        return fail("bad_request", meta.problem)
    # Wall-clock on purpose (not deps.clock): the caller's deadline is real time.
    if meta.deadline is not None and time.time() > meta.deadline:
        return fail("deadline_exceeded")
    try:
        request = REQUEST.validate_python(body)
    except ValidationError as exc:
        return fail("bad_request", validation_summary(exc))
    try:
        return await HANDLERS[request.op](deps, request, meta, deps.clock())
    except Refused as refused:
        return refused.failure
    except Exception as exc:  # the caller gets an answer whatever happens
        log.error("portal_auth %s failed: %s", request.op, describe(exc), exc_info=not isinstance(exc, OSError))
        return fail("unavailable")


async def _claim(conn: asyncpg.Connection, meta: RequestMeta) -> None:
    if meta.message_id and not await claim_message(conn, CONSUMER, meta.message_id):
        raise Refused(fail("duplicate_request"))


# --- Helpers -------------------------------------------------------------------------------------


def _access(catalog: Catalog, *, client_id: str, user_enabled: bool = True) -> rules.AccessRefusal | None:
    client = catalog.clients_by_id.get(client_id)
    return rules.portal_access(
        user_enabled=user_enabled,
        client_known=client is not None,
        client_active=client is not None and client.active,
        lock_inactive_clients=catalog.client_options(client_id).disable_portal_for_inactive_clients,
    )


def _portal_user(row: asyncpg.Record) -> PortalUser:
    return PortalUser(
        id=row["id"],
        client_id=row["client_id"],
        email=row["email"],
        name=row["name"],
        is_admin=row["is_admin"],
        view_downline=row["view_downline"],
        enabled=row["enabled"],
        notify_new_leads=row["notify_new_leads"],
        parent_user_id=row["parent_user_id"],
        phone=row["phone"],
        has_password=row["password_hash"] is not None,
    )


async def _identity(
    conn: asyncpg.Connection,
    deps: Deps,
    user: asyncpg.Record,
    *,
    session_id: uuid.UUID,
    last_seen_at: datetime,
    expires_at: datetime,
) -> Identity:
    scope = rules.visibility(is_admin=user["is_admin"], view_downline=user["view_downline"])
    visible: list[uuid.UUID] | None
    if scope == "all":
        visible = None
    elif scope == "downline":
        visible = await store.downline(conn, user["id"], user["client_id"])
    else:
        visible = [user["id"]]
    return Identity(
        session_id=session_id,
        user_id=user["id"],
        client_id=user["client_id"],
        email=user["email"],
        name=user["name"],
        is_admin=user["is_admin"],
        view_downline=user["view_downline"],
        scope=scope,
        visible_user_ids=visible,
        session_expires_at=expires_at,
        idle_expires_at=rules.idle_expires_at(last_seen_at, expires_at, deps.config.session_policy()),
    )


@dataclass(frozen=True)
class Session:
    session_id: uuid.UUID
    user: asyncpg.Record
    expires_at: datetime

    @property
    def actor(self) -> rules.Actor:
        return rules.Actor(self.user["id"], self.user["client_id"], self.user["is_admin"])


async def _authenticate(conn: asyncpg.Connection, deps: Deps, token: str, now: datetime) -> Session:
    """The live session behind `token`, or Refused. A session whose user was disabled, or whose
    client turned inactive (with the option on), is revoked here: it is dead from this verify on,
    not from its expiry, and stays dead if the client comes back."""
    parts = credentials.split_token(token)
    if parts is None:
        raise Refused(fail("session_invalid"))
    row = await store.session_with_user(conn, parts[0])
    if row is None or not credentials.secret_matches(parts[1], row["secret_hash"]):
        raise Refused(fail("session_invalid"))
    state = rules.session_state(
        last_seen_at=row["last_seen_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        now=now,
        policy=deps.config.session_policy(),
    )
    if state == "revoked":
        raise Refused(fail("session_invalid"))
    if state != "live":
        raise Refused(fail("session_expired"))
    refusal = _access(deps.catalog, client_id=row["client_id"], user_enabled=row["enabled"])
    if refusal is not None:
        await store.revoke_session(conn, row["session_id"], refusal, now)
        raise Refused(fail(refusal))
    await store.touch_session(conn, row["session_id"], now)
    return Session(row["session_id"], row, row["expires_at"])


async def _start_attempt(conn: asyncpg.Connection, deps: Deps, key: str, now: datetime) -> None:
    """Spend one login attempt of `key`, or refuse when the email is being throttled. The
    attempt counts as failed until the password proves right, so parallel guesses each spend one."""
    policy = deps.config.login_policy()
    counter = await store.lock_failures(conn, key)
    throttle = rules.login_throttle(counter["failed_count"], counter["last_failed_at"], now, policy)
    if not throttle.allowed:
        assert throttle.retry_after is not None
        raise Refused(
            fail(
                "throttled",
                f"too many failed attempts; try again after {throttle.retry_after.isoformat(timespec='seconds')}",
                throttle.retry_after,
            )
        )
    failures = rules.current_failures(counter["failed_count"], counter["last_failed_at"], now, policy)
    await store.record_failure(conn, key, failures + 1, now)


async def _send_reset(conn: asyncpg.Connection, deps: Deps, user: asyncpg.Record, purpose: str, now: datetime) -> None:
    ttl = (
        timedelta(hours=deps.config.invite_hours)
        if purpose == "invite"
        else timedelta(minutes=deps.config.reset_minutes)
    )
    reset_id, token, secret_hash = credentials.new_token()
    await store.insert_reset(
        conn,
        reset_id=reset_id,
        user_id=user["id"],
        secret_hash=secret_hash,
        purpose=purpose,
        now=now,
        expires_at=now + ttl,
    )
    base = deps.settings.portal_base_url.rstrip("/")
    await add_event(
        conn,
        "notify.password_reset",
        NotificationRequested(
            notification_id=reset_id,
            kind="password_reset",
            to=[user["email"]],
            client_id=user["client_id"],
            portal_link=f"{base}/reset/{token}",
            subject="Set your Client Portal password" if purpose == "invite" else "Reset your Client Portal password",
            data=PasswordResetData(
                purpose=purpose, user_id=str(user["id"]), user_name=user["name"], expires_at=(now + ttl).isoformat()
            ),
        ),
    )


# --- Login and sessions --------------------------------------------------------------------------


async def login(deps: Deps, req: Login, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    key = rules.email_key(req.email)
    password = req.password.get_secret_value()
    pool = deps.pool
    async with pool.acquire() as conn, conn.transaction():
        await _claim(conn, meta)
        await _start_attempt(conn, deps, key, now)
        user = await store.user_by_email(conn, key)
    # Hashed with no connection held; an unknown email hashes a dummy, so it takes as long.
    if not await deps.passwords.verify(user["password_hash"] if user else None, password):
        return fail("invalid_credentials")
    assert user is not None
    rehash = await deps.passwords.hash(password) if deps.passwords.needs_rehash(user["password_hash"]) else None
    policy = deps.config.session_policy()
    async with pool.acquire() as conn, conn.transaction():
        await store.clear_failures(conn, key)
        refusal = _access(deps.catalog, client_id=user["client_id"], user_enabled=user["enabled"])
        if refusal is not None:
            return fail(refusal)
        if rehash is not None:
            await store.set_password(conn, user["id"], rehash, now)
        session_id, token, secret_hash = credentials.new_token()
        expires_at = now + policy.lifetime
        await store.insert_session(
            conn,
            session_id=session_id,
            user_id=user["id"],
            client_id=user["client_id"],
            secret_hash=secret_hash,
            now=now,
            expires_at=expires_at,
        )
        identity = await _identity(conn, deps, user, session_id=session_id, last_seen_at=now, expires_at=expires_at)
    log.info("portal user %s of client %s logged in", user["id"], user["client_id"])
    return LoginOk(session_token=token, identity=identity)


async def verify(deps: Deps, req: Verify, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    async with deps.pool.acquire() as conn:
        session = await _authenticate(conn, deps, req.token, now)
        return await _identity(
            conn, deps, session.user, session_id=session.session_id, last_seen_at=now, expires_at=session.expires_at
        )


async def logout(deps: Deps, req: Logout, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    """Ends this one session; logging out of an expired session is not an error."""
    parts = credentials.split_token(req.token)
    if parts is None:
        return fail("session_invalid")
    async with deps.pool.acquire() as conn:
        row = await store.session_with_user(conn, parts[0])
        if row is None or not credentials.secret_matches(parts[1], row["secret_hash"]):
            return fail("session_invalid")
        revoked = await store.revoke_session(conn, row["session_id"], "logout", now)
    return Done(count=int(revoked))


async def revoke_all(deps: Deps, req: RevokeAll, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    async with deps.pool.acquire() as conn:
        session = await _authenticate(conn, deps, req.token, now)
        count = await store.revoke_user_sessions(conn, session.user["id"], "revoke_all", now)
    return Done(count=count)


# --- Passwords -----------------------------------------------------------------------------------


async def change_password(deps: Deps, req: ChangePassword, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    """Needs the current password (throttled like a login); ends every other session."""
    pool = deps.pool
    async with pool.acquire() as conn:
        session = await _authenticate(conn, deps, req.token, now)
        user = session.user
        new_password = req.new_password.get_secret_value()
        if (problem := rules.password_problem(new_password, user["email"])) is not None:
            return fail("weak_password", problem)
        key = rules.email_key(user["email"])
        async with conn.transaction():
            await _claim(conn, meta)
            await _start_attempt(conn, deps, key, now)
    if not await deps.passwords.verify(user["password_hash"], req.current_password.get_secret_value()):
        return fail("invalid_credentials", "the current password is wrong")
    new_hash = await deps.passwords.hash(new_password)
    async with pool.acquire() as conn, conn.transaction():
        await store.clear_failures(conn, key)
        await store.set_password(conn, user["id"], new_hash, now)
        await store.spend_resets(conn, user["id"], now)
        count = await store.revoke_user_sessions(conn, user["id"], "password_changed", now, keep=session.session_id)
    return Done(count=count)


async def request_password_reset(
    deps: Deps, req: RequestPasswordReset, meta: RequestMeta, now: datetime
) -> PortalAuthReply:
    """Always `Done`: the answer never tells whether the email belongs to a user. A reset email
    goes out only to an enabled user who could use the portal, at most once a minute."""
    async with deps.pool.acquire() as conn, conn.transaction():
        await _claim(conn, meta)
        user = await store.user_by_email(conn, rules.email_key(req.email))
        if user is None or _access(deps.catalog, client_id=user["client_id"], user_enabled=user["enabled"]) is not None:
            return Done()
        if await store.recent_reset(conn, user["id"], now - RESET_COOLDOWN):
            return Done()
        await _send_reset(conn, deps, user, "reset", now)
    return Done()


async def reset_password(deps: Deps, req: ResetPassword, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    """Single use: the new password spends this link and every other outstanding one, ends every
    session of the user, and lifts a login lock."""
    parts = credentials.split_token(req.reset_token)
    if parts is None:
        return fail("reset_invalid")
    reset_id, secret = parts
    pool = deps.pool

    def usable(reset: asyncpg.Record | None) -> TypeGuard[asyncpg.Record]:
        return (
            reset is not None
            and reset["used_at"] is None
            and now < reset["expires_at"]
            and credentials.secret_matches(secret, reset["secret_hash"])
        )

    async with pool.acquire() as conn:
        reset = await store.reset_by_id(conn, reset_id)
        if not usable(reset):
            return fail("reset_invalid")
        user = await store.user_by_id(conn, reset["user_id"])
    if user is None:  # removed since the link was sent
        return fail("reset_invalid")
    new_password = req.new_password.get_secret_value()
    if (problem := rules.password_problem(new_password, user["email"])) is not None:
        return fail("weak_password", problem)
    new_hash = await deps.passwords.hash(new_password)
    async with pool.acquire() as conn, conn.transaction():
        await _claim(conn, meta)
        if not usable(await store.reset_by_id(conn, reset_id, for_update=True)):  # spent while hashing
            return fail("reset_invalid")
        await store.set_password(conn, user["id"], new_hash, now)
        await store.spend_resets(conn, user["id"], now)
        await store.clear_failures(conn, rules.email_key(user["email"]))
        await store.revoke_user_sessions(conn, user["id"], "password_reset", now)
    return Done()


# --- Emailed links -------------------------------------------------------------------------------


async def check_link(deps: Deps, req: CheckLink, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    claims = read_link_token(deps.settings.portal_link_secret, req.link_token)
    catalog = deps.catalog
    sold = False
    if claims is not None:
        async with deps.pool.acquire() as conn:
            sold = await store.lead_sold_to(conn, claims.lead_id, claims.client_id)
    expire_days = catalog.client_options(claims.client_id).expire_portal_email_link_days if claims else 0
    refusal = rules.link_refusal(
        claims,
        now=now,
        expire_days=expire_days,
        wanted_lead=req.lead_id,
        wanted_client=req.client_id,
        sold_to_client=sold,
        client_refusal=_access(catalog, client_id=claims.client_id) if claims else None,
    )
    if refusal is not None:
        return fail(refusal)
    assert claims is not None
    return LinkGrant(
        client_id=claims.client_id,
        lead_id=claims.lead_id,
        issued_at=claims.issued_at,
        expires_at=rules.link_expires_at(claims.issued_at, expire_days),
    )


# --- Users ---------------------------------------------------------------------------------------


async def add_user(
    conn: asyncpg.Connection,
    deps: Deps,
    *,
    client_id: str,
    email: str,
    name: str,
    password_hash: str | None,
    is_admin: bool,
    view_downline: bool = False,
    enabled: bool = True,
    notify_new_leads: bool = False,
    parent_user_id: uuid.UUID | None = None,
    phone: str | None = None,
    now: datetime,
) -> asyncpg.Record:
    """Insert a user of `client_id` (call inside a transaction). The first user of a client is
    an enabled admin whatever was asked: someone must be able to manage the others."""
    await store.lock_client_users(conn, client_id)
    if await store.count_users(conn, client_id) == 0:
        is_admin, enabled = True, True
    if parent_user_id is not None:
        parent = await store.user_by_id(conn, parent_user_id)
        problem = rules.parent_problem(
            user_id=None,
            parent_id=parent_user_id,
            parent_client_id=parent["client_id"] if parent else None,
            client_id=client_id,
            parent_ancestors=[],
        )
        if problem is not None:
            raise Refused(fail("bad_request", problem))
    try:
        async with conn.transaction():  # a savepoint, so a taken email leaves the caller's transaction usable
            user = await store.insert_user(
                conn,
                user_id=uuid.uuid4(),
                client_id=client_id,
                email=email.strip(),
                name=name,
                password_hash=password_hash,
                is_admin=is_admin,
                view_downline=view_downline,
                enabled=enabled,
                notify_new_leads=notify_new_leads,
                parent_user_id=parent_user_id,
                phone=phone,
                now=now,
            )
    except asyncpg.UniqueViolationError:
        raise Refused(fail("conflict")) from None
    if password_hash is None and enabled:
        await _send_reset(conn, deps, user, "invite", now)
    return user


async def create_user(deps: Deps, req: CreateUser, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    async with deps.pool.acquire() as conn:
        session = await _authenticate(conn, deps, req.token, now)
        if not session.user["is_admin"]:
            return fail("forbidden")
        password_hash = None
        if req.password is not None:
            password = req.password.get_secret_value()
            if (problem := rules.password_problem(password, req.email)) is not None:
                return fail("weak_password", problem)
            password_hash = await deps.passwords.hash(password)
        async with conn.transaction():
            await _claim(conn, meta)
            # The client is always the admin's own: a request cannot name another.
            user = await add_user(
                conn,
                deps,
                client_id=session.user["client_id"],
                email=req.email,
                name=req.name,
                password_hash=password_hash,
                is_admin=req.is_admin,
                view_downline=req.view_downline,
                enabled=req.enabled,
                notify_new_leads=req.notify_new_leads,
                parent_user_id=req.parent_user_id,
                phone=req.phone,
                now=now,
            )
    log.info("portal user %s created in client %s by %s", user["id"], user["client_id"], session.user["id"])
    return UserOk(user=_portal_user(user))


async def update_user(deps: Deps, req: UpdateUser, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    changes: dict[str, Any] = {
        name: getattr(req, name)
        for name in ("name", "phone", "notify_new_leads", "is_admin", "view_downline", "enabled", "parent_user_id")
        if getattr(req, name) is not None
    }
    if req.clear_parent:
        changes["parent_user_id"] = None
    async with deps.pool.acquire() as conn:
        session = await _authenticate(conn, deps, req.token, now)
        actor = session.actor
        async with conn.transaction():
            await _claim(conn, meta)
            await store.lock_client_users(conn, actor.client_id)
            target = await store.user_by_id(conn, req.user_id, for_update=True)
            # Another client's user is reported as missing: its existence is none of the caller's business.
            if target is None or target["client_id"] != actor.client_id:
                raise Refused(fail("not_found"))
            if not rules.may_change(
                actor, target_id=target["id"], target_client_id=target["client_id"], fields=frozenset(changes)
            ):
                raise Refused(fail("forbidden", "only an admin user may change this"))
            if changes.get("parent_user_id") is not None:
                parent = await store.user_by_id(conn, changes["parent_user_id"])
                problem = rules.parent_problem(
                    user_id=target["id"],
                    parent_id=changes["parent_user_id"],
                    parent_client_id=parent["client_id"] if parent else None,
                    client_id=actor.client_id,
                    parent_ancestors=await store.ancestors(conn, changes["parent_user_id"]) if parent else [],
                )
                if problem is not None:
                    raise Refused(fail("bad_request", problem))
            if rules.leaves_client_without_admin(
                enabled_admins=await store.count_enabled_admins(conn, actor.client_id),
                target_is_enabled_admin=target["is_admin"] and target["enabled"],
                stays_enabled_admin=changes.get("is_admin", target["is_admin"])
                and changes.get("enabled", target["enabled"]),
            ):
                raise Refused(fail("forbidden", "a client needs at least one enabled admin user"))
            user = await store.update_user(conn, target["id"], changes, now)
            if changes.get("enabled") is False:
                await store.revoke_user_sessions(conn, target["id"], "user_disabled", now)
    return UserOk(user=_portal_user(user))


async def list_users(deps: Deps, req: ListUsers, meta: RequestMeta, now: datetime) -> PortalAuthReply:
    """Admins see every user of their client; others see themselves and their downline."""
    async with deps.pool.acquire() as conn:
        session = await _authenticate(conn, deps, req.token, now)
        user = session.user
        if user["is_admin"]:
            rows = await store.client_users(conn, user["client_id"])
        else:
            ids = await store.downline(conn, user["id"], user["client_id"]) if user["view_downline"] else [user["id"]]
            rows = await store.users_by_ids(conn, user["client_id"], ids)
    return UserList(users=[_portal_user(r) for r in rows])


HANDLERS: dict[str, Callable[[Deps, Any, RequestMeta, datetime], Awaitable[PortalAuthReply]]] = {
    "login": login,
    "verify": verify,
    "logout": logout,
    "revoke_all": revoke_all,
    "change_password": change_password,
    "request_password_reset": request_password_reset,
    "reset_password": reset_password,
    "check_link": check_link,
    "create_user": create_user,
    "update_user": update_user,
    "list_users": list_users,
}


async def prune(deps: Deps) -> None:
    """Housekeeping (portal_auth's background loop): drop ended sessions, reset tokens and old
    counters."""
    now = deps.clock()
    async with deps.pool.acquire() as conn:
        await store.prune(conn, now, now - deps.config.login_policy().lock_for)
