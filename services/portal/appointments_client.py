"""The portal's appointment commands to notifier, which owns appointments: `appointment.create`,
`.update` and `.cancel` over the process's multiplexed request-reply client (shared/rpc.py).
notifier answers after its transaction commits: `AppointmentAccepted`, or the shared error reply
(`refused`, with the reason) for a command it can never apply.

Each call returns that answer, `NoAnswer` when none came in time (the command is durable in
notifier's queue and will still be applied), or `NotSent` when it never reached the broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.contracts import AppointmentAccepted, AppointmentCancel, AppointmentCreate, AppointmentUpdate
from shared.rpc import RequestFailed, RequestReply
from shared.topology import Topology

log = logging.getLogger("leadwire.portal.appointments_client")

TIMEOUT = 5.0


@dataclass(frozen=True)
class NoAnswer:
    """No reply within the timeout: the command is queued and will be applied."""


@dataclass(frozen=True)
class NotSent:
    """The command never reached the broker: nothing will happen."""


@dataclass(frozen=True)
class Refused:
    """notifier refused the command (error `refused`: the reason is `message`), or could not read it."""

    error: str
    message: str


Answer = AppointmentAccepted | NoAnswer | NotSent | Refused

ROUTING_KEYS: dict[type[BaseModel], str] = {
    AppointmentCreate: "appointment.create",
    AppointmentUpdate: "appointment.update",
    AppointmentCancel: "appointment.cancel",
}


async def send(
    rpc: RequestReply,
    topology: Topology,
    command: AppointmentCreate | AppointmentUpdate | AppointmentCancel,
    *,
    message_id: str,
    timeout: float = TIMEOUT,
) -> Answer:
    """Send one command and wait for notifier's answer. `message_id` is notifier's inbox key for
    updates and cancels: the id minted with the form, so a form sent twice is applied once."""
    routing_key = ROUTING_KEYS[type(command)]
    try:
        reply = await rpc.request(topology.events.name, routing_key, command, timeout=timeout, message_id=message_id)
    except TimeoutError:
        return NoAnswer()
    except RequestFailed as exc:
        log.warning("%s could not be sent: %s", routing_key, exc)
        return NotSent()
    try:
        data: Any = reply.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Refused("bad_reply", "notifier sent a reply that is not JSON")
    if data.get("ok") is False:
        return Refused(str(data.get("error", "refused")), str(data.get("message", "")))
    try:
        return AppointmentAccepted.model_validate(data)
    except ValidationError:
        return Refused("bad_reply", "notifier sent a reply this portal does not understand")
