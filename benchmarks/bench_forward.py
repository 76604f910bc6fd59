"""Forward throughput of the embedded model in-process: eager ÷ traced, by batch size and
thread count, and what chunking a large batch buys (``docs/performance.md``, serving tuning).

    python -m benchmarks.bench_forward
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.config import ModelSettings  # noqa: E402
from service.inference import ModelHost  # noqa: E402

BATCHES = (1, 8, 16, 32, 64, 128, 256)


def images_per_second(host: ModelHost, batch: int, images: int = 800) -> float:
    x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    host.forward(x)
    repeats = max(4, images // batch)
    start = time.perf_counter()
    for _ in range(repeats):
        host.forward(x)
    return batch * repeats / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_forward")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    cpu = torch.device("cpu")
    settings = ModelSettings(defense={"kind": "none"})  # type: ignore[arg-type]
    hosts = {
        "eager": ModelHost.load(settings, cpu, False),
        "traced": ModelHost.load(settings, cpu, False, graph="trace"),
        "traced, chunks of 32": ModelHost.load(settings, cpu, False, graph="trace",
                                               chunk_images=32),
    }
    print("| threads | batch | " + " | ".join(hosts) + " | traced ÷ eager |")
    print("|---|---|" + "---|" * (len(hosts) + 1))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in BATCHES:
            rates = {name: images_per_second(host, batch) for name, host in hosts.items()}
            cells = " | ".join(f"{rate:.0f}" for rate in rates.values())
            print(f"| {threads} | {batch} | {cells} | {rates['traced'] / rates['eager']:.2f} |")


if __name__ == "__main__":
    main()
