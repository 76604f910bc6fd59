"""In-process oracles for the score-attack tests.

``victim_oracle`` wraps the service's embedded resnet20-mnist in a ``FunctionOracle`` (tests may
import ``service``; the attack client never does). ``linear_oracle`` is a random linear softmax
model of any shape (e.g. 3 x 32 x 32, where no victim checkpoint exists).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from attacks_client.attacks.base import Attack
from attacks_client.data import embedded_mnist
from attacks_client.oracles.base import FunctionOracle

MNIST_SHAPE = (1, 28, 28)


@functools.lru_cache(maxsize=1)
def _victim() -> torch.nn.Module:
    from service.models import get_spec

    return get_spec("resnet20-mnist").build()


def victim_predict(x: np.ndarray) -> np.ndarray:
    # one intra-op thread: single-image passes on a shared 2-core machine are several times
    # faster than with two threads contending
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return torch.softmax(_victim()(torch.from_numpy(x)), 1).numpy()
    finally:
        torch.set_num_threads(threads)


def victim_oracle(scores: bool = True) -> FunctionOracle:
    """The undefended embedded model, answering probabilities (or labels only)."""
    return FunctionOracle(victim_predict, MNIST_SHAPE, 10, scores=scores)


@functools.lru_cache(maxsize=1)
def correct_images(count: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` test images the victim classifies correctly, and their labels."""
    data = embedded_mnist("test")
    labels = victim_predict(data.images[:100]).argmax(1)
    keep = np.flatnonzero(labels == data.labels[:100])[:count]
    return data.images[keep], data.labels[keep]


def assert_converges_on_victim(
    attack: Attack, budget: int, epsilon: float, images: int = 3
) -> None:
    """``attack`` finds, within ``budget`` queries, an adversarial example within ``epsilon`` on
    each of the first ``images`` correctly classified test images of the embedded victim."""
    xs, labels = correct_images()
    for x0, label in zip(xs[:images], labels[:images], strict=True):
        oracle = victim_oracle()
        result = attack(oracle, x0, int(label), budget, seed=0)
        assert result.stop_reason == "converged" and result.final_candidate is not None
        assert result.queries == oracle.queries <= budget
        assert victim_predict(result.final_candidate[None]).argmax() != label
        assert result.final_l2 <= epsilon + 1e-4


def linear_oracle(
    shape: tuple[int, int, int], seed: int = 0, scale: float = 1.0
) -> tuple[FunctionOracle, np.ndarray, int]:
    """A random linear softmax classifier of ``shape`` inputs and an image it labels."""
    rng = np.random.default_rng(seed)
    dim = int(np.prod(shape))
    weights = rng.standard_normal((10, dim)).astype(np.float32) * scale / np.sqrt(dim)

    def predict(x: np.ndarray) -> np.ndarray:
        logits = x.reshape(len(x), -1).astype(np.float64) @ weights.T.astype(np.float64)
        logits -= logits.max(1, keepdims=True)
        probs = np.exp(logits)
        return np.asarray(probs / probs.sum(1, keepdims=True), dtype=np.float32)

    x0 = (rng.random(shape) * 0.5 + 0.25).astype(np.float32)
    return FunctionOracle(predict, shape, 10), x0, int(predict(x0[None]).argmax())


def constant_oracle(shape: tuple[int, int, int] = MNIST_SHAPE, label: int = 0) -> FunctionOracle:
    """Always the same confident answer: no attack ever makes progress (for counting tests)."""
    probs = np.full(10, 0.01, np.float32)
    probs[label] = 0.91

    def predict(x: np.ndarray) -> np.ndarray:
        return np.repeat(probs[None], len(x), axis=0)

    return FunctionOracle(predict, shape, 10)
