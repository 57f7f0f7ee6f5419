"""The admin API's OpenAPI document, fuzzed (a schemathesis-like run with no extra dependency):
every operation of the document is called with an owner's key, with values generated from each
parameter's and body's schema — valid ones, boundary ones and hostile ones (wrong types, huge,
NUL, unicode, SQL, missing required, extra fields, malformed JSON). No answer may be a 5xx, every
answer must be JSON, a 2xx must match the response schema the document declares, and an error
must have the documented `{error, message}` shape. Deterministic (a seeded random)."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote

import pytest

from tests.admin_support import running_console
from tests.integration.test_admin_roles import CATALOG

pytestmark = [pytest.mark.integration]

HOSTILE_STRINGS = [
    "",
    " ",
    "x" * 5000,
    "\u0000",
    "a\u0000b",
    "'; DROP TABLE leads; --",
    "%00%ff",
    "../../etc/passwd",
    "ünïcødé ✓ 🚀",
    "-1",
    "1e309",
    "NaN",
    "null",
    "00000000-0000-0000-0000-000000000000",
    "<script>alert(1)</script>",
]
HOSTILE_VALUES: list[Any] = [None, True, -1, 0, 2**70, 1.5, [], {}, ["x"], {"a": 1}, *HOSTILE_STRINGS]


def resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        path = schema["$ref"].removeprefix("#/").split("/")
        target: Any = doc
        for part in path:
            target = target[part]
        schema = target
    return schema


def generate(schema: dict[str, Any], doc: dict[str, Any], rng: random.Random, depth: int = 0) -> Any:
    """A value the schema allows (roughly), or one that breaks it now and then."""
    schema = resolve(schema, doc)
    if rng.random() < 0.25 or depth > 4:
        return rng.choice(HOSTILE_VALUES)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return generate(rng.choice(schema[key]), doc, rng, depth + 1)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "uuid":
            return rng.choice(["00000000-0000-0000-0000-000000000001", "not-a-uuid"])
        if schema.get("format") == "date-time":
            return "2026-01-01T00:00:00Z"
        return rng.choice(["acme", "viewer", "2026-01-01", "x" * rng.randint(0, 80), *HOSTILE_STRINGS])
    if kind == "integer":
        return rng.choice([0, 1, 2, -5, schema.get("maximum", 10**12), schema.get("minimum", -1)])
    if kind == "number":
        return rng.choice([0, 1.25, -3])
    if kind == "boolean":
        return rng.choice([True, False])
    if kind == "array":
        return [generate(schema.get("items", {}), doc, rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        out = {
            name: generate(sub, doc, rng, depth + 1)
            for name, sub in props.items()
            if name in schema.get("required", []) or rng.random() < 0.6
        }
        if rng.random() < 0.2:
            out["unexpected_field"] = "x"
        return out
    return rng.choice(HOSTILE_VALUES)


def conforms(value: Any, schema: dict[str, Any], doc: dict[str, Any]) -> str | None:
    """Why `value` does not match `schema` (the subset of JSON Schema FastAPI emits), or None."""
    schema = resolve(schema, doc)
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        problems = [conforms(value, s, doc) for s in options]
        return None if any(p is None for p in problems) else f"none of anyOf: {problems}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{value!r} not in {schema['enum']}"
    kind = schema.get("type")
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if kind in checks and not checks[kind](value):
        return f"{value!r} is not {kind}"
    if kind == "array":
        for item in value:
            if (problem := conforms(item, schema.get("items", {}), doc)) is not None:
                return problem
    if isinstance(value, dict) and "properties" in schema:
        for name in schema.get("required", []):
            if name not in value:
                return f"missing {name}"
        for name, sub in schema["properties"].items():
            if name in value and (problem := conforms(value[name], sub, doc)) is not None:
                return f"{name}: {problem}"
    return None


# About a thousand calls, one after another: the time grows with the API, and on a loaded machine
# it is well past the suite's default 120 s (it asserts no time).
@pytest.mark.timeout(900)
async def test_every_operation_answers_without_5xx_and_as_documented(settings):
    rng = random.Random(19)
    async with running_console(settings) as site:
        await site.apply_catalog(CATALOG)
        await site.staff("owner@staff.test", "owner")
        key = await site.key("owner@staff.test")
        async with site.client(key) as api:
            doc = (await api.get(f"{site.api}/openapi.json")).json()
            assert doc["openapi"].startswith("3.")
            calls = 0
            for path, operations in doc["paths"].items():
                for method, op in operations.items():
                    for _ in range(25):
                        params = op.get("parameters", [])
                        url_path = path
                        query: dict[str, Any] = {}
                        headers: dict[str, str] = {}
                        for param in params:
                            value = generate(param.get("schema", {}), doc, rng)
                            text = value if isinstance(value, str) else json.dumps(value)
                            if param["in"] == "path":
                                url_path = url_path.replace("{" + param["name"] + "}", quote(text, safe="") or "x")
                            elif param["in"] == "query" and (param.get("required") or rng.random() < 0.5):
                                query[param["name"]] = text
                        # Catalog edits (PUT, and the POSTs that add a catalog entry) need If-Match.
                        if method in ("put", "post") and rng.random() < 0.8:
                            headers["If-Match"] = rng.choice(['"1"', "2", "abc", '"99999999999999999999"'])
                        kwargs: dict[str, Any] = {"params": query, "headers": headers}
                        if "requestBody" in op:
                            body_schema = op["requestBody"]["content"]["application/json"]["schema"]
                            if rng.random() < 0.1:
                                kwargs["content"] = rng.choice([b"{not json", b"\xff\xfe", b"", b"[]"])
                                headers["content-type"] = "application/json"
                            else:
                                kwargs["json"] = generate(body_schema, doc, rng)
                        answer = await api.request(method.upper(), f"{site.origin}{url_path}", **kwargs)
                        calls += 1
                        where = (method, url_path, query, kwargs.get("json"), answer.status_code, answer.text[:300])
                        assert answer.status_code < 500, where
                        body = answer.json()
                        if 200 <= answer.status_code < 300:
                            declared = op["responses"].get(str(answer.status_code), {})
                            schema = declared.get("content", {}).get("application/json", {}).get("schema")
                            if schema is not None:
                                assert conforms(body, schema, doc) is None, (where, conforms(body, schema, doc))
                        else:
                            assert set(body) >= {"error", "message"}, where
            assert calls >= 25 * 20
