"""``docs/results/parity.md``: the setup, the parity tables under both verdicts, the speeds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.common import machine
from benchmarks.parity.table import L2_RATIO, SUCCESS_MARGIN, parity_table, speed_table

READING = "## Reading"
INTRO = """\
# Attack parity with ART

This project's attacks next to ART 1.20.1's (Nicolae et al. 2018), the implementation the SND
paper ran for HSJA and the Boundary Attack (App. B.1), and a second reference for Sign-OPT,
GeoDA and SimBA. Both run over HTTP against the same local server (ART through
`attacks_client.oracles.ArtBridge`), on the same correctly classified embedded-MNIST test images
(seed {seed}), with the same budget of {budget} queries per image, every image each sends counted
(ART's own x0 predictions included). One verdict rule for both, on the final candidate: success at
ε when its L2 to x0 is ≤ ε and the attacked endpoint misclassifies it in a majority of
{draws} draws (DESIGN section 7, asked by a separate identity); the second table asks the
noise-free model h instead.

ART's settings (`benchmarks/parity/art_runs.py`): ART's defaults everywhere, HSJA with
`max_iter = 64` and stepped one iteration per `generate(..., resume=True)` so that it stops
cleanly at the budget (2 extra queries per iteration, counted); Boundary ends at the budget with
its current adversarial; Sign-OPT's `query_limit` and GeoDA's query plan are set below the budget
(they check their limits only between iterations); SimBA makes `(budget - 2) // 2` iterations
(2 queries each), the DCT variant with `freq_dim = 4, stride = 1`. Ours: each attack's defaults.

Targets (the fidelity issue): in every cell our success ≥ ART's − {margin:.0f} points at ε = 1.5
and 2.0, and our median L2 ≤ {ratio} × ART's. A cell compares only the images where both could
start; the last column says how many were left out and why (ART's uniform-noise start fails on
every image of the class that uniform noise falls into, 8 here). Each rate: hits/images [95%
Wilson interval, %]. Median L2 counts a failed image as ∞.

Command: `{command}`. Machine: {machine}.
"""


def write_page(
    path: Path,
    records: dict[tuple[str, str, str, int], dict[str, Any]],
    args: argparse.Namespace,
    images: list[int],
    command: str,
) -> None:
    text = INTRO.format(
        seed=args.seed,
        budget=args.budget,
        draws=args.eval_draws,
        margin=100 * SUCCESS_MARGIN,
        ratio=L2_RATIO,
        command=command,
        machine=machine(),
    )
    text += "\n## Judged by the defended endpoint (majority of noisy draws)\n\n"
    text += parity_table(records, args.attacks, args.endpoints, images, "defended")
    text += "\n## Judged by the noise-free model h\n\n"
    text += parity_table(records, args.attacks, args.endpoints, images, "h")
    text += (
        "\n## Speed: seconds per image at the same budget (endpoint `none`)\n\n"
        f"ART in-process runs the same network as a local function (first "
        f"{args.inprocess_images} images), no HTTP and no server.\n\n"
    )
    text += speed_table(records, args.attacks, "none")
    text += _kept_reading(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _kept_reading(path: Path) -> str:
    """The hand-written ``## Reading`` section of the existing page, kept on regeneration."""
    if not path.exists():
        return ""
    old = path.read_text()
    start = old.find(READING)
    return "\n" + old[start:].rstrip("\n") + "\n" if start >= 0 else ""
