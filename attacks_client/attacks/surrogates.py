"""Reference models for the Subspace Attack, trained by the client on its own data only.

The Subspace Attack (Guo, Yan, Zhang, NeurIPS 2019; https://github.com/ZiangYan/subspace-attack.pytorch)
searches along gradients of the attacker's *reference models*, with a dropout ratio that grows
during the attack. The authors' models were trained on a small proxy set (CIFAR-10.1,
ImageNetV2) disjoint from the victim's training data; here they are trained on the embedded
MNIST subset's ``attacker-proxy`` split (500 images, :func:`attacks_client.data.embedded_mnist`):
the client never sees the victim's weights or its training split.

Two small architectures with dropout after every hidden activation, so that the attack's
dropout schedule has something to act on (the reference sets ``model.drop`` likewise):

* ``cnn``: five 3x3 convolutions (16-32-32-64-64) with max pooling, and a linear head;
* ``resnet8``: a CIFAR-style ResNet-8 (one basic block per stage, 16/32/64 channels).

Each takes [0, 1] images of its input shape (normalization inside, with the proxy data's mean
and standard deviation) and returns logits. Checkpoints are small (< 1 MB) dicts of tensors,
numbers and strings, loaded with ``torch.load(weights_only=True)``.

Train them with ``python -m attacks_client.attacks.surrogates --out attacks_client/weights/``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
ARCHS = ("cnn", "resnet8")


class ReferenceModel(nn.Module):
    """Base of the reference models: normalization in front, controllable dropout inside.

    ``drop`` is the dropout ratio applied after every hidden activation, in training *and*
    evaluation mode (the Subspace Attack changes it per step); ``generator`` makes the dropout
    masks reproducible.
    """

    arch: str = ""
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = num_classes
        for key, value in (("mean", mean), ("std", std)):
            buffer = torch.tensor(list(value), dtype=torch.float32)
            self.register_buffer(key, buffer[None, :, None, None])
        self.drop = 0.0
        self.generator: torch.Generator | None = None

    def dropout(self, h: torch.Tensor) -> torch.Tensor:
        if self.drop <= 0:
            return h
        keep = 1.0 - self.drop
        mask = torch.rand(h.shape, generator=self.generator, device=h.device) < keep
        return h * mask / keep

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(ReferenceModel):
    arch = "cnn"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        channels, height, width = self.input_shape
        self.convs = nn.ModuleList()
        for planes in (16, 32, 32, 64, 64):
            self.convs.append(nn.Conv2d(channels, planes, 3, padding=1))
            channels = planes
        self.pool_after = (0, 2, 4)
        self.head = nn.Linear(channels * (height // 8) * (width // 8), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalize(x)
        for i, conv in enumerate(self.convs):
            h = self.dropout(F.relu(conv(h)))
            if i in self.pool_after:
                h = F.max_pool2d(h, 2)
        return self.head(h.flatten(1))


class _Block(nn.Module):
    def __init__(self, owner: ReferenceModel, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self._owner = [owner]  # not a submodule: only for its dropout
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropout = self._owner[0].dropout
        h = dropout(F.relu(self.bn1(self.conv1(x))))
        return dropout(F.relu(self.bn2(self.conv2(h)) + self.shortcut(x)))


class ResNet8(ReferenceModel):
    arch = "resnet8"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__(input_shape, num_classes, mean, std)
        self.conv1 = nn.Conv2d(self.input_shape[0], 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(
            _Block(self, 16, 16, 1), _Block(self, 16, 32, 2), _Block(self, 32, 64, 2)
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.relu(self.bn1(self.conv1(self.normalize(x)))))
        h = self.blocks(h)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def build(
    arch: str,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> ReferenceModel:
    """A fresh (untrained) reference model."""
    classes: dict[str, type[ReferenceModel]] = {"cnn": SmallCNN, "resnet8": ResNet8}
    if arch not in classes:
        raise ValueError(f"unknown reference architecture {arch!r}; known: {', '.join(ARCHS)}")
    return classes[arch](input_shape, num_classes, mean, std)


# -- checkpoints --------------------------------------------------------------------------------


def save(model: ReferenceModel, path: Path, meta: dict[str, Any]) -> str:
    """Write ``{arch, input_shape, num_classes, mean, std, meta, state_dict}``; return sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "arch": model.arch,
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "meta": meta,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    torch.save(checkpoint, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: str | Path) -> tuple[ReferenceModel, tuple[int, int, int]]:
    """A reference model (eval mode, no dropout) and its input shape, ``weights_only=True``."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    shape = tuple(int(v) for v in checkpoint["input_shape"])
    model = build(
        checkpoint["arch"],
        shape,
        int(checkpoint["num_classes"]),
        checkpoint["mean"],
        checkpoint["std"],
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), (shape[0], shape[1], shape[2])


def load_fitting(
    input_shape: Sequence[int],
    num_classes: int,
    directory: str | Path | None = None,
    names: Sequence[str] | None = None,
) -> list[tuple[str, ReferenceModel]]:
    """All reference models in ``directory`` (default: the packaged weights) that take
    ``input_shape`` and answer ``num_classes`` classes; ``names`` (file stems) selects some."""
    directory = Path(directory) if directory is not None else WEIGHTS_DIR
    found = []
    for path in sorted(directory.glob("*.pt")):
        if names and path.stem not in names:
            continue
        model, shape = load(path)
        if list(shape) == [int(v) for v in input_shape] and model.num_classes == num_classes:
            found.append((path.stem, model))
    return found


# -- training -----------------------------------------------------------------------------------


def _shift(batch: torch.Tensor, rng: np.random.Generator, pixels: int) -> torch.Tensor:
    """Random translations of up to ``pixels`` (zero padding), one per image."""
    if pixels <= 0:
        return batch
    padded = F.pad(batch, (pixels,) * 4)
    height, width = batch.shape[-2:]
    out = torch.empty_like(batch)
    for i, (dy, dx) in enumerate(rng.integers(0, 2 * pixels + 1, size=(len(batch), 2))):
        out[i] = padded[i, :, dy : dy + height, dx : dx + width]
    return out


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [model(torch.from_numpy(images[i : i + 500])) for i in range(0, len(images), 500)]
        )
    return float((logits.argmax(1).numpy() == labels).mean())


def train(
    arch: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    drop: float = 0.1,
    shift: int = 2,
    progress: bool = True,
) -> ReferenceModel:
    """Train one reference model on ``images`` (N, C, H, W) in [0, 1] (Adam, cosine schedule,
    random shifts, dropout ``drop``)."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    num_classes = int(labels.max()) + 1
    mean = images.mean(axis=(0, 2, 3)).tolist()
    std = (images.std(axis=(0, 2, 3)) + 1e-6).tolist()
    model = build(arch, images.shape[1:], num_classes, mean, std)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * int(np.ceil(len(images) / batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    model.drop = drop
    bar = tqdm(range(epochs), desc=f"train {arch}", disable=not progress, leave=False)
    for _ in bar:
        model.train()
        order = rng.permutation(len(images))
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[start : start + batch_size])
            loss = F.cross_entropy(model(_shift(x_all[idx], rng, shift)), y_all[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(images):.3f}")
    model.drop = 0.0
    return model.eval()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m attacks_client.attacks.surrogates",
        description="Train the Subspace Attack's reference models on the attacker-proxy split.",
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output directory")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--data",
        default="embedded",
        help="'embedded' (MNIST attacker-proxy split) or an .npz of proxy images",
    )
    parser.add_argument("--prefix", default="mnist", help="file name prefix (PREFIX-ARCH.pt)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: bit-for-bit reproducible checkpoints)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from attacks_client.data import ImageSet, embedded_mnist, npz_file

    proxy = embedded_mnist("attacker-proxy") if args.data == "embedded" else npz_file(args.data)
    test: ImageSet | None = embedded_mnist("test") if args.data == "embedded" else None
    for arch in args.archs:
        start = time.perf_counter()
        model = train(arch, proxy.images, proxy.labels, seed=args.seed, epochs=args.epochs)
        seconds = time.perf_counter() - start
        acc = accuracy(model, test.images, test.labels) if test is not None else float("nan")
        path = args.out / f"{args.prefix}-{arch}.pt"
        meta = {
            "data": args.data,
            "train_images": len(proxy),
            "seed": args.seed,
            "epochs": args.epochs,
            "test_accuracy": acc,
            "threads": args.threads,
            "torch": str(torch.__version__),
        }
        digest = save(model, path, meta)
        params = sum(p.numel() for p in model.parameters())
        log.info(
            "%s: %d parameters, test accuracy %.2f%%, %.1f KB, %.0f s, sha256 %s",
            path,
            params,
            100 * acc,
            path.stat().st_size / 1024,
            seconds,
            digest,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
