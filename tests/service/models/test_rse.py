"""RSE (Liu et al. 2018): noise before every convolution, on at inference, and a prediction
that averages the softmax of 5 noisy passes; the committed checkpoint."""

from __future__ import annotations

import torch
from torch import nn

from service.models import get_spec
from service.models.noise import seed_noise
from service.models.rse import RSEConv2d, RSEEnsemble, rse_resnet20
from tests.service.cached_data import mnist_test_split


def test_a_noise_layer_before_every_convolution() -> None:
    net = rse_resnet20()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21 and all(isinstance(c, RSEConv2d) for c in convs)  # 19 + 2 shortcuts
    stds = [c.noise_std for c in convs]  # type: ignore[attr-defined]
    assert stds[0] == 0.2 and set(stds[1:]) == {0.1}


def test_prediction_is_the_mean_softmax_of_5_noisy_passes() -> None:
    model = rse_resnet20().eval()
    seen: list[tuple[int, torch.Tensor]] = []
    model.net.register_forward_hook(
        lambda _m, inputs, out: seen.append((inputs[0].shape[0], out.detach().clone()))
    )
    x = torch.rand(3, 1, 28, 28)
    with torch.inference_mode():
        out = model(x)
    assert len(seen) == 1 and seen[0][0] == 5 * 3  # one batched call: 5 copies of the batch
    passes = seen[0][1].view(5, 3, 10)
    assert all(not torch.allclose(passes[0], passes[k]) for k in range(1, 5))  # fresh noise
    expected = torch.softmax(passes, dim=2).mean(0)
    torch.testing.assert_close(torch.softmax(out, dim=1), expected, atol=1e-6, rtol=1e-5)


def test_training_mode_is_one_noisy_pass() -> None:
    model = rse_resnet20().train()
    x = torch.rand(4, 1, 28, 28)
    first, second = model(x), model(x)
    assert first.shape == (4, 10) and not torch.allclose(first, second)


def test_seeded_noise_is_reproducible_and_unseeded_is_not() -> None:
    model = rse_resnet20().eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.inference_mode():
        seed_noise(model, 7)
        a = model(x)
        seed_noise(model, 7)
        b = model(x)
        seed_noise(model, None)
        c = model(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_committed_checkpoint_is_noisy_at_inference_and_accurate() -> None:
    model = get_spec("resnet20-mnist-rse").build()  # weights_only loading
    assert isinstance(model.net, RSEEnsemble) and not model.training
    test = mnist_test_split()
    x = torch.from_numpy(test.images[:100])
    with torch.inference_mode():
        first, second = model(x), model(x[:4])
    assert not torch.allclose(first[:4], second)  # noise is on at inference
    assert float((first.argmax(1).numpy() == test.labels[:100]).mean()) >= 0.9
