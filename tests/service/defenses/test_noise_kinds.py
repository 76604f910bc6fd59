"""Every SND noise kind has standard deviation σ (the paper's future work: noise beyond
Gaussian), salt-and-pepper included, and the settings reach the defense."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from service.defenses import SmallNoiseDefense, build_defense
from service.model_settings import DefenseSettings
from service.settings import Settings

KINDS = ["gaussian", "uniform", "laplace", "salt_pepper"]


def added_noise(defense: SmallNoiseDefense, n: int = 64) -> np.ndarray:
    x = torch.full((n, 1, 28, 28), 0.5)
    return (defense(x.clone()) - x).numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_has_the_configured_std_and_zero_mean(kind: str) -> None:
    # salt-and-pepper with a = 0.05: density (0.01 / 0.05)² = 4%, ~2,000 impulses here
    defense = SmallNoiseDefense(0.01, noise=kind, sp_amplitude=0.05)  # type: ignore[arg-type]
    noise = added_noise(defense)
    assert abs(noise.std() - 0.01) / 0.01 < 0.05
    assert abs(noise.mean()) < 0.01 * 0.05


def test_salt_pepper_default_amplitude_has_std_sigma_and_density_sigma_squared() -> None:
    sigma = 0.1  # a = 1: density σ² = 1%
    noise = added_noise(SmallNoiseDefense(sigma, noise="salt_pepper"), n=1000)
    assert set(np.unique(noise.round(5))) <= {-1.0, 0.0, 1.0}
    assert abs((noise != 0).mean() - sigma**2) < 0.1 * sigma**2
    assert abs(noise.std() - sigma) / sigma < 0.05
    assert abs((noise > 0).mean() - (noise < 0).mean()) < 0.1 * sigma**2  # symmetric


def test_salt_pepper_with_clip_is_classical_salt_and_pepper() -> None:
    x = torch.rand(200, 1, 28, 28) * 0.8 + 0.1
    out = SmallNoiseDefense(0.2, noise="salt_pepper", clip=True)(x.clone())
    hit = out != x
    assert hit.any()
    assert set(out[hit].unique().tolist()) <= {0.0, 1.0}  # hit pixels become black or white


def test_salt_pepper_is_independent_per_image_and_per_call() -> None:
    defense = SmallNoiseDefense(0.1, noise="salt_pepper", sp_amplitude=0.2)
    a, b = added_noise(defense, 8), added_noise(defense, 8)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])


def test_salt_pepper_with_beta_scaling_has_per_image_std_k_sigma() -> None:
    defense = SmallNoiseDefense(
        0.02, noise="salt_pepper", sp_amplitude=0.05, distribution="beta", alpha=2.0, beta=2.0
    )
    k = added_noise(defense, 300).reshape(300, -1).std(axis=1) / 0.02
    assert abs(k.mean() - 0.5) < 0.06 and k.std() > 0.1


def test_settings_select_the_kind_and_amplitude() -> None:
    defense = build_defense(DefenseSettings(noise="salt_pepper", sigma=0.01, sp_amplitude=0.5))
    assert isinstance(defense, SmallNoiseDefense)
    assert defense.noise == "salt_pepper" and defense.sp_amplitude == 0.5
    assert defense.describe()["sp_amplitude"] == 0.5
    assert defense.describe(hide_params=True) == {"kind": "snd"}
    flat = Settings(noise="salt_pepper", sigma=0.02)
    assert flat.models[0].defense.noise == "salt_pepper"


def test_salt_pepper_sigma_above_amplitude_is_refused() -> None:
    with pytest.raises(ValidationError, match="sp_amplitude"):
        DefenseSettings(noise="salt_pepper", sigma=0.3, sp_amplitude=0.2)
    with pytest.raises(ValueError):
        SmallNoiseDefense(0.3, noise="salt_pepper", sp_amplitude=0.2)
