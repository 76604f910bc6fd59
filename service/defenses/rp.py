"""Random Resizing and Padding (R&P): Xie, Wang, Zhang, Ren & Yuille, "Mitigating adversarial
effects through randomization" (ICLR 2018); reference code cihangxie/NIPS2017_adv_challenge_defense.

The reference resizes a 299x299 input to s x s with s drawn uniformly from [310, 331) (nearest
neighbour), then zero-pads it to 331x331 at a random offset (top/left offsets drawn uniformly
from [0, 331 - s]) and feeds the 331x331 image to the classifier. The comparison paper (Byun et
al., App. B.2) uses the same transform with the canvas 331/299 ≈ 1.107 times the input side.

Here the ranges are relative to the input side H (and W): the canvas side is
``round(max_scale · H)`` and ``s`` is drawn uniformly from the integers in
``[round(min_scale · H), canvas)``. For MNIST (28) with the defaults 1.0/1.1 that is
s ∈ {28, 29, 30} on a 31x31 canvas, offsets in [0, 31 - s].

The transformed image is *larger* than the input, exactly as in the reference: the zoo's
networks (CIFAR-style ResNet-20 and torchvision ResNet-50) end in global average pooling and
accept any size, so the model sees the padded canvas, with no resize back. Our differences from
the reference: randomness is drawn independently for every image (the reference draws one size
and one offset per batch), and padding is with pixel value 0 in [0, 1] space (black), before the
model's normalization (the reference pads with 0 in Inception's [-1, 1] input space, i.e. grey;
``pad_value=0.5`` reproduces that). The generator is seeded from OS entropy unless ``seed`` is
given (offline accuracy tables only).
"""

from __future__ import annotations

import secrets
import threading
from typing import Any, Literal

import torch
from torch.nn import functional as F

Interpolation = Literal["nearest", "bilinear"]


class RandomResizePad:
    """R&P in front of a model: per image, resize to a random side, pad at a random offset."""

    kind = "rp"

    def __init__(
        self,
        *,
        min_scale: float = 1.0,
        max_scale: float = 1.1,
        interpolation: Interpolation = "nearest",
        pad_value: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not 1.0 <= min_scale < max_scale:
            raise ValueError("need 1 <= min_scale < max_scale")
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.interpolation = interpolation
        self.pad_value = float(pad_value)
        self._lock = threading.Lock()
        self._gen = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)

    def sizes(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((min_h, canvas_h), (min_w, canvas_w))``: resized sides are drawn from
        ``[min, canvas)``; at least two sides are possible so the transform is never fixed."""
        out: list[tuple[int, int]] = []
        for side in (height, width):
            canvas = max(round(self.max_scale * side), side + 1)
            low = min(max(round(self.min_scale * side), 1), canvas - 1)
            out.append((low, canvas))
        return out[0], out[1]

    def sample(self, n: int, height: int, width: int) -> torch.Tensor:
        """Per image ``(step, top, left)``: resized sides are ``min + step`` for both height and
        width (square inputs stay square, as in the reference), offsets on the canvas."""
        (low_h, canvas_h), (low_w, canvas_w) = self.sizes(height, width)
        steps = min(canvas_h - low_h, canvas_w - low_w)
        with self._lock:
            step = torch.randint(0, steps, (n,), generator=self._gen)
            u = torch.rand(n, 2, generator=self._gen)
        side_h, side_w = low_h + step, low_w + step
        # offsets uniform on the integers [0, canvas - side] (both ends included)
        top = (u[:, 0] * (canvas_h - side_h + 1)).long()
        left = (u[:, 1] * (canvas_w - side_w + 1)).long()
        return torch.stack([step, top, left], dim=1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        (low_h, canvas_h), (low_w, canvas_w) = self.sizes(height, width)
        draws = self.sample(n, height, width)
        out = x.new_full((n, c, canvas_h, canvas_w), self.pad_value)
        # one interpolation call per distinct size, then place each image at its own offset
        for step in draws[:, 0].unique().tolist():
            idx = (draws[:, 0] == step).nonzero().flatten()
            size = (low_h + step, low_w + step)
            resized = F.interpolate(
                x[idx],
                size=size,
                mode=self.interpolation,
                **({"align_corners": False} if self.interpolation == "bilinear" else {}),
            )
            for j, i in enumerate(idx.tolist()):
                top, left = int(draws[i, 1]), int(draws[i, 2])
                out[i, :, top : top + size[0], left : left + size[1]] = resized[j]
        return out

    def describe(self, *, hide_params: bool = False) -> dict[str, Any]:
        if hide_params:
            return {"kind": self.kind}
        return {
            "kind": self.kind,
            "min_scale": self.min_scale,
            "max_scale": self.max_scale,
            "interpolation": self.interpolation,
        }
