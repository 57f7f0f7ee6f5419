"""Buyers' delivery credentials in the console: which values of a delivery account are secret,
masking them for every page, API answer and YAML the console shows, and putting the stored value
back where a save sends the mask unchanged. Pure functions over catalog documents (JSON dicts).

The secret-bearing fields of the catalog model (shared/catalog/model.py, `HttpDelivery`):

- `auth.password`, `auth.token`: always, the whole value;
- `headers`: every value except those of plain protocol headers (`PLAIN_HEADERS`: Accept,
  Content-Type, User-Agent...) — buyers name their key headers anything (X-Partner, X-Auth...);
- `url`: the password of `user:password@`, and query values whose name looks sensitive (the
  delivery log's rule: password, token, secret, key, api key, auth, signature...) or is named in
  the account's `mask_fields`;
- `body_template`: fixed values of JSON pairs, form pairs and XML elements named the same way
  (a `$field` placeholder is not a secret and stays shown).

No role sees them in the console (docs/admin.md, "Buyers' credentials"): the console masks them
for everyone, and a save keeps the stored value wherever the mask comes back."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable
from typing import Any

import yaml

from services.delivery.posting import IDEMPOTENCY_HEADER, MIN_SECRET_LENGTH, is_sensitive
from shared.catalog.model import CONSOLE_MASK, Catalog

MASK = CONSOLE_MASK  # `leadwire catalog apply` refuses it (shared/catalog/model.py)

# Headers that never carry a credential; every other header value is treated as secret.
PLAIN_HEADERS = frozenset(
    h.lower()
    for h in (
        "Accept",
        "Accept-Charset",
        "Accept-Encoding",
        "Accept-Language",
        "Cache-Control",
        "Connection",
        "Content-Language",
        "Content-Type",
        "User-Agent",
        IDEMPOTENCY_HEADER,
    )
)

# The places in a URL or a body template where a named value sits: (kind, pattern with groups
# `pre` (kept), `name` and `value`). The same shapes the delivery log masks.
_SPOTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("json", re.compile(r'(?P<pre>"(?P<name>[^"\\]{1,100})"\s*:\s*)(?P<value>"(?:[^"\\]|\\.)*"|[^\s,}\]]+)')),
    ("form", re.compile(r"(?P<pre>(?:^|[?&\s])(?P<name>[^=&?\s\"]{1,100})=)(?P<value>[^&\s\"]*)")),
    ("xml", re.compile(r"(?P<pre><(?P<name>[A-Za-z_][\w.-]{0,99})>)(?P<value>[^<]*)(?=</(?P=name)>)")),
    ("userinfo", re.compile(r"(?P<pre>://(?P<name>[^/:@\s]+):)(?P<value>[^@/\s]+)(?=@)")),
)
_PLACEHOLDER = re.compile(r'^"?\$\{?\w+\}?"?$')
_JSON_MASK = f'"{MASK}"'


def header_is_secret(name: str) -> bool:
    return name.lower() not in PLAIN_HEADERS


def _secret_spot(kind: str, name: str, value: str, extra: tuple[str, ...]) -> bool:
    if kind == "userinfo":
        return True
    return bool(value) and not _PLACEHOLDER.match(value) and is_sensitive(name, extra)


def _is_mask(kind: str, value: str) -> bool:
    return value in (MASK, _JSON_MASK) if kind == "json" else value == MASK


def _walk(text: str, extra: tuple[str, ...], replace: Callable[[str, str, str], str]) -> str:
    """`text` with the value of every secret spot replaced by replace(kind, name, value)."""
    for kind, pattern in _SPOTS:

        def one(m: re.Match[str], kind: str = kind) -> str:
            if not _secret_spot(kind, m["name"], m["value"], extra):
                return m[0]
            return m["pre"] + replace(kind, m["name"], m["value"])

        text = pattern.sub(one, text)
    return text


def mask_text(text: str, extra: tuple[str, ...] = ()) -> str:
    """A URL or body template with its secret values masked."""
    return _walk(text, extra, lambda kind, _name, value: _JSON_MASK if kind == "json" else MASK)


def text_secrets(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The secret values a URL or body template holds (unquoted)."""
    found: list[str] = []

    def keep(kind: str, _name: str, value: str) -> str:
        if not _is_mask(kind, value):
            found.append(value[1:-1] if kind == "json" and value.startswith('"') else value)
        return value

    _walk(text, extra, keep)
    return found


