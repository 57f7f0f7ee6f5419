"""The outside world of a fault run: a flaky buyer endpoint and an SMTP sink, both real servers.

The buyer honours `Idempotency-Key` as a careful real buyer does: a repeat of a key it already
accepted is answered "accepted" again without a second sale. It records every sale so the run can
prove no buyer bought the same lead twice and that every sale Leadwire recorded is a sale the
buyer made (and the other way round).
"""

from __future__ import annotations

import email
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Sale:
    buyer: str  # the URL path, one per delivery account
    key: str  # the Idempotency-Key (the delivery id)
    lead_id: str


@dataclass
class FlakyBuyer:
    """Fails `fail_rate` of first-time posts with a 503 and leaves `hang_rate` hanging for
    `hang_seconds` (past the account's timeout) before a 503; accepts the rest."""

    fail_rate: float = 0.30
    hang_rate: float = 0.05
    hang_seconds: float = 2.0
    seed: int | None = None
    port: int = 0
    sales: dict[str, Sale] = field(default_factory=dict)  # by Idempotency-Key
    repeats: Counter[str] = field(default_factory=Counter)  # accepted keys posted again
    posts: int = 0
    failed: int = 0
    hung: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, key: str, body: bytes) -> tuple[int, str, float]:
        with self._lock:
            self.posts += 1
            rng = self._rng
            if key and key in self.sales:
                self.repeats[key] += 1
                return 200, '{"status": "accepted"}', 0.0
            roll = rng.random()
            if roll < self.hang_rate:
                self.hung += 1
                return 503, '{"status": "busy"}', self.hang_seconds
            if roll < self.hang_rate + self.fail_rate:
                self.failed += 1
                return 503, '{"status": "busy"}', 0.0
            try:
                lead_id = str(json.loads(body).get("lead_id", ""))
            except (ValueError, AttributeError):
                lead_id = ""
            self.sales[key] = Sale(path, key, lead_id)
            return 200, '{"status": "accepted"}', 0.0

    def start(self) -> None:
        self._rng = random.Random(self.seed)
        buyer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, text, delay = buyer.answer(
                    self.path.split("?")[0], self.headers.get("Idempotency-Key", ""), body
                )
                if delay:
                    time.sleep(delay)
                data = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller gave up (timeout) or died (SIGKILL)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class MailSink:
    """An SMTP server that accepts everything and records (kind, Message-ID) of each email."""

    port: int = 0
    received: list[tuple[str, str]] = field(default_factory=list)
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=policy.default)
        with self._lock:
            self.received.append((str(parsed["X-Leadwire-Kind"]), str(parsed["Message-ID"])))
        return "250 OK"

    def start(self) -> None:
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def message_ids(self, kind: str) -> Counter[str]:
        with self._lock:
            return Counter(mid for k, mid in self.received if k == kind)
