"""``python -m attacks_client evaluate --config experiments/<name>.toml``: run (or resume) an
experiment grid into JSONL records, then write its report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attacks_client.cli.common import OUT, CliError, Command, exit_on_sigterm, load_experiment
from attacks_client.evaluation import ResumeMismatch, RunInProgress, evaluate, report
from attacks_client.evaluation.grid import DEFAULT_WORKERS
from attacks_client.evaluation.records import IMAGES
from attacks_client.evaluation.shards import MergeMismatch, Shard


def configure_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="experiments/<name>.toml")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"attack runs at once (default {DEFAULT_WORKERS}); their queries share requests",
    )
    parser.add_argument(
        "--no-share",
        action="store_true",
        help="one HTTP request per query batch of each run (no client-side request sharing)",
    )
    parser.add_argument(
        "--shard",
        type=shard_arg,
        help="run only shard i of n (i/n) of the jobs, into its own --out; join with merge",
    )
    parser.add_argument(
        "--images-from",
        type=Path,
        metavar="DIR",
        help="attack the images another run directory chose (its images.json), e.g. shard 1's: "
        "shards behind a noisy reference endpoint could otherwise choose differently",
    )
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def shard_arg(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def adopt_images(source: Path, out: Path) -> None:
    """Copy ``source``'s image selection into ``out`` (refusing a different one already there)."""
    chosen = source / IMAGES
    if not chosen.is_file():
        raise CliError(f"{source} has no {IMAGES} (has its run started?)")
    mine = out / IMAGES
    if mine.exists() and json.loads(mine.read_text()) != json.loads(chosen.read_text()):
        raise CliError(f"{out} already attacks other images than {source}")
    out.mkdir(parents=True, exist_ok=True)
    mine.write_text(chosen.read_text())


def run_evaluate(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.config)
    shard: Shard | None = args.shard
    default = experiment.name if shard is None else f"{experiment.name}-shard-{shard.index}"
    out = args.out or Path("runs") / default
    exit_on_sigterm()
    if args.images_from is not None:
        adopt_images(args.images_from, out)
    try:
        evaluate(
            experiment,
            out,
            workers=args.workers,
            progress=not args.quiet,
            share=not args.no_share,
            shard=shard,
        )
    except (ResumeMismatch, RunInProgress, MergeMismatch) as exc:
        raise CliError(str(exc)) from None
    OUT.print(f"records: {out / 'records.jsonl'}")
    if shard is not None:
        OUT.print(
            f"shard {shard} done: join the shards with "
            "`python -m attacks_client merge DIR ... --out DIR`, then rejudge and report"
        )
        return 0
    if not args.no_report:
        OUT.print(f"report: {report(out)}")
    return 0


COMMAND = Command(
    help="run an experiment grid (attacks x endpoints x images) into JSONL, resumable",
    configure=configure_evaluate,
    handler=run_evaluate,
)
