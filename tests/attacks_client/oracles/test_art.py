"""ART's attacks through ``ArtBridge`` against real servers: exact counts, clean budget stops."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("art")

from art.attacks.evasion import GeoDA, HopSkipJump, SimBA  # noqa: E402
from art.estimators.classification import (  # noqa: E402
    BlackBoxClassifier,
    BlackBoxClassifierNeuralNetwork,
)
from art.exceptions import EstimatorError  # noqa: E402

from attacks_client.attacks.art import (  # noqa: E402
    art_geoda,
    run_art_attack,
    run_hsja_iterations,
)
from attacks_client.oracles.art import (  # noqa: E402
    INSTALL_HINT,
    ArtBridge,
    art_classifier,
    numpy2_shims,
)
from attacks_client.oracles.base import BudgetExhausted, FunctionOracle  # noqa: E402
from attacks_client.oracles.factory import open_oracle  # noqa: E402
from attacks_client.oracles.http import HttpOracle  # noqa: E402
from tests.servers import ROOT, ServiceProcess  # noqa: E402

# Counts are per caller and cumulative over the session's keyed_server; these tests compare
# deltas, and use a key whose other tests make no assertion on the server's count (test_http's
# keys assume theirs start at zero, and this module runs before it).
KEY = "cli-key"
Images = tuple[np.ndarray, np.ndarray]


class AskedFor:
    """Counts the images ART asks its classifier for (every ``predict`` call, refused or not)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, classifier: Any) -> None:
        self.images = 0
        self.calls: list[int] = []
        predict = classifier.predict

        def counting(x: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
            self.images += len(x)
            self.calls.append(len(x))
            return np.asarray(predict(x, *args, **kwargs))

        monkeypatch.setattr(classifier, "predict", counting)


@pytest.fixture(params=["predict", "v2"])
def oracle(keyed_server: ServiceProcess, request: pytest.FixtureRequest) -> Iterator[HttpOracle]:
    """The gateway's model through /predict and through the Open Inference Protocol."""
    url = keyed_server.url
    with open_oracle(url, "resnet20-mnist", protocol=request.param, api_key=KEY) as oracle:
        yield oracle


def spent(oracle: HttpOracle, start: tuple[int, int]) -> tuple[int, int]:
    """``(oracle.queries, server count)`` deltas since ``start``."""
    assert oracle.server_queries is not None
    return oracle.queries - start[0], oracle.server_queries - start[1]


def correct_image(
    oracle: HttpOracle, mnist_test: Images, noise_class: bool = False
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """A correctly classified test image whose class is not (or, with ``noise_class``, is) the
    one the model gives uniform noise: ART's HopSkipJump starts from uniform noise and GeoDA
    from ever larger Gaussian noise, so neither finds a start for an image of that class (the
    embedded model calls all noise an 8). Correct in two draws: under SND a borderline image
    (the first test image is one) may be right once and wrong the next time. The probe also
    tells the server's count: the third item is ``(oracle.queries, server count)`` after it."""
    images, labels = mnist_test
    noise = np.random.default_rng(0).random((1, *images.shape[1:]), dtype=np.float32)
    probe = np.concatenate([images[:16], noise])
    predicted = oracle.labels(np.concatenate([probe, probe])).reshape(2, -1)
    fits = (predicted[:, :16] == labels[:16]).all(0)
    fits &= (labels[:16] == predicted[0, 16]) == noise_class
    i = int(np.flatnonzero(fits)[0])
    assert oracle.server_queries is not None
    return images[i], int(labels[i]), (oracle.queries, oracle.server_queries)


def linear_oracle(scores: bool) -> FunctionOracle:
    weights = np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32)

    def predict(x: np.ndarray) -> np.ndarray:
        z = x.reshape(len(x), -1) @ weights
        e = np.exp(z - z.max(1, keepdims=True))
        return np.asarray(e / e.sum(1, keepdims=True))

    return FunctionOracle(predict, (1, 28, 28), 10, scores=scores)


def test_classifier_types_and_predictions() -> None:
    labels, scores = linear_oracle(False), linear_oracle(True)
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    clf = art_classifier(labels)
    assert isinstance(clf, BlackBoxClassifier)
    assert not isinstance(clf, BlackBoxClassifierNeuralNetwork)
    assert clf.input_shape == (1, 28, 28) and clf.nb_classes == 10
    assert clf.clip_values is not None and tuple(clf.clip_values) == (0.0, 1.0)
    one_hot = clf.predict(x * 3 - 1)  # out-of-range pixels are clipped before sending
    assert one_hot.dtype == np.float32 and set(one_hot.sum(1)) == {1.0}
    assert clf.bridge.queries == labels.queries == 3 and clf.bridge.requests == 1
    probs = ArtBridge(scores).classifier
    assert isinstance(probs, BlackBoxClassifierNeuralNetwork) and probs.channels_first
    np.testing.assert_allclose(probs.predict(x).sum(1), 1.0, rtol=1e-5)
    assert isinstance(ArtBridge(scores, scores=False).classifier, BlackBoxClassifier)
    with pytest.raises(EstimatorError):  # SimBA needs NeuralNetworkMixin: a scores oracle
        SimBA(clf)


def test_budget_refuses_a_crossing_chunk_and_sends_nothing() -> None:
    oracle = linear_oracle(False)
    bridge = ArtBridge(oracle, budget=5)
    x = np.zeros((4, 1, 28, 28), np.float32)
    bridge.classifier.predict(x)
    with pytest.raises(BudgetExhausted):
        bridge.classifier.predict(x)
    assert bridge.queries == oracle.queries == 4 and bridge.remaining == 1


def test_geoda_gets_a_plan_art_can_make() -> None:
    clf = art_classifier(linear_oracle(False))
    assert art_geoda(clf, max_iter=300, verbose=False).max_iter == 300
    with pytest.raises(RecursionError):  # ART 1.20.1's query planning
        GeoDA(clf, max_iter=280, verbose=False)
    assert art_geoda(clf, max_iter=280, verbose=False).max_iter == 268
    with pytest.raises(ValueError, match="more than 250"):
        art_geoda(clf, max_iter=250)


def test_adapter_imports_without_art() -> None:
    code = (
        "import sys; sys.modules['art'] = None; import attacks_client.oracles.art as i; "
        "from attacks_client.oracles.base import FunctionOracle as F\n"
        "try:\n i.ArtBridge(F(lambda x: x, (1, 2, 2), 2))\n"
        "except ImportError as e: print(e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == INSTALL_HINT
    assert "pip install 'snd-gateway[parity]'" in INSTALL_HINT


def test_hsja_counts_exactly(
    oracle: HttpOracle, mnist_test: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    x0, label, start = correct_image(oracle, mnist_test)
    bridge = ArtBridge(oracle)
    asked = AskedFor(monkeypatch, bridge.classifier)
    attack = HopSkipJump(
        bridge.classifier, max_iter=2, max_eval=100, init_eval=10, init_size=20, verbose=False
    )
    result = run_art_attack(attack, x0, label, bridge)
    assert result.stop_reason == "converged" and result.adversarial is not None
    assert result.queries == bridge.queries == asked.images > 0
    assert spent(oracle, start) == (bridge.queries, bridge.queries)
    assert result.requests == bridge.requests == len(asked.calls)
    assert oracle.labels(result.adversarial[None])[0] != label  # undefended: really adversarial


def test_hsja_stops_cleanly_at_the_budget(
    oracle: HttpOracle, mnist_test: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    x0, label, start = correct_image(oracle, mnist_test)
    bridge = ArtBridge(oracle, budget=150)
    asked = AskedFor(monkeypatch, bridge.classifier)
    result = run_art_attack(
        lambda clf: HopSkipJump(
            clf, max_iter=20, max_eval=100, init_eval=10, init_size=20, verbose=False
        ),
        x0,
        label,
        bridge,
    )
    assert result.stop_reason == "budget" and result.adversarial is None
    assert result.queries == bridge.queries <= 150
    assert spent(oracle, start) == (bridge.queries, bridge.queries)
    # the last call ART made was refused whole: it would have crossed the budget
    refused = asked.calls[-1]
    assert asked.images - refused == bridge.queries and bridge.queries + refused > 150


def test_simba_with_scores_counts_exactly(
    snd_server: ServiceProcess, mnist_test: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HttpOracle(snd_server.url, output="scores") as oracle:
        x0, label, start = correct_image(oracle, mnist_test)
        bridge = ArtBridge(oracle)
        assert bridge.scores
        asked = AskedFor(monkeypatch, bridge.classifier)
        attack = SimBA(bridge.classifier, attack="dct", max_iter=50, epsilon=0.2, verbose=False)
        result = run_art_attack(attack, x0, label, bridge)
        assert result.stop_reason == "converged"
        assert 3 <= result.queries == bridge.queries == asked.images <= 1 + 2 * 50
        assert spent(oracle, start) == (bridge.queries, bridge.queries)


def test_hsja_iterations_give_checkpoints_within_budget(
    oracle: HttpOracle, mnist_test: Images
) -> None:
    x0, label, start = correct_image(oracle, mnist_test)
    bridge = ArtBridge(oracle, budget=250)
    run = run_hsja_iterations(
        bridge, x0, label, iterations=8, max_eval=100, init_eval=10, init_size=20
    )
    assert run.stop_reason in ("budget", "converged") and len(run.updates) >= 2
    queries = [q for q, _ in run.updates]
    assert queries == sorted(set(queries)) and queries[-1] <= run.queries <= 250
    l2 = [float(np.linalg.norm(c - x0)) for _, c in run.updates]
    assert l2[-1] < l2[0]  # progress
    assert run.final_candidate is run.updates[-1][1]
    assert spent(oracle, start) == (run.queries, run.queries)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_geoda_runs_with_the_numpy2_shim(
    oracle: HttpOracle, mnist_test: Images, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delattr(np, "mat", raising=False)
    numpy2_shims()
    numpy2_shims()  # idempotent
    assert np.mat is np.asmatrix  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)  # GeoDA caches its DCT basis as a .npy file in the cwd
    x0, label, start = correct_image(oracle, mnist_test)
    # the budget also bounds GeoDA's random start search, an unbounded loop in ART 1.20.1
    bridge = ArtBridge(oracle, budget=600)
    result = run_art_attack(
        GeoDA(bridge.classifier, max_iter=300, verbose=False), x0, label, bridge
    )
    assert result.stop_reason in ("converged", "budget") and result.queries <= 600
    assert spent(oracle, start) == (bridge.queries, bridge.queries)
    # an image of the noise class: GeoDA's start search would never end; the budget ends it
    x8, label8, start = correct_image(oracle, mnist_test, noise_class=True)
    bridge = ArtBridge(oracle, budget=60)
    stuck = run_art_attack(
        lambda clf: art_geoda(clf, max_iter=300, verbose=False), x8, label8, bridge
    )
    assert stuck.stop_reason == "budget" and stuck.adversarial is None and stuck.queries == 60
    assert spent(oracle, start) == (60, 60)
