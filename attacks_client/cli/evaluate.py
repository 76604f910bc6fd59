"""``python -m attacks_client evaluate --config experiments/<name>.toml``: run (or resume) an
experiment grid into JSONL records, then write its report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attacks_client.cli.common import OUT, CliError, Command, exit_on_sigterm, load_experiment
from attacks_client.evaluation import ResumeMismatch, RunInProgress, evaluate, report


def configure_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="experiments/<name>.toml")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    parser.add_argument("--workers", type=int, default=1, help="images attacked at once")
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_evaluate(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.config)
    out = args.out or Path("runs") / experiment.name
    exit_on_sigterm()
    try:
        evaluate(experiment, out, workers=args.workers, progress=not args.quiet)
    except (ResumeMismatch, RunInProgress) as exc:
        raise CliError(str(exc)) from None
    OUT.print(f"records: {out / 'records.jsonl'}")
    if not args.no_report:
        OUT.print(f"report: {report(out)}")
    return 0


COMMAND = Command(
    help="run an experiment grid (attacks x endpoints x images) into JSONL, resumable",
    configure=configure_evaluate,
    handler=run_evaluate,
)
