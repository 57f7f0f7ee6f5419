"""Which contract travels under which routing key: what each work queue consumes (and answers to a
`reply_to`), and what each service publishes on `<ns>.events`.

This is the map the AsyncAPI documents are generated from (`shared/asyncapi.py`,
`scripts/asyncapi` -> docs/asyncapi/); tests/unit/test_asyncapi.py checks it against the topology
(every binding of every work queue carries at least one route here, and every route here is bound)
and the committed documents against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.contracts import portal_auth as auth
from shared.contracts.assignments import LeadAssigned
from shared.contracts.delivery import (
    ConfirmPrice,
    DeliveryFailed,
    DeliveryPriceConfirmed,
    DeliveryRequested,
    DeliverySucceeded,
    PriceConfirmationResult,
)
from shared.contracts.errors import ErrorReply
from shared.contracts.leads import InboundLead, LeadOutcome, LeadReroute
from shared.contracts.notifier import (
    AppointmentAccepted,
    AppointmentCancel,
    AppointmentCreate,
    AppointmentUpdate,
    NotificationRequested,
)
from shared.contracts.returns import (
    OrderCommand,
    OrderCommandResult,
    OrderFilled,
    OrderStatusChanged,
    ReturnDecide,
    ReturnDecided,
    ReturnRequest,
    ReturnRequested,
)


@dataclass(frozen=True)
class Route:
    """One kind of message under one routing key. `routing_key` may hold a `{placeholder}` (one
    word, e.g. `lead.{lead_type}`); `replies` are what a `reply_to` gets back."""

    routing_key: str
    contract: Any  # a contract class
    summary: str
    replies: tuple[Any, ...] = ()

    @property
    def key_pattern(self) -> str:
        """The routing key as an AMQP topic pattern (a placeholder is one word)."""
        return ".".join("*" if w.startswith("{") else w for w in self.routing_key.split("."))


def _auth(op: str, request: Any, reply: Any, summary: str) -> Route:
    return Route(f"portal_auth.{op}", request, summary, (reply, auth.Failure))


# By logical work queue (shared/topology.py WORK_QUEUES).
CONSUMED: dict[str, tuple[Route, ...]] = {
    "router.leads": (
        Route(
            "lead.{lead_type}",
            InboundLead,
            "A lead from a lead source (exchange <ns>.inbound); the routing key names its lead type.",
            (LeadOutcome, ErrorReply),
        ),
    ),
    "router.delivery-results": (
        Route("delivery.succeeded", DeliverySucceeded, "The buyer accepted; the final price."),
        Route("delivery.failed", DeliveryFailed, "The buyer refused, or every retry failed."),
    ),
    "router.reroutes": (
        Route("router.reroute", LeadReroute, "An admin re-routes an unsold lead under the current catalog."),
    ),
    "delivery.requests": (Route("delivery.requested", DeliveryRequested, "Post this lead to this delivery account."),),
    "delivery.confirm-price": (
        Route(
            "delivery.confirm-price",
            ConfirmPrice,
            "A price a buyer or an admin confirms for one delivery.",
            (PriceConfirmationResult, ErrorReply),
        ),
    ),
    "returns.commands": (
        Route("return.request", ReturnRequest, "Return a lead.", (ReturnRequested, ErrorReply)),
        Route("return.decide", ReturnDecide, "An admin approves or denies a pending return.", (ErrorReply,)),
        Route("order.command", OrderCommand, "Pause, resume or close an order.", (OrderCommandResult, ErrorReply)),
    ),
    "portal_auth.rpc": (
        _auth("login", auth.Login, auth.LoginOk, "Log in: a session token and who it is."),
        _auth("verify", auth.Verify, auth.Identity, "Who a session token belongs to, and what they may see."),
        _auth("logout", auth.Logout, auth.Done, "End this session."),
        _auth("revoke_all", auth.RevokeAll, auth.Done, "End every session of the session's user."),
        _auth("change_password", auth.ChangePassword, auth.Done, "Change the password; other sessions end."),
        _auth("request_password_reset", auth.RequestPasswordReset, auth.Done, "Email a reset link (always Done)."),
        _auth("reset_password", auth.ResetPassword, auth.Done, "Set a new password with a reset token."),
        _auth("check_link", auth.CheckLink, auth.LinkGrant, "May this emailed link open this lead?"),
        _auth("create_user", auth.CreateUser, auth.UserOk, "An admin creates a user of their client."),
        _auth("update_user", auth.UpdateUser, auth.UserOk, "Change a user (their own details, or an admin's)."),
        _auth("list_users", auth.ListUsers, auth.UserList, "The users of the session's client."),
    ),
    "notifier.requests": (
        Route("notify.{kind}", NotificationRequested, "Send one email, once (kind: see NotificationRequested.kind)."),
        Route("lead.sold", LeadOutcome, "A sold lead: new-lead emails to the buyers' subscribed admin users."),
        Route("lead.assigned", LeadAssigned, "A lead assigned in the portal: new-lead emails its scopes make due."),
        Route("return.decided", ReturnDecided, "A return the seller decided: the client's users are emailed."),
        Route("appointment.create", AppointmentCreate, "Book an appointment.", (AppointmentAccepted, ErrorReply)),
        Route("appointment.update", AppointmentUpdate, "Change an appointment.", (AppointmentAccepted, ErrorReply)),
        Route("appointment.cancel", AppointmentCancel, "Cancel an appointment.", (AppointmentAccepted, ErrorReply)),
    ),
}

_ORDER_CLOSED = Route("order.closed", OrderStatusChanged, "An order closed (by command, filled, or ended).")

# By service: the events each publishes on <ns>.events (through its outbox).
PUBLISHED: dict[str, tuple[Route, ...]] = {
    "router": (
        Route("lead.{status}", LeadOutcome, "The lead's one terminal outcome: sold, unsold, duplicate or rejected."),
        Route("delivery.requested", DeliveryRequested, "Post this lead to this delivery account."),
        Route("order.filled", OrderFilled, "An order's period filled."),
        _ORDER_CLOSED,
        Route("notify.order_filled", NotificationRequested, "Email the admin: an order filled."),
    ),
    "delivery": (
        Route("delivery.succeeded", DeliverySucceeded, "The buyer accepted; the final price."),
        Route("delivery.failed", DeliveryFailed, "The buyer refused, or every retry failed."),
        Route("delivery.price-confirmed", DeliveryPriceConfirmed, "A confirmed price changed a delivery's price."),
        Route("notify.lead_delivery", NotificationRequested, "The email delivery method: the lead, by email."),
        Route("notify.account_paused", NotificationRequested, "Email the admin: an account was auto-paused."),
    ),
    "returns": (
        Route("return.requested", ReturnRequested, "A return request was recorded, with its status."),
        Route("return.decided", ReturnDecided, "A return was approved or denied."),
        Route("order.paused", OrderStatusChanged, "An order was paused."),
        Route("order.resumed", OrderStatusChanged, "An order was resumed."),
        _ORDER_CLOSED,
    ),
    "portal_auth": (
        Route("notify.password_reset", NotificationRequested, "A password reset or invitation link, by email."),
    ),
    "notifier": (
        Route("notify.{kind}", NotificationRequested, "notifier's own emails: new_lead, return_decided, appointments."),
    ),
}

SERVICES = tuple(PUBLISHED)


def consumed_by(service: str) -> dict[str, tuple[Route, ...]]:
    """The work queues a service consumes (their logical names start with the service's name)."""
    return {queue: routes for queue, routes in CONSUMED.items() if queue.split(".")[0] == service}
