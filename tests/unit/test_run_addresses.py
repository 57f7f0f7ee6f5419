"""scripts/run's default addresses: the portal, the admin console, the HTTP intake and the demo
buyer each get a port of their own (README.md names them), so a plain `scripts/run` starts them all."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.admin.config import AdminConfig
from shared.settings import Settings

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def test_default_addresses_do_not_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INTAKE_BASE_URL", "ADMIN_BASE_URL", "PORTAL_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("leadwire_demo_under_test", DEMO)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, demo)
    spec.loader.exec_module(demo)
    ports = {
        "portal": urlsplit(Settings().portal_base_url).port,
        "admin": urlsplit(AdminConfig().base_url).port,
        "intake": urlsplit(demo.INTAKE_URL).port,
        "demo buyer": 18099,
    }
    assert ports == {"portal": 8080, "admin": 8081, "intake": 8082, "demo buyer": 18099}
