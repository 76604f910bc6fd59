"""Serving ratios (docs/performance.md), each measured in one run on one machine.

* SND on ÷ off ``/predict`` throughput, batch 1 and batch 100 (target >= 0.97);
* 32 concurrent single-image callers with dynamic batching ÷ the model's own batched
  throughput in-process (target >= 0.7), and batching on ÷ off at 32 callers;
* binary (npy) encode + decode + validation time ÷ model time for a batch of 100 (target <= 0.1);
* HSJA queries per second over HTTP ÷ on an in-process oracle (target >= 0.6).

    python -m benchmarks.bench_serving --write docs/performance.md

Servers run with one torch thread (``SND_TORCH_THREADS=1``) and so does the in-process side,
leaving the second core to the client.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attacks_client.attacks import get_attack  # noqa: E402
from attacks_client.oracles.base import FunctionOracle  # noqa: E402
from attacks_client.oracles.http import HttpOracle  # noqa: E402
from benchmarks.common import machine, median, npy_body, paired_rounds, write_section  # noqa: E402
from service.model_settings import ModelSettings
from service.offline.datasets import mnist_subset  # noqa: E402
from service.protocol.predict import decode_npy
from service.protocol.tensors import validate_images  # noqa: E402
from service.serving.local import LocalHost  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.servers import ServiceProcess  # noqa: E402

log = logging.getLogger("bench_serving")
HEADING = "## Serving"


def in_process_host(defense: str = "none") -> LocalHost:
    """The model as a server with default settings holds it (traced, chunked), one thread."""
    torch.set_num_threads(1)
    defaults = Settings()
    return LocalHost.load(
        ModelSettings(defense={"kind": defense, "sigma": 0.01}),
        torch.device("cpu"),
        False,
        graph=defaults.graph,
        chunk_images=defaults.forward_chunk_images,
    )


def model_throughput(host: LocalHost, batch: int, repeats: int) -> float:
    x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    host.forward(x)
    start = time.perf_counter()
    for _ in range(repeats):
        host.forward(x)
    return batch * repeats / (time.perf_counter() - start)


def snd_ratio(rounds: int) -> dict[str, float]:
    out = {}
    with (
        ServiceProcess({"defense": "none"}) as off,
        ServiceProcess({"defense": "snd", "sigma": 0.01}) as on,
    ):
        urls = {"off": off.url, "on": on.url}
        for batch, requests in ((1, 400), (100, 40)):
            rates = paired_rounds(
                urls,
                rounds,
                body=npy_body(batch),
                images_per_request=batch,
                requests=requests,
                concurrency=1,
            )
            # each round's pair ran back to back: the median of their ratios cancels the drift
            # of background load that moves both servers alike
            out[f"batch {batch}"] = median(
                [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
            )
            log.info("SND batch %d: %s", batch, rates)
    return out


def batching_ratios(rounds: int) -> dict[str, float]:
    own = model_throughput(in_process_host(), 256, 20)
    with (
        ServiceProcess({"defense": "snd", "sigma": 0.01, "batching": True}) as on,
        ServiceProcess({"defense": "snd", "sigma": 0.01, "batching": False}) as off,
    ):
        rates = paired_rounds(
            {"on": on.url, "off": off.url},
            rounds,
            body=npy_body(1),
            images_per_request=1,
            requests=1600,
            concurrency=32,
        )
    log.info("batching: own %.0f img/s, %s", own, rates)
    return {
        "own": own,
        "served": median(rates["on"]),
        "unbatched": median(rates["off"]),
        "served/own": median(rates["on"]) / own,
        "on/off": median(rates["on"]) / median(rates["off"]),
    }


def transport_ratio(repeats: int = 50) -> dict[str, float]:
    host = in_process_host("snd")
    x = np.random.default_rng(0).random((100, 1, 28, 28), dtype=np.float32)
    start = time.perf_counter()
    for _ in range(repeats):
        buf = io.BytesIO()
        np.save(buf, x)
        validate_images(decode_npy(buf.getvalue()), (1, 28, 28), 256)
    codec = (time.perf_counter() - start) / repeats
    host.forward(x)
    start = time.perf_counter()
    for _ in range(repeats):
        host.forward(x)
    model = (time.perf_counter() - start) / repeats
    return {"codec_ms": codec * 1e3, "model_ms": model * 1e3, "ratio": codec / model}


def hsja_ratio(images: int, budget: int) -> dict[str, float]:
    test = mnist_subset("test")
    host = in_process_host()
    correct = host.forward(test.images[:50]).argmax(1) == test.labels[:50]
    test = type(test)(test.images[:50][correct], test.labels[:50][correct])
    attack = get_attack("hsja")()

    def rate(oracle_factory) -> float:  # type: ignore[no-untyped-def]
        queries, seconds = 0, 0.0
        for i in range(images):
            oracle = oracle_factory()
            start = time.perf_counter()
            result = attack(oracle, test.images[i], int(test.labels[i]), budget, seed=i)
            seconds += time.perf_counter() - start
            queries += result.queries
        return queries / seconds

    local = rate(lambda: FunctionOracle(host.forward, (1, 28, 28), 10, scores=False))
    with ServiceProcess({"defense": "none"}) as server:
        remote = rate(lambda: HttpOracle(server.url))
    return {"local_qps": local, "http_qps": remote, "ratio": remote / local}


def section(results: dict[str, dict[str, float]], command: str) -> str:
    snd, batching = results["snd"], results["batching"]
    transport, hsja = results["transport"], results["hsja"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = [
        ("SND on ÷ off, batch 1", snd["batch 1"], "≥ 0.97", verdict(snd["batch 1"] >= 0.97)),
        ("SND on ÷ off, batch 100", snd["batch 100"], "≥ 0.97", verdict(snd["batch 100"] >= 0.97)),
        (
            "32 callers served ÷ model's own batched throughput",
            batching["served/own"],
            "≥ 0.7",
            verdict(batching["served/own"] >= 0.7),
        ),
        (
            "32 callers, batching on ÷ off",
            batching["on/off"],
            "> 1",
            verdict(batching["on/off"] > 1),
        ),
        (
            "npy encode + decode ÷ model time, batch 100",
            transport["ratio"],
            "≤ 0.1",
            verdict(transport["ratio"] <= 0.1),
        ),
        (
            "HSJA queries/s over HTTP ÷ in-process",
            hsja["ratio"],
            "≥ 0.6",
            verdict(hsja["ratio"] >= 0.6),
        ),
    ]
    lines = [
        HEADING,
        "",
        f"`{command}` on {machine()}; one run, servers with one torch thread "
        "and default settings (traced graph, chunks of 32, no batching wait). SND on ÷ off "
        "is the median of per-round ratios (the two servers alternate round by round).",
        "",
        "| ratio | measured | target | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {value:.3f} | {target} | {ok} |" for name, value, target, ok in rows]
    lines += [
        "",
        f"Absolute figures of this run: model alone {batching['own']:.0f} images/s "
        f"(batch 256); served to 32 callers {batching['served']:.0f} images/s with batching, "
        f"{batching['unbatched']:.0f} without; npy codec {transport['codec_ms']:.2f} ms vs "
        f"model {transport['model_ms']:.1f} ms per 100 images; HSJA {hsja['http_qps']:.0f} "
        f"queries/s over HTTP vs {hsja['local_qps']:.0f} in-process.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_serving")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hsja-images", type=int, default=3)
    parser.add_argument("--hsja-budget", type=int, default=2000)
    parser.add_argument("--write", type=Path, help="update this Markdown file's section")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    results = {
        "snd": snd_ratio(args.rounds),
        "batching": batching_ratios(args.rounds),
        "transport": transport_ratio(),
        "hsja": hsja_ratio(args.hsja_images, args.hsja_budget),
    }
    command = "python -m benchmarks.bench_serving" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    text = section(results, command)
    print(text)
    if args.write:
        write_section(args.write, HEADING, text)


if __name__ == "__main__":
    main()
