"""Readiness, once for both protocols (``GET /readyz`` and the Open Inference Protocol's
``GET /v2/health/ready``): every model answers and the counter is reachable."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import Request

from service.accounting.base import CounterUnavailable
from service.api.deps import Runtime


@dataclass(frozen=True)
class Readiness:
    """Whether the server is ready, and why not: the models, the counter."""

    ready: bool
    models: bool
    counter: bool
    retry_after_s: int = 1

    @property
    def status(self) -> int:
        return 200 if self.ready else 503

    @property
    def headers(self) -> dict[str, str] | None:
        return None if self.ready else {"Retry-After": str(self.retry_after_s)}


async def readiness(request: Request) -> Readiness:
    """Every model answers (a proxied model's upstream says it is ready: without it each
    request would be a 503) and the counter is reachable; a fail-open server answers
    (uncounted) without the counter, so it stays ready. Not ready before start-up ends."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return Readiness(False, False, False)
    try:
        counter_ok = await runtime.counter.ping()
    except CounterUnavailable:
        counter_ok = False
    pool = runtime.pool
    states = await asyncio.gather(*(pool.ready(host) for host in pool.hosts.values()))
    models_ok = all(states)
    ready = models_ok and (counter_ok or runtime.settings.fail_open)
    return Readiness(ready, models_ok, counter_ok, runtime.settings.retry_after_s)
