"""R&P (Xie et al. 2018): output size, ranges, per-image randomness, and the model behind it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from service.defenses import RandomResizePad, build_defense
from service.model_settings import DefenseSettings, ModelSettings
from service.serving.local import LocalHost
from tests.service.cached_data import mnist_test_split


def test_output_is_the_canvas_with_the_image_inside_and_zero_padding() -> None:
    x = torch.rand(16, 1, 28, 28) + 0.5  # strictly positive, so padding is visible as zeros
    out = RandomResizePad(seed=0)(x)
    assert out.shape == (16, 1, 31, 31)
    for i in range(16):
        rows = (out[i, 0] > 0).any(1).nonzero().flatten()
        cols = (out[i, 0] > 0).any(0).nonzero().flatten()
        side = len(rows)
        assert side == len(cols) and 28 <= side <= 30  # s in [28, 31)
        assert rows[-1] - rows[0] + 1 == side  # one contiguous block
        assert (out[i, 0].sum() > 0) and (out[i, 0] == 0).sum() == 31 * 31 - side * side


def test_unscaled_draw_places_the_image_exactly() -> None:
    x = torch.rand(200, 1, 28, 28) + 0.5
    defense = RandomResizePad(seed=1)
    draws = defense.sample(200, 28, 28)
    defense = RandomResizePad(seed=1)  # same draws again
    out = defense(x)
    same_size = (draws[:, 0] == 0).nonzero().flatten().tolist()
    assert same_size
    for i in same_size:
        top, left = int(draws[i, 1]), int(draws[i, 2])
        assert torch.equal(out[i, :, top : top + 28, left : left + 28], x[i])


def test_sizes_and_offsets_cover_their_ranges() -> None:
    draws = RandomResizePad(seed=2).sample(4000, 28, 28)
    sides = 28 + draws[:, 0]
    assert set(sides.tolist()) == {28, 29, 30}
    for side in (28, 29, 30):
        offsets = draws[sides == side, 1:]
        assert offsets.min() == 0 and offsets.max() == 31 - side  # both ends included


def test_scale_range_follows_the_input_size() -> None:
    defense = RandomResizePad(max_scale=331 / 299)  # the reference's ratio
    assert defense.sizes(299, 299) == ((299, 331), (299, 331))
    assert defense(torch.rand(2, 3, 32, 32)).shape == (2, 3, 35, 35)


def test_two_calls_differ_and_images_in_one_batch_differ() -> None:
    x = torch.rand(1, 1, 28, 28).repeat(32, 1, 1, 1)  # identical images
    defense = RandomResizePad()
    first, second = defense(x), defense(x)
    assert not torch.equal(first, second)
    distinct = {tuple(img.flatten().tolist()) for img in first}
    assert len(distinct) > 1
    draws = defense.sample(32, 28, 28)
    assert len({tuple(d) for d in draws.tolist()}) > 1  # sizes/offsets drawn per image


def test_settings_build_rp() -> None:
    defense = build_defense(DefenseSettings(kind="rp", rp_max_scale=1.2))
    assert isinstance(defense, RandomResizePad)
    assert defense.describe()["max_scale"] == 1.2
    assert defense.describe(hide_params=True) == {"kind": "rp"}
    with pytest.raises(ValidationError):
        DefenseSettings(kind="rp", rp_min_scale=1.2, rp_max_scale=1.1)


def test_resnet20_behind_rp_keeps_its_accuracy() -> None:
    """The model is fully convolutional with global pooling: it takes the 31x31 canvas."""
    host = LocalHost.load(ModelSettings(defense={"kind": "rp"}), torch.device("cpu"), False)
    test = mnist_test_split()
    probs = host.forward(test.images[:200])
    assert probs.shape == (200, 10)
    assert float((probs.argmax(1) == test.labels[:200]).mean()) >= 0.95
    again = host.forward(test.images[:8])
    assert not np.array_equal(again, host.forward(test.images[:8]))
