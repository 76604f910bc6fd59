"""``python -m attacks_client demo``: an undefended and an SND-defended service attacked side by
side (both started here).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attacks_client.cli.common import OUT, Command, exit_on_sigterm
from attacks_client.evaluation.demo import run_demo as demo


def configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--epsilon", type=float, default=1.5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, help="keep the run here (default: a temp dir)")


def run_demo(args: argparse.Namespace) -> int:
    exit_on_sigterm()
    demo(
        images=args.images,
        budget=args.budget,
        sigma=args.sigma,
        epsilon=args.epsilon,
        out_dir=args.out,
        workers=args.workers,
        console=OUT,
    )
    return 0


COMMAND = Command(
    help="attack an undefended and an SND-defended service side by side (starts both)",
    configure=configure_demo,
    handler=run_demo,
)
