"""The Markdown table of a benchmark result (bench/results/latest.md, the README's section)."""

from __future__ import annotations

from typing import Any


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    c = results["config"]
    phases = results["phases"]
    lines = [
        f"Run {results['run_id']} on {results['started_at'][:16].replace('T', ' ')} UTC — {m['cpu']},"
        f" {m['cores']} cores, {m.get('memory_gb')} GB, PostgreSQL {m.get('postgresql', '?')};"
        f" {c['routers']} router, {c['deliveries']} delivery, 1 notifier process(es); {c['clients']} buyers"
        f" in 5 groups, {c['duplicates']:.0%} duplicates.",
        "",
        "| Measurement | Leads | Leads/s | p50 ms | p95 ms | p99 ms | Notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    floors = (
        ("floor", "Floor (aio-pika + asyncpg, full speed)", "publish → republished message consumed"),
        (
            "design-floor",
            "Design floor (the same, shaped like Leadwire: 6 hops, 5 transactions, 2 posts)",
            "publish → outcome consumed",
        ),
    )
    for name, label, note in floors:
        if p := phases.get(name):
            if p.get("batch", 1) > 1:
                label += f", {p['batch']} leads per internal message and transaction"
            lat = p["latency_ms"]["publish_to_out"]
            lines.append(
                f"| {label} | {p['outcomes']}/{p['leads']} | {p['leads_per_second']} | {_ms(lat['p50'])} |"
                f" {_ms(lat['p95'])} | {_ms(lat['p99'])} | {note} |"
            )
    labels = {
        "throughput": "Leadwire, full speed",
        "latency": "Leadwire, fixed rate",
        "latency-low": "Leadwire, low fixed rate",
        "baseline": "Leadwire, full speed (reference)",
        "slow-buyer": "Leadwire, one buyer at {slow} s",
        "history": "Leadwire, {history} earlier leads",
        "metrics-on": "Leadwire, full speed, metrics on (scraped)",
        "metrics-off": "Leadwire, full speed, metrics off",
    }
    for name, label in labels.items():
        p = phases.get(name)
        if not p:
            continue
        label = label.format(slow=c["slow_seconds"], history=f"{p.get('history_leads', 0):,}")
        if p.get("offered_rate"):
            label += f" ({p['offered_rate']:g}/s offered)"
        buyer = p["latency_ms"]["publish_to_buyer"]
        outcome = p["latency_ms"]["publish_to_outcome"]
        notes = [f"outcome p50/p99 {_ms(outcome['p50'])}/{_ms(outcome['p99'])} ms", f"{p['buyer_posts']} posts"]
        if p.get("others_posts_per_second") is not None:
            notes.append(f"{p['others_posts_per_second']} posts/s to the other buyers")
        if p.get("repeats"):
            figures = [f"{', '.join(str(v) for v in p['repeats']['leads_per_second'])} leads/s"]
            if "others_posts_per_second" in p["repeats"]:
                figures.append(
                    f"{', '.join(str(v) for v in p['repeats']['others_posts_per_second'])} posts/s to the others"
                )
            notes.append(f"the median of {len(p['repeats']['leads_per_second'])} runs ({'; '.join(figures)})")
        if not p["complete"]:
            notes.append("INCOMPLETE")
        if p.get("dead_letters"):
            notes.append(f"{p['dead_letters']} dead letters")
        lines.append(
            f"| {label} | {p['outcomes']}/{p['leads']} | {p['leads_per_second']} | {_ms(buyer['p50'])} |"
            f" {_ms(buyer['p95'])} | {_ms(buyer['p99'])} | {'; '.join(notes)} |"
        )
    lines += ["", "Latency columns: publish → buyer endpoint received (Leadwire), publish → consumed (floor).", ""]
    goals = results.get("goals") or {}
    if goals:
        lines += ["| Goal | Target | Measured | Met |", "|---|---|---:|---|"]
        names = {
            "pipeline_vs_floor": "Leadwire / floor throughput",
            "p99_publish_to_buyer_ms": "p99 publish → buyer (ms) at 200 leads/s offered",
            "slow_buyer_cost_to_others": "Throughput lost by the other buyers to one slow buyer",
            "history_cost": "Throughput lost to the history",
            "metrics_overhead": "Throughput lost to metrics (on vs off)",
        }
        for key, goal in goals.items():
            lines.append(
                f"| {names.get(key, key)} | {goal['target']} | {goal['measured']} | {'yes' if goal['met'] else 'no'} |"
            )
        lines.append("")
    shape = [
        f"{label} {results[key]}"
        for key, label in (
            ("design_floor_vs_floor", "design floor / floor:"),
            ("pipeline_vs_design_floor", "Leadwire / design floor:"),
        )
        if results.get(key) is not None
    ]
    if shape:
        lines += ["Not goals, for reading the first one: " + "; ".join(shape) + ".", ""]
    return "\n".join(lines)
