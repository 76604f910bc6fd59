"""``python -m attacks_client``: one sub-command per attack, more commands by registration.

``python -m attacks_client hsja --url http://127.0.0.1:8000 --images 10 --budget 5000
--epsilon 1.0 2.0 --output runs/hsja.jsonl`` attacks N correctly classified test images, one
JSONL record per image, and prints a summary table. Success at checkpoint q: the attack held a
candidate after q queries, its L2 distance to x0 is at most epsilon, and a separate evaluator
identity (not counted against the attack) sees it misclassified in the majority of
``--eval-draws`` draws.

Commands live in :data:`COMMANDS` (name -> :class:`Command`); :func:`register_command` adds one
(``evaluate``, ``demo``, ``report``, ...) without touching the rest of this module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.text import Text

from attacks_client.attacks import ATTACK_NAMES

ERR = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class Command:
    """A sub-command: ``configure`` adds its arguments, ``handler`` runs it (exit status)."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    description: str | None = None


COMMANDS: dict[str, Command] = {}


def register_command(name: str, command: Command) -> None:
    """Add (or replace) a sub-command."""
    COMMANDS[name] = command


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


# -- the attack sub-commands --------------------------------------------------------------------


def _checkpoints(text: str) -> list[int]:
    try:
        values = sorted({int(float(v)) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"checkpoints must be integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("checkpoints must be positive")
    return values


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--model``, ``--api-key``, ``--eval-api-key`` (shared with other commands)."""
    group = parser.add_argument_group("endpoint")
    group.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    group.add_argument("--model", default=None, help="model name (default: the server's)")
    group.add_argument("--api-key", default=None, help="attacker's X-API-Key")
    group.add_argument("--eval-api-key", default=None,
                       help="evaluator's X-API-Key (default: the attacker's key)")
    group.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout, seconds")


def configure_attack(parser: argparse.ArgumentParser) -> None:
    add_endpoint_arguments(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--images", type=int, default=10,
                     help="correctly classified test images to attack")
    run.add_argument("--data", default="embedded",
                     help="'embedded' (MNIST test split), a CIFAR-10 batch dir, or a .npz file")
    run.add_argument("--seed", type=int, default=0, help="image sampling and attack seed")
    run.add_argument("--budget", type=int, default=10_000, help="queries per image")
    run.add_argument("--epsilon", type=float, nargs="+", default=[1.0],
                     help="L2 thresholds for success (several allowed)")
    run.add_argument("--checkpoints", type=_checkpoints, default=[1000, 2000, 5000, 10000],
                     help="query counts to score at, comma-separated (clipped to the budget)")
    run.add_argument("--eval-draws", type=int, default=10,
                     help="evaluator draws per candidate; success needs a majority")
    run.add_argument("--repeat", type=int, default=1,
                     help="adaptive attack: majority/mean of T real queries per logical query")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="attack hyperparameter (repeatable), typed by the attack's signature")
    run.add_argument("--show-params", action="store_true",
                     help="print the attack's hyperparameters and defaults, then exit")
    run.add_argument("--output", default=None, help="JSONL file, one record per image")
    run.add_argument("--trajectory-stride", type=int, default=10,
                     help="keep every k-th query's L2 in the record (1 = all)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")


def _attack_handler(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        from attacks_client.runner import run_attack_command

        return run_attack_command(name, args)

    return handler


for _name in ATTACK_NAMES:
    register_command(
        _name,
        Command(
            help=f"run the {_name} attack against an endpoint",
            configure=configure_attack,
            handler=_attack_handler(_name),
        ),
    )


from attacks_client import commands  # noqa: E402,F401  (registers evaluate, report, demo)

# -- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m attacks_client",
        description="Query-based black-box attacks against an SND gateway, over HTTP.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help,
                               description=command.description or command.help)
        command.configure(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    from attacks_client.oracle import OracleError, ScoresUnavailable

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command].handler(args)
    except (CliError, OracleError, ScoresUnavailable, FileNotFoundError) as exc:
        ERR.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        ERR.print("interrupted")
        return 130


def entry() -> None:
    sys.exit(main())


__all__: list[Any] = ["COMMANDS", "Command", "CliError", "build_parser", "main",
                      "register_command", "add_endpoint_arguments"]
