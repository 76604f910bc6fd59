"""``RedisCounter``: the multi-process ``QueryCounter``, with Redis as the source of truth.

Keys (``prefix`` defaults to ``snd:``; one Redis instance, not a cluster):

* ``{prefix}usage:{caller}`` hash ``model -> images answered``;
* ``{prefix}budget:{caller}`` the budget set through the admin API (overrides the settings);
* ``{prefix}callers`` the set of callers ever counted (until reset);
* ``{prefix}charge:{token}`` the outcome of one ``charge``, kept a few seconds so that a retried
  script (after a timeout whose reply was lost) is not counted twice.

``charge`` is one Lua script: read the budget, sum the caller's counts, add ``n`` only if the sum
stays within the budget. Charges that arrive together are coalesced: the first one of an event-loop
tick starts a flush, the others made in the same tick (or while that flush is in flight) join it,
and one script call applies them all in arrival order, each with its own budget check and token.
Under concurrent load this pays one Redis round trip for many requests. Every connection or timeout
error becomes ``CounterUnavailable`` (for every charge of the call); the connection pool
reconnects by itself on the next call once Redis is back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.accounting import Charge, CounterUnavailable
from service.metrics import ACCOUNTING_CHARGES_PER_CALL

log = logging.getLogger(__name__)

# Charges applied in order, four KEYS each: usage hash, budget key, callers set, charge token.
# ARGV: token ttl seconds, then four per charge: caller, model, n, default budget ('' = none).
# Returns three integers per charge: allowed (0/1), the caller's total after it, budget (-1 none).
CHARGE_LUA = """
local out = {}
local ttl = tonumber(ARGV[1])
for i = 0, #KEYS / 4 - 1 do
  local usage_key, budget_key = KEYS[4 * i + 1], KEYS[4 * i + 2]
  local callers_key, token_key = KEYS[4 * i + 3], KEYS[4 * i + 4]
  local caller, model = ARGV[4 * i + 2], ARGV[4 * i + 3]
  local n, default_budget = tonumber(ARGV[4 * i + 4]), ARGV[4 * i + 5]
  local allowed, used, b
  local done = redis.call('GET', token_key)
  if done then
    local a, u, d = string.match(done, '^(%-?%d+),(%-?%d+),(%-?%d+)$')
    allowed, used, b = tonumber(a), tonumber(u), tonumber(d)
  else
    local budget = redis.call('GET', budget_key) or default_budget
    used = 0
    for _, count in ipairs(redis.call('HVALS', usage_key)) do
      used = used + tonumber(count)
    end
    allowed = 1
    if budget ~= '' and used + n > tonumber(budget) then
      allowed = 0
    else
      redis.call('HINCRBY', usage_key, model, n)
      redis.call('SADD', callers_key, caller)
      used = used + n
    end
    b = -1
    if budget ~= '' then b = tonumber(budget) end
    redis.call('SET', token_key, string.format('%d,%d,%d', allowed, used, b), 'EX', ttl)
  end
  out[#out + 1] = allowed
  out[#out + 1] = used
  out[#out + 1] = b
end
return out
"""
MAX_CHARGES_PER_CALL = 256  # bounds one script's run time (Redis runs scripts alone)

# KEYS: usage hash, refund token; ARGV: model, n, token ttl seconds. Never takes a count below
# zero; a retried refund (same token) is applied once.
REFUND_LUA = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[3])) then return 0 end
local count = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local n = math.min(count, tonumber(ARGV[2]))
if n > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], -n) end
return n
"""


@dataclass
class _PendingCharge:
    """One charge waiting for the next script call: its four keys, four arguments and waiter."""

    keys: list[str]
    args: list[str | int]
    waiter: asyncio.Future[Charge]


class RedisCounter:
    """``QueryCounter`` on Redis (``redis.asyncio``), safe across processes and hosts.

    ``timeout`` bounds connecting and every operation, so an outage turns into a quick
    ``CounterUnavailable`` (and a 503) instead of a hanging request.
    """

    def __init__(
        self, url: str, *, timeout: float = 0.5, prefix: str = "snd:", token_ttl_s: int = 30
    ) -> None:
        self.prefix = prefix
        self.token_ttl_s = token_ttl_s
        self._redis: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            # one immediate retry on a fresh connection: pooled sockets die when Redis
            # restarts; the charge token makes a retried script count once
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
        self._charge = self._redis.register_script(CHARGE_LUA)
        self._refund = self._redis.register_script(REFUND_LUA)
        self._up = True
        # charge tokens: a random prefix per counter and a sequence number (no syscall per
        # request, unlike uuid4)
        self._token_prefix = uuid.uuid4().hex
        self._token_seq = itertools.count()
        self._pending: list[_PendingCharge] = []
        self._flusher: asyncio.Task[None] | None = None

    def _usage_key(self, caller: str) -> str:
        return f"{self.prefix}usage:{caller}"

    def _budget_key(self, caller: str) -> str:
        return f"{self.prefix}budget:{caller}"

    @property
    def _callers_key(self) -> str:
        return f"{self.prefix}callers"

    async def _call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis operation; backend failures become ``CounterUnavailable``."""
        try:
            result = await operation()
        except (RedisError, OSError) as exc:
            if self._up:
                log.warning("redis unavailable, failing accounting calls: %s", exc)
                self._up = False
            raise CounterUnavailable(str(exc)) from exc
        if not self._up:
            log.info("redis reachable again")
            self._up = True
        return result

    async def charge(self, caller: str, model: str, n: int, default_budget: int | None) -> Charge:
        token = f"{self._token_prefix}:{next(self._token_seq)}"
        return await self.charge_with_token(caller, model, n, default_budget, token)

    async def charge_with_token(
        self, caller: str, model: str, n: int, default_budget: int | None, token: str
    ) -> Charge:
        """``charge`` with an explicit idempotency token: the same token counts once."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Charge] = loop.create_future()
        self._pending.append(
            _PendingCharge(
                keys=[
                    self._usage_key(caller),
                    self._budget_key(caller),
                    self._callers_key,
                    f"{self.prefix}charge:{token}",
                ],
                args=[caller, model, n, "" if default_budget is None else default_budget],
                waiter=waiter,
            )
        )
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            # runs after the tasks already scheduled in this tick, so their charges join it
            self._flusher = loop.create_task(self._flush())
        return await waiter

    async def _flush(self) -> None:
        """Apply the pending charges, one script call at a time, until none is left."""
        while self._pending:
            batch = self._pending[:MAX_CHARGES_PER_CALL]
            del self._pending[:MAX_CHARGES_PER_CALL]
            try:
                await self._apply(batch)
            except BaseException as exc:
                cancelled = not isinstance(exc, Exception)  # the loop is going away
                failed = batch + self._pending if cancelled else batch
                if cancelled:
                    self._pending = []
                reason = str(exc) if isinstance(exc, CounterUnavailable) else repr(exc)
                for pending in failed:
                    if not pending.waiter.done():
                        pending.waiter.set_exception(CounterUnavailable(reason))
                if cancelled:
                    raise

    async def _apply(self, batch: list[_PendingCharge]) -> None:
        keys = [key for pending in batch for key in pending.keys]
        args: list[str | int] = [self.token_ttl_s]
        for pending in batch:
            args.extend(pending.args)
        ACCOUNTING_CHARGES_PER_CALL.observe(len(batch))
        flat = await self._call(lambda: self._charge(keys=keys, args=args))
        if len(flat) != 3 * len(batch):
            raise CounterUnavailable(
                f"charge script answered {len(flat)} values for {len(batch)} charges"
            )
        for i, pending in enumerate(batch):
            allowed, used, budget = (int(v) for v in flat[3 * i : 3 * i + 3])
            if not pending.waiter.done():  # a waiter cancelled meanwhile is still counted
                pending.waiter.set_result(
                    Charge(bool(allowed), used, None if budget < 0 else budget)
                )

    async def refund(self, caller: str, model: str, n: int) -> None:
        keys = [
            self._usage_key(caller),
            f"{self.prefix}refund:{self._token_prefix}:{next(self._token_seq)}",
        ]
        args: list[str | int] = [model, n, self.token_ttl_s]
        await self._call(lambda: self._refund(keys=keys, args=args))

    async def usage(self, caller: str) -> dict[str, int]:
        counts: dict[str, str] = await self._call(
            lambda: self._redis.hgetall(self._usage_key(caller))
        )
        return {model: int(c) for model, c in sorted(counts.items()) if int(c)}

    async def callers(self) -> list[str]:
        members: set[str] = await self._call(lambda: self._redis.smembers(self._callers_key))
        return sorted(members)

    async def reset(self, caller: str) -> None:
        async def run() -> Any:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._usage_key(caller))
                pipe.srem(self._callers_key, caller)
                return await pipe.execute()

        await self._call(run)

    async def get_budget(self, caller: str) -> int | None:
        value = await self._call(lambda: self._redis.get(self._budget_key(caller)))
        return None if value is None else int(value)

    async def set_budget(self, caller: str, budget: int | None) -> None:
        key = self._budget_key(caller)
        if budget is None:
            await self._call(lambda: self._redis.delete(key))
        else:
            await self._call(lambda: self._redis.set(key, int(budget)))

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self._redis.ping))
        except CounterUnavailable:
            return False

    async def close(self) -> None:
        try:
            await self._redis.aclose()
        except (RedisError, OSError):
            log.debug("closing the redis pool failed", exc_info=True)
