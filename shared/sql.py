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
from typing import Any

import asyncpg

# `:name`, but not the second colon of a `::cast` nor a `:` inside a word.
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class Statement:
    """SQL text with `:name` parameters and the values bound to them. (A plain slotted class: hot
    paths build several per message.)"""

    __slots__ = ("params", "text")

    def __init__(self, text: str, params: Mapping[str, Any]) -> None:
        self.text = text
        self.params = params

    def compiled(self) -> tuple[str, list[Any]]:
        """The text with `$n` parameters, and the arguments in that order."""
        params: dict[str, Any] = {}
        shape = _walk(self, params)
        plan = _PLANS.get(shape)
        if plan is None:
            plan = _PLANS[shape] = _plan(shape)
        numbered, names = plan
        try:
            args = [params[n] for n in names]
        except KeyError:
            missing = [":" + n for n in names if n not in params]
            raise KeyError(f"SQL parameter(s) {', '.join(missing)} not bound") from None
        if len(params) != len(names):
            unused = sorted(":" + n for n in params.keys() - set(names))
            raise KeyError(f"SQL parameter(s) {', '.join(unused)} not in the statement")
        return numbered, args

    def __repr__(self) -> str:
        return f"Statement({self.text!r}, {dict(self.params)!r})"


def statement(text: str, /, **params: Any) -> Statement:
    return Statement(text, params)


# A statement's shape is its text and its fragments' shapes: the values change from call to call,
# the SQL does not. The numbered text of each shape is worked out once (a hot path builds the same
# few shapes thousands of times a minute); each call only walks the values.
Shape = tuple[str, tuple[tuple[str, Any], ...]]
_PLANS: dict[Shape, tuple[str, tuple[str, ...]]] = {}


def _walk(stmt: Statement, into: dict[str, Any]) -> Shape:
    """Gather every value a statement and its fragments bind, by name (one name, one value), and
    return the statement's shape."""
    fragments: list[tuple[str, Shape]] = []
    for name, value in stmt.params.items():
        if type(value) is Statement:
            fragments.append((name, _walk(value, into)))
        elif name in into and into[name] is not value and into[name] != value:
            raise ValueError(f"SQL parameter :{name} bound to two different values")
        else:
            into[name] = value
    return stmt.text, tuple(fragments)


def _inline(shape: Shape) -> str:
    """The text of a shape with every fragment's text in its place."""
    text, fragments = shape
    inner = dict(fragments)
    return _PARAMETER.sub(lambda m: _inline(inner[m[1]]) if m[1] in inner else m[0], text)


def _plan(shape: Shape) -> tuple[str, tuple[str, ...]]:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match[1]
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAMETER.sub(number, _inline(shape)), tuple(names)


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
