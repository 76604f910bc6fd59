"""Random Self-Ensemble (RSE): Liu, Cheng, Zhang & Hsieh, "Towards robust neural networks via
random self-ensemble" (ECCV 2018); reference code xuanqing94/RobustNet (``models/layer.py``
``Noise``, ``models/resnext_rse.py``).

A noise layer in front of every convolution adds N(0, σ²) to the convolution's input, with
σ_init = 0.2 before the first convolution and σ_inner = 0.1 before all others (also the 1x1
shortcut convolutions, each with its own draw, as ``resnext_rse.py`` does; identity shortcuts
stay clean). The noise is on in training and at inference. A prediction averages the softmax
of ``passes`` (5, as in Byun et al. App. B.2) noisy forward passes of the same image.

The network is our CIFAR-style ResNet-20 (``resnet_cifar.py``) with noisy convolutions; it sits
behind :class:`~service.models.normalization.Normalized`, so the noise is added in the
normalized input space (σ_init = 0.2 is 0.2 · 0.3081 ≈ 0.062 in MNIST pixel units). RobustNet's
early scripts normalize the input as we do (``attack.py``); its final ``main_rse.py`` feeds
[0, 1] pixels. Training is plain cross-entropy on one noisy pass per step (``main_rse.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from service.models.noise import NoiseSource
from service.models.resnet_cifar import resnet20

SIGMA_INIT, SIGMA_INNER, PASSES = 0.2, 0.1, 5


class RSEConv2d(nn.Conv2d, NoiseSource):
    """``conv(x + σ·η)``, η ~ N(0, I) fresh for every element of every forward pass."""

    def __init__(self, *args: object, noise_std: float = SIGMA_INNER, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.noise_std = float(noise_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise_std > 0:
            x = x + self.noise_std * self.randn(x.shape, x)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, noise_std={self.noise_std}"


def _noisy_copy(conv: nn.Conv2d, noise_std: float) -> RSEConv2d:
    noisy = RSEConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        noise_std=noise_std,
    )
    noisy.load_state_dict(conv.state_dict())
    return noisy


def add_noise_layers(net: nn.Module, sigma_init: float, sigma_inner: float) -> nn.Module:
    """Replace every ``nn.Conv2d`` of ``net`` in place by an :class:`RSEConv2d` with the same
    weights: σ_init for the first convolution (in registration order), σ_inner for the rest."""
    first = True

    def swap(module: nn.Module) -> None:
        nonlocal first
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d) and not isinstance(child, RSEConv2d):
                setattr(module, name, _noisy_copy(child, sigma_init if first else sigma_inner))
                first = False
            else:
                swap(child)

    swap(net)
    return net


class RSEEnsemble(nn.Module):
    """The self-ensemble: in eval mode, log of the mean softmax over ``passes`` noisy passes
    (so a softmax of the output is that mean); in train mode, one noisy pass (logits).

    The passes run as one batched forward of ``passes`` stacked copies of the batch; every
    copy gets independent noise, so this equals ``passes`` separate forwards.
    """

    def __init__(self, net: nn.Module, passes: int = PASSES) -> None:
        super().__init__()
        if passes < 1:
            raise ValueError("passes must be >= 1")
        self.net = net
        self.passes = passes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.net(x)
        n = x.shape[0]
        logits = self.net(x.repeat(self.passes, *([1] * (x.dim() - 1))))
        probs = torch.softmax(logits.float(), dim=1).view(self.passes, n, -1).mean(0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def rse_resnet20(
    in_channels: int = 1,
    num_classes: int = 10,
    *,
    sigma_init: float = SIGMA_INIT,
    sigma_inner: float = SIGMA_INNER,
    passes: int = PASSES,
) -> RSEEnsemble:
    """RSE ResNet-20 (the architecture of ``resnet20``, noisy convolutions), as an ensemble."""
    net = add_noise_layers(resnet20(in_channels, num_classes), sigma_init, sigma_inner)
    return RSEEnsemble(net, passes)
