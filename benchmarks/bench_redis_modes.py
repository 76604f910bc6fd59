"""Accounting on Redis Sentinel and Redis Cluster ÷ one standalone Redis, and what a failover
costs (``docs/performance.md``, section "Redis Sentinel and Cluster").

* Charges per second of ``RedisCounter`` with 8 and 32 concurrent chargers (distinct callers, so
  a cluster spreads them over its slots), each mode ÷ standalone, in one run on one machine;
  Sentinel also with ``wait_replicas=1`` (answered only once a replica holds the charge).
* Failovers under 16 concurrent chargers: seconds of refused charges (what a gateway answers
  503) and charges lost (answered but not in Redis afterwards), for ``SENTINEL FAILOVER``
  (with ``wait_replicas`` 0 and 1), ``CLUSTER FAILOVER`` and a SIGKILL of a cluster primary.

    python -m benchmarks.bench_redis_modes --write docs/performance.md

Real redis-server processes on loopback ports, as in the tests (tests/redis_topologies.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, write_section  # noqa: E402
from service.accounting.redis_counter import RedisCounter  # noqa: E402
from tests.redis_topologies import (  # noqa: E402
    RedisClusterProcesses,
    RedisSentinelProcesses,
    cli,
)
from tests.servers import RedisProcess  # noqa: E402

HEADING = "## Redis Sentinel and Cluster"


async def rate(make: Callable[[], RedisCounter], concurrency: int, seconds: float) -> float:
    counter = make()
    done = 0
    deadline = time.monotonic() + seconds

    async def charger(i: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await counter.charge(f"key:c{i}", "m", 1, None)
            done += 1

    await counter.charge("key:warm", "m", 1, None)
    start = time.monotonic()
    await asyncio.gather(*(charger(i) for i in range(concurrency)))
    elapsed = time.monotonic() - start
    await counter.close()
    return done / elapsed


async def failover(
    make: Callable[[], RedisCounter],
    action: Callable[[], object],
    caller: str,
    seconds: float = 8.0,
    at: float = 2.0,
) -> dict[str, float]:
    """Charges for one caller under 16 chargers, ``action`` ``at`` seconds in: seconds from the
    action to the last refused charge, refused and lost charges."""
    counter = make()
    answered = refused = 0
    last_refusal = acted = 0.0
    deadline = time.monotonic() + seconds
    timer = threading.Timer(at, action)

    async def charger() -> None:
        nonlocal answered, refused, last_refusal
        while time.monotonic() < deadline:
            try:
                await counter.charge(caller, "m", 1, None)
                answered += 1
            except Exception:
                refused += 1
                last_refusal = time.monotonic()
                await asyncio.sleep(0.05)

    start = time.monotonic()
    timer.start()
    await asyncio.gather(*(charger() for _ in range(16)))
    acted = start + at
    await asyncio.sleep(1.0)
    fresh = make()
    counted = sum((await fresh.usage(caller)).values())
    await fresh.close()
    await counter.close()
    return {
        "outage_s": max(0.0, last_refusal - acted) if refused else 0.0,
        "refused": refused,
        "answered": answered,
        "lost": answered - counted,
    }


def wait_for_replica(sentinel: RedisSentinelProcesses, timeout: float = 60) -> None:
    """Until the primary has a replica in sync again (the old primary, demoted and resynced)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = cli(sentinel.master_port(), "info", "replication")
        if "connected_slaves:1" in info and "state=online" in info:
            return
        time.sleep(0.5)
    raise TimeoutError("no replica came back after the failover")


