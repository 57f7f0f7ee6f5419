"""Prometheus metrics: one registry per process, served on an HTTP port of its own, and every
metric Leadwire defines, in one place (docs/operations.md explains each).

A service process (shared/service.py `Runtime`) or web tier (shared/web.py) calls `serve(service,
settings)` once it runs: the registry is then exposed at `http://<host>:<port>/metrics`, where the
port is `LEADWIRE_METRICS_PORT` or the service's default (`DEFAULT_PORTS`); `off` turns metrics
off for the process (no endpoint, no FastStream middleware, no sampling). Every sample is served
with the labels `service` and `replica` (hostname:pid), added when Prometheus scrapes, not when a
counter moves: replicas are told apart without costing the hot path anything.

Hot path: a counter or histogram moves in a few microseconds (prometheus_client, a lock and an
add). Domain code calls the small functions below (`lead_decided`, `post_answered`, ...); those
that count a state change call `after_commit`, which defers the count until the handler that made
the change returns (its transaction has committed by then): a handler that fails and is retried
counts once, when it succeeds.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, ClassVar

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("leadwire.metrics")

# Where each service serves /metrics unless LEADWIRE_METRICS_PORT says otherwise. One port per
# service, so that one of each can run on one host (scripts/run); in containers every replica has
# its own address and keeps its service's port.
DEFAULT_PORTS = {
    "router": 9101,
    "delivery": 9102,
    "returns": 9103,
    "portal_auth": 9104,
    "notifier": 9105,
    "portal": 9106,
    "intake": 9107,
    "admin": 9108,
}
FALLBACK_PORT = 9100  # a service not in the table (a new one until it is added)

# Every Leadwire metric and FastStream's own (faststream_*) live here, plus the process and
# Python collectors prometheus_client offers.
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

# --- the metrics ---------------------------------------------------------------------------------

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

LEADS = Counter(
    "leadwire_leads",
    "Leads decided by the router, by source, lead type and outcome (sold, unsold, duplicate, rejected)",
    ["source", "lead_type", "outcome"],
    registry=REGISTRY,
)
ROUTING_SECONDS = Histogram(
    "leadwire_routing_seconds",
    "Time the router spends on one step of a lead (receive: validate, de-duplicate, plan, store;"
    " result: settle a delivery result and move the lead on), commit included",
    ["step"],
    buckets=SECONDS_BUCKETS,
    registry=REGISTRY,
)
ROUTER_REFUSALS = Counter(
    "leadwire_router_refusals",
    "Delivery accounts the router could not give a lead to, by account and reason (cap: a cap"
    " is full; order: no order with room where one is required)",
    ["account", "reason"],
    registry=REGISTRY,
)
POSTS = Counter(
    "leadwire_posts",
    "Posts to buyers' endpoints, by delivery account and result (accepted, rejected, transient)",
    ["account", "result"],
    registry=REGISTRY,
)
BUYER_SECONDS = Histogram(
    "leadwire_buyer_response_seconds",
    "Time from sending a post to the buyer's whole answer (or the timeout), by delivery account",
    ["account"],
    buckets=SECONDS_BUCKETS,
    registry=REGISTRY,
)
POST_RETRIES = Counter(
    "leadwire_post_retries",
    "Posts scheduled for another attempt after a transient failure, by delivery account",
    ["account"],
    registry=REGISTRY,
)
ACCOUNT_PAUSES = Counter(
    "leadwire_delivery_account_pauses",
    "Delivery accounts paused automatically after consecutive failures, by account",
    ["account"],
    registry=REGISTRY,
)
PAUSED_ACCOUNTS = Gauge(
    "leadwire_delivery_accounts_paused",
    "Delivery accounts paused now (sampled from the database)",
    registry=REGISTRY,
)
MESSAGE_RETRIES = Counter(
    "leadwire_message_retries",
    "Messages parked in a retry queue after a transient handler failure, by work queue",
    ["queue"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "leadwire_dead_letters",
    "Messages dead-lettered by the failure routing, by work queue",
    ["queue"],
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter(
    "leadwire_outbox_published",
    "Outbox rows this process's relay published",
    registry=REGISTRY,
)
OUTBOX_ROWS = Gauge(
    "leadwire_outbox_rows",
    "Rows waiting in the outbox (sampled from the database)",
    registry=REGISTRY,
)
OUTBOX_AGE = Gauge(
    "leadwire_outbox_oldest_age_seconds",
    "Age of the oldest row waiting in the outbox, 0 when it is empty (sampled from the database)",
    registry=REGISTRY,
)
QUEUE_MESSAGES = Gauge(
    "leadwire_queue_messages",
    "Messages ready in a work queue or dead-letter queue (sampled from the broker), by queue"
    " (`router.leads`, `router.leads.dlq`: names without the namespace)",
    ["queue"],
    registry=REGISTRY,
)
RETURNS = Counter(
    "leadwire_returns",
    "Return decisions, by decision (approved, denied, pending) and by whom (rules: at request time; admin)",
    ["decision", "by"],
    registry=REGISTRY,
)
EMAILS = Counter(
    "leadwire_emails",
    "Emails handed to SMTP by the notifier, by kind and result (sent, failed)",
    ["kind", "result"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "leadwire_http_request_duration_seconds",
    "Web tier requests, by route template, method and status",
    ["route", "method", "status"],
    buckets=SECONDS_BUCKETS,
    registry=REGISTRY,
)

# --- counting after commit -----------------------------------------------------------------------

_pending: ContextVar[list[Callable[[], None]] | None] = ContextVar("leadwire_metrics_pending", default=None)


def handler_scope() -> list[Callable[[], None]]:
    """Start deferring `after_commit` counts of the handler about to run; the caller applies them
    (`apply`) when it returns, or drops them when it fails."""
    pending: list[Callable[[], None]] = []
    _pending.set(pending)
    return pending


def apply(pending: Iterable[Callable[[], None]]) -> None:
    for count in pending:
        count()


def after_commit(count: Callable[[], None]) -> None:
    """Count a state change once the handler that makes it has returned (outside a handler — a
    CLI command, a background loop — at once: the caller has committed already)."""
    pending = _pending.get()
    if pending is None:
        count()
    else:
        pending.append(count)


# --- what domain code calls ----------------------------------------------------------------------


def lead_decided(source: str, lead_type: str, outcome: str) -> None:
    after_commit(LEADS.labels(source, lead_type, outcome).inc)


def router_refused(account: str, reason: str) -> None:
    after_commit(ROUTER_REFUSALS.labels(account, reason).inc)


def post_answered(account: str, result: str, seconds: float) -> None:
    """A post happened (whatever becomes of its record): counted at once."""
    POSTS.labels(account, result).inc()
    BUYER_SECONDS.labels(account).observe(seconds)


def post_retry(account: str) -> None:
    after_commit(POST_RETRIES.labels(account).inc)


def account_paused(account: str) -> None:
    after_commit(ACCOUNT_PAUSES.labels(account).inc)


def return_decided(decision: str, by: str) -> None:
    after_commit(RETURNS.labels(decision, by).inc)


def email(kind: str, result: str) -> None:
    EMAILS.labels(kind, result).inc()


# --- serving -------------------------------------------------------------------------------------


def replica() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _ProcessLabels(Collector):
    """The registry as served: every sample with `service` and `replica` added."""

    def __init__(self, services: list[str]) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        labels = {"service": "+".join(self.services), "replica": replica()}
        for family in REGISTRY.collect():
            served = copy.copy(family)
            served.samples = [s._replace(labels={**s.labels, **labels}) for s in family.samples]
            yield served


def port_for(service: str, setting: str | None) -> int | None:
    """The port a service serves metrics on: the setting (a number; `off` for none), else the
    service's default."""
    if setting is None or setting.strip() == "":
        return DEFAULT_PORTS.get(service, FALLBACK_PORT)
    if setting.strip().lower() in ("off", "false", "no", "none", "-"):
        return None
    return int(setting)


