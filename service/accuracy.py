"""Clean accuracy behind a defense, mean ± std over seeds (the paper's Table 1).

``python -m service.accuracy --sigmas 0 0.001 0.01 0.02 --seeds 5`` evaluates the embedded
model on its 1,000 test images. In-process and seeded, for reproducible tables; the service
itself never seeds its noise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from service.datasets import ImageSet, cifar10_local, mnist_subset
from service.defenses import Defense, NoDefense, SmallNoiseDefense
from service.models import get_spec


@dataclass(frozen=True)
class AccuracyRow:
    defense: str
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


def accuracy(model: torch.nn.Module, defense: Defense, data: ImageSet,
             batch_size: int = 500) -> float:
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            x = torch.from_numpy(data.images[i : i + batch_size])
            pred = model(defense(x)).argmax(1).numpy()
            correct += int((pred == data.labels[i : i + batch_size]).sum())
    return correct / len(data)


def table(model: torch.nn.Module, data: ImageSet, sigmas: list[float], seeds: int,
          beta: tuple[float, float] | None = None) -> list[AccuracyRow]:
    rows = [AccuracyRow("baseline", (accuracy(model, NoDefense(), data),))]
    for sigma in sigmas:
        if sigma == 0:
            continue
        kwargs = {"distribution": "beta", "alpha": beta[0], "beta": beta[1]} if beta else {}
        name = f"SND (σ = {sigma})" + (f", α = {beta[0]}, β = {beta[1]}" if beta else "")
        accs = tuple(
            accuracy(model, SmallNoiseDefense(sigma, seed=seed, **kwargs), data)  # type: ignore[arg-type]
            for seed in range(seeds)
        )
        rows.append(AccuracyRow(name, accs))
    return rows


def markdown(rows: list[AccuracyRow]) -> str:
    lines = ["| Defense | Clean accuracy (%) |", "|---|---|"]
    for row in rows:
        spread = f" ± {row.std * 100:.2f}" if len(row.accuracies) > 1 else ""
        lines.append(f"| {row.defense} | {row.mean * 100:.2f}{spread} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.accuracy", description=__doc__)
    parser.add_argument("--model", default="resnet20-mnist")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--cifar-dir", type=Path, help="local CIFAR-10 batches (resnet20-cifar10)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.001, 0.01, 0.02])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--beta", type=float, nargs=2, metavar=("ALPHA", "BETA"))
    args = parser.parse_args(argv)
    model = get_spec(args.model).build(args.weights)
    data = cifar10_local(args.cifar_dir, False) if args.cifar_dir else mnist_subset("test")
    print(markdown(table(model, data, args.sigmas, args.seeds,
                         tuple(args.beta) if args.beta else None)))


if __name__ == "__main__":
    main()
