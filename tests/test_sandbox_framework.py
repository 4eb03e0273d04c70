"""The sandbox base: control routes, fault injection and going down for real."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from starlette.responses import Response

from hub.sandbox import SandboxControl, SandboxServer, SandboxSystem
from hub.sandbox.system import json_error


class EchoSandbox(SandboxSystem):
    name = "echo"
    default_port = 0

    def __init__(self, *, seed: int | None = None) -> None:
        self.items: list[str] = []
        super().__init__(seed=seed)

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/v1/items/{item}")
        async def add(item: str) -> dict[str, Any]:
            self.items.append(item)
            return {"id": item}

        return router

    def inspect(self) -> dict[str, Any]:
        return {"items": list(self.items)}

    def reset(self) -> None:
        self.items.clear()

    def error_response(self, status: int, *, retry_after_s: float | None = None) -> Response:
        headers = {"Retry-After": str(int(retry_after_s))} if retry_after_s is not None else {}
        return json_error(status, {"error": {"status": status}}, headers)

    def connector_env(self, base_url: str) -> dict[str, str]:
        return {"HUB_ECHO_BASE_URL": base_url}


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = SandboxServer([EchoSandbox(seed=1)]).start_in_thread()
    yield server
    server.stop_thread()


async def test_state_faults_and_reset(sandbox: SandboxServer) -> None:
    url = sandbox.url("echo")
    async with httpx.AsyncClient(base_url=url) as client, \
            SandboxControl(sandbox.control_url) as control:
        assert (await client.post("/v1/items/item-1")).json() == {"id": "item-1"}
        state = await control.state("echo")
        assert state["items"] == ["item-1"]
        assert state["requests"] == {"POST /v1/items/{id}": 1}
        assert await control.env() == {"HUB_ECHO_BASE_URL": url}

        await control.set_faults("echo", burst_429=2, retry_after_s=3)
        for _ in range(2):
            answer = await client.post("/v1/items/item-2")
            assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
        assert (await client.post("/v1/items/item-2")).status_code == 200

        await control.set_faults("echo", error_rate=1.0)
        assert (await client.post("/v1/items/item-3")).status_code == 500
        # control routes on the system's own port are never faulted
        assert (await client.get("/_sandbox/state")).status_code == 200
        await control.clear_faults()
        await control.reset("echo")
        assert (await control.state("echo"))["items"] == []


async def test_down_refuses_connections_then_recovers(sandbox: SandboxServer) -> None:
    url = sandbox.url("echo")
    async with SandboxControl(sandbox.control_url) as control:
        await control.set_faults("echo", down=True)
        for _ in range(100):
            if not (await control.systems())[0]["up"]:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=url) as client:
                await client.post("/v1/items/x")
        await control.set_faults("echo", down=False)
        for _ in range(100):
            if (await control.systems())[0]["up"]:
                break
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.post("/v1/items/x")).status_code == 200


async def test_timeouts_hang_past_the_client(sandbox: SandboxServer) -> None:
    async with SandboxControl(sandbox.control_url) as control:
        await control.set_faults("echo", timeout_rate=1.0, hang_s=2)
        async with httpx.AsyncClient(base_url=sandbox.url("echo"), timeout=0.3) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v1/items/slow")
        await control.set_faults("echo", latency_ms=150)
        async with httpx.AsyncClient(base_url=sandbox.url("echo"), timeout=5) as client:
            assert (await client.post("/v1/items/fast")).status_code == 200


async def test_faults_can_target_one_route_and_status(sandbox: SandboxServer) -> None:
    async with SandboxControl(sandbox.control_url) as control, \
            httpx.AsyncClient(base_url=sandbox.url("echo")) as client:
        await control.set_faults("echo", error_rate=1.0, error_status=400,
                                 match=r"^POST /v1/items/bad")
        assert (await client.post("/v1/items/bad-1")).status_code == 400
        assert (await client.post("/v1/items/good-1")).status_code == 200
        answer = await client.put("/_sandbox/faults", json={"match": "("})
        assert answer.status_code == 422 and "regular expression" in answer.text
