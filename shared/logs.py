"""Log lines as one JSON object per line, carrying the lead, message and trace they belong to.

`configure(service, settings)` is called once a service process or web tier starts (shared/
service.py, shared/web.py): the root logger, FastStream's and uvicorn's loggers then write through
one handler to stderr, formatted by `JsonFormatter` (or plain text with LEADWIRE_LOG_FORMAT=text).
It does nothing when logging was configured already (a test runner, an embedding program).

What a line carries besides its time, level, logger and message: `service`; and, on every line
logged while a message is handled or a request served, `message_id` (the AMQP message's),
`lead_id` (the lead the message is about: its body's `lead_id`, or the id the router gives a new
lead) and `trace_id` (shared/tracing.py). These live in context variables set by the consumer
middleware (shared/service.py) and the web tiers' middleware, read when a line is formatted.

Secrets: `redact` runs over every formatted line — passwords and tokens in key=value or JSON form,
the password of a URL, and the secret segment of emailed links — before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from shared import tracing
from shared.settings import Settings

# The lead and the message the running handler is about; None outside one.
lead_id: ContextVar[str | None] = ContextVar("leadwire_log_lead_id", default=None)
message_id: ContextVar[str | None] = ContextVar("leadwire_log_message_id", default=None)


def bind_lead(value: uuid.UUID | str | None) -> None:
    """The lead what follows in this handler is about (the router, once it names a new lead)."""
    lead_id.set(str(value) if value is not None else None)


def enter_message(message: str | None, body: Any) -> None:
    """A handler starts on a message: its id, and the lead its body names (if any)."""
    message_id.set(message)
    lead = body.get("lead_id") if isinstance(body, dict) else None
    lead_id.set(lead if isinstance(lead, str) else None)


# --- secrets -------------------------------------------------------------------------------------

_SECRET_PAIRS = re.compile(
    r"""(?ix)
    ((?:password|passwd|secret|token|api[_-]?key|authorization|cookie|session)[a-z_-]*
     ["']?\s*[:=]\s*["']?)
    (?:bearer\s+|basic\s+)?
    [^\s"',;&}]+
    """
)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s/]+@")
_SECRET_PATHS = re.compile(r"(/(?:link|reset|invite)/)[^/?\s\"]+")


def redact(text: str) -> str:
    """`text` with the secrets a log line may come to hold replaced by `***`."""
    text = _SECRET_PAIRS.sub(r"\1***", text)
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _SECRET_PATHS.sub(r"\1***", text)


# --- formatting ----------------------------------------------------------------------------------

# Attributes FastStream's access lines carry (`extra`), kept when present.
_EXTRAS = ("queue", "exchange")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "msg": redact(record.getMessage()),
        }
        for name, value in context().items():
            line[name] = value
        if "message_id" not in line and (mid := getattr(record, "message_id", None)):
            line["message_id"] = mid
        for name in _EXTRAS:
            if extra := getattr(record, name, None):
                line[name] = extra
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{k}={v}" for k, v in context().items())
        return redact(super().format(record) + (f" [{ids}]" if ids else ""))


def context() -> dict[str, str]:
    """The ids of what is being handled now, those that are set."""
    found = {}
    if value := lead_id.get():
        found["lead_id"] = value
    if value := message_id.get():
        found["message_id"] = value
    if value := tracing.current_trace_id():
        found["trace_id"] = value
    return found


# Loggers that keep handlers of their own and do not propagate: they get ours instead.
_OWN_HANDLERS = ("faststream", "faststream.access", "uvicorn", "uvicorn.error", "uvicorn.access")


def configure(service: str, settings: Settings, *, force: bool = False) -> bool:
    """Send every log line through one handler in the chosen format. Does nothing (returns False)
    when the root logger has handlers already, unless `force`."""
    root = logging.getLogger()
    if root.handlers and not force:
        return False
    handler = logging.StreamHandler(sys.stderr)
    text = settings.log_format.strip().lower() == "text"
    handler.setFormatter(TextFormatter(service) if text else JsonFormatter(service))
    root.handlers = [handler]
    root.setLevel(settings.log_level.upper())
    for name in _OWN_HANDLERS:
        logger = logging.getLogger(name)
        if logger.handlers:
            logger.handlers = [handler]
            logger.propagate = False
    return True
