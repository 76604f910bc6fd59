"""The Defense protocol: a transform of a batch of [0, 1] images applied before the model."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Defense(Protocol):
    """Maps a batch ``(N, C, H, W)`` of [0, 1] pixels to what the model sees.

    Randomized defenses draw fresh randomness on every call and for every image.
    """

    kind: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def describe(self, *, hide_params: bool = False) -> dict[str, Any]:
        """The public description for ``GET /models``; only ``kind`` when ``hide_params``."""
        ...


class NoDefense:
    """The undefended model: the identity."""

    kind = "none"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def describe(self, *, hide_params: bool = False) -> dict[str, Any]:
        return {"kind": self.kind}
