"""The HubSpot CRM connector against the HubSpot sandbox, over loopback HTTP.

Each test starts from the sandbox's seeded state (reset before it) and reads the outcome
from the sandbox's inspection endpoint, so "one deal per order" is asserted, not assumed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from connectors import BreakerState, CircuitOpenError, ConnectorConfigError, load_settings
from connectors.hubspot import HubSpotConnector, HubSpotSettings, RateLimitGate
from hub import Container, PermanentConnectorError, StepContext, TransientConnectorError
from hub.sandbox import SandboxControl, SandboxServer
from hub.sandbox.hubspot import SANDBOX_TOKEN, HubSpotSandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    server = SandboxServer([HubSpotSandbox(seed=1)]).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
async def control(sandbox: SandboxServer) -> AsyncIterator[SandboxControl]:
    async with SandboxControl(sandbox.control_url) as ctl:
        await ctl.clear_faults()
        await ctl.reset()
        yield ctl
        await ctl.clear_faults()


def make_crm(url: str, **overrides: Any) -> HubSpotConnector:
    values: dict[str, Any] = {"base_url": url, "access_token": SANDBOX_TOKEN,
                              "max_retries": 2, "retry_initial_s": 0, "retry_max_s": 0,
                              "rate_per_second": 1000}
    values.update(overrides)
    return HubSpotConnector(load_settings(HubSpotSettings, **values))


@pytest.fixture
async def crm(sandbox: SandboxServer, control: SandboxControl,
              ) -> AsyncIterator[HubSpotConnector]:
    async with make_crm(sandbox.url("hubspot")) as connector:
        yield connector


@pytest.fixture
async def raw(sandbox: SandboxServer, control: SandboxControl,
              ) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client with the token, to see the sandbox's answers as they are."""
    async with httpx.AsyncClient(base_url=sandbox.url("hubspot"), headers={
            "Authorization": f"Bearer {SANDBOX_TOKEN}"}) as client:
        yield client


def step(name: str = "s", execution_id: str = "ex-1") -> StepContext:
    return StepContext.make(execution_id=execution_id, transaction_id="tx-1", workflow="t",
                            step=name, attempt=1, container=Container())


# --- contacts ---------------------------------------------------------------------------


