"""The helm chart (helm/commerce-hub): it lints, renders valid Kubernetes objects, and wires
the hub the way the hub reads its settings.

Every rendered object is validated against the Kubernetes 1.30 JSON schemas shipped in the
``kubernetes-validate`` wheel (strict: an unknown field is an error); the ServiceMonitor, a
Prometheus Operator CRD the wheel has no schema for, against a small schema of its own here.
The helm binary is built from its Go module by ``scripts/install-helm`` (slow the first time,
hence ``slow``).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from hub.settings import ApiSettings, HubSettings, KafkaSettings
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CHART = ROOT / "helm" / "commerce-hub"
PRODUCTION = CHART / "ci" / "production-values.yaml"
KUBE_VERSION = "1.30.0"

Doc = dict[str, Any]


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the helm binary, installed by the project's script on first use."""
    out = subprocess.run([str(ROOT / "scripts" / "install-helm"), "--print"],
                         capture_output=True, text=True, timeout=1800, check=False)
    if out.returncode != 0:
        pytest.fail(f"scripts/install-helm failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)


def render(helm: str, *args: str) -> list[Doc]:
    """``helm template`` (the hooks included) parsed into documents."""
    out = run_helm(helm, "template", "commerce-hub", str(CHART), "--namespace", "commerce",
                   "--kube-version", KUBE_VERSION, *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render_failure(helm: str, *args: str) -> str:
    out = run_helm(helm, "template", "commerce-hub", str(CHART), *args)
    assert out.returncode != 0, f"rendered although it should not:\n{out.stdout[:2000]}"
    return out.stderr


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name} not rendered once: {[kn(d) for d in docs]}"
    return matches[0]


def kn(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def container(doc: Doc) -> Doc:
    containers: list[Doc] = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in c.get("env", [])}


def mounted_file(pod: Doc, c: Doc, path: str) -> tuple[Doc, str]:
    """The pod volume that provides ``path`` in container ``c``, and the path inside it."""
    mount = next((m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/")), None)
    assert mount is not None, f"{path} is not on any mount of {c['name']}"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return volume, path[len(mount["mountPath"]) + 1:]


@pytest.fixture(scope="session")
def default_docs(helm: str) -> list[Doc]:
    return render(helm)


@pytest.fixture(scope="session")
def production_docs(helm: str) -> list[Doc]:
    return render(helm, "-f", str(PRODUCTION))


# -- lint and schemas ---------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["default", "production"])
def test_chart_lints_cleanly(helm: str, values: Path | None) -> None:
    extra = ["-f", str(values)] if values else []
    out = run_helm(helm, "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *extra)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


SERVICE_MONITOR_SCHEMA: Doc = {
    # the fields of monitoring.coreos.com/v1 ServiceMonitor the chart uses, typos rejected
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "additionalProperties": False,
                             "required": ["matchLabels"],
                             "properties": {"matchLabels": {
                                 "type": "object", "minProperties": 1,
                                 "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"matchNames": {
                                          "type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["port"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "authorization": {
                            "type": "object", "additionalProperties": False,
                            "required": ["credentials"],
                            "properties": {
                                "type": {"type": "string"},
                                "credentials": {
                                    "type": "object", "additionalProperties": False,
                                    "required": ["name", "key"],
                                    "properties": {"name": {"type": "string"},
                                                   "key": {"type": "string"}}}}},
                    }}},
            },
        },
    },
}


def validate(doc: Doc) -> None:
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
    else:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["default", "production"])
def test_every_rendered_object_is_valid_for_kubernetes(helm: str, values: Path | None) -> None:
    docs = render(helm, *(["-f", str(values)] if values else []))
    problems = []
    for doc in docs:
        try:
            validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            problems.append(f"{kn(doc)}: {where}: {exc.message}")
    assert not problems, "\n".join(problems)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Job", "PodDisruptionBudget",
            "ServiceAccount"} <= kinds


def test_production_values_render_every_optional_part(production_docs: list[Doc]) -> None:
    kinds = sorted(kn(d) for d in production_docs)
    assert "HorizontalPodAutoscaler/commerce-hub-worker" in kinds
    assert "HorizontalPodAutoscaler/commerce-hub-api" in kinds
    assert "ServiceMonitor/commerce-hub-worker" in kinds
    assert "ServiceMonitor/commerce-hub-api" in kinds
    hpa = find(production_docs, "HorizontalPodAutoscaler", "commerce-hub-worker")
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["scaleTargetRef"]["name"] == "commerce-hub-worker"
    # the autoscaler owns the replica count: the Deployment must not fight it on upgrade
    assert "replicas" not in find(production_docs, "Deployment", "commerce-hub-worker")["spec"]


