"""PNI-W (He et al. 2019): channel-wise learnable weight noise in every layer, on at inference,
drawn per image in a batch; the committed checkpoint's noise scales were trained."""

from __future__ import annotations

import torch

from service.models import get_spec
from service.models.pni import (
    ALPHA_INIT,
    PNIConv2d,
    PNILinear,
    alphas,
    pni_resnet20,
    set_per_image_noise,
)
from service.models.registry import WEIGHTS_DIR
from service.models.resnet_cifar import resnet20
from tests.service.cached_data import mnist_test_split


def test_every_conv_and_the_classifier_have_channelwise_alphas() -> None:
    net = pni_resnet20()
    layers = [m for m in net.modules() if isinstance(m, PNIConv2d | PNILinear)]
    assert len(layers) == 22  # 21 convolutions + fc
    for layer in layers:
        out = layer.out_channels if isinstance(layer, PNIConv2d) else layer.out_features
        assert layer.alpha_w.shape[0] == out and layer.alpha_w.numel() == out
        assert torch.all(layer.alpha_w == ALPHA_INIT)


def test_without_noise_the_per_image_path_is_the_plain_network() -> None:
    torch.manual_seed(0)
    plain = resnet20(1, 10).eval()
    net = pni_resnet20().eval()
    net.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        for alpha in alphas(net).values():
            alpha.zero_()
    x = torch.rand(5, 1, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), plain(x), atol=1e-4, rtol=1e-4)


def test_weight_noise_is_drawn_per_image_at_inference() -> None:
    net = pni_resnet20().eval()
    x = torch.rand(1, 1, 28, 28).repeat(4, 1, 1, 1)
    with torch.inference_mode():
        per_image = net(x)
        set_per_image_noise(net, False)
        shared = net(x)
    assert not torch.allclose(per_image[0], per_image[1])
    assert torch.allclose(shared[0], shared[1])  # the reference: one draw per forward pass


def test_committed_alphas_were_trained() -> None:
    checkpoint = torch.load(WEIGHTS_DIR / "resnet20-mnist-pni.pt", weights_only=True)
    trained = {k: v for k, v in checkpoint["state_dict"].items() if k.endswith("alpha_w")}
    assert len(trained) == 22
    for name, alpha in trained.items():
        assert alpha.abs().max() > 0, name
        assert not torch.allclose(alpha, torch.full_like(alpha, ALPHA_INIT)), name
    moved = torch.cat([(a - ALPHA_INIT).abs().flatten() for a in trained.values()])
    assert moved.mean() > 0.01


def test_committed_checkpoint_is_noisy_at_inference_and_accurate() -> None:
    model = get_spec("resnet20-mnist-pni").build()
    test = mnist_test_split()
    x = torch.from_numpy(test.images[:100])
    with torch.inference_mode():
        first, second = model(x), model(x[:4])
    assert not torch.allclose(first[:4], second)
    assert float((first.argmax(1).numpy() == test.labels[:100]).mean()) >= 0.9
