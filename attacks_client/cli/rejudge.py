"""``python -m attacks_client rejudge --config ...``: judge a run's candidates on the noise-free
reference model too (the second verdict), then rewrite the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attacks_client.cli.common import OUT, CliError, Command, exit_on_sigterm, load_experiment
from attacks_client.evaluation import CandidatesDropped, RunInProgress, rejudge, report


def configure_rejudge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        help="the experiments/<name>.toml the run was made with",
    )
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_rejudge(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.config)
    out = args.out or Path("runs") / experiment.name
    if not (out / "records.jsonl").is_file():
        raise CliError(f"{out} holds no records.jsonl to rejudge")
    exit_on_sigterm()
    try:
        OUT.print(f"judgements: {rejudge(experiment, out, progress=not args.quiet)}")
    except (RunInProgress, CandidatesDropped) as exc:
        raise CliError(str(exc)) from None
    OUT.print(f"report: {report(out)}")
    return 0


COMMAND = Command(
    help="judge a run's candidates on the noise-free reference model too (a second verdict)",
    configure=configure_rejudge,
    handler=run_rejudge,
)
