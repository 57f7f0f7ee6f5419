"""The benchmark's buyer endpoint: a bare asyncio HTTP/1.1 server in its own process.

Every buyer of the benchmark catalog posts to `/buyers/<client>`; the server answers
`{"status": "accepted"}` at once, or after the delay set for that client, and records when each
lead (the `ref` field of the posted JSON) arrived. It is written on raw asyncio streams rather
than http.server so that, at thousands of posts per second, the buyer is not what we measure.

Control (used by bench/run.py, never by Leadwire):
  POST /_control/delay?client=<id>&seconds=<s>   set (or clear with 0) one buyer's delay
  GET  /_control/count                            posts received so far
  GET  /_control/dump                             every post received as JSON, then forget them

  python -m bench.buyer --port 18199
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

ACCEPTED = b'{"status": "accepted"}'


class Buyer:
    def __init__(self) -> None:
        self.delays: dict[str, float] = {}
        # (ref, client, wall-clock seconds at arrival); wall clock because the publisher is
        # another process on the same machine.
        self.received: list[tuple[str, str, float]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                arrived = time.time()
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line[:15].lower() == "content-length:":
                        length = int(line[15:].strip())
                body = await reader.readexactly(length) if length else b""
                status, payload = await self.answer(method, target, body, arrived)
                writer.write(
                    b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (status, len(payload), payload)
                )
                await writer.drain()
        finally:
            writer.close()

    async def answer(self, method: str, target: str, body: bytes, arrived: float) -> tuple[int, bytes]:
        parts = urlsplit(target)
        if parts.path.startswith("/_control/"):
            return self.control(parts.path, parse_qs(parts.query))
        client = parts.path.rsplit("/", 1)[-1]
        try:
            ref = str(json.loads(body).get("ref", ""))
        except ValueError:
            ref = ""
        self.received.append((ref, client, arrived))
        delay = self.delays.get(client)
        if delay:
            await asyncio.sleep(delay)
        return 200, ACCEPTED

    def control(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        if path == "/_control/delay":
            client, seconds = query["client"][0], float(query["seconds"][0])
            if seconds:
                self.delays[client] = seconds
            else:
                self.delays.pop(client, None)
            return 200, b"{}"
        if path == "/_control/count":
            return 200, json.dumps({"received": len(self.received)}).encode()
        if path == "/_control/dump":
            data, self.received = self.received, []
            return 200, json.dumps(data).encode()
        return 404, b"{}"


async def main(port: int) -> None:
    buyer = Buyer()
    server = await asyncio.start_server(buyer.serve, "127.0.0.1", port, backlog=1024)
    print(f"bench buyer listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


async def control(port: int, path: str) -> Any:
    """A tiny client for the control endpoints (no HTTP library needed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = next(
            int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")
        )
        return json.loads(await reader.readexactly(length))
    finally:
        writer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=18199)
    asyncio.run(main(parser.parse_args().port))