def restore_text(submitted: str, stored: str | None, extra: tuple[str, ...] = ()) -> tuple[str, bool]:
    """`submitted` with each masked value put back from `stored` (the value of the same name in
    the same kind of spot, in order: a name used twice keeps each value in its place). Returns the
    text and whether every mask found its stored value (False leaves that mask in place)."""
    kept: dict[tuple[str, str], list[str]] = {}

    def remember(kind: str, name: str, value: str) -> str:
        kept.setdefault((kind, name), []).append(value)
        return value

    if stored:
        _walk(stored, extra, remember)
    complete = True

    def put_back(kind: str, name: str, value: str) -> str:
        nonlocal complete
        if not _is_mask(kind, value):
            return value
        queue = kept.get((kind, name))
        if not queue:
            complete = False
            return value
        return queue.pop(0)

    # A masked spot must be found even where the mask itself would not look secret by name (the
    # stored text decides), so walk with every name treated as sensitive for the put-back.
    text = submitted
    for kind, pattern in _SPOTS:

        def one(m: re.Match[str], kind: str = kind) -> str:
            return m["pre"] + put_back(kind, m["name"], m["value"])

        text = pattern.sub(one, text)
    return text, complete and MASK not in text


# --- Delivery accounts and whole documents -------------------------------------------------------


def _http(entry: dict[str, Any]) -> dict[str, Any] | None:
    delivery = entry.get("delivery")
    return delivery if isinstance(delivery, dict) and delivery.get("method", "http") == "http" else None


def _extra(delivery: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(n) for n in delivery.get("mask_fields") or ())


def mask_account(entry: dict[str, Any]) -> dict[str, Any]:
    """A delivery account's catalog entry with every secret masked (a copy)."""
    entry = copy.deepcopy(entry)
    delivery = _http(entry)
    if delivery is None:
        return entry
    extra = _extra(delivery)
    auth = delivery.get("auth")
    if isinstance(auth, dict):
        for name in ("password", "token"):
            if auth.get(name) is not None:
                auth[name] = MASK
    headers = delivery.get("headers")
    if isinstance(headers, dict):
        delivery["headers"] = {k: MASK if header_is_secret(k) and v else v for k, v in headers.items()}
    for name in ("url", "body_template"):
        if isinstance(delivery.get(name), str):
            delivery[name] = mask_text(delivery[name], extra)
    return entry


def mask_document(document: dict[str, Any]) -> dict[str, Any]:
    """A catalog document (`Catalog.model_dump(mode="json")`) with every account's secrets masked."""
    masked = dict(document)
    masked["delivery_accounts"] = [mask_account(a) for a in document.get("delivery_accounts") or []]
    return masked


def masked_yaml(catalog: Catalog | dict[str, Any] | None) -> str:
    """A catalog as `leadwire catalog export` prints it (`dump_catalog`), its secrets masked; ""
    for None (before the first version)."""
    if catalog is None:
        return ""
    document = catalog.model_dump(mode="json") if isinstance(catalog, Catalog) else catalog
    return yaml.safe_dump(
        mask_document(Catalog.model_validate(document).model_dump(mode="json")), sort_keys=False, allow_unicode=True
    )


