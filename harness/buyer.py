"""A fake buyer: a real HTTP/1.1 server on 127.0.0.1 that records every request and answers as
told.

One server for every harness: tests, the demo and the fault run start it in a thread of its own
(`start()` / `stop()`), the benchmark runs it as its own process (`serve_forever()`). It is written
on raw asyncio streams so that at thousands of posts per second the buyer is not what is measured.

What a buyer answers is a *responder*: `(ReceivedRequest) -> (status, body, delay_seconds)`. The
default accepts with `{"status": "accepted"}`; `responses[path]` (or `on(path, ...)`) overrides it
for one path; `default=` replaces it for every other path (the demo's moody buyers, the fault run's
flaky one). A delay holds only that connection's answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

ACCEPTED = '{"status": "accepted"}'


@dataclass
class ReceivedRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # as the client spelled the names
    body: bytes
    arrived: float = 0.0  # wall-clock seconds when the request line arrived

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str, default: str = "") -> str:
        """A header whatever the case of its name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), default)


Answer = tuple[int, str | bytes, float]
Responder = Callable[[ReceivedRequest], Answer]


def accept(_request: ReceivedRequest) -> Answer:
    return 200, ACCEPTED, 0.0


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@dataclass
class FakeBuyer:
    """Records every request in `received` (unless `record=False`: the benchmark keeps its own
    tally) and answers through `responses[path]` or `default`."""

    port: int = 0
    default: Responder = accept
    record: bool = True
    responses: dict[str, Responder] = field(default_factory=dict)
    received: list[ReceivedRequest] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _server: asyncio.Server | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, status: int = 200, body: str = ACCEPTED, delay: float = 0.0) -> None:
        """Answer every request to `path` with this status and body, after `delay` seconds."""
        self.responses[path] = lambda _r: (status, body, delay)

    def paths(self) -> list[str]:
        return [r.path.split("?")[0] for r in self.received]

    # --- serving ---------------------------------------------------------------------------------

    async def listen(self) -> asyncio.Server:
        """Start listening on this event loop (port 0: any free port, then set in `port`)."""
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self._server

    async def serve_forever(self) -> None:
        server = self._server or await self.listen()
        async with server:
            await server.serve_forever()

    def start(self) -> FakeBuyer:
        """Serve from a thread of its own until `stop()`; returns once it listens."""
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.listen())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                failed.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-buyer-{id(self):x}", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            # Open connections (a delayed answer, a kept-alive client) end before the loop does.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(shut()))
        thread.join(timeout=5)
        self._loop = self._thread = self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                arrived = time.time()
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip()] = value.strip()
                request = ReceivedRequest(method, target, headers, b"", arrived)
                length = int(request.header("Content-Length") or 0)
                request.body = await reader.readexactly(length) if length else b""
                if self.record:
                    self.received.append(request)
                responder = self.responses.get(target.split("?")[0], self.default)
                status, body, delay = responder(request)
                if delay:
                    await asyncio.sleep(delay)
                data = body.encode() if isinstance(body, str) else body
                reason = _reason(status)
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
                if request.header("Connection").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the caller gave up (its timeout) or died (SIGKILL)
        finally:
            writer.close()
