"""The attack registry: name -> attack class, imported lazily."""

from __future__ import annotations

import importlib

from attacks_client.attacks.base import Attack, AttackOracle, AttackResult, Update

_REGISTRY: dict[str, str] = {
    # decision-based (labels only)
    "boundary": "attacks_client.attacks.boundary:BoundaryAttack",
    "sign-opt": "attacks_client.attacks.sign_opt:SignOPT",
    "hsja": "attacks_client.attacks.hsja:HopSkipJump",
    "geoda": "attacks_client.attacks.geoda:GeoDA",
    # score-based
    "simba": "attacks_client.attacks.simba:SimBA",
    "simba-dct": "attacks_client.attacks.simba:SimBADCT",
    "bandit-td": "attacks_client.attacks.bandits:BanditTD",
    "subspace": "attacks_client.attacks.subspace:SubspaceAttack",
}
ATTACK_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_attack(name: str) -> type[Attack]:
    """The attack class registered under ``name``."""
    try:
        module_name, class_name = _REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"unknown attack {name!r}; known: {', '.join(ATTACK_NAMES)}") from None
    cls: type[Attack] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = ["ATTACK_NAMES", "Attack", "AttackOracle", "AttackResult", "Update", "get_attack"]
