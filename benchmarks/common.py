"""Shared pieces of the ratio benchmarks: load rounds against a server, docs sections."""

from __future__ import annotations

import asyncio
import platform
import re
import statistics
import time
from pathlib import Path

import httpx
import numpy as np


def npy_body(batch: int, shape: tuple[int, ...] = (1, 28, 28), seed: int = 0) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).random((batch, *shape), dtype=np.float32))
    return buf.getvalue()


async def images_per_second(url: str, body: bytes, images_per_request: int, requests: int,
                            concurrency: int, output: str = "label") -> float:
    """Images per second answered for ``requests`` identical npy requests at ``concurrency``."""
    remaining = requests
    headers = {"Content-Type": "application/x-npy"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await client.post("/predict", params={"output": output}, content=body,
                                         headers=headers)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        for _ in range(3):  # warm-up
            (await client.post("/predict", params={"output": output}, content=body,
                               headers=headers)).raise_for_status()
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return requests * images_per_request / (time.perf_counter() - start)


def paired_rounds(urls: dict[str, str], rounds: int, **kwargs: object) -> dict[str, list[float]]:
    """Alternate the servers round by round so drifting background load hits both alike."""
    rates: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            rates[name].append(asyncio.run(images_per_second(url, **kwargs)))  # type: ignore[arg-type]
    return rates


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def machine() -> str:
    import os

    import torch

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace (or append) the section under ``heading``; other sections stay as they are."""
    old = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.M | re.S)
    new = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", old) if pattern.search(old) else (
        old.rstrip("\n") + "\n\n" + text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new.rstrip("\n") + "\n")
