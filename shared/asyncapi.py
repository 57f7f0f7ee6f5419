"""The AsyncAPI 3.0 document of each service, from the routes map (shared/contracts/routes.py), the
topology and the pydantic contracts: `python -m shared.asyncapi [OUT_DIR]` (scripts/asyncapi writes
docs/asyncapi/<service>.yaml).

Each document has one channel per work queue the service consumes (address
`{namespace}.<service>.<queue>`, with every routing key the queue binds), one channel per exchange
it publishes to (`{namespace}.events`), and a reply channel (the address a request's `reply_to`
names); `namespace` is a parameter of every address (LEADWIRE_NAMESPACE, default `leadwire`).
Every message has its real payload schema. FastStream's own generator saw only `dict` for the
handlers that dispatch on the routing key (returns, portal_auth, notifier) and a fixed namespace.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from shared.contracts.routes import PUBLISHED, SERVICES, Route, consumed_by
from shared.topology import WORK_QUEUES

REF = "#/components/schemas/{model}"
AMQP = "0.3.0"
NAMESPACE = {
    "description": "LEADWIRE_NAMESPACE: the prefix of every exchange and queue of an installation.",
    "default": "leadwire",
}
DESCRIPTIONS = {
    "router": "Validates leads, checks duplicates and decides which delivery accounts get each lead.",
    "delivery": "Posts leads to buyers' endpoints, confirms prices and retries transient failures.",
    "returns": "Return requests under caps, admin decisions, and order commands (pause, resume, close).",
    "portal_auth": "Client Portal users, sessions, inactive-client lockout and expiring email links (request-reply).",
    "notifier": "Sends every Leadwire email once over SMTP, and keeps appointments and their reminders.",
}
ERROR_REPLY_NOTE = (
    "A message that ends dead-lettered is answered with ErrorReply when it carried reply_to "
    "(docs/messages.md, Error replies)."
)


def _name(model: Any) -> str:
    return str(model.__name__)


def _schemas(models: list[Any]) -> dict[str, Any]:
    """Every model's JSON schema, sharing one set of definitions under components/schemas."""
    unique = list(dict.fromkeys(models))
    by_model, definitions = models_json_schema([(m, "validation") for m in unique], ref_template=REF)
    schemas = dict(definitions.get("$defs", {}))
    for model in unique:
        schema = by_model[(model, "validation")]
        if "$ref" not in schema:
            schemas[_name(model)] = schema
    return dict(sorted(schemas.items()))


def _message(model: Any) -> dict[str, Any]:
    doc = (model.__doc__ or "").strip()
    message: dict[str, Any] = {
        "name": _name(model),
        "title": _name(model),
        "contentType": "application/json",
        "correlationId": {"location": "$message.header#/correlation_id"},
        "payload": {"$ref": REF.format(model=_name(model))},
    }
    if doc:
        message["description"] = " ".join(doc.split())
    return message


def _exchange_binding(exchange: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "routingKey",
            "exchange": {"name": f"{{namespace}}.{exchange}", "type": "topic", "durable": True, "autoDelete": False},
            "bindingVersion": AMQP,
        }
    }


def _operation_id(action: str, route: Route) -> str:
    return f"{action}:{route.routing_key}"


def build(service: str) -> dict[str, Any]:
    consumed = consumed_by(service)
    published = PUBLISHED[service]
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    models: list[Any] = []
    replies: list[Any] = []

    for queue, routes in consumed.items():
        spec = WORK_QUEUES[queue]
        channels[queue] = {
            "address": f"{{namespace}}.{queue}",
            "title": f"queue {{namespace}}.{queue}",
            "description": (
                f"Quorum queue bound to exchange {{namespace}}.{spec.exchange} with "
                f"{', '.join(spec.bindings)}; dead letters in {{namespace}}.{queue}.dlq. {ERROR_REPLY_NOTE}"
            ),
            "parameters": {"namespace": dict(NAMESPACE)},
            "messages": {_name(r.contract): {"$ref": f"#/components/messages/{_name(r.contract)}"} for r in routes},
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": f"{{namespace}}.{queue}",
                        "durable": True,
                        "exclusive": False,
                        "autoDelete": False,
                    },
                    "bindingVersion": AMQP,
                }
            },
        }
        for route in routes:
            models.append(route.contract)
            operation: dict[str, Any] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{queue}"},
                "title": f"{route.routing_key}",
                "summary": route.summary,
                "messages": [{"$ref": f"#/channels/{queue}/messages/{_name(route.contract)}"}],
                "bindings": {"amqp": {"cc": [route.routing_key], "ack": True, "bindingVersion": AMQP}},
            }
            if route.replies:
                replies += route.replies
                operation["reply"] = {
                    "address": {"location": "$message.header#/reply_to"},
                    "channel": {"$ref": "#/channels/reply"},
                    "messages": [{"$ref": f"#/channels/reply/messages/{_name(m)}"} for m in route.replies],
                }
            operations[_operation_id("receive", route)] = operation

    if published:
        channels["events"] = {
            "address": "{namespace}.events",
            "title": "exchange {namespace}.events",
            "description": "Durable topic exchange; Leadwire publishes through its outbox, persistent and confirmed.",
            "parameters": {"namespace": dict(NAMESPACE)},
            "messages": {_name(r.contract): {"$ref": f"#/components/messages/{_name(r.contract)}"} for r in published},
            "bindings": _exchange_binding("events"),
        }
        for route in published:
            models.append(route.contract)
            operations[_operation_id("send", route)] = {
                "action": "send",
                "channel": {"$ref": "#/channels/events"},
                "title": route.routing_key,
                "summary": route.summary,
                "messages": [{"$ref": f"#/channels/events/messages/{_name(route.contract)}"}],
                "bindings": {"amqp": {"cc": [route.routing_key], "deliveryMode": 2, "bindingVersion": AMQP}},
            }
    if replies:
        channels["reply"] = {
            "address": None,
            "title": "the request's reply_to",
            "description": (
                "The queue the request's AMQP reply_to property names (default exchange; amq.rabbitmq.reply-to "
                "works), with the request's correlation_id."
            ),
            "messages": {_name(m): {"$ref": f"#/components/messages/{_name(m)}"} for m in dict.fromkeys(replies)},
        }
        models += replies

    all_models = list(dict.fromkeys(models))
    return {
        "asyncapi": "3.0.0",
        "info": {"title": f"leadwire {service}", "version": "1", "description": DESCRIPTIONS[service]},
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:5672", "pathname": "/", "protocol": "amqp", "protocolVersion": "0.9.1"}
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {_name(m): _message(m) for m in all_models},
            "schemas": _schemas(all_models),
        },
    }


def render(service: str) -> str:
    return yaml.safe_dump(build(service), sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/asyncapi")
    out.mkdir(parents=True, exist_ok=True)
    for service in SERVICES:
        path = out / f"{service}.yaml"
        path.write_text(render(service), encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
