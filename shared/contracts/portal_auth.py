"""portal_auth request-reply contracts.

Every request goes to exchange `<ns>.events` with routing key `portal_auth.<op>` and a `reply_to`
(services/portal_auth/client.py does this, always with a timeout). Every request gets exactly one
reply: a `Failure` (`ok: false`) for anything expected to go wrong, or the op's success reply
(`ok: true`). Passwords are `SecretStr`: their repr and logs show `**********`, only the JSON
sent on the wire carries them.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, SecretStr, field_serializer

from shared.contracts.base import Contract

Email = Annotated[str, Field(min_length=3, max_length=320)]
Token = Annotated[str, Field(min_length=1, max_length=512)]
# Long enough for any sane passphrase, short enough that hashing it is not a denial of service.
Password = Annotated[SecretStr, Field(min_length=1, max_length=1024)]

ErrorCode = Literal[
    "invalid_credentials",  # wrong email or password: never says which
    "throttled",  # too many failed logins for this email: see retry_after
    "account_disabled",  # the user is disabled (only said after a correct password)
    "client_inactive",  # the client is inactive and the portal is disabled for inactive clients
    "session_invalid",  # unknown, malformed, logged out or revoked session token
    "session_expired",  # absolute or idle expiry passed
    "forbidden",  # the user may not do this (not an admin)
    "not_found",  # no such user in the caller's client
    "conflict",  # email already in use
    "weak_password",
    "reset_invalid",  # unknown, used or expired password reset token
    "link_invalid",  # tampered or malformed email link
    "link_expired",
    "link_wrong_client",  # the link belongs to another client
    "link_wrong_lead",  # the link opens another lead
    "bad_request",  # the request does not match any contract
    "duplicate_request",  # this message id was already handled (a redelivery)
    "deadline_exceeded",  # the caller had already given up when the request arrived
    "unavailable",  # portal_auth could not answer (database away, no reply in time)
]


class _Request(Contract):
    version: Literal[1] = 1


def _reveal(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


class Login(_Request):
    op: Literal["login"] = "login"
    email: Email
    password: Password

    @field_serializer("password", when_used="json")
    def _password(self, value: SecretStr) -> str | None:
        return _reveal(value)


class Verify(_Request):
    op: Literal["verify"] = "verify"
    token: Token


class Logout(_Request):
    op: Literal["logout"] = "logout"
    token: Token


class RevokeAll(_Request):
    """Sign the session's user out everywhere (every session, this one included)."""

    op: Literal["revoke_all"] = "revoke_all"
    token: Token


class ChangePassword(_Request):
    op: Literal["change_password"] = "change_password"
    token: Token
    current_password: Password
    new_password: Password

    @field_serializer("current_password", "new_password", when_used="json")
    def _passwords(self, value: SecretStr) -> str | None:
        return _reveal(value)


class RequestPasswordReset(_Request):
    """Always answered with `Done`, whether or not the email belongs to a user."""

    op: Literal["request_password_reset"] = "request_password_reset"
    email: Email


class ResetPassword(_Request):
    op: Literal["reset_password"] = "reset_password"
    reset_token: Token
    new_password: Password

    @field_serializer("new_password", when_used="json")
    def _password(self, value: SecretStr) -> str | None:
        return _reveal(value)


class CheckLink(_Request):
    """May this emailed link open a lead? `lead_id`: the lead the link is being used for;
    `client_id`: the client of the portal session using it, if any."""

    op: Literal["check_link"] = "check_link"
    link_token: Token
    lead_id: uuid.UUID | None = None
    client_id: str | None = None


class CreateUser(_Request):
    """An admin creates a user of their own client. Without a password the new user gets an
    invitation (a password_reset email with purpose "invite")."""

    op: Literal["create_user"] = "create_user"
    token: Token
    email: Email
    name: str = Field("", max_length=200)
    is_admin: bool = False
    view_downline: bool = False
    enabled: bool = True
    notify_new_leads: bool = False
    parent_user_id: uuid.UUID | None = None
    phone: str | None = Field(None, max_length=50)
    password: Password | None = None

    @field_serializer("password", when_used="json")
    def _password(self, value: SecretStr | None) -> str | None:
        return _reveal(value)


class UpdateUser(_Request):
    """Fields left out (None) keep their value; `clear_parent` removes the parent. A user may
    change their own name, phone and notify_new_leads; everything else needs an admin."""

    op: Literal["update_user"] = "update_user"
    token: Token
    user_id: uuid.UUID
    name: str | None = Field(None, max_length=200)
    phone: str | None = Field(None, max_length=50)
    notify_new_leads: bool | None = None
    is_admin: bool | None = None
    view_downline: bool | None = None
    enabled: bool | None = None
    parent_user_id: uuid.UUID | None = None
    clear_parent: bool = False


class ListUsers(_Request):
    op: Literal["list_users"] = "list_users"
    token: Token


PortalAuthRequest = Annotated[
    Login
    | Verify
    | Logout
    | RevokeAll
    | ChangePassword
    | RequestPasswordReset
    | ResetPassword
    | CheckLink
    | CreateUser
    | UpdateUser
    | ListUsers,
    Field(discriminator="op"),
]


# --- Replies -------------------------------------------------------------------------------------


class Failure(Contract):
    version: Literal[1] = 1
    ok: Literal[False] = False
    error: ErrorCode
    message: str
    retry_after: AwareDatetime | None = None


Scope = Literal["own", "downline", "all"]


class Identity(Contract):
    """Who the session's user is and which leads they may see: `own` (their own), `downline`
    (theirs and their downline's: `visible_user_ids`), `all` (every lead of the client)."""

    version: Literal[1] = 1
    ok: Literal[True] = True
    session_id: uuid.UUID
    user_id: uuid.UUID
    client_id: str
    email: str
    name: str
    is_admin: bool
    view_downline: bool
    scope: Scope
    visible_user_ids: list[uuid.UUID] | None  # None with scope "all": the whole client
    session_expires_at: AwareDatetime
    idle_expires_at: AwareDatetime


class LoginOk(Contract):
    version: Literal[1] = 1
    ok: Literal[True] = True
    session_token: str
    identity: Identity


class Done(Contract):
    version: Literal[1] = 1
    ok: Literal[True] = True
    count: int | None = None  # sessions revoked, where that applies


class LinkGrant(Contract):
    """The link may open this one lead of this client."""

    version: Literal[1] = 1
    ok: Literal[True] = True
    client_id: str
    lead_id: uuid.UUID
    issued_at: AwareDatetime
    expires_at: AwareDatetime | None  # None: links never expire (option set to 0)


class PortalUser(Contract):
    id: uuid.UUID
    client_id: str
    email: str
    name: str
    is_admin: bool
    view_downline: bool
    enabled: bool
    notify_new_leads: bool
    parent_user_id: uuid.UUID | None
    phone: str | None
    has_password: bool


class UserOk(Contract):
    version: Literal[1] = 1
    ok: Literal[True] = True
    user: PortalUser


class UserList(Contract):
    version: Literal[1] = 1
    ok: Literal[True] = True
    users: list[PortalUser]


PortalAuthReply = Failure | LoginOk | Identity | Done | LinkGrant | UserOk | UserList
