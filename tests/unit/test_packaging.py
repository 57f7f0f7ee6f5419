"""A non-editable install (the Docker image: `pip install .`) carries every service's templates,
static files and the migrations: each such folder is in pyproject.toml's package-data."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_template_and_static_folder_is_package_data() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for folder in sorted([*ROOT.glob("services/*/templates"), *ROOT.glob("services/*/static")]):
        package = "services." + folder.parent.name
        assert any(pattern.startswith(folder.name + "/") for pattern in data.get(package, [])), folder
    assert "migrations/*.sql" in data["shared"]
