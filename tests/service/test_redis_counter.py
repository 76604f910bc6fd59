"""``RedisCounter`` against a real redis-server (and ``MemoryCounter`` for the shared contract)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from service.accounting.base import CounterUnavailable, QueryCounter
from service.accounting.memory import MemoryCounter
from service.accounting.redis_counter import RedisCounter
from tests.servers import RedisProcess, free_port

CounterFactory = Callable[[], QueryCounter]
# what is under test is counting, not latency: hundreds of connections opened at once on a
# loaded machine can take longer than the service's 0.5 s default
GENEROUS = 10.0


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


@pytest.fixture(params=["redis", "memory"])
def make_counter(request: pytest.FixtureRequest) -> Iterator[CounterFactory]:
    """A factory of counters that share one store (a fresh key prefix per test for Redis)."""
    if request.param == "memory":
        shared = MemoryCounter()
        yield lambda: shared
        return
    url = request.getfixturevalue("redis_server").url
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield lambda: RedisCounter(url, prefix=prefix, timeout=GENEROUS)


def test_charge_usage_refund_reset(make_counter: CounterFactory) -> None:
    async def body() -> None:
        counter = make_counter()
        first = await counter.charge("key:a", "m1", 3, None)
        assert (first.allowed, first.used, first.budget, first.remaining) == (True, 3, None, None)
        assert (await counter.charge("key:a", "m2", 2, None)).used == 5
        await counter.charge("addr:10.0.0.1", "m1", 1, None)
        assert await counter.usage("key:a") == {"m1": 3, "m2": 2}
        assert await counter.usage("key:nobody") == {}
        assert await counter.callers() == ["addr:10.0.0.1", "key:a"]

        await counter.refund("key:a", "m2", 1)
        assert await counter.usage("key:a") == {"m1": 3, "m2": 1}
        await counter.refund("key:a", "m2", 5)  # never below zero
        assert await counter.usage("key:a") == {"m1": 3}

        await counter.set_budget("key:a", 7)
        await counter.reset("key:a")
        assert await counter.usage("key:a") == {}
        assert await counter.callers() == ["addr:10.0.0.1"]
        assert await counter.get_budget("key:a") == 7  # a reset keeps the budget
        assert await counter.ping()
        await counter.close()

    run(body)


def test_budget_refuses_a_crossing_batch_whole(make_counter: CounterFactory) -> None:
    async def body() -> None:
        counter = make_counter()
        assert (await counter.charge("key:b", "m", 8, 10)).allowed
        refused = await counter.charge("key:b", "m", 3, 10)
        assert (refused.allowed, refused.used, refused.remaining) == (False, 8, 2)
        assert await counter.usage("key:b") == {"m": 8}
        fits = await counter.charge("key:b", "m", 2, 10)
        assert (fits.allowed, fits.used, fits.remaining) == (True, 10, 0)
        assert not (await counter.charge("key:b", "m", 1, 10)).allowed
        assert not (await counter.charge("key:zero", "m", 1, 0)).allowed
        assert await counter.usage("key:zero") == {}
        await counter.close()

    run(body)


def test_admin_budget_overrides_the_default(make_counter: CounterFactory) -> None:
    async def body() -> None:
        counter = make_counter()
        assert await counter.get_budget("key:c") is None
        await counter.set_budget("key:c", 2)
        assert await counter.get_budget("key:c") == 2
        over = await counter.charge("key:c", "m", 3, 100)
        assert (over.allowed, over.budget) == (False, 2)
        await counter.set_budget("key:c", None)
        assert await counter.get_budget("key:c") is None
        assert (await counter.charge("key:c", "m", 3, 100)).allowed
        await counter.set_budget("key:c", 0)
        assert not (await counter.charge("key:c", "m", 1, None)).allowed
        await counter.close()

    run(body)


def test_concurrent_charges_are_atomic(redis_server: RedisProcess) -> None:
    """Several clients (separate connection pools, as separate workers would have) race on one
    caller: the budget is never crossed, and the total equals what was allowed, exactly."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    rng = random.Random(0)
    sizes = [rng.randint(1, 8) for _ in range(400)]

    async def body() -> None:
        clients = [
            RedisCounter(redis_server.url, prefix=prefix, timeout=GENEROUS) for _ in range(4)
        ]
        budget = 500
        results = await asyncio.gather(
            *(
                clients[i % 4].charge("key:race", f"m{i % 3}", n, budget)
                for i, n in enumerate(sizes)
            )
        )
        allowed = sum(n for n, r in zip(sizes, results, strict=True) if r.allowed)
        usage = await clients[0].usage("key:race")
        assert sum(usage.values()) == allowed <= budget
        assert all(r.used <= budget for r in results)
        assert budget - allowed < min(
            n for n, r in zip(sizes, results, strict=True) if not r.allowed
        )
        # single images against budget B: exactly B are allowed
        singles = await asyncio.gather(
            *(clients[i % 4].charge("key:singles", "m", 1, 37) for i in range(100))
        )
        assert sum(r.allowed for r in singles) == 37
        assert await clients[1].usage("key:singles") == {"m": 37}
        # without a budget every charge counts
        await asyncio.gather(
            *(clients[i % 4].charge("key:free", "m", n, None) for i, n in enumerate(sizes))
        )
        assert await clients[2].usage("key:free") == {"m": sum(sizes)}
        for client in clients:
            await client.close()

    run(body)


