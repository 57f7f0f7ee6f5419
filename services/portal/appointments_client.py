"""The portal's appointment commands to notifier, which owns appointments: `appointment.create`,
`.update` and `.cancel` over the process's multiplexed request-reply client (shared/rpc.py).
notifier answers after its transaction commits: `AppointmentAccepted`, or the shared error reply
(`refused`, with the reason) for a command it can never apply.

Each call returns that answer, `NoAnswer` when none came in time (the command is durable in
notifier's queue and will still be applied), `NotSent` when it never reached the broker, or
`Refused` (shared/rpc.py `command`).
"""

from __future__ import annotations

from pydantic import BaseModel

from shared.contracts import AppointmentAccepted, AppointmentCancel, AppointmentCreate, AppointmentUpdate
from shared.rpc import NoAnswer, NotSent, Refused, RequestReply, command
from shared.topology import Topology

__all__ = ["Answer", "NoAnswer", "NotSent", "Refused", "send"]

TIMEOUT = 5.0

Answer = AppointmentAccepted | NoAnswer | NotSent | Refused

ROUTING_KEYS: dict[type[BaseModel], str] = {
    AppointmentCreate: "appointment.create",
    AppointmentUpdate: "appointment.update",
    AppointmentCancel: "appointment.cancel",
}


async def send(
    rpc: RequestReply,
    topology: Topology,
    appointment: AppointmentCreate | AppointmentUpdate | AppointmentCancel,
    *,
    message_id: str,
    timeout: float = TIMEOUT,
) -> Answer:
    """Send one command and wait for notifier's answer. `message_id` is notifier's inbox key for
    updates and cancels: the id minted with the form, so a form sent twice is applied once."""
    return await command(
        rpc,
        topology.events.name,
        ROUTING_KEYS[type(appointment)],
        appointment,
        AppointmentAccepted,
        timeout=timeout,
        message_id=message_id,
        service="notifier",
    )
