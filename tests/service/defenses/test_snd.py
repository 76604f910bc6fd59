"""SND statistics: σ, independence within a batch and across calls, σ = 0, Beta scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.defenses import NoDefense, SmallNoiseDefense, build_defense
from service.model_settings import DefenseSettings


def added_noise(defense: SmallNoiseDefense, x: torch.Tensor) -> np.ndarray:
    return (defense(x.clone()) - x).numpy()


def test_gaussian_std_is_sigma_within_5_percent() -> None:
    x = torch.full((64, 1, 28, 28), 0.5)
    noise = added_noise(SmallNoiseDefense(0.01), x)
    assert abs(noise.std() - 0.01) / 0.01 < 0.05
    assert abs(noise.mean()) < 0.01 * 0.05


def test_noise_is_uncorrelated_across_images_in_one_batch() -> None:
    x = torch.full((32, 1, 28, 28), 0.5)  # identical images
    noise = added_noise(SmallNoiseDefense(0.01), x).reshape(32, -1)
    corr = np.corrcoef(noise)
    off_diagonal = corr[~np.eye(32, dtype=bool)]
    # 784 pixels: the sample correlation of independent noise has sd ~ 1/sqrt(784) = 0.036
    assert np.abs(off_diagonal).max() < 0.2
    assert abs(off_diagonal.mean()) < 0.01


def test_same_query_twice_gets_different_noise() -> None:
    defense = SmallNoiseDefense(0.01)
    x = torch.full((1, 1, 28, 28), 0.5)
    first, second = added_noise(defense, x), added_noise(defense, x)
    assert not np.allclose(first, second)
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.2


def test_two_defenses_are_seeded_independently() -> None:
    x = torch.full((1, 1, 28, 28), 0.5)
    a, b = added_noise(SmallNoiseDefense(0.01), x), added_noise(SmallNoiseDefense(0.01), x)
    assert not np.allclose(a, b)


def test_sigma_zero_is_the_identity() -> None:
    x = torch.rand(8, 3, 32, 32)
    assert torch.equal(SmallNoiseDefense(0.0)(x), x)
    assert torch.equal(NoDefense()(x), x)


def test_clip_keeps_pixels_in_range_and_default_does_not() -> None:
    x = torch.ones(16, 1, 28, 28)
    assert SmallNoiseDefense(0.05)(x.clone()).max() > 1.0
    clipped = SmallNoiseDefense(0.05, clip=True)(x.clone())
    assert clipped.max() <= 1.0 and clipped.min() >= 0.0


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.0, 2.0), (0.5, 0.5)])
def test_beta_scaled_sigma_per_image(alpha: float, beta: float) -> None:
    """k ~ Beta(α, β) per image: per-image stds are k·σ, with E[k] = α / (α + β)."""
    x = torch.full((400, 1, 28, 28), 0.5)
    defense = SmallNoiseDefense(0.02, distribution="beta", alpha=alpha, beta=beta)
    per_image_std = added_noise(defense, x).reshape(400, -1).std(axis=1)
    k = per_image_std / 0.02
    assert abs(k.mean() - alpha / (alpha + beta)) < 0.05
    expected_var = alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1))
    assert abs(k.var() - expected_var) < 0.3 * expected_var + 0.005
    assert k.std() > 0.1  # really per image, not one k for the batch


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "laplace"])
def test_noise_kinds_have_the_configured_std(kind: str) -> None:
    x = torch.full((64, 1, 28, 28), 0.5)
    noise = added_noise(SmallNoiseDefense(0.01, noise=kind), x)  # type: ignore[arg-type]
    assert abs(noise.std() - 0.01) / 0.01 < 0.05
    kurtosis = ((noise - noise.mean()) ** 4).mean() / noise.var() ** 2
    expected = {"gaussian": 3.0, "uniform": 1.8, "laplace": 6.0}[kind]
    assert abs(kurtosis - expected) < 0.15 * expected


def test_describe_hides_parameters_on_request() -> None:
    defense = build_defense(DefenseSettings(kind="snd", sigma=0.02))
    assert defense.describe()["sigma"] == 0.02
    assert defense.describe(hide_params=True) == {"kind": "snd"}


def test_invalid_sigma_is_refused() -> None:
    with pytest.raises(ValueError):
        SmallNoiseDefense(-0.1)
