"""Per-caller query accounting: the ``QueryCounter`` protocol and its in-memory default.

Every image answered by ``POST /predict`` is one query for its caller, per model. ``charge``
checks the caller's budget and adds the images in one atomic step, so a batch that would cross
the budget is refused whole and counts nothing. ``RedisCounter``
(``service.accounting.redis_counter``) is the multi-process source of truth; ``MemoryCounter``
(``service.accounting.memory``) is the embedded, single-process default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

MAX_BUDGET = 2**53  # budgets are exact integers in Redis' Lua (double precision)


class CounterUnavailable(RuntimeError):
    """The counter's backend cannot be reached; nothing was counted."""


@dataclass(frozen=True)
class Charge:
    """The outcome of one ``charge``: whether it was allowed, and the caller's total after it;
    ``gated`` when the detection gate refused the caller (nothing charged), for
    ``retry_after_s`` seconds when throttled."""

    allowed: bool
    used: int
    budget: int | None
    gated: Literal["throttled", "suspended"] | None = None
    retry_after_s: float = 0.0

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else max(self.budget - self.used, 0)


class QueryCounter(Protocol):
    """Where answered queries are counted. All methods may raise ``CounterUnavailable``.

    ``gates_detection``: the counter reads the detection store's caller states (it holds
    them, as Redis does), so ``charge`` can refuse a throttled or suspended caller in the same
    step (``gate_at``); otherwise the detector's own ``admit`` runs first."""

    gates_detection: bool

    async def charge(
        self,
        caller: str,
        model: str,
        n: int,
        default_budget: int | None,
        gate_at: float | None = None,
    ) -> Charge:
        """Atomically: if ``used + n <= budget`` add ``n`` (per caller and per model); with
        ``gate_at`` (a time, where ``gates_detection``), first refuse a caller detection has
        throttled past that time or suspended (``Charge.gated``)."""
        ...

    async def refund(self, caller: str, model: str, n: int) -> None:
        """Take back ``n`` queries that were charged but not answered."""
        ...

    async def usage(self, caller: str) -> dict[str, int]:
        """Per-model counts of one caller (no entry for models it never queried)."""
        ...

    async def callers(self) -> list[str]: ...

    async def usages(self, callers: list[str]) -> list[tuple[dict[str, int], int | None]]:
        """Each caller's per-model counts and admin budget, in one backend round trip."""
        ...

    async def reset(self, caller: str) -> None: ...

    async def get_budget(self, caller: str) -> int | None:
        """The budget set through the admin API, if any."""
        ...

    async def set_budget(self, caller: str, budget: int | None) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
