"""SQL with named parameters: `:name` in the text, values by keyword, turned into asyncpg's `$n`.

    await sql.execute(conn, sql.statement(
        "UPDATE leads SET status = :status, reason = :reason WHERE id = :lead_id",
        lead_id=lead_id, status=status, reason=reason,
    ))

A parameter whose value is itself a `Statement` is a *fragment*: its text goes in at that place and
its parameters join the statement's. That is how one statement carries several steps and saves
round trips (the outbox event a state change causes, `shared/outbox.py`; the order lookup of a
sale read with the cap counters, `shared/orders.py`) without anyone numbering parameters by hand.
A name bound to two different values, a name the text uses but nobody binds, and a value bound to
a name the text never uses are all errors, raised before the statement reaches PostgreSQL.

`::type` casts are left alone (`:name::jsonb` is the parameter `name`, cast). The `$n` text of each
distinct statement shape is worked out once and cached.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg

# `:name`, but not the second colon of a `::cast` nor a `:` inside a word.
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Statement:
    """SQL text with `:name` parameters and the values bound to them."""

    text: str
    params: Mapping[str, Any]

    def compiled(self) -> tuple[str, list[Any]]:
        """The text with `$n` parameters, and the arguments in that order."""
        text, params = _flatten(self)
        numbered, names = _number(text)
        missing = [n for n in names if n not in params]
        if missing:
            raise KeyError(f"SQL parameter(s) {', '.join(':' + n for n in missing)} not bound")
        unused = params.keys() - set(names)
        if unused:
            raise KeyError(f"SQL parameter(s) {', '.join(':' + n for n in sorted(unused))} not in the statement")
        return numbered, [params[n] for n in names]


def statement(text: str, /, **params: Any) -> Statement:
    return Statement(text, params)


def _flatten(stmt: Statement) -> tuple[str, dict[str, Any]]:
    """Inline every fragment (recursively): one text, one set of parameters."""
    params: dict[str, Any] = {}

    def bind(name: str, value: Any) -> None:
        if name in params and params[name] is not value and params[name] != value:
            raise ValueError(f"SQL parameter :{name} bound to two different values")
        params[name] = value

    def inline(match: re.Match[str], own: Mapping[str, Any]) -> str:
        name = match[1]
        value = own.get(name)
        if not isinstance(value, Statement):
            return match[0]
        text, inner = _flatten(value)
        for k, v in inner.items():
            bind(k, v)
        return text

    text = _PARAMETER.sub(lambda m: inline(m, stmt.params), stmt.text)
    for name, value in stmt.params.items():
        if not isinstance(value, Statement):
            bind(name, value)
    return text, params


@lru_cache(maxsize=1024)
def _number(text: str) -> tuple[str, tuple[str, ...]]:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match[1]
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAMETER.sub(number, text), tuple(names)


# --- running a statement -------------------------------------------------------------------------
# `conn` is a connection or a pool (a pool runs one statement on a connection of its own).


async def execute(conn: asyncpg.Connection | asyncpg.Pool, stmt: Statement) -> str:
    text, args = stmt.compiled()
    return str(await conn.execute(text, *args))


async def fetch(conn: asyncpg.Connection | asyncpg.Pool, stmt: Statement) -> list[asyncpg.Record]:
    text, args = stmt.compiled()
    return list(await conn.fetch(text, *args))


async def fetchrow(conn: asyncpg.Connection | asyncpg.Pool, stmt: Statement) -> asyncpg.Record | None:
    text, args = stmt.compiled()
    return await conn.fetchrow(text, *args)


async def fetchval(conn: asyncpg.Connection | asyncpg.Pool, stmt: Statement) -> Any:
    text, args = stmt.compiled()
    return await conn.fetchval(text, *args)
