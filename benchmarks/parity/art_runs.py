"""ART 1.20.1's attacks with the parameters the SND paper ran (App. B.1: ART's defaults, HSJA
with ``max_iter = 64``), through ``attacks_client.oracles.ArtBridge`` over any oracle, within a
budget.

ART has no query budget of its own, so each attack is set (or stepped) to stay within it:

* HopSkipJump: ``max_iter = 64`` in one ``generate`` call; a subclass notes ART's current
  (stepped) sample at the start of every iteration without changing anything else, so the run
  ends cleanly at the budget with ART's current sample. (Stepping ART one iteration per
  ``generate(..., resume=True)`` costs 4 queries per iteration and, behind noise, restarts
  from random noise whenever the resumed sample's fresh answer is not adversarial.)
* BoundaryAttack: ART's defaults (``max_iter = 5000``); at the budget the run ends and ART's
  current adversarial (``curr_adv``) is the result.
* SignOPTAttack: ``query_limit`` = budget - 400 (ART checks its limit after an iteration,
  which costs up to about 300 queries).
* GeoDA: ``max_iter`` (its query plan) = 0.9 x budget (start-up search and bisections come
  on top; with ``max_iter = 500`` it used 450-464 queries here), lowered to a size ART can plan
  (``attacks_client.attacks.art.art_geoda``).
* SimBA (pixels and DCT): 2 queries per iteration, ``max_iter = (budget - 2) // 2``; the DCT
  variant with ``freq_dim = 4, stride = 1`` on 28-px images (ours scales the paper's 28/7 at
  224 px the same way).
* SquareAttack (``square-l2``, ``square-linf``): our norm and ε (L2 1.5, L∞ 0.3); ``p_init``
  the authors' (0.1 for L2, 0.05 for L∞: ``attack.py``'s ``--p`` help; ART's default 0.8 is
  not theirs); ``nb_restarts = 1``, ``batch_size = 1``, ``max_iter = (budget - 3) // 3``. With
  ``y`` given, ``generate`` predicts x0 twice (the restart's success check, then x0's loss)
  and its start once; every iteration predicts the incumbent twice (a success check, then its
  loss, again) and the candidate once: ``3 + 3 max_iter`` queries (1,998 of 2,000), where the
  authors spend 1 + 1 per iteration. ART's L2 update sends NaN images: line 465 of its
  ``square_attack.py`` *divides* the new window by ``||w|| sqrt(max(eps^2 - ||delta||^2, 0)
  / c + ||delta_windows||^2)`` (the authors multiply by the root), which is 0 when the
  incumbent lies on the sphere and neither window touches its perturbation; the x/0 and 0/0
  pixels become a NaN window at the renormalization (lines 491-495).
  ``benchmarks.parity.jobs.NonFiniteGuard`` counts them, does not send them and answers NaN.

A run that still crosses the budget ends with ``BudgetExhausted`` and no candidate (reported as
stop reason ``budget``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attacks_client.attacks.art import art_geoda
from attacks_client.attacks.square import DEFAULT_EPSILON, DEFAULT_P_INIT
from attacks_client.oracles.art import ArtBridge, numpy2_shims
from attacks_client.oracles.base import BudgetExhausted, Oracle

SIGN_OPT_MARGIN = 400
GEODA_SHARE = 0.9  # of the budget for GeoDA's query plan
SQUARE_NORMS = {"square-l2": "2", "square-linf": "inf"}
SQUARE_START = 3  # x0 twice and the start, before the first iteration
SQUARE_PER_ITERATION = 3  # the incumbent twice and the candidate


def _changed(candidate: np.ndarray, x0: np.ndarray) -> bool:
    """ART returns x0 itself when it found no start."""
    return bool(np.abs(candidate - x0).max() > 0)


def _hsja(bridge: ArtBridge, x: np.ndarray, label: int) -> tuple[np.ndarray | None, str, bool]:
    """ART's HopSkipJump in one ``generate`` call (``max_iter = 64``), unchanged: a subclass
    only notes the sample each iteration starts from (ART's ``_attack`` passes its current,
    stepped sample to ``_binary_search`` with the default threshold), so that at the budget the
    run ends with ART's current sample."""
    from art.attacks.evasion import HopSkipJump

    class Recording(HopSkipJump):  # type: ignore[misc]
        current: np.ndarray | None = None

        def _binary_search(
            self,
            current_sample: np.ndarray,
            *args: Any,
            threshold: float | None = None,
            **kwargs: Any,
        ) -> np.ndarray:
            if threshold is None:  # the per-iteration bisection, not the start's (0.001)
                self.current = np.array(current_sample, np.float32)
            return super()._binary_search(current_sample, *args, threshold=threshold, **kwargs)

    attack = Recording(
        bridge.classifier, max_iter=64, max_eval=10_000, init_eval=100, init_size=100, verbose=False
    )
    y = np.eye(bridge.classifier.nb_classes, dtype=np.float32)[[label]]  # spares ART a query
    try:
        out = attack.generate(x[None], y=y)[0].astype(np.float32)
    except BudgetExhausted:
        return attack.current, "budget", attack.current is not None
    if not _changed(out, x):
        return None, "converged", False
    return out, "converged", True