def measure(seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {"rates": {}, "failovers": {}}
    with (
        RedisProcess() as single,
        RedisSentinelProcesses() as sentinel,
        RedisClusterProcesses() as cluster,
    ):
        makers: dict[str, Callable[[], RedisCounter]] = {
            "standalone": lambda: RedisCounter(single.url, prefix="b:", timeout=5),
            "sentinel": lambda: RedisCounter(
                None, mode="sentinel", prefix="b:", timeout=5, sentinels=sentinel.addresses
            ),
            "sentinel, wait 1": lambda: RedisCounter(
                None,
                mode="sentinel",
                prefix="b:",
                timeout=5,
                sentinels=sentinel.addresses,
                wait_replicas=1,
            ),
            "cluster": lambda: RedisCounter(cluster.url, mode="cluster", prefix="b:", timeout=5),
        }
        for concurrency in (8, 32):
            results["rates"][concurrency] = {
                name: asyncio.run(rate(make, concurrency, seconds)) for name, make in makers.items()
            }
        results["failovers"]["SENTINEL FAILOVER"] = asyncio.run(
            failover(makers["sentinel"], sentinel.failover, "key:v1")
        )
        wait_for_replica(sentinel)
        results["failovers"]["SENTINEL FAILOVER, wait 1"] = asyncio.run(
            failover(makers["sentinel, wait 1"], sentinel.failover, "key:v2")
        )
        primary = cluster.primary_of("b:{key:v3}:usage")
        replica = cluster.replica_of(primary)
        results["failovers"]["CLUSTER FAILOVER"] = asyncio.run(
            failover(makers["cluster"], lambda: cli(replica.port, "cluster", "failover"), "key:v3")
        )
        primary = cluster.primary_of("b:{key:v4}:usage")
        others = [n for n in cluster.nodes if n is not primary]
        survivor = f"redis://127.0.0.1:{others[0].port}/0"
        assert primary.proc is not None
        pid = primary.proc.pid
        results["failovers"]["SIGKILL of the cluster primary"] = asyncio.run(
            failover(
                lambda: RedisCounter(survivor, mode="cluster", prefix="b:", timeout=1),
                lambda: os.kill(pid, signal.SIGKILL),
                "key:v4",
                seconds=12.0,
            )
        )
    return results


def section(results: dict[str, Any], command: str) -> str:
    lines = [
        HEADING,
        "",
        f"`{command}` on {machine()}; one run. Charges per second of "
        "`RedisCounter` in-process (coalesced script calls), distinct callers per "
        "charger; each mode ÷ standalone (target ≥ 0.9).",
        "",
        "| chargers | mode | charges/s | ÷ standalone |",
        "|---|---|---|---|",
    ]
    for concurrency, rates in results["rates"].items():
        base = rates["standalone"]
        for name, value in rates.items():
            lines.append(f"| {concurrency} | {name} | {value:.0f} | {value / base:.2f} |")
    lines += [
        "",
        "Failovers under 16 chargers of one caller (its slot's primary for the "
        "cluster): seconds from the failover to the last refused charge (what the "
        "gateway answers 503), refused charges, and charges answered but missing from "
        "Redis afterwards.",
        "",
        "| failover | 503 window (s) | refused | answered | lost |",
        "|---|---|---|---|---|",
    ]
    for name, f in results["failovers"].items():
        lines.append(
            f"| {name} | {f['outage_s']:.2f} | {f['refused']} | {f['answered']} | {f['lost']} |"
        )
    lines += [
        "",
        "Reading: a cluster's throughput here is the worst case, every charger a "
        "different caller and so a different slot: a script touches one slot, so one "
        "flush of 32 charges is up to 32 script calls (standalone and Sentinel: one); "
        "charges of one caller coalesce as on a single Redis. The per-slot calls go out "
        "in one pipeline (each node gets its calls together). Sentinel's failover is "
        "not coordinated, so the old primary keeps "
        "taking writes until the client sees the new one: the counter asks the "
        "Sentinels every 0.25 s and drops its connections when the primary moved, and "
        "what the old primary took meanwhile is lost. `SND_REDIS_WAIT_REPLICAS=1` "
        "answers a charge only once a replica holds it (`WAIT`), so no answered charge "
        "is lost, for a throughput cost shown above. `CLUSTER FAILOVER` is "
        "coordinated. After a SIGKILL, replication is asynchronous: what the primary "
        "acknowledged and had not yet sent is lost (bounded by the charges in flight).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_redis_modes")
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput round")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args(argv)
    results = measure(args.seconds)
    command = "python -m benchmarks.bench_redis_modes" + (
        f" --write {args.write}" if args.write else ""
    )
    text = section(results, command)
    print(text)
    if args.write:
        write_section(args.write, HEADING, text)


if __name__ == "__main__":
    main()
