"""The exact-repeat layer: a keyed BLAKE2b digest of each image's float32 bytes, equal only for
bit-identical images (the expectation attack's ``--repeat T`` and client retries)."""

from __future__ import annotations

import hashlib

import numpy as np

from service.detection.base import derive_bytes


class ExactDigest:
    """A 16-byte keyed digest of each image's float32 bytes."""

    layer = "exact"
    threshold = 0  # one shared key (the digest) is a match

    def __init__(self, secret: bytes) -> None:
        self._key = derive_bytes(secret, "exact", 32)

    def keys(self, images: np.ndarray) -> list[list[bytes]]:
        flat = np.ascontiguousarray(images, dtype=np.float32).reshape(len(images), -1)
        return [
            [hashlib.blake2b(row.tobytes(), key=self._key, digest_size=16).digest()] for row in flat
        ]
