"""One settings model: every variable validated together, documented, and shown masked."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

import pytest

from hub.settings import Settings, SettingsError, load_settings, mask_dsn
from tests.conftest import ROOT


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> pytest.MonkeyPatch:
    """No HUB_* variable and no .env from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    return monkeypatch


def test_every_variable_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(HUB_[A-Z0-9_]+)` \|", readme, re.MULTILINE))
    read = {v.name for v in Settings().variables()}
    assert read - documented == set(), "variables the hub reads that the README omits"
    assert documented - read == set(), "variables the README lists that the hub ignores"


def test_every_bad_variable_of_every_section_is_named_at_once(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HUB_LEASE_SECONDS", "soon")
    clean_env.setenv("HUB_SCHEMA", "orders; DROP TABLE x")
    clean_env.setenv("HUB_KAFKA_SECURITY_PROTOCOL", "TLS")
    clean_env.setenv("HUB_API_MAX_BODY_BYTES", "12")
    clean_env.setenv("HUB_WEBHOOK_SECRETS", "warehouse=hunter2")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    names = [p.split(":", 1)[0] for p in caught.value.problems]
    assert names == ["HUB_SCHEMA", "HUB_LEASE_SECONDS", "HUB_KAFKA_SECURITY_PROTOCOL",
                     "HUB_WEBHOOK_SECRETS", "HUB_API_MAX_BODY_BYTES"]
    assert "hunter2" not in str(caught.value)


def test_a_bad_secret_is_named_but_never_shown(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HUB_WEBHOOK_SECRETS", '{"warehouse": 42, "crm": ["hunter2"]}')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "HUB_WEBHOOK_SECRETS" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "42" not in str(caught.value)


@pytest.mark.parametrize(("given", "problem"), [
    ("whsec_!!!not-base64!!!", "'psp' starts with whsec_ but the rest is not base64"),
    ("whsec_" + base64.b64encode(b"tiny-key").decode(), "'psp' holds 8 bytes of key"),
])
def test_a_malformed_whsec_secret_names_its_source_not_its_value(
        clean_env: pytest.MonkeyPatch, given: str, problem: str) -> None:
    clean_env.setenv("HUB_WEBHOOK_SECRETS", json.dumps({"psp": ["whsec_" + "A" * 32, given]}))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert problem in str(caught.value)
    assert given[6:] not in str(caught.value)


def test_sections_are_what_the_components_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HUB_LEASE_SECONDS", "4.5")
    clean_env.setenv("HUB_KAFKA_TOPIC_PREFIX", "staging.")
    clean_env.setenv("HUB_API_MAX_WAIT_SECONDS", "5")
    settings = load_settings(engine={"modules": ["tests.workflows.crash_flows"]})
    assert settings.engine.lease_seconds == 4.5
    assert settings.engine.modules == ["tests.workflows.crash_flows"]
    assert settings.kafka.topic_prefix == "staging."
    assert settings.api.max_wait_seconds == 5


def test_hub_settings_shows_the_values_in_effect_with_secrets_masked(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({"PYTHONPATH": str(ROOT), "HUB_KAFKA_SASL_PASSWORD": "hunter2",
                "HUB_WEBHOOK_SECRETS": '{"warehouse": "s3cret"}', "HUB_POOL_MAX": "4"})
    out = subprocess.run([sys.executable, "-m", "hub", "settings", "--json"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)  # type: ignore[arg-type]
    assert out.returncode == 0, out.stderr
    shown = {v["name"]: v["value"] for v in json.loads(out.stdout)}
    assert shown["HUB_POOL_MAX"] == 4 and shown["HUB_LEASE_SECONDS"] == 15.0
    assert shown["HUB_KAFKA_SASL_PASSWORD"] == "***"
    assert shown["HUB_WEBHOOK_SECRETS"] == {"warehouse": "***"}
    assert "hunter2" not in out.stdout and "s3cret" not in out.stdout
    bad = subprocess.run([sys.executable, "-m", "hub", "settings"],
                         env={**env, "HUB_POOL_MAX": "many"}, cwd=tmp_path,  # type: ignore[arg-type]
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "HUB_POOL_MAX: Input should be a valid integer" in bad.stderr


def test_hub_settings_masks_the_password_of_every_dsn(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({"PYTHONPATH": str(ROOT),
                "HUB_DATABASE_URL": "postgresql://hub:pa@ss-w0rd@db.internal:5432/orders"})
    out = subprocess.run([sys.executable, "-m", "hub", "settings", "--json"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)  # type: ignore[arg-type]
    assert out.returncode == 0, out.stderr
    shown = {v["name"]: v["value"] for v in json.loads(out.stdout)}
    assert shown["HUB_DATABASE_URL"] == "postgresql://hub:***@db.internal:5432/orders"
    assert "w0rd" not in out.stdout
    assert mask_dsn("postgresql://db/orders?user=hub&password=s3cret&sslmode=require") == (
        "postgresql://db/orders?user=hub&password=***&sslmode=require")


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db/shop", "not a url", "localhost:5432"])
def test_a_database_url_that_is_not_postgres_stops_at_once(
        clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("HUB_DATABASE_URL", url)
    done = subprocess.run([sys.executable, "-m", "hub", "worker"], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ), cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "HUB_DATABASE_URL: Value error, must be a Postgres URL" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_a_wrong_database_is_one_clear_line(dsn: str) -> None:
    from hub.store.embedded import dsn_for_database

    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["HUB_DATABASE_URL"] = dsn_for_database(dsn, "no_such_database")
    done = subprocess.run([sys.executable, "-m", "hub", "db", "migrate"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert "refused the connection" in done.stderr and "no_such_database" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