async def test_upsert_contact_creates_then_updates_the_same_contact_by_email(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    first = await crm.upsert_contact(step(), email="Linus@Example.com",
                                     properties={"firstname": "Linus"})
    second = await crm.upsert_contact(step("later"), email="linus@example.com",
                                      properties={"lastname": "Torvalds"})
    assert first == second
    state = await control.state("hubspot")
    contact = state["contacts"]["linus@example.com"]
    assert contact["id"] == first
    assert contact["properties"]["firstname"] == "Linus"
    assert contact["properties"]["lastname"] == "Torvalds"
    assert state["creates"]["contacts"] == {"linus@example.com": 1}
    assert state["requests"] == {"POST /crm/v3/objects/contacts/batch/upsert": 2}


async def test_upsert_of_a_seeded_contact_updates_it(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    state = await control.state("hubspot")
    seeded = state["contacts"]["ada.lovelace@example.com"]["id"]
    contact_id = await crm.upsert_contact(step(), email="ada.lovelace@example.com",
                                          properties={"phone": "+44 20 7946 0000"})
    assert contact_id == seeded
    state = await control.state("hubspot")
    assert state["creates"]["contacts"] == {}


async def test_sandbox_contact_create_on_an_existing_email_is_a_409_conflict(
        raw: httpx.AsyncClient) -> None:
    body = {"properties": {"email": "grace.hopper@example.com"}}
    answer = await raw.post("/crm/v3/objects/contacts", json=body)
    assert answer.status_code == 409
    error = answer.json()
    assert error["status"] == "error" and error["category"] == "CONFLICT"
    assert error["message"].startswith("Contact already exists. Existing ID: ")
    assert error["correlationId"]


async def test_sandbox_upsert_answers_in_hubspot_batch_shape(raw: httpx.AsyncClient) -> None:
    body = {"inputs": [{"idProperty": "email", "id": "new@example.com",
                        "properties": {"firstname": "New"}}]}
    answer = await raw.post("/crm/v3/objects/contacts/batch/upsert", json=body)
    assert answer.status_code == 200
    batch = answer.json()
    assert batch["status"] == "COMPLETE" and batch["startedAt"] and batch["completedAt"]
    [result] = batch["results"]
    assert result["new"] is True and result["archived"] is False
    assert result["properties"]["email"] == "new@example.com"
    assert result["properties"]["hs_object_id"] == result["id"]
    assert result["createdAt"] and result["updatedAt"]
    again = (await raw.post("/crm/v3/objects/contacts/batch/upsert", json=body)).json()
    assert again["results"][0]["new"] is False


async def test_sandbox_get_contact_by_email_returns_default_properties(
        raw: httpx.AsyncClient) -> None:
    answer = await raw.get("/crm/v3/objects/contacts/grace.hopper@example.com",
                           params={"idProperty": "email"})
    assert answer.status_code == 200
    assert set(answer.json()["properties"]) == {
        "createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"}


# --- deals ------------------------------------------------------------------------------


async def test_create_deal_sets_the_order_key_stage_amount_and_contact(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    contact_id = await crm.upsert_contact(step("contact"), email="buyer@example.com",
                                          properties={"firstname": "Bea"})
    deal_id = await crm.create_deal(step("deal"), order_id="ORD-1", name="Order ORD-1",
                                    amount=59.9, stage="contractsent", contact_id=contact_id)
    deal = (await control.state("hubspot"))["deals"]["ORD-1"]
    assert deal == {"id": deal_id, "name": "Order ORD-1", "stage": "contractsent",
                    "amount": "59.9", "pipeline": "default", "closed_lost_reason": None,
                    "contacts": [contact_id], "notes": []}


async def test_create_deal_rerun_of_the_same_step_has_one_effect(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    ctx = step("deal")
    contact_id = await crm.upsert_contact(ctx, email="again@example.com", properties={})
    first = await crm.create_deal(ctx, order_id="ORD-2", name="Order ORD-2", amount="10",
                                  stage="contractsent", contact_id=contact_id)
    second = await crm.create_deal(ctx, order_id="ORD-2", name="Order ORD-2", amount="10",
                                   stage="contractsent", contact_id=contact_id)
    assert first == second
    state = await control.state("hubspot")
    assert state["creates"]["deals"] == {"ORD-2": 1}
    assert state["conflicts"] == {"deals": 1}
    assert state["deals"]["ORD-2"]["contacts"] == [contact_id]


async def test_a_duplicate_order_from_another_execution_gets_the_existing_deal(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    first = await crm.create_deal(step("deal", "ex-1"), order_id="ORD-3", name="Order",
                                  amount=1, stage="contractsent")
    second = await crm.create_deal(step("deal", "ex-2"), order_id="ORD-3", name="Order",
                                   amount=1, stage="contractsent")
    assert first == second
    assert (await control.state("hubspot"))["creates"]["deals"] == {"ORD-3": 1}


async def test_sandbox_deal_create_with_a_taken_order_id_is_a_409_naming_the_existing_id(
        raw: httpx.AsyncClient) -> None:
    body = {"properties": {"dealname": "again", "hub_order_id": "ORD-1000"}}
    answer = await raw.post("/crm/v3/objects/deals", json=body)
    assert answer.status_code == 409
    error = answer.json()
    assert error["category"] == "CONFLICT"
    assert "already has that value" in error["message"]
    existing = (await raw.get("/crm/v3/objects/deals/ORD-1000",
                              params={"idProperty": "hub_order_id"})).json()
    assert error["message"].endswith(f"Existing ID: {existing['id']}")


async def test_update_deal_stage_moves_the_deal(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    deal_id = await crm.create_deal(step(), order_id="ORD-4", name="Order", amount=5,
                                    stage="contractsent")
    await crm.update_deal_stage(step("ship"), deal_id, "closedwon")
    assert (await control.state("hubspot"))["deals"]["ORD-4"]["stage"] == "closedwon"


async def test_mark_deal_lost_sets_the_reason_and_repeats_harmlessly(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    deal_id = await crm.create_deal(step(), order_id="ORD-5", name="Order", amount=5,
                                    stage="contractsent")
    ctx = StepContext.make(execution_id="ex-1", transaction_id="tx-1", workflow="t",
                           step="deal", attempt=1, container=Container(), compensating=True)
    await crm.mark_deal_lost(ctx, deal_id, reason="payment declined")
    await crm.mark_deal_lost(ctx, deal_id, reason="payment declined")
    deal = (await control.state("hubspot"))["deals"]["ORD-5"]
    assert deal["stage"] == "closedlost"
    assert deal["closed_lost_reason"] == "payment declined"


async def test_mark_deal_lost_of_a_deal_that_does_not_exist_is_done(
        crm: HubSpotConnector) -> None:
    await crm.mark_deal_lost(step(), "999999", reason="gone")


async def test_find_deal_returns_the_deal_with_its_contacts_or_none(
        crm: HubSpotConnector) -> None:
    assert await crm.find_deal(step(), "ORD-404") is None
    deal = await crm.find_deal(None, "ORD-1000")
    assert deal is not None
    assert deal["properties"]["hub_order_id"] == "ORD-1000"
    assert deal["properties"]["dealstage"] == "closedwon"
    assert len(deal["associations"]["contacts"]["results"]) == 1


async def test_an_unknown_stage_is_refused_naming_the_operation_and_hubspot_error(
        crm: HubSpotConnector) -> None:
    with pytest.raises(PermanentConnectorError) as info:
        await crm.create_deal(step(), order_id="ORD-6", name="Order", amount=5,
                              stage="shipped")
    message = str(info.value)
    assert info.value.retryable is False
    assert "create_deal" in message and "400" in message
    assert "VALIDATION_ERROR" in message and "INVALID_OPTION" in message


async def test_an_association_to_a_missing_contact_is_refused(
        crm: HubSpotConnector) -> None:
    with pytest.raises(PermanentConnectorError, match="create_deal.*404.*OBJECT_NOT_FOUND"):
        await crm.create_deal(step(), order_id="ORD-7", name="Order", amount=5,
                              stage="contractsent", contact_id="999999")


# --- notes ------------------------------------------------------------------------------


async def test_add_note_is_associated_with_deal_and_contact(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    contact_id = await crm.upsert_contact(step("c"), email="note@example.com", properties={})
    deal_id = await crm.create_deal(step("d"), order_id="ORD-8", name="Order", amount=5,
                                    stage="contractsent", contact_id=contact_id)
    note_id = await crm.add_note(step("refund_note"), body="Refunded 5.00 EUR",
                                 deal_id=deal_id, contact_id=contact_id)
    state = await control.state("hubspot")
    assert state["notes"] == [{"id": note_id, "body": "Refunded 5.00 EUR",
                               "key": "ex-1:refund_note", "deals": [deal_id],
                               "contacts": [contact_id]}]
    assert state["deals"]["ORD-8"]["notes"] == [note_id]


async def test_add_note_rerun_of_the_same_step_adds_one_note(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    ctx = step("refund_note")
    first = await crm.add_note(ctx, body="Refunded")
    second = await crm.add_note(ctx, body="Refunded")
    assert first == second
    state = await control.state("hubspot")
    assert len(state["notes"]) == 1
    assert state["creates"]["notes"] == {"ex-1:refund_note": 1}


# --- HubSpot's rules: properties, authentication, rate-limit headers --------------------


async def test_sandbox_refuses_an_unknown_property_with_a_validation_error(
        raw: httpx.AsyncClient) -> None:
    answer = await raw.post("/crm/v3/objects/deals", json={"properties": {"colour": "red"}})
    assert answer.status_code == 400
    error = answer.json()
    assert error["category"] == "VALIDATION_ERROR"
    assert error["message"].startswith("Property values were not valid: ")
    assert error["errors"] == [{"message": 'Property "colour" does not exist',
                                "code": "PROPERTY_DOESNT_EXIST",
                                "context": {"propertyName": ["colour"]}}]


async def test_connector_reports_an_unknown_contact_property_as_permanent(
        crm: HubSpotConnector) -> None:
    with pytest.raises(PermanentConnectorError,
                       match="upsert_contact.*400.*VALIDATION_ERROR.*PROPERTY_DOESNT_EXIST"):
        await crm.upsert_contact(step(), email="x@example.com", properties={"shoe": "42"})


async def test_sandbox_wrong_token_is_401_in_hubspot_format(sandbox: SandboxServer) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url("hubspot")) as client:
        answer = await client.get("/crm/v3/objects/contacts/1001",
                                  headers={"Authorization": "Bearer pat-na1-wrong"})
    assert answer.status_code == 401
    error = answer.json()
    assert error["status"] == "error" and error["category"] == "INVALID_AUTHENTICATION"
    assert error["message"].startswith("Authentication credentials not found.")


async def test_connector_with_a_wrong_token_fails_permanently_without_echoing_it(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    secret = "pat-na1-not-the-right-one"
    async with make_crm(sandbox.url("hubspot"), access_token=secret) as crm:
        with pytest.raises(PermanentConnectorError) as info:
            await crm.upsert_contact(step(), email="a@example.com", properties={})
    assert "401" in str(info.value) and "INVALID_AUTHENTICATION" in str(info.value)
    assert secret not in str(info.value)
    assert crm.breaker.state is BreakerState.CLOSED


async def test_every_answer_carries_hubspot_rate_limit_headers(
        raw: httpx.AsyncClient) -> None:
    first = await raw.get("/crm/v3/objects/contacts/1001")
    second = await raw.get("/crm/v3/objects/contacts/999999")
    assert second.status_code == 404 and second.json()["category"] == "OBJECT_NOT_FOUND"
    for answer in (first, second):
        assert answer.headers["X-HubSpot-RateLimit-Max"] == "190"
        assert answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert answer.headers["X-HubSpot-RateLimit-Daily"] == "500000"
    assert int(first.headers["X-HubSpot-RateLimit-Remaining"]) == 189
    assert int(second.headers["X-HubSpot-RateLimit-Remaining"]) == 188
    assert int(second.headers["X-HubSpot-RateLimit-Daily-Remaining"]) == 499998


# --- faults: 429 bursts, spent windows, outages -----------------------------------------


async def test_a_429_burst_is_absorbed_by_retries(
        crm: HubSpotConnector, control: SandboxControl) -> None:
    await control.set_faults("hubspot", burst_429=2, retry_after_s=0)
    contact_id = await crm.upsert_contact(step(), email="burst@example.com", properties={})
    state = await control.state("hubspot")
    assert state["contacts"]["burst@example.com"]["id"] == contact_id
    assert state["requests"] == {"POST /crm/v3/objects/contacts/batch/upsert": 3}


async def test_injected_429_is_hubspot_rate_limit_body_with_retry_after(
        raw: httpx.AsyncClient, control: SandboxControl) -> None:
    await control.set_faults("hubspot", burst_429=1, retry_after_s=2)
    answer = await raw.get("/crm/v3/objects/contacts/1001")
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
    body = answer.json()
    assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "SECONDLY"
    assert body["message"] == "You have reached your secondly limit."
    assert "X-HubSpot-RateLimit-Remaining" in answer.headers


async def test_an_outage_raises_transient_errors_and_opens_the_breaker(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    await control.set_faults("hubspot", error_rate=1.0)
    async with make_crm(sandbox.url("hubspot"), max_retries=1,
                        breaker_failure_threshold=4) as crm:
        for _ in range(2):
            with pytest.raises(TransientConnectorError) as info:
                await crm.upsert_contact(step(), email="down@example.com", properties={})
            assert info.value.retryable is True and "500" in str(info.value)
        assert crm.breaker.state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError):
            await crm.upsert_contact(step(), email="down@example.com", properties={})
    assert (await control.state("hubspot"))["requests"] == {
        "POST /crm/v3/objects/contacts/batch/upsert": 4}


@pytest.fixture
def tight() -> Iterator[SandboxServer]:
    """A portal with a small window: three requests per second."""
    server = SandboxServer([HubSpotSandbox(seed=1, rate_limit_max=3,
                                           rate_limit_interval_ms=1000)]).start_in_thread()
    yield server
    server.stop_thread()


async def test_a_spent_window_pauses_calls_instead_of_drawing_429s(
        tight: SandboxServer) -> None:
    async with make_crm(tight.url("hubspot")) as crm, \
            SandboxControl(tight.control_url) as control:
        started = time.monotonic()
        for n in range(4):
            await crm.upsert_contact(step(f"s{n}"), email=f"w{n}@example.com", properties={})
        elapsed = time.monotonic() - started
        state = await control.state("hubspot")
    assert state["rate_limited"] == 0
    assert elapsed >= 0.95  # the third answer said Remaining: 0; the fourth waited it out


async def test_a_429_without_retry_after_waits_the_window_interval(
        tight: SandboxServer) -> None:
    async with make_crm(tight.url("hubspot")) as crm, \
            SandboxControl(tight.control_url) as control, \
            httpx.AsyncClient(base_url=tight.url("hubspot"), headers={
                "Authorization": f"Bearer {SANDBOX_TOKEN}"}) as other_app:
        for _ in range(3):  # another app of the portal spends the shared window
            await other_app.get("/crm/v3/objects/contacts/1001")
        started = time.monotonic()
        await crm.upsert_contact(step(), email="late@example.com", properties={})
        elapsed = time.monotonic() - started
        state = await control.state("hubspot")
    assert state["rate_limited"] == 1  # one TEN_SECONDLY_ROLLING 429, then a paused retry
    assert "late@example.com" in state["contacts"]
    assert elapsed >= 0.95


async def _no_sleep(delay: float) -> None:
    return None


@pytest.mark.parametrize(("status", "headers", "body", "pause"), [
    (200, {"x-hubspot-ratelimit-remaining": "0",
           "x-hubspot-ratelimit-interval-milliseconds": "10000"}, None, 10.0),
    (200, {"x-hubspot-ratelimit-remaining": "5",
           "x-hubspot-ratelimit-secondly-remaining": "0"}, None, 1.0),
    (429, {}, {"policyName": "SECONDLY"}, 1.0),
    (429, {"x-hubspot-ratelimit-interval-milliseconds": "10000"},
     {"policyName": "TEN_SECONDLY_ROLLING"}, 10.0),
    (429, {}, {"policyName": "DAILY"}, 0.0),
    (429, {"retry-after": "3", "x-hubspot-ratelimit-remaining": "0"}, {}, 0.0),
    (200, {"x-hubspot-ratelimit-remaining": "7"}, None, 0.0),
], ids=["remaining-0", "secondly-remaining-0", "429-secondly", "429-ten-secondly",
        "429-daily-goes-to-the-engine", "retry-after-wins", "window-not-spent"])
def test_rate_limit_gate_reads_hubspot_headers_and_policies(
        status: int, headers: dict[str, str], body: Any, pause: float) -> None:
    gate = RateLimitGate("hubspot", sleep=_no_sleep, clock=lambda: 100.0)
    gate.observe(status, headers, body)
    assert max(0.0, gate.paused_until - 100.0) == pause


# --- settings and the container ---------------------------------------------------------


def test_missing_token_names_the_environment_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_HUBSPOT_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("HUB_HUBSPOT_ACCESS_TOKEN_FILE", raising=False)
    with pytest.raises(ConnectorConfigError, match="HUB_HUBSPOT_ACCESS_TOKEN_FILE"):
        load_settings(HubSpotSettings)


def test_bad_base_url_names_its_variable_and_hides_the_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_HUBSPOT_BASE_URL", "not a url")
    monkeypatch.setenv("HUB_HUBSPOT_ACCESS_TOKEN", SANDBOX_TOKEN)
    with pytest.raises(ConnectorConfigError) as info:
        load_settings(HubSpotSettings)
    assert "HUB_HUBSPOT_BASE_URL" in str(info.value)
    assert SANDBOX_TOKEN not in str(info.value)


def test_settings_default_to_hubspot_and_the_documented_names(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_HUBSPOT_BASE_URL", raising=False)
    monkeypatch.setenv("HUB_HUBSPOT_ACCESS_TOKEN", SANDBOX_TOKEN)
    settings = load_settings(HubSpotSettings)
    assert str(settings.base_url) == "https://api.hubapi.com/"
    assert (settings.deal_pipeline, settings.order_id_property) == ("default", "hub_order_id")
    assert SANDBOX_TOKEN not in repr(settings)


async def test_container_builds_the_crm_from_the_sandbox_environment(
        sandbox: SandboxServer, control: SandboxControl,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sandbox.connector_env().items():
        monkeypatch.setenv(name, value)
    container = Container()
    crm = container.resolve("crm")
    assert isinstance(crm, HubSpotConnector)
    try:
        assert (await crm.find_deal(None, "ORD-1000")) is not None
    finally:
        await container.aclose()
