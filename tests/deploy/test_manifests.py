"""deploy/ is checked like code: the compose file by Debian's docker-compose, the Kubernetes
manifests against Kubernetes' own schemas (kubernetes-validate, strict) and KEDA's
(cloudcoil-models-keda, made strict), plus the facts the operators rely on."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = REPO_ROOT / "deploy"
LANGUAGES = ("python", "javascript", "go")
KUBERNETES_VERSION = "1.29"


# --- docker-compose ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> str:
    from codeactions.local.services.apt import apt_install

    apt_install("docker-compose")
    found = shutil.which("docker-compose")
    assert found, "docker-compose was not installed"
    return found


def compose_config(binary: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "-f", str(path), "config"], capture_output=True, text=True,
                          cwd=path.parent, timeout=120)


def test_compose_file_validates_and_holds_the_full_stack(compose):
    result = compose_config(compose, DEPLOY / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"postgres", "rabbitmq", "redis", "s3", "migrate", "api", "beat", "events", "flower",
            "prometheus", "grafana", *(f"worker-{lang}" for lang in LANGUAGES)} <= set(services)
    for language in LANGUAGES:
        worker = services[f"worker-{language}"]
        assert worker["command"][:4] == ["codeactions", "worker", "--language", language]
        assert worker["network_mode"] == worker["pid"] == "host" and worker["privileged"]
        assert any(str(v).startswith("/var/lib/codeactions:/var/lib/codeactions")
                   for v in worker["volumes"])
        assert any("/var/run/docker.sock" in str(v) for v in worker["volumes"])
    assert services["beat"]["command"] == ["codeactions", "beat"]
    assert services["api"]["build"]["args"]["BASE_IMAGE"]
    grafana_mounts = " ".join(str(v) for v in services["grafana"]["volumes"])
    assert "provisioning" in grafana_mounts and "dashboards" in grafana_mounts


def test_compose_validation_rejects_a_broken_file(compose, tmp_path):
    broken = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    broken["services"]["api"]["restart_polcy"] = "always"  # a typo compose must refuse
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    target = tmp_path / "deploy" / "docker-compose.yml"
    target.write_text(yaml.safe_dump(broken))
    result = compose_config(compose, target)
    assert result.returncode != 0 and "restart_polcy" in result.stderr


def test_provisioned_files_parse():
    for path in (DEPLOY / "prometheus").glob("*.yml"):
        assert yaml.safe_load(path.read_text())["scrape_configs"]
    for path in (DEPLOY / "grafana" / "provisioning").rglob("*.yml"):
        assert yaml.safe_load(path.read_text())["apiVersion"] == 1
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "codeactions.json").read_text())
    assert dashboard["panels"] and all(p["targets"] for p in dashboard["panels"])


# --- Kubernetes -------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """Refuse unknown fields, as kubernetes-validate's strict schemas do."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(value) for value in schema]
    return schema


@pytest.fixture(scope="module")
def keda_schemas() -> dict[str, dict]:
    from cloudcoil.models.keda import v1alpha1

    return {kind: _strict(getattr(v1alpha1, kind).model_json_schema(by_alias=True))
            for kind in ("ScaledObject", "TriggerAuthentication")}


def validate(doc: dict, keda_schemas: dict[str, dict]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, keda_schemas[doc["kind"]])
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def manifests() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_kubernetes_manifests_validate_against_their_schemas(keda_schemas):
    docs = manifests()
    assert len(docs) >= 15
    for doc in docs:
        validate(doc, keda_schemas)


def test_kubernetes_manifests_hold_what_operators_rely_on():
    objects = {(d["kind"], d["metadata"]["name"]): d for d in manifests()}
    assert {("Deployment", "codeactions-api"), ("Service", "codeactions-api")} <= set(objects)
    for language in LANGUAGES:
        worker = objects[("Deployment", f"codeactions-worker-{language}")]
        pod = worker["spec"]["template"]["spec"]
        assert pod["hostNetwork"] is True  # the sandbox firewall lives in the node's netns
        assert pod["hostPID"] is True  # sandboxes' namespaces are reached by their pids
        assert any(v.get("hostPath", {}).get("path") == "/var/run/docker.sock"
                   for v in pod["volumes"])
        assert pod["containers"][0]["command"][2:4] == ["--language", language]
        scaler = objects[("ScaledObject", f"codeactions-worker-{language}")]
        assert scaler["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        trigger = scaler["spec"]["triggers"][0]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == f"runs.{language}"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert ("TriggerAuthentication", trigger["authenticationRef"]["name"]) in objects
    beat = objects[("Deployment", "codeactions-beat")]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    assert ("Deployment", "codeactions-events") in objects
    assert ("Job", "codeactions-migrate") in objects


def test_schema_validation_catches_mistakes(keda_schemas):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in manifests()}
    deployment = copy.deepcopy(docs[("Deployment", "codeactions-beat")])
    deployment["spec"]["replica"] = 1  # typo of `replicas`
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, keda_schemas)
    wrong_type = copy.deepcopy(docs[("Deployment", "codeactions-api")])
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type, keda_schemas)
    scaler = copy.deepcopy(docs[("ScaledObject", "codeactions-worker-python")])
    scaler["spec"]["triggerz"] = scaler["spec"].pop("triggers")
    with pytest.raises(jsonschema.ValidationError):
        validate(scaler, keda_schemas)
