"""Orthonormal 2-D DCT-II over the last two axes (image rows and columns), and its inverse.

Shared by the attacks that search in a low-frequency subspace (GeoDA, SimBA-DCT).
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dctn, idctn


def dct2(x: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II of ``x`` over its last two axes (``(..., H, W)``)."""
    return np.asarray(dctn(x, type=2, axes=(-2, -1), norm="ortho"))


def idct2(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dct2` (orthonormal DCT-III over the last two axes)."""
    return np.asarray(idctn(x, type=2, axes=(-2, -1), norm="ortho"))


__all__ = ["dct2", "idct2"]
