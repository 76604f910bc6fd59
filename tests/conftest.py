"""Shared fixtures: real uvicorn servers and a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import RedisProcess, ServiceProcess, UpstreamProcess


@pytest.fixture(scope="session")
def snd_server() -> Iterator[ServiceProcess]:
    """The default service: resnet20-mnist behind SND σ = 0.01, open, in-memory counter."""
    with ServiceProcess({"defense": "snd", "sigma": 0.01}) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    with RedisProcess() as redis:
        yield redis


@pytest.fixture(scope="session")
def kserve_upstream() -> Iterator[UpstreamProcess]:
    """kserve's ModelServer serving the embedded ResNet-20 (logits, input ``images``)."""
    pytest.importorskip("kserve")
    with UpstreamProcess() as upstream:
        yield upstream
