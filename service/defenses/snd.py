"""Small Noise Defense (SND): answer f(x + k·σ·η) with fresh noise for every image.

Byun, Go & Kim, "Small input noise is enough to defend against query-based black-box
attacks" (ICLR 2021 submission), Eq. (2); k ~ Beta(α, β) per image is their App. C.
The noise is added in [0, 1] pixel space, before the model's normalization, without
clipping unless asked. It comes from a generator seeded from OS entropy; neither the seed
nor any noise value is ever exposed.

Noise kinds beyond Gaussian are the paper's future work (Sec. 5); all share the meaning of σ as
the per-pixel standard deviation, so rows with the same σ compare the law, not the power.
"""

from __future__ import annotations

import math
import secrets
import threading
from typing import Any, Literal

import numpy as np
import torch

NoiseKind = Literal["gaussian", "uniform", "laplace", "salt_pepper"]
ScaleDistribution = Literal["fixed", "beta"]


class SmallNoiseDefense:
    """Additive zero-mean noise of standard deviation ``k·σ``, independent per pixel and image.

    ``noise`` picks the law (all with standard deviation σ): ``gaussian`` N(0, σ²),
    ``uniform`` U(−√3σ, √3σ), ``laplace`` Laplace(0, σ/√2), and ``salt_pepper``: impulse
    noise that is +a or −a (equally likely) with probability p = σ²/a² and 0 otherwise, so
    Var = p·a² = σ². The amplitude a (``sp_amplitude``, default 1) must be >= σ. With a = 1 and
    ``clip=True`` a hit pixel becomes exactly 1 (salt) or 0 (pepper): classical salt-and-pepper
    noise of density σ² (before clipping the std is exactly σ; clipping only shrinks it). With
    Beta scaling, the impulses are ±k·a at the same density, i.e. std k·σ as for the others.
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
        sp_amplitude: float = 1.0,
        seed: int | None = None,
    ) -> None:
        """``seed`` is for offline experiments only (clean-accuracy repeats); the service never
        sets it, so its generators are seeded from OS entropy."""
        if sigma < 0 or not math.isfinite(sigma):
            raise ValueError("sigma must be a finite number >= 0")
        if distribution == "beta" and (alpha <= 0 or beta <= 0):
            raise ValueError("alpha and beta must be > 0")
        if noise == "salt_pepper" and not 0 <= sigma <= sp_amplitude:
            raise ValueError("salt_pepper needs 0 <= sigma <= sp_amplitude")
        self.sigma = float(sigma)
        self.noise = noise
        self.distribution = distribution
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.clip = clip
        self.sp_amplitude = float(sp_amplitude)
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
            elif self.noise == "salt_pepper":
                eta = self._salt_pepper(shape, gen, device)
            else:
                raise ValueError(f"unknown noise kind {self.noise!r}")
            scale = self.sigma
            if self.distribution == "beta":
                k = self._scale_rng.beta(self.alpha, self.beta, size=shape[0]).astype(np.float32)
                per_image = torch.from_numpy(k).to(device).view(-1, *([1] * (len(shape) - 1)))
                return eta * (per_image * scale)
        return eta * scale

    def _salt_pepper(
        self, shape: torch.Size, gen: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """Unit-variance impulses ±a/σ with probability (σ/a)², zero elsewhere."""
        ratio = self.sp_amplitude / self.sigma
        u = torch.rand(shape, generator=gen, device=device)
        density = 1.0 / ratio**2
        hit = u < density
        # reuse u for the sign: given a hit, u / density is uniform on [0, 1)
        sign = torch.where(u < density / 2, -1.0, 1.0)
        return torch.where(hit, sign * ratio, torch.zeros((), device=device))

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
            **({"sp_amplitude": self.sp_amplitude} if self.noise == "salt_pepper" else {}),
        }
