"""The benchmark's buyer endpoint, in its own process: the harness's fake buyer (harness/buyer.py,
on raw asyncio streams, so that at thousands of posts per second the buyer is not what we measure)
answering for the benchmark's buyers.

Every buyer of the benchmark catalog posts to `/buyers/<client>`; the server answers
`{"status": "accepted"}` at once, or after the delay set for that client, and records when each
lead (the `ref` field of the posted JSON) arrived.

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
from typing import Any
from urllib.parse import parse_qs, urlsplit

from harness.buyer import Answer, FakeBuyer, ReceivedRequest

ACCEPTED = b'{"status": "accepted"}'


class Buyer:
    """The benchmark's buyers as one responder of the harness's fake buyer endpoint."""

    def __init__(self) -> None:
        self.delays: dict[str, float] = {}
        # (ref, client, wall-clock seconds at arrival); wall clock because the publisher is
        # another process on the same machine.
        self.received: list[tuple[str, str, float]] = []

    def answer(self, request: ReceivedRequest) -> Answer:
        parts = urlsplit(request.path)
        if parts.path.startswith("/_control/"):
            return self.control(parts.path, parse_qs(parts.query))
        client = parts.path.rsplit("/", 1)[-1]
        try:
            ref = str(json.loads(request.body).get("ref", ""))
        except ValueError:
            ref = ""
        self.received.append((ref, client, request.arrived))
        return 200, ACCEPTED, self.delays.get(client, 0.0)

    def control(self, path: str, query: dict[str, list[str]]) -> Answer:
        if path == "/_control/delay":
            client, seconds = query["client"][0], float(query["seconds"][0])
            if seconds:
                self.delays[client] = seconds
            else:
                self.delays.pop(client, None)
            return 200, b"{}", 0.0
        if path == "/_control/count":
            return 200, json.dumps({"received": len(self.received)}), 0.0
        if path == "/_control/dump":
            data, self.received = self.received, []
            return 200, json.dumps(data), 0.0
        return 404, b"{}", 0.0


async def main(port: int) -> None:
    endpoint = FakeBuyer(port=port, default=Buyer().answer, record=False)
    await endpoint.listen()
    print(f"bench buyer listening on 127.0.0.1:{endpoint.port}", flush=True)
    await endpoint.serve_forever()


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
