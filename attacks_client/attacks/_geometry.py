"""Small geometric helpers shared by the decision-based attacks (HSJA, Boundary, GeoDA)."""

from __future__ import annotations

import logging

import numpy as np

from attacks_client.attacks.base import AttackOracle

log = logging.getLogger(__name__)


def clip01(x: np.ndarray) -> np.ndarray:
    """Pixels clipped to [0, 1], float32 (the service refuses anything outside)."""
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def unit(v: np.ndarray) -> np.ndarray:
    """``v / ||v||`` (L2 over all axes); ``v`` unchanged if it is zero."""
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).ravel()))


def uniform_noise_init(
    oracle: AttackOracle, rng: np.random.Generator, tries: int, *, fallback: bool = True
) -> np.ndarray | None:
    """Draw uniform-noise images one at a time until one is adversarial (at most ``tries``).

    One query per draw, as in ART's ``_init_sample`` (HSJA and Boundary Attack). Uniform noise
    can fall in the true class every time (the MNIST model calls all U[0, 1] noise an "8");
    with ``fallback`` the search goes on, at most ``tries`` more queries, with noise of a random
    intensity, ``U[0, s]`` with ``s ~ U(0.05, 1)`` (dim noise lands in other classes)."""
    for _ in range(tries):
        noise = rng.uniform(0.0, 1.0, size=oracle.x0.shape).astype(np.float32)
        if oracle.is_adversarial(noise)[0]:
            return noise
    log.info("no adversarial uniform-noise image in %d draws", tries)
    return dim_noise_init(oracle, rng, tries) if fallback else None


def offered_start(oracle: AttackOracle) -> np.ndarray | None:
    """The caller's ``start`` when one query finds it adversarial (None otherwise or without
    one): foolbox 3's ``starting_points``, PopSkipJump's experiment-mode start."""
    if oracle.start is None:
        return None
    if oracle.is_adversarial(oracle.start)[0]:
        return oracle.start
    log.info("the offered start is not adversarial; searching noise instead")
    return None


def dim_noise_init(oracle: AttackOracle, rng: np.random.Generator, tries: int) -> np.ndarray | None:
    """Noise of a random intensity, ``U[0, s]`` with ``s ~ U(0.05, 1)``, one query per draw:
    the fallback start when full-range noise always falls in the true class."""
    for _ in range(tries):
        scale = rng.uniform(0.05, 1.0)
        noise = rng.uniform(0.0, scale, size=oracle.x0.shape).astype(np.float32)
        if oracle.is_adversarial(noise)[0]:
            return noise
    log.info("no adversarial noise image of any intensity in %d draws", tries)
    return None


def blend_search(oracle: AttackOracle, x_adv: np.ndarray, threshold: float) -> np.ndarray:
    """Bisection on the blend ``(1 - a) x0 + a x_adv`` down to ``threshold`` in ``a``.

    ``x_adv`` must be adversarial; the result is the adversarial end of the final interval
    (HSJA's ``binary_search_batch`` for one image, l2 projection)."""
    x0 = oracle.x0
    low, high = 0.0, 1.0
    while high - low > threshold:
        mid = (low + high) / 2.0
        if oracle.is_adversarial(clip01((1.0 - mid) * x0 + mid * x_adv))[0]:
            high = mid
        else:
            low = mid
    return clip01((1.0 - high) * x0 + high * x_adv)
