"""Reading a catalog file: YAML in, a valid `Catalog` or every error with its location out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from shared.catalog.model import (
    Catalog,
    Client,
    ClientGroup,
    DeliveryAccount,
    LeadSource,
    LeadType,
    Location,
    Options,
    Order,
    cross_check,
)


@dataclass(frozen=True)
class CatalogError:
    location: str  # e.g. "delivery_accounts[2] (acme-post).criteria[0].field"
    line: int | None  # 1-based line in the file, when known
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.location}: {self.message}"


class CatalogInvalid(Exception):
    def __init__(self, errors: list[CatalogError]) -> None:
        super().__init__(f"{len(errors)} error(s) in catalog")
        self.errors = errors


def _line_index(node: yaml.Node, path: Location = (), index: dict[Location, int] | None = None) -> dict[Location, int]:
    """Maps each path in the YAML tree to the line it starts on."""
    if index is None:
        index = {}
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            index[(*path, key.value)] = key.start_mark.line + 1
            _line_index(value, (*path, key.value), index)
            index[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), index)
    return index


def _describe(location: Location, raw: Any) -> str:
    """Turns ('delivery_accounts', 2, 'price') into 'delivery_accounts[2] (acme-post).price'."""
    out = ""
    node = raw
    for part in location:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f" ({node['id']})"
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _nearest_line(location: Location, lines: dict[Location, int]) -> int | None:
    for end in range(len(location), -1, -1):
        if location[:end] in lines:
            return lines[location[:end]]
    return None


def parse_catalog(text: str) -> Catalog:
    """Validate a whole catalog file. Raises CatalogInvalid listing every error found."""
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise CatalogInvalid(
            [CatalogError("(file)", mark.line + 1 if mark else None, f"not valid YAML: {exc}")]
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CatalogInvalid([CatalogError("(top level)", 1, "a catalog is a mapping of sections")])
    lines = _line_index(root) if root is not None else {}

    def error(location: Location, message: str) -> CatalogError:
        return CatalogError(_describe(location, raw), _nearest_line(location, lines), message)

    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        errors = [error(_clean(e["loc"]), e["msg"]) for e in exc.errors()]
        # Check references among the entries that are valid on their own too, so one run
        # reports every error in the file, not just the first layer of them.
        partial, positions, invalid_ids = _valid_entries(raw)
        errors += [
            error(_remap(loc, positions), msg)
            for loc, msg in cross_check(partial)
            # A reference to an entry that is itself in error is not a second error.
            if not (msg.startswith("unknown ") and msg.split()[-1].strip("'") in invalid_ids)
        ]
        raise CatalogInvalid(errors) from exc

    problems = cross_check(catalog)
    if problems:
        raise CatalogInvalid([error(loc, msg) for loc, msg in problems])
    return catalog


def _clean(loc: tuple[Any, ...]) -> Location:
    # Discriminated unions add the tag to the path ('delivery', 'http', 'url'); drop it.
    return tuple(p for i, p in enumerate(loc) if not (p in ("http", "email") and i < len(loc) - 1))


# Each list of the catalog and the model of its entries.
_SECTIONS: dict[str, type[BaseModel]] = {
    "lead_types": LeadType,
    "sources": LeadSource,
    "clients": Client,
    "groups": ClientGroup,
    "delivery_accounts": DeliveryAccount,
    "orders": Order,
}


def _valid_entries(raw: dict[str, Any]) -> tuple[Catalog, dict[str, list[int]], set[str]]:
    """The entries that validate on their own, where each one sits in the file, and the ids of
    the entries that do not."""
    entries: dict[str, Any] = {}
    positions: dict[str, list[int]] = {}
    invalid_ids: set[str] = set()
    try:
        entries["options"] = Options.model_validate(raw.get("options") or {})
    except ValidationError:
        pass
    for section, item_type in _SECTIONS.items():
        items = raw.get(section)
        kept, where = [], []
        for i, item in enumerate(items if isinstance(items, list) else []):
            try:
                kept.append(item_type.model_validate(item))
                where.append(i)
            except ValidationError:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    invalid_ids.add(item["id"])
        entries[section] = tuple(kept)
        positions[section] = where
    return Catalog.model_construct(**entries), positions, invalid_ids


def _remap(loc: Location, positions: dict[str, list[int]]) -> Location:
    if len(loc) >= 2 and loc[0] in positions and isinstance(loc[1], int):
        return (loc[0], positions[loc[0]][loc[1]], *loc[2:])
    return loc


def dump_catalog(catalog: Catalog) -> str:
    data = catalog.model_dump(mode="json", exclude_defaults=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