def enabled(setting: str | None) -> bool:
    return port_for("", setting) is not None


class _Server:
    lock = threading.Lock()
    services: ClassVar[list[str]] = []
    labels: _ProcessLabels | None = None
    port: int | None = None


def serve(service: str, setting: str | None, *, host: str = "0.0.0.0") -> int | None:
    """Serve the registry on the service's port (once per process; a second runtime in the same
    process — tests, the demo — joins its name to the `service` label). Returns the port, or None
    when metrics are off or the port is taken (logged: the service runs on without an endpoint)."""
    port = port_for(service, setting)
    if port is None:
        return None
    with _Server.lock:
        if service not in _Server.services:
            _Server.services.append(service)
        if _Server.labels is not None:
            return _Server.port
        labels = _ProcessLabels(_Server.services)
        served = CollectorRegistry(auto_describe=False)
        served.register(labels)
        try:
            server, _thread = start_http_server(port, addr=host, registry=served)
        except OSError as exc:
            log.warning("metrics: cannot serve on port %d (%s); this process exports no metrics", port, exc)
            return None
        _Server.labels = labels
        _Server.port = server.server_port
        log.info("metrics: http://%s:%d/metrics", host, _Server.port)
        return _Server.port


def faststream_middleware(service: str) -> Any:
    """FastStream's Prometheus middleware for a broker (message counts, handling and publishing
    times, in flight, sizes), on this registry, with `app_name` = the service — its metrics
    manager swapped for `_CachedManager`, which moves the same metrics for a fraction of the CPU."""
    from faststream.rabbit.prometheus import RabbitPrometheusMiddleware

    middleware = RabbitPrometheusMiddleware(registry=REGISTRY, app_name=service)
    manager = middleware._metrics_manager
    middleware._metrics_manager = _cached_manager(manager._container, service)
    return middleware


