"""Parametric Noise Injection on weights, channel-wise (PNI-W): He, Rakin & Fan, "Parametric
noise injection: trainable randomness to improve deep neural network robustness against
adversarial attack" (CVPR 2019); reference code elliothe/Parametric-Noise-Injection
(``code/models/noise_layer.py``: ``noise_Conv2d``, ``noise_Linear``).

Every convolution and the classifier use, at every forward pass (training and inference),
the weight ``W + α ⊙ η`` with η ~ N(0, std(W)²) (one std over the whole weight tensor, without
gradient) and a learnable ``α`` per output channel, initialised to 0.25. The α are trained
jointly with the weights by adversarial training (``service.offline.training``: the reference's
0.5 · clean + 0.5 · PGD loss, no weight decay on α); without it they shrink towards zero.

Our one difference: at inference every image of a batch gets its own weight noise (grouped
convolution over per-image weights), like SND's per-image noise, so that a batch of probes
never shares one noise draw; the reference draws one weight noise per forward pass for the whole
batch, which we keep for training (``per_image = False``; see :func:`set_per_image_noise`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from service.models.noise import NoiseSource
from service.models.resnet_cifar import resnet20

ALPHA_INIT = 0.25


class _PNIMixin(NoiseSource):
    weight: torch.Tensor
    alpha_w: torch.Tensor
    per_image: bool
    training: bool

    def _noisy_weight(self, batch: int | None) -> torch.Tensor:
        """``W + α·η``; with ``batch`` a stack of ``batch`` independent noisy weights."""
        w = self.weight
        with torch.no_grad():
            std = w.std()
            shape = w.shape if batch is None else (batch, *w.shape)
            noise = self.randn(shape, w) * std
        return w + self.alpha_w * noise

    def _per_image_batch(self, n: int) -> int | None:
        return n if (self.per_image and not self.training and n > 1) else None


class PNIConv2d(nn.Conv2d, _PNIMixin):
    """``noise_Conv2d`` with ``pni='channelwise'``: α of shape ``(out, 1, 1, 1)``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.alpha_w = nn.Parameter(torch.full((self.out_channels, 1, 1, 1), ALPHA_INIT))
        self.per_image = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self._per_image_batch(x.shape[0])
        if n is None:
            return self._conv_forward(x, self._noisy_weight(None), self.bias)
        # one weight per image: a grouped convolution over the images stacked as channels
        w = self._noisy_weight(n).flatten(0, 1)  # (n * out, in / groups, kh, kw)
        bias = None if self.bias is None else self.bias.repeat(n)
        out = F.conv2d(
            x.reshape(1, -1, *x.shape[2:]),
            w,
            bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups * n,
        )
        return out.view(n, self.out_channels, *out.shape[2:])


class PNILinear(nn.Linear, _PNIMixin):
    """``noise_Linear`` with ``pni='channelwise'``: α of shape ``(out, 1)``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.alpha_w = nn.Parameter(torch.full((self.out_features, 1), ALPHA_INIT))
        self.per_image = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self._per_image_batch(x.shape[0])
        if n is None:
            return F.linear(x, self._noisy_weight(None), self.bias)
        out = torch.einsum("ni,noi->no", x, self._noisy_weight(n))
        return out if self.bias is None else out + self.bias


def _pni_copy(layer: nn.Module) -> nn.Module:
    new: nn.Module
    if isinstance(layer, nn.Conv2d):
        new = PNIConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.bias is not None,
        )
    elif isinstance(layer, nn.Linear):
        new = PNILinear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    else:
        raise TypeError(type(layer))
    new.load_state_dict(layer.state_dict(), strict=False)  # all but alpha_w
    return new


def add_weight_noise(net: nn.Module) -> nn.Module:
    """Replace every ``nn.Conv2d`` and ``nn.Linear`` of ``net`` in place by its PNI-W twin."""
    for name, child in net.named_children():
        if isinstance(child, nn.Conv2d | nn.Linear) and not isinstance(child, _PNIMixin):
            setattr(net, name, _pni_copy(child))
        else:
            add_weight_noise(child)
    return net


def set_per_image_noise(net: nn.Module, per_image: bool) -> None:
    """Per-image weight noise at inference (default) or one draw per forward (reference)."""
    for module in net.modules():
        if isinstance(module, _PNIMixin):
            module.per_image = per_image


def alphas(net: nn.Module) -> dict[str, torch.Tensor]:
    """The learned noise scales, by parameter name."""
    return {name: p.detach() for name, p in net.named_parameters() if name.endswith("alpha_w")}


def pni_resnet20(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """PNI-W ResNet-20: ``resnet20`` with channel-wise weight noise in every conv and the fc."""
    return add_weight_noise(resnet20(in_channels, num_classes))
