"""Subspace Attack: dropout schedule, black-box losses, reference models, counting, success."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks_client.attacks.subspace import NoReferenceModel, SubspaceAttack
from attacks_client.oracles.base import OracleError, ScoresUnavailable
from tests.attacks_client.score_helpers import (
    assert_converges_on_victim,
    constant_oracle,
    correct_images,
    linear_oracle,
    victim_oracle,
)


class _Target:
    def __init__(self, label: int, target: int | None = None) -> None:
        self.label, self.target = label, target


def test_dropout_schedule() -> None:
    attack = SubspaceAttack()
    drops = [attack.drop_at(t) for t in range(2000)]
    assert drops[0] == drops[9] == 0.05  # held for drop_grow_iter steps
    assert drops[10] == pytest.approx(0.05)
    assert all(b >= a - 1e-12 for a, b in zip(drops, drops[1:], strict=False))
    assert drops[11] > 0.05 and drops[-1] == pytest.approx(0.5, abs=1e-6)
    assert drops[110] == pytest.approx(0.5 - 0.45 * np.exp(-1.0))


@pytest.mark.parametrize("loss", ["cw", "xent"])
@pytest.mark.parametrize("target", [None, 4])
def test_losses_and_logit_gradients_from_probabilities(loss: str, target: int | None) -> None:
    # log-probabilities are the logits up to a constant: loss and gradient are exact
    logits = torch.randn(10, dtype=torch.float64) * 3
    probs = torch.softmax(logits, 0).numpy()
    attack = SubspaceAttack(loss=loss)  # type: ignore[arg-type]
    who = _Target(2, target)
    z = logits.clone().requires_grad_(True)
    if loss == "cw":
        cls = target if target is not None else 2
        others = torch.cat([z[:cls], z[cls + 1 :]])
        value = z[cls] - others.max() if target is not None else others.max() - z[cls]
    else:
        xent = torch.nn.functional.cross_entropy(z[None], torch.tensor([target or 2]))
        value = -xent if target is not None else xent
    (grad,) = torch.autograd.grad(value, [z])
    ours = attack._loss(attack._logits(probs)[None], who)[0]  # type: ignore[arg-type]
    assert ours == pytest.approx(float(value.detach()), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(
        attack._logit_grad(attack._logits(probs), who),  # type: ignore[arg-type]
        grad.numpy(),
        atol=1e-9,
    )


def test_dropout_changes_the_reference_direction() -> None:
    attack = SubspaceAttack()
    (_, model), *_ = attack.references((1, 28, 28), 10)
    x = correct_images()[0][0]
    grad = np.zeros(10)
    grad[[1, 2]] = [1.0, -1.0]
    generator = torch.Generator().manual_seed(0)
    plain = attack._direction(model, x, grad, 0.0, generator)
    assert np.allclose(plain, attack._direction(model, x, grad, 0.0, generator))
    dropped = attack._direction(model, x, grad, 0.5, generator)
    assert np.linalg.norm(plain) == pytest.approx(1.0)
    assert 0.0 < float(plain.ravel() @ dropped.ravel()) < 0.99  # related, not the same


def test_finds_adversarial_examples_on_the_embedded_model() -> None:
    assert_converges_on_victim(SubspaceAttack(epsilon=2.0), 2000, 2.0)


@pytest.mark.parametrize("budget", [1, 2, 4, 30, 31, 32, 401])
def test_two_queries_per_step_no_wasted_check(budget: int) -> None:
    # x0 (1), then 2 probes per step: the success check and the next direction's logits come
    # from the probes' answers, so a budget B gives (B - 1) // 2 steps
    images, labels = correct_images()
    oracle = constant_oracle(label=int(labels[0]))
    result = SubspaceAttack(reference_models="mnist-cnn")(
        oracle, images[0], int(labels[0]), budget, seed=0
    )
    steps = (budget - 1) // 2
    assert result.stop_reason == "budget"
    assert result.queries == oracle.queries == 1 + 2 * steps
    assert result.reference_queries == 2 * steps


def test_linf_variant_stays_in_the_box() -> None:
    oracle, x0, label = linear_oracle((1, 28, 28), seed=3, scale=3.0)
    attack = SubspaceAttack(norm="linf", epsilon=0.05)
    assert attack.step_size == pytest.approx(1 / 255)
    result = attack(oracle, x0, label, 200, seed=0)
    assert result.queries == oracle.queries <= 200
    for update in result.updates:
        assert np.abs(update.candidate - x0).max() <= 0.05 + 1e-6


def test_no_fitting_reference_model_is_a_clear_error_before_any_query() -> None:
    oracle, x0, label = linear_oracle((3, 32, 32))
    with pytest.raises(NoReferenceModel, match=r"input shape \(3, 32, 32\)") as info:
        SubspaceAttack()(oracle, x0, label, 100)
    assert isinstance(info.value, OracleError) and oracle.queries == 0
    oracle = victim_oracle()
    with pytest.raises(NoReferenceModel):
        SubspaceAttack(reference_models="no-such-model")(oracle, *_first(), 100)
    assert oracle.queries == 0


def _first() -> tuple[np.ndarray, int]:
    images, labels = correct_images()
    return images[0], int(labels[0])


def test_label_only_endpoint_stops_at_once() -> None:
    oracle = victim_oracle(scores=False)
    with pytest.raises(ScoresUnavailable):
        SubspaceAttack()(oracle, *_first(), 100)
    assert oracle.queries == 0
