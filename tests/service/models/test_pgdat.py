"""PGD-AT (Madry et al. 2018): L2 PGD stays in its ball, and the adversarially trained
checkpoint resists it better than the plain model at the training ε."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from service.models import get_spec
from service.offline.training.pgd import l2_pgd, l2_pgd_accuracy
from service.offline.training.recipes import RECIPES
from tests.service.cached_data import mnist_test_split

EPS = RECIPES["resnet20-mnist-pgdat"].adversarial.eps  # type: ignore[union-attr]


def first_test_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    test = mnist_test_split()
    return torch.from_numpy(test.images[:n]), torch.from_numpy(test.labels[:n])


def test_l2_pgd_stays_in_the_ball_and_the_box_and_raises_the_loss() -> None:
    model = get_spec("resnet20-mnist").build()
    x, y = first_test_images(20)
    adv = l2_pgd(model, x, y, eps=EPS, steps=5)
    assert (adv - x).flatten(1).norm(dim=1).max() <= EPS + 1e-4
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


def test_pgdat_is_more_robust_than_the_plain_model_at_the_training_eps() -> None:
    x, y = first_test_images(50)
    plain = get_spec("resnet20-mnist").build()
    robust = get_spec("resnet20-mnist-pgdat").build()  # weights_only loading
    plain_acc = l2_pgd_accuracy(plain, x, y, eps=EPS, steps=10)
    robust_acc = l2_pgd_accuracy(robust, x, y, eps=EPS, steps=10)
    assert robust_acc >= plain_acc + 0.2, (plain_acc, robust_acc)
    with torch.inference_mode():
        assert float((robust(x).argmax(1) == y).float().mean()) >= 0.9  # still accurate
