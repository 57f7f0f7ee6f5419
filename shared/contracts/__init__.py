"""Message contracts: every message that crosses a service boundary, one module per area.

Each contract carries `version`; a consumer accepts the versions it knows and dead-letters the rest
with a clear error. Additive changes (a new optional field) keep the version; anything else bumps
it. docs/messages.md documents each message, its exchange and routing key.
"""

from shared.contracts.assignments import LeadAssigned
from shared.contracts.base import Contract
from shared.contracts.delivery import (
    ConfirmPrice,
    DeliveryFailed,
    DeliveryPriceConfirmed,
    DeliveryRequested,
    DeliverySucceeded,
    PriceConfirmationResult,
)
from shared.contracts.errors import ErrorReply
from shared.contracts.leads import FieldError, InboundLead, LeadOutcome, LeadReroute, SoldDelivery
from shared.contracts.notifier import (
    AppointmentAccepted,
    AppointmentCancel,
    AppointmentCreate,
    AppointmentUpdate,
    NotificationRequested,
)
from shared.contracts.portal_auth import Failure as PortalAuthFailure
from shared.contracts.portal_auth import PortalAuthReply, PortalAuthRequest
from shared.contracts.returns import (
    OrderCommand,
    OrderCommandResult,
    OrderFiguresView,
    OrderFilled,
    OrderStatusChanged,
    ReturnDecide,
    ReturnDecided,
    ReturnRequest,
    ReturnRequested,
)

__all__ = [
    "AppointmentAccepted",
    "AppointmentCancel",
    "AppointmentCreate",
    "AppointmentUpdate",
    "ConfirmPrice",
    "Contract",
    "DeliveryFailed",
    "DeliveryPriceConfirmed",
    "DeliveryRequested",
    "DeliverySucceeded",
    "ErrorReply",
    "FieldError",
    "InboundLead",
    "LeadAssigned",
    "LeadOutcome",
    "LeadReroute",
    "NotificationRequested",
    "OrderCommand",
    "OrderCommandResult",
    "OrderFiguresView",
    "OrderFilled",
    "OrderStatusChanged",
    "PortalAuthFailure",
    "PortalAuthReply",
    "PortalAuthRequest",
    "PriceConfirmationResult",
    "ReturnDecide",
    "ReturnDecided",
    "ReturnRequest",
    "ReturnRequested",
    "SoldDelivery",
]
