"""The HTTP API over real HTTP on loopback: uvicorn in-process, httpx as the client."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import BaseModel

from hub import Hub, HubError, StepContext, WorkflowResponse, create_step, create_workflow
from hub.api import (
    ApiSettings,
    create_app,
    create_key,
    list_keys,
    load_routes,
    revoke_key,
    signed_headers,
)
from hub.sandbox import SandboxControl
from tests.conftest import ROOT, worker_env
from tests.support.polling import until
from tests.workflows.async_flows import tw_approval  # noqa: F401  (registers tw-approval)
from tests.workflows.sleep_flows import sleep_between  # noqa: F401  (registers sleep-between)
from workflows.hello_world import hello_world

SECRET = b"warehouse-shared-secret"
WHSEC_KEY = bytes(range(24))
WHSEC = "whsec_" + base64.b64encode(WHSEC_KEY).decode()  # the spec's form, rotated in
BODY_LIMIT = 64 * 1024


class Item(BaseModel):
    sku: str


ATTEMPTS: dict[str, int] = {}


async def _post_document(inp: Item, ctx: StepContext) -> str:
    ATTEMPTS[ctx.execution_id] = ATTEMPTS.get(ctx.execution_id, 0) + 1
    if ATTEMPTS[ctx.execution_id] == 1:
        raise RuntimeError("ERP rejected the document, fix it by hand")
    return "posted"


@create_workflow("api-manual")
def api_manual(inp: Item) -> WorkflowResponse:
    return WorkflowResponse(create_step("api-post-document", _post_document, max_retries=1,
                                        auto_retry=False)(inp))


def _announce(inp: Item, ctx: StepContext) -> str:
    ctx.emit("api.item.announced", {"sku": inp.sku}, key=inp.sku)
    return "announced"


@create_workflow("api-emitter")
def api_emitter(inp: Item) -> WorkflowResponse:
    return WorkflowResponse(create_step("api-announce", _announce)(inp))


async def _slow(inp: Item, ctx: StepContext) -> str:
    await asyncio.sleep(1.5)
    return "slow"


@create_workflow("api-slow")
def api_slow(inp: Item) -> WorkflowResponse:
    return WorkflowResponse(create_step("api-slow-step", _slow)(inp))


@dataclass
class Api:
    client: httpx.AsyncClient
    hub: Hub
    keys: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture
async def api(hub: Hub) -> AsyncIterator[Api]:
    settings = ApiSettings(webhook_secrets={"warehouse": [WHSEC, SECRET.decode()]},
                           max_body_bytes=BODY_LIMIT, max_wait_seconds=10)
    app = create_app(hub, custom_routes=load_routes(["api.routes"]), settings=settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off",
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    keys = {scope: (await create_key(hub.store, f"test-{scope}", [scope])).token
            for scope in ("read", "run", "operate")}
    keys["all"] = (await create_key(hub.store, "test-all", ["read", "run", "operate"])).token
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield Api(client, hub, keys)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)




async def status_of(api: Api, ref: str, wanted: str) -> dict[str, Any] | None:
    r = await api.client.get(f"/executions/{ref}", headers=api.auth("read"))
    body: dict[str, Any] = r.json()
    return body if body["status"] == wanted else None


async def start(api: Api, workflow: str, inp: Any, *, wait: bool = True,
                key: str | None = None, **body: Any) -> httpx.Response:
    headers = api.auth("run") | ({"Idempotency-Key": key} if key else {})
    return await api.client.post(f"/workflows/{workflow}/runs", params={"wait": wait},
                                 json={"input": inp, **body}, headers=headers)


# -- probes and authentication ---------------------------------------------------------
async def test_health_and_readiness_need_no_key(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}, "no key: ready or not, no details"


async def test_readiness_details_need_a_valid_read_key(api: Api) -> None:
    ready = await api.client.get("/readyz", headers=api.auth("read"))
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}
    forged = await api.client.get("/readyz", headers={"Authorization": "Bearer nope"})
    assert forged.status_code == 401


async def test_a_request_without_a_usable_key_is_401_naming_the_problem(api: Api) -> None:
    forged = "hub_0123456789ab_" + "A" * 43
    cases = [
        ({}, "missing API key"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "must be `Bearer <API key>`"),
        ({"Authorization": "Bearer not-a-hub-key"}, "malformed API key"),
        ({"Authorization": f"Bearer {forged}"}, "unknown API key"),
        ({"Authorization": f"Bearer {api.keys['read'][:-1]}B"}, "unknown API key"),
    ]
    for headers, problem in cases:
        r = await api.client.get("/workflows", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"] == "unauthorized"
        assert problem in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "not-a-hub-key" not in r.text and forged not in r.text, "never echo a key"
    unkeyed = await api.client.post("/workflows/hello-world/runs", json={"inptu": 1})
    assert unkeyed.status_code == 401, "the key is checked before the body is validated"


async def test_a_known_key_without_the_scope_is_403(api: Api) -> None:
    r = await api.client.post("/workflows/hello-world/runs", json={"input": {"name": "x"}},
                              headers=api.auth("read"))
    assert r.status_code == 403
    body = r.json()
    assert body["error"] == "forbidden"
    assert "'test-read'" in body["detail"] and "lacks the 'run' scope" in body["detail"]
    assert api.keys["read"] not in r.text
    ops = await api.client.post("/executions/whatever/cancel", headers=api.auth("run"))
    assert ops.status_code == 403 and "'operate'" in ops.json()["detail"]
    reads = await api.client.get("/executions", headers=api.auth("operate"))
    assert reads.status_code == 403 and "'read'" in reads.json()["detail"]


async def test_a_revoked_key_is_401(api: Api) -> None:
    key = await create_key(api.hub.store, "short-lived", ["read"])
    headers = {"Authorization": f"Bearer {key.token}"}
    assert (await api.client.get("/workflows", headers=headers)).status_code == 200
    [used] = [k for k in await list_keys(api.hub.store) if k.id == key.id]
    assert used.last_used_at is not None
    revoked = await revoke_key(api.hub.store, key.prefix)
    assert revoked is not None and revoked.revoked_at is not None
    r = await api.client.get("/workflows", headers=headers)
    assert r.status_code == 401
    assert "'short-lived'" in r.json()["detail"] and "was revoked" in r.json()["detail"]


# -- validation and limits -------------------------------------------------------------
async def test_invalid_requests_are_422_naming_the_field(api: Api) -> None:
    r = await start(api, "hello-world", {"nmae": "John"})
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"
    assert ["body", "input", "name"] in [e["loc"] for e in r.json()["detail"]]
    typo = await api.client.post("/workflows/hello-world/runs", json={"inptu": {}},
                                 headers=api.auth("run"))
    assert typo.status_code == 422
    assert ["body", "inptu"] in [e["loc"] for e in typo.json()["detail"]]
    nul = await start(api, "hello-world", {"name": "Jo\u0000hn"})
    assert nul.status_code == 422
    assert nul.json()["detail"][0]["loc"] == ["body", "input", "name"]
    surrogate = await api.client.post(  # valid JSON, but not storable text
        "/workflows/hello-world/runs", content=b'{"input": {"name": "\\ud800"}}',
        headers=api.auth("run") | {"Content-Type": "application/json"})
    assert surrogate.status_code == 422
    assert surrogate.json()["detail"][0]["loc"] == ["body", "input", "name"]
    nul_ref = await api.client.get("/executions/%00", headers=api.auth("read"))
    assert nul_ref.status_code == 404
    for params, field in [({"limit": 0}, "limit"), ({"cursor": "garbage"}, "cursor"),
                          ({"status": "exploded"}, "status")]:
        bad = await api.client.get("/executions", params=params, headers=api.auth("read"))
        assert bad.status_code == 422, params
        assert bad.json()["detail"][0]["loc"] == ["query", field]


async def test_a_body_over_the_limit_is_413(api: Api) -> None:
    big = json.dumps({"input": {"name": "x" * BODY_LIMIT}}).encode()
    r = await api.client.post("/workflows/hello-world/runs", content=big,
                              headers=api.auth("run") | {"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    streamed = await api.client.post("/workflows/hello-world/runs", content=chunks(),
                                     headers=api.auth("run")
                                     | {"Content-Type": "application/json"})
    assert streamed.status_code == 413


async def test_unknown_workflow_and_execution_are_404(api: Api) -> None:
    r = await start(api, "no-such-workflow", {})
    assert r.status_code == 404 and "no-such-workflow" in r.json()["detail"]
    missing = await api.client.get("/executions/nope", headers=api.auth("read"))
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


# -- workflows and runs ----------------------------------------------------------------
async def test_workflow_definitions_are_listed_with_their_graph(api: Api) -> None:
    names = [w["name"] for w in (await api.client.get("/workflows",
                                                      headers=api.auth("read"))).json()]
    assert "hello-world" in names
    d = (await api.client.get("/workflows/hello-world", headers=api.auth("read"))).json()
    assert d["version"] == hello_world.version
    assert [s["id"] for s in d["graph"]["steps"]] == ["step-1", "step-2"]
    assert d["mermaid"].startswith("flowchart TD")
    assert d["input_schema"]["required"] == ["name"]


async def test_run_with_wait_answers_200_with_the_result(api: Api) -> None:
    r = await start(api, "hello-world", {"name": "Ada"})
    assert r.status_code == 200
    run = r.json()
    assert run["status"] == "succeeded" and run["state"] == "done"
    assert run["result"] == {"message": "Hello Ada from step two!"}
    assert r.headers["location"] == f"/executions/{run['id']}"


async def test_run_without_wait_answers_202_with_location(api: Api) -> None:
    r = await start(api, "hello-world", {"name": "Bo"}, wait=False)
    assert r.status_code == 202
    assert r.json()["status"] == "pending"
    location = r.headers["location"]
    done = await until(lambda: status_of(api, location.rsplit("/", 1)[1], "succeeded"))
    assert done["result"] == {"message": "Hello Bo from step two!"}


async def test_a_wait_that_times_out_answers_202_with_the_run_as_it_is(api: Api) -> None:
    r = await api.client.post("/workflows/api-slow/runs", params={"wait": True, "timeout": 0.3},
                              json={"input": {"sku": "S"}}, headers=api.auth("run"))
    assert r.status_code == 202
    assert r.json()["status"] == "running" and r.json()["transaction_id"].startswith("api:")
    done = await until(lambda: status_of(api, r.json()["id"], "succeeded"))
    assert done["result"] == "slow"


async def test_the_idempotency_key_finds_the_same_execution(api: Api) -> None:
    first = await start(api, "hello-world", {"name": "Cy"}, key="order-42")
    again = await start(api, "hello-world", {"name": "Cy"}, key="order-42")
    late = await start(api, "hello-world", {"name": "Di"}, wait=False, key="order-42")
    assert first.json()["id"] == again.json()["id"] == late.json()["id"]
    assert first.json()["transaction_id"].endswith(":order-42")
    assert late.json()["input"] == {"name": "Cy"}, "the first request's input wins"
    page = await api.client.get("/executions", params={"workflow": "hello-world"},
                                headers=api.auth("read"))
    assert len(page.json()["items"]) == 1


async def test_idempotency_keys_live_in_the_callers_namespace(api: Api) -> None:
    # a caller holding `run` cannot take the transaction id a future order.placed event
    # will start fulfil-order with, nor find or collide with another key's runs
    mine = await start(api, "hello-world", {"name": "Eve"}, key="order.placed:o-77")
    assert mine.json()["transaction_id"] != "order.placed:o-77"
    event_start = await api.hub.start("hello-world", {"name": "Shop"},
                                      transaction_id="order.placed:o-77", wait=True)
    assert event_start.id != mine.json()["id"] and event_start.input == {"name": "Shop"}
    headers = api.auth("all") | {"Idempotency-Key": "order.placed:o-77"}
    other = await api.client.post("/workflows/hello-world/runs", params={"wait": True},
                                  json={"input": {"name": "Other"}}, headers=headers)
    assert other.json()["id"] not in (mine.json()["id"], event_start.id)
    assert other.json()["input"] == {"name": "Other"}


async def test_a_failed_run_with_wait_is_200_and_its_status_tells(api: Api) -> None:
    r = await start(api, "tw-approval", {"id": "f1"})
    assert r.status_code == 200 and r.json()["status"] == "waiting"
    fail = await api.client.post(f"/executions/{r.json()['id']}/steps/ask-approval/failure",
                                 json={"error": "rejected by finance"}, headers=api.auth("run"))
    assert fail.status_code == 202
    done = await until(lambda: status_of(api, r.json()["id"], "compensated"))
    assert done["error"]["message"] == "rejected by finance"


# -- async steps -----------------------------------------------------------------------
_DELIVERIES = itertools.count()


async def _signed(api: Api, path: str, payload: dict[str, Any], secret: bytes = SECRET,
                  msg_id: str | None = None) -> httpx.Response:
    """One delivery as a Standard Webhooks sender makes it (a fresh id unless given)."""
    body = json.dumps(payload).encode()
    headers = signed_headers(secret, msg_id or f"msg_{next(_DELIVERIES)}", body)
    return await api.client.post(path, content=body,
                                 headers={"Content-Type": "application/json", **headers})


async def test_a_signed_webhook_completes_an_async_step(api: Api) -> None:
    r = await start(api, "tw-approval", {"id": "w1"}, key="approval:w1")
    assert r.json()["status"] == "waiting"
    path = f"/webhooks/warehouse/executions/{r.json()['id']}/steps/ask-approval/success"
    hook = await _signed(api, path, {"output": {"by": "alice"}})
    assert hook.status_code == 202, hook.text
    assert hook.json()["signal"] == "success"
    done = await until(lambda: status_of(api, r.json()["id"], "succeeded"))
    assert done["result"] == {"approved_by": "alice"}


async def test_a_webhook_with_a_bad_signature_is_401(api: Api) -> None:
    r = await start(api, "tw-approval", {"id": "w2"}, key="approval:w2")
    path = f"/webhooks/warehouse/executions/{r.json()['id']}/steps/ask-approval/success"
    body = json.dumps({"output": {"by": "mallory"}}).encode()
    tampered = body.replace(b"mallory", b"alice")
    good = signed_headers(SECRET, "msg_w2", body)
    attempts = [
        (signed_headers(b"wrong-secret", "msg_w2", body), body, "does not match"),
        (good, tampered, "does not match"),
        ({**good, "webhook-id": "msg_other"}, body, "does not match"),
        ({**good, "webhook-timestamp": str(int(good["webhook-timestamp"]) + 1)}, body,
         "does not match"),
        ({}, body, "missing webhook-id, webhook-timestamp, webhook-signature"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, body,
         "X-Hub-Signature-256 is no longer accepted"),
        ({**good, "webhook-signature": "md5=abc"}, body, "must be space-separated v1,"),
        ({**good, "webhook-timestamp": "soon"}, body, "must be integer Unix seconds"),
        ({**good, "webhook-id": "a b"}, body, "printable ASCII"),
    ]
    for headers, content, problem in attempts:
        bad = await api.client.post(path, content=content, headers=headers)
        assert bad.status_code == 401, problem
        assert problem in bad.json()["detail"]
        assert SECRET.decode() not in bad.text
    unknown = await _signed(api, path.replace("warehouse", "nobody"), {"output": {}})
    assert unknown.status_code == 401 and "'nobody'" in unknown.json()["detail"]
    garbage = await api.client.post(path, content=b"{not json", headers={})
    assert garbage.status_code == 401, "the signature is checked before the body is parsed"
    assert (await status_of(api, r.json()["id"], "waiting")) is not None


async def test_a_signed_webhook_with_an_invalid_body_is_422(api: Api) -> None:
    r = await start(api, "tw-approval", {"id": "w3"}, key="approval:w3")
    path = f"/webhooks/warehouse/executions/{r.json()['id']}/steps/ask-approval/failure"
    r = await _signed(api, path, {"eror": "typo"})
    assert r.status_code == 422
    assert ["body", "error"] in [e["loc"] for e in r.json()["detail"]]


async def test_completing_a_step_that_is_not_waiting_is_409(api: Api) -> None:
    r = await start(api, "hello-world", {"name": "Ed"})
    again = await api.client.post(f"/executions/{r.json()['id']}/steps/step-2/success",
                                  json={"output": 1}, headers=api.auth("run"))
    assert again.status_code == 409 and "step-2" in again.json()["detail"]


# -- operations ------------------------------------------------------------------------
async def test_retry_re_runs_a_step_left_for_a_manual_retry(api: Api) -> None:
    r = await start(api, "api-manual", {"sku": "M1"})
    assert r.json()["status"] == "waiting"
    assert r.json()["steps"][0]["state"] == "temp_failure"
    retried = await api.client.post(f"/executions/{r.json()['id']}/retry",
                                    headers=api.auth("operate"))
    assert retried.status_code == 202 and retried.json()["signal"] == "retry"
    done = await until(lambda: status_of(api, r.json()["id"], "succeeded"))
    assert done["steps"][0]["attempts"] == 2


async def test_an_operator_wakes_a_sleep_over_http_and_a_non_sleep_is_refused(
        api: Api) -> None:
    r = await start(api, "sleep-between", {"seconds": 3 * 86400}, wait=False)
    ref = r.json()["id"]

    async def sleeping() -> bool:
        body = (await api.client.get(f"/executions/{ref}", headers=api.auth("read"))).json()
        return any(s["id"] == "sleep" and s["state"] == "waiting" for s in body["steps"])

    await until(sleeping)
    path = f"/executions/{ref}/steps/%s/wake"
    assert (await api.client.post(path % "sleep", headers=api.auth("run"))).status_code == 403
    refused = await api.client.post(path % "sl-before", headers=api.auth("operate"))
    assert refused.status_code == 409 and "not a sleep" in refused.json()["detail"]
    woken = await api.client.post(path % "sleep", headers=api.auth("operate"))
    assert woken.status_code == 202, woken.text
    assert woken.json()["signal"] == "wake" and woken.json()["step"] == "sleep"
    done = await until(lambda: status_of(api, ref, "succeeded"), timeout=30)
    assert [s["state"] for s in done["steps"]] == ["done", "done", "done"]
    again = await api.client.post(path % "sleep", headers=api.auth("operate"))
    assert again.status_code == 409, "a sleep that ended cannot be woken"
    for hostile in ("%00", "%ED%A0%80", "%FF%FE", "x" * 5000, "sleep%00"):
        bad = await api.client.post(path % hostile, headers=api.auth("operate"))
        assert bad.status_code in (404, 409, 422), (hostile, bad.status_code, bad.text)
        assert bad.json()["detail"], hostile
    actions = [e["action"] for e in await api.hub.store.audit_for_execution(uuid.UUID(ref))]
    assert "wake" in actions and "wake_refused" in actions


async def test_cancel_with_wait_answers_the_cancelled_run(api: Api) -> None:
    r = await start(api, "tw-approval", {"id": "c1"})
    cancelled = await api.client.post(f"/executions/{r.json()['id']}/cancel",
                                      params={"wait": True},
                                      json={"reason": "customer changed their mind"},
                                      headers=api.auth("operate"))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"]["message"] == "customer changed their mind"
    again = await api.client.post(f"/executions/{r.json()['id']}/cancel",
                                  headers=api.auth("operate"))
    assert again.status_code == 409 and again.json()["error"] == "conflict"


async def test_compensate_is_accepted_then_the_run_ends_compensated(api: Api) -> None:
    r = await start(api, "tw-approval", {"id": "c2"})
    accepted = await api.client.post(f"/executions/{r.json()['id']}/compensate",
                                     headers=api.auth("operate"))
    assert accepted.status_code == 202
    assert accepted.headers["location"] == f"/executions/{r.json()['id']}"
    done = await until(lambda: status_of(api, r.json()["id"], "compensated"))
    assert done["error"]["message"] == "compensation requested"


# -- reading executions ----------------------------------------------------------------
async def test_execution_detail_shows_trigger_steps_and_published_events(api: Api) -> None:
    r = await start(api, "api-emitter", {"sku": "E1"}, key="emit:E1",
                    trigger={"request_id": "req-7"})
    assert r.json()["status"] == "succeeded"
    tx = r.json()["transaction_id"]
    d = (await api.client.get(f"/executions/{tx}", headers=api.auth("read"))).json()
    assert d["trigger"]["kind"] == "api"
    assert d["trigger"]["route"] == "POST /workflows/{name}/runs"
    assert d["trigger"]["credential"]["name"] == "test-run"
    assert d["trigger"]["idempotency_key"] == "emit:E1"
    assert d["trigger"]["caller"] == {"request_id": "req-7"}
    assert api.keys["run"] not in json.dumps(d)
    [step] = d["steps"]
    assert step["id"] == "api-announce" and step["state"] == "done"
    assert step["attempts"] == 1 and step["started_at"] and step["duration_ms"] >= 0
    [event] = d["outbox"]
    assert event["topic"] == "api.item.announced" and event["payload"] == {"sku": "E1"}
    assert event["key"] == "E1" and event["step"] == "api-announce"


async def test_executions_are_listed_newest_first_page_by_page(api: Api) -> None:
    started = []
    for i in range(5):
        started.append((await start(api, "hello-world", {"name": f"P{i}"})).json()["id"])
    await start(api, "tw-approval", {"id": "other"})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"workflow": "hello-world", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get("/executions", params=params,
                                     headers=api.auth("read"))).json()
        seen += [e["id"] for e in page["items"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(started))
    filters = [({"status": "waiting"}, 1), ({"trigger_kind": "api"}, 6),
               ({"trigger_kind": "event"}, 0), ({"created_after": "2999-01-01T00:00:00Z"}, 0),
               ({"created_before": "2999-01-01T00:00:00"}, 6)]
    for params, n in filters:
        page = (await api.client.get("/executions", params=params,
                                     headers=api.auth("read"))).json()
        assert len(page["items"]) == n, params
    item = page["items"][0]
    assert item["trigger_kind"] == "api" and "steps" not in item


# -- metrics, contracts, custom routes -------------------------------------------------
async def test_metrics_count_executions_by_workflow_and_status(api: Api) -> None:
    await start(api, "hello-world", {"name": "M"})
    assert (await api.client.get("/metrics")).status_code == 401
    r = await api.client.get("/metrics", headers=api.auth("read"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'hub_executions{status="succeeded",workflow="hello-world"} 1.0' in r.text
    assert "hub_build_info{" in r.text
    assert 'route="/workflows/{name}/runs"' in r.text


async def test_the_asyncapi_document_of_topics_yaml_is_served(api: Api) -> None:
    r = await api.client.get("/asyncapi.yaml", headers=api.auth("read"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    assert "asyncapi: 3.0.0" in r.text and "order.placed" in r.text


async def test_the_openapi_document_declares_the_bearer_scheme(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert doc["paths"]["/workflows/{name}/runs"]["post"]["operationId"] == "start_run"
    assert "security" not in doc["paths"]["/healthz"]["get"]


async def test_the_custom_erp_route_counts_the_sandbox_erps_products(
        api: Api, sandbox: SandboxControl) -> None:
    r = await api.client.get("/erp/products/count", headers=api.auth("run"))
    assert r.status_code == 200, r.text
    odoo = await sandbox.state("odoo")
    assert r.json() == {"count": len(odoo["stock"])}


async def test_the_custom_workflow_route_answers_hello_world(api: Api) -> None:
    r = await api.client.get("/workflow", headers=api.auth("run"))
    assert r.status_code == 200
    assert r.json() == {"message": "Hello John from step two!"}
    assert (await api.client.get("/workflow", headers=api.auth("read"))).status_code == 403
    assert (await api.client.get("/workflow")).status_code == 401


def test_webhook_secrets_come_from_the_variable_and_a_file(tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"psp": "from-file", "warehouse": ["rotated", WHSEC]}))
    settings = ApiSettings(webhook_secrets={"warehouse": "from-env"},
                           webhook_secrets_file=secrets_file)
    assert settings.secrets() == {"warehouse": [b"rotated", WHSEC_KEY], "psp": [b"from-file"]}
    assert "from-env" not in repr(settings)
    secrets_file.write_text("not json")
    with pytest.raises(HubError, match="must be a readable JSON object") as err:
        settings.secrets()
    assert "not json" not in str(err.value)


# -- the commands: hub keys ..., hub api -------------------------------------------------
CLI = ("import typer; from hub.api.cli import add_api_commands; "
       "app = typer.Typer(); add_api_commands(app); app()")
"""The commands as `hub` will add them (hub/cli/main.py calls add_api_commands)."""


async def hub_cli(dsn: str, schema: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, *args, env=worker_env(dsn, schema, "workflows"), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_keys_are_created_listed_and_revoked_without_showing_secrets(
        dsn: str, schema: str) -> None:
    rc, out, err = await hub_cli(dsn, schema, "keys", "create", "erp-sync", "--scope", "run",
                                 "--scope", "read", "--json")
    assert rc == 0, err
    created = json.loads(out)
    assert created["scopes"] == ["read", "run"] and created["token"].startswith("hub_")
    rc, out, _ = await hub_cli(dsn, schema, "keys", "list", "--json")
    [listed] = json.loads(out)
    assert listed["prefix"] == created["prefix"] and listed["revoked_at"] is None
    assert created["token"] not in out and "hash" not in listed
    rc, out, _ = await hub_cli(dsn, schema, "keys", "revoke", created["prefix"])
    assert rc == 0 and out.startswith("revoked erp-sync")
    rc, out, _ = await hub_cli(dsn, schema, "keys", "list")
    assert "revoked" in out and created["token"] not in out
    rc, _, err = await hub_cli(dsn, schema, "keys", "create", "x", "--scope", "admin")
    assert rc == 1 and "unknown scope(s) 'admin'" in err
    rc, _, err = await hub_cli(dsn, schema, "keys", "revoke", "hub_000000000000")
    assert rc == 1 and "no API key" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
async def test_hub_api_serves_the_built_in_and_custom_routes(dsn: str, schema: str) -> None:
    rc, out, err = await hub_cli(dsn, schema, "keys", "create", "tutorial", "--scope", "run",
                                 "--json")
    assert rc == 0, err
    token = json.loads(out)["token"]
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, "api", "--port", str(port), "--execute", "--log-level",
        "warning", env=worker_env(dsn, schema, "workflows"), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:

            async def up() -> bool:
                try:
                    return (await c.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    assert proc.returncode is None, "hub api exited"
                    return False

            await until(up, timeout=60)
            r = await c.get("/workflow", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and r.json() == {"message": "Hello John from step two!"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err_bytes = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err_bytes.decode()


async def test_scheduled_jobs_are_listed(api: Api) -> None:
    import tests.workflows.jobs_flows  # noqa: F401  registers tj-nightly
    from hub.runtime.scheduler import Scheduler

    await Scheduler(api.hub).sync()
    r = await api.client.get("/jobs", headers=api.auth("read"))
    assert r.status_code == 200, r.text
    job = next(j for j in r.json() if j["name"] == "tj-nightly")
    assert job["cron"] == "0 2 * * *" and job["timezone"] == "Europe/Berlin"
    assert job["workflow"] == "tj-nightly-report" and job["next_tick"]
    assert (await api.client.get("/jobs")).status_code == 401


async def test_traceparent_header_is_carried_into_the_run(api: Api) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = await api.client.post("/workflows/hello-world/runs?wait=true",
                              json={"input": {"name": "Trace"}},
                              headers={**api.auth("run"), "traceparent": tp})
    assert r.status_code == 200, r.text
    run = await api.hub.get_run(r.json()["id"])
    assert run.trigger and run.trigger["traceparent"] == tp


async def test_readyz_checks_the_broker_when_one_is_configured(hub: Hub) -> None:
    from hub.api.service import HubService

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    ready = await HubService(hub, kafka_bootstrap=dead).readiness()
    assert ready.status == "not_ready" and ready.checks["broker"].startswith(dead)
    assert (await HubService(hub).readiness()).status == "ready"


async def test_a_map_step_s_items_are_read_a_page_at_a_time(api: Api) -> None:
    from tests.workflows.fanout_flows import Ledger, fx_map

    api.hub.container.register("ledger", Ledger())
    items = [{"sku": f"S{i}"} for i in range(5)]
    run = await fx_map(api.hub).run(input={"items": items})
    detail = (await api.client.get(f"/executions/{run.id}", headers=api.auth("read"))).json()
    assert detail["fanouts"] == [{"step": "each-fx-apply", "counts": {"done": 5}, "total": 5}]
    assert detail["parent"] is None and detail["children"] == []
    url = f"/executions/{run.id}/steps/each-fx-apply/items"
    first = (await api.client.get(url, params={"limit": 3}, headers=api.auth("read"))).json()
    assert [i["key"] for i in first["items"]] == ["S0", "S1", "S2"]
    assert first["items"][0]["step"] == "each-fx-apply[S0]"
    assert first["items"][0]["output"] == {"sku": "S0", "reserved": 1}
    rest = (await api.client.get(url, params={"start": first["next_start"]},
                                 headers=api.auth("read"))).json()
    assert [i["key"] for i in rest["items"]] == ["S3", "S4"] and rest["next_start"] is None
    missing = await api.client.get(f"/executions/{run.id}/steps/nope/items",
                                   headers=api.auth("read"))
    assert missing.status_code == 404


async def test_the_execution_detail_shows_parent_and_children(api: Api) -> None:
    from tests.workflows.fanout_flows import Ledger, fx_parent

    api.hub.container.register("ledger", Ledger())
    run = await api.hub.wait((await fx_parent(api.hub).run(input={"child": {}})).id,
                             timeout=30)
    detail = (await api.client.get(f"/executions/{run.id}", headers=api.auth("read"))).json()
    (child,) = detail["children"]
    assert child["step"] == "child-fx-child" and child["status"] == "succeeded"
    seen = (await api.client.get(f"/executions/{child['id']}", headers=api.auth("read"))).json()
    assert seen["parent"]["id"] == run.id and seen["parent"]["step"] == "child-fx-child"
