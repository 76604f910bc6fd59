"""``python -m attacks_client report runs/<name>``: the paper-shaped tables and plots of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from attacks_client.cli.common import OUT, CliError, Command
from attacks_client.evaluation import report


def configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="a run directory written by `evaluate`")


def run_report(args: argparse.Namespace) -> int:
    if not (args.run / "experiment.json").is_file():
        raise CliError(f"{args.run} is not an evaluation run (no experiment.json)")
    OUT.print(f"report: {report(args.run)}")
    return 0


COMMAND = Command(
    help="paper-shaped tables (Markdown, CSV) and plots of an evaluation run",
    configure=configure_report,
    handler=run_report,
)