async def _script_calls(url: str) -> int:
    """How many ``EVALSHA`` commands this redis-server has run so far."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _charges_observed() -> tuple[float, float]:
    """(script calls, charges) so far in the ``snd_accounting_charges_per_call`` histogram."""

    def value(name: str) -> float:
        return REGISTRY.get_sample_value(f"snd_accounting_charges_per_call_{name}") or 0.0

    return value("count"), value("sum")


def test_concurrent_charges_share_script_calls(redis_server: RedisProcess) -> None:
    """Charges made in one tick go to Redis together (far fewer script calls than charges),
    each still with its own budget check, in arrival order, and its own answer."""

    async def body() -> None:
        counter = RedisCounter(
            redis_server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:", timeout=GENEROUS
        )
        await counter.charge("key:warm", "m", 1, None)  # loads the script
        before = await _script_calls(redis_server.url)
        observed = _charges_observed()
        results = await asyncio.gather(
            *(counter.charge(f"key:{i % 2}", "m", 1 + i % 3, 40) for i in range(60))
        )
        calls = await _script_calls(redis_server.url) - before
        assert 1 <= calls <= 3
        # the snd_accounting_charges_per_call histogram saw the same calls and all 60 charges
        assert tuple(a - b for a, b in zip(_charges_observed(), observed, strict=True)) == (
            calls,
            60,
        )
        for caller in (0, 1):
            mine = [(r, 1 + i % 3) for i, r in enumerate(results) if i % 2 == caller]
            # in arrival order: running totals, refusals only once the budget is near
            totals = [r.used for r, _ in mine if r.allowed]
            assert totals == sorted(totals) and len(set(totals)) == len(totals)
            allowed = sum(n for r, n in mine if r.allowed)
            assert sum((await counter.usage(f"key:{caller}")).values()) == allowed <= 40
            assert all(40 - r.used < n for r, n in mine if not r.allowed)
        # a cancelled waiter does not break the others in its call
        waiters = [asyncio.ensure_future(counter.charge("key:c", "m", 1, None)) for _ in range(5)]
        await asyncio.sleep(0)
        waiters[0].cancel()
        answers = await asyncio.gather(*waiters[1:])
        assert sorted(a.used for a in answers)[-1] == (await counter.usage("key:c"))["m"]
        await counter.close()

    run(body)


def test_a_retried_charge_or_refund_counts_once(redis_server: RedisProcess) -> None:
    async def body() -> None:
        counter = RedisCounter(
            redis_server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:", timeout=GENEROUS
        )
        first = await counter.charge_with_token("key:t", "m", 4, 5, "token-1")
        again = await counter.charge_with_token("key:t", "m", 4, 5, "token-1")
        assert first == again and first.allowed
        assert await counter.usage("key:t") == {"m": 4}
        assert not (await counter.charge_with_token("key:t", "m", 4, 5, "token-2")).allowed
        # a retried refund script (same keys, as redis-py's retry re-sends it) applies once
        await counter.charge("key:r", "m", 5, None)
        keys = [counter._usage_key("key:r"), f"{counter.backend.prefix}refund:fixed-token"]
        for _ in range(2):
            await counter._refund(keys=keys, args=["m", 2, 60])
        assert await counter.usage("key:r") == {"m": 3}
        await counter.refund("key:r", "m", 1)  # a new refund has a new token
        assert await counter.usage("key:r") == {"m": 2}
        huge = 2**53  # the largest budget allowed: still exact through the Lua script
        for _ in range(2):
            big = await counter.charge_with_token("key:big", "m", 3, huge, "token-3")
            assert (big.allowed, big.used, big.budget) == (True, 3, huge)
        await counter.close()

    run(body)


def test_the_detection_gate_refuses_in_the_charge_and_counts_nothing(
    redis_server: RedisProcess,
) -> None:
    """``gate_at``: a caller detection has throttled (until a later time) or suspended is
    refused by the charge itself, nothing counted; without a gate, or once the throttle is
    over, it is charged; a retried gated charge (same token) gets the same refusal."""

    async def body() -> None:
        counter = RedisCounter(
            redis_server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:", timeout=GENEROUS
        )
        state = counter.backend.connections.client(decode=True)
        await state.hset(
            counter.backend.detection_key("key:g"), mapping={"state": "throttled", "until": "100.5"}
        )
        throttled = await counter.charge_with_token("key:g", "m", 2, 10, "t-1", gate_at=40.0)
        assert (throttled.allowed, throttled.gated, throttled.used) == (False, "throttled", 0)
        assert throttled.retry_after_s == pytest.approx(60.5)
        again = await counter.charge_with_token("key:g", "m", 2, 10, "t-1", gate_at=99.0)
        assert again == throttled
        assert await counter.usage("key:g") == {}
        ungated = await counter.charge("key:g", "m", 2, 10)
        assert (ungated.allowed, ungated.gated, ungated.used) == (True, None, 2)
        over = await counter.charge("key:g", "m", 3, 10, gate_at=100.5)  # the throttle is over
        assert (over.allowed, over.gated, over.used, over.budget) == (True, None, 5, 10)
        await state.hset(counter.backend.detection_key("key:g"), "state", "suspended")
        suspended = await counter.charge("key:g", "m", 1, None, gate_at=1e9)
        assert (suspended.allowed, suspended.gated) == (False, "suspended")
        fresh = await counter.charge("key:other", "m", 1, None, gate_at=1e9)  # no state: ok
        assert fresh.allowed and fresh.gated is None
        # the gate comes before the budget: a throttled caller over budget reads throttled
        await state.hset(counter.backend.detection_key("key:g"), "state", "throttled")
        late = await counter.charge("key:g", "m", 50, 10, gate_at=1.0)
        assert (late.allowed, late.gated, late.used) == (False, "throttled", 5)
        assert await counter.usage("key:g") == {"m": 5}
        await state.aclose()
        await counter.close()

    run(body)


def test_unreachable_redis_raises_quickly() -> None:
    async def body() -> None:
        counter = RedisCounter(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
        start = time.monotonic()
        assert not await counter.ping()
        calls: list[Awaitable[object]] = [
            counter.charge("key:x", "m", 1, None),
            counter.refund("key:x", "m", 1),
            counter.usage("key:x"),
            counter.callers(),
            counter.reset("key:x"),
            counter.get_budget("key:x"),
            counter.set_budget("key:x", 3),
        ]
        for call in calls:
            with pytest.raises(CounterUnavailable):
                await call
        # charges coalesced into one failing call all fail, and none hangs
        together = await asyncio.gather(
            *(counter.charge(f"key:{i}", "m", 1, None) for i in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, CounterUnavailable) for r in together)
        assert time.monotonic() - start < 5
        await counter.close()

    run(body)


def test_recovers_after_a_restart_and_times_out_when_hung() -> None:
    """The same counter object works again once Redis is back (no reconnect call), and a hung
    Redis (SIGSTOP) turns into ``CounterUnavailable`` within the timeout, not a hang."""
    first = RedisProcess().start()
    port = first.port

    async def body() -> None:
        counter = RedisCounter(f"redis://127.0.0.1:{port}/0", timeout=0.5)
        assert (await counter.charge("key:r", "m", 2, None)).used == 2
        first.stop()
        with pytest.raises(CounterUnavailable):
            await counter.charge("key:r", "m", 1, None)
        assert not await counter.ping()
        second = RedisProcess(port=port).start()
        try:
            assert await counter.ping()
            # --save '' : the restarted Redis starts empty; counting resumes from there
            assert (await counter.charge("key:r", "m", 3, None)).used == 3
            assert await counter.usage("key:r") == {"m": 3}
            assert second.proc is not None
            os.kill(second.proc.pid, signal.SIGSTOP)
            try:
                start = time.monotonic()
                with pytest.raises(CounterUnavailable):
                    await counter.charge("key:r", "m", 1, None)
                assert time.monotonic() - start < 3
            finally:
                os.kill(second.proc.pid, signal.SIGCONT)
            await asyncio.sleep(0.2)
            assert await counter.ping()
        finally:
            await counter.close()
            second.stop()

    try:
        run(body)
    finally:
        first.stop()
