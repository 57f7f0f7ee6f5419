"""`leadwire staff create`: the first owner, with the password from LEADWIRE_PASSWORD, audited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import db

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


def staff_cli(settings, *args: str, password: str = "first owner password") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "LEADWIRE_PASSWORD": password}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "staff", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


async def test_staff_create_makes_the_first_owner(settings):
    made = staff_cli(settings, "create", "--email", "Boss@Example.com", "--role", "owner")
    assert made.returncode == 0, made.stderr
    assert "created staff owner" in made.stdout
    again = staff_cli(settings, "create", "--email", "boss@example.com", "--role", "viewer")
    assert again.returncode == 1 and "exists already" in again.stderr
    weak = staff_cli(settings, "create", "--email", "b@example.com", "--role", "viewer", password="short")
    assert weak.returncode == 1 and "password" in weak.stderr
    bad_role = staff_cli(settings, "create", "--email", "c@example.com", "--role", "king")
    assert bad_role.returncode == 2
    async with db.connection(settings.database_url) as conn:
        row = await conn.fetchrow("SELECT email, role, password_hash FROM staff_users")
        assert row["email"] == "Boss@Example.com" and row["role"] == "owner"
        assert row["password_hash"].startswith("$argon2id$")
        audit = await conn.fetchrow("SELECT actor, via, action, target FROM admin_audit")
        assert audit["via"] == "cli" and audit["action"] == "staff.create" and audit["actor"].startswith("cli:")
    listed = staff_cli(settings, "list")
    assert "owner" in listed.stdout and "Boss@Example.com" in listed.stdout
