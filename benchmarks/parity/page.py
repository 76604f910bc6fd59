"""``docs/results/parity.md``: the setup, the parity tables under both verdicts, the speeds.

The page shows every attack the records file holds, not only the run's ``--attacks``: a run of
some attacks over a records file seeded with earlier records (``docs/results/parity/
records.jsonl.gz``) keeps the other rows, and the command line names both runs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from benchmarks.common import machine
from benchmarks.parity.art_runs import SQUARE_PER_ITERATION, SQUARE_START
from benchmarks.parity.jobs import ATTACKS
from benchmarks.parity.table import L2_RATIO, SUCCESS_MARGIN, parity_table, speed_table

READING = "## Reading"
INTRO = """\
# Attack parity with ART

This project's attacks next to ART 1.20.1's (Nicolae et al. 2018), the implementation the SND
paper ran for HSJA and the Boundary Attack (App. B.1), and a second reference for Sign-OPT,
GeoDA, SimBA and the Square Attack. Both run over HTTP against the same local server (ART
through `attacks_client.oracles.ArtBridge`), on the same correctly classified embedded-MNIST test
images (seed {seed}), with the same budget of {budget} queries per image, every image each sends
counted (ART's own x0 predictions included). One verdict rule for both, on the final candidate:
success at ε when its L2 to x0 is ≤ ε (its L∞ for `square-linf`) and the attacked endpoint
misclassifies it in a majority of {draws} draws ([the evaluation
protocol](../attacking/protocol.md#success), asked by a separate identity); the second table
asks the noise-free model h instead.

ART's settings (`benchmarks/parity/art_runs.py`): ART's defaults everywhere, HSJA with
`max_iter = 64` in one `generate` call (a subclass notes ART's current sample at each iteration,
so that at the budget that sample is the result); Boundary ends at the budget with its current
adversarial; Sign-OPT's `query_limit` and GeoDA's query plan are set below the budget (they
check their limits only between iterations); SimBA makes `(budget - 2) // 2` iterations (2
queries each), the DCT variant with `freq_dim = 4, stride = 1`; Square below. Ours: each
attack's defaults.

Targets (the fidelity issue): in every cell our success ≥ ART's − {margin:.0f} points at ε = 1.5
and 2.0 (ε∞ = 0.3 for `square-linf`), and our median distance (L2; L∞ for `square-linf`) ≤
{ratio} × ART's. A cell compares only the images where both could start; the last column says
how many were left out and why (ART's uniform-noise start fails on every image of the class that
uniform noise falls into, 8 here). Each rate: hits/images [95% Wilson interval, %]. A median
counts a failed image as ∞; a distance within float32 rounding (10⁻⁶ relative) of ε is within ε.

Square Attack (Andriushchenko et al. 2020), two rows: `square-linf` (ε∞ = 0.3, the usual MNIST
radius; its own table) and `square-l2` (ε = 1.5). Ours: `SquareAttack(norm=..., epsilon=...)`,
otherwise its defaults (the authors' code: `p_init` 0.05 for L∞ and 0.1 for L2, one query for
the start and one per iteration, x0 never asked). ART's `SquareAttack`: the same norm and ε,
`p_init` set to the authors' values (ART's default, 0.8, is not theirs), `nb_restarts = 1`,
`batch_size = 1`, `max_iter = (budget − 3) // 3`. How ART spends its queries: with `y` given,
`generate` predicts x0 twice (the restart's success check, then x0's loss) and its start once;
each iteration then predicts its incumbent twice (a success check, then its loss again) and the
candidate once: 3 + 3 · `max_iter` queries in all ({square_queries} here), where the authors
spend 1 + 1 per iteration; it learns of a success at the next check (one query more), and its
L∞ update, unlike the authors', does not redraw a window that leaves the incumbent unchanged.

Non-finite images: ART's L2 update (line 465 of `art/attacks/evasion/square_attack.py`) divides
the new window by ‖w‖ · √(max(ε² − ‖δ‖², 0)/c + ‖δ_windows‖²), where the authors multiply by
the root, so when the incumbent lies on the sphere and neither window touches its perturbation
it divides by 0, and the renormalization (lines 491–495) turns the window into NaN. The server
refuses non-finite pixels (422), so the harness (`NonFiniteGuard`, `benchmarks/parity/jobs.py`)
does not send such an image: it counts as a query spent (in the queries columns and the budget)
and in the non-finite columns, and is answered with NaN scores, what the network answers a NaN
input in-process; ART's loss is then NaN and `(new − old) < 0` is False, so the answer gives ART
nothing. A cell where ART asked any says **ART broken**: part of its budget went to images no
model can classify, and its L2 step is not the authors'. Ours never asks one (a test asserts
it). A non-finite count of "–": the records predate the count.

{commands}. Machine: {machine}.
"""


def write_page(
    path: Path,
    records: dict[tuple[str, str, str, int], dict[str, Any]],
    args: argparse.Namespace,
    images: list[int],
    command: str,
) -> None:
    """The page of every attack in ``records`` (or run now), on this run's images and any other
    image the records hold, at this run's endpoints and any other the records hold."""
    attacks = [a for a in ATTACKS if a in args.attacks or any(k[0] == a for k in records)]
    runs = [k for k in records if k[0] in attacks and k[1] != "art-inprocess"]
    endpoints = list(args.endpoints)
    endpoints += sorted({k[2] for k in runs} - set(endpoints))
    images = list(images) + sorted({k[3] for k in runs} - set(images))
    kept = [a for a in attacks if a not in args.attacks]
    iterations = max((args.budget - SQUARE_START) // SQUARE_PER_ITERATION, 1)
    text = INTRO.format(
        seed=args.seed,
        budget=args.budget,
        draws=args.eval_draws,
        margin=100 * SUCCESS_MARGIN,
        ratio=L2_RATIO,
        square_queries=SQUARE_START + SQUARE_PER_ITERATION * iterations,
        commands=_commands(path, command, list(args.attacks), kept),
        machine=machine(),
    )
    text += "\n## Judged by the defended endpoint (majority of noisy draws)\n\n"
    text += parity_table(records, attacks, endpoints, images, "defended")
    text += "\n## Judged by the noise-free model h\n\n"
    text += parity_table(records, attacks, endpoints, images, "h")
    text += (
        "\n## Speed: seconds per image at the same budget (endpoint `none`)\n\n"
        f"ART in-process runs the same network as a local function (first "
        f"{args.inprocess_images} images), no HTTP and no server.\n\n"
    )
    text += speed_table(records, attacks, "none")
    text += _kept_reading(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _commands(path: Path, command: str, ran: list[str], kept: list[str]) -> str:
    """This run's command; with rows of earlier runs kept, also the commands the existing page
    names (the runs that made them)."""
    if not kept:
        return f"Command: `{command}`"
    old = path.read_text() if path.exists() else ""
    line = next((s for s in old.splitlines() if s.startswith(("Command: ", "Commands: "))), "")
    earlier = [
        c for c in re.findall(r"`(python -m benchmarks\.parity[^`]*)`", line) if c != command
    ]
    made = f", made by {'; '.join(f'`{c}`' for c in earlier)}" if earlier else ""
    return (
        f"Commands: `{command}` for {', '.join(ran)}; the rows of {', '.join(kept)} are the "
        f"records already in the records file{made}"
    )


def _kept_reading(path: Path) -> str:
    """The hand-written ``## Reading`` section of the existing page, kept on regeneration."""
    if not path.exists():
        return ""
    old = path.read_text()
    start = old.find(READING)
    return "\n" + old[start:].rstrip("\n") + "\n" if start >= 0 else ""
