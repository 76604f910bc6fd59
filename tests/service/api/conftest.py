"""Servers for the API tests: undefended and label-only, beside the session SND server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import ServiceProcess


@pytest.fixture(scope="session")
def plain_server() -> Iterator[ServiceProcess]:
    with ServiceProcess({"defense": "none"}) as server:
        yield server


@pytest.fixture(scope="session")
def label_only_server() -> Iterator[ServiceProcess]:
    with ServiceProcess(
        {"defense": "snd", "sigma": 0.01, "label_only": True, "hide_defense_params": True}
    ) as server:
        yield server
