"""The ``evaluate``, ``rejudge``, ``report`` and ``demo`` sub-commands of the client CLI."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from attacks_client.cli import CliError, Command, register_command

if TYPE_CHECKING:
    from attacks_client.experiment import Experiment

OUT = Console(highlight=False)


def configure_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="experiments/<name>.toml")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    parser.add_argument("--workers", type=int, default=1, help="images attacked at once")
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the services this command started are stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def run_evaluate(args: argparse.Namespace) -> int:
    from attacks_client.evaluate import ResumeMismatch, RunInProgress, evaluate
    from attacks_client.report import report

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


def load_experiment(path: Path) -> Experiment:
    from attacks_client.experiment import Experiment

    if not path.is_file():
        raise CliError(f"no experiment file {path}")
    try:
        return Experiment.load(path)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{path}: {exc}") from None


def configure_rejudge(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True,
                        help="the experiments/<name>.toml the run was made with")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_rejudge(args: argparse.Namespace) -> int:
    from attacks_client.evaluate import RunInProgress
    from attacks_client.rejudge import CandidatesDropped, rejudge
    from attacks_client.report import report

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


def configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="a run directory written by `evaluate`")


def run_report(args: argparse.Namespace) -> int:
    from attacks_client.report import report

    if not (args.run / "experiment.json").is_file():
        raise CliError(f"{args.run} is not an evaluation run (no experiment.json)")
    OUT.print(f"report: {report(args.run)}")
    return 0


def configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--epsilon", type=float, default=1.5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, help="keep the run here (default: a temp dir)")


def run_demo(args: argparse.Namespace) -> int:
    from attacks_client.demo import run_demo as demo

    exit_on_sigterm()
    demo(images=args.images, budget=args.budget, sigma=args.sigma, epsilon=args.epsilon,
         out_dir=args.out, workers=args.workers, console=OUT)
    return 0


register_command("evaluate", Command(
    help="run an experiment grid (attacks x endpoints x images) into JSONL, resumable",
    configure=configure_evaluate, handler=run_evaluate))
register_command("rejudge", Command(
    help="judge a run's candidates on the noise-free reference model too (a second verdict)",
    configure=configure_rejudge, handler=run_rejudge))
register_command("report", Command(
    help="paper-shaped tables (Markdown, CSV) and plots of an evaluation run",
    configure=configure_report, handler=run_report))
register_command("demo", Command(
    help="attack an undefended and an SND-defended service side by side (starts both)",
    configure=configure_demo, handler=run_demo))
