"""``python -m attacks_client``: one sub-command per attack, plus ``evaluate``, ``rejudge``,
``report``, ``demo`` and ``calibrate``.

``python -m attacks_client hsja --url http://127.0.0.1:8000 --images 10 --budget 5000
--epsilon 1.0 2.0 --output runs/hsja.jsonl`` attacks N correctly classified test images (see
:mod:`attacks_client.cli.attack`). Each command is one module of this package exposing a
:class:`~attacks_client.cli.common.Command`; :data:`COMMANDS` lists them (name -> command) and
:func:`register_command` adds one from outside.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.text import Text

from attacks_client.cli import calibrate, demo, evaluate, merge, rejudge, report
from attacks_client.cli.attack import ATTACK_COMMANDS
from attacks_client.cli.common import ERR, CliError, Command
from attacks_client.oracles import OracleError, ScoresUnavailable

COMMANDS: dict[str, Command] = {
    **ATTACK_COMMANDS,
    "evaluate": evaluate.COMMAND,
    "merge": merge.COMMAND,
    "rejudge": rejudge.COMMAND,
    "report": report.COMMAND,
    "demo": demo.COMMAND,
    "calibrate": calibrate.COMMAND,
}


def register_command(name: str, command: Command) -> None:
    """Add (or replace) a sub-command."""
    COMMANDS[name] = command


def build_parser() -> argparse.ArgumentParser:
    invoked = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(
        prog=invoked if invoked == "snd-attack" else "python -m attacks_client",
        description="Query-based black-box attacks against an SND gateway, over HTTP.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        child = sub.add_parser(
            name, help=command.help, description=command.description or command.help
        )
        command.configure(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command; the exit status (2 for a user-facing error)."""
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
