"""Schemathesis against the live API: nothing the OpenAPI document allows gets a 5xx.

The API runs in a thread with its own event loop (a Hub of its own schema, uvicorn on a
free loopback port) because schemathesis sends its requests synchronously: on the test's
loop they would wait for a server that cannot answer.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import tests.workflows.async_flows  # noqa: F401  (registers tw-approval: a step that waits)
from hub import Hub
from hub.api import ApiSettings, create_app, create_key, load_routes
from hub.sandbox import SandboxServer
from hub.settings import KafkaSettings
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


class LiveApi:
    """The API of a hub on schema ``schema``, served from a thread until ``stop()``."""

    def __init__(self, dsn: str, schema: str, bootstrap: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.bootstrap = bootstrap
        self.url = ""
        self.token = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-api", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"the API did not start: {self._error!r}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with Hub(self.dsn, schema=self.schema, lease_seconds=2.0,
                           poll_interval=0.5, hold_timer_seconds=5.0) as hub:
                key = await create_key(hub.store, "schemathesis", ["read", "run", "operate"])
                await hub.start("tw-approval", {"id": "w"}, transaction_id="fuzz:waiting")
                self.token = key.token
                app = create_app(hub, custom_routes=load_routes(["api.routes"]),
                                 settings=ApiSettings(webhook_secrets={"warehouse": "s3cret"},
                                                      max_wait_seconds=2),
                                 kafka=KafkaSettings(bootstrap=self.bootstrap,
                                                     topics_file=ROOT / "topics.yaml"))
                server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                       lifespan="off", log_level="warning"))
                serving = asyncio.create_task(server.serve())
                while not server.started:
                    if serving.done():
                        serving.result()
                    await asyncio.sleep(0.01)
                self.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
                self._ready.set()
                await self._stop.wait()
                server.should_exit = True
                await serving
        finally:
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            finally:
                await conn.close()


@pytest.fixture(scope="module")
def live_api(dsn: str, sandboxes: SandboxServer, kafka_bootstrap: str) -> Iterator[LiveApi]:
    """The live API, its custom routes' ERP played by the sandbox, its dead letters read
    from the session's broker."""
    live = LiveApi(dsn, f"t_{uuid.uuid4().hex[:12]}", kafka_bootstrap)
    live.start()
    try:
        yield live
    finally:
        live.stop()


EXAMPLES = int(os.environ.get("HUB_TEST_API_EXAMPLES", "40"))
"""Hypothesis examples per operation and mode: bounded, so the suite stays a few minutes."""

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
"""Valid requests must also get documented statuses, content types and bodies."""


KNOWN = {"name": ["hello-world", "tw-approval"], "id": ["fuzz:waiting"],
         "step": ["ask-approval"], "source": ["warehouse"]}
"""Path values that exist, so the fuzzing reaches workflows, executions and steps (random
ones mostly meet a 404)."""

VALID_INPUT = {"hello-world": {"input": {"name": "Fuzz"}}, "tw-approval": {"input": {"id": "f"}}}
"""Bodies that start real runs, so headers and query (wait, Idempotency-Key) are fuzzed on
runs that exist (random inputs mostly meet a 422)."""


def _fuzz(operation: Any, mode: GenerationMode, checks: list[Any],
          auth: dict[str, str], path: dict[str, str] | None = None,
          body: Any = NOT_SET) -> None:
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path, body=body))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def check(case: Any) -> None:
        case.call_and_validate(headers=auth, timeout=30, checks=checks)

    check()


def test_no_request_the_document_allows_gets_a_server_error(live_api: LiveApi) -> None:
    # Schemathesis's pytest integration (from_fixture) does not run on pytest 9, so the
    # operations are driven through its Python API: one Hypothesis run per operation and
    # mode, every failure collected before the verdict.
    document = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in document.get_all_operations():
        operation = result.ok()
        operations += 1
        params = [p for p in KNOWN if f"{{{p}}}" in operation.path]
        known = [{p: KNOWN[p][i % len(KNOWN[p])] for p in params}
                 for i in range(max((len(KNOWN[p]) for p in params), default=0))]
        runs: list[tuple[GenerationMode, list[Any], dict[str, str] | None, Any]] = [
            (GenerationMode.POSITIVE, CHECKS, None, NOT_SET),
            (GenerationMode.NEGATIVE, [not_a_server_error], None, NOT_SET),
            *((GenerationMode.POSITIVE, CHECKS, path, NOT_SET) for path in known)]
        if operation.label == "POST /workflows/{name}/runs":
            runs += [(GenerationMode.POSITIVE, CHECKS, {"name": name}, body)
                     for name, body in VALID_INPUT.items()]
        for mode, checks, path, body in runs:
            try:
                _fuzz(operation, mode, checks, live_api.auth, path, body)
            except Unsatisfiable:  # nothing to get wrong in a request without parameters
                assert mode is GenerationMode.NEGATIVE
            except (Exception, BaseExceptionGroup) as exc:  # collected: one report for all
                failures.append(f"{operation.label} [{mode.value} {path or ''}]: {exc}")
    assert operations >= 16
    assert not failures, "\n\n".join(failures)
