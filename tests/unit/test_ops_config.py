"""Where an operator looks (ops/): the Prometheus configuration and alert rules load in promtool,
each alert fires on a simulated condition (ops/prometheus/alerts.test.yml), and every query of the
Grafana dashboard parses and names only metrics Leadwire serves.

promtool comes with Debian's `prometheus` package (scripts/bootstrap.sh installs it). Without it
these tests skip — and fail under LEADWIRE_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from shared import metrics

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
DASHBOARD = OPS / "grafana" / "dashboards" / "leadwire.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found (Debian package `prometheus`; scripts/bootstrap.sh installs it as root)"
        if os.environ.get("LEADWIRE_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " — LEADWIRE_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
        pytest.skip(message)
    return found


def run(*argv: str, cwd: Path) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_prometheus_configuration_and_rules_load(promtool):
    out = run(promtool, "check", "config", "prometheus.yml", cwd=OPS / "prometheus")
    assert "SUCCESS: 6 rules found" in out


def test_each_alert_fires_on_its_condition(promtool):
    rules = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((OPS / "prometheus" / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert fired == {rule["alert"] for rule in rules}  # every alert has a case where it fires
    assert "SUCCESS" in run(promtool, "test", "rules", "alerts.test.yml", cwd=OPS / "prometheus")


def served_metric_names() -> set[str]:
    """Every sample name Leadwire serves: its registry, and FastStream's metrics (made here on a
    registry of their own)."""
    names = {s.name for family in metrics.REGISTRY.collect() for s in family.samples}
    names |= {f.name for f in metrics.REGISTRY.collect()}
    faststream = CollectorRegistry()
    from faststream.rabbit.prometheus import RabbitPrometheusMiddleware

    RabbitPrometheusMiddleware(registry=faststream)
    for family in faststream.collect():
        base = family.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    # Histograms and labelled counters have no samples until they move: their names by type.
    for family in metrics.REGISTRY.collect():
        base = family.name
        names |= {f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return names | {"up"}


METRIC = re.compile(r"\b((?:leadwire|faststream)_[a-z_]+|up)\b(?=\s*[{\[)]|\s*==|\s*$)")


def test_every_dashboard_query_parses_and_names_served_metrics(promtool, tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    titles = {panel["title"] for panel in dashboard["panels"]}
    # The five views.
    for wanted in ("by outcome", "percentiles", "Queue depth", "Outbox", "Paused buyers"):
        assert any(wanted in title for title in titles), wanted
    # promtool parses every query, as recording rules.
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(rules))
    run(promtool, "check", "rules", "dashboard.rules.yml", cwd=tmp_path)
    alerts = (OPS / "prometheus" / "alerts.yml").read_text()
    served = served_metric_names()
    named = {m for e in [*exprs, alerts] for m in METRIC.findall(e)}
    assert named and named <= served, sorted(named - served)


def test_compose_runs_prometheus_and_grafana_with_these_files():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("prometheus", "grafana"):
        for volume in compose[name]["volumes"]:
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), volume
    scraped = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    ports = {c["job_name"]: c["dns_sd_configs"][0]["port"] for c in scraped if c["job_name"].startswith("leadwire-")}
    assert ports == {f"leadwire-{service}": port for service, port in metrics.DEFAULT_PORTS.items()}
