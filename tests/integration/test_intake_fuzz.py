"""Schemathesis against the intake's own OpenAPI document (GET /v1/openapi.json, generated from the
catalog): generated requests to every source and buyer operation, over real HTTP with the real
router and delivery behind it, must never get a 5xx answer."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from harness.buyer import FakeBuyer
from shared.settings import Settings
from tests.intake_support import running_intake, solar

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "schemathesis"


def _schemathesis() -> str:
    found = shutil.which("schemathesis") or (str(SCHEMATHESIS) if SCHEMATHESIS.exists() else None)
    if found is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    return found


async def _run(url: str, tag: str, key: str, tmp: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        _schemathesis(),
        "run",
        f"{url}/v1/openapi.json",
        "--include-tag",
        tag,
        "-H",
        f"Authorization: Bearer {key}",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "25",
        "--seed",
        "18",
        "--request-timeout",
        "20",
        "--workers",
        "1",
        "--report-dir",
        str(tmp),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=400)
    return process.returncode or 0, out.decode(errors="replace")


async def test_no_generated_request_gets_a_server_error(settings: Settings, buyer: FakeBuyer, tmp_path: Path) -> None:
    async with running_intake(settings, buyer, services=("router", "delivery", "returns")) as site:
        async with site.client(site.web_key) as http:
            # A lead sold to acme, so the buyer operations have a lead of their own to touch.
            assert (
                await http.post("/v1/leads/solar", json=solar(), headers={"Idempotency-Key": "f-1"})
            ).status_code == 200
        code, out = await _run(site.url, "sources", site.web_key, tmp_path)
        assert code == 0, out[-6000:]
        assert "No issues found" in out, out[-6000:]
        code, out = await _run(site.url, "buyers", await site.buyer_key("acme", rate_per_second=1000), tmp_path)
        assert code == 0, out[-6000:]
        assert "No issues found" in out, out[-6000:]
