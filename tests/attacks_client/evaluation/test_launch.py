"""``LocalService``: a real ``python -m service`` on a free port, optionally several workers."""

from __future__ import annotations

import httpx
import numpy as np
import psutil

from attacks_client.evaluation.launch import LocalService
from attacks_client.oracles.http import HttpOracle


def test_a_two_worker_local_service_serves_and_stops() -> None:
    """``workers`` goes to uvicorn (two server processes), every other key is a setting."""
    with LocalService({"workers": 2, "torch_threads": 1, "defense": "none"}) as service:
        models = httpx.get(service.url + "/models").json()["models"]
        assert models[0]["defense"]["kind"] == "none"
        assert service._proc is not None
        parent = psutil.Process(service._proc.pid)
        assert sum("spawn" in " ".join(c.cmdline()) for c in parent.children()) == 2
        with HttpOracle(service.url) as oracle:
            x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
            assert oracle.labels(x).shape == (5,) and oracle.queries == 5
        pid = service._proc.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
