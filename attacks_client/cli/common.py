"""What every sub-command shares: the :class:`Command` record, :class:`CliError`, the endpoint
arguments, the consoles, and loading an experiment file."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from attacks_client.evaluation.experiment import Experiment

OUT = Console(highlight=False)
ERR = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class Command:
    """A sub-command: ``configure`` adds its arguments, ``handler`` runs it (exit status)."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    description: str | None = None


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--model``, ``--api-key``, ``--eval-api-key`` (shared with other commands)."""
    group = parser.add_argument_group("endpoint")
    group.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="service base URL (v2+http://host:port: the Open Inference Protocol)",
    )
    group.add_argument(
        "--protocol",
        choices=("predict", "v2"),
        default=None,
        help="the gateway's /predict, or OIP v2 (Triton, KServe, MLServer, the gateway's /v2); "
        "default: v2 for a v2+http:// URL, else predict",
    )
    group.add_argument("--model", default=None, help="model name (default: the server's)")
    group.add_argument("--api-key", default=None, help="attacker's X-API-Key")
    group.add_argument(
        "--eval-api-key", default=None, help="evaluator's X-API-Key (default: the attacker's key)"
    )
    group.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout, seconds")


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the services a command started are stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def load_experiment(path: Path) -> Experiment:
    """The experiment file at ``path``; a :class:`CliError` naming it if it is missing or bad."""
    from attacks_client.evaluation.experiment import Experiment

    if not path.is_file():
        raise CliError(f"no experiment file {path}")
    try:
        return Experiment.load(path)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{path}: {exc}") from None
