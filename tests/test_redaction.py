"""One redaction policy for the JSON API, the console, the CLI and the logs."""
# ruff: noqa: F811  (the api fixture, imported from test_api, is an argument)

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from contextlib import redirect_stderr
from typing import Any

import structlog

from hub import Hub
from hub.api import create_key
from hub.logging import configure_logging
from hub.redaction import Redaction
from hub.settings import HubSettings
from tests.conftest import ROOT, worker_env
from tests.test_api import Api, api, start  # noqa: F401
from tests.workflows.async_flows import tw_secretive

SECRETS = ("hunter2", "4242424242424242", "tok-live-123", "sk_live_abc")
SIGNUP = {"email": "ada@example.com", "password": "hunter2",
          "payment": {"card_number": "4242424242424242", "brand": "visa",
                      "provider": {"stripeApiKey": "sk_live_abc"}}}


def test_fields_match_by_their_words_at_any_depth() -> None:
    policy = Redaction()
    value = {"customer": {"email": "a@b.c", "Password": "x", "wallet": [{"apiKey": "k"}]},
             "Authorization": "Bearer t", "client_secret": "s", "X-Api-Key": "k",
             "refresh_tokens": ["t"], "card_brand": "visa", "discarded": 2, "sku": "S-1",
             "idempotency_key": "e1:step", "webhooksecret": "w", "amount": 5}
    assert policy.value(value) == {
        "customer": {"email": "a@b.c", "Password": "***", "wallet": [{"apiKey": "***"}]},
        "Authorization": "***", "client_secret": "***", "X-Api-Key": "***",
        "refresh_tokens": "***", "card_brand": "***", "discarded": 2, "sku": "S-1",
        "idempotency_key": "e1:step", "webhooksecret": "***", "amount": 5}
    deep: Any = "leaf"
    for _ in range(500):  # hostile nesting: bounded, never a RecursionError
        deep = {"a": deep}
    assert json.dumps(policy.value(deep)).count("***") == 1


def test_the_fields_are_configurable() -> None:
    settings = HubSettings(redact_fields="email,tax_id")  # type: ignore[arg-type]
    policy = Redaction(settings.redact_fields)
    assert policy.value({"email": "a@b.c", "taxId": "DE1", "password": "p"}) == {
        "email": "***", "taxId": "***", "password": "p"}


async def test_the_json_api_redacts_unless_the_key_has_the_raw_scope(api: Api) -> None:
    r = await start(api, "tw-secretive", SIGNUP)
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    ref = r.json()["id"]
    shown = await api.client.get(f"/executions/{ref}", headers=api.auth("read"))
    body = shown.json()
    assert not any(s in shown.text for s in SECRETS), shown.text
    assert body["input"]["password"] == "***"
    assert body["input"]["payment"]["card_number"] == "***"
    assert body["input"]["payment"]["brand"] == "visa"
    assert body["result"]["accessToken"] == "***" and body["result"]["user"] == SIGNUP["email"]
    raw_key = (await create_key(api.hub.store, "forensics", ["read", "raw"])).token
    raw = await api.client.get(f"/executions/{ref}",
                               headers={"Authorization": f"Bearer {raw_key}"})
    assert raw.json()["input"] == SIGNUP and raw.json()["result"]["accessToken"] == "tok-live-123"
    # the console's page is redacted like the API, for the same read key
    login = await api.client.get("/ui/login")
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', login.text)
    assert nonce is not None
    signed_in = await api.client.post("/ui/login", data={
        "api_key": api.keys["read"], "login_nonce": nonce.group(1),
        "next": f"/ui/executions/{ref}"})
    assert signed_in.status_code == 303
    page = await api.client.get(signed_in.headers["location"])
    assert page.status_code == 200 and SIGNUP["email"] in page.text and "***" in page.text
    assert not any(s in page.text for s in SECRETS)


async def test_the_cli_redacts_unless_asked_for_raw(hub: Hub, dsn: str, schema: str) -> None:
    run = await tw_secretive(hub).run(input=SIGNUP, transaction_id="secretive:1")
    assert run.status == "succeeded"
    env = worker_env(dsn, schema, "tests.workflows.async_flows")

    def show(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub", "executions", "show",
                               "secretive:1", *flags], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    shown = await asyncio.to_thread(show)
    assert shown.returncode == 0, shown.stderr
    assert not any(s in shown.stdout for s in SECRETS), shown.stdout
    assert json.loads(shown.stdout)["input"]["password"] == "***"
    raw = await asyncio.to_thread(show, "--raw")
    assert json.loads(raw.stdout)["input"] == SIGNUP


def test_log_lines_never_carry_a_secret_field() -> None:
    out = io.StringIO()
    with redirect_stderr(out):
        configure_logging("info", json_output=True)
        try:
            structlog.get_logger("t").info("connector_call", api_key="sk_live_abc",
                                           request={"headers": {"Authorization": "hunter2"}},
                                           order_id="o-1")
        finally:
            structlog.reset_defaults()
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["api_key"] == "***" and line["request"]["headers"]["Authorization"] == "***"
    assert line["order_id"] == "o-1" and "sk_live_abc" not in out.getvalue()
