"""``SandboxServer``: every sandbox system on its own loopback port, plus a control port.

Each system listens on its own port, so connectors are pointed at it by base URL alone, as
they would be at the real system. Being "down" closes that system's listener (clients get
connection refused, as from a dead host); the control port stays up to bring it back.
``start_in_thread`` runs the whole thing on a private event loop, so a test's own loop
blocking (a subprocess, a debugger) never stalls the systems the hub is calling.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Generator, Sequence
from typing import Any

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException

from hub.sandbox.faults import Faults
from hub.sandbox.system import SandboxSystem

log = structlog.get_logger("hub.sandbox")


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"sandbox: cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone: whoever runs the sandboxes handles them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _Listener:
    """One uvicorn server on one port, which can be closed and opened again on that port."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.app, self.host, self.port = app, host, port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # a close still under way finishes before an open

    @property
    def up(self) -> bool:
        return self._server is not None

    async def open(self) -> None:
        async with self._lock:
            await self._open()

    async def close(self) -> None:
        async with self._lock:
            await self._close()

    async def _open(self) -> None:
        if self._server is not None:
            return
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        server = _QuietServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.005)

    async def _close(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # only now is the socket closed: until then the system still reads as up
        self._server = self._task = None


class SandboxServer:
    """Runs ``systems`` and a control app; ``ports`` maps names to fixed ports (0: free)."""

    def __init__(self, systems: Sequence[SandboxSystem], *, host: str = "127.0.0.1",
                 ports: dict[str, int] | None = None, control_port: int = 0) -> None:
        self.systems = {s.name: s for s in systems}
        self.host = host
        ports = ports or {}
        self._listeners = {name: _Listener(s.app, host, ports.get(name, 0))
                           for name, s in self.systems.items()}
        self._control = _Listener(self._control_app(), host, control_port)
        for name, system in self.systems.items():
            system.on_down = self._down_hook(name)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # --- addresses ----------------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self._listeners[name].port}"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self._control.port}"

    def connector_env(self) -> dict[str, str]:
        """Environment variables pointing every connector at its sandbox."""
        env: dict[str, str] = {}
        for name, system in self.systems.items():
            env.update(system.connector_env(self.url(name)))
        return env

    # --- lifetime -----------------------------------------------------------------------

    async def start(self) -> None:
        for listener in self._listeners.values():
            await listener.open()
        await self._control.open()
        log.info("sandboxes_started", control=self.control_url,
                 systems={name: self.url(name) for name in self.systems})

    async def stop(self) -> None:
        await self._control.close()
        for listener in self._listeners.values():
            await listener.close()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def start_in_thread(self) -> SandboxServer:
        """Start on a private loop in a daemon thread; returns once every port listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stop = asyncio.Event()

            async def main() -> None:
                try:
                    await self.start()
                except BaseException as exc:
                    failure.append(exc)
                    ready.set()
                    return
                ready.set()
                assert self._stop is not None
                await self._stop.wait()
                await self.stop()

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, name="sandboxes", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop_thread(self) -> None:
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    # --- control ------------------------------------------------------------------------

    def _down_hook(self, name: str) -> Any:
        async def set_down(down: bool) -> None:
            listener = self._listeners[name]
            try:
                if down:
                    await listener.close()
                else:
                    await listener.open()
            except OSError as exc:  # e.g. the port was taken meanwhile: say so, loudly
                log.error("sandbox_reopen_failed", system=name, error=str(exc))
                return
            log.info("sandbox_down" if down else "sandbox_up", system=name)
        return set_down

    def _system(self, name: str) -> SandboxSystem:
        try:
            return self.systems[name]
        except KeyError:
            raise HTTPException(404, f"no sandbox system {name!r} "
                                     f"(known: {', '.join(sorted(self.systems))})") from None

    def _control_app(self) -> FastAPI:
        app = FastAPI(title="Sandbox control", openapi_url=None, docs_url=None, redoc_url=None)
        router = APIRouter()

        @router.get("/systems")
        async def systems() -> list[dict[str, Any]]:
            return [{"name": name, "url": self.url(name), "up": self._listeners[name].up,
                     "faults": s.plan.faults.model_dump()} for name, s in self.systems.items()]

        @router.get("/env")
        async def env() -> dict[str, str]:
            return self.connector_env()

        @router.get("/systems/{name}/state")
        async def state(name: str) -> dict[str, Any]:
            system = self._system(name)
            return {"system": name, "requests": dict(system.requests), **system.inspect()}

        @router.get("/systems/{name}/faults")
        async def get_faults(name: str) -> Faults:
            return self._system(name).plan.faults

        @router.put("/systems/{name}/faults")
        async def put_faults(name: str, faults: Faults) -> Faults:
            system = self._system(name)
            system.set_faults(faults)
            return system.plan.faults

        @router.delete("/systems/{name}/faults")
        async def clear_faults(name: str) -> Faults:
            system = self._system(name)
            system.set_faults(Faults())
            return system.plan.faults

        @router.post("/systems/{name}/reset")
        async def reset(name: str) -> dict[str, str]:
            system = self._system(name)
            system.reset()
            system.requests.clear()
            return {"status": "reset"}

        app.include_router(router)
        return app
