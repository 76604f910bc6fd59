"""Shared pieces of the ratio benchmarks: load rounds against a server, docs sections."""

from __future__ import annotations

import asyncio
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np


def npy_body(batch: int, shape: tuple[int, ...] = (1, 28, 28), seed: int = 0) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).random((batch, *shape), dtype=np.float32))
    return buf.getvalue()


async def _http_worker(port: int, request: bytes, requests: list[int]) -> None:
    """One keep-alive connection sending ``request`` until the shared count runs out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while requests[0] > 0:
            requests[0] -= 1
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if head[9:12] != b"200":
                raise RuntimeError(f"request failed: {head[:200]!r}")
            lines = head.lower().split(b"\r\n")
            length = next(int(line[15:]) for line in lines if line.startswith(b"content-length:"))
            await reader.readexactly(length)
    finally:
        writer.close()


async def images_per_second(
    url: str,
    body: bytes,
    images_per_request: int,
    requests: int,
    concurrency: int,
    output: str = "label",
) -> float:
    """Images per second answered for ``requests`` identical npy requests at ``concurrency``.

    The load comes from raw HTTP/1.1 keep-alive connections (about 60 µs of client CPU per
    request, against 1 ms and more for an HTTP library), so on a 2-core machine the server and
    not the load generator is what gets measured."""
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    request = (
        f"POST /predict?output={output} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/x-npy\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    await _http_worker(port, request, [3])  # warm-up
    remaining = [requests]
    start = time.perf_counter()
    await asyncio.gather(*(_http_worker(port, request, remaining) for _ in range(concurrency)))
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

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace (or append) the section under ``heading``; other sections stay as they are."""
    old = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.M | re.S)
    new = (
        pattern.sub(lambda _: text.rstrip("\n") + "\n\n", old)
        if pattern.search(old)
        else (old.rstrip("\n") + "\n\n" + text)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new.rstrip("\n") + "\n")