def test_default_values_leave_out_autoscalers_and_service_monitors(
        default_docs: list[Doc]) -> None:
    assert not [d for d in default_docs if d["kind"] in ("ServiceMonitor",
                                                          "HorizontalPodAutoscaler")]
    assert find(default_docs, "Deployment", "commerce-hub-worker")["spec"]["replicas"] == 2


# -- the values schema ----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "field", "why"), [
    (["--set", "worker.replicas=-1"], "/worker/replicas", "minimum"),
    (["--set", "worker.replicas=three"], "/worker/replicas", "want integer"),
    (["--set", "worker.replicaz=3"], "/worker", "replicaz"),
    (["--set", "kafka.securityProtocol=TLS"], "/kafka/securityProtocol", "must be one of"),
    (["--set", "kafka.bootstrap=kafka"], "/kafka/bootstrap", "pattern"),
    (["--set", "connectors.secretFiles[0].name=HUB_STRIPE_API_KEY",
      "--set", "connectors.secretFiles[0].secretName=stripe",
      "--set", "connectors.secretFiles[0].key=api-key"],
     "/connectors/secretFiles/0/name", "pattern"),
    (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy", "must be one of"),
])
def test_values_schema_rejects_bad_values_naming_the_field(
        helm: str, args: list[str], field: str, why: str) -> None:
    err = render_failure(helm, *args)
    assert f"at '{field}'" in err, err
    assert why in err, err


def test_sasl_without_its_credentials_is_rejected(helm: str) -> None:
    err = render_failure(helm, "--set", "kafka.securityProtocol=SASL_SSL")
    for field in ("/kafka/sasl/mechanism", "/kafka/sasl/username",
                  "/kafka/sasl/existingSecret"):
        assert f"at '{field}'" in err, err


def test_worker_grace_period_must_outlast_the_kafka_drain(helm: str) -> None:
    err = render_failure(helm, "--set", "worker.terminationGracePeriodSeconds=25",
                         "--set", "kafka.shutdownTimeoutSeconds=20")
    assert "worker.terminationGracePeriodSeconds (25)" in err, err
    assert "kafka.shutdownTimeoutSeconds (20)" in err, err


@pytest.mark.parametrize("docs_name", ["default_docs", "production_docs"])
def test_worker_grace_period_outlasts_the_shutdown_timeout_it_is_given(
        request: pytest.FixtureRequest, docs_name: str) -> None:
    docs: list[Doc] = request.getfixturevalue(docs_name)
    worker = find(docs, "Deployment", "commerce-hub-worker")
    drain = float(env_of(container(worker))["HUB_KAFKA_SHUTDOWN_TIMEOUT_S"]["value"])
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain + 10
    assert drain == KafkaSettings.model_fields["shutdown_timeout_s"].default


# -- what the hub processes are given -------------------------------------------------------