def run_art(
    name: str, oracle: Oracle, x0: np.ndarray, label: int, budget: int
) -> tuple[np.ndarray | None, str, bool]:
    """``(candidate or None, stop reason, found a start)`` of ART's ``name`` on ``x0``; a
    score attack's oracle must answer scores (``oracle.has_scores``), a decision attack's may."""
    from art.attacks.evasion import BoundaryAttack, SignOPTAttack, SimBA, SquareAttack

    numpy2_shims()
    scores = name in ("simba", "simba-dct") or name in SQUARE_NORMS
    bridge = ArtBridge(oracle, budget=budget, scores=scores)
    x = x0.astype(np.float32)
    if name == "hsja":
        return _hsja(bridge, x, label)
    y = np.eye(oracle.num_classes, dtype=np.float32)[[label]]
    attack: Any
    if name == "boundary":
        attack = BoundaryAttack(bridge.classifier, targeted=False, verbose=False)
    elif name == "sign-opt":
        attack = SignOPTAttack(
            bridge.classifier,
            targeted=False,
            query_limit=max(budget - SIGN_OPT_MARGIN, 100),
            verbose=False,
        )
    elif name == "geoda":
        attack = art_geoda(
            bridge.classifier, max_iter=max(int(GEODA_SHARE * budget), 300), verbose=False
        )
    elif name in ("simba", "simba-dct"):
        attack = SimBA(
            bridge.classifier,
            attack="px" if name == "simba" else "dct",
            max_iter=max((budget - 2) // 2, 1),
            epsilon=0.2,
            freq_dim=4,
            stride=1,
            targeted=False,
        )
    elif name in SQUARE_NORMS:
        norm = SQUARE_NORMS[name]
        attack = SquareAttack(
            bridge.classifier,
            norm=2 if norm == "2" else np.inf,
            eps=DEFAULT_EPSILON[norm],
            p_init=DEFAULT_P_INIT[norm],
            max_iter=max((budget - SQUARE_START) // SQUARE_PER_ITERATION, 1),
            nb_restarts=1,
            batch_size=1,
            verbose=False,
        )
    else:
        raise KeyError(f"no ART counterpart of {name!r}")
    try:
        out = attack.generate(x[None], y=y)[0].astype(np.float32)
    except BudgetExhausted:
        current = getattr(attack, "curr_adv", None)  # BoundaryAttack keeps its current point
        if current is not None and _changed(np.asarray(current), x):
            return np.asarray(current, np.float32).reshape(x.shape), "budget", True
        return None, "budget", True
    if not _changed(out, x):
        # no start (decision attacks) or no progress at all
        return None, "converged", scores
    return out, "converged", True
