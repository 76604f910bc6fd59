"""Randomness of the noisy zoo models (RSE, PNI): per-layer generators, never the global RNG.

Like SND's noise, a served model's noise comes from generators seeded from OS entropy, so two
servers (or two restarts) never replay the same noise sequence, and nothing about it is exposed.
Offline code (training, the accuracy tables, tests) calls :func:`seed_noise` to make the noise
reproducible.
"""

from __future__ import annotations

import secrets

import torch
from torch import nn


class NoiseSource:
    """Mixin for modules that draw noise: one lazily created generator per device."""

    _noise_seed: int | None = None
    _noise_generators: dict[torch.device, torch.Generator]

    def reseed_noise(self, seed: int | None) -> None:
        """Seed this layer's generators (``None``: fresh OS entropy on next use)."""
        self._noise_seed = seed
        self._noise_generators = {}

    def noise_generator(self, device: torch.device) -> torch.Generator:
        generators = self.__dict__.setdefault("_noise_generators", {})
        gen = generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            seed = self._noise_seed
            gen.manual_seed(secrets.randbits(63) if seed is None else seed)
            generators[device] = gen
        return gen

    def randn(self, shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of ``shape`` on ``like``'s device and dtype (no gradient)."""
        gen = self.noise_generator(like.device)
        return torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype)


def noise_sources(module: nn.Module) -> list[NoiseSource]:
    return [m for m in module.modules() if isinstance(m, NoiseSource)]


def seed_noise(module: nn.Module, seed: int | None) -> int:
    """Seed every noise layer of ``module`` from one seed (distinct per layer); ``None``
    re-seeds them all from OS entropy. Returns the number of noise layers."""
    layers = noise_sources(module)
    if seed is None:
        for layer in layers:
            layer.reseed_noise(None)
        return len(layers)
    seeds = torch.randint(0, 2**62, (len(layers),), generator=torch.Generator().manual_seed(seed))
    for layer, layer_seed in zip(layers, seeds.tolist(), strict=True):
        layer.reseed_noise(int(layer_seed))
    return len(layers)
