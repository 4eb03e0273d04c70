"""The Contentful connector against the Contentful sandbox, over real HTTP on loopback.

Effects are checked through the sandbox's ``/_sandbox/state`` (versions, publish state and
per-entry counts of writes, publishes and conflicts); the Contentful rules themselves
(versions, error bodies, rate-limit headers) are checked with a plain HTTP client.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from connectors import BreakerState, CircuitOpenError, ConnectorConfigError, load_settings
from connectors.contentful import ContentfulConnector, ContentfulSettings, entry_id_for
from hub import Container, PermanentConnectorError, StepContext, TransientConnectorError
from hub.sandbox import SandboxControl, SandboxServer
from hub.sandbox.contentful import ACCESS_TOKEN, SPACE_ID, ContentfulSandbox

ENTRIES = f"/spaces/{SPACE_ID}/environments/master/entries"
AUTH = {"Authorization": f"Bearer {ACCESS_TOKEN}"}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    server = SandboxServer([ContentfulSandbox(seed=1)]).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
async def control(sandbox: SandboxServer) -> AsyncIterator[SandboxControl]:
    async with SandboxControl(sandbox.control_url) as control:
        await control.clear_faults()
        await control.reset()
        yield control
        await control.clear_faults()


@pytest.fixture
async def raw(sandbox: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    """Another CMA client: a person editing in the web app, or a test checking the rules."""
    async with httpx.AsyncClient(base_url=sandbox.url("contentful"), headers=AUTH) as client:
        yield client


def settings(sandbox: SandboxServer, **overrides: Any) -> ContentfulSettings:
    values: dict[str, Any] = {
        "base_url": sandbox.url("contentful"), "access_token": ACCESS_TOKEN,
        "space_id": SPACE_ID, "max_retries": 2, "retry_initial_s": 0, "retry_max_s": 0,
        "rate_per_second": 1000}
    values.update(overrides)
    return load_settings(ContentfulSettings, **values)


@pytest.fixture
async def cms(sandbox: SandboxServer, control: SandboxControl,
              ) -> AsyncIterator[ContentfulConnector]:
    async with ContentfulConnector(settings(sandbox)) as connector:
        yield connector


def step_ctx(step: str = "sync_product") -> StepContext:
    return StepContext.make(execution_id="ex-1", transaction_id="tx-1", workflow="t",
                            step=step, attempt=1, container=Container())


async def entry_state(control: SandboxControl, entry_id: str) -> dict[str, Any]:
    entry: dict[str, Any] = (await control.state("contentful"))["entries"][entry_id]
    return entry


NEW = {"name": "Trekking Poles", "description": "Carbon, foldable.", "price": 79.5,
       "stock": 30}


# --- operations ---------------------------------------------------------------------------

async def test_upsert_creates_and_publishes_a_new_product(
        cms: ContentfulConnector, control: SandboxControl) -> None:
    result = await cms.upsert_product(step_ctx(), sku="SKU-100", fields=NEW)

    assert result == {"id": "product-SKU-100", "version": 2, "published_version": 1}
    entry = await entry_state(control, "product-SKU-100")
    assert entry["status"] == "published" and entry["contentType"] == "product"
    assert entry["fields"] == {"name": {"en-US": "Trekking Poles"},
                               "description": {"en-US": "Carbon, foldable."},
                               "price": {"en-US": 79.5}, "stock": {"en-US": 30},
                               "sku": {"en-US": "SKU-100"}}
    assert (entry["writes"], entry["publishes"]) == (1, 1)


async def test_rerunning_the_same_upsert_has_one_effect(
        cms: ContentfulConnector, control: SandboxControl) -> None:
    ctx = step_ctx()
    first = await cms.upsert_product(ctx, sku="SKU-100", fields=NEW)
    again = await cms.upsert_product(ctx, sku="SKU-100", fields=NEW)

    assert again == first
    entry = await entry_state(control, "product-SKU-100")
    assert (entry["version"], entry["writes"], entry["publishes"]) == (2, 1, 1)


async def test_upsert_updates_changed_fields_and_keeps_the_others(
        cms: ContentfulConnector, control: SandboxControl) -> None:
    result = await cms.upsert_product(step_ctx(), sku="SKU-001", fields={"stock": 7})

    # seeded at version 2 (published 1): the update makes 3, publishing it makes 4
    assert result == {"id": "product-SKU-001", "version": 4, "published_version": 3}
    entry = await entry_state(control, "product-SKU-001")
    assert entry["fields"]["stock"] == {"en-US": 7}
    assert entry["fields"]["name"] == {"en-US": "Trail Running Shoe"}
    assert (entry["writes"], entry["publishes"], entry["status"]) == (1, 1, "published")


async def test_unchanged_fields_write_nothing(
        cms: ContentfulConnector, control: SandboxControl) -> None:
    result = await cms.upsert_product(
        step_ctx(), sku="SKU-001", fields={"name": "Trail Running Shoe", "price": 129})

    assert result == {"id": "product-SKU-001", "version": 2, "published_version": 1}
    entry = await entry_state(control, "product-SKU-001")
    assert (entry["writes"], entry["publishes"]) == (0, 0)


async def test_a_rerun_after_a_crash_before_publishing_only_publishes(
        cms: ContentfulConnector, control: SandboxControl, raw: httpx.AsyncClient) -> None:
    fields = {"name": {"en-US": "Trekking Poles"}, "sku": {"en-US": "SKU-100"}}
    created = await raw.put(f"{ENTRIES}/product-SKU-100", json={"fields": fields},
                            headers={"X-Contentful-Content-Type": "product"})
    assert created.status_code == 201  # the first attempt wrote, then its worker died

    await cms.upsert_product(step_ctx(), sku="SKU-100", fields={"name": "Trekking Poles"})

    entry = await entry_state(control, "product-SKU-100")
    assert (entry["writes"], entry["publishes"], entry["status"]) == (1, 1, "published")


async def test_get_product_shows_plain_fields_and_versions(cms: ContentfulConnector) -> None:
    product = await cms.get_product(step_ctx(), "SKU-003")

    assert product == {
        "id": "product-SKU-003", "version": 2, "published_version": 1, "status": "published",
        "fields": {"name": "Waterproof Shell Jacket",
                   "description": "Three-layer shell, taped seams.", "price": 249.0,
                   "stock": 12, "sku": "SKU-003"}}
    assert await cms.get_product(step_ctx(), "SKU-OOS") is None


async def test_list_products_pages_through_every_entry(
        cms: ContentfulConnector, control: SandboxControl, raw: httpx.AsyncClient) -> None:
    skus = [f"BULK-{n:03d}" for n in range(120)]
    answers = await asyncio.gather(*(raw.put(
        f"{ENTRIES}/{entry_id_for(sku)}",
        json={"fields": {"name": {"en-US": sku}, "sku": {"en-US": sku}}},
        headers={"X-Contentful-Content-Type": "product"}) for sku in skus))
    assert {a.status_code for a in answers} == {201}

    products = await cms.list_products(step_ctx())

    assert len(products) == 126
    assert {p["fields"]["sku"] for p in products} >= {"SKU-001", "SKU-006", "BULK-119"}
    assert next(p for p in products if p["id"] == "product-SKU-005")["fields"]["stock"] == 0
    requests = (await control.state("contentful"))["requests"]
    assert requests[f"GET {ENTRIES}"] == 2  # 100 + 26


async def test_unpublish_is_idempotent_and_a_missing_entry_is_fine(
        cms: ContentfulConnector, control: SandboxControl) -> None:
    ctx = step_ctx("sync_product")
    await cms.unpublish_product(ctx, "SKU-002")
    await cms.unpublish_product(ctx, "SKU-002")
    await cms.unpublish_product(ctx, "SKU-UNKNOWN")

    entry = await entry_state(control, "product-SKU-002")
    assert (entry["status"], entry["publishedVersion"]) == ("draft", None)
    assert (entry["version"], entry["unpublishes"]) == (3, 1)


# --- concurrent editors -------------------------------------------------------------------

class ConcurrentEditor(httpx.AsyncBaseTransport):
    """Passes the connector's requests through; after each one matching ``after`` (up to
    ``times``), a second CMA client saves the entry, so the connector's next write carries
    a version that has just gone stale."""

    def __init__(self, editor: httpx.AsyncClient, *, after: str, times: int) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._editor = editor
        self._after = re.compile(after)
        self.remaining = times

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        shape = f"{request.method} {request.url.path}"
        if self.remaining > 0 and response.status_code < 300 and self._after.fullmatch(shape):
            self.remaining -= 1
            await self._edit(request.url.path.removesuffix("/published"))
        return response

    async def _edit(self, path: str) -> None:
        entry = (await self._editor.get(path)).json()
        fields = {**entry["fields"], "description": {"en-US": "Edited by a person."}}
        saved = await self._editor.put(path, json={"fields": fields}, headers={
            "X-Contentful-Version": str(entry["sys"]["version"])})
        assert saved.status_code == 200

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.parametrize("after", [r"GET .*/entries/[^/]+", r"PUT .*/entries/[^/]+"],
                         ids=["edit-before-update", "edit-before-publish"])
async def test_a_concurrent_edit_is_reread_and_the_write_succeeds(
        sandbox: SandboxServer, control: SandboxControl, raw: httpx.AsyncClient,
        after: str) -> None:
    editor = ConcurrentEditor(raw, after=after, times=1)
    async with ContentfulConnector(settings(sandbox), transport=editor) as cms:
        result = await cms.upsert_product(step_ctx(), sku="SKU-001", fields={"stock": 5})

    entry = await entry_state(control, "product-SKU-001")
    assert entry["conflicts"] == 1
    assert entry["fields"]["stock"] == {"en-US": 5}
    assert entry["fields"]["description"] == {"en-US": "Edited by a person."}
    assert entry["status"] == "published"
    assert result["version"] == entry["version"]


async def test_an_entry_that_keeps_changing_is_left_to_the_engine_to_retry(
        sandbox: SandboxServer, control: SandboxControl, raw: httpx.AsyncClient) -> None:
    editor = ConcurrentEditor(raw, after=r"GET .*/entries/[^/]+", times=100)
    async with ContentfulConnector(settings(sandbox, max_version_conflicts=2),
                                   transport=editor) as cms:
        with pytest.raises(TransientConnectorError, match="VersionMismatch on 3 attempts"):
            await cms.upsert_product(step_ctx(), sku="SKU-001", fields={"stock": 5})

    entry = await entry_state(control, "product-SKU-001")
    assert entry["conflicts"] == 3 and entry["fields"]["stock"] == {"en-US": 42}


# --- Contentful's rules, as the sandbox answers them --------------------------------------

async def test_creating_an_existing_id_or_writing_a_stale_version_is_a_version_mismatch(
        control: SandboxControl, raw: httpx.AsyncClient) -> None:
    body = {"fields": {"name": {"en-US": "x"}, "sku": {"en-US": "SKU-001"}}}
    create = await raw.put(f"{ENTRIES}/product-SKU-001", json=body,
                           headers={"X-Contentful-Content-Type": "product"})
    stale = await raw.put(f"{ENTRIES}/product-SKU-001", json=body,
                          headers={"X-Contentful-Version": "1"})
    publish = await raw.put(f"{ENTRIES}/product-SKU-001/published",
                            headers={"X-Contentful-Version": "1"})

    for answer in (create, stale, publish):
        assert answer.status_code == 409
        error = answer.json()
        assert error["sys"] == {"type": "Error", "id": "VersionMismatch"}
        assert error["message"] and error["requestId"]
    assert (await entry_state(control, "product-SKU-001"))["version"] == 2


async def test_versions_count_every_save_and_publish(raw: httpx.AsyncClient) -> None:
    body = {"fields": {"name": {"en-US": "New"}, "sku": {"en-US": "SKU-200"}}}
    path = f"{ENTRIES}/product-SKU-200"
    created = await raw.put(path, json=body, headers={"X-Contentful-Content-Type": "product"})
    assert created.status_code == 201 and created.json()["sys"]["version"] == 1
    updated = await raw.put(path, json=body, headers={"X-Contentful-Version": "1"})
    assert updated.json()["sys"]["version"] == 2
    published = (await raw.put(f"{path}/published",
                               headers={"X-Contentful-Version": "2"})).json()["sys"]
    assert (published["version"], published["publishedVersion"]) == (3, 2)
    assert published["publishedCounter"] == 1
    assert published["contentType"] == {
        "sys": {"type": "Link", "linkType": "ContentType", "id": "product"}}
    unpublished = (await raw.delete(f"{path}/published")).json()["sys"]
    assert unpublished["version"] == 4 and "publishedVersion" not in unpublished
    not_published = await raw.delete(f"{path}/published")
    assert not_published.status_code == 400
    assert not_published.json()["sys"]["id"] == "BadRequest"


async def test_a_missing_entry_is_not_found_in_contentfuls_format(
        raw: httpx.AsyncClient) -> None:
    answer = await raw.get(f"{ENTRIES}/product-nope")

    assert answer.status_code == 404
    error = answer.json()
    assert error["sys"] == {"type": "Error", "id": "NotFound"}
    assert error["message"] == "The resource could not be found."
    assert error["details"] == {"type": "Entry", "id": "product-nope",
                                "environment": "master", "space": SPACE_ID}
    assert error["requestId"] == answer.headers["x-contentful-request-id"]


async def test_every_answer_carries_the_rate_limit_headers(raw: httpx.AsyncClient) -> None:
    answer = await raw.get(f"{ENTRIES}/product-SKU-001")

    assert answer.headers["x-contentful-ratelimit-second-limit"] == "7"
    assert int(answer.headers["x-contentful-ratelimit-second-remaining"]) < 7


async def test_a_bad_token_is_refused_with_access_token_invalid(
        sandbox: SandboxServer, control: SandboxControl, raw: httpx.AsyncClient) -> None:
    answer = await raw.get(f"{ENTRIES}/product-SKU-001",
                           headers={"Authorization": "Bearer wrong"})
    assert answer.status_code == 401
    assert answer.json()["sys"] == {"type": "Error", "id": "AccessTokenInvalid"}

    async with ContentfulConnector(settings(sandbox, access_token="CFPAT-wrong")) as cms:
        with pytest.raises(PermanentConnectorError) as info:
            await cms.upsert_product(step_ctx(), sku="SKU-001", fields={"stock": 1})
    message = str(info.value)
    assert "401 AccessTokenInvalid" in message and "HUB_CONTENTFUL_ACCESS_TOKEN" in message
    assert "CFPAT-wrong" not in message


async def test_an_unknown_field_is_refused_as_invalid_entry(
        cms: ContentfulConnector, control: SandboxControl) -> None:
    with pytest.raises(PermanentConnectorError) as info:
        await cms.upsert_product(step_ctx(), sku="SKU-001", fields={"colour": "red"})

    message = str(info.value)
    assert "update product 'product-SKU-001'" in message
    assert "422 InvalidEntry" in message and "fields.colour" in message
    assert (await entry_state(control, "product-SKU-001"))["writes"] == 0


async def test_a_wrong_space_names_the_setting(sandbox: SandboxServer,
                                               control: SandboxControl) -> None:
    async with ContentfulConnector(settings(sandbox, space_id="otherspace")) as cms:
        with pytest.raises(PermanentConnectorError, match="HUB_CONTENTFUL_SPACE_ID"):
            await cms.get_product(step_ctx(), "SKU-001")


# --- faults -------------------------------------------------------------------------------

async def test_a_429_burst_is_absorbed_by_retries(
        cms: ContentfulConnector, control: SandboxControl, raw: httpx.AsyncClient) -> None:
    await control.set_faults("contentful", burst_429=1, retry_after_s=2)
    limited = await raw.get(f"{ENTRIES}/product-SKU-001")
    assert limited.status_code == 429
    assert limited.json()["sys"]["id"] == "RateLimitExceeded"
    assert limited.headers["x-contentful-ratelimit-reset"] == "2"

    await control.set_faults("contentful", burst_429=2, retry_after_s=0)
    await cms.upsert_product(step_ctx(), sku="SKU-100", fields=NEW)

    entry = await entry_state(control, "product-SKU-100")
    assert (entry["writes"], entry["publishes"]) == (1, 1)
    assert cms.rate_limit.second_limit == 7


async def test_an_outage_is_transient_and_opens_the_breaker(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    await control.set_faults("contentful", error_rate=1.0)
    async with ContentfulConnector(settings(sandbox, max_retries=1,
                                            breaker_failure_threshold=2)) as cms:
        with pytest.raises(TransientConnectorError, match="500"):
            await cms.get_product(step_ctx(), "SKU-001")
        assert cms.breaker.state is BreakerState.OPEN
        seen = sum((await control.state("contentful"))["requests"].values())

        with pytest.raises(CircuitOpenError):
            await cms.get_product(step_ctx(), "SKU-001")
    assert sum((await control.state("contentful"))["requests"].values()) == seen


# --- ids, settings and the container ------------------------------------------------------

def test_entry_ids_are_readable_valid_and_one_to_one() -> None:
    assert entry_id_for("SKU-001") == "product-SKU-001"
    assert entry_id_for("A/B") != entry_id_for("A B") != entry_id_for("A_B")
    long_sku = "X" * 80
    for sku in ("A/B", "kaffee größe L", long_sku, "a_2f"):
        assert re.fullmatch(r"[a-zA-Z0-9._-]{1,64}", entry_id_for(sku))
    assert entry_id_for(long_sku) != entry_id_for(long_sku + "Y")
    with pytest.raises(PermanentConnectorError):
        entry_id_for("")


def test_missing_settings_name_the_environment_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SPACE_ID", "ACCESS_TOKEN", "ACCESS_TOKEN_FILE", "BASE_URL"):
        monkeypatch.delenv(f"HUB_CONTENTFUL_{var}", raising=False)
    with pytest.raises(ConnectorConfigError) as info:
        load_settings(ContentfulSettings)
    assert "HUB_CONTENTFUL_SPACE_ID" in str(info.value)

    monkeypatch.setenv("HUB_CONTENTFUL_SPACE_ID", "hubsandbox")
    with pytest.raises(ConnectorConfigError, match="HUB_CONTENTFUL_ACCESS_TOKEN"):
        load_settings(ContentfulSettings)


def test_a_bad_space_id_names_the_variable_and_hides_the_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_CONTENTFUL_SPACE_ID", "not a space!")
    monkeypatch.setenv("HUB_CONTENTFUL_ACCESS_TOKEN", "CFPAT-secret-token")
    with pytest.raises(ConnectorConfigError) as info:
        load_settings(ContentfulSettings)
    assert "HUB_CONTENTFUL_SPACE_ID" in str(info.value)
    assert "CFPAT-secret-token" not in str(info.value)


async def test_the_container_builds_the_cms_connector_from_the_sandbox_env(
        sandbox: SandboxServer, control: SandboxControl,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in sandbox.connector_env().items():
        monkeypatch.setenv(key, value)
    container = Container()
    cms = container.resolve("cms")
    try:
        assert isinstance(cms, ContentfulConnector)
        assert cms.settings.base_url.host == "127.0.0.1"
        assert (await cms.get_product(step_ctx(), "SKU-004")) is not None
    finally:
        await container.aclose()