def test_migration_job_runs_before_install_and_upgrade(default_docs: list[Doc]) -> None:
    job = find(default_docs, "Job", "commerce-hub-migrate")
    notes = job["metadata"]["annotations"]
    assert set(notes["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in notes["helm.sh/hook-delete-policy"]
    c = container(job)
    assert [*c["command"], *c["args"][:2]] == ["hub", "db", "migrate"]
    assert env_of(c)["HUB_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "commerce-hub-database", "key": "url"}
    # it runs before the chart's ServiceAccount exists, so it must not name it
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_worker_and_api_take_every_credential_from_secrets(
        production_docs: list[Doc]) -> None:
    for name in ("commerce-hub-worker", "commerce-hub-api"):
        deployment = find(production_docs, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        env = env_of(c)
        assert env["HUB_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "commerce-hub-database", "key": "url"}
        assert env["HUB_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["HUB_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env["HUB_KAFKA_SASL_USERNAME"]["value"] == "commerce-hub"
        assert "HUB_KAFKA_SASL_PASSWORD" not in env  # a file, never a variable
        volume, item = mounted_file(pod, c, env["HUB_KAFKA_SASL_PASSWORD_FILE"]["value"])
        assert volume["secret"]["secretName"] == "commerce-hub-kafka-user"
        assert {"key": "password", "path": item} in volume["secret"]["items"]
        volume, item = mounted_file(pod, c, env["HUB_KAFKA_SSL_CAFILE"]["value"])
        assert volume["secret"]["secretName"] == "kafka-cluster-ca"
        assert {"key": "ca.crt", "path": item} in volume["secret"]["items"]
        # connector credentials: one as a variable, the rest as mounted files
        assert env["HUB_CONTENTFUL_ACCESS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "commerce-hub-contentful", "key": "access-token"}
        for var, secret, key in [("HUB_STRIPE_API_KEY_FILE", "commerce-hub-stripe", "api-key"),
                                 ("HUB_ODOO_API_KEY_FILE", "commerce-hub-odoo", "api-key"),
                                 ("HUB_HUBSPOT_ACCESS_TOKEN_FILE", "commerce-hub-hubspot",
                                  "access-token")]:
            volume, item = mounted_file(pod, c, env[var]["value"])
            sources = volume["projected"]["sources"]
            assert {"secret": {"name": secret, "items": [{"key": key, "path": item}]}} \
                in sources, (var, sources)
        # no plain value of any variable looks like a credential
        for e in c["env"]:
            if re.search(r"(PASSWORD|API_KEY|TOKEN|DATABASE_URL)$", e["name"]):
                assert "value" not in e, e
    api = find(production_docs, "Deployment", "commerce-hub-api")
    volume, _ = mounted_file(api["spec"]["template"]["spec"], container(api),
                             env_of(container(api))["HUB_WEBHOOK_SECRETS_FILE"]["value"])
    assert volume["secret"]["secretName"] == "commerce-hub-webhooks"


def test_mutual_tls_mounts_the_client_certificate_and_key(helm: str) -> None:
    docs = render(helm, "--set", "kafka.securityProtocol=SSL",
                  "--set", "kafka.tls.existingSecret=kafka-client",
                  "--set", "kafka.tls.certKey=tls.crt", "--set", "kafka.tls.keyKey=tls.key")
    worker = find(docs, "Deployment", "commerce-hub-worker")
    c, pod = container(worker), worker["spec"]["template"]["spec"]
    env = env_of(c)
    for var, key in [("HUB_KAFKA_SSL_CAFILE", "ca.crt"), ("HUB_KAFKA_SSL_CERTFILE", "tls.crt"),
                     ("HUB_KAFKA_SSL_KEYFILE", "tls.key")]:
        volume, item = mounted_file(pod, c, env[var]["value"])
        assert volume["secret"]["secretName"] == "kafka-client"
        assert {"key": key, "path": item} in volume["secret"]["items"]
    assert "HUB_KAFKA_SASL_USERNAME" not in env


def settings_variables() -> set[str]:
    """Every variable HubSettings, KafkaSettings and ApiSettings read."""
    names = set()
    for model in (HubSettings, KafkaSettings, ApiSettings):
        prefix = str(model.model_config.get("env_prefix", ""))
        for field, info in model.model_fields.items():
            names.add((info.alias or f"{prefix}{field}").upper())
    return names


@pytest.mark.parametrize("args", [
    [], ["-f", str(PRODUCTION)],
    ["--set", "kafka.topicPrefix=staging.", "--set", "kafka.securityProtocol=SSL",
     "--set", "kafka.tls.existingSecret=ca", "--set", "kafka.tls.certKey=tls.crt",
     "--set", "kafka.tls.keyKey=tls.key", "--set", "api.webhookSecrets.existingSecret=hooks"],
], ids=["default", "production", "options"])
def test_every_hub_variable_set_is_one_the_hub_reads(helm: str, args: list[str]) -> None:
    docs = render(helm, *args)
    connectors = yaml.safe_load(PRODUCTION.read_text())["connectors"] if args[:1] == ["-f"] \
        else {}
    connector_vars = {*connectors.get("env", {}),
                      *(e["name"] for e in connectors.get("secretEnv", [])),
                      *(e["name"] for e in connectors.get("secretFiles", []))}
    known = settings_variables()
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        unknown = set(env_of(container(doc))) - known - connector_vars
        assert not unknown, f"{kn(doc)} sets variables no settings class reads: {unknown}"


def connector_variables() -> set[str]:
    """Every variable a connector's settings class reads (``HUB_<SYSTEM>_<FIELD>``)."""
    import connectors
    from connectors.base import ConnectorSettings

    for module in pkgutil.iter_modules(connectors.__path__):
        importlib.import_module(f"connectors.{module.name}")
    names, todo = set(), list(ConnectorSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        prefix = str(cls.model_config.get("env_prefix", ""))
        names |= {f"{prefix}{field}".upper() for field in cls.model_fields}
    return names


def test_production_connector_variables_are_ones_the_connectors_read() -> None:
    values = yaml.safe_load(PRODUCTION.read_text())["connectors"]
    given = {*values["env"], *(e["name"] for e in values["secretEnv"]),
             *(e["name"] for e in values["secretFiles"])}
    unknown = given - connector_variables()
    assert not unknown, f"no connector reads {sorted(unknown)}"


def test_api_probes_its_health_and_readiness_routes(default_docs: list[Doc]) -> None:
    api = find(default_docs, "Deployment", "commerce-hub-api")
    c = container(api)
    assert c["args"][:5] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    service = find(default_docs, "Service", "commerce-hub-api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]


def test_worker_serves_metrics_where_it_is_probed(default_docs: list[Doc]) -> None:
    worker = find(default_docs, "Deployment", "commerce-hub-worker")
    c = container(worker)
    assert c["args"][0] == "worker"
    port = int(env_of(c)["HUB_METRICS_PORT"]["value"])
    assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    service = find(default_docs, "Service", "commerce-hub-worker-metrics")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["port"] == port


def test_pods_run_as_non_root_on_a_read_only_filesystem(default_docs: list[Doc]) -> None:
    for doc in default_docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        c = container(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True, kn(doc)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, kn(doc)
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, kn(doc)
        volume, _ = mounted_file(pod, c, "/tmp/x")
        assert "emptyDir" in volume, kn(doc)
        assert env_of(c)["HUB_DATA_DIR"]["value"].startswith("/tmp/"), kn(doc)


def test_disruption_budgets_select_the_worker_and_api_pods(default_docs: list[Doc]) -> None:
    for part in ("worker", "api"):
        pdb = find(default_docs, "PodDisruptionBudget", f"commerce-hub-{part}")
        deployment = find(default_docs, "Deployment", f"commerce-hub-{part}")
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


# -- topics.yaml ---------------------------------------------------------------------------

def test_chart_topics_yaml_is_the_repository_file() -> None:
    # a symlink, so the two cannot drift; `helm package` stores the file's content
    chart_file = CHART / "files" / "topics.yaml"
    assert chart_file.is_symlink(), "helm/commerce-hub/files/topics.yaml must stay a symlink"
    assert chart_file.resolve() == (ROOT / "topics.yaml").resolve()


def test_topics_configmap_holds_the_repository_topics_yaml(default_docs: list[Doc]) -> None:
    configmap = find(default_docs, "ConfigMap", "commerce-hub-topics")
    assert configmap["data"]["topics.yaml"] == (ROOT / "topics.yaml").read_text()
    for name in ("commerce-hub-worker", "commerce-hub-api"):
        deployment = find(default_docs, "Deployment", name)
        pod, c = deployment["spec"]["template"]["spec"], container(deployment)
        volume, item = mounted_file(pod, c, env_of(c)["HUB_KAFKA_TOPICS_FILE"]["value"])
        assert volume["configMap"]["name"] == "commerce-hub-topics"
        assert item == "topics.yaml"


def test_topics_value_replaces_the_file_and_rolls_the_pods(
        helm: str, default_docs: list[Doc], tmp_path: Path) -> None:
    mine = tmp_path / "topics.yaml"
    mine.write_text("topics:\n  orders:\n    partitions: 3\n")
    docs = render(helm, "--set-file", f"topics={mine}")
    assert find(docs, "ConfigMap", "commerce-hub-topics")["data"]["topics.yaml"] == \
        mine.read_text()

    def checksum(d: list[Doc]) -> str:
        worker = find(d, "Deployment", "commerce-hub-worker")
        annotations: dict[str, str] = worker["spec"]["template"]["metadata"]["annotations"]
        return annotations["checksum/topics"]

    assert checksum(docs) != checksum(default_docs)


def iter_env_values(docs: list[Doc]) -> Iterator[tuple[str, str]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            for e in container(doc).get("env", []):
                if "value" in e:
                    yield e["name"], e["value"]


def test_kafka_settings_in_the_pods_are_ones_the_hub_accepts(
        production_docs: list[Doc]) -> None:
    kafka_vars = {k: v for k, v in iter_env_values(production_docs)
                  if k.startswith("HUB_KAFKA_")}
    settings = KafkaSettings(**{k.removeprefix("HUB_KAFKA_").lower(): v
                                for k, v in kafka_vars.items()})
    assert settings.security_protocol == "SASL_SSL"
    assert settings.bootstrap is not None and settings.bootstrap.count(",") == 2
    assert str(settings.topics_file) == "/etc/hub/topics/topics.yaml"
