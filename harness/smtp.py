"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records every email it accepts.

`answers` holds replies for the next DATA commands (e.g. "451 4.3.0 try later"); while it is
empty every email is accepted and recorded. Port 0 picks a free port.
"""

from __future__ import annotations

import email
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any, cast

from aiosmtpd.controller import Controller


@dataclass
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def kind(self) -> str:
        return str(self.message["X-Leadwire-Kind"])

    def text(self) -> str:
        return self._part("plain")

    def html(self) -> str:
        return self._part("html")

    def _part(self, subtype: str) -> str:
        part = self.message.get_body((subtype,))
        assert part is not None, f"no text/{subtype} part"
        return str(cast(EmailMessage, part).get_content())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpSink:
    port: int = 0
    received: list[ReceivedEmail] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    refused_data: int = 0
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self.answers:
                self.refused_data += 1
                return self.answers.pop(0)
            parsed = email.message_from_bytes(envelope.content, policy=policy.default)
            self.received.append(ReceivedEmail(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def start(self) -> SmtpSink:
        if not self.port:
            self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def of_kind(self, kind: str) -> list[ReceivedEmail]:
        return [m for m in self.received if m.kind == kind]

    def to(self, address: str) -> list[ReceivedEmail]:
        return [m for m in self.received if address in m.rcpt_tos]

    def message_ids(self, kind: str) -> Counter[str]:
        """How often each Message-ID of `kind` arrived (a repeat shows as a count above one)."""
        with self._lock:
            return Counter(m.message_id for m in self.received if m.kind == kind)
