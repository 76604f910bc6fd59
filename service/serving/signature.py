"""What a served model takes and answers, whoever computes it: the one description the routes
read (``GET /models``, the Open Inference Protocol's model metadata) and the pipeline checks
images against, for a local zoo network and an upstream server alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Signature:
    """A model's architecture (a zoo name, or ``upstream:<model>``), its input ``(C, H, W)`` of
    [0, 1] pixels and that input's name in the Open Inference Protocol, and its classes."""

    architecture: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    input_name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)
