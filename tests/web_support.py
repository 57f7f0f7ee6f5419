"""Browser tests of Leadwire's web tiers (the Client Portal now, the admin console next): Debian's
chromium driven by Playwright, and an ASGI app served for real by uvicorn on 127.0.0.1:0.

- `chromium_problem()` says why the browser cannot be used (missing, or a major version the pinned
  Playwright was not built for); the fixture fails on it under LEADWIRE_REQUIRE_SERVICES=1 and
  skips otherwise.
- `launch_chromium(playwright)` starts it with the flags this closed network needs.
- `serve(app)` runs any ASGI app (lifespan included) in this event loop and yields its base URL.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn

# Without these, chromium spends its first seconds calling Google services this network refuses.
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]


def playwright_chromium_version() -> str:
    """The Chromium version the installed Playwright was built for (its driver's browsers.json)."""
    import playwright

    browsers = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
    for browser in json.loads(browsers.read_text())["browsers"]:
        if browser["name"] == "chromium":
            return str(browser["browserVersion"])
    raise RuntimeError("playwright's browsers.json names no chromium")


def installed_chromium() -> tuple[str | None, str | None]:
    """(path, version) of the chromium on PATH, or (None, None)."""
    path = shutil.which("chromium")
    if path is None:
        return None, None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"(\d+\.\d+\.\d+\.\d+)", out)
    return path, match.group(1) if match else None


def chromium_problem() -> str | None:
    """Why the browser tests cannot run here, or None. Playwright documents driving a browser
    through executable_path as "at your own risk": we accept it only for the major version the
    pinned Playwright was built for."""
    path, version = installed_chromium()
    if path is None:
        return "chromium is not installed (scripts/bootstrap.sh installs Debian's package with apt)"
    wanted = playwright_chromium_version()
    if version is None:
        return f"could not read the version of {path}"
    if version.split(".")[0] != wanted.split(".")[0]:
        return (
            f"{path} is Chromium {version}, but playwright (pyproject.toml) is built for Chromium {wanted}: "
            "pin the Playwright release whose Chromium major matches Debian's"
        )
    return None


async def launch_chromium(playwright: Any) -> Any:
    return await playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)


@asynccontextmanager
async def serve(app: Any, *, log_level: str = "warning") -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) in this event loop; yields "http://127.0.0.1:<port>".
    The app's lifespan runs first (a failing start-up raises here), and ends on exit. Logging
    is left as the test runner set it up (records reach caplog); `log_level="info"` lets the
    access log through."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level=log_level, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # the start-up's exception
                raise RuntimeError("uvicorn stopped before it started serving")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
