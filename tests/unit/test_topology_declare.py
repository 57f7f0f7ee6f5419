"""Declaring the topology outlasts the broker's transient refusals (issue 14 item 7)."""

from __future__ import annotations

from typing import Any, cast

import aiormq
import pytest

from shared.topology import WORK_QUEUES, Topology

HOME_NODE_DOWN = "NOT_FOUND - home node 'rabbit@x' of durable queue 'q' in vhost '/' is down or inaccessible"


class RefusingBroker:
    """Declares like a broker, but refuses the first `refusals[name]` attempts at each name."""

    def __init__(self, refusals: dict[str, list[BaseException]]) -> None:
        self.refusals = refusals
        self.declared: list[str] = []
        self.bound: list[tuple[str, str]] = []

    def _refuse(self, name: str) -> None:
        if self.refusals.get(name):
            raise self.refusals[name].pop(0)

    async def declare_exchange(self, exchange):
        self._refuse(exchange.name)
        return exchange

    async def declare_queue(self, queue):
        self._refuse(queue.name)
        self.declared.append(queue.name)
        broker = self

        class Bindable:
            name = queue.name

            async def bind(self, exchange, routing_key):
                broker._refuse(f"{queue.name} <- {routing_key}")
                broker.bound.append((queue.name, routing_key))

        return Bindable()


async def test_a_quorum_queue_refused_while_its_home_node_starts_is_declared_on_a_later_try():
    topology = Topology("fresh", (0.5,))
    leads = topology.queue_name("router.leads")
    broker = RefusingBroker(
        {
            leads: [aiormq.exceptions.ChannelNotFoundEntity(HOME_NODE_DOWN)] * 2,
            f"{leads} <- lead.#": [ConnectionError("broker restarting")],
            "fresh.events": [TimeoutError()],
        }
    )
    await topology.declare(cast(Any, broker))
    assert broker.declared.count(leads) == 1
    assert (leads, "lead.#") in broker.bound
    assert len(broker.bound) == sum(len(q.bindings) for q in WORK_QUEUES.values())


async def test_a_queue_that_exists_with_other_arguments_fails_at_once():
    topology = Topology("fresh", (0.5,))
    leads = topology.queue_name("router.leads")
    refusal = aiormq.exceptions.ChannelPreconditionFailed("PRECONDITION_FAILED - inequivalent arg 'x-queue-type'")
    broker = RefusingBroker({leads: [refusal]})
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
        await topology.declare(cast(Any, broker))
