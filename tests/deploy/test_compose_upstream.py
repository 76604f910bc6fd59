"""The compose file's optional ``upstream`` profile, checked without a Docker engine: kserve's
ModelServer as the upstream, the gateway in proxy mode in front (``guard``), and the OIP v2
attacker job; every setting read by the real ``Settings`` and ``Experiment``."""

from __future__ import annotations

import hashlib
import os
import tomllib
from urllib.parse import urlparse

import pytest

from attacks_client.evaluation.experiment import Experiment
from service.settings import Settings
from tests.deploy.compose import api_keys, environment, load_compose
from tests.servers import ROOT

PROFILE = {"kserve", "guard", "oip-attacker"}


@pytest.fixture(scope="module")
def services() -> dict:
    return dict(load_compose()["services"])


def test_the_profile_is_optional(services: dict) -> None:
    for name, service in services.items():
        assert (service.get("profiles") == ["upstream"]) == (name in PROFILE), name


def test_kserve_serves_the_repository_model_unpublished(services: dict) -> None:
    kserve = services["kserve"]
    command = kserve["command"]
    assert (ROOT / command[1]).is_file() and command[0] == "python"
    port = command[command.index("--http_port") + 1]
    assert f"127.0.0.1:{port}/v2/health/ready" in " ".join(kserve["healthcheck"]["test"])
    assert "ports" not in kserve
    extras = kserve["build"]["args"]["EXTRAS"].split(",")
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "oip" in extras and "oip" in optional["optional-dependencies"]
    assert any(d.startswith("kserve") for d in optional["optional-dependencies"]["oip"])


def test_guard_proxies_kserve_behind_snd(services: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    guard, kserve_port = services["guard"], services["kserve"]["command"][3]
    assert {k: v["condition"] for k, v in guard["depends_on"].items()} == {
        "redis": "service_healthy",
        "kserve": "service_healthy",
    }
    assert all(str(p).startswith("127.0.0.1:") for p in guard["ports"])
    for key in [k for k in os.environ if k.startswith("SND_")]:
        monkeypatch.delenv(key)
    for key, value in environment(guard).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    (model,) = settings.models
    assert model.upstream is not None and model.defense.kind == "snd"
    assert model.upstream.url == f"http://kserve:{kserve_port}" and model.upstream.binary is True
    redis_dbs = {
        urlparse(environment(services[n])["SND_REDIS_URL"]).path
        for n in ("guard", "defended", "undefended")
    }
    assert len(redis_dbs) == 3  # its counts stay apart from the demo's


def test_oip_attacker_attacks_kserve_and_the_guard(
    services: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    attacker = services["oip-attacker"]
    assert attacker["depends_on"] == {"guard": {"condition": "service_healthy"}}
    for key, value in environment(attacker).items():
        monkeypatch.setenv(key, value)
    command = attacker["command"]
    experiment = Experiment.load(ROOT / command[command.index("--config") + 1])
    urls = {e.name: e.url or "" for e in experiment.endpoints}
    assert all(url.startswith("v2+http://") for url in urls.values())
    assert {urlparse(u.removeprefix("v2+")).hostname for u in urls.values()} == {"kserve", "guard"}
    gateway = next(e for e in experiment.endpoints if "guard" in (e.url or ""))
    keys = api_keys(environment(services["guard"]))
    assert keys[hashlib.sha256(str(gateway.api_key).encode()).hexdigest()] == "attacker"
    assert keys[hashlib.sha256(str(gateway.eval_api_key).encode()).hexdigest()] == "evaluator"
    assert [a.name for a in experiment.attacks] == ["hsja"]
