"""Small Noise Defense (SND): answer f(x + k·σ·η) with fresh noise for every image.

Byun, Go & Kim, "Small input noise is enough to defend against query-based black-box
attacks" (ICLR 2021 submission), Eq. (2); k ~ Beta(α, β) per image is their App. C.
The noise is added in [0, 1] pixel space, before the model's normalization, without
clipping unless asked. It comes from a generator seeded from OS entropy; neither the seed
nor any noise value is ever exposed.
"""

from __future__ import annotations

import math
import secrets
import threading
from typing import Any, Literal

import numpy as np
import torch

NoiseKind = Literal["gaussian", "uniform", "laplace"]
ScaleDistribution = Literal["fixed", "beta"]


class SmallNoiseDefense:
    """Additive zero-mean noise of standard deviation ``k·σ``, independent per pixel and image.

    ``noise`` picks the law (all with standard deviation σ): ``gaussian`` N(0, σ²),
    ``uniform`` U(−√3σ, √3σ), ``laplace`` Laplace(0, σ/√2).
    """

    kind = "snd"

    def __init__(
        self,
        sigma: float,
        *,
        noise: NoiseKind = "gaussian",
        distribution: ScaleDistribution = "fixed",
        alpha: float = 1.0,
        beta: float = 1.0,
        clip: bool = False,
        seed: int | None = None,
    ) -> None:
        """``seed`` is for offline experiments only (clean-accuracy repeats); the service never
        sets it, so its generators are seeded from OS entropy."""
        if sigma < 0 or not math.isfinite(sigma):
            raise ValueError("sigma must be a finite number >= 0")
        if distribution == "beta" and (alpha <= 0 or beta <= 0):
            raise ValueError("alpha and beta must be > 0")
        self.sigma = float(sigma)
        self.noise = noise
        self.distribution = distribution
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.clip = clip
        self._lock = threading.Lock()
        self._generators: dict[torch.device, torch.Generator] = {}
        self._seed = seed
        self._scale_rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(secrets.randbits(63) if self._seed is None else self._seed)
            self._generators[device] = gen
        return gen

    def sample_noise(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        """Noise of the configured law and scale, one independent draw per element."""
        with self._lock:
            gen = self._generator(device)
            if self.noise == "gaussian":
                eta = torch.randn(shape, generator=gen, device=device)
            elif self.noise == "uniform":
                eta = (torch.rand(shape, generator=gen, device=device) * 2 - 1) * math.sqrt(3)
            elif self.noise == "laplace":
                u = torch.rand(shape, generator=gen, device=device).clamp_(1e-7, 1 - 1e-7) - 0.5
                eta = -torch.sign(u) * torch.log1p(-2 * u.abs()) / math.sqrt(2)
            else:
                raise ValueError(f"unknown noise kind {self.noise!r}")
            scale = self.sigma
            if self.distribution == "beta":
                k = self._scale_rng.beta(self.alpha, self.beta, size=shape[0]).astype(np.float32)
                per_image = torch.from_numpy(k).to(device).view(-1, *([1] * (len(shape) - 1)))
                return eta * (per_image * scale)
        return eta * scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return x
        noisy = x + self.sample_noise(x.shape, x.device)
        return noisy.clamp_(0.0, 1.0) if self.clip else noisy

    def describe(self, *, hide_params: bool = False) -> dict[str, Any]:
        if hide_params:
            return {"kind": self.kind}
        return {
            "kind": self.kind,
            "sigma": self.sigma,
            "noise": self.noise,
            "distribution": self.distribution,
            **({"alpha": self.alpha, "beta": self.beta} if self.distribution == "beta" else {}),
            "clip": self.clip,
        }
