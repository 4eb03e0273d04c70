"""``SandboxControl``: the HTTP client of ``hub sandbox``'s control port, for tests, the
demo and the chaos driver (read state, inject and clear faults, reset)."""

from __future__ import annotations

from typing import Any

import httpx

from hub.sandbox.faults import Faults


class SandboxControl:
    def __init__(self, control_url: str, *, timeout_s: float = 10.0) -> None:
        self._client = httpx.AsyncClient(base_url=control_url, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> SandboxControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = await self._client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    async def systems(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._json("GET", "/systems")
        return result

    async def env(self) -> dict[str, str]:
        result: dict[str, str] = await self._json("GET", "/env")
        return result

    async def state(self, system: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/systems/{system}/state")
        return result

    async def set_faults(self, system: str, **faults: Any) -> Faults:
        return Faults.model_validate(await self._json(
            "PUT", f"/systems/{system}/faults", Faults(**faults).model_dump()))

    async def clear_faults(self, system: str | None = None) -> None:
        names = [system] if system else [s["name"] for s in await self.systems()]
        for name in names:
            await self._json("DELETE", f"/systems/{name}/faults")

    async def reset(self, system: str | None = None) -> None:
        names = [system] if system else [s["name"] for s in await self.systems()]
        for name in names:
            await self._json("POST", f"/systems/{name}/reset")
