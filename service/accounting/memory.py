"""The embedded, single-process query counter (the default without Redis)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from service.accounting.base import Charge


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
