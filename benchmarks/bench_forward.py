"""Forward throughput of the embedded model in-process: eager ÷ traced, by batch size and
thread count, and what chunking a large batch buys; then how much of its throughput a forward
keeps while another thread runs pure Python (the event loop's situation in the server), eager
and traced (``docs/performance.md``, serving tuning).

    python -m benchmarks.bench_forward
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.model_settings import ModelSettings  # noqa: E402
from service.serving.local import LocalHost  # noqa: E402

BATCHES = (1, 8, 16, 32, 64, 128, 256)


def images_per_second(host: LocalHost, batch: int, images: int = 800) -> float:
    x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    for _ in range(5):  # a traced graph re-profiles for a new shape or thread count
        host.forward(x)
    repeats = max(4, images // batch)
    start = time.perf_counter()
    for _ in range(repeats):
        host.forward(x)
    return batch * repeats / (time.perf_counter() - start)


def overlap(host: LocalHost, seconds: float = 1.0) -> float:
    """Forward passes (batch 32, one thread) per second while another thread runs pure Python,
    ÷ passes per second alone. Near 1: the forward runs beside Python; near 0: it stalls."""
    torch.set_num_threads(1)
    x = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
    passes = 0
    stop = threading.Event()

    def forwards() -> None:
        nonlocal passes
        while not stop.is_set():
            host.forward(x)
            passes += 1

    worker = threading.Thread(target=forwards)
    worker.start()
    time.sleep(0.2)
    start, before = time.perf_counter(), passes
    time.sleep(seconds)
    alone = (passes - before) / (time.perf_counter() - start)
    start, before = time.perf_counter(), passes
    total = 0
    while time.perf_counter() - start < seconds:  # pure Python: holds the GIL between checks
        total += sum(i * i for i in range(1000))
    beside = (passes - before) / (time.perf_counter() - start)
    stop.set()
    worker.join()
    return beside / alone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_forward")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    cpu = torch.device("cpu")
    settings = ModelSettings(defense={"kind": "none"})  # type: ignore[arg-type]
    hosts = {
        "eager": LocalHost.load(settings, cpu, False),
        "traced": LocalHost.load(settings, cpu, False, graph="trace"),
        "traced, chunks of 32": LocalHost.load(
            settings, cpu, False, graph="trace", chunk_images=32
        ),
    }
    print("| threads | batch | " + " | ".join(hosts) + " | traced ÷ eager |")
    print("|---|---|" + "---|" * (len(hosts) + 1))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in BATCHES:
            rates = {name: images_per_second(host, batch) for name, host in hosts.items()}
            cells = " | ".join(f"{rate:.0f}" for rate in rates.values())
            print(f"| {threads} | {batch} | {cells} | {rates['traced'] / rates['eager']:.2f} |")
    print()
    print("| forward | passes beside a Python thread ÷ alone |")
    print("|---|---|")
    for name in ("eager", "traced"):
        print(f"| {name} | {overlap(hosts[name]):.2f} |")


if __name__ == "__main__":
    main()
