"""The caller's side of portal_auth (the portal's web tier, other services, tests).

Calls go through the process's one multiplexed request-reply client (`shared/rpc.py`), so many
calls are in flight together without waiting on each other. Every call has a timeout that covers
the whole call; a call that gets no answer in time returns `Failure(error="unavailable")`; it never
raises for an expected outcome.

Each request carries its deadline (header `x-deadline-ms`, unix milliseconds): portal_auth refuses one
that arrives after it instead of, say, creating a session nobody will receive. The reply must
carry the request's correlation id; a stray late reply to an earlier request is never taken as
this one's answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from shared.contracts.portal_auth import (
    ChangePassword,
    CheckLink,
    CreateUser,
    Done,
    Failure,
    Identity,
    LinkGrant,
    ListUsers,
    Login,
    LoginOk,
    Logout,
    RequestPasswordReset,
    ResetPassword,
    RevokeAll,
    UpdateUser,
    UserList,
    UserOk,
    Verify,
)
from shared.rpc import RequestFailed, RequestReply
from shared.service import validation_summary
from shared.topology import Topology

log = logging.getLogger("leadwire.portal_auth.client")

T = TypeVar("T", bound=BaseModel)

DEFAULT_TIMEOUT = 5.0


class PortalAuthClient:
    def __init__(self, rpc: RequestReply, topology: Topology, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError("a portal_auth call needs a positive timeout")
        self._rpc = rpc
        self._exchange = topology.events.name
        self.timeout = timeout

    async def _ask(
        self, build: Callable[[], BaseModel], reply_type: type[T], *, timeout: float | None = None
    ) -> T | Failure:
        """Build the request, then call; a request its own contract refuses (a NUL character, a
        token too long) is answered here, as portal_auth would answer it: `bad_request`."""
        try:
            request = build()
        except ValidationError as exc:
            return Failure(error="bad_request", message=validation_summary(exc))
        return await self.call(request, reply_type, timeout=timeout)

    async def call(self, request: BaseModel, reply_type: type[T], *, timeout: float | None = None) -> T | Failure:
        timeout = timeout or self.timeout
        correlation_id = str(uuid.uuid4())
        op = request.op  # type: ignore[attr-defined]
        try:
            reply = await self._rpc.request(
                self._exchange,
                f"portal_auth.{op}",
                request.model_dump(mode="json"),
                timeout=timeout,
                correlation_id=correlation_id,
                message_id=correlation_id,
            )
        except TimeoutError:
            return Failure(error="unavailable", message=f"portal_auth did not answer within {timeout:g} s")
        except RequestFailed as exc:
            log.warning("portal_auth %s call failed: %s", op, exc)
            return Failure(error="unavailable", message="portal_auth could not be reached")
        if reply.correlation_id != correlation_id:
            log.warning("portal_auth %s: ignoring a reply to another request", op)
            return Failure(error="unavailable", message="portal_auth answered another request")
        try:
            body: Any = reply.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return Failure(error="bad_request", message="portal_auth could not read the request")
        try:
            if body.get("ok") is False:
                return Failure.model_validate(body)
            return reply_type.model_validate(body)
        except ValidationError:
            return Failure(error="unavailable", message="portal_auth sent a reply this client does not understand")

    # --- One method per op -----------------------------------------------------------------------

    async def login(self, email: str, password: str, **kw: Any) -> LoginOk | Failure:
        return await self._ask(lambda: Login(email=email, password=SecretStr(password)), LoginOk, **kw)

    async def verify(self, token: str, **kw: Any) -> Identity | Failure:
        return await self._ask(lambda: Verify(token=token), Identity, **kw)

    async def logout(self, token: str, **kw: Any) -> Done | Failure:
        return await self._ask(lambda: Logout(token=token), Done, **kw)

    async def revoke_all(self, token: str, **kw: Any) -> Done | Failure:
        return await self._ask(lambda: RevokeAll(token=token), Done, **kw)

    async def change_password(self, token: str, current: str, new: str, **kw: Any) -> Done | Failure:
        return await self._ask(
            lambda: ChangePassword(token=token, current_password=SecretStr(current), new_password=SecretStr(new)),
            Done,
            **kw,
        )

    async def request_password_reset(self, email: str, **kw: Any) -> Done | Failure:
        return await self._ask(lambda: RequestPasswordReset(email=email), Done, **kw)

    async def reset_password(self, reset_token: str, new_password: str, **kw: Any) -> Done | Failure:
        return await self._ask(
            lambda: ResetPassword(reset_token=reset_token, new_password=SecretStr(new_password)), Done, **kw
        )

    async def check_link(
        self, link_token: str, *, lead_id: uuid.UUID | None = None, client_id: str | None = None, **kw: Any
    ) -> LinkGrant | Failure:
        return await self._ask(
            lambda: CheckLink(link_token=link_token, lead_id=lead_id, client_id=client_id), LinkGrant, **kw
        )

    async def create_user(
        self, token: str, email: str, *, password: str | None = None, timeout: float | None = None, **fields: Any
    ) -> UserOk | Failure:
        secret = SecretStr(password) if password is not None else None
        return await self._ask(
            lambda: CreateUser(token=token, email=email, password=secret, **fields), UserOk, timeout=timeout
        )

    async def update_user(
        self, token: str, user_id: uuid.UUID, *, timeout: float | None = None, **changes: Any
    ) -> UserOk | Failure:
        return await self._ask(lambda: UpdateUser(token=token, user_id=user_id, **changes), UserOk, timeout=timeout)

    async def list_users(self, token: str, **kw: Any) -> UserList | Failure:
        return await self._ask(lambda: ListUsers(token=token), UserList, **kw)
