"""``RedisCounter``: the multi-process ``QueryCounter``, with Redis as the source of truth.

Three deployments, one class (``mode``): ``standalone``, ``sentinel`` (the client follows a
failover to the promoted replica) and ``cluster``. ``RedisBackend``
(``service.accounting.redis_connections``) makes the clients and the keys, the counter's and
detection's alike. Keys (``prefix`` defaults to ``snd:``): every key of one caller carries the
caller as its hash tag, so a caller's keys live in one Redis Cluster slot and one script call
can touch them all:

* ``{prefix}{<caller>}:usage`` hash ``model -> images answered``;
* ``{prefix}{<caller>}:budget`` the budget set through the admin API (overrides the settings);
* ``{prefix}{<caller>}:charge:{token}`` the outcome of one ``charge``, kept a few seconds so that a
  retried script (after a timeout whose reply was lost) is not counted twice (``:refund:`` too).

The callers ever counted (``GET /usage``) are the usage keys, found by ``SCAN`` (every primary
of a cluster). ``service.detection.redis_store`` keeps its state in the callers' slots too.

``charge`` is one Lua script: read the budget, sum the caller's counts, add ``n`` only if the
sum stays within the budget. With ``gate_at`` it first reads the caller's detection state
(``{prefix}{<caller>}:det``, same slot) and refuses a throttled or suspended caller, so the
detection gate costs no round trip of its own. Charges that arrive together are coalesced: the
first one of an event-loop tick starts a flush, the others made in the same tick (or while that
flush is in flight) join it, and one script call applies them all in arrival order, each with
its own budget check and token. Under concurrent load this pays one Redis round trip for many
requests; on a cluster the charges of one flush are grouped by slot, one script call per slot,
all in one pipeline. Every connection or timeout error becomes ``CounterUnavailable`` (for
every charge of the call); the clients reconnect by themselves on the next call once Redis (or
the new primary) is back, and a script missing after a failover (``NOSCRIPT``) is loaded again
and retried once by redis-py's ``Script``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.crc import key_slot

from service.accounting.base import Charge, CounterUnavailable
from service.accounting.coalescing import drain
from service.accounting.redis_connections import (
    RedisBackend,
    RedisConnections,
    RedisMode,
    no_script,
)
from service.accounting.redis_scripts import CHARGE_LUA, MAX_CHARGES_PER_CALL, REFUND_LUA
from service.metrics import ACCOUNTING_CHARGES_PER_CALL

log = logging.getLogger(__name__)
_GATED: dict[int, Literal["throttled", "suspended"]] = {2: "throttled", 3: "suspended"}


@dataclass
class _PendingCharge:
    """One charge waiting for the next script call: its four keys, four arguments, its slot
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
        self.mode = mode
        connections = RedisConnections(
            url,
            mode=mode,
            sentinels=sentinels,
            master_name=master_name,
            timeout=timeout,
            master_check_s=master_check_s,
        )
        self.backend = RedisBackend(connections, prefix=prefix, token_ttl_s=token_ttl_s)
        self.backend.cluster_scripts.append(CHARGE_LUA)
        # it retries a call once on a fresh connection: the charge token makes a retried
        # script count once
        self._redis: Any = self.backend.text
        self._charge = self._redis.register_script(CHARGE_LUA)
        self._refund = self._redis.register_script(REFUND_LUA)
        # charge tokens: a random prefix per counter and a sequence number (no syscall per
        # request, unlike uuid4)
        self._token_prefix = uuid.uuid4().hex
        self._token_seq = itertools.count()
        self._pending: list[_PendingCharge] = []
        self._flusher: asyncio.Task[None] | None = None

    gates_detection = True  # the detection store keeps its caller states in this Redis

    def _usage_key(self, caller: str) -> str:
        return self.backend.key(caller, "usage")

    def _budget_key(self, caller: str) -> str:
        return self.backend.key(caller, "budget")

    async def charge(
        self,
        caller: str,
        model: str,
        n: int,
        default_budget: int | None,
        gate_at: float | None = None,
    ) -> Charge:
        token = f"{self._token_prefix}:{next(self._token_seq)}"
        return await self.charge_with_token(caller, model, n, default_budget, token, gate_at)

    async def charge_with_token(
        self,
        caller: str,
        model: str,
        n: int,
        default_budget: int | None,
        token: str,
        gate_at: float | None = None,
    ) -> Charge:
        """``charge`` with an explicit idempotency token: the same token counts once."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Charge] = loop.create_future()
        usage = self._usage_key(caller)
        self._pending.append(
            _PendingCharge(
                keys=[
                    usage,
                    self._budget_key(caller),
                    self.backend.key(caller, f"charge:{token}"),
                    self.backend.detection_key(caller),
                ],
                args=[
                    model,
                    n,
                    "" if default_budget is None else default_budget,
                    "" if gate_at is None else repr(gate_at),
                ],
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
            self._settle(batch, await self.backend.call(lambda: self._run_script(batch)))
            return
        by_slot: dict[int, list[_PendingCharge]] = {}
        for pending in batch:
            by_slot.setdefault(pending.slot, []).append(pending)
        groups = list(by_slot.values())
        results = await self.backend.call(lambda: self._pipelined(groups))
        missing = [i for i, r in enumerate(results) if no_script(r)]
        if missing:  # a promoted replica without the script: load it everywhere, retry once
            await self.backend.call(lambda: self._redis.script_load(CHARGE_LUA))
            again = await self.backend.call(lambda: self._pipelined([groups[i] for i in missing]))
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
        keys, args = self._script_call(batch, self.backend.token_ttl_s)
        if self.wait_replicas:
            return await self._charge_and_wait(keys, args)
        return await self._charge(keys=keys, args=args)

    async def _pipelined(self, groups: list[list[_PendingCharge]]) -> list[Any]:
        """One EVALSHA per slot group in one cluster pipeline; errors come back as values."""
        pipe = self._redis.pipeline()
        for group in groups:
            keys, args = self._script_call(group, self.backend.token_ttl_s)
            # redis-py blocks pipe.evalsha on a cluster; the raw command is routed by its keys
            pipe.execute_command("EVALSHA", self._charge.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    @staticmethod
    def _settle(batch: list[_PendingCharge], flat: Any) -> None:
        if len(flat) != 4 * len(batch):
            raise CounterUnavailable(
                f"charge script answered {len(flat)} values for {len(batch)} charges"
            )
        for i, pending in enumerate(batch):
            outcome, used, budget, wait_ms = (int(v) for v in flat[4 * i : 4 * i + 4])
            if not pending.waiter.done():  # a waiter cancelled meanwhile is still counted
                pending.waiter.set_result(
                    Charge(
                        outcome == 1,
                        used,
                        None if budget < 0 else budget,
                        _GATED.get(outcome),
                        wait_ms / 1000,
                    )
                )

    async def refund(self, caller: str, model: str, n: int) -> None:
        keys = [
            self._usage_key(caller),
            self.backend.key(caller, f"refund:{self._token_prefix}:{next(self._token_seq)}"),
        ]
        args: list[str | int] = [model, n, self.backend.token_ttl_s]
        await self.backend.call(lambda: self._refund(keys=keys, args=args))

    async def usage(self, caller: str) -> dict[str, int]:
        counts: dict[str, str] = await self.backend.call(
            lambda: self._redis.hgetall(self._usage_key(caller))
        )
        return {model: int(c) for model, c in sorted(counts.items()) if int(c)}

    async def usages(self, callers: list[str]) -> list[tuple[dict[str, int], int | None]]:
        """One pipeline: each caller's usage hash and budget (a cluster pipeline sends each
        node its callers' reads together)."""

        async def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for caller in callers:
                pipe.hgetall(self._usage_key(caller))
                pipe.get(self._budget_key(caller))
            return list(await pipe.execute())

        replies = await self.backend.call(read) if callers else []
        return [
            (
                {model: int(c) for model, c in sorted(counts.items()) if int(c)},
                None if budget is None else int(budget),
            )
            for counts, budget in zip(replies[::2], replies[1::2], strict=True)
        ]

    async def callers(self) -> list[str]:
        return await self.backend.scan_callers(":usage")

    async def reset(self, caller: str) -> None:
        await self.backend.call(lambda: self._redis.delete(self._usage_key(caller)))

    async def get_budget(self, caller: str) -> int | None:
        value = await self.backend.call(lambda: self._redis.get(self._budget_key(caller)))
        return None if value is None else int(value)

    async def set_budget(self, caller: str, budget: int | None) -> None:
        key = self._budget_key(caller)
        if budget is None:
            await self.backend.call(lambda: self._redis.delete(key))
        else:
            await self.backend.call(lambda: self._redis.set(key, int(budget)))

    async def ping(self) -> bool:
        try:
            return bool(await self.backend.call(self._redis.ping))
        except CounterUnavailable:
            return False

    async def close(self) -> None:
        await self.backend.close()