# Label values FastStream's metrics would otherwise mint without bound: callers' private reply
# queues (Direct Reply-To names differ per caller channel, server-named queues per connection).
_PRIVATE_QUEUES = ("default.amq.rabbitmq.reply-to", "default.amq.gen-")
MAX_DESTINATIONS = 1000


def _bounded_destination(where: str, known: set[str]) -> str:
    """`handler` / `destination` as served: private reply queues by their kind, and `other` once
    a process has seen MAX_DESTINATIONS (a source inventing routing keys cannot grow the series
    without end). `known` collects the values kept."""
    for prefix in _PRIVATE_QUEUES:
        if where.startswith(prefix):
            return prefix.rstrip("-.")
    if len(known) >= MAX_DESTINATIONS:
        return "other"
    known.add(where)
    return where


def _cached_manager(container: Any, app_name: str) -> Any:
    """FastStream's MetricsManager with each labelled child looked up once: the stock one calls
    `.labels(app_name=..., broker=..., handler=...)` (about 5 µs with keyword labels) six times per
    message handled and three times per publish; a dict lookup is a tenth of that."""
    from faststream.prometheus.manager import MetricsManager

    class CachedManager(MetricsManager):
        __slots__ = ("_children", "_known")

        def __init__(self) -> None:
            super().__init__(container, app_name=app_name)
            self._children: dict[tuple[str, ...], Any] = {}
            self._known: set[str] = set()

        def _child(self, metric: Any, broker: str, where: str, *values: str) -> Any:
            if where not in self._known:
                where = _bounded_destination(where, self._known)
            key = (metric._name, where, *values)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = metric.labels(app_name, broker, where, *values)
            return child

        def add_received_message(self, broker: str, handler: str, amount: int = 1, **_: str) -> None:
            self._child(container.received_messages_total, broker, handler).inc(amount)

        def observe_received_messages_size(self, broker: str, handler: str, size: int, **_: str) -> None:
            self._child(container.received_messages_size_bytes, broker, handler).observe(size)

        def add_received_message_in_process(self, broker: str, handler: str, amount: int = 1, **_: str) -> None:
            self._child(container.received_messages_in_process, broker, handler).inc(amount)

        def remove_received_message_in_process(self, broker: str, handler: str, amount: int = 1, **_: str) -> None:
            self._child(container.received_messages_in_process, broker, handler).dec(amount)

        def add_received_processed_message(
            self, broker: str, handler: str, status: Any, amount: int = 1, **_: str
        ) -> None:
            self._child(container.received_processed_messages_total, broker, handler, status.value).inc(amount)

        def observe_received_processed_message_duration(
            self, duration: float, broker: str, handler: str, **_: str
        ) -> None:
            self._child(container.received_processed_messages_duration_seconds, broker, handler).observe(duration)

        def add_received_processed_message_exception(
            self, broker: str, handler: str, exception_type: str, **_: str
        ) -> None:
            metric = container.received_processed_messages_exceptions_total
            self._child(metric, broker, handler, exception_type).inc()

        def add_published_message(self, broker: str, destination: str, status: Any, amount: int = 1, **_: str) -> None:
            self._child(container.published_messages_total, broker, destination, status.value).inc(amount)

        def observe_published_message_duration(self, duration: float, broker: str, destination: str, **_: str) -> None:
            self._child(container.published_messages_duration_seconds, broker, destination).observe(duration)

        def add_published_message_exception(self, broker: str, destination: str, exception_type: str, **_: str) -> None:
            self._child(container.published_messages_exceptions_total, broker, destination, exception_type).inc()

    return CachedManager()


# --- sampled state -------------------------------------------------------------------------------

SAMPLE_SQL = """
SELECT (SELECT count(*) FROM outbox) AS outbox_rows,
       (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) FROM outbox) AS outbox_age,
       (SELECT count(*) FROM delivery_account_state WHERE paused) AS paused
"""


async def sample(pool: Any, channel: Any, queues: dict[str, str]) -> int:
    """One round of the sampler a metrics-serving process runs: the outbox backlog and its age
    and the paused accounts from PostgreSQL, the ready messages of each queue from RabbitMQ (a
    passive declare; `queues`: label -> broker name). Returns how many queues were read."""
    row = await pool.fetchrow(SAMPLE_SQL, timeout=5)
    OUTBOX_ROWS.set(row["outbox_rows"])
    OUTBOX_AGE.set(float(row["outbox_age"]))
    PAUSED_ACCOUNTS.set(row["paused"])
    # On the underlying channel: aio-pika's own declare_queue answers a repeated declaration from
    # its cache, with the count of the first one.
    raw = await channel.get_underlay_channel()
    read = 0
    for label, name in queues.items():
        declared = await raw.queue_declare(name, passive=True)
        QUEUE_MESSAGES.labels(label).set(declared.message_count or 0)
        read += 1
    return read
