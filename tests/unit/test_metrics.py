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
