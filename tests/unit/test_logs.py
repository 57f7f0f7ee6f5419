"""shared/logs.py and the trace ids of shared/tracing.py (tracing off): one JSON object per
line with the ids of what is being handled, secrets redacted."""

from __future__ import annotations

import contextvars
import json
import logging

from shared import logs, tracing
from shared.settings import Settings


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("connect amqp://leadwire:s3cret-pass@rabbit:5672/ failed")
        except RuntimeError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("leadwire.test", logging.WARNING, __file__, 1, msg, args, exc_info)


def format_in_handler(rec: logging.LogRecord, headers: dict[str, str] | None, body: object) -> dict[str, object]:
    def run() -> str:
        tracing.start(headers)
        logs.enter_message("msg-1", body)
        return logs.JsonFormatter("delivery").format(rec)

    return json.loads(contextvars.copy_context().run(run))


def test_a_line_in_a_handler_names_the_lead_the_message_and_the_trace():
    lead = "6e914724-028c-4240-8fe4-ff8043e05989"
    traceparent = "00-3ee3c94e6b0220254c6bf843b0f2aa6b-00f067aa0ba902b7-01"
    line = format_in_handler(record("post %s failed", "d-1"), {"traceparent": traceparent}, {"lead_id": lead})
    assert line["msg"] == "post d-1 failed" and line["level"] == "warning" and line["logger"] == "leadwire.test"
    assert line["service"] == "delivery" and line["lead_id"] == lead and line["message_id"] == "msg-1"
    assert line["trace_id"] == "3ee3c94e6b0220254c6bf843b0f2aa6b"  # continued from the message
    assert str(line["ts"]).endswith("+00:00")


def test_a_message_without_a_traceparent_starts_a_trace_and_passes_it_on():
    def run() -> tuple[str | None, dict[str, str]]:
        tracing.start(None)
        headers: dict[str, str] = {}
        tracing.inject(headers)
        return tracing.current_trace_id(), headers

    trace_id, headers = contextvars.copy_context().run(run)
    assert trace_id is not None and len(trace_id) == 32
    version, carried, span, flags = headers["traceparent"].split("-")
    assert (version, carried, len(span), flags) == ("00", trace_id, 16, "01")


def test_a_bad_traceparent_starts_a_new_trace():
    for bad in ("garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "00-XYZ" + "a" * 29 + "-00f067aa0ba902b7-01"):
        line = format_in_handler(record("x"), {"traceparent": bad}, None)
        assert len(str(line["trace_id"])) == 32 and str(line["trace_id"]) not in bad
        assert "lead_id" not in line


def test_outside_a_handler_a_line_has_no_ids():
    line = json.loads(contextvars.Context().run(lambda: logs.JsonFormatter("router").format(record("started"))))
    assert {"lead_id", "message_id", "trace_id"}.isdisjoint(line)


def test_secrets_are_redacted():
    assert logs.redact('login refused: password="hunter2" for ada') == 'login refused: password="***" for ada'
    assert logs.redact("Authorization: Bearer abc.def.ghi, next") == "Authorization: ***, next"
    assert logs.redact('{"api_key": "k-123", "token":"t-9"}') == '{"api_key": "***", "token":"***"}'
    assert logs.redact("GET /portal/link/eyJhbGciOi.x?y=1") == "GET /portal/link/***?y=1"
    assert logs.redact("amqp://guest:guest@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    line = json.loads(logs.JsonFormatter("router").format(record("boom", exc=True)))
    assert "s3cret-pass" not in line["exc"] and "leadwire:***@rabbit" in str(line["exc"])


def test_configure_leaves_configured_logging_alone():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    others = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate) for name in logs._OWN_HANDLERS
    }
    try:
        root.handlers = [logging.NullHandler()]
        assert logs.configure("router", Settings()) is False
        assert logs.configure("router", Settings(LEADWIRE_LOG_LEVEL="warning"), force=True) is True
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter) and root.level == logging.WARNING
        logs.configure("router", Settings(LEADWIRE_LOG_FORMAT="text"), force=True)
        assert isinstance(root.handlers[0].formatter, logs.TextFormatter)
    finally:
        root.handlers, level = saved
        root.setLevel(level)
        for name, (handlers, propagate) in others.items():
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate
