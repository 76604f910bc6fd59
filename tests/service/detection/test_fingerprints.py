"""The fingerprint layers: the reference mode is Blacklight's own fingerprint, bit for bit."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from service.detection.blacklight import BlacklightFingerprint, BlacklightParams
from service.detection.detector import blacklight_params
from service.detection.exact import ExactDigest
from service.model_settings import DetectionSettings
from service.offline.datasets import mnist_subset

SECRET = b"test-secret"


def reference_fingerprint(image_hwc: np.ndarray, salt: np.ndarray) -> list[str]:
    """A transcription of ``InputTracker.preprocess`` + ``hash_img`` of ``Huiying-Li/blacklight``
    (window 20, stride 1, round 50, 50 kept), with its process pool replaced by a loop."""
    array = np.array(image_hwc) * 255.0
    array = (array + salt) % 255.0
    array = array.reshape(-1)
    array = np.around(array / 50, decimals=0) * 50
    img = array.astype(np.int16)
    hashes = [
        hashlib.sha256(img[i : i + 20]).hexdigest() for i in range(int((len(img) - 20 + 1) / 1))
    ]
    unique = [h[::-1] for h in set(hashes)]
    unique.sort(reverse=True)
    return unique[:50]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_reference_mode_reproduces_the_official_fingerprint(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(3)
    images = rng.random((2, *shape)).astype(np.float32)
    layer = BlacklightFingerprint(SECRET, shape, BlacklightParams(hash="sha256"))
    ours = layer.sha256_hashes(images)
    for image, hashes in zip(images, ours, strict=True):
        assert hashes == reference_fingerprint(np.transpose(image, (1, 2, 0)), layer.salt)
    # and the store keys are those hashes' first 8 bytes
    assert layer.keys(images)[0] == [bytes.fromhex(h[:16]) for h in ours[0]]


def test_the_salt_is_secret_and_fixed_by_it() -> None:
    shape = (1, 28, 28)
    a = BlacklightFingerprint(SECRET, shape, BlacklightParams())
    b = BlacklightFingerprint(SECRET, shape, BlacklightParams())
    c = BlacklightFingerprint(b"another", shape, BlacklightParams())
    assert np.array_equal(a.salt, b.salt) and not np.array_equal(a.salt, c.salt)
    assert a.salt.min() >= 0.0 and a.salt.max() < 255.0
    image = mnist_subset("test").images[:1]
    assert a.keys(image) == b.keys(image) != c.keys(image)


@pytest.mark.parametrize("fingerprint", ["scaled", "reference"])
def test_near_duplicates_match_and_other_digits_do_not(fingerprint: str) -> None:
    shape = (1, 28, 28)
    settings = DetectionSettings(fingerprint=fingerprint)  # type: ignore[arg-type]
    layer = BlacklightFingerprint(SECRET, shape, blacklight_params(settings, shape))
    images = mnist_subset("test").images[:40]
    noisy = np.clip(images + np.random.default_rng(0).normal(0, 0.002, images.shape), 0, 1)
    base = [set(k) for k in layer.keys(images)]
    near = [set(k) for k in layer.keys(noisy.astype(np.float32))]
    assert all(len(a & b) > 25 for a, b in zip(base, near, strict=True))
    shared = [len(base[i] & base[j]) for i in range(40) for j in range(i)]
    assert max(shared) <= 25
    if fingerprint == "scaled":  # blank windows skipped: distinct digits share almost nothing
        assert np.mean(shared) < 1.0


def test_the_reference_counts_blank_borders_as_matches() -> None:
    """Why the scaled mode skips blank windows: on MNIST the reference's 50 hashes of two
    different digits overlap by about a quarter, position by position of the blank border."""
    shape = (1, 28, 28)
    images = mnist_subset("test").images[:40]
    ref = BlacklightFingerprint(SECRET, shape, BlacklightParams(hash="sha256"))
    keys = [set(k) for k in ref.keys(images)]
    shared = [len(keys[i] & keys[j]) for i in range(40) for j in range(i)]
    assert np.mean(shared) > 8


def test_scaled_windows_grow_with_the_input() -> None:
    scaled = DetectionSettings()
    assert blacklight_params(scaled, (1, 28, 28)).window == 20
    assert blacklight_params(scaled, (3, 32, 32)).window == 20
    assert blacklight_params(scaled, (3, 224, 224)).window == 50
    reference = blacklight_params(DetectionSettings(fingerprint="reference"), (3, 224, 224))
    assert (reference.window, reference.hash, reference.skip_flat) == (20, "sha256", False)


def test_exact_digests_differ_for_one_ulp() -> None:
    layer = ExactDigest(SECRET)
    image = mnist_subset("test").images[:1]
    bumped = image.copy()
    bumped.flat[400] = np.nextafter(bumped.flat[400], np.float32(2))
    keys = layer.keys(np.concatenate([image, image, bumped]))
    assert keys[0] == keys[1] != keys[2]
    assert Counter(len(k[0]) for k in keys) == {16: 3}


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5])
def test_a_blank_image_has_no_near_keys_and_one_digest(value: float) -> None:
    shape = (1, 28, 28)
    blank = np.full((2, *shape), value, np.float32)
    layer = BlacklightFingerprint(SECRET, shape, blacklight_params(DetectionSettings(), shape))
    assert layer.keys(blank) == [[], []]  # every window is flat: nothing to match on
    one = blank[:1].copy()
    one[0, 0, 5, :10] = 0.0 if value > 0.25 else 1.0  # a stroke: its windows are the keys
    assert 0 < len(layer.keys(one)[0]) <= 50
    assert ExactDigest(SECRET).keys(blank)[0] == ExactDigest(SECRET).keys(blank)[1]


@pytest.mark.parametrize("skip_flat", [True, False])
def test_fast_keys_of_a_batch_are_each_images_own(skip_flat: bool) -> None:
    """The fast path sorts a whole batch at once: every image still gets exactly the keys it
    gets alone (the requests of one tick are fingerprinted together), largest first, distinct,
    blank windows skipped."""
    rng = np.random.default_rng(5)
    images = rng.random((6, 1, 28, 28)).astype(np.float32)
    images[:3, :, :9] = 0.0  # a blank band
    images[4] = 1.0  # blank everywhere
    params = BlacklightParams(skip_flat=skip_flat)
    layer = BlacklightFingerprint(SECRET, (1, 28, 28), params)
    together = layer.keys(images)
    assert together == [layer.keys(images[i : i + 1])[0] for i in range(len(images))]
    for keys in together:
        values = [int.from_bytes(k, "big") for k in keys]
        assert values == sorted(set(values), reverse=True)
    hashes = layer.fast_hashes(images[:1])[0]
    flat = layer._flat_windows(layer._scaled_hwc(images[:1]))[0]
    expected = sorted(set((hashes[~flat] if skip_flat else hashes).tolist()), reverse=True)
    assert [int.from_bytes(k, "big") for k in together[0]] == expected[: params.keep]
    assert (len(together[4]) == 0) is skip_flat
