"""The outside world of a fault run: a flaky buyer, on the harness's fake buyer endpoint (the
SMTP sink is the harness's too, harness/smtp.py).

The buyer honours `Idempotency-Key` as a careful real buyer does: a repeat of a key it already
accepted is answered "accepted" again without a second sale. It records every sale so the run can
prove no buyer bought the same lead twice and that every sale Leadwire recorded is a sale the
buyer made (and the other way round).
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

from harness.buyer import Answer, FakeBuyer, ReceivedRequest


@dataclass
class Sale:
    buyer: str  # the URL path, one per delivery account
    key: str  # the Idempotency-Key (the delivery id)
    lead_id: str


@dataclass
class FlakyBuyer:
    """Fails `fail_rate` of first-time posts with a 503, leaves `hang_rate` hanging for
    `hang_seconds` (past the account's timeout) before a 503, refuses `refuse_rate` for good (a
    400: the lead moves on to the next buyer, exercising re-offers); accepts the rest."""

    fail_rate: float = 0.30
    hang_rate: float = 0.05
    refuse_rate: float = 0.05
    hang_seconds: float = 2.0
    seed: int | None = None
    sales: dict[str, Sale] = field(default_factory=dict)  # by Idempotency-Key
    repeats: Counter[str] = field(default_factory=Counter)  # accepted keys posted again
    posts: int = 0
    failed: int = 0
    hung: int = 0
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random = field(default_factory=random.Random)
    endpoint: FakeBuyer = field(init=False)

    def __post_init__(self) -> None:
        self.endpoint = FakeBuyer(default=self.answer, record=False)

    def url(self, path: str) -> str:
        return self.endpoint.url(path)

    def answer(self, request: ReceivedRequest) -> Answer:
        key = request.header("Idempotency-Key")
        with self._lock:
            self.posts += 1
            if key and key in self.sales:
                self.repeats[key] += 1
                return 200, '{"status": "accepted"}', 0.0
            roll = self._rng.random()
            if roll < self.hang_rate:
                self.hung += 1
                return 503, '{"status": "busy"}', self.hang_seconds
            if roll < self.hang_rate + self.fail_rate:
                self.failed += 1
                return 503, '{"status": "busy"}', 0.0
            if roll < self.hang_rate + self.fail_rate + self.refuse_rate:
                self.refused += 1
                return 400, '{"status": "rejected"}', 0.0
            try:
                lead_id = str(json.loads(request.body).get("lead_id", ""))
            except (ValueError, AttributeError):
                lead_id = ""
            self.sales[key] = Sale(request.path.split("?")[0], key, lead_id)
            return 200, '{"status": "accepted"}', 0.0

    def start(self) -> None:
        self._rng = random.Random(self.seed)
        self.endpoint.start()

    def stop(self) -> None:
        self.endpoint.stop()
