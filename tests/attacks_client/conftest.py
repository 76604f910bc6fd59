"""Servers for the attack-client tests: real uvicorn subprocesses (see ``tests/servers.py``).

* ``keyed_server``: resnet20-mnist without defense behind API keys, per-caller budgets, and a
  second, label-only copy of the model;
* ``snd_server`` (``tests/conftest.py``): SND σ = 0.01, open.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest

from attacks_client.data import embedded_mnist
from tests.servers import ServiceProcess

# key -> caller name; callers with a budget in BUDGETS
KEYS = {
    "count-key": "counter",
    "budget-key": "budgeted",
    "mode-key": "modes",
    "cli-key": "cli",
    "attack-key": "attacker",
    "eval-key": "evaluator",
    "v2-budget-key": "v2budgeted",
    "share-key": "sharer",
    "share-budget-key": "sharebudgeted",
    "shard-key": "sharder",
}
BUDGETS = {"budgeted": 50, "v2budgeted": 30, "sharebudgeted": 50}
LABEL_ONLY_MODEL = "mnist-labels"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="session")
def keyed_server() -> Iterator[ServiceProcess]:
    settings = {
        "api_keys": {sha256(key): caller for key, caller in KEYS.items()},
        "budgets": BUDGETS,
        "models": [
            {"name": "resnet20-mnist", "defense": {"kind": "none"}},
            {
                "name": LABEL_ONLY_MODEL,
                "zoo": "resnet20-mnist",
                "defense": {"kind": "none"},
                "label_only": True,
            },
        ],
    }
    with ServiceProcess(settings) as server:
        yield server


@pytest.fixture(scope="session")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    data = embedded_mnist("test")
    return data.images, data.labels
