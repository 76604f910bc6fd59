"""Read the Docker files without a Docker engine: compose files (PyYAML, with Compose's
``${VAR}`` interpolation from ``.env.example``), Dockerfile instructions, and the
``VAR=value ... bash scripts/install.sh`` lines of the Dockerfile and ``scripts/test.sh``."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.servers import ROOT

COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
INSTALL_SCRIPT = "scripts/install.sh"

# $$ | ${NAME} | ${NAME:-default} | ${NAME-default} | ${NAME:?error} | ${NAME?error} | $NAME
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(KeyError):
    """A ``${NAME:?...}`` (or plain ``${NAME}``) whose variable is not set."""


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``KEY=VALUE`` lines, as Compose reads ``.env`` (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip().strip("'\"")
    return values


def variables_used(text: str) -> set[str]:
    """The names of the variables a compose file interpolates."""
    return {
        m.group("name") or m.group("bare")
        for m in _VARIABLE.finditer(text)
        if not m.group("escaped")
    }


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation, applied to every string of a parsed compose file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        current = env.get(name)
        missing = not current if op and op.startswith(":") else current is None
        if op and op.endswith("-"):
            return arg if missing else str(current)
        if missing:
            raise MissingVariable(f"${{{name}}} is not set" + (f": {arg}" if arg else ""))
        return str(current)

    return _VARIABLE.sub(substitute, value)


def load_compose(path: Path = COMPOSE, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A compose file, parsed (YAML merge keys resolved) and interpolated with ``env``
    (default: the values of ``.env.example``); ``x-*`` extension fields dropped."""
    raw = yaml.safe_load(path.read_text())
    raw = {k: v for k, v in raw.items() if not k.startswith("x-")}
    return interpolate(raw, read_env_file() if env is None else env)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or ``KEY=VALUE`` list) as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def settings_of(env: dict[str, str]) -> dict[str, str]:
    """The ``SND_*`` variables of an environment, as ``ServiceProcess`` settings names."""
    return {k.removeprefix("SND_").lower(): v for k, v in env.items() if k.startswith("SND_")}


def api_keys(env: dict[str, str]) -> dict[str, str]:
    return dict(json.loads(env["SND_API_KEYS"]))


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str  # the rest, continuation lines joined

    def exec_form(self) -> list[str] | None:
        """``["a", "b"]`` arguments (JSON array), or None for the shell form."""
        text = self.args.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return None


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions in order; comments dropped, ``\\`` continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        pending += line
        keyword, _, args = pending.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    return instructions


def arg_defaults(instructions: list[Instruction]) -> dict[str, str | None]:
    defaults: dict[str, str | None] = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, sep, value = ins.args.partition("=")
            defaults[name.strip()] = value.strip().strip('"') if sep else None
    return defaults


@dataclass(frozen=True)
class InstallCall:
    """One ``A=1 B=2 bash scripts/install.sh [args]`` command of a shell line."""

    env: dict[str, str]
    args: list[str]


def install_calls(shell: str, variables: dict[str, str] | None = None) -> list[InstallCall]:
    """Every call of ``scripts/install.sh`` in a shell text (commands separated by newlines,
    ``;``, ``&&``, ``||``, ...), with its leading ``VAR=value`` assignments (``$VAR`` expanded
    from ``variables``)."""
    calls = []
    for line in shell.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|()"):
                call = _install_call(command, variables or {})
                if call is not None:
                    calls.append(call)
                command = []
            else:
                command.append(token)
    return calls


def _install_call(words: list[str], variables: dict[str, str]) -> InstallCall | None:
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, _, value = words[0].partition("=")
        env[name] = interpolate(value, variables)
        words = words[1:]
    if words[:1] == ["bash"]:
        words = words[1:]
    if words[:1] in ([INSTALL_SCRIPT], ["./" + INSTALL_SCRIPT]):
        return InstallCall(env, words[1:])
    return None
