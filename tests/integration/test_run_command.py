"""The README's run command, end to end: every service as its own process, sample leads, sales."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from shared import db

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_command_shows_leads_being_sold(settings):
    # The fixture's retry tiers, so that its teardown deletes every queue the demo declares.
    env = {
        **os.environ,
        "AMQP_URL": settings.amqp_url,
        "DATABASE_URL": settings.database_url,
        "LEADWIRE_NAMESPACE": settings.namespace,
        "LEADWIRE_RETRY_DELAYS": json.dumps(list(settings.retry_delays)),
        "PORTAL_BASE_URL": f"http://127.0.0.1:{_free_port()}/portal",
        "ADMIN_BASE_URL": f"http://127.0.0.1:{_free_port()}/admin",
        "INTAKE_BASE_URL": f"http://127.0.0.1:{_free_port()}",
        "SMTP_PORT": str(smtp_port := _free_port()),
    }
    result = subprocess.run(
        ["bash", "scripts/run", "--duration", "12", "--rate", "10", "--buyer-port", str(_free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The Client Portal ran (a process that exits fails the run) and its demo login was printed.
    assert f"Client Portal: {env['PORTAL_BASE_URL']}/login" in result.stdout
    assert "demo buyer demo@sunrise.example / leadwire-demo" in result.stdout
    # And the admin console, with its demo owner.
    assert f"Admin console: {env['ADMIN_BASE_URL']}/login" in result.stdout
    assert "demo owner admin@leadwire.example / leadwire-admin-demo" in result.stdout
    # The HTTP intake ran, and sample leads came in over HTTP as well as AMQP.
    assert f"HTTP intake: {env['INTAKE_BASE_URL']}/" in result.stdout
    by_http, by_amqp = asyncio.run(_leads_by_path(settings.database_url))
    assert by_http > 0 and by_amqp > 0
    # Where each process serves its metrics (docs/operations.md).
    assert "router http://127.0.0.1:9101/metrics" in result.stdout
    assert "portal http://127.0.0.1:9106/metrics" in result.stdout
    # Nothing listened on SMTP_PORT, so the demo mailbox did, and kept what was sent as files.
    assert f"demo mailbox on smtp://127.0.0.1:{smtp_port}" in result.stdout
    final = result.stdout[result.stdout.index("=== final") :]
    emails = re.search(r"emails sent: (\d+) \(in \.run/mail/\)", final)
    assert emails is not None, final
    assert len(list((ROOT / ".run" / "mail").glob("*.eml"))) == int(emails.group(1)) > 0
    # The services logged to their files, not to the summary.
    assert (ROOT / ".run" / "logs" / "router.log").stat().st_size > 0
    assert '"logger"' not in result.stdout
    found = re.search(r"sold: (\d+)", final)
    assert found is not None, final
    sold = int(found.group(1))
    assert sold > 0
    buyers = re.findall(r"sold to (\S+)\s+(\d+) leads", final)
    # A lead sold in a shared group counts once per buyer that bought it.
    assert buyers and sum(int(n) for _, n in buyers) >= sold


async def _leads_by_path(database_url: str) -> tuple[int, int]:
    conn = await db.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE idempotency_key LIKE 'demo-http-%') AS http,"
            " count(*) FILTER (WHERE idempotency_key NOT LIKE 'demo-http-%') AS amqp FROM leads"
        )
        return int(row["http"]), int(row["amqp"])
    finally:
        await conn.close()
