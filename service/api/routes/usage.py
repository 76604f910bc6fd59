"""Query usage: the admin view of every caller (admin token), and a caller's own count.

Caller ids are ``key:<name>`` (API key callers) or ``addr:<ip>`` (open server); in a URL pass
them whole, URL-encoded where needed (``/usage/key:alice``, ``/usage/addr:%3A%3A1``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.accounting.base import MAX_BUDGET, CounterUnavailable
from service.api.deps import AdminDep, CallerDep, Runtime, RuntimeDep
from service.api.openapi import error_responses
from service.detection.store import Policy
from service.errors import counter_unavailable

router = APIRouter(tags=["usage"])

T = TypeVar("T")
MAX_PAGE = 1000

CallerPath = Annotated[
    str,
    Path(
        description="caller id: key:<name> or addr:<ip>", pattern=r"^(key|addr):.+$", max_length=256
    ),
]


class CallerUsage(BaseModel):
    """Images answered for one caller, per model, and the budget that applies to it."""

    caller: str
    models: dict[str, int]
    total: int
    budget: int | None = Field(description="the budget in force; null = unlimited")
    budget_source: Literal["admin", "settings"] | None = Field(
        description="admin: set through PUT /usage/{caller}/budget; settings: configured"
    )
    remaining: int | None
    detection_state: Literal["ok", "throttled", "suspended"] | None = Field(
        None,
        description="stateful detection's state of the caller (admin views only); null when "
        "not screened",
    )


class UsageList(BaseModel):
    callers: list[CallerUsage]
    next: str | None = Field(description="pass as `after` for the next page; null on the last page")


class BudgetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget: int | None = Field(
        ge=0, le=MAX_BUDGET, description="images the caller may be answered; null clears"
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _json_integer(cls, value: object) -> object:
        """A JSON integer (``5`` or ``5.0``) or null; not ``true`` or ``"5"``, which pydantic
        would otherwise coerce."""
        if isinstance(value, bool | str):
            raise ValueError("budget must be an integer or null")
        return value


async def counted(call: Awaitable[T], runtime: Runtime) -> T:
    """Await a counter call; an unreachable backend is a 503 with Retry-After."""
    try:
        return await call
    except CounterUnavailable:
        raise counter_unavailable(runtime.settings.retry_after_s) from None


async def detection_states(runtime: Runtime, callers: list[str]) -> list[str | None]:
    """Stateful detection's state of each caller (``None``: not screened), read concurrently."""
    store = runtime.detections
    if store is None:
        return [None] * len(callers)
    policy = Policy(flag_window_s=runtime.settings.detection_flag_window_s)
    now = time.time()
    statuses = await counted(
        asyncio.gather(*(store.status(c, policy, now) for c in callers)), runtime
    )
    return [None if status is None else status.state for status in statuses]


def usage_row(
    runtime: Runtime,
    caller: str,
    models: dict[str, int],
    admin_budget: int | None,
    detection: str | None,
) -> CallerUsage:
    settings_budget = runtime.settings.budget_for(caller)
    budget = admin_budget if admin_budget is not None else settings_budget
    source: Literal["admin", "settings"] | None = (
        "admin" if admin_budget is not None else "settings" if budget is not None else None
    )
    total = sum(models.values())
    return CallerUsage(
        caller=caller,
        models=models,
        total=total,
        budget=budget,
        budget_source=source,
        remaining=None if budget is None else max(budget - total, 0),
        detection_state=detection,  # type: ignore[arg-type]
    )


async def caller_usage(runtime: Runtime, caller: str, *, detection: bool = True) -> CallerUsage:
    """One caller's row; ``detection=False`` leaves the detection state out (a caller asking
    about itself must not learn whether, or how, it is screened)."""
    ((models, admin_budget),) = await counted(runtime.counter.usages([caller]), runtime)
    state = (await detection_states(runtime, [caller]))[0] if detection else None
    return usage_row(runtime, caller, models, admin_budget, state)


ADMIN_ERRORS = error_responses(401, 403, 422, 503)


@router.get(
    "/usage",
    response_model=UsageList,
    summary="Usage of every caller (admin)",
    responses=ADMIN_ERRORS,
)
async def list_usage(
    runtime: RuntimeDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="callers per page")] = 100,
    after: Annotated[
        str | None,
        Query(max_length=256, description="the cursor: the previous page's `next`"),
    ] = None,
) -> UsageList:
    """Callers in id order, ``limit`` a page; a page's reads are one Redis pipeline."""
    callers = await counted(runtime.counter.callers(), runtime)
    rest = [c for c in callers if after is None or c > after]
    page = rest[:limit]
    rows = await counted(runtime.counter.usages(page), runtime)
    states = await detection_states(runtime, page)
    return UsageList(
        callers=[
            usage_row(runtime, caller, models, budget, state)
            for caller, (models, budget), state in zip(page, rows, states, strict=True)
        ],
        next=page[-1] if len(rest) > limit else None,
    )


@router.get(
    "/usage/me",
    response_model=CallerUsage,
    summary="The calling client's own usage",
    responses=error_responses(401, 503),
)
async def my_usage(runtime: RuntimeDep, caller: CallerDep) -> CallerUsage:
    return await caller_usage(runtime, caller, detection=False)


@router.get(
    "/usage/{caller}",
    response_model=CallerUsage,
    summary="One caller's usage (admin)",
    responses=ADMIN_ERRORS,
)
async def get_usage(runtime: RuntimeDep, _: AdminDep, caller: CallerPath) -> CallerUsage:
    return await caller_usage(runtime, caller)


@router.delete(
    "/usage/{caller}",
    response_model=CallerUsage,
    summary="Reset one caller's counts to zero (admin); its budget stays",
    responses=ADMIN_ERRORS,
)
async def reset_usage(runtime: RuntimeDep, _: AdminDep, caller: CallerPath) -> CallerUsage:
    await counted(runtime.counter.reset(caller), runtime)
    return await caller_usage(runtime, caller)


@router.put(
    "/usage/{caller}/budget",
    response_model=CallerUsage,
    summary="Set (or clear, with null) a caller's budget; overrides the settings (admin)",
    responses=error_responses(400, 401, 403, 422, 503),
)
async def set_budget(
    runtime: RuntimeDep, _: AdminDep, caller: CallerPath, update: BudgetUpdate
) -> CallerUsage:
    await counted(runtime.counter.set_budget(caller, update.budget), runtime)
    return await caller_usage(runtime, caller)
