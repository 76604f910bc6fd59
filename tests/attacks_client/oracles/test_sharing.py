"""SharedRequests against a real server: concurrent runs share requests, each gets its own rows
and count, errors and refusals reach exactly the runs they concern, seeded attacks are unchanged."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import pytest

from attacks_client.attacks import get_attack
from attacks_client.oracles.base import BudgetExhausted, OracleError
from attacks_client.oracles.http import HttpOracle
from attacks_client.oracles.sharing import SharedRequests
from tests.servers import ServiceProcess


def batch(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def run_threads(targets: list[Callable[[], Any]]) -> list[Any]:
    """Run ``targets`` in threads; each one's return value or exception."""
    results: list[Any] = [None] * len(targets)

    def call(i: int) -> None:
        try:
            results[i] = targets[i]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@contextmanager
def held(sharing: SharedRequests, queued: int) -> Iterator[None]:
    """Occupy every request slot until ``queued`` runs wait, then free the slots as finished
    requests do: the next request takes the queue (what concurrent runs meet under load)."""
    with sharing._lock:
        sharing._in_flight += sharing.parallel
    released = threading.Event()

    def release() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sharing._lock:
                ready = len(sharing._queue) >= queued
            if ready:
                for _ in range(sharing.parallel):
                    sharing._finish([])
                released.set()
                return
            time.sleep(0.005)

    releaser = threading.Thread(target=release)
    releaser.start()
    yield
    releaser.join()
    assert released.is_set()


def oracles(url: str, key: str, n: int, sharing: SharedRequests, **kw: Any) -> list[HttpOracle]:
    return [HttpOracle(url, api_key=key, sharing=sharing, **kw) for _ in range(n)]


def test_queued_runs_share_one_request_and_get_their_own_rows(
    keyed_server: ServiceProcess,
) -> None:
    sharing = SharedRequests(parallel=1)
    runs = oracles(keyed_server.url, "share-key", 5, sharing, output="scores")
    images = [batch(i + 1, seed=i) for i in range(5)]  # 1 + 2 + ... + 5 images
    with HttpOracle(keyed_server.url, api_key="share-key", output="scores") as alone:
        expected = [alone.scores(x) for x in images]
        before = alone.server_queries
    with held(sharing, queued=5):
        answers = run_threads([partial(o.scores, x) for o, x in zip(runs, images, strict=True)])
    assert sharing.requests == 1 and sharing.images == 15
    for run, x, got, want in zip(runs, images, answers, expected, strict=True):
        # its own rows, in order (the model's float results move in the 6th digit with the
        # batch they are computed in, as under the server's own batching)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-9)
        assert run.queries == len(x)
        assert before is not None and run.server_queries == before + 15
        run.close()


def test_concurrent_runs_count_exactly(keyed_server: ServiceProcess) -> None:
    sharing = SharedRequests()
    runs = oracles(keyed_server.url, "share-key", 8, sharing)
    with HttpOracle(keyed_server.url, api_key="share-key") as probe:
        probe.labels(batch(1, 99))
        before = probe.server_queries
        assert before is not None

    def work(oracle: HttpOracle, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for step in range(25):
            x = batch(1 + step % 3, seed * 100 + step)
            out.append((x, oracle.labels(x)))
        return out

    results = run_threads([partial(work, o, s) for s, o in enumerate(runs)])
    with HttpOracle(keyed_server.url, api_key="share-key") as check:
        for sent in results:
            for x, labels in sent:
                np.testing.assert_array_equal(labels, check.labels(x))
        check_cost = check.queries
        check.labels(batch(1, 98))
        after = check.server_queries
    total = sum(r.queries for r in runs)
    assert total == 8 * sum(1 + step % 3 for step in range(25))
    assert after == before + total + check_cost + 1  # the server charged exactly what was sent
    assert sharing.images == total and sharing.requests <= 8 * 25
    for run in runs:
        run.close()


def test_a_lone_run_sends_at_once(keyed_server: ServiceProcess) -> None:
    sharing = SharedRequests()
    with HttpOracle(keyed_server.url, api_key="share-key", sharing=sharing) as oracle:
        for n in (1, 3, 2):
            oracle.labels(batch(n, n))
        assert sharing.requests == 3 and oracle.requests == 3 and oracle.queries == 6


def test_a_budget_refusal_lets_the_runs_that_fit_through(keyed_server: ServiceProcess) -> None:
    sharing = SharedRequests(parallel=1)
    first, second = oracles(keyed_server.url, "share-budget-key", 2, sharing)  # server budget 50
    with held(sharing, queued=2):
        answers = run_threads(
            [lambda: first.labels(batch(30, 1)), lambda: second.labels(batch(30, 2))]
        )
    refused = [a for a in answers if isinstance(a, BudgetExhausted)]
    assert len(refused) == 1  # 60 > 50: the shared request was refused, then one run fit
    assert sorted([first.queries, second.queries]) == [0, 30]
    assert max(first.server_queries or 0, second.server_queries or 0) == 30
    first.close()
    second.close()


def test_an_error_reaches_only_the_runs_of_its_request(keyed_server: ServiceProcess) -> None:
    sharing = SharedRequests(parallel=1, max_batch=4)
    good, bad, later = oracles(keyed_server.url, "share-key", 3, sharing)
    poisoned = batch(2, 5)
    poisoned[1, 0, 0, 0] = np.nan  # the server refuses the whole request (422), charging nothing

    def late(oracle: HttpOracle) -> np.ndarray:
        time.sleep(0.2)
        return oracle.labels(batch(2, 6))

    with held(sharing, queued=3):
        answers = run_threads(
            [
                lambda: good.labels(batch(2, 4)),
                lambda: bad.labels(poisoned),
                partial(late, later),  # queued last
            ]
        )
    assert isinstance(answers[0], OracleError) and isinstance(answers[1], OracleError)
    assert good.queries == bad.queries == 0
    assert isinstance(answers[2], np.ndarray) and later.queries == 2
    for oracle in (good, bad, later):
        oracle.close()


def test_a_batch_over_the_server_limit_is_split(keyed_server: ServiceProcess) -> None:
    sharing = SharedRequests(parallel=1, max_batch=1000)  # the server takes 256
    runs = oracles(keyed_server.url, "share-key", 3, sharing)
    with held(sharing, queued=3):
        answers = run_threads([partial(o.labels, batch(100, i)) for i, o in enumerate(runs)])
    assert all(isinstance(a, np.ndarray) and a.shape == (100,) for a in answers)
    assert sharing.max_batch == 256 and sharing.images == 300
    for run in runs:
        assert run.queries == 100
        run.close()


@pytest.mark.parametrize("attack", ["square", "simba-dct"])
def test_seeded_attacks_are_unchanged_by_sharing(
    keyed_server: ServiceProcess, mnist_test: tuple[np.ndarray, np.ndarray], attack: str
) -> None:
    images, labels = mnist_test
    chosen = [0, 1, 2]

    def attack_run(i: int, sharing: SharedRequests | None) -> tuple[int, float, str]:
        with HttpOracle(
            keyed_server.url, api_key="share-key", output="scores", sharing=sharing
        ) as oracle:
            result = get_attack(attack)()(oracle, images[i], int(labels[i]), 200, seed=i)
        return result.queries, result.l2_at(200), result.stop_reason

    alone = [attack_run(i, None) for i in chosen]
    sharing = SharedRequests(parallel=1)
    shared = run_threads([partial(attack_run, i, sharing) for i in chosen])
    assert shared == alone
    assert sharing.images == sum(q for q, _, _ in alone)  # every image went through it
