"""The base of every message contract, and the one place that keeps NUL characters out of
PostgreSQL.

PostgreSQL cannot store U+0000 in `text` or `jsonb`: a NUL anywhere in a message that reaches the
database used to fail its transaction with a data error and dead-letter the message (a lead with
`"first_name": "Ada\\u0000"` disappeared). Every contract therefore looks at its input once, before
validation: by default a NUL in any string (a value or a key, however deep) is a validation error
naming where it is — the command is refused with a clear reason. A contract whose messages must be
kept even when wrong (`InboundLead`: a lead that breaks a rule is stored and answered `rejected`)
sets `nul_policy = "replace"`: each NUL becomes U+FFFD and `nul_paths` says where, for the
use case to report.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

NUL = "\x00"
# What a NUL becomes where a message is kept anyway: the Unicode replacement character.
REPLACEMENT = "\ufffd"
NUL_MESSAGE = "must not contain the NUL character (\\u0000)"


def nul_paths(value: Any, path: str = "") -> list[str]:
    """Where `value` (JSON-like: dicts, lists, strings) holds a NUL, as dotted paths ("fields.name",
    "tags.2"); a NUL in a key is reported at the key's own path."""
    found: list[str] = []
    if isinstance(value, str):
        if NUL in value:
            found.append(path)
    elif isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            here = f"{path}.{name}" if path else name
            if NUL in name:
                found.append(here.replace(NUL, REPLACEMENT))
            found += nul_paths(item, here)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found += nul_paths(item, f"{path}.{i}" if path else str(i))
    return [p.replace(NUL, REPLACEMENT) for p in found]


def without_nul(value: Any) -> Any:
    """`value` with every NUL (in strings and keys, however deep) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT) if NUL in value else value
    if isinstance(value, dict):
        return {without_nul(k) if isinstance(k, str) else k: without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, tuple):
        return tuple(without_nul(v) for v in value)
    return value


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # "refuse": a NUL anywhere fails validation; "replace": it becomes U+FFFD, listed in nul_paths.
    nul_policy: ClassVar[Literal["refuse", "replace"]] = "refuse"
    _nul_paths: list[str] = PrivateAttr(default_factory=list)

    @property
    def nul_paths(self) -> list[str]:
        """Where the input held a NUL (only a "replace" contract gets this far with one)."""
        return self._nul_paths

    @model_validator(mode="wrap")
    @classmethod
    def _keep_nul_out(cls, data: Any, handler: Any) -> Any:
        found = nul_paths(data) if isinstance(data, dict) else []
        if not found:
            return handler(data)
        if cls.nul_policy == "refuse":
            raise ValueError(f"{', '.join(found)}: {NUL_MESSAGE}")
        model = handler(without_nul(data))
        model._nul_paths = found
        return model
