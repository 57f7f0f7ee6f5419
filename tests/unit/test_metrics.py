"""shared/metrics.py: ports, the labels every served sample gets, counting after commit."""

from __future__ import annotations

import os
import socket

import pytest
from prometheus_client import generate_latest

from shared import metrics


def test_port_per_service_unless_set():
    assert metrics.port_for("router", None) == 9101
    assert metrics.port_for("portal", "") == 9106
    assert metrics.port_for("something-new", None) == metrics.FALLBACK_PORT
    assert metrics.port_for("router", "9200") == 9200
    assert metrics.port_for("router", "0") == 0  # any free port
    assert metrics.port_for("router", "off") is None
    assert not metrics.enabled("off") and metrics.enabled(None) and metrics.enabled("9200")
    with pytest.raises(ValueError):
        metrics.port_for("router", "ninety")


def test_served_samples_carry_service_and_replica():
    metrics.POSTS.labels("unit-account", "accepted").inc()
    served = generate_latest(metrics._ProcessLabels(["router", "delivery"])).decode()
    replica = f"{socket.gethostname()}:{os.getpid()}"
    line = next(x for x in served.splitlines() if x.startswith("leadwire_posts_total{") and "unit-account" in x)
    assert 'service="router+delivery"' in line and f'replica="{replica}"' in line
    # Only at serving: the registry itself has no such labels (nothing extra on the hot path).
    assert "replica=" not in generate_latest(metrics.REGISTRY).decode()


def test_counts_of_state_changes_wait_for_the_handler():
    def value() -> float:
        return metrics.LEADS.labels("unit", "t", "sold")._value.get()

    before = value()
    metrics.lead_decided("unit", "t", "sold")  # outside a handler: at once
    assert value() == before + 1
    pending = metrics.handler_scope()
    metrics.lead_decided("unit", "t", "sold")
    assert value() == before + 1  # not yet: the handler has not returned
    metrics.apply(pending)
    assert value() == before + 2
    metrics._pending.set(None)


def test_faststream_metrics_move_through_the_cached_manager_with_bounded_labels():
    from faststream.prometheus.types import ProcessingStatus, PublishingStatus

    middleware = metrics.faststream_middleware("unit")
    manager = middleware._metrics_manager
    for _ in range(3):
        manager.add_received_message(broker="rabbitmq", handler="ns.inbound.lead.solar")
        manager.add_received_processed_message(
            broker="rabbitmq", handler="ns.inbound.lead.solar", status=ProcessingStatus.acked
        )
        manager.observe_received_processed_message_duration(
            duration=0.01, broker="rabbitmq", handler="ns.inbound.lead.solar"
        )
    value = metrics.REGISTRY.get_sample_value
    labels = {"app_name": "unit", "broker": "rabbitmq", "handler": "ns.inbound.lead.solar"}
    assert value("faststream_received_messages_total", labels) == 3
    assert value("faststream_received_processed_messages_total", {**labels, "status": "acked"}) == 3
    assert value("faststream_received_processed_messages_duration_seconds_count", labels) == 3
    # A caller's private reply queue is counted by its kind, not by its name.
    manager.add_published_message(
        broker="rabbitmq", destination="default.amq.rabbitmq.reply-to.g1h2AA", status=PublishingStatus.success
    )
    reply = {
        "app_name": "unit",
        "broker": "rabbitmq",
        "destination": "default.amq.rabbitmq.reply-to",
        "status": "success",
    }
    assert value("faststream_published_messages_total", reply) == 1
    known: set[str] = set()
    for i in range(metrics.MAX_DESTINATIONS + 5):
        metrics._bounded_destination(f"ns.inbound.lead.t{i}", known)
    assert len(known) == metrics.MAX_DESTINATIONS
    assert metrics._bounded_destination("ns.inbound.lead.new", known) == "other"
