"""``RedisDetectionStore``: the detector's state in Redis, beside the query counter.

Keys (all tagged by the caller, like the counter's, so a caller's state is one cluster slot):

* ``{prefix}{<caller>}:det`` hash: ``seq`` (the caller's queries seen), ``state``, ``until``,
  ``first_flag``, ``flags:<model>:<layer>``;
* ``{prefix}{<caller>}:det:window`` sorted set: flags in the escalation window;
* ``{prefix}{<caller>}:det:<model>:<bucket>`` hash: ``e<digest>`` and ``n<key>`` ``-> packed
  ids`` (the two indexes), ``a<seq> -> answer`` (enforce);
* with ``detection_cross_caller``, ``{prefix}{*shared*}:det...``: one index over all callers
  (near keys and each query's owner), in one slot: a hot key, meant for shadow measurement.

One ``EVALSHA`` (``service.detection.redis_lua``) per request judges and indexes all its
images. It uses the counter's connection settings (mode, Sentinel tracking, timeouts) through a
second, binary client: fingerprints and answers are bytes.
"""

from __future__ import annotations

import math
from typing import Any

from service.detection.redis_lua import OBSERVE_LUA, SHARED_LUA
from service.detection.store import (
    BUCKETS,
    CallerStatus,
    Observation,
    Outcome,
    Policy,
    State,
    Verdict,
    bucket_range,
)
from service.redis_counter import RedisCounter

SHARED_TAG = "*shared*"  # never a caller id: those are key:<name> or addr:<ip>


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisDetectionStore:
    """Detection state shared by every gateway process that uses the same Redis."""

    def __init__(self, counter: RedisCounter) -> None:
        self._counter = counter
        self._redis = counter.binary_client()
        self._observe = self._redis.register_script(OBSERVE_LUA)
        self._shared = self._redis.register_script(SHARED_LUA)

    def _key(self, caller: str, name: str) -> str:
        return self._counter.key(caller, name)

    async def observe(
        self,
        caller: str,
        model: str,
        observations: list[Observation],
        policy: Policy,
        now: float,
    ) -> Outcome:
        buckets = bucket_range(now, policy)
        keys = [self._key(caller, "det"), self._key(caller, "det:window")]
        keys += [self._key(caller, f"det:{model}:{b}") for b in buckets]
        numbers = [
            repr(now),
            len(buckets),
            math.ceil(policy.retention_s + policy.bucket_s),
            math.ceil(policy.retention_s),
            policy.ids_per_key,
            policy.near_threshold,
            policy.repeat_allowance,
            repr(policy.flag_window_s),
            policy.throttle_after,
            policy.suspend_after,
            repr(policy.throttle_s),
            int(policy.escalate),
            int(policy.store_answers),
        ]
        args: list[Any] = [" ".join(map(str, numbers)), model, len(observations)]
        for o in observations:
            args += [o.exact, b"".join(o.near), o.answer]
        reply = await self._counter.call(lambda: self._observe(keys=keys, args=args))
        refused, retry, state = (_text(v) for v in reply[:3])
        verdicts = [
            Verdict(
                int(seq),
                _text(layer) or None,  # type: ignore[arg-type]
                int(matched) or None,
                bytes(cached) or None,
            )
            for seq, layer, matched, cached in reply[3:]
        ]
        return Outcome(refused or None, float(retry), verdicts, state)  # type: ignore[arg-type]

    async def observe_shared(
        self, caller: str, model: str, near: list[list[bytes]], policy: Policy, now: float
    ) -> list[str | None]:
        buckets = bucket_range(now, policy)
        tag = f"{self._counter.prefix}{{{SHARED_TAG}}}:det"
        keys = [tag] + [f"{tag}:{model}:{b}" for b in buckets]
        numbers = [
            len(buckets),
            math.ceil(policy.retention_s + policy.bucket_s),
            policy.ids_per_key,
            policy.near_threshold,
        ]
        args: list[Any] = [" ".join(map(str, numbers)), caller, len(near)]
        args += [b"".join(row) for row in near]
        reply = await self._counter.call(lambda: self._shared(keys=keys, args=args))
        owners = [_text(o) or None for o in reply]
        flagged = sum(o is not None for o in owners)
        if flagged:
            stats = self._key(caller, "det")
            await self._counter.call(
                lambda: self._redis.hincrby(stats, f"flags:{model}:cross_caller", flagged)
            )
        return owners

    async def status(self, caller: str, policy: Policy, now: float) -> CallerStatus | None:
        stats_key, window_key = self._key(caller, "det"), self._key(caller, "det:window")

        async def read() -> tuple[dict[bytes, bytes], int]:
            stats = await self._redis.hgetall(stats_key)
            count = await self._redis.zcount(window_key, now - policy.flag_window_s, "+inf")
            return stats, int(count)

        raw, in_window = await self._counter.call(read)
        if not raw:
            return None
        stats = {_text(k): _text(v) for k, v in raw.items()}
        state: State = stats.get("state", "ok")  # type: ignore[assignment]
        until = float(stats.get("until", 0))
        if state == "throttled" and until <= now:
            state = "ok"
        flags: dict[str, dict[str, int]] = {}
        for name, value in stats.items():
            if name.startswith("flags:"):
                model, layer = name.removeprefix("flags:").rsplit(":", 1)
                flags.setdefault(model, {})[layer] = int(value)
        first = stats.get("first_flag")
        return CallerStatus(
            caller,
            state,
            until if state == "throttled" else None,
            int(stats.get("seq", 0)),
            int(first) if first else None,
            flags,
            in_window,
        )

    async def callers(self) -> list[str]:
        return [c for c in await self._counter.scan_callers(":det") if c != SHARED_TAG]

    async def lift(self, caller: str) -> None:
        stats_key, window_key = self._key(caller, "det"), self._key(caller, "det:window")

        async def lift() -> None:
            await self._redis.hdel(stats_key, "state", "until")
            await self._redis.delete(window_key)

        await self._counter.call(lift)

    async def forget(self, caller: str) -> None:
        pattern = self._key(caller, "det*")

        async def forget() -> None:
            keys = [k async for k in self._redis.scan_iter(match=_escape_glob(pattern), count=1000)]
            for key in keys:  # one by one: on a cluster a multi-key DEL must stay in one slot
                await self._redis.delete(key)

        await self._counter.call(forget)


def _escape_glob(pattern: str) -> str:
    """``pattern`` with glob metacharacters of the caller id escaped (the final ``*`` kept)."""
    head = pattern[:-1]
    for char in "\\[]?*":
        head = head.replace(char, "\\" + char)
    return head + "*"


__all__ = ["BUCKETS", "RedisDetectionStore"]
