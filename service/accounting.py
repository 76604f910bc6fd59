"""Per-caller query accounting: the ``QueryCounter`` protocol and its in-memory default.

Every image answered by ``POST /predict`` is one query for its caller, per model. ``charge``
checks the caller's budget and adds the images in one atomic step, so a batch that would cross
the budget is refused whole and counts nothing. ``RedisCounter`` (``service.redis_counter``) is
the multi-process source of truth; ``MemoryCounter`` is the embedded, single-process default.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

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


class MemoryCounter:
    """In-process counter with the ``QueryCounter`` interface. Single process only: with
    several server workers each would count separately; use Redis there."""

    gates_detection = False

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = defaultdict(dict)
        self._budgets: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def charge(
        self,
        caller: str,
        model: str,
        n: int,
        default_budget: int | None,
        gate_at: float | None = None,
    ) -> Charge:
        async with self._lock:
            per_model = self._counts[caller]
            used = sum(per_model.values())
            budget = self._budgets.get(caller, default_budget)
            if budget is not None and used + n > budget:
                return Charge(False, used, budget)
            per_model[model] = per_model.get(model, 0) + n
            return Charge(True, used + n, budget)

    async def refund(self, caller: str, model: str, n: int) -> None:
        async with self._lock:
            per_model = self._counts[caller]
            per_model[model] = max(per_model.get(model, 0) - n, 0)

    async def usage(self, caller: str) -> dict[str, int]:
        return {m: c for m, c in self._counts.get(caller, {}).items() if c}

    async def callers(self) -> list[str]:
        return sorted(c for c, counts in self._counts.items() if any(counts.values()))

    async def usages(self, callers: list[str]) -> list[tuple[dict[str, int], int | None]]:
        return [(await self.usage(c), self._budgets.get(c)) for c in callers]

    async def reset(self, caller: str) -> None:
        async with self._lock:
            self._counts.pop(caller, None)

    async def get_budget(self, caller: str) -> int | None:
        return self._budgets.get(caller)

    async def set_budget(self, caller: str, budget: int | None) -> None:
        if budget is None:
            self._budgets.pop(caller, None)
        else:
            self._budgets[caller] = budget

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class Coalesced(Protocol):
    """A call waiting in a coalescing queue (a charge, a detection call)."""

    @property
    def waiter(self) -> asyncio.Future[Any]: ...


P = TypeVar("P", bound=Coalesced)


async def drain(pending: list[P], limit: int, apply: Callable[[list[P]], Awaitable[None]]) -> None:
    """Apply the calls coalesced in ``pending``, ``limit`` at a time, until none is left.

    ``apply`` settles its batch's waiters; if it raises, the batch's waiters fail with
    ``CounterUnavailable`` (and, when the event loop is going away, every pending one)."""
    while pending:
        batch = pending[:limit]
        del pending[:limit]
        try:
            await apply(batch)
        except BaseException as exc:
            cancelled = not isinstance(exc, Exception)  # the loop is going away
            failed = batch + pending if cancelled else batch
            if cancelled:
                pending.clear()
            reason = str(exc) if isinstance(exc, CounterUnavailable) else repr(exc)
            for call in failed:
                if not call.waiter.done():
                    call.waiter.set_exception(CounterUnavailable(reason))
            if cancelled:
                raise
