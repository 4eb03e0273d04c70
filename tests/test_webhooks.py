"""Signed webhooks that cannot be replayed (Standard Webhooks), over real HTTP on loopback.

A delivery signs its id and time with the body: a captured one is refused when its time is
stale, and, inside the tolerance, because its id was already used. The id is recorded in the
signal's transaction, so even concurrent replays to different targets land once.
"""
# ruff: noqa: F811  (the api fixture, imported from test_api, is every test's argument)

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import standardwebhooks
from pydantic import BaseModel

from hub import HubError, StepContext, WorkflowResponse, create_step, create_workflow
from hub.api import ApiSettings, signed_headers
from hub.api.signatures import BadSignature, verify
from tests.test_api import (  # noqa: F401  (api is a fixture)
    SECRET,
    WHSEC,
    WHSEC_KEY,
    Api,
    api,
    start,
    status_of,
    until,
)

HOOK = "/webhooks/warehouse/executions/{ref}/steps/{step}/{outcome}"


class Order(BaseModel):
    id: str


async def _capture(inp: Order, ctx: StepContext) -> dict[str, str]:
    return {"captured": inp.id}


async def _refund(out: Any, ctx: StepContext) -> None:
    return None  # asks the payment provider; its answer comes back as a signed webhook


async def _ship(inp: Order, ctx: StepContext) -> dict[str, str]:
    return {"asked": inp.id}


@create_workflow("wh-refundable")
def wh_refundable(inp: Order) -> WorkflowResponse:
    create_step("wh-capture", _capture, _refund, compensate_async=True)(inp)
    shipped = create_step("wh-ship", _ship, is_async=True)(inp)
    return WorkflowResponse(shipped)


def _step(body: dict[str, Any], step: str) -> str:
    return str(next(s["state"] for s in body["steps"] if s["id"] == step))


def _path(ref: str, step: str = "ask-approval", outcome: str = "success") -> str:
    return HOOK.format(ref=ref, step=step, outcome=outcome)


