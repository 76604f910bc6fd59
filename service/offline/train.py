"""Reproducible training of the zoo's checkpoints.

``python -m service.offline.train --model resnet20-mnist`` rebuilds the committed checkpoint
from the embedded MNIST subset (seeded; progress shown) and writes its model card.
``python -m service.offline.train --model resnet20-cifar10 --data-dir ~/cifar-10-batches-py``
trains on a local CIFAR-10 copy. ``--model resnet20-mnist-{rse,pni,pgdat}`` trains the comparison
defenses' checkpoints with the recipes of :mod:`service.offline.training.recipes`.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from torch import nn

from service.models.registry import WEIGHTS_DIR, get_spec
from service.offline.datasets import cifar10_local, mnist_subset
from service.offline.training.common import evaluate, sha256, train, write_card

log = logging.getLogger(__name__)

DEFENDED = ("resnet20-mnist-rse", "resnet20-mnist-pni", "resnet20-mnist-pgdat")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service.offline.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="resnet20-mnist",
        choices=["resnet20-mnist", "resnet20-cifar10", *DEFENDED],
    )
    parser.add_argument("--data-dir", type=Path, help="local CIFAR-10 python batches")
    parser.add_argument("--epochs", type=int, help="default: 15 (defended: their recipe)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="checkpoint path (default: packaged weights)")
    parser.add_argument("--card", type=Path, help="model card path (default: docs/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "python -m service.offline.train " + " ".join(argv if argv is not None else _argv())
    if args.model in DEFENDED:
        from service.offline.training.recipes import main_recipe

        main_recipe(args, command.strip())
        return
    if args.epochs is None:
        args.epochs = 15

    spec = get_spec(args.model)
    if args.model == "resnet20-mnist":
        train_set, test_set = mnist_subset("victim-train"), mnist_subset("test")
        shift, flip = 2, False
    else:
        if args.data_dir is None:
            parser.error("--data-dir is required for CIFAR-10 (a local copy; nothing downloads)")
        train_set = cifar10_local(args.data_dir, True)
        test_set = cifar10_local(args.data_dir, False)
        shift, flip = 4, True
    hparams = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "shift": shift,
        "flip": flip,
    }
    start = time.perf_counter()
    model = train(
        spec,
        train_set,
        seed=args.seed,
        shift=shift,
        flip=flip,
        **{k: hparams[k] for k in ("epochs", "batch_size", "lr", "weight_decay")},
    )  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, test_set)
    log.info("test accuracy: %.2f%% (%d images)", accuracy * 100, len(test_set))

    out = args.out or WEIGHTS_DIR / f"{spec.name}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": spec.name, "seed": args.seed, "test_accuracy": accuracy, **hparams}
    net: nn.Module = model.net  # type: ignore[assignment]
    torch.save({"state_dict": net.state_dict(), "meta": meta}, out)
    card = args.card or Path("docs") / f"model-card-{spec.name}.md"
    card.parent.mkdir(parents=True, exist_ok=True)
    write_card(
        card,
        spec=spec,
        command=command.strip(),
        seed=args.seed,
        accuracy=accuracy,
        test_size=len(test_set),
        checkpoint=out,
        hparams=hparams,
        seconds=seconds,
    )
    log.info("wrote %s (sha256 %s) and %s", out, sha256(out), card)


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
