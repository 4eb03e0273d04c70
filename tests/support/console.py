"""The console's test harness: the API served over loopback, and a real Chromium driving it.

The browser is Debian's ``chromium`` package (``scripts/install-browser`` installs it when it
is missing), driven by Playwright through ``executable_path``: Playwright never downloads a
browser of its own here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("HUB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = ROOT / "docs" / "console"


def shots_folder() -> Path:
    """docs/console/ when ``HUB_UPDATE_SCREENSHOTS=1`` (to refresh the docs' pictures), else
    a scratch folder: a test run leaves the working tree as it found it."""
    if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1":
        return SHOTS
    return Path(tempfile.gettempdir()) / "hub-console-shots"


def ensure_chromium() -> str:
    """The browser's path, installing Debian's package first if it is missing."""
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        done = subprocess.run(["bash", str(ROOT / "scripts" / "install-browser")],
                              capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"scripts/install-browser failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """``app`` on a free loopback port, in this event loop; yields its base URL. Like
    ``hub api``, uvicorn's forwarded-header handling is off (HUB_TRUSTED_PROXIES decides)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off",
                                           log_level="warning", proxy_headers=False))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class Shots:
    """Screenshots of the console's pages for docs/console.md, taken by the tests."""

    folder: Path = field(default_factory=shots_folder)
    taken: list[Path] = field(default_factory=list)

    async def take(self, page: Any, name: str, *, full_page: bool = True) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        await page.screenshot(path=str(path), full_page=full_page, animations="disabled")
        self.taken.append(path)
        return path
