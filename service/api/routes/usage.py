"""Query usage: the admin view of every caller (admin token), and a caller's own count.

Caller ids are ``key:<name>`` (API key callers) or ``addr:<ip>`` (open server); in a URL pass
them whole, URL-encoded where needed (``/usage/key:alice``, ``/usage/addr:%3A%3A1``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.accounting import MAX_BUDGET, CounterUnavailable
from service.api.deps import AdminDep, CallerDep, Runtime, RuntimeDep
from service.detection.store import Policy
from service.errors import ApiError, error_responses

router = APIRouter(tags=["usage"])

T = TypeVar("T")

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
        None, description="stateful detection's state of the caller; null when not screened"
    )


class UsageList(BaseModel):
    callers: list[CallerUsage]


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
        raise ApiError(
            503,
            "counter_unavailable",
            "query accounting is unavailable; try again later",
            {"Retry-After": str(runtime.settings.retry_after_s)},
        ) from None


async def caller_usage(runtime: Runtime, caller: str) -> CallerUsage:
    counter = runtime.counter
    models = await counted(counter.usage(caller), runtime)
    admin_budget = await counted(counter.get_budget(caller), runtime)
    settings_budget = runtime.settings.budget_for(caller)
    budget = admin_budget if admin_budget is not None else settings_budget
    source: Literal["admin", "settings"] | None = (
        "admin" if admin_budget is not None else "settings" if budget is not None else None
    )
    total = sum(models.values())
    detection = None
    if runtime.detections is not None:
        policy = Policy(flag_window_s=runtime.settings.detection_flag_window_s)
        status = await counted(runtime.detections.status(caller, policy, time.time()), runtime)
        detection = status.state if status is not None else None
    return CallerUsage(
        caller=caller,
        models=models,
        total=total,
        budget=budget,
        budget_source=source,
        remaining=None if budget is None else max(budget - total, 0),
        detection_state=detection,
    )


ADMIN_ERRORS = error_responses(401, 403, 422, 503)


@router.get(
    "/usage",
    response_model=UsageList,
    summary="Usage of every caller (admin)",
    responses=ADMIN_ERRORS,
)
async def list_usage(runtime: RuntimeDep, _: AdminDep) -> UsageList:
    callers = await counted(runtime.counter.callers(), runtime)
    return UsageList(callers=[await caller_usage(runtime, c) for c in callers])


@router.get(
    "/usage/me",
    response_model=CallerUsage,
    summary="The calling client's own usage",
    responses=error_responses(401, 503),
)
async def my_usage(runtime: RuntimeDep, caller: CallerDep) -> CallerUsage:
    return await caller_usage(runtime, caller)


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
