"""The buyer API (docs/buyer-api.md): a buyer's system, with a buyer API key, acting for its own
client only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shared.catalog.model import Catalog

router = APIRouter()


def openapi_parts(catalog: Catalog) -> tuple[dict[str, Any], dict[str, Any]]:
    """The buyer API's paths and schemas for the OpenAPI document."""
    return {}, {}
