"""Clean accuracy behind a defense, mean ± std over seeds (the paper's Table 1).

``python -m service.offline.accuracy --sigmas 0 0.001 0.01 0.02 --seeds 5`` evaluates the embedded
model on its 1,000 test images. In-process and seeded, for reproducible tables; the service
itself never seeds its noise.

``--defenses`` tabulates rows of any model and defense instead, each row ``MODEL+DEFENSE``
with either part optional: models ``baseline`` (= ``--model``), ``rse``, ``pni``, ``pgdat``
(the ``resnet20-mnist-*`` zoo entries) or a zoo name; defenses ``snd:SIGMA[:NOISE]`` and
``rp[:MAX_SCALE]``. Randomized rows (a noisy defense or a noisy model) are repeated over
``--seeds`` seeds (mean ± std); the paper's Table 1 on our data is::

    python -m service.offline.accuracy --seeds 5 --defenses baseline snd:0.001 snd:0.01 snd:0.02 \
        rp rse pni pgdat pgdat+snd:0.01 pgdat+snd:0.001
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from service.defenses import Defense, NoDefense, RandomResizePad, SmallNoiseDefense
from service.models import get_spec
from service.models.noise import noise_sources, seed_noise
from service.offline.datasets import ImageSet, cifar10_local, mnist_subset

MODEL_ALIASES = {
    "rse": "resnet20-mnist-rse",
    "pni": "resnet20-mnist-pni",
    "pgdat": "resnet20-mnist-pgdat",
}
MODEL_LABELS = {
    "resnet20-mnist-rse": "RSE",
    "resnet20-mnist-pni": "PNI",
    "resnet20-mnist-pgdat": "PGD-AT",
}


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


def accuracy(
    model: torch.nn.Module, defense: Defense, data: ImageSet, batch_size: int = 500
) -> float:
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            x = torch.from_numpy(data.images[i : i + batch_size])
            pred = model(defense(x)).argmax(1).numpy()
            correct += int((pred == data.labels[i : i + batch_size]).sum())
    return correct / len(data)


def table(
    model: torch.nn.Module,
    data: ImageSet,
    sigmas: list[float],
    seeds: int,
    beta: tuple[float, float] | None = None,
) -> list[AccuracyRow]:
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


@dataclass(frozen=True)
class RowSpec:
    """One ``--defenses`` row: a zoo model and a defense factory ``seed -> Defense``."""

    label: str
    model: str | None  # None: the ``--model`` of the command
    defense: str | None

    def build_defense(self, seed: int) -> Defense:
        if self.defense is None:
            return NoDefense()
        kind, *params = self.defense.split(":")
        if kind == "snd":
            noise = params[1] if len(params) > 1 else "gaussian"
            return SmallNoiseDefense(float(params[0]), noise=noise, seed=seed)  # type: ignore[arg-type]
        if kind == "rp":
            return RandomResizePad(max_scale=float(params[0]) if params else 1.1, seed=seed)
        raise ValueError(f"unknown defense {self.defense!r} (snd:SIGMA[:NOISE] or rp[:SCALE])")


def parse_row(text: str) -> RowSpec:
    """``baseline``, ``snd:0.01``, ``pgdat+snd:0.01``, ``rp``, ``rse``, ``snd:0.01:laplace``."""
    model: str | None = None
    defense: str | None = None
    for part in text.split("+"):
        kind = part.split(":")[0]
        if kind in ("snd", "rp"):
            defense = part
        elif part != "baseline":
            model = MODEL_ALIASES.get(part, part)
    names = [MODEL_LABELS.get(model, model)] if model else []
    if defense is not None:
        kind, *params = defense.split(":")
        if kind == "rp":
            names.append("R&P")
        else:
            extra = f", {params[1].replace('_', '-')}" if len(params) > 1 else ""
            names.append(f"SND (σ = {params[0]}{extra})")
        RowSpec("", model, defense).build_defense(0)  # fail early on a bad spec
    return RowSpec(" + ".join(names) or "Baseline", model, defense)


def defense_rows(
    specs: list[RowSpec],
    data: ImageSet,
    seeds: int,
    default_model: str,
    weights: Path | None = None,
) -> list[AccuracyRow]:
    """Clean accuracy of each row; rows with randomness get ``seeds`` seeded repeats."""
    models: dict[str, torch.nn.Module] = {}
    rows = []
    for spec in specs:
        name = spec.model or default_model
        if name not in models:
            models[name] = get_spec(name).build(weights if spec.model is None else None)
        model = models[name]
        randomized = spec.defense is not None or bool(noise_sources(model))
        accs = []
        for seed in range(seeds if randomized else 1):
            seed_noise(model, seed)
            accs.append(accuracy(model, spec.build_defense(seed), data))
        seed_noise(model, None)
        rows.append(AccuracyRow(spec.label, tuple(accs)))
    return rows


def markdown(rows: list[AccuracyRow]) -> str:
    lines = ["| Defense | Clean accuracy (%) |", "|---|---|"]
    for row in rows:
        spread = f" ± {row.std * 100:.2f}" if len(row.accuracies) > 1 else ""
        lines.append(f"| {row.defense} | {row.mean * 100:.2f}{spread} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.offline.accuracy", description=__doc__)
    parser.add_argument("--model", default="resnet20-mnist")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--cifar-dir", type=Path, help="local CIFAR-10 batches (resnet20-cifar10)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.001, 0.01, 0.02])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--beta", type=float, nargs=2, metavar=("ALPHA", "BETA"))
    parser.add_argument(
        "--defenses",
        nargs="+",
        metavar="ROW",
        help="rows MODEL+DEFENSE, e.g. baseline snd:0.01 rp rse pgdat+snd:0.01",
    )
    args = parser.parse_args(argv)
    data = cifar10_local(args.cifar_dir, False) if args.cifar_dir else mnist_subset("test")
    if args.defenses:
        specs = [parse_row(row) for row in args.defenses]
        print(markdown(defense_rows(specs, data, args.seeds, args.model, args.weights)))
        return
    model = get_spec(args.model).build(args.weights)
    print(
        markdown(
            table(model, data, args.sigmas, args.seeds, tuple(args.beta) if args.beta else None)
        )
    )


if __name__ == "__main__":
    main()
