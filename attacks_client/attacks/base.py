"""Attack base class (foolbox 3 style): the final ``__call__`` owns budget, bounds, tracking
and packaging; each attack module implements only ``run``.

Inside ``run`` an attack sees an :class:`AttackOracle`, which

* counts every image it sends (start-up searches and success checks included; ``query_cost``
  real queries per image behind an adaptive ``RepeatOracle``) and raises
  :class:`~attacks_client.oracles.base.BudgetExhausted` when a batch would cross the budget;
* records the L2 distance to ``x0`` of every query image (the paper's ||x0 - x_q||, Table 3);
* keeps the attack's current adversarial candidate, reported with :meth:`AttackOracle.report`,
  so that the candidate at any budget checkpoint can be read off afterwards.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, final

import numpy as np

from attacks_client.oracles.base import BudgetExhausted, Oracle, ScoresUnavailable

Progress = Callable[[int, float], None]
"""Called after every oracle call with (queries used, L2 of the current candidate)."""


@dataclass(frozen=True)
class Update:
    """The attack's candidate changed after ``queries`` queries."""

    queries: int
    l2: float
    candidate: np.ndarray
    reference_queries: int | None = None
    """The same count as the attack's reference implementation keeps it (see
    :meth:`AttackOracle.not_counted_by_reference`)."""


@dataclass
class AttackResult:
    """Everything one attack run on one image produced."""

    attack: str
    label: int
    budget: int
    queries: int
    wall_time: float
    stop_reason: str
    updates: list[Update] = field(default_factory=list)
    query_l2: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    params: dict[str, Any] = field(default_factory=dict)
    reference_queries: int | None = None
    """``queries`` as the reference implementation counts them (it looks at some images,
    e.g. x0, without counting); equal to ``queries`` where the reference counts everything."""
    x0: np.ndarray | None = None
    """The attacked image (for distances in other norms than L2)."""

    def candidate_at(self, queries: int) -> np.ndarray | None:
        """The adversarial candidate the attack held after ``queries`` queries (None if none)."""
        best = None
        for update in self.updates:
            if update.queries > queries:
                break
            best = update.candidate
        return best

    def l2_at(self, queries: int) -> float:
        """L2 distance of ``candidate_at(queries)`` to x0, ``inf`` without a candidate."""
        best = float("inf")
        for update in self.updates:
            if update.queries > queries:
                break
            best = update.l2
        return best

    @property
    def final_candidate(self) -> np.ndarray | None:
        return self.updates[-1].candidate if self.updates else None

    @property
    def final_l2(self) -> float:
        return self.updates[-1].l2 if self.updates else float("inf")


