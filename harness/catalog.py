"""A catalog from its YAML text, applied as `leadwire catalog apply FILE` would."""

from __future__ import annotations

from shared import db
from shared.catalog.loader import parse_catalog
from shared.catalog.store import apply_catalog


async def apply_catalog_text(database_url: str, text: str) -> int | None:
    """Validate and apply; the new version, or None when the catalog is already current. A
    catalog with errors raises `CatalogInvalid` listing every one of them."""
    async with db.connection(database_url) as conn:
        return await apply_catalog(conn, parse_catalog(text))
