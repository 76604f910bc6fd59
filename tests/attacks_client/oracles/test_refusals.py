"""Refusals mapped by their code, the same on both oracles (``HttpOracle`` on /predict,
``OipOracle`` on /v2) against a real server: budget_exhausted is ``BudgetExhausted``, label_only
``ScoresUnavailable``, a throttled or suspended caller ``Refused`` (a suspended caller used to
surface from /v2 as ``ScoresUnavailable``, a throttled one as a plain ``BudgetExhausted``)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from attacks_client.oracles.base import BudgetExhausted, Refused, ScoresUnavailable
from attacks_client.oracles.http import HttpOracle
from attacks_client.oracles.oip import OipOracle
from attacks_client.oracles.sharing import SharedRequests
from tests.attacks_client.oracles.test_sharing import held, run_threads
from tests.servers import (
    REFUSING_LABELS,
    REFUSING_WATCHED,
    REFUSING_ZOO,
    ServiceProcess,
    refusing_settings,
)

MODEL, LABELS, WATCHED = REFUSING_ZOO, REFUSING_LABELS, REFUSING_WATCHED
PROTOCOLS = ("predict", "v2")
# one caller per protocol and test: budgets and detection state are per caller
CALLERS = [f"{p}-{use}" for p in PROTOCOLS for use in ("budget", "labels", "watch")] + ["v2-shared"]
THROTTLE_S = 2


@pytest.fixture(scope="module")
def server() -> Iterator[ServiceProcess]:
    """Budgets of 3, a label-only model, and a model under stateful detection that throttles
    at the first flag and suspends at the second."""
    keys = {hashlib.sha256(f"{c}-key".encode()).hexdigest(): c for c in CALLERS}
    settings = refusing_settings(keys, {f"{p}-budget": 3 for p in PROTOCOLS}, THROTTLE_S)
    with ServiceProcess(settings) as process:
        yield process


def open_oracle(server: ServiceProcess, protocol: str, use: str, model: str, **kw: Any) -> Any:
    kind = HttpOracle if protocol == "predict" else OipOracle
    return kind(server.url, model, api_key=f"{protocol}-{use}-key", **kw)


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 1, 28, 28), dtype=np.float32)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_spent_budget_is_budget_exhausted_not_refused(
    server: ServiceProcess, protocol: str
) -> None:
    with open_oracle(server, protocol, "budget", MODEL) as oracle:
        oracle.labels(np.concatenate([image(1), image(2), image(3)]))
        with pytest.raises(BudgetExhausted, match="refused the batch") as info:
            oracle.labels(image(4))
        assert type(info.value) is BudgetExhausted  # a Refused would end shared runs at once
        assert oracle.queries == oracle.server_queries == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_label_only_is_scores_unavailable(server: ServiceProcess, protocol: str) -> None:
    """The server's 403 label_only, as when a model turns label-only after the oracle read its
    metadata: the oracle asks for scores, the server refuses by code, nothing is counted."""
    with open_oracle(server, protocol, "labels", LABELS) as oracle:
        assert oracle.labels(image(5)).shape == (1,)
        oracle.output = "scores"
        if isinstance(oracle, OipOracle):
            oracle.score_output = "probabilities"
        with pytest.raises(ScoresUnavailable, match="labels only"):
            oracle.scores(image(6))
        assert oracle.queries == oracle.server_queries == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_throttled_then_suspended_callers_are_refused(
    server: ServiceProcess, protocol: str
) -> None:
    x = image(7)
    with open_oracle(server, protocol, "watch", WATCHED) as oracle:
        oracle.labels(x)
        oracle.labels(x)  # an exact repeat: the first flag, throttled from now on
        with pytest.raises(Refused, match=r"\(throttled\)"):
            oracle.labels(x)
        time.sleep(THROTTLE_S)
        oracle.labels(x)  # the second flag: suspended from now on
        with pytest.raises(Refused, match=r"\(suspended\)"):
            oracle.labels(image(8))
        assert oracle.queries == oracle.server_queries == 3


def refusals(server: ServiceProcess, code: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "snd_refusals_total" and sample.labels.get("reason") == code:
                return sample.value
    return 0.0


def test_a_throttled_shared_request_is_not_resent_run_by_run(server: ServiceProcess) -> None:
    """A budget refusal of a shared request is resent run by run (nothing was charged, some
    runs may fit); a throttle is not: both runs get ``Refused`` from the one request."""
    sharing = SharedRequests(parallel=1)
    x = image(9)
    first, second = (
        OipOracle(server.url, WATCHED, api_key="v2-shared-key", sharing=sharing) for _ in range(2)
    )
    first.labels(x)
    first.labels(x)  # throttled from now on
    before = refusals(server, "throttled")
    with held(sharing, queued=2):
        answers = run_threads([lambda: first.labels(image(10)), lambda: second.labels(image(11))])
    assert all(isinstance(a, Refused) for a in answers), answers
    assert refusals(server, "throttled") == before + 1
    first.close()
    second.close()
