"""The portal's calls to the returns service, which owns returns and the order commands: a
request over the process's multiplexed request-reply client (shared/rpc.py), answered by the
service after its transaction commits (the reply goes through its outbox).

Each call returns the service's answer, `NoAnswer` when none came in time (the command may still
be carried out: it is durable in the service's queue), or `NotSent` when it could not be sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.contracts import OrderCommand, OrderCommandResult, ReturnRequest, ReturnRequested
from shared.rpc import RequestFailed, RequestReply
from shared.topology import Topology

log = logging.getLogger("leadwire.portal.returns_client")

T = TypeVar("T", bound=BaseModel)

TIMEOUT = 5.0


@dataclass(frozen=True)
class NoAnswer:
    """No reply within the timeout: the request is queued and will be handled."""


@dataclass(frozen=True)
class NotSent:
    """The request never reached the broker: nothing will happen."""


@dataclass(frozen=True)
class Refused:
    """The service could not read the request (its error reply, docs/messages.md)."""

    error: str
    message: str


async def _call(
    rpc: RequestReply, topology: Topology, routing_key: str, body: BaseModel, reply_type: type[T], timeout: float
) -> T | NoAnswer | NotSent | Refused:
    try:
        reply = await rpc.request(topology.events.name, routing_key, body, timeout=timeout)
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
        return Refused("bad_reply", "the returns service sent a reply that is not JSON")
    if data.get("ok") is False and "error" in data and "message" in data:
        return Refused(str(data["error"]), str(data["message"]))
    try:
        return reply_type.model_validate(data)
    except ValidationError:
        return Refused("bad_reply", "the returns service sent a reply this portal does not understand")


async def request_return(
    rpc: RequestReply, topology: Topology, request: ReturnRequest, *, timeout: float = TIMEOUT
) -> ReturnRequested | NoAnswer | NotSent | Refused:
    return await _call(rpc, topology, "return.request", request, ReturnRequested, timeout)


async def order_command(
    rpc: RequestReply, topology: Topology, command: OrderCommand, *, timeout: float = TIMEOUT
) -> OrderCommandResult | NoAnswer | NotSent | Refused:
    return await _call(rpc, topology, "order.command", command, OrderCommandResult, timeout)
