"""Stateful detection, the operator's view (admin token): flags per caller, model and layer,
the query number of the first flag, and the escalation state; lifting a throttle or suspension.

Only an administrator sees any of this: a caller is never told it was flagged (until it is
throttled or suspended, which it sees as a 429 / 403)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import AdminDep, Runtime, RuntimeDep
from service.api.openapi import error_responses
from service.api.routes.usage import ADMIN_ERRORS, CallerPath, counted
from service.detection.store import CallerStatus, DetectionStore, Policy, State
from service.errors import ApiError

router = APIRouter(tags=["detections"])


class CallerDetections(BaseModel):
    caller: str
    state: State
    until: float | None = Field(description="end of a throttle (Unix time)")
    queries: int = Field(description="queries screened within the retention window")
    first_flag_query: int | None = Field(description="the caller's query number of its first flag")
    flags: dict[str, dict[str, int]] = Field(description="model -> layer -> flagged queries")
    flags_in_window: int


class DetectionList(BaseModel):
    enabled: bool
    models: dict[str, str] = Field(description="model -> action, for models that detect")
    callers: list[CallerDetections]


def escalation_policy(runtime: Runtime) -> Policy:
    return Policy(flag_window_s=runtime.settings.detection_flag_window_s)


def view(status: CallerStatus) -> CallerDetections:
    return CallerDetections(
        caller=status.caller,
        state=status.state,
        until=status.until,
        queries=status.queries,
        first_flag_query=status.first_flag_query,
        flags=status.flags,
        flags_in_window=status.flags_in_window,
    )


def store_of(runtime: Runtime) -> DetectionStore:
    if runtime.detections is None:
        raise ApiError(404, "detection_off", "no model of this server runs stateful detection")
    return runtime.detections


async def caller_status(runtime: Runtime, caller: str) -> CallerDetections:
    store = store_of(runtime)
    status = await counted(store.status(caller, escalation_policy(runtime), time.time()), runtime)
    if status is None:
        raise ApiError(404, "unknown_caller", f"no detection state for {caller!r}")
    return view(status)


@router.get(
    "/detections",
    response_model=DetectionList,
    summary="Detection state of every screened caller (admin)",
    responses=ADMIN_ERRORS,
)
async def list_detections(runtime: RuntimeDep, _: AdminDep) -> DetectionList:
    models = {name: d.settings.action for name, d in runtime.detectors.items()}
    if runtime.detections is None:
        return DetectionList(enabled=False, models=models, callers=[])
    store = runtime.detections
    policy, now = escalation_policy(runtime), time.time()
    callers = []
    for caller in await counted(store.callers(), runtime):
        status = await counted(store.status(caller, policy, now), runtime)
        if status is not None:
            callers.append(view(status))
    return DetectionList(enabled=True, models=models, callers=callers)


@router.get(
    "/detections/{caller}",
    response_model=CallerDetections,
    summary="One caller's detection state (admin)",
    responses=error_responses(401, 403, 404, 422, 503),
)
async def get_detections(runtime: RuntimeDep, _: AdminDep, caller: CallerPath) -> CallerDetections:
    return await caller_status(runtime, caller)


@router.post(
    "/detections/{caller}/lift",
    response_model=CallerDetections,
    summary="Lift a throttle or suspension and clear the flag window (admin)",
    responses=error_responses(401, 403, 404, 422, 503),
)
async def lift(runtime: RuntimeDep, _: AdminDep, caller: CallerPath) -> CallerDetections:
    await caller_status(runtime, caller)  # 404 for a caller never screened
    await counted(store_of(runtime).lift(caller), runtime)
    return await caller_status(runtime, caller)


@router.delete(
    "/detections/{caller}",
    status_code=204,
    summary="Forget every fingerprint and flag of a caller (admin)",
    responses=error_responses(401, 403, 404, 422, 503),
)
async def forget(runtime: RuntimeDep, _: AdminDep, caller: CallerPath) -> None:
    await counted(store_of(runtime).forget(caller), runtime)