async def _post(api: Api, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await api.client.post(path, content=body,
                                 headers={"Content-Type": "application/json", **headers})


async def _approval(api: Api, key: str) -> str:
    r = await start(api, "tw-approval", {"id": key}, key=key)
    assert r.json()["status"] == "waiting", r.text
    return str(r.json()["id"])


async def _webhook_audit(api: Api, execution_id: str) -> list[dict[str, Any]]:
    rows = await api.hub.store.audit_for_execution(uuid.UUID(execution_id))
    return [r for r in rows if r["action"] in ("complete_step", "fail_step")]


# -- the time window --------------------------------------------------------------------
@pytest.mark.parametrize(("shift", "problem"), [(-360, "s old"), (360, "s in the future")])
async def test_a_delivery_outside_the_tolerance_is_401(api: Api, shift: int,
                                                       problem: str) -> None:
    ref = await _approval(api, f"stale{shift}")
    body = json.dumps({"output": {"by": "mallory"}}).encode()
    headers = signed_headers(SECRET, "msg_stale", body, timestamp=int(time.time()) + shift)
    r = await _post(api, _path(ref), body, headers)
    assert r.status_code == 401 and problem in r.json()["detail"], r.text
    assert "within 300s" in r.json()["detail"]
    assert await status_of(api, ref, "waiting") is not None


def test_the_tolerance_is_configurable_and_bounded() -> None:
    keys = {"warehouse": [SECRET]}
    body = b"{}"
    headers = signed_headers(SECRET, "msg_1", body, timestamp=1_000)
    kwargs = {"msg_id": "msg_1", "timestamp": headers["webhook-timestamp"],
              "signature": headers["webhook-signature"]}
    assert verify(keys, "warehouse", body, tolerance_s=60, now=1_059, **kwargs).id == "msg_1"
    with pytest.raises(BadSignature, match="61s old"):
        verify(keys, "warehouse", body, tolerance_s=60, now=1_061, **kwargs)
    assert ApiSettings(webhook_tolerance_s=30).webhook_tolerance_s == 30
    with pytest.raises(ValueError, match="(?i)webhook_tolerance_s"):
        ApiSettings(webhook_tolerance_s=10 ** 6)


# -- replays ----------------------------------------------------------------------------
async def test_a_senders_retry_is_accepted_once_and_recorded_once(api: Api) -> None:
    ref = await _approval(api, "retry1")
    body = json.dumps({"output": {"by": "alice"}}).encode()
    headers = signed_headers(SECRET, "msg_retry1", body)
    first = await _post(api, _path(ref), body, headers)
    assert first.status_code == 202 and first.json()["duplicate"] is False, first.text
    again = await _post(api, _path(ref), body, headers)
    assert again.status_code == 202, "the sender's retry of an accepted delivery is a success"
    assert again.json()["duplicate"] is True
    await until(lambda: status_of(api, ref, "succeeded"))
    late = await _post(api, _path(ref), body, headers)  # after the step settled: still its own
    assert late.status_code == 202 and late.json()["duplicate"] is True
    audit = await _webhook_audit(api, ref)
    assert len(audit) == 1 and audit[0]["detail"]["webhook_id"] == "msg_retry1"


async def test_a_replay_to_another_execution_or_step_is_refused(api: Api) -> None:
    victim = await _approval(api, "replay-victim")
    target = await _approval(api, "replay-target")
    body = json.dumps({"output": {"by": "alice"}}).encode()
    captured = signed_headers(SECRET, "msg_captured", body)
    assert (await _post(api, _path(victim), body, captured)).status_code == 202
    elsewhere = [
        _path(target),  # another execution
        _path(victim, "tw-after-approval"),  # another step of the same one
        _path(victim, outcome="compensation/success"),  # another kind of outcome
    ]
    for path in elsewhere:
        r = await _post(api, path, body, captured)
        assert r.status_code == 401, (path, r.text)
        assert "msg_captured" in r.json()["detail"] and "already accepted" in r.json()["detail"]
    # the same id, re-signed by the source over another body, is not a retry either
    other = json.dumps({"output": {"by": "bob"}}).encode()
    r = await _post(api, _path(victim), other, signed_headers(SECRET, "msg_captured", other))
    assert r.status_code == 401
    await until(lambda: status_of(api, victim, "succeeded"))
    untouched = await status_of(api, target, "waiting")
    assert untouched is not None and _step(untouched, "ask-approval") == "waiting"
    assert await _webhook_audit(api, target) == []
    refused = [r for r in await api.hub.store.audit_for_execution(uuid.UUID(target))
               if r["action"] == "complete_step_refused"]
    assert len(refused) == 1 and "already accepted" in refused[0]["detail"]["refused"]


async def test_concurrent_replays_to_different_targets_land_once(api: Api) -> None:
    refs = [await _approval(api, f"race{i}") for i in range(6)]
    body = json.dumps({"output": {"by": "eve"}}).encode()
    captured = signed_headers(SECRET, "msg_race", body)
    answers = await asyncio.gather(*(_post(api, _path(ref), body, captured) for ref in refs))
    assert sorted(a.status_code for a in answers) == [202] + [401] * 5, [a.text for a in answers]
    winner = refs[[a.status_code for a in answers].index(202)]
    await until(lambda: status_of(api, winner, "succeeded"))
    for ref in refs:
        if ref != winner:
            assert await status_of(api, ref, "waiting") is not None


async def test_used_ids_are_purged_after_they_expire(api: Api) -> None:
    ref = await _approval(api, "purge1")
    body = json.dumps({"output": {"by": "alice"}}).encode()
    assert (await _post(api, _path(ref), body,
                        signed_headers(SECRET, "msg_purge", body))).status_code == 202
    store = api.hub.store
    assert await store.webhook_seen("warehouse", "msg_purge") is not None
    assert await store.purge_webhook_ids() == 0, "kept while its timestamp is accepted"
    await store.pool.execute(
        f"UPDATE {store.schema}.webhook_id SET expires_at = now() - interval '1 s'")
    assert await store.purge_webhook_ids() >= 1
    assert await store.webhook_seen("warehouse", "msg_purge") is None


# -- senders and secrets ----------------------------------------------------------------
async def test_the_standard_webhooks_library_signs_what_the_hub_accepts(api: Api) -> None:
    ref = await _approval(api, "lib1")
    body = json.dumps({"output": {"by": "library"}})
    now = time.time()
    sent_at = datetime.fromtimestamp(now, tz=UTC)
    signature = standardwebhooks.Webhook(WHSEC).sign("msg_lib1", sent_at, body)
    headers = {"webhook-id": "msg_lib1", "webhook-timestamp": str(int(now)),
               "webhook-signature": signature}
    r = await _post(api, _path(ref), body.encode(), headers)
    assert r.status_code == 202, r.text
    done = await until(lambda: status_of(api, ref, "succeeded"))
    assert done["result"] == {"approved_by": "library"}
    # and the library verifies what the hub's own sender (the demo's warehouse) signs
    mine = signed_headers(WHSEC_KEY, "msg_mine", body.encode())
    assert standardwebhooks.Webhook(WHSEC).verify(body, mine) == {"output": {"by": "library"}}


async def test_every_secret_of_a_rotation_is_accepted(api: Api) -> None:
    for i, key in enumerate((SECRET, WHSEC_KEY)):
        ref = await _approval(api, f"rot{i}")
        body = json.dumps({"output": {"by": f"key{i}"}}).encode()
        r = await _post(api, _path(ref), body, signed_headers(key, f"msg_rot{i}", body))
        assert r.status_code == 202, r.text
    # several signatures in one header (the sender mid-rotation): one valid is enough
    ref = await _approval(api, "rot-both")
    body = json.dumps({"output": {"by": "both"}}).encode()
    good = signed_headers(WHSEC_KEY, "msg_rotb", body)
    wrong = signed_headers(b"retired-key", "msg_rotb", body)["webhook-signature"]
    good["webhook-signature"] = f"v2,ignored {wrong} {good['webhook-signature']}"
    assert (await _post(api, _path(ref), body, good)).status_code == 202


def test_secrets_in_the_specs_form_and_plain_are_both_keys() -> None:
    assert ApiSettings(webhook_secrets={"psp": [WHSEC, "plain"]}).secrets() == {
        "psp": [WHSEC_KEY, b"plain"]}


def test_a_malformed_secret_in_the_file_is_a_hub_error(tmp_path: Any) -> None:
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"psp": "whsec_%%%"}))
    with pytest.raises(HubError, match="HUB_WEBHOOK_SECRETS_FILE.*'psp'"):
        ApiSettings(webhook_secrets_file=secrets_file).secrets()


