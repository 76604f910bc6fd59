"""The Docker files, checked without a Docker engine: the compose services, their dependencies,
health checks and settings (every ``SND_*`` variable a real ``Settings`` field), the keys, the
Dockerfile's instructions, and the install step it shares with the README's ``scripts/test.sh``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from attacks_client.evaluation.experiment import Experiment
from service.settings import Settings
from tests.deploy.compose import (
    COMPOSE,
    COMPOSE_GPU,
    DOCKERFILE,
    ENV_EXAMPLE,
    MissingVariable,
    api_keys,
    arg_defaults,
    dockerfile_instructions,
    environment,
    install_calls,
    interpolate,
    load_compose,
    read_env_file,
    variables_used,
)
from tests.servers import ROOT

SERVICES = ("defended", "undefended")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def gpu() -> dict:
    return load_compose(COMPOSE_GPU)


# -- compose: services, dependencies, health ---------------------------------------------------


def test_services(services: dict) -> None:
    upstream_profile = {"kserve", "guard", "oip-attacker"}  # test_compose_upstream.py
    assert set(services) == {"redis", "defended", "undefended", "attacker"} | upstream_profile
    assert services["redis"]["image"].startswith("redis:7")


def test_redis_is_not_published(services: dict) -> None:
    redis = services["redis"]
    assert "ports" not in redis and "network_mode" not in redis
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_services_wait_for_redis_and_have_healthchecks(services: dict) -> None:
    for name in SERVICES:
        service = services[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and "/readyz" in " ".join(test), name
        # published on the loopback interface only
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", [])), name


def test_attacker_waits_for_both_healthy_services(services: dict) -> None:
    attacker = services["attacker"]
    assert {k: v["condition"] for k, v in attacker["depends_on"].items()} == {
        "defended": "service_healthy",
        "undefended": "service_healthy",
    }
    # the image's HEALTHCHECK probes a server; the attacker job runs none
    assert attacker["healthcheck"] == {"disable": True}
    assert attacker.get("restart", "no") == "no"


def test_one_image_for_every_container(services: dict) -> None:
    images = {services[name]["image"] for name in ("defended", "undefended", "attacker")}
    assert len(images) == 1
    for name in ("defended", "undefended", "attacker"):
        assert services[name]["build"]["context"] == "."


def test_defenses(services: dict) -> None:
    defended = Settings(**settings_from_env(environment(services["defended"])))
    undefended = Settings(**settings_from_env(environment(services["undefended"])))
    assert [(m.defense.kind, m.defense.sigma) for m in defended.models] == [("snd", 0.01)]
    assert [m.defense.kind for m in undefended.models] == ["none"]
    assert defended.default_model == undefended.default_model == "resnet20-mnist"


def test_counts_stay_apart_in_the_shared_redis(services: dict) -> None:
    """Both services count the same caller and model: one Redis database each."""
    urls = [urlparse(environment(services[name])["SND_REDIS_URL"]) for name in SERVICES]
    assert {u.hostname for u in urls} == {"redis"}
    assert all(u.port in (None, 6379) for u in urls)
    assert len({u.path for u in urls}) == len(urls)


# -- compose: settings and keys ----------------------------------------------------------------


def settings_from_env(env: dict[str, str]) -> dict:
    """What ``Settings`` reads from these variables (the JSON ones decoded, like pydantic)."""
    values = {}
    for key, value in env.items():
        if not key.startswith("SND_"):
            continue
        name = key.removeprefix("SND_").lower()
        values[name] = json.loads(value) if value[:1] in "[{" else value
    return values


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_every_snd_variable_is_a_settings_field(path: Path) -> None:
    for name, service in load_compose(path)["services"].items():
        for key in environment(service):
            if key.startswith("SND_"):
                field = key.removeprefix("SND_").lower()
                assert field in Settings.model_fields, f"{path.name}: {name}: {key} is no setting"
            else:
                assert "attacker" in name, f"{name}: {key} is not an SND_* setting"


def test_service_settings_validate(services: dict, gpu: dict, monkeypatch) -> None:
    """Each service's environment, read by ``Settings`` itself (as ``python -m service`` does)."""
    for name in SERVICES:
        env = environment(services[name]) | environment(gpu["services"][name])
        for key in [k for k in os.environ if k.startswith("SND_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.api_keys and settings.admin_token_sha256, name
        assert settings.device == "cuda", name  # with the GPU override


def test_keys_match_their_hashes(services: dict) -> None:
    """The attacker holds the raw keys, the services their sha256, mapped to distinct callers."""
    attacker = environment(services["attacker"])
    for name in SERVICES:
        keys = api_keys(environment(services[name]))
        assert keys[sha256(attacker["ATTACKER_KEY"])] == "attacker"
        assert keys[sha256(attacker["EVALUATOR_KEY"])] == "evaluator"
    example = read_env_file()
    for secret in ("ATTACKER_KEY", "EVALUATOR_KEY", "ADMIN_TOKEN"):
        assert sha256(example[secret]) == example[secret + "_SHA256"], secret
    for name in SERVICES:
        env = environment(services[name])
        assert env["SND_ADMIN_TOKEN_SHA256"] == sha256(example["ADMIN_TOKEN"])


def test_no_secret_in_the_compose_files() -> None:
    """Keys come from the environment (.env): compose refuses to start without them."""
    example = read_env_file()
    for path in (COMPOSE, COMPOSE_GPU):
        text = path.read_text()
        for key, value in example.items():
            if "KEY" in key or "TOKEN" in key:
                assert value not in text, f"{path.name} holds the value of {key}"
    env = {k: v for k, v in example.items() if k != "ATTACKER_KEY_SHA256"}
    with pytest.raises(MissingVariable, match="ATTACKER_KEY_SHA256"):
        load_compose(COMPOSE, env)


def test_env_example_documents_every_variable() -> None:
    used = variables_used(COMPOSE.read_text()) | variables_used(COMPOSE_GPU.read_text())
    assert used <= set(read_env_file()), used - set(read_env_file())


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET:-d}-${EMPTY:-d}-${EMPTY-d}-$$-$SET", env) == "x-d-d--$-x"
    with pytest.raises(MissingVariable, match="hint"):
        interpolate("${EMPTY:?hint}", env)
    assert interpolate({"a": ["${SET}", 1]}, env) == {"a": ["x", 1]}


# -- compose: the attacker job -----------------------------------------------------------------


def test_attacker_runs_the_compose_experiment(services: dict, monkeypatch) -> None:
    attacker = services["attacker"]
    command = attacker["command"]
    assert command[:4] == ["python", "-m", "attacks_client", "evaluate"]
    config = command[command.index("--config") + 1]
    out = command[command.index("--out") + 1]
    # the report lands in the folder mounted from the host
    mounts = dict(v.split(":")[:2][::-1] for v in attacker["volumes"])
    assert mounts["/reports"] == "./reports"
    assert out.startswith("/reports/")
    # the experiment, read with the attacker's environment, attacks both services by name
    for key, value in environment(attacker).items():
        monkeypatch.setenv(key, value)
    experiment = Experiment.load(ROOT / config)
    urls = {e.name: urlparse(e.url or "") for e in experiment.endpoints}
    assert {u.hostname for u in urls.values()} == set(SERVICES)
    assert {u.port for u in urls.values()} == {8000}
    keys = {(e.api_key, e.eval_api_key) for e in experiment.endpoints}
    assert keys == {(environment(attacker)["ATTACKER_KEY"], environment(attacker)["EVALUATOR_KEY"])}
    assert experiment.reference.url == "http://undefended:8000"
    assert {a.name for a in experiment.attacks} >= {"hsja"}


# -- the GPU override ----------------------------------------------------------------------------


def test_gpu_override_reserves_a_gpu_and_a_cuda_torch(gpu: dict) -> None:
    for name in SERVICES:
        service = gpu["services"][name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert environment(service)["SND_DEVICE"] == "cuda"
    images = {s["image"] for s in gpu["services"].values()}
    assert len(images) == 1, "one image, built once"
    for service in gpu["services"].values():
        index = service["build"]["args"]["TORCH_INDEX"]
        assert index.startswith("https://download.pytorch.org/whl/cu"), index
    assert set(gpu["services"]) <= set(load_compose()["services"])


def test_compose_build_args_are_dockerfile_args(services: dict, gpu: dict) -> None:
    args = arg_defaults(dockerfile_instructions())
    for compose in (services, gpu["services"]):
        for service in compose.values():
            assert set(service.get("build", {}).get("args", {})) <= set(args)


# -- Dockerfile ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list:
    return dockerfile_instructions()


def last(instructions: list, keyword: str):
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"no {keyword}"
    return found[-1]


def test_dockerfile_base_user_port_command(dockerfile: list) -> None:
    froms = [i for i in dockerfile if i.keyword == "FROM"]
    # one stage, on a base chosen by build argument (python:3.11-slim unless told otherwise)
    assert [i.args for i in froms] == ["${BASE_IMAGE}"]
    assert arg_defaults(dockerfile)["BASE_IMAGE"] == "python:3.11-slim"
    user = last(dockerfile, "USER").args.split(":")[0]
    assert user not in ("root", "0")
    # nothing runs as root after the switch, and the server is what starts by default
    keywords = [i.keyword for i in dockerfile]
    assert "RUN" not in keywords[keywords.index("USER") :]
    assert last(dockerfile, "EXPOSE").args == "8000"
    assert last(dockerfile, "CMD").exec_form() == ["python", "-m", "service", "--host", "0.0.0.0"]


def test_dockerfile_healthcheck_probes_healthz(dockerfile: list) -> None:
    check = last(dockerfile, "HEALTHCHECK")
    options, _, command = check.args.partition("CMD")
    assert "--interval" in options and "--start-period" in options
    probe = json.loads(command.strip())
    assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2]  # no curl in slim images
    compile(probe[2], "<healthcheck>", "exec")


def test_dockerfile_torch_is_a_build_argument(dockerfile: list) -> None:
    args = arg_defaults(dockerfile)
    assert args["TORCH_INDEX"] == CPU_INDEX
    runs = " ".join(i.args for i in dockerfile if i.keyword == "RUN")
    assert "$TORCH_INDEX" in runs


def test_dockerfile_installs_with_the_readme_script(dockerfile: list) -> None:
    """The image's install is ``scripts/install.sh``, the same script ``scripts/test.sh`` (the
    README's test command) runs; and it installs the CPU torch into the image's venv, without
    test extras."""
    args = {k: v or "" for k, v in arg_defaults(dockerfile).items()}
    docker_calls = [
        call for i in dockerfile if i.keyword == "RUN" for call in install_calls(i.args, args)
    ]
    assert docker_calls, "the Dockerfile does not run scripts/install.sh"
    test_calls = install_calls((ROOT / "scripts/test.sh").read_text())
    assert len(test_calls) == 1

    package = dry_run(docker_calls[-1].env, docker_calls[-1].args)
    assert f"--index-url {CPU_INDEX} torch==2.14.1 torchvision==0.29.1" in package
    assert "pip install -q .[plots]" in package and " -e " not in package
    assert "/opt/venv/bin/python -m pip install" in package and "apt-get" not in package
    torch_only = dry_run(docker_calls[0].env, docker_calls[0].args)
    assert "torch==" in torch_only and "pip install -q ." not in torch_only

    readme = dry_run(test_calls[0].env, test_calls[0].args)
    assert ".venv/bin/python -m pip install -q -e .[test,plots,parity,oip]" in readme
    assert "--index-url" not in readme


def dry_run(env: dict[str, str], args: list[str]) -> str:
    """What ``scripts/install.sh`` would run with this environment (DRY_RUN=1)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VENV", "EXTRAS", "EDITABLE", "INSTALL_REDIS", "TORCH_INDEX")
    }
    result = subprocess.run(
        ["bash", "scripts/install.sh", *args],
        cwd=ROOT,
        text=True,
        env=base | env | {"DRY_RUN": "1"},
        capture_output=True,
        check=True,
    )
    return result.stdout


def test_scripts_parse() -> None:
    for script in ("scripts/install.sh", "scripts/test.sh", "scripts/container-check.sh"):
        subprocess.run(["bash", "-n", script], cwd=ROOT, check=True)


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "runs", ".env"} <= patterns
    for needed in ("service", "attacks_client", "experiments", "scripts", "pyproject.toml"):
        assert needed not in patterns


def test_the_package_carries_its_checkpoint(tmp_path: Path) -> None:
    """The image's regular (non-editable) install holds the weights: no download at start."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("service", "attacks_client"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "service/weights/resnet20-mnist.pt" in names


def test_compose_files_are_plain_yaml() -> None:
    """No tabs, no duplicate keys (PyYAML keeps the last silently; Compose refuses)."""

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        keys = [k.value for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
        duplicates = {k for k in keys if keys.count(k) > 1}
        assert not duplicates, f"duplicate keys {duplicates}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in (COMPOSE, COMPOSE_GPU):
        assert "\t" not in path.read_text()
        yaml.load(path.read_text(), Loader=Strict)  # noqa: S506 - a SafeLoader subclass
    assert ENV_EXAMPLE.exists() and DOCKERFILE.exists()
