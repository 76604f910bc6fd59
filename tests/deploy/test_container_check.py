"""The image built and the compose demo run for real, under podman (``scripts/container-check.sh``).

Marked ``container``: the default test command leaves it out (a first build takes several
minutes and gigabytes); run it with ``pytest -m container tests/deploy/test_container_check.py``
as root on a machine with podman. Without a usable podman it is skipped with the reason.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.container
STATE = Path(os.environ.get("STATE", "/var/tmp/snd-container-check"))


def podman_problem() -> str | None:
    if shutil.which("podman") is None:
        return "no podman on this machine (scripts/container-check.sh --install adds it)"
    if os.geteuid() != 0:
        return "scripts/container-check.sh runs rootful podman: run as root"
    if shutil.which("docker-compose") is None:
        return "no docker-compose (scripts/container-check.sh --install adds it)"
    return None


def results() -> dict[str, str]:
    values = {}
    for line in (STATE / "results.env").read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = shlex.split(value)[0] if value else ""
    return values


@pytest.mark.skipif(podman_problem() is not None, reason=str(podman_problem()))
def test_the_image_builds_and_the_compose_demo_runs_to_its_report() -> None:
    run = subprocess.run(
        ["bash", "scripts/container-check.sh", "--skip-cuda"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    found = results()
    assert found["health_status"] == "healthy"
    assert not found["container_user"].startswith("root")
    assert int(found["image_bytes"]) > 0 and float(found["build_seconds"]) > 0
    for endpoint in ("defended", "undefended"):
        spent = int(found[f"{endpoint}_record_queries"])
        assert spent > 0 and int(found[f"{endpoint}_redis_count"]) == spent
    assert "hsja" in (STATE / "report.md").read_text()
