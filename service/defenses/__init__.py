"""Defenses in front of a model, chosen per model in the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.defenses.base import Defense, NoDefense
from service.defenses.rp import RandomResizePad
from service.defenses.snd import SmallNoiseDefense

if TYPE_CHECKING:
    from service.model_settings import DefenseSettings


def build_defense(settings: DefenseSettings) -> Defense:
    """The defense a model's settings ask for."""
    if settings.kind == "none":
        return NoDefense()
    if settings.kind == "snd":
        return SmallNoiseDefense(
            settings.sigma,
            noise=settings.noise,
            distribution=settings.distribution,
            alpha=settings.alpha,
            beta=settings.beta,
            clip=settings.clip,
            sp_amplitude=settings.sp_amplitude,
        )
    if settings.kind == "rp":
        return RandomResizePad(min_scale=settings.rp_min_scale, max_scale=settings.rp_max_scale)
    raise ValueError(f"unknown defense kind {settings.kind!r}")


__all__ = [
    "Defense",
    "NoDefense",
    "RandomResizePad",
    "SmallNoiseDefense",
    "build_defense",
]
