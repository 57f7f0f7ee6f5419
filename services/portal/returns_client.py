"""The portal's calls to the returns service, which owns returns and the order commands: a
request over the process's multiplexed request-reply client (shared/rpc.py), answered by the
service after its transaction commits (the reply goes through its outbox).

Each call returns the service's answer, `NoAnswer` when none came in time (the command may still
be carried out: it is durable in the service's queue), `NotSent` when it could not be sent, or
`Refused` (shared/rpc.py `command`).
"""

from __future__ import annotations

from shared.contracts import OrderCommand, OrderCommandResult, ReturnRequest, ReturnRequested
from shared.rpc import NoAnswer, NotSent, Refused, RequestReply, command
from shared.topology import Topology

__all__ = ["NoAnswer", "NotSent", "Refused", "order_command", "request_return"]

TIMEOUT = 5.0
SERVICE = "the returns service"


async def request_return(
    rpc: RequestReply, topology: Topology, request: ReturnRequest, *, timeout: float = TIMEOUT
) -> ReturnRequested | NoAnswer | NotSent | Refused:
    return await command(
        rpc, topology.events.name, "return.request", request, ReturnRequested, timeout=timeout, service=SERVICE
    )


async def order_command(
    rpc: RequestReply, topology: Topology, order: OrderCommand, *, timeout: float = TIMEOUT
) -> OrderCommandResult | NoAnswer | NotSent | Refused:
    return await command(
        rpc, topology.events.name, "order.command", order, OrderCommandResult, timeout=timeout, service=SERVICE
    )
