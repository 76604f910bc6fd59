"""The Kubernetes manifests (``deploy/k8s``): every resource validates against the Kubernetes
1.32 schemas in strict mode (kubernetes-validate, offline), every overlay renders with
``kubectl kustomize`` where kubectl is installed, and the gateway's settings in them are real."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.servers import ROOT

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["base", "overlays/sentinel", "overlays/cluster"]  # gateways; attacker: below
VERSION = "1.32.0"


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(overlay: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the overlays are not rendered here")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return documents(out)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize(
    "path",
    sorted(p.relative_to(K8S) for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"),
    ids=str,
)
def test_every_manifest_validates_strictly(path: Path) -> None:
    for doc in documents((K8S / path).read_text()):
        kubernetes_validate.validate(doc, VERSION, strict=True)


def test_a_wrong_field_is_caught() -> None:
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "x"},
                "spec": {"bogus": 1},
            },
            VERSION,
            strict=True,
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates(overlay: str) -> None:
    docs = render(overlay)
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    container = spec["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert (
        container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    )
    refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
    names = {d["metadata"]["name"] for d in docs}
    assert refs <= names and {"Secret", "ConfigMap"} <= {d["kind"] for d in docs}
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["minAvailable"] >= 1
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())


@pytest.mark.parametrize(
    ("overlay", "mode"),
    [("base", "standalone"), ("overlays/sentinel", "sentinel"), ("overlays/cluster", "cluster")],
)
def test_the_settings_of_each_overlay_are_real(
    overlay: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(overlay)
    env: dict[str, str] = {}
    for doc in by_kind(docs, "ConfigMap"):
        env |= doc["data"]
    for doc in by_kind(docs, "Secret"):
        env |= doc.get("stringData", {})
    fields = set(Settings.model_fields)
    assert all(k.removeprefix("SND_").lower() in fields for k in env if k.startswith("SND_"))
    for key in [k for k in os.environ if k.startswith("SND_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.redis_mode == mode
    assert json.loads(env["SND_API_KEYS"]) == settings.api_keys
    if mode == "sentinel":
        assert len(settings.redis_sentinels) == 3 and settings.redis_wait_replicas == 1
        (sentinels,) = [
            d for d in by_kind(docs, "StatefulSet") if d["metadata"]["name"] == "redis-sentinel"
        ]
        assert sentinels["spec"]["replicas"] == 3
    if mode == "cluster":
        (nodes,) = by_kind(docs, "StatefulSet")
        assert nodes["spec"]["replicas"] == 6 and by_kind(docs, "Job")


def test_the_attacker_overlay_is_an_indexed_job_of_shards(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One evaluate shard per completion index, against the gateway's Service, into its own
    folder of the results volume; the experiment it mounts loads."""
    docs = render("overlays/attacker")
    for doc in docs:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    (job,) = by_kind(docs, "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert spec["completions"] == spec["parallelism"] == int(env["SHARDS"])
    script = container["command"][-1]
    assert '--shard "$shard/$SHARDS"' in script and "JOB_COMPLETION_INDEX + 1" in script
    subprocess.run(["sh", "-n", "-c", script], check=True)  # the script parses
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (claim,) = by_kind(docs, "PersistentVolumeClaim")
    assert volumes["results"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert mounts["results"] == "/results" and '--out "/results/shard-$shard"' in script
    (config,) = by_kind(docs, "ConfigMap")
    assert volumes["experiment"]["configMap"]["name"] == config["metadata"]["name"]
    assert f"--config {mounts['experiment']}/experiment.toml" in script

    # the experiment loads with the Job's environment, and asks the base's Service
    from attacks_client.evaluation.experiment import Experiment

    (secret,) = by_kind(docs, "Secret")
    for key, value in {**env, **secret["stringData"]}.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "experiment.toml"
    path.write_text(config["data"]["experiment.toml"])
    experiment = Experiment.load(path)
    (service,) = by_kind(render("base"), "Service")
    assert {e.url for e in experiment.endpoints} == {f"http://{service['metadata']['name']}"}
    assert service["spec"]["ports"][0]["port"] == 80
    gateway_keys = json.loads(by_kind(render("base"), "Secret")[0]["stringData"]["SND_API_KEYS"])
    for raw in secret["stringData"].values():  # the gateway knows both keys
        assert hashlib.sha256(raw.encode()).hexdigest() in gateway_keys
