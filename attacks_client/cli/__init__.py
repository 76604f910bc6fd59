"""The command line, ``python -m attacks_client COMMAND``: the parser
(:mod:`~attacks_client.cli.parser`) and one module per command (``attack``, ``evaluate``,
``rejudge``, ``report``, ``demo``), over :mod:`attacks_client.evaluation`."""

from attacks_client.cli.common import CliError, Command
from attacks_client.cli.parser import COMMANDS, build_parser, entry, main, register_command

__all__ = ["COMMANDS", "CliError", "Command", "build_parser", "entry", "main", "register_command"]
