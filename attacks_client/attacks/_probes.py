"""Success checks of the score attacks from answers already paid for (the counting rule:
docs/attacking/protocol.md, "Counting queries")."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from attacks_client.attacks.base import AttackOracle


def top_is_adversarial(probs: np.ndarray, oracle: AttackOracle) -> bool:
    """The top class of ``probs`` is the target (targeted) or not the true label."""
    top = int(np.argmax(probs))
    return top == oracle.target if oracle.target is not None else top != oracle.label


def probe_success(
    oracle: AttackOracle,
    x: np.ndarray,
    probes: np.ndarray,
    answers: np.ndarray,
    in_ball: Callable[[np.ndarray], bool],
) -> bool:
    """The per-step success check of Bandit-TD and Subspace without a query of its own.

    Their finite-difference probes lie within ``fd_eta`` of the current image ``x``, so their
    answered scores carry its label: a probe answered adversarial inside the attack's ball is
    reported and ends the attack (True). For one outside it (probes reach ``fd_eta`` beyond),
    ``x`` itself, which lies in the ball, is asked once — the references' per-step check, here
    only when the probes point to success. Candidates always lie in the ball."""
    for probe, probs in zip(probes, answers, strict=True):
        if top_is_adversarial(probs, oracle):
            if in_ball(probe):
                oracle.report(probe)
                return True
            if top_is_adversarial(oracle.scores(x[None])[0], oracle):
                oracle.report(x)
                return True
            return False
    return False
