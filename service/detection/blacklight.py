"""The near-duplicate layer: the probabilistic fingerprint of Blacklight (Li et al., USENIX
Security 2022; reference ``Huiying-Li/blacklight``, ``probabilistic_fingerprint.py``).

Pixels x255 plus a secret per-pixel salt, mod 255, rounded to multiples of ``quantization``;
sliding windows of ``window`` values (stride ``step``) hashed; the ``keep`` largest distinct
hashes kept. Two queries are near-duplicates when they share more than ``threshold`` hashes.

* ``hash="sha256"``: the reference's fingerprint bit for bit (HWC pixel order, SHA-256 hex
  digests reversed and sorted descending), one SHA-256 call per window.
* ``hash="fast"``: a keyed 64-bit hash of each window, vectorized over the batch; same windows,
  same selection rule, no per-window Python call.
* ``skip_flat``: drop windows whose unsalted quantized values are all equal (blank background).
  On MNIST any two digits share their blank border position by position, which the reference
  counts as matching hashes (measured in ``docs/results/detection.md``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.detection import defaults
from service.detection.base import derive_bytes

HashKind = Literal["fast", "sha256"]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def official_salt(secret: bytes, shape_hwc: tuple[int, ...]) -> np.ndarray:
    """A per-pixel salt in [0, 255) in the reference's HWC layout, fixed by the secret."""
    seed = int.from_bytes(derive_bytes(secret, "salt-seed", 8), "little")
    return np.random.default_rng(seed).random(shape_hwc) * 255.0


@dataclass(frozen=True)
class BlacklightParams:
    """Blacklight's parameters; the defaults are the reference's (CIFAR-10)."""

    window: int = defaults.WINDOW
    keep: int = defaults.KEEP
    step: int = 1
    quantization: int = defaults.QUANTIZATION
    threshold: int = defaults.THRESHOLD
    hash: HashKind = "fast"
    skip_flat: bool = False


class BlacklightFingerprint:
    """Blacklight's fingerprint of CHW images, as store keys (8 bytes of each kept hash)."""

    layer = "near"

    def __init__(self, secret: bytes, input_shape: tuple[int, int, int], params: BlacklightParams):
        channels, height, width = input_shape
        self.params = params
        self.threshold = params.threshold
        self.salt = official_salt(secret, (height, width, channels))
        size = channels * height * width
        if params.window > size:
            raise ValueError(f"window {params.window} exceeds the {size} values of an image")
        # the fast hash: sum_j v[i+j] B^j mod 2^64 for a secret odd base B, from prefix sums
        base = int.from_bytes(derive_bytes(secret, "window-hash", 8), "little") | 1
        powers, inverse_powers, x, y, inverse = [], [], 1, 1, pow(base, -1, 2**64)
        for _ in range(size + 1):
            powers.append(x)
            inverse_powers.append(y)
            x, y = x * base % 2**64, y * inverse % 2**64
        self._powers = np.array(powers, np.uint64)
        self._inverse_powers = np.array(inverse_powers, np.uint64)

    def quantized(self, images: np.ndarray) -> np.ndarray:
        """The reference's ``preprocess``: HWC, x255, + salt, mod 255, rounded; int16 rows."""
        return self._quantize(self._scaled_hwc(images))

    @staticmethod
    def _scaled_hwc(images: np.ndarray) -> np.ndarray:
        """``(N, values)`` float64 pixels x255 in the reference's HWC order."""
        hwc = np.transpose(np.asarray(images, dtype=np.float64), (0, 2, 3, 1)) * 255.0
        return hwc.reshape(len(images), -1)

    def _quantize(self, scaled: np.ndarray) -> np.ndarray:
        salted = (scaled + self.salt.reshape(-1)) % 255.0
        q = self.params.quantization
        return (np.around(salted / q, decimals=0) * q).astype(np.int16)

    def _flat_windows(self, scaled: np.ndarray) -> np.ndarray:
        """``(N, windows)`` True where a window's unsalted quantized values are all equal."""
        plain = np.around(scaled / self.params.quantization)
        changes = np.zeros((len(plain), plain.shape[1]), np.int32)
        np.cumsum(plain[:, 1:] != plain[:, :-1], axis=1, out=changes[:, 1:])
        w, step = self.params.window, self.params.step
        return (changes[:, w - 1 :] == changes[:, : changes.shape[1] - w + 1])[:, ::step]

    def sha256_hashes(self, images: np.ndarray) -> list[list[str]]:
        """The reference's kept hashes, hex strings as it returns them (one SHA-256 a window)."""
        p = self.params
        out = []
        for row in self.quantized(images):
            count = (len(row) - p.window + 1) // p.step
            digests = {
                hashlib.sha256(row[i * p.step : i * p.step + p.window].tobytes()).hexdigest()
                for i in range(count)
            }
            out.append(sorted((d[::-1] for d in digests), reverse=True)[: p.keep])
        return out

    def fast_hashes(self, images: np.ndarray) -> np.ndarray:
        """``(N, windows)`` uint64 keyed hashes of every window: a polynomial hash with a
        secret base, from prefix sums (no per-window work), then a splitmix64-style finalizer."""
        return self._window_hashes(self.quantized(images))

    def _window_hashes(self, quantized: np.ndarray) -> np.ndarray:
        p = self.params
        rows = quantized.astype(np.uint64)
        n = rows.shape[1]
        with np.errstate(over="ignore"):
            prefix = np.zeros((len(rows), n + 1), np.uint64)
            np.cumsum(rows * self._powers[:n], axis=1, out=prefix[:, 1:])
            count = n - p.window + 1
            h = (prefix[:, p.window :] - prefix[:, :count]) * self._inverse_powers[:count]
            h = h[:, :: p.step]
            h ^= h >> np.uint64(31)
            h *= _GOLDEN
            h ^= h >> np.uint64(29)
        return h

    def keys(self, images: np.ndarray) -> list[list[bytes]]:
        """Each image's kept hashes, largest first, 8 bytes each. The fast path sorts the whole
        batch at once; a skipped (blank) window is marked 0 first, so a window whose hash is
        exactly 0 (one in 2**64) is skipped too."""
        p = self.params
        if p.hash == "sha256":
            return [[bytes.fromhex(d[:16]) for d in row] for row in self.sha256_hashes(images)]
        scaled = self._scaled_hwc(images)
        hashes = self._window_hashes(self._quantize(scaled))
        if p.skip_flat:
            hashes[self._flat_windows(scaled)] = 0
        ordered = np.sort(hashes, axis=1)[:, ::-1]
        kept = np.empty(ordered.shape, bool)  # distinct and not skipped
        kept[:, 0] = True
        np.not_equal(ordered[:, 1:], ordered[:, :-1], out=kept[:, 1:])
        kept &= ordered != 0
        packed = ordered.astype(">u8")
        out = []
        for row, keep in zip(packed, kept, strict=True):
            top = row[keep][: p.keep].tobytes()
            out.append([top[j : j + 8] for j in range(0, len(top), 8)])
        return out
