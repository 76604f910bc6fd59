"""Benign streams and memory for ``benchmarks.detection_eval``: false positives of the detector
on ordinary callers, and Redis bytes per query.

The streams run in-process through the service's ``QueryDetector`` with the in-memory store
(whose verdicts the tests check against the Redis store's), one caller per stream, in batches of
32; ``redis_bytes_per_query`` uses the Redis store on a real ``redis-server``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from typing import Any

import numpy as np
from rich.progress import track

from service.detection.detector import QueryDetector
from service.detection.store import MemoryDetectionStore
from service.model_settings import DetectionSettings, ModelSettings
from service.offline.datasets import mnist_subset
from service.settings import Settings

SECRET = b"measurement-secret"


class Overlap:
    """Each query's largest near-duplicate overlap with any earlier query (uncapped; the plot)."""

    def __init__(self) -> None:
        self.index: dict[bytes, list[int]] = defaultdict(list)
        self.best: list[int] = []

    def add(self, keys: list[bytes]) -> None:
        counts: dict[int, int] = defaultdict(int)
        for key in keys:
            for qid in self.index[key]:
                counts[qid] += 1
        self.best.append(max(counts.values(), default=0))
        for key in keys:
            self.index[key].append(len(self.best))


def make_detector(action: str, settings: Settings) -> QueryDetector:
    model = ModelSettings(detection=DetectionSettings(action=action))  # type: ignore[arg-type]
    return QueryDetector.build(model, settings, SECRET, MemoryDetectionStore())


def augment(images: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "shift":
        return np.stack(
            [np.roll(x, tuple(rng.choice([-2, -1, 1, 2], 2)), axis=(1, 2)) for x in images]
        )
    if kind == "brightness":
        return np.clip(images * rng.uniform(0.8, 1.2, (len(images), 1, 1, 1)), 0, 1).astype(
            np.float32
        )
    return (np.round(images * 255) / 255).astype(np.float32)  # 8-bit re-quantization


def benign_stream(images: np.ndarray, action: str = "shadow", batch: int = 32) -> dict[str, Any]:
    """One caller sending ``images`` in order; flags (shadow) and max overlaps."""
    detector = make_detector(action, Settings())
    near = detector.layers[1]
    overlap = Overlap()
    flagged = 0
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        for keys in near.keys(x):
            overlap.add(keys)
        probs = np.full((len(x), 10), 0.1, np.float32)
        outcome = asyncio.run(
            detector.store.observe(
                "benign",
                detector.model,
                detector.observations(x, probs),
                detector.policy,
                time.time(),
            )
        )
        flagged += sum(v.layer is not None for v in outcome.verdicts)
    return {"queries": len(images), "flagged": flagged, "overlap": overlap.best}


def benign_part(args: argparse.Namespace) -> dict[str, Any]:
    test = mnist_subset("test").images
    everything = np.concatenate(
        [mnist_subset(s).images for s in ("test", "attacker-proxy", "victim-train")]
    )
    rng = np.random.default_rng(args.seed)
    streams: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _ in track(range(args.streams), description="benign streams"):
        order = rng.permutation(len(test))
        streams["distinct 1k"].append(benign_stream(test[order]))
        for kind in ("shift", "brightness", "requantize"):
            streams[f"distinct 1k, {kind}"].append(benign_stream(augment(test[order], kind, rng)))
        retried = np.repeat(test[order], np.where(rng.random(len(test)) < 0.1, 2, 1), axis=0)
        streams["1k with 10% exact retries"].append(benign_stream(retried))
        pairs = np.stack([test[order[:500]], augment(test[order[:500]], "requantize", rng)], 1)
        streams["500 images + re-quantized copy"].append(
            benign_stream(pairs.reshape(-1, 1, 28, 28))
        )
    streams["distinct 5k (all embedded)"].append(
        benign_stream(everything[rng.permutation(len(everything))])
    )
    return streams


def redis_bytes_per_query(args: argparse.Namespace) -> dict[str, float]:
    """``MEMORY USAGE`` summed over the detection keys after 1,000 distinct queries."""
    import shutil
    import socket
    import subprocess
    import tempfile

    from service.accounting.redis_counter import RedisCounter
    from service.detection.redis_store import RedisDetectionStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    out = {}
    try:
        images = mnist_subset("test").images
        for action in ("shadow", "enforce"):

            async def measure(action: str) -> float:
                counter = RedisCounter(f"redis://127.0.0.1:{port}/0", prefix=f"{action}:")
                detector = make_detector(action, Settings())
                detector.store = RedisDetectionStore(counter.backend)
                client = detector.store._redis  # type: ignore[attr-defined]
                for start in range(0, len(images), 32):
                    x = images[start : start + 32]
                    await detector.store.observe(
                        "bytes",
                        detector.model,
                        detector.observations(x, np.full((len(x), 10), 0.1, np.float32)),
                        detector.policy,
                        time.time(),
                    )
                total = 0
                async for key in client.scan_iter(match=f"{action}:*"):
                    total += await client.memory_usage(key, samples=0)
                await counter.close()
                return total / len(images)

            out[action] = asyncio.run(measure(action))
    finally:
        proc.terminate()
    return out
