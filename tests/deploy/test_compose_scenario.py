"""The docker-compose demo without Docker: every container of ``docker-compose.yml`` as a plain
process, configured from the compose file itself.

A real ``redis-server`` stands in for ``redis``; ``defended`` and ``undefended`` are
``python -m service`` with the environment of their compose sections (the ``redis`` host mapped
to the local Redis, free ports instead of 8000); ``attacker`` is the compose command line with its
environment (service URLs mapped to the local ports, ``/reports`` to a temporary folder), run on a
reduced copy of the experiment. Then: the report's tables, the health checks of the Dockerfile
and the compose file against the live services, and Redis' count of the attacker per service
equal to the queries of that endpoint's records.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import pytest
import redis

from attacks_client.evaluation.experiment import Experiment
from tests.deploy.compose import (
    dockerfile_instructions,
    environment,
    load_compose,
    read_env_file,
    settings_of,
)
from tests.servers import ROOT, RedisProcess, ServiceProcess, free_port

SERVICES = ("defended", "undefended")
# a smaller run of the compose experiment: same endpoints and attacks, fewer images and queries
SMALLER = {
    "images": "2",
    "budget": "200",
    "checkpoints": "[100, 200]",
    "accuracy_images": "100",
    "accuracy_repeats": "1",
    "pmis_samples": "50",
}


def smaller_experiment(config: Path, out: Path) -> Path:
    text = config.read_text()
    for key, value in SMALLER.items():
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        assert n == 1, f"{config.name} has no top-level {key}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def local_redis(url: str, port: int) -> str:
    """``redis://redis:6379/1`` -> ``redis://127.0.0.1:<port>/1`` (same database)."""
    parts = urlparse(url)
    assert parts.hostname == "redis", url
    return urlunparse(parts._replace(netloc=f"127.0.0.1:{port}"))


def probe(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run a health check's ``["CMD", ...]`` here; its exit status."""
    assert command[0] == "CMD"
    argv = [sys.executable if command[1] == "python" else command[1], *command[2:]]
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode


@pytest.mark.slow
def test_compose_demo_as_processes(tmp_path: Path) -> None:
    compose = load_compose()["services"]
    secrets = read_env_file()
    attacker = compose["attacker"]
    attacker_env = environment(attacker)

    with ExitStack() as stack:
        store = stack.enter_context(RedisProcess())
        servers: dict[str, ServiceProcess] = {}
        for name in SERVICES:
            env = environment(compose[name])
            env["SND_REDIS_URL"] = local_redis(env["SND_REDIS_URL"], store.port)
            servers[name] = ServiceProcess(settings_of(env))
            stack.callback(servers[name].stop)
        with ThreadPoolExecutor(len(servers)) as pool:  # both start at once, like compose
            list(pool.map(ServiceProcess.start, servers.values()))
        started = time.monotonic()

        # the health checks of the Dockerfile (/healthz) and the compose file (/readyz)
        image_check = next(i for i in dockerfile_instructions() if i.keyword == "HEALTHCHECK")
        image_probe = ["CMD", *json.loads(image_check.args.partition("CMD")[2])]
        for name, server in servers.items():
            port_env = os.environ | {"SND_PORT": str(server.port)}
            assert probe(image_probe, port_env) == 0, name
            compose_probe = [
                arg.replace(":8000/", f":{server.port}/")
                for arg in compose[name]["healthcheck"]["test"]
            ]
            assert probe(compose_probe) == 0, name
        assert probe(image_probe, os.environ | {"SND_PORT": str(free_port())}) != 0

        # the attacker: the compose command line, its environment, local URLs and folders
        hosts = {f"http://{name}:8000": server.url for name, server in servers.items()}
        env = {k: v for k, v in os.environ.items() if not k.startswith("SND_")}
        env |= {k: hosts.get(v, v) for k, v in attacker_env.items()}
        env["PYTHONPATH"] = str(ROOT)
        mounts = {inside: host for host, inside, *_ in (v.split(":") for v in attacker["volumes"])}
        reports = tmp_path / "reports"
        argv = list(attacker["command"])
        assert argv[0] == "python"
        argv[0] = sys.executable
        config = argv.index("--config") + 1
        argv[config] = str(smaller_experiment(ROOT / argv[config], tmp_path / argv[config]))
        out = argv.index("--out") + 1
        assert mounts["/reports"] == "./reports" and argv[out].startswith("/reports/")
        run_dir = reports / Path(argv[out]).relative_to("/reports")
        argv[out] = str(run_dir)
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        print(f"attacker: {time.monotonic() - started:.0f} s")

        # the report
        report = (run_dir / "report.md").read_text()
        assert "## Table 1: clean accuracy" in report
        for epsilon in ("1.0", "1.5", "2.0"):
            assert f"## Tables 2/3: attack success rate (%), ε = {epsilon}" in report
        records = [
            json.loads(line)
            for line in (run_dir / "records.jsonl").read_text().split("\n")
            if line.strip()
        ]
        experiment = experiment_as_compose_sees_it(argv[config], attacker_env)
        assert len(records) == experiment.images * len(experiment.attacks) * len(SERVICES)
        for endpoint in experiment.endpoints:
            assert endpoint.name in report

        # Redis' counts: the attacker per service = the queries of that endpoint's records
        admin = {"Authorization": f"Bearer {secrets['ADMIN_TOKEN']}"}
        for endpoint in experiment.endpoints:
            service = urlparse(endpoint.url).hostname
            assert service in servers
            spent = sum(r["queries"] for r in records if r["endpoint"] == endpoint.name)
            assert spent > 0
            usage = httpx.get(
                f"{servers[service].url}/usage/key:attacker", headers=admin, timeout=10
            ).json()
            assert usage["total"] == spent, (endpoint.name, usage)
            # and in Redis itself, in the service's own database
            db_url = local_redis(environment(compose[service])["SND_REDIS_URL"], store.port)
            with redis.Redis.from_url(db_url, decode_responses=True) as client:
                keys = [k for k in client.scan_iter("*usage*") if "{key:attacker}" in k]
                assert len(keys) == 1, keys
                assert sum(map(int, client.hgetall(keys[0]).values())) == spent
            # the evaluator's queries (images, Table 1, verdicts) are counted apart
            evaluator = httpx.get(
                f"{servers[service].url}/usage/key:evaluator", headers=admin, timeout=10
            ).json()
            assert evaluator["total"] > 0


def experiment_as_compose_sees_it(config: str, attacker_env: dict[str, str]) -> Experiment:
    """The experiment with the attacker container's environment (URLs by service name)."""
    saved = dict(os.environ)
    try:
        os.environ.update(attacker_env)
        return Experiment.load(config)
    finally:
        os.environ.clear()
        os.environ.update(saved)
