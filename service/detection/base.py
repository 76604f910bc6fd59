"""The ``Detector`` interface of the stateful detection layers, and key derivation.

A layer turns each image, as sent (before any defense noise: after it nothing would ever
match), into store keys; a stored query matches when it shares more than ``threshold`` of them.
Layers: :class:`~service.detection.exact.ExactDigest` (exact repeats) and
:class:`~service.detection.blacklight.BlacklightFingerprint` (near-duplicates).
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np


class Detector(Protocol):
    """One fingerprint layer: ``keys`` gives each image's store keys."""

    layer: str
    threshold: int

    def keys(self, images: np.ndarray) -> list[list[bytes]]: ...


def derive_bytes(secret: bytes, purpose: str, size: int) -> bytes:
    """``size`` pseudo-random bytes for one purpose, derived from the detector's secret."""
    out, counter = b"", 0
    while len(out) < size:
        out += hashlib.blake2b(
            purpose.encode() + counter.to_bytes(4, "little"), key=secret[:64], digest_size=64
        ).digest()
        counter += 1
    return out[:size]