def restore_account(entry: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, str]:
    """Put the stored secrets back into `entry` (changed in place) wherever it carries the mask:
    the same auth field of the same kind of auth, the same header (names compared without case),
    the same named value of the URL or body template. A mask with nothing stored to keep is an
    error (path -> message): the mask itself is never saved as a credential."""
    delivery = _http(entry)
    if delivery is None:
        return {}
    old = (_http(stored) if stored else None) or {}
    errors: dict[str, str] = {}
    missing = f"Shows {MASK} where no secret is stored to keep: type the value itself."
    auth, old_auth = delivery.get("auth"), old.get("auth") or {}
    if isinstance(auth, dict):
        same = old_auth if old_auth.get("type") == auth.get("type") else {}
        for name in ("password", "token"):
            if auth.get(name) == MASK:
                if same.get(name):
                    auth[name] = same[name]
                else:
                    errors[f"delivery.auth.{name}"] = missing
    headers = delivery.get("headers")
    if isinstance(headers, dict):
        old_headers = {str(k).lower(): v for k, v in (old.get("headers") or {}).items()}
        for name, value in list(headers.items()):
            if isinstance(value, str) and MASK in value:
                if value == MASK and old_headers.get(str(name).lower()):
                    headers[name] = old_headers[str(name).lower()]
                else:
                    errors["delivery.headers"] = f"{name}: {missing}"
    for name in ("url", "body_template"):
        value = delivery.get(name)
        if isinstance(value, str) and MASK in value:
            restored, complete = restore_text(value, old.get(name), _extra(old))
            delivery[name] = restored
            if not complete:
                errors[f"delivery.{name}"] = missing
    return errors


def restore_document(document: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """Put the stored secrets back into a whole submitted catalog (accounts matched by id).
    Returns the errors as `delivery_accounts[i] (id).path: message`."""
    old = {a.get("id"): a for a in stored.get("delivery_accounts") or [] if isinstance(a, dict)}
    errors: list[str] = []
    for i, account in enumerate(document.get("delivery_accounts") or []):
        if not isinstance(account, dict):
            continue
        for path, message in restore_account(account, old.get(account.get("id"))).items():
            errors.append(f"delivery_accounts[{i}] ({account.get('id')}).{path}: {message}")
    return errors


def account_secrets(entry: dict[str, Any]) -> list[str]:
    """Every secret value an account holds, as a post would send it (the basic auth header's
    base64 too), for masking them wherever they turn up in logged text."""
    delivery = _http(entry)
    if delivery is None:
        return []
    extra = _extra(delivery)
    found: list[str] = []
    auth = delivery.get("auth") or {}
    for name in ("password", "token"):
        if auth.get(name):
            found.append(str(auth[name]))
    if auth.get("type") == "basic" and auth.get("username") is not None and auth.get("password") is not None:
        found.append(base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode())
    found += [str(v) for k, v in (delivery.get("headers") or {}).items() if header_is_secret(k) and v]
    for name in ("url", "body_template"):
        if isinstance(delivery.get(name), str):
            found += text_secrets(delivery[name], extra)
    # Longest first, so a secret that contains another is masked whole; short ones would mask
    # ordinary text everywhere (their fields are still masked by name).
    return sorted({s for s in found if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def mask_values(text: str, values: list[str]) -> str:
    for value in values:
        text = text.replace(value, MASK)
    return text


_HEADER_LINE = re.compile(r"^([A-Za-z0-9-]{1,100}): (.*)$")


def mask_logged_request(text: str) -> str:
    """A request as the delivery log keeps it (`METHOD url`, header lines, a blank line, the
    body) with every header value masked that is not a plain protocol header — the log masked
    only sensitive-looking names, and this also covers values the account no longer holds."""
    head, gap, body = text.partition("\n\n")
    lines = head.split("\n")
    for i in range(1, len(lines)):
        m = _HEADER_LINE.match(lines[i])
        if m and header_is_secret(m[1]) and m[2] != MASK:
            lines[i] = f"{m[1]}: {MASK}"
    return "\n".join(lines) + gap + body
