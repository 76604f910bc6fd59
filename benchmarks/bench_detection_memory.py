"""The memory of ``MemoryDetectionStore`` per caller, and what its cap and sweep leave of it.

    python -m benchmarks.bench_detection_memory [--callers 100000]

Each distinct caller (an ``addr:`` caller: every new IP is one) sends one one-image request
under enforce: a 16-byte exact digest, Blacklight's 50 near-duplicate keys (8 bytes each) and a
10-class float32 answer, as ``QueryDetector`` stores them. Memory is the Python heap that
``tracemalloc`` traces, after minus before (tracing makes it slow: minutes for 100,000). Three
figures: a store whose cap is above the callers; the same store once its callers' retention
passed and one caller kept repeating one image (the sweep drains the others); a store capped at
a tenth of the callers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.detection.store import MemoryDetectionStore, Observation, Policy  # noqa: E402

log = logging.getLogger("bench_detection_memory")
POLICY = Policy(store_answers=True, escalate=True, retention_s=3600.0, flag_window_s=3600.0)


def observation(i: int) -> Observation:
    """Caller ``i``'s one image: fingerprints unique to it (nothing shared between callers)."""
    tag = i.to_bytes(4, "little")
    near = [tag + bytes([k]) * 4 for k in range(50)]
    return Observation(tag * 4, near, bytes(40))


async def fill(store: MemoryDetectionStore, callers: int, now: float) -> None:
    for i in range(callers):
        await store.observe(
            f"addr:10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", "m", [observation(i)], POLICY, now
        )


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def measure(callers: int) -> dict[str, float]:
    """MiB held by each store, and bytes per caller of the unbounded one."""
    out: dict[str, float] = {}
    tracemalloc.start()
    base = traced()
    unbounded = MemoryDetectionStore(max_callers=callers + 1)
    asyncio.run(fill(unbounded, callers, 0.0))
    held = traced() - base
    out["unbounded_mib"] = held / 2**20
    out["bytes_per_caller"] = held / callers

    later = POLICY.retention_s + POLICY.bucket_s + 1.0  # every caller's state has expired

    async def one_caller_keeps_querying(store: MemoryDetectionStore) -> None:
        for _ in range(callers):  # one sweep of sweep_slice callers per sweep_every calls
            await store.observe("addr:192.0.2.1", "m", [observation(0)], POLICY, later)

    asyncio.run(one_caller_keeps_querying(unbounded))
    out["swept_callers_left"] = len(asyncio.run(unbounded.callers()))
    out["swept_mib"] = (traced() - base) / 2**20
    del unbounded

    base = traced()
    capped = MemoryDetectionStore(max_callers=max(1, callers // 10))
    asyncio.run(fill(capped, callers, 0.0))
    out["capped_callers"] = len(asyncio.run(capped.callers()))
    out["capped_mib"] = (traced() - base) / 2**20
    tracemalloc.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=100_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    r = measure(args.callers)
    log.info(
        "%d distinct callers, one image each (enforce, 50 near keys, 40-byte answer):\n"
        "  unbounded: %.1f MiB, %.0f bytes per caller\n"
        "  after retention, %d calls of one caller: %d callers left, %.1f MiB\n"
        "  max_callers=%d: %d callers kept, %.1f MiB",
        args.callers,
        r["unbounded_mib"],
        r["bytes_per_caller"],
        args.callers,
        r["swept_callers_left"],
        r["swept_mib"],
        max(1, args.callers // 10),
        r["capped_callers"],
        r["capped_mib"],
    )


if __name__ == "__main__":
    main()
