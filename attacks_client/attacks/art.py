"""ART's evasion attacks run on one image through an :class:`~attacks_client.oracles.art.ArtBridge`.

The reference runs of the parity benchmark (``benchmarks/parity``): ART 1.20.1 (Nicolae et al.,
arXiv:1807.01069; https://github.com/Trusted-AI/adversarial-robustness-toolbox) is what the paper
ran for HSJA and Boundary (App. B.1). :func:`run_art_attack` runs any ART attack once,
:func:`run_hsja_iterations` runs ART's HopSkipJump with a checkpoint after every iteration and
:func:`art_geoda` builds ART's GeoDA at a query plan it can make. A budget stop
(:class:`~attacks_client.oracles.base.BudgetExhausted` raised by the bridge) becomes
``stop_reason="budget"``. ART is optional (``pip install 'snd-gateway[parity]'``) and imported
only inside these functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from attacks_client.oracles.art import INSTALL_HINT, ArtBridge, numpy2_shims
from attacks_client.oracles.base import BudgetExhausted

log = logging.getLogger(__name__)

StopReason = Literal["converged", "budget"]
HsjaStopReason = Literal["converged", "budget", "no_start"]


def art_geoda(classifier: Any, *, max_iter: int = 4000, **params: Any) -> Any:
    """ART's ``GeoDA`` (Rahmati et al. 2020) on ``classifier``, with :func:`numpy2_shims` applied
    and ``max_iter`` (its query plan) lowered to the nearest size ART 1.20.1 can plan: its
    constructor fails for ``max_iter <= 250`` (``IndexError``: no iterations) and for some larger
    sizes (``RecursionError``: 269-291, 378-379, 453-454 among those up to 5,000).
    ``ValueError`` if no size from 251 to ``max_iter`` works. ``params`` go to ``GeoDA``."""
    try:
        from art.attacks.evasion import GeoDA
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    numpy2_shims()
    for size in range(max_iter, 250, -1):
        try:
            attack = GeoDA(classifier, max_iter=size, **params)
        except (IndexError, RecursionError):
            continue
        if size != max_iter:
            log.info("GeoDA cannot plan max_iter=%d; using %d", max_iter, size)
        return attack
    raise ValueError(f"ART's GeoDA cannot plan max_iter={max_iter}: it needs more than 250")


@dataclass(frozen=True)
class ArtRunResult:
    """One ART attack on one image: the adversarial candidate ART returned (``None`` when it
    stopped at the budget or returned x0 unchanged, its way of saying it found nothing), the
    bridge's queries and requests during the run, why it stopped and the wall time in seconds.
    The candidate is not judged: ask another oracle (an evaluator key) whether it is
    misclassified."""

    adversarial: np.ndarray | None
    queries: int
    requests: int
    stop_reason: StopReason
    wall_time: float


def _one_hot(label: int, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[[int(label)]]


def run_art_attack(
    attack: Any | Callable[[Any], Any],
    x0: np.ndarray,
    label: int | None,
    bridge: ArtBridge,
    **generate_kwargs: Any,
) -> ArtRunResult:
    """Run an ART evasion attack on one image ``x0`` ``(C, H, W)`` through ``bridge``.

    ``attack`` is an ART attack built on ``bridge.classifier`` or a factory
    ``classifier -> attack``. ``label`` is passed as a one-hot ``y`` (x0's true label for an
    untargeted attack, the target for a targeted one); ``None`` lets ART predict it (queries).
    ``generate_kwargs`` go to ``attack.generate``.
    """
    art_attack: Any = attack if hasattr(attack, "generate") else attack(bridge.classifier)
    if art_attack.estimator is not bridge.classifier:
        raise ValueError("the attack's estimator is not bridge.classifier: it would not be counted")
    x = np.asarray(x0, dtype=np.float32)[None]
    y = None if label is None else _one_hot(label, bridge.oracle.num_classes)
    queries, requests, start = bridge.queries, bridge.requests, time.perf_counter()
    adversarial: np.ndarray | None = None
    stop: StopReason = "converged"
    try:
        out = np.asarray(art_attack.generate(x, y=y, **generate_kwargs), dtype=np.float32)[0]
        if not np.array_equal(out, x[0]):
            adversarial = out
    except BudgetExhausted as exc:
        log.info("%s stopped at the budget: %s", type(art_attack).__name__, exc)
        stop = "budget"
    return ArtRunResult(
        adversarial,
        bridge.queries - queries,
        bridge.requests - requests,
        stop,
        time.perf_counter() - start,
    )


@dataclass(frozen=True)
class HsjaRun:
    """ART's HopSkipJump run one iteration at a time. ``updates``: ``(queries, candidate)`` after
    each completed iteration (queries of the bridge since the run began, ART's current sample);
    ``stop_reason``: ``"converged"`` (all iterations done), ``"budget"`` (the last, incomplete
    iteration's queries are spent, its candidate dropped) or ``"no_start"`` (ART found no
    adversarial start and returned x unchanged)."""

    updates: list[tuple[int, np.ndarray]] = field(default_factory=list)
    queries: int = 0
    stop_reason: HsjaStopReason = "converged"
    wall_time: float = 0.0

    @property
    def final_candidate(self) -> np.ndarray | None:
        return self.updates[-1][1] if self.updates else None


def run_hsja_iterations(
    bridge: ArtBridge,
    x0: np.ndarray,
    label: int | None = None,
    *,
    iterations: int = 50,
    max_eval: int = 10000,
    init_eval: int = 100,
    init_size: int = 100,
    batch_size: int = 64,
    norm: int | float | str = 2,
) -> HsjaRun:
    """ART's ``HopSkipJump`` (Chen, Jordan and Wainwright 2020) on ``x0``, untargeted, with a
    checkpoint after every iteration; stops after ``iterations`` or at the bridge's budget.

    Built as ``HopSkipJump(classifier, max_iter=1, ...)``: the first ``generate`` call finds a
    start and runs iteration 1; each next call is ``generate(x, y, x_adv_init=candidate,
    resume=True)``, which continues ART's ``curr_iter`` (the gradient-estimate size grows with
    it as in a single run). ART's cost of this mode, counted like every query: each resumed call
    predicts x and x_adv_init once more, and every call's closing success log predicts the result
    and x again: each resumed call costs 4 queries that a single ``max_iter=iterations`` run
    (which pays the closing 2 once) does not; ``label=None`` adds one more per call. Untargeted,
    ART leaves its own prediction of x (``label`` only saves that query); if a resumed call's
    ``x_adv_init`` is no longer adversarial to the oracle (a noisy defense may flip it), ART
    silently draws a fresh random start.
    """
    try:
        from art.attacks.evasion import HopSkipJump
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    attack = HopSkipJump(
        bridge.classifier,
        batch_size=batch_size,
        norm=norm,
        max_iter=1,
        max_eval=max_eval,
        init_eval=init_eval,
        init_size=init_size,
        verbose=False,
    )
    x = np.asarray(x0, dtype=np.float32)[None]
    y = None if label is None else _one_hot(label, bridge.oracle.num_classes)
    base, start = bridge.queries, time.perf_counter()
    updates: list[tuple[int, np.ndarray]] = []
    stop: HsjaStopReason = "converged"
    try:
        for _ in range(iterations):
            if updates:
                out = attack.generate(x, y=y, x_adv_init=updates[-1][1][None].copy(), resume=True)
            else:
                out = attack.generate(x, y=y)
            candidate = np.asarray(out, dtype=np.float32)[0]
            if np.array_equal(candidate, x[0]):
                log.info("HopSkipJump found no adversarial start after %d iterations", len(updates))
                stop = "no_start"
                break
            updates.append((bridge.queries - base, candidate))
    except BudgetExhausted as exc:
        log.info("HopSkipJump stopped at the budget after %d iterations: %s", len(updates), exc)
        stop = "budget"
    return HsjaRun(updates, bridge.queries - base, stop, time.perf_counter() - start)
