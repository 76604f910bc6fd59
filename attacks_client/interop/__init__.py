"""Bridges from attacks_client oracles to other attack libraries.

``attacks_client.interop.art``: any oracle as an ART classifier (Adversarial Robustness Toolbox,
Nicolae et al. 2018, https://github.com/Trusted-AI/adversarial-robustness-toolbox), with exact
query counts and a clean stop at a budget. ART itself is optional
(``pip install 'snd-gateway[parity]'``) and imported only when a bridge is built.
"""

from attacks_client.interop.art import (
    INSTALL_HINT,
    ArtBridge,
    ArtRunResult,
    HsjaRun,
    art_classifier,
    art_geoda,
    numpy2_shims,
    run_art_attack,
    run_hsja_iterations,
)

__all__ = [
    "INSTALL_HINT",
    "ArtBridge",
    "ArtRunResult",
    "HsjaRun",
    "art_classifier",
    "art_geoda",
    "numpy2_shims",
    "run_art_attack",
    "run_hsja_iterations",
]
