"""The attacks: one module per attack over :class:`~attacks_client.attacks.base.Attack`.

:data:`ATTACKS` is the registry (name -> attack class, each module imported on first use, so an
attack whose extra is missing costs nothing until asked for); ``for name in ATTACKS`` lists them
in the paper's order and :func:`get_attack` looks one up with a helpful error.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from attacks_client.attacks.base import Attack, AttackOracle, AttackResult, Update

_SPECS: dict[str, str] = {
    # decision-based (labels only)
    "boundary": "attacks_client.attacks.boundary:BoundaryAttack",
    "sign-opt": "attacks_client.attacks.sign_opt:SignOPT",
    "hsja": "attacks_client.attacks.hsja:HopSkipJump",
    "geoda": "attacks_client.attacks.geoda:GeoDA",
    # beyond the paper: HSJA for noisy classifiers (Simon-Gabriel et al., ICML 2021)
    "popskipjump": "attacks_client.attacks.popskip:PopSkipJump",
    # score-based
    "simba": "attacks_client.attacks.simba:SimBA",
    "simba-dct": "attacks_client.attacks.simba:SimBADCT",
    "bandit-td": "attacks_client.attacks.bandits:BanditTD",
    "subspace": "attacks_client.attacks.subspace:SubspaceAttack",
    # beyond the paper: the score attack noise defenses fear most (issue 26)
    "square": "attacks_client.attacks.square:SquareAttack",
    # beyond the paper: the label-only L∞ ray search (Chen & Gu, KDD 2020)
    "rays": "attacks_client.attacks.rays:RayS",
}


class AttackRegistry(Mapping[str, type[Attack]]):
    """Read-only ``name -> attack class``, importing an attack's module when it is first asked
    for; an unknown name is a ``KeyError`` listing the known ones."""

    def __init__(self, specs: Mapping[str, str]) -> None:
        self._specs = dict(specs)

    def __getitem__(self, name: str) -> type[Attack]:
        try:
            module_name, class_name = self._specs[name].split(":")
        except KeyError:
            raise KeyError(f"unknown attack {name!r}; known: {', '.join(self._specs)}") from None
        cls: type[Attack] = getattr(importlib.import_module(module_name), class_name)
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


ATTACKS = AttackRegistry(_SPECS)


def get_attack(name: str) -> type[Attack]:
    """The attack class registered under ``name``."""
    return ATTACKS[name]


__all__ = [
    "ATTACKS",
    "Attack",
    "AttackOracle",
    "AttackRegistry",
    "AttackResult",
    "Update",
    "get_attack",
]
