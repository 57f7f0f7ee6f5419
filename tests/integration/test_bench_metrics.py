"""The benchmark's metrics switch, tiny, so it cannot rot: `--phases metrics-overhead` measures
the services with metrics on (scraped) and off in one run and writes the overhead goal. No figure
is asserted (docs/benchmark.md has the measured ones)."""

from __future__ import annotations

import json

import pytest

from bench import run as bench

pytestmark = pytest.mark.integration


# Whole runs of the benchmark or fault harness (services, load, drain): they assert no time, and
# on a loaded machine they took past the suite's default 120 s (seen: 120 s and 86 s).
@pytest.mark.timeout(600)
async def test_metrics_overhead_phase_runs_on_and_off(amqp_url, database_server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("AMQP_URL", amqp_url)
    monkeypatch.setenv("DATABASE_URL", database_server_url)
    argv = ["--phases", "metrics-overhead", "--sub-leads", "60", "--repeat", "1", "--stall-seconds", "30"]
    status = await bench.main([*argv, "--out", str(tmp_path), "--quiet"])
    assert status == 0
    result = json.loads((tmp_path / "latest.json").read_text())
    on, off = result["phases"]["metrics-on"], result["phases"]["metrics-off"]
    for phase in (on, off):
        assert phase["complete"] and phase["outcomes"] == phase["leads"] == 60
    assert (on["metrics"], off["metrics"]) == ("on", "off")
    assert on["scrapes"] >= 3 and off["scrapes"] == 0  # router, delivery, notifier scraped at least once
    assert set(result["goals"]) == {"metrics_overhead"}
    assert "Throughput lost to metrics (on vs off)" in (tmp_path / "latest.md").read_text()
