"""An attack's hyperparameters from text: ``--param k=200`` on the command line, typed by the
attack class's ``__init__`` signature."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, get_args, get_origin

from attacks_client.attacks.base import Attack


def coerce(value: str, annotation: Any) -> Any:
    """Parse ``value`` as ``annotation`` (int, float, bool, str, Literal, ``X | None``)."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if value.lower() in ("none", "null") and len(options) < len(get_args(annotation)):
            return None
        errors = []
        for option in options:
            try:
                return coerce(value, option)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        choices = get_args(annotation)
        for choice in choices:
            if str(choice) == value:
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, choices))}")
    if annotation is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if annotation is int:
        number = float(value)
        if not number.is_integer():
            raise ValueError("expected an integer")
        return int(number)
    if annotation is float:
        return float(value)
    if annotation is str or annotation is Any:
        return value
    raise ValueError(f"cannot parse a {annotation!r} from the command line")


def attack_signature(cls: type[Attack]) -> dict[str, tuple[Any, Any]]:
    """``name -> (annotation, default)`` of the attack's ``__init__`` hyperparameters."""
    hints = typing.get_type_hints(cls.__init__)
    out = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        out[name] = (hints.get(name, str), parameter.default)
    return out


def parse_params(cls: type[Attack], pairs: Sequence[str]) -> dict[str, Any]:
    """``["k=200", "alpha=0.1"]`` -> typed keyword arguments of ``cls``; ``ValueError`` names the
    offending pair."""
    signature = attack_signature(cls)
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        if key not in signature:
            raise ValueError(
                f"--param {key!r}: {cls.name} has no such hyperparameter; "
                f"it takes {', '.join(signature)}"
            )
        try:
            params[key] = coerce(value.strip(), signature[key][0])
        except ValueError as exc:
            raise ValueError(f"--param {pair!r}: {exc}") from None
    return params
