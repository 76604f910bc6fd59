"""The request pipeline in process: a request cancelled while its charge is in flight (a client
gone, a shutdown) leaves the count as if it had never asked (issue 27, item 6)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from service.accounting.redis_counter import RedisCounter
from service.api.deps import Runtime
from service.api.pipeline import answer
from service.serving.pool import ModelPool
from service.settings import Settings
from tests.servers import RedisProcess

IMAGES = np.zeros((3, 1, 28, 28), np.float32)


async def settled_usage(counter: RedisCounter, caller: str) -> dict[str, int]:
    """The caller's usage once it stops changing (background refunds included)."""
    last: dict[str, int] | None = None
    for _ in range(100):
        await asyncio.sleep(0.02)
        now = await counter.usage(caller)
        if now == last:
            return now
        last = now
    raise AssertionError(f"usage of {caller} never settled: {last}")


async def queued(counter: RedisCounter, n: int) -> None:
    """Yield to the loop until ``n`` charges wait for the counter's next flush."""
    for _ in range(20):
        if len(counter._pending) == n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(counter._pending)} charges pending, expected {n}")


def with_runtime(
    redis: RedisProcess, body: Callable[[Runtime, RedisCounter], Awaitable[None]]
) -> None:
    """Run ``body`` with a real model pool and a real Redis counter (a fresh key prefix)."""

    async def main() -> None:
        prefix = f"pipeline-{uuid.uuid4().hex[:8]}:"
        settings = Settings(defense="none", redis_url=redis.url, redis_prefix=prefix)
        pool = ModelPool.from_settings(settings)
        await pool.start()
        counter = RedisCounter(redis.url, prefix=prefix, timeout=10.0)
        try:
            await body(Runtime(settings, pool, counter), counter)
        finally:
            await counter.close()
            await pool.aclose()

    asyncio.run(main())


def test_a_request_cancelled_during_its_charge_is_not_left_charged(
    redis_server: RedisProcess,
) -> None:
    """The coalesced charge still lands after its waiter is gone; the pipeline refunds it."""

    async def body(runtime: Runtime, counter: RedisCounter) -> None:
        task = asyncio.create_task(answer(runtime, "key:cancelled", IMAGES, None, "scores"))
        await queued(counter, 1)  # the request now waits for its charge's flush
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await settled_usage(counter, "key:cancelled") == {}

    with_runtime(redis_server, body)


def test_an_answered_request_counts_and_a_cancelled_one_beside_it_does_not(
    redis_server: RedisProcess,
) -> None:
    """Two requests in one flush: the answered one counts its images, the cancelled one none."""

    async def body(runtime: Runtime, counter: RedisCounter) -> None:
        kept = asyncio.create_task(answer(runtime, "key:pair", IMAGES, None, "scores"))
        dropped = asyncio.create_task(answer(runtime, "key:pair", IMAGES[:2], None, "label"))
        await queued(counter, 2)  # both charges wait for the same flush
        dropped.cancel()
        result = await kept
        assert result.charge is not None and result.probs.shape == (3, 10)
        with pytest.raises(asyncio.CancelledError):
            await dropped
        assert await settled_usage(counter, "key:pair") == {"resnet20-mnist": 3}

    with_runtime(redis_server, body)
