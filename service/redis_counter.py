"""``RedisCounter``: the multi-process ``QueryCounter``, with Redis as the source of truth.

Three deployments, one class (``mode``): ``standalone`` (one ``redis://`` URL), ``sentinel``
(``redis.asyncio.sentinel``: the Sentinel addresses and the master's name; the client follows a
failover to the promoted replica) and ``cluster`` (``redis.asyncio.cluster.RedisCluster`` from
any node's URL). Keys (``prefix`` defaults to ``snd:``): every key of one caller carries the
caller as its hash tag, so a caller's keys live in one Redis Cluster slot and one script call
can touch them all:

* ``{prefix}{<caller>}:usage`` hash ``model -> images answered``;
* ``{prefix}{<caller>}:budget`` the budget set through the admin API (overrides the settings);
* ``{prefix}{<caller>}:charge:{token}`` the outcome of one ``charge``, kept a few seconds so that a
  retried script (after a timeout whose reply was lost) is not counted twice (``:refund:`` too).

The callers ever counted (``GET /usage``) are the usage keys, found by ``SCAN`` (every primary
of a cluster). ``service.detection.redis_store`` keeps its state in the callers' slots too.

``charge`` is one Lua script: read the budget, sum the caller's counts, add ``n`` only if the sum
stays within the budget. Charges that arrive together are coalesced: the first one of an event-loop
tick starts a flush, the others made in the same tick (or while that flush is in flight) join it,
and one script call applies them all in arrival order, each with its own budget check and token.
Under concurrent load this pays one Redis round trip for many requests; on a cluster the charges
of one flush are grouped by slot, one script call per slot, all in one pipeline. Every connection
or timeout error becomes ``CounterUnavailable`` (for every charge of the call); the clients
reconnect by themselves on the next call once Redis (or the new primary) is back, and a script
missing after a failover (``NOSCRIPT``) is loaded again and retried once by redis-py's
``Script``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError

from service.accounting import Charge, CounterUnavailable, drain
from service.metrics import ACCOUNTING_CHARGES_PER_CALL
from service.redis_scripts import CHARGE_LUA, MAX_CHARGES_PER_CALL, REFUND_LUA

log = logging.getLogger(__name__)

RedisMode = Literal["standalone", "sentinel", "cluster"]


def _no_script(result: Any) -> bool:
    """A pipelined EVALSHA that met a node without the script (as redis-py reports it)."""
    text = f"{type(result).__name__} {result}"
    return isinstance(result, Exception) and ("NOSCRIPT" in text or "NoScript" in text)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a Sentinel address is host:port, got {address!r}")
    return host, int(port)


@dataclass
class _PendingCharge:
    """One charge waiting for the next script call: its three keys, three arguments, its slot
    (cluster) and waiter."""

    keys: list[str]
    args: list[str | int]
    slot: int
    waiter: asyncio.Future[Charge]


class RedisCounter:
    """``QueryCounter`` on Redis (``redis.asyncio``), safe across processes and hosts.

    ``timeout`` bounds connecting and every operation, so an outage turns into a quick
    ``CounterUnavailable`` (and a 503) instead of a hanging request.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        mode: RedisMode = "standalone",
        sentinels: Sequence[str] = (),
        master_name: str = "mymaster",
        timeout: float = 0.5,
        prefix: str = "snd:",
        token_ttl_s: int = 30,
        master_check_s: float = 0.25,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 200,
    ) -> None:
        if wait_replicas and mode == "cluster":
            raise ValueError("wait_replicas is for standalone and Sentinel primaries")
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.prefix = prefix
        self.master_check_s = master_check_s
        self._master_name = master_name
        self._master: tuple[str, int] | None = None
        self._master_checked = -math.inf
        self.token_ttl_s = token_ttl_s
        self.mode = mode
        self._url, self._timeout = url, timeout
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
        }
        # one immediate retry on a fresh connection: pooled sockets die when Redis restarts or
        # fails over; the charge token makes a retried script count once
        retry = Retry(NoBackoff(), 1)
        self._redis: Any
        if mode == "standalone":
            if not url:
                raise ValueError("standalone Redis needs a redis:// URL")
            self._redis = redis.Redis.from_url(url, retry=retry, health_check_interval=0, **common)
        elif mode == "sentinel":
            if not sentinels:
                raise ValueError("Sentinel mode needs the Sentinel addresses (host:port)")
            self._sentinel = Sentinel(
                [_host_port(a) for a in sentinels],
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            self._redis = self._sentinel.master_for(master_name, retry=retry, **common)
        elif mode == "cluster":
            if not url:
                raise ValueError("cluster mode needs the URL of one of its nodes")
            self._redis = RedisCluster.from_url(url, **common)
        else:
            raise ValueError(f"unknown Redis mode {mode!r}")
        self._charge = self._redis.register_script(CHARGE_LUA)
        self._refund = self._redis.register_script(REFUND_LUA)
        self._up = True
        # charge tokens: a random prefix per counter and a sequence number (no syscall per
        # request, unlike uuid4)
        self._token_prefix = uuid.uuid4().hex
        self._token_seq = itertools.count()
        self._pending: list[_PendingCharge] = []
        self._flusher: asyncio.Task[None] | None = None
        self._cluster_ready = False
        self._cluster_lock: asyncio.Lock | None = None

    def key(self, caller: str, name: str) -> str:
        """A key of ``caller``'s, hash-tagged by the caller (one cluster slot per caller)."""
        return f"{self.prefix}{{{caller}}}:{name}"

    def _usage_key(self, caller: str) -> str:
        return self.key(caller, "usage")

    def _budget_key(self, caller: str) -> str:
        return self.key(caller, "budget")

    async def _initialized(self) -> None:
        """A cluster client learns the slot map once before any command: concurrent first
        commands would race its set-up."""
        if self.mode != "cluster" or self._cluster_ready:
            return
        if self._cluster_lock is None:
            self._cluster_lock = asyncio.Lock()
        async with self._cluster_lock:
            if not self._cluster_ready:
                await self._redis.initialize()
                await self._redis.script_load(CHARGE_LUA)  # on every primary
                self._cluster_ready = True

    async def _follow_master(self) -> None:
        """Sentinel mode: ask the Sentinels for the primary at most every ``master_check_s``
        and drop every connection when it moved. redis-py finds the primary only when it opens
        a connection, and after ``SENTINEL FAILOVER`` the old primary keeps accepting writes
        until the Sentinels demote it (seconds): without this check a gateway would go on
        charging the old primary, whose counts the resync then throws away."""
        if self.mode != "sentinel":
            return
        now = time.monotonic()
        if now - self._master_checked < self.master_check_s:
            return
        self._master_checked = now
        address = await self._sentinel.discover_master(self._master_name)
        if self._master is not None and tuple(address) != self._master:
            log.warning("the Sentinels moved the primary to %s:%s: reconnecting", *address)
            await self._redis.connection_pool.disconnect()
        self._master = (str(address[0]), int(address[1]))

    async def call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis operation; backend failures become ``CounterUnavailable``."""
        try:
            await self._initialized()
            await self._follow_master()
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
        usage = self._usage_key(caller)
        self._pending.append(
            _PendingCharge(
                keys=[usage, self._budget_key(caller), self.key(caller, f"charge:{token}")],
                args=[model, n, "" if default_budget is None else default_budget],
                slot=key_slot(usage.encode()) if self.mode == "cluster" else 0,
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
        await drain(self._pending, MAX_CHARGES_PER_CALL, self._apply_by_slot)

    async def _charge_and_wait(self, keys: list[str], args: list[str | int]) -> Any:
        """The charge script and ``WAIT`` on one connection (a pipeline): the answer comes only
        once ``wait_replicas`` replicas hold the charges, so a failover cannot lose a charge
        that was answered; fewer acknowledgements in ``wait_timeout_ms`` fail the call (503)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._charge(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            flat, acked = await pipe.execute()
        if int(acked) < self.wait_replicas:
            raise CounterUnavailable(
                f"the charges reached {acked} of {self.wait_replicas} replicas in "
                f"{self.wait_timeout_ms} ms"
            )
        return flat

    async def _apply_by_slot(self, batch: list[_PendingCharge]) -> None:
        """One script call for a single Redis; on a cluster one per slot (a script touches one
        slot), all in one pipeline (redis-py sends each node its calls together); a slot whose
        call fails fails its own charges only."""
        if self.mode != "cluster":
            self._settle(batch, await self.call(lambda: self._run_script(batch)))
            return
        by_slot: dict[int, list[_PendingCharge]] = {}
        for pending in batch:
            by_slot.setdefault(pending.slot, []).append(pending)
        groups = list(by_slot.values())
        results = await self.call(lambda: self._pipelined(groups))
        missing = [i for i, r in enumerate(results) if _no_script(r)]
        if missing:  # a promoted replica without the script: load it everywhere, retry once
            await self.call(lambda: self._redis.script_load(CHARGE_LUA))
            again = await self.call(lambda: self._pipelined([groups[i] for i in missing]))
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for group, result in zip(groups, results, strict=True):
            if isinstance(result, Exception):
                for pending in group:
                    if not pending.waiter.done():
                        pending.waiter.set_exception(CounterUnavailable(repr(result)))
            else:
                self._settle(group, result)

    @staticmethod
    def _script_call(batch: list[_PendingCharge], ttl: int) -> tuple[list[str], list[Any]]:
        keys = [key for pending in batch for key in pending.keys]
        args: list[Any] = [ttl]
        for pending in batch:
            args.extend(pending.args)
        ACCOUNTING_CHARGES_PER_CALL.observe(len(batch))
        return keys, args

    async def _run_script(self, batch: list[_PendingCharge]) -> Any:
        keys, args = self._script_call(batch, self.token_ttl_s)
        if self.wait_replicas:
            return await self._charge_and_wait(keys, args)
        return await self._charge(keys=keys, args=args)

    async def _pipelined(self, groups: list[list[_PendingCharge]]) -> list[Any]:
        """One EVALSHA per slot group in one cluster pipeline; errors come back as values."""
        pipe = self._redis.pipeline()
        for group in groups:
            keys, args = self._script_call(group, self.token_ttl_s)
            # redis-py blocks pipe.evalsha on a cluster; the raw command is routed by its keys
            pipe.execute_command("EVALSHA", self._charge.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    @staticmethod
    def _settle(batch: list[_PendingCharge], flat: Any) -> None:
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
            self.key(caller, f"refund:{self._token_prefix}:{next(self._token_seq)}"),
        ]
        args: list[str | int] = [model, n, self.token_ttl_s]
        await self.call(lambda: self._refund(keys=keys, args=args))

    async def usage(self, caller: str) -> dict[str, int]:
        counts: dict[str, str] = await self.call(
            lambda: self._redis.hgetall(self._usage_key(caller))
        )
        return {model: int(c) for model, c in sorted(counts.items()) if int(c)}

    async def callers(self) -> list[str]:
        return await self.scan_callers(":usage")

    async def scan_callers(self, suffix: str) -> list[str]:
        """Callers with a ``<caller>}<suffix>`` key: a ``SCAN`` (of every primary, on a cluster)."""
        head, tail = f"{self.prefix}{{", "}" + suffix

        async def scan() -> set[str]:
            found = set()
            async for key in self._redis.scan_iter(match=f"{head}*{tail}", count=1000):
                if key.startswith(head) and key.endswith(tail):
                    found.add(key[len(head) : -len(tail)])
            return found

        return sorted(await self.call(scan))

    def binary_client(self) -> Any:
        """A client of the same Redis (mode, Sentinel primary, timeouts) answering bytes."""
        common: dict[str, Any] = dict.fromkeys(
            ("socket_connect_timeout", "socket_timeout"), self._timeout
        )
        if self.mode == "sentinel":
            return self._sentinel.master_for(self._master_name, **common)
        if self.mode == "cluster":
            return RedisCluster.from_url(str(self._url), **common)
        return redis.Redis.from_url(str(self._url), retry=Retry(NoBackoff(), 1), **common)

    async def reset(self, caller: str) -> None:
        await self.call(lambda: self._redis.delete(self._usage_key(caller)))

    async def get_budget(self, caller: str) -> int | None:
        value = await self.call(lambda: self._redis.get(self._budget_key(caller)))
        return None if value is None else int(value)

    async def set_budget(self, caller: str, budget: int | None) -> None:
        key = self._budget_key(caller)
        if budget is None:
            await self.call(lambda: self._redis.delete(key))
        else:
            await self.call(lambda: self._redis.set(key, int(budget)))

    async def ping(self) -> bool:
        try:
            return bool(await self.call(self._redis.ping))
        except CounterUnavailable:
            return False

    async def close(self) -> None:
        try:
            await self._redis.aclose()
        except (RedisError, OSError):
            log.debug("closing the redis pool failed", exc_info=True)