class AttackOracle:
    """The budgeted, tracking view of an oracle that ``Attack.run`` works with."""

    def __init__(
        self,
        oracle: Oracle,
        x0: np.ndarray,
        label: int,
        budget: int,
        *,
        target: int | None = None,
        progress: Progress | None = None,
        start: np.ndarray | None = None,
    ) -> None:
        self._oracle = oracle
        self.x0 = x0
        self.start = start
        """An image the caller offers as the start (e.g. a natural image of another class,
        foolbox's ``starting_points``); attacks that take one ask it once, counted."""
        self.label = label
        self.target = target
        self.budget = budget
        self.queries = 0
        self.updates: list[Update] = []
        self._l2: list[np.ndarray] = []
        self._progress = progress
        self.query_cost: int = int(getattr(oracle, "query_cost", 1))
        self.uncounted_by_reference = 0

    def not_counted_by_reference(self, images: int) -> None:
        """The last ``images`` images sent are ones the attack's reference implementation looks
        at without counting (x0's first answer in SimBA, Bandit-TD, Subspace). They still count
        here; records carry both counts so that tables compare with the paper's."""
        self.uncounted_by_reference += images * self.query_cost

    @property
    def reference_queries(self) -> int:
        """Queries as the reference implementation counts them."""
        return self.queries - self.uncounted_by_reference

    @property
    def remaining(self) -> int:
        """Images the attack can still send: real queries left // ``query_cost`` (behind a
        ``RepeatOracle`` one image costs T real queries)."""
        return (self.budget - self.queries) // self.query_cost

    @property
    def has_scores(self) -> bool:
        return self._oracle.has_scores

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._oracle.input_shape

    @property
    def num_classes(self) -> int:
        return self._oracle.num_classes

    def _charge(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        cost = len(x) * self.query_cost
        left = self.budget - self.queries
        if cost > left:
            raise BudgetExhausted(f"{cost} queries asked, {left} left")
        self.queries += cost
        diff = (x - self.x0[None]).reshape(len(x), -1)
        l2 = np.linalg.norm(diff, axis=1).astype(np.float32)
        self._l2.append(np.repeat(l2, self.query_cost) if self.query_cost > 1 else l2)
        return x

    def _refused(self, n: int) -> None:
        """The endpoint refused the last ``n`` images (budget, throttled, suspended): they were
        not answered, so they are not counted (the server charged nothing for them)."""
        cost = n * self.query_cost
        self.queries -= cost
        self._l2.pop()

    def _after(self) -> None:
        if self._progress is not None:
            self._progress(self.queries, self.updates[-1].l2 if self.updates else float("inf"))

    def labels(self, x: np.ndarray) -> np.ndarray:
        x = self._charge(x)
        try:
            return self._oracle.labels(x)
        except BudgetExhausted:
            self._refused(len(x))
            raise
        finally:
            self._after()

    def scores(self, x: np.ndarray) -> np.ndarray:
        if not self.has_scores:
            raise ScoresUnavailable("this attack needs scores; the endpoint answers labels only")
        x = self._charge(x)
        try:
            return self._oracle.scores(x)
        except BudgetExhausted:
            self._refused(len(x))
            raise
        finally:
            self._after()

    def is_adversarial(self, x: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: misclassified (untargeted) or classified as the target; N queries."""
        labels = self.labels(x)
        return labels == self.target if self.target is not None else labels != self.label

    def report(self, candidate: np.ndarray) -> None:
        """Record a new adversarial candidate (the attack believes it is adversarial)."""
        candidate = np.asarray(candidate, dtype=np.float32).reshape(self.x0.shape)
        l2 = float(np.linalg.norm(candidate - self.x0))
        self.updates.append(Update(self.queries, l2, candidate.copy(), self.reference_queries))

    @property
    def query_l2(self) -> np.ndarray:
        return np.concatenate(self._l2) if self._l2 else np.zeros(0, np.float32)


class Attack(ABC):
    """A query-based black-box attack. Hyperparameters are typed ``__init__`` arguments."""

    name: ClassVar[str]
    needs_scores: ClassVar[bool] = False
    repeat_mean: ClassVar[Literal["probabilities", "log-probabilities"]] = "probabilities"
    """How a ``RepeatOracle`` in front of this attack averages T answered score vectors."""

    def params(self) -> dict[str, Any]:
        """The hyperparameters of this instance (for the JSONL records)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @final
    def __call__(
        self,
        oracle: Oracle,
        x0: np.ndarray,
        label: int,
        budget: int,
        *,
        target: int | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
        start: np.ndarray | None = None,
    ) -> AttackResult:
        """Attack one image ``x0`` (C, H, W) in [0, 1] of true ``label`` within ``budget``;
        ``start``: an image offered as the starting point (decision attacks that take one)."""
        x0 = np.asarray(x0, dtype=np.float32)
        if x0.shape != tuple(oracle.input_shape):
            raise ValueError(f"x0 has shape {x0.shape}, the model takes {oracle.input_shape}")
        if x0.min() < 0 or x0.max() > 1:
            raise ValueError("x0 must lie in [0, 1]")
        if budget < 1:
            raise ValueError("budget must be >= 1")
        if self.needs_scores and not oracle.has_scores:
            raise ScoresUnavailable(f"{self.name} needs scores; the endpoint answers labels only")
        if start is not None:
            start = np.asarray(start, dtype=np.float32)
            if start.shape != x0.shape or start.min() < 0 or start.max() > 1:
                raise ValueError("start must have x0's shape and lie in [0, 1]")
        tracked = AttackOracle(
            oracle, x0, int(label), budget, target=target, progress=progress, start=start
        )
        rng = np.random.default_rng(seed)
        began = time.perf_counter()
        stop_reason = "converged"
        try:
            self.run(tracked, rng)
        except BudgetExhausted:
            stop_reason = "budget"
        return AttackResult(
            attack=self.name,
            label=int(label),
            budget=budget,
            queries=tracked.queries,
            wall_time=time.perf_counter() - began,
            stop_reason=stop_reason,
            updates=tracked.updates,
            query_l2=tracked.query_l2,
            params=self.params(),
            reference_queries=tracked.reference_queries,
            x0=x0,
        )

    @abstractmethod
    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        """Search for adversarial examples of ``oracle.x0``; ``oracle.report`` each candidate.

        Stop by returning (converged or gave up) or by letting ``BudgetExhausted`` propagate.
        All randomness comes from ``rng``. Clip every query to [0, 1].
        """
