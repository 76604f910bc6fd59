"""The detection stores: the in-memory one and the Redis Lua one give the same verdicts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from service.accounting.redis_counter import RedisCounter
from service.detection.redis_store import RedisDetectionStore
from service.detection.store import DetectionStore, MemoryDetectionStore, Observation, Policy
from tests.servers import RedisProcess

CALLERS = itertools.count()
NEAR_A = [bytes([i]) * 8 for i in range(50)]


def obs(exact: bytes, near: list[bytes], answer: bytes = b"") -> Observation:
    return Observation(exact, near, answer or exact)


RUNNER: asyncio.Runner | None = None


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_server: RedisProcess) -> Iterator[DetectionStore]:
    """Each store with one event loop for the test (the Redis client's sockets live on it)."""
    global RUNNER
    with asyncio.Runner() as runner:
        RUNNER = runner
        if request.param == "memory":
            yield MemoryDetectionStore()
        else:
            counter = RedisCounter(redis_server.url, prefix=f"t{next(CALLERS)}:")
            yield RedisDetectionStore(counter.backend)
            runner.run(counter.close())
        RUNNER = None


def run(coro: Any) -> Any:
    assert RUNNER is not None
    return RUNNER.run(coro)


def test_an_exact_repeat_is_flagged_and_matches_the_first_answer(store: DetectionStore) -> None:
    policy = Policy(store_answers=True)
    first = run(store.observe("key:a", "m", [obs(b"x" * 16, NEAR_A, b"answer-1")], policy, 100.0))
    again = run(store.observe("key:a", "m", [obs(b"x" * 16, NEAR_A, b"answer-2")], policy, 101.0))
    third = run(store.observe("key:a", "m", [obs(b"x" * 16, NEAR_A, b"answer-3")], policy, 102.0))
    assert first.verdicts[0].layer is None and first.verdicts[0].matched is None
    assert [v.seq for v in (first.verdicts[0], again.verdicts[0], third.verdicts[0])] == [1, 2, 3]
    for outcome in (again, third):
        verdict = outcome.verdicts[0]
        assert (verdict.layer, verdict.matched, verdict.cached) == ("exact", 1, b"answer-1")


def test_the_repeat_allowance_and_other_callers(store: DetectionStore) -> None:
    policy = Policy(repeat_allowance=1, store_answers=True)
    image = obs(b"y" * 16, NEAR_A)
    out = run(store.observe("key:b", "m", [image, image, image], policy, 10.0))
    assert [v.layer for v in out.verdicts] == [None, None, "exact"]
    assert out.verdicts[1].cached == b"y" * 16  # within the allowance it is still a repeat
    other = run(store.observe("key:c", "m", [image], policy, 10.0))
    assert other.verdicts[0].matched is None  # state is per caller
    model2 = run(store.observe("key:b", "m2", [image], policy, 10.0))
    assert model2.verdicts[0].matched is None  # and per model


def test_a_near_duplicate_shares_more_than_the_threshold(store: DetectionStore) -> None:
    policy = Policy(near_threshold=25)
    run(store.observe("key:d", "m", [obs(b"1" * 16, NEAR_A)], policy, 5.0))
    keys26 = NEAR_A[:26] + [bytes([200 + i]) * 8 for i in range(24)]
    keys25 = NEAR_A[:25] + [bytes([100 + i]) * 8 for i in range(25)]
    out = run(
        store.observe("key:d", "m", [obs(b"2" * 16, keys25), obs(b"3" * 16, keys26)], policy, 6.0)
    )
    assert [(v.layer, v.matched) for v in out.verdicts] == [(None, None), ("near", 1)]
    assert out.verdicts[1].cached is None  # answers are stored under enforce only


def test_escalation_throttles_then_suspends_and_lift_ends_it(store: DetectionStore) -> None:
    policy = Policy(throttle_after=2, suspend_after=4, throttle_s=30.0, escalate=True)
    image = obs(b"z" * 16, NEAR_A)
    out = run(store.observe("key:e", "m", [image, image], policy, 1000.0))
    assert out.state == "ok" and out.refused is None
    out = run(store.observe("key:e", "m", [image], policy, 1001.0))
    assert out.state == "throttled"
    refused = run(store.observe("key:e", "m", [image], policy, 1010.0))
    assert refused.refused == "throttled" and refused.verdicts == []
    assert 19.0 <= refused.retry_after_s <= 21.0
    out = run(store.observe("key:e", "m", [image, image], policy, 1032.0))  # throttle over
    assert out.state == "suspended"
    assert run(store.observe("key:e", "m", [image], policy, 99999.0)).refused == "suspended"
    status = run(store.status("key:e", policy, 1032.0))
    assert status.state == "suspended" and status.first_flag_query == 2
    assert status.flags == {"m": {"exact": 4}} and status.queries == 5
    run(store.lift("key:e"))
    status = run(store.status("key:e", policy, 1033.0))
    assert status.state == "ok" and status.flags_in_window == 0
    assert run(store.observe("key:e", "m", [obs(b"new" * 5, [])], policy, 1034.0)).refused is None
    assert "key:e" in run(store.callers())


def test_shadow_never_refuses(store: DetectionStore) -> None:
    policy = Policy(throttle_after=1, suspend_after=2)
    image = obs(b"s" * 16, NEAR_A)
    for t in range(5):
        assert run(store.observe("key:f", "m", [image], policy, float(t))).refused is None
    assert run(store.status("key:f", policy, 5.0)).state == "ok"


def test_state_expires_after_the_retention_window(store: DetectionStore) -> None:
    policy = Policy(retention_s=40.0)  # buckets of 10 s; a lookup reads the current and 4 more

    def near(tag: bytes, now: float) -> int | None:
        out = run(store.observe("key:g", "m", [obs(tag * 16, NEAR_A)], policy, now))
        return out.verdicts[0].matched

    assert near(b"1", 1005.0) is None  # bucket 100
    assert near(b"2", 1044.0) == 1  # reads buckets 104..100
    assert near(b"3", 1061.0) == 2  # reads 106..102: query 1 is gone, query 2 is not
    assert near(b"4", 1200.0) is None


def test_exact_repeats_and_answers_are_found_in_older_buckets(store: DetectionStore) -> None:
    """The lookups read every bucket of the retention window, not only the current one (the
    Lua skips older buckets that do not exist; these do)."""
    policy = Policy(retention_s=40.0, store_answers=True)
    first = run(store.observe("key:o", "m", [obs(b"x" * 16, NEAR_A, b"first")], policy, 1005.0))
    later = [obs(b"y" * 16, [bytes([i]) * 8 for i in range(100, 150)]), obs(b"x" * 16, NEAR_A)]
    out = run(store.observe("key:o", "m", later, policy, 1031.0))  # bucket 103: reads 103..99
    assert out.verdicts[0].matched is None
    assert (out.verdicts[1].layer, out.verdicts[1].matched) == ("exact", first.verdicts[0].seq)
    assert out.verdicts[1].cached == b"first"


def test_forget_drops_a_caller(store: DetectionStore) -> None:
    policy = Policy()
    run(store.observe("key:h", "m", [obs(b"h" * 16, NEAR_A)], policy, 1.0))
    run(store.forget("key:h"))
    assert run(store.status("key:h", policy, 1.0)) is None
    assert (
        run(store.observe("key:h", "m", [obs(b"h" * 16, NEAR_A)], policy, 1.0)).verdicts[0].seq == 1
    )


def test_ids_per_key_keeps_an_images_first_answer(store: DetectionStore) -> None:
    policy = Policy(ids_per_key=3, store_answers=True)
    image = obs(b"c" * 16, [], b"first")
    for _ in range(6):
        out = run(store.observe("key:i", "m", [image], policy, 1.0))
    assert out.verdicts[0].cached == b"first"


def test_the_cross_caller_index_names_the_other_caller(store: DetectionStore) -> None:
    policy = Policy()
    run(store.observe("key:p", "m", [obs(b"p" * 16, NEAR_A)], policy, 1.0))
    run(store.observe("key:q", "m", [obs(b"q" * 16, NEAR_A)], policy, 1.0))
    assert run(store.observe_shared("key:p", "m", [NEAR_A], policy, 1.0)) == [None]
    again = run(store.observe_shared("key:p", "m", [NEAR_A[:30] + NEAR_A[:1]], policy, 2.0))
    assert again == [None]  # its own earlier query: not a cross-caller match
    other = NEAR_A[:26] + [bytes([250 - i]) * 8 for i in range(24)]
    assert run(store.observe_shared("key:q", "m", [other, [b"z" * 8]], policy, 3.0)) == [
        "key:p",
        None,
    ]
    assert run(store.status("key:q", policy, 3.0)).flags == {"m": {"cross_caller": 1}}
    assert run(store.observe_shared("key:q", "m2", [NEAR_A], policy, 3.0)) == [None]  # per model
    assert run(store.callers()) == ["key:p", "key:q"]  # the shared index is no caller


def test_with_the_exact_layer_off_only_near_duplicates_match(store: DetectionStore) -> None:
    policy = Policy()
    out = run(
        store.observe("key:r", "m", [obs(b"", NEAR_A), obs(b"", []), obs(b"", [])], policy, 1.0)
    )
    assert [(v.layer, v.matched) for v in out.verdicts] == [
        (None, None),
        (None, None),
        (None, None),
    ]
    again = run(store.observe("key:r", "m", [obs(b"", NEAR_A)], policy, 2.0))
    assert (again.verdicts[0].layer, again.verdicts[0].matched) == ("near", 1)


def test_concurrent_requests_get_the_verdicts_of_one_by_one_calls(store: DetectionStore) -> None:
    """Requests that arrive together share one Redis round trip (a pipeline of the script's
    calls); their verdicts are those of the same calls made one by one, in arrival order."""
    policy = Policy(store_answers=True)
    near = [[bytes([i, j]) * 4 for j in range(50)] for i in range(6)]
    requests = [
        ("key:c1", [obs(b"a" * 16, near[0], b"c1-a")]),
        ("key:c2", [obs(b"b" * 16, near[1], b"c2-b")]),
        ("key:c1", [obs(b"a" * 16, near[0], b"c1-a2"), obs(b"c" * 16, near[2], b"c1-c")]),
        ("key:c2", [obs(b"d" * 16, near[1], b"c2-d")]),  # a near repeat of c2's first
        ("key:c3", [obs(b"a" * 16, near[0], b"c3-a")]),  # another caller: no match
    ]

    async def together() -> list[Any]:
        return list(
            await asyncio.gather(*(store.observe(c, "m", o, policy, 10.0) for c, o in requests))
        )

    sizes: list[int] = []
    if isinstance(store, RedisDetectionStore):
        send = store._send

        async def counted(batch: list[Any]) -> list[Any]:
            sizes.append(len(batch))
            return await send(batch)

        store._send = counted  # type: ignore[method-assign]
    outcomes = run(together())
    if isinstance(store, RedisDetectionStore):
        assert sizes == [5]  # one round trip for the five requests
    got = [[(v.seq, v.layer, v.matched, v.cached) for v in o.verdicts] for o in outcomes]
    assert got == [
        [(1, None, None, None)],
        [(1, None, None, None)],
        [(2, "exact", 1, b"c1-a"), (3, None, None, None)],
        [(2, "near", 1, b"c2-b")],
        [(1, None, None, None)],
    ]


def test_refused_reads_the_state_without_observing(store: DetectionStore) -> None:
    policy = Policy(throttle_after=1, suspend_after=3, throttle_s=30.0, escalate=True)
    image = obs(b"f" * 16, [])
    assert run(store.refused("key:j", policy, 1.0)) == (None, 0.0)
    run(store.observe("key:j", "m", [image, image], policy, 100.0))
    state, retry = run(store.refused("key:j", policy, 110.0))
    assert state == "throttled" and 19.0 <= retry <= 21.0
    assert run(store.refused("key:j", Policy(), 110.0)) == (None, 0.0)  # shadow never refuses
    assert run(store.refused("key:j", policy, 131.0)) == (None, 0.0)  # the throttle is over
    run(store.observe("key:j", "m", [image, image], policy, 131.0))
    assert run(store.refused("key:j", policy, 1e9)) == ("suspended", 0.0)
    assert run(store.status("key:j", policy, 131.0)).queries == 4  # reads observed nothing


def test_the_memory_store_sweeps_callers_whose_state_expired() -> None:
    with asyncio.Runner() as runner:
        memory_sweep(runner.run)


def memory_sweep(run: Any) -> None:
    store = MemoryDetectionStore(sweep_every=5)
    policy = Policy(retention_s=40.0, flag_window_s=20.0, throttle_after=1, suspend_after=2)
    escalate = Policy(**{**policy.__dict__, "escalate": True})
    for caller in ("key:old1", "key:old2"):
        run(store.observe(caller, "m", [obs(caller.encode(), NEAR_A)], policy, 0.0))
    image = obs(b"s" * 16, [])
    run(store.observe("key:suspended", "m", [image, image, image], escalate, 0.0))
    run(store.observe("key:recent", "m", [obs(b"r" * 16, [])], policy, 30.0))
    assert run(store.callers()) == ["key:old1", "key:old2", "key:recent", "key:suspended"]
    # the fifth observe call sweeps: at t = 51 the retention (40 s + a 10 s bucket) has
    # passed for the callers last seen at 0, not for one seen at 30; a suspension stays
    run(store.observe("key:new", "m", [obs(b"n" * 16, [])], policy, 51.0))
    assert run(store.callers()) == ["key:new", "key:recent", "key:suspended"]
    assert run(store.status("key:suspended", escalate, 51.0)).state == "suspended"
    assert run(store.status("key:old1", policy, 51.0)) is None


def test_the_memory_store_caps_callers_least_recently_seen_first() -> None:
    with asyncio.Runner() as runner:
        memory_cap(runner.run)


def memory_cap(run: Any) -> None:
    store = MemoryDetectionStore(max_callers=3)
    policy = Policy()
    escalate = Policy(throttle_after=1, suspend_after=2, escalate=True)
    image = obs(b"s" * 16, [])
    run(store.observe("key:s", "m", [image, image, image], escalate, 0.0))  # suspended, oldest
    for t, caller in enumerate(("key:a", "key:b", "key:a", "key:c"), start=1):
        run(store.observe(caller, "m", [obs(caller.encode(), [])], policy, float(t)))
    # at the cap, key:c evicted key:b: key:s is older but suspended, key:a was seen again
    assert run(store.callers()) == ["key:a", "key:c", "key:s"]
    for i in range(20):
        run(store.observe(f"key:n{i}", "m", [obs(b"n" * 16, [])], policy, 10.0 + i))
        assert len(run(store.callers())) <= 3
    assert "key:s" in run(store.callers())
    assert run(store.refused("key:s", escalate, 99.0)) == ("suspended", 0.0)
