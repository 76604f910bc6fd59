"""``RedisDetectionStore``: the detector's state in Redis, beside the query counter.

Keys (all tagged by the caller, like the counter's, so a caller's state is one cluster slot):

* ``{prefix}{<caller>}:det`` hash: ``seq`` (the caller's queries seen), ``state``, ``until``,
  ``first_flag``, ``flags:<model>:<layer>``;
* ``{prefix}{<caller>}:det:window`` sorted set: flags in the escalation window;
* ``{prefix}{<caller>}:det:once:{token}`` one request's reply, kept ``token_ttl_s`` so that a
  call the client retries (its connection failed after the script ran) answers it again
  instead of indexing the images twice (each would then match itself);
* ``{prefix}{<caller>}:det:<model>:<bucket>`` hash: ``e<digest>`` and ``n<key>`` ``-> packed
  ids`` (the two indexes), ``a<seq> -> answer`` (enforce);
* with ``detection_cross_caller``, ``{prefix}{*shared*}:det...``: one index over all callers
  (near keys and each query's owner), in one slot: a hot key, meant for shadow measurement.

One ``EVALSHA`` (``service.detection.redis_lua``) per request judges and indexes all its
images. The calls of requests that arrive together are coalesced as the counter's charges are:
the first one of an event-loop tick schedules a flush, and every call pending by then goes in
one pipeline (one round trip; on a cluster redis-py sends each node its calls together). Its
binary client (fingerprints and answers are bytes) comes from the counter's
``RedisConnections``: same mode and timeouts, it follows a Sentinel failover with the counter's
and is closed by :meth:`RedisDetectionStore.close`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import uuid
from dataclasses import dataclass
from typing import Any

from service.accounting.base import CounterUnavailable
from service.accounting.coalescing import drain
from service.accounting.redis_connections import RedisBackend, no_script
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
    refusal,
)

MAX_CALLS_PER_PIPELINE = 64


@dataclass
class _PendingCall:
    keys: list[str]
    args: list[Any]
    waiter: asyncio.Future[Any]


SHARED_TAG = "*shared*"  # never a caller id: those are key:<name> or addr:<ip>


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisDetectionStore:
    """Detection state shared by every gateway process that uses the same Redis."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._redis = backend.binary_client()
        self._observe = self._redis.register_script(OBSERVE_LUA)
        self._shared = self._redis.register_script(SHARED_LUA)
        self._pending: list[_PendingCall] = []
        self._flusher: asyncio.Task[None] | None = None
        self._token_prefix = uuid.uuid4().hex  # request tokens, as the counter's charges
        self._token_seq = itertools.count()

    def _key(self, caller: str, name: str) -> str:
        return self._backend.key(caller, name)

    async def observe(
        self,
        caller: str,
        model: str,
        observations: list[Observation],
        policy: Policy,
        now: float,
        token: str | None = None,
    ) -> Outcome:
        """Observe one request's images; ``token`` names the request (a fresh one when None):
        the same token observes once, so a retried script call never indexes its images twice."""
        if token is None:
            token = f"{self._token_prefix}:{next(self._token_seq)}"
        buckets = bucket_range(now, policy)
        keys = [self._backend.detection_key(caller), self._key(caller, "det:window")]
        keys.append(self._key(caller, f"det:once:{token}"))
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
            self._backend.token_ttl_s,
        ]
        args: list[Any] = [" ".join(map(str, numbers)), model, len(observations)]
        for o in observations:
            args += [o.exact, b"".join(o.near), o.answer]
        reply = await self._observe_coalesced(keys, args)
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

    async def _observe_coalesced(self, keys: list[str], args: list[Any]) -> Any:
        """The observe script's reply, the call sent with the others pending in this tick."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_PendingCall(keys, args, waiter))
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        return await waiter

    async def _flush(self) -> None:
        """Send the pending observe calls, a pipeline at a time, until none is left; a call
        that fails fails its own request only."""
        await drain(self._pending, MAX_CALLS_PER_PIPELINE, self._apply)

    async def _apply(self, batch: list[_PendingCall]) -> None:
        results = await self._backend.call(functools.partial(self._send, batch))
        for pending, result in zip(batch, results, strict=True):
            if pending.waiter.done():
                continue
            if isinstance(result, Exception):
                pending.waiter.set_exception(CounterUnavailable(repr(result)))
            else:
                pending.waiter.set_result(result)

    async def _send(self, batch: list[_PendingCall]) -> list[Any]:
        if len(batch) == 1:  # alone: the plain script call (it loads the script if need be)
            return [await self._observe(keys=batch[0].keys, args=batch[0].args)]
        return await self._pipelined(batch)

    async def _pipelined(self, batch: list[_PendingCall]) -> list[Any]:
        """One EVALSHA per call in one pipeline (errors come back as values); a node without
        the script (a promoted replica, a restart) gets it loaded and its calls once more."""

        async def send(calls: list[_PendingCall]) -> list[Any]:
            pipe = self._redis.pipeline()
            for call in calls:
                # redis-py blocks pipe.evalsha on a cluster; the raw command is routed by keys
                pipe.execute_command(
                    "EVALSHA", self._observe.sha, len(call.keys), *call.keys, *call.args
                )
            return list(await pipe.execute(raise_on_error=False))

        results = await send(batch)
        missing = [i for i, r in enumerate(results) if no_script(r)]
        if missing:
            await self._redis.script_load(OBSERVE_LUA)
            again = await send([batch[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def observe_shared(
        self, caller: str, model: str, near: list[list[bytes]], policy: Policy, now: float
    ) -> list[str | None]:
        buckets = bucket_range(now, policy)
        tag = f"{self._backend.prefix}{{{SHARED_TAG}}}:det"
        keys = [tag] + [f"{tag}:{model}:{b}" for b in buckets]
        numbers = [
            len(buckets),
            math.ceil(policy.retention_s + policy.bucket_s),
            policy.ids_per_key,
            policy.near_threshold,
        ]
        args: list[Any] = [" ".join(map(str, numbers)), caller, len(near)]
        args += [b"".join(row) for row in near]
        reply = await self._backend.call(lambda: self._shared(keys=keys, args=args))
        owners = [_text(o) or None for o in reply]
        flagged = sum(o is not None for o in owners)
        if flagged:
            stats = self._backend.detection_key(caller)
            await self._backend.call(
                lambda: self._redis.hincrby(stats, f"flags:{model}:cross_caller", flagged)
            )
        return owners

    async def refused(self, caller: str, policy: Policy, now: float) -> tuple[State | None, float]:
        """One ``HMGET`` of the caller's state: is it throttled or suspended right now?"""
        if not policy.escalate:
            return None, 0.0
        stats_key = self._backend.detection_key(caller)
        raw, until = await self._backend.call(
            lambda: self._redis.hmget(stats_key, "state", "until")
        )
        state: State = _text(raw) if raw else "ok"  # type: ignore[assignment]
        return refusal(state, float(until or 0), policy, now)

    async def status(self, caller: str, policy: Policy, now: float) -> CallerStatus | None:
        stats_key, window_key = self._backend.detection_key(caller), self._key(caller, "det:window")

        async def read() -> tuple[dict[bytes, bytes], int]:
            stats = await self._redis.hgetall(stats_key)
            count = await self._redis.zcount(window_key, now - policy.flag_window_s, "+inf")
            return stats, int(count)

        raw, in_window = await self._backend.call(read)
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
        return [c for c in await self._backend.scan_callers(":det") if c != SHARED_TAG]

    async def lift(self, caller: str) -> None:
        stats_key, window_key = self._backend.detection_key(caller), self._key(caller, "det:window")

        async def lift() -> None:
            await self._redis.hdel(stats_key, "state", "until")
            await self._redis.delete(window_key)

        await self._backend.call(lift)

    async def forget(self, caller: str) -> None:
        pattern = self._key(caller, "det*")

        async def forget() -> None:
            keys = [k async for k in self._redis.scan_iter(match=_escape_glob(pattern), count=1000)]
            for key in keys:  # one by one: on a cluster a multi-key DEL must stay in one slot
                await self._redis.delete(key)

        await self._backend.call(forget)

    async def close(self) -> None:
        """Close the binary client's connections (the app's shutdown)."""
        await self._backend.connections.close(self._redis)


def _escape_glob(pattern: str) -> str:
    """``pattern`` with glob metacharacters of the caller id escaped (the final ``*`` kept)."""
    head = pattern[:-1]
    for char in "\\[]?*":
        head = head.replace(char, "\\" + char)
    return head + "*"


__all__ = ["BUCKETS", "RedisDetectionStore"]
