"""The AsyncAPI documents say what the topology binds and what the contracts are
(shared/contracts/routes.py, shared/asyncapi.py), and the committed ones are current."""

from __future__ import annotations

import importlib
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import asyncapi
from shared.contracts.portal_auth import PortalAuthRequest
from shared.contracts.routes import CONSUMED, PUBLISHED, SERVICES
from shared.topology import WORK_QUEUES, topic_matches

ROOT = Path(__file__).resolve().parents[2]


def _sample(routing_key: str) -> str:
    """A concrete key for a route key with placeholders (`lead.{lead_type}` -> `lead.x`)."""
    return ".".join("x" if word.startswith("{") else word for word in routing_key.split("."))


def test_every_work_queue_has_routes_and_every_route_is_bound_to_its_queue():
    assert set(CONSUMED) == set(WORK_QUEUES)
    for queue, routes in CONSUMED.items():
        bindings = WORK_QUEUES[queue].bindings
        for route in routes:
            assert any(topic_matches(b, _sample(route.routing_key)) for b in bindings), (queue, route.routing_key)
        for binding in bindings:
            assert any(topic_matches(binding, _sample(r.routing_key)) for r in routes), (queue, binding)


@pytest.mark.parametrize("service", SERVICES)
def test_each_document_lists_every_routing_key_with_a_real_payload_and_the_namespace(service):
    doc = asyncapi.build(service)
    queues = [q for q in WORK_QUEUES if q.split(".")[0] == service]
    received = {op["bindings"]["amqp"]["cc"][0] for op in doc["operations"].values() if op["action"] == "receive"}
    assert received == {r.routing_key for q in queues for r in CONSUMED[q]}
    sent = {op["bindings"]["amqp"]["cc"][0] for op in doc["operations"].values() if op["action"] == "send"}
    assert sent == {r.routing_key for r in PUBLISHED[service]}
    for channel in doc["channels"].values():
        if channel["address"] is not None:
            assert channel["address"].startswith("{namespace}.") and "namespace" in channel["parameters"]
    for message in doc["components"]["messages"].values():
        schema = doc["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[1]]
        assert schema["type"] == "object" and schema["properties"], message["name"]


@pytest.mark.parametrize("service", SERVICES)
def test_the_committed_documents_are_current(service):
    """Regenerate with scripts/asyncapi."""
    committed = (ROOT / "docs" / "asyncapi" / f"{service}.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(committed) == yaml.safe_load(asyncapi.render(service))


def _handled_contracts(service: str) -> dict[str, set[Any]]:
    """The contract each handler of each of a service's queues takes, read off the handlers."""
    module = importlib.import_module(f"services.{service}.main")
    runtime = module.build()
    taken: dict[str, set[Any]] = {}
    for subscriber in runtime.broker.subscribers:
        queue = subscriber.queue.name.removeprefix(f"{runtime.settings.namespace}.")
        for call in subscriber.calls:
            hints = typing.get_type_hints(call.handler._original_call)
            taken.setdefault(queue, set()).update(v for k, v in hints.items() if k != "return")
    return taken


@pytest.mark.parametrize("service", SERVICES)
def test_the_routes_name_the_contracts_the_handlers_take(service):
    """The routes map is what the documents say; the handlers are what the services do."""
    for queue, contracts in _handled_contracts(service).items():
        documented = {r.contract for r in CONSUMED[queue]}
        if contracts == {dict[str, Any]}:
            # portal_auth validates the body itself, against the op-discriminated union.
            union = typing.get_args(typing.get_args(PortalAuthRequest)[0])
            assert documented == set(union), queue
        else:
            handled = set().union(*(typing.get_args(c) or (c,) for c in contracts))
            assert documented == handled, queue
