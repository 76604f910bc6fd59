"""``RedisConnections``: the one factory of Redis clients for accounting and detection, and
``RedisBackend``: the gateway's state in that Redis (clients, key scheme, calls), which the query
counter and the detection store share.

Three deployments (``mode``): ``standalone`` (one ``redis://`` URL), ``sentinel``
(``redis.asyncio.sentinel``: the Sentinel addresses and the master's name) and ``cluster``
(``redis.asyncio.cluster.RedisCluster`` from any node's URL). ``RedisCounter`` asks it for its
text client and ``RedisDetectionStore`` for a binary one (fingerprints and answers are bytes);
both follow a Sentinel failover through :meth:`RedisConnections.follow_master`, which drops the
connections of *every* client made here once the primary moved: a client left behind would go
on writing to the old primary until the Sentinels demote it, and the resync then throws those
writes away.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.accounting.base import CounterUnavailable

log = logging.getLogger(__name__)

RedisMode = Literal["standalone", "sentinel", "cluster"]


def no_script(result: Any) -> bool:
    """A pipelined EVALSHA that met a node without the script (as redis-py reports it)."""
    text = f"{type(result).__name__} {result}"
    return isinstance(result, Exception) and ("NOSCRIPT" in text or "NoScript" in text)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a Sentinel address is host:port, got {address!r}")
    return host, int(port)


class RedisConnections:
    """The clients of one Redis deployment, made alike (timeouts, retry) and moved together."""

    def __init__(
        self,
        url: str | None,
        *,
        mode: RedisMode,
        sentinels: Sequence[str],
        master_name: str,
        timeout: float,
        master_check_s: float,
    ) -> None:
        if mode not in ("standalone", "sentinel", "cluster"):
            raise ValueError(f"unknown Redis mode {mode!r}")
        if mode == "sentinel" and not sentinels:
            raise ValueError("Sentinel mode needs the Sentinel addresses (host:port)")
        if mode != "sentinel" and not url:
            raise ValueError(f"{mode} mode needs a redis:// URL (of any node of a cluster)")
        self.mode: RedisMode = mode
        self.master_check_s = master_check_s
        self._url, self._timeout, self._master_name = url, timeout, master_name
        self._master: tuple[str, int] | None = None
        self._master_checked = -math.inf
        self._clients: list[Any] = []
        if mode == "sentinel":
            self._sentinel = Sentinel(
                [host_port(a) for a in sentinels],
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )

    def client(self, *, decode: bool) -> Any:
        """A new client (its own pool): ``decode`` answers ``str``, else ``bytes``. It retries
        a failed call once on a fresh connection (pooled sockets die when Redis restarts or
        fails over), so every script sent through it must be idempotent (a request token)."""
        common: dict[str, Any] = {
            "decode_responses": decode,
            "socket_connect_timeout": self._timeout,
            "socket_timeout": self._timeout,
        }
        retry = Retry(NoBackoff(), 1)
        client: Any
        if self.mode == "standalone":
            client = redis.Redis.from_url(
                str(self._url), retry=retry, health_check_interval=0, **common
            )
        elif self.mode == "sentinel":
            client = self._sentinel.master_for(self._master_name, retry=retry, **common)
        else:
            client = RedisCluster.from_url(str(self._url), **common)
        self._clients.append(client)
        return client

    async def follow_master(self) -> None:
        """Sentinel mode: ask the Sentinels for the primary at most every ``master_check_s``
        and drop the connections of every client made here when it moved. redis-py finds the
        primary only when it opens a connection, and after ``SENTINEL FAILOVER`` the old
        primary keeps accepting writes until the Sentinels demote it (seconds)."""
        if self.mode != "sentinel":
            return
        now = time.monotonic()
        if now - self._master_checked < self.master_check_s:
            return
        self._master_checked = now
        address = await self._sentinel.discover_master(self._master_name)
        if self._master is not None and tuple(address) != self._master:
            log.warning("the Sentinels moved the primary to %s:%s: reconnecting", *address)
            for client in self._clients:
                await client.connection_pool.disconnect()
        self._master = (str(address[0]), int(address[1]))

    async def close(self, client: Any) -> None:
        """Close one client made here (its pool's connections) and stop following it."""
        self._clients = [c for c in self._clients if c is not client]
        try:
            await client.aclose()
        except (redis.RedisError, OSError):
            log.debug("closing a redis pool failed", exc_info=True)


class RedisBackend:
    """The gateway's state in one Redis deployment, shared by the query counter and the
    detection store: the clients (one :class:`RedisConnections`, a text client here), the key
    scheme (``prefix`` and a hash tag per caller: one cluster slot per caller), and
    :meth:`call`, which runs one operation and turns a backend failure into
    ``CounterUnavailable``. ``token_ttl_s``: how long a request token's outcome is kept."""

    def __init__(
        self, connections: RedisConnections, *, prefix: str = "snd:", token_ttl_s: int = 30
    ) -> None:
        self.connections = connections
        self.mode: RedisMode = connections.mode
        self.prefix = prefix
        self.token_ttl_s = token_ttl_s
        self.text: Any = connections.client(decode=True)
        self.cluster_scripts: list[str] = []  # loaded on every primary before the first call
        self._up = True
        self._cluster_ready = False
        self._cluster_lock: asyncio.Lock | None = None

    def key(self, caller: str, name: str) -> str:
        """A key of ``caller``'s, hash-tagged by the caller (one cluster slot per caller)."""
        return f"{self.prefix}{{{caller}}}:{name}"

    def detection_key(self, caller: str) -> str:
        """The caller's detection state hash (``RedisDetectionStore`` writes it; the charge
        script's gate reads ``state`` and ``until``)."""
        return self.key(caller, "det")

    def binary_client(self) -> Any:
        """A client of the same Redis answering bytes; it follows the primary with the others
        (:meth:`call`) and is closed with ``connections.close``."""
        return self.connections.client(decode=False)

    async def _initialized(self) -> None:
        """A cluster client learns the slot map once before any command: concurrent first
        commands would race its set-up."""
        if self.mode != "cluster" or self._cluster_ready:
            return
        if self._cluster_lock is None:
            self._cluster_lock = asyncio.Lock()
        async with self._cluster_lock:
            if not self._cluster_ready:
                await self.text.initialize()
                for script in self.cluster_scripts:
                    await self.text.script_load(script)  # on every primary
                self._cluster_ready = True

    async def call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Redis operation; backend failures become ``CounterUnavailable``. In Sentinel
        mode every client of ``connections`` first follows a moved primary (without it a
        gateway would go on charging the old primary, whose counts the resync throws away)."""
        try:
            await self._initialized()
            await self.connections.follow_master()
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

    async def scan_callers(self, suffix: str) -> list[str]:
        """Callers with a ``<caller>}<suffix>`` key: a ``SCAN`` (of every primary, on a cluster)."""
        head, tail = f"{self.prefix}{{", "}" + suffix

        async def scan() -> set[str]:
            found = set()
            async for key in self.text.scan_iter(match=f"{head}*{tail}", count=1000):
                if key.startswith(head) and key.endswith(tail):
                    found.add(key[len(head) : -len(tail)])
            return found

        return sorted(await self.call(scan))

    async def close(self) -> None:
        await self.connections.close(self.text)