# -- a forward outcome never settles a compensation ------------------------------------
async def test_an_async_compensation_is_completed_by_its_own_route(api: Api) -> None:
    r = await start(api, "wh-refundable", {"id": "o1"}, key="refund:o1")
    ref = str(r.json()["id"])
    assert r.json()["status"] == "waiting"
    body = json.dumps({"error": "parcel lost"}).encode()
    ship_failed = await _post(api, _path(ref, "wh-ship", "failure"), body,
                              signed_headers(SECRET, "msg_o1_lost", body))
    assert ship_failed.status_code == 202, ship_failed.text
    waiting = await until(lambda: _comp_waiting(api, ref))
    assert _step(waiting, "wh-capture") == "waiting_to_compensate"
    forward = json.dumps({"output": {"captured": "again"}}).encode()
    wrong = await _post(api, _path(ref, "wh-capture"), forward,
                        signed_headers(SECRET, "msg_o1_fwd", forward))
    assert wrong.status_code == 409, "a forward success must not settle the refund"
    assert "waiting_to_compensate" in wrong.json()["detail"]
    keyed = await api.client.post(f"/executions/{ref}/steps/wh-capture/success",
                                  json={"output": None}, headers=api.auth("run"))
    assert keyed.status_code == 409
    assert (await status_of(api, ref, "waiting")) is not None
    refunded = b"{}"
    done = await _post(api, _path(ref, "wh-capture", "compensation/success"), refunded,
                       signed_headers(SECRET, "msg_o1_refund", refunded))
    assert done.status_code == 202 and done.json()["signal"] == "compensation_success"
    end = await until(lambda: status_of(api, ref, "compensated"))
    assert _step(end, "wh-capture") == "reverted"


async def test_a_failed_async_compensation_ends_for_a_human(api: Api) -> None:
    r = await start(api, "wh-refundable", {"id": "o2"}, key="refund:o2")
    ref = str(r.json()["id"])
    fail = await api.client.post(f"/executions/{ref}/steps/wh-ship/failure",
                                 json={"error": "cancelled"}, headers=api.auth("run"))
    assert fail.status_code == 202
    await until(lambda: _comp_waiting(api, ref))
    refused = await api.client.post(f"/executions/{ref}/steps/wh-capture/compensation/failure",
                                    json={"error": "card expired"}, headers=api.auth("run"))
    assert refused.status_code == 202 and refused.json()["signal"] == "compensation_failure"
    end = await until(lambda: status_of(api, ref, "compensation_failed"))
    assert "card expired" in json.dumps(end)


async def _comp_waiting(api: Api, ref: str) -> dict[str, Any] | None:
    body = (await api.client.get(f"/executions/{ref}", headers=api.auth("read"))).json()
    return body if _step(body, "wh-capture") == "waiting_to_compensate" else None


async def test_a_late_outcome_for_an_ended_execution_is_refused_and_audited(api: Api) -> None:
    ref = await _approval(api, "late1")
    cancelled = await api.client.post(f"/executions/{ref}/cancel", params={"wait": True},
                                      json={"reason": "customer changed their mind"},
                                      headers=api.auth("operate"))
    assert cancelled.json()["status"] == "cancelled"
    body = json.dumps({"output": {"by": "warehouse"}}).encode()
    late = await _post(api, _path(ref), body, signed_headers(SECRET, "msg_late1", body))
    assert late.status_code == 409, late.text
    assert "already ended cancelled" in late.json()["detail"]
    keyed = await api.client.post(f"/executions/{ref}/steps/ask-approval/failure",
                                  json={"error": "lost"}, headers=api.auth("run"))
    assert keyed.status_code == 409
    audit = await api.hub.store.audit_for_execution(uuid.UUID(ref))
    refused = [(r["action"], r["actor_name"], r["detail"].get("webhook_id")) for r in audit
               if r["action"].endswith("_refused")]
    assert refused == [("complete_step_refused", "webhook:warehouse", "msg_late1"),
                       ("fail_step_refused", "test-run", None)]
    assert await status_of(api, ref, "cancelled") is not None, "the finished run stays shut"
    # the refused delivery's id was not used up: nothing of it was recorded
    assert await api.hub.store.webhook_seen("warehouse", "msg_late1") is None
