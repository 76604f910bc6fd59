"""What only a GPU can tell: the service's figures on CUDA, written to docs/performance-gpu.md.

* SND on ÷ off forward throughput of the embedded model on the device (fp32, fp16, bf16);
* ResNet-50 (random weights, or a local state dict with ``--resnet50-weights``) images/s at batch
  1, 32 and 256 behind SND σ = 0.01, per precision;
* fp16 ÷ fp32 (and bf16 ÷ fp32) top-1 agreement on the embedded model's 1,000 test images;
* 32 concurrent single-image callers over HTTP ÷ the model's own batched rate (server on CUDA);
* HSJA queries per second over HTTP against the server on CUDA.

    python -m benchmarks.bench_gpu --write docs/performance-gpu.md

``scripts/gpu-check.sh`` runs it after the CUDA tests. Without a CUDA device it says so and exits
0. Ratios come from one run on one machine; absolute rates are that machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import images_per_second, npy_body  # noqa: E402

log = logging.getLogger("bench_gpu")
PRECISIONS = ("fp32", "fp16", "bf16")
RESNET50_BATCHES = (1, 32, 256)


def device_facts() -> dict[str, str]:
    """Device name, driver, CUDA and torch versions."""
    props = torch.cuda.get_device_properties(0)
    try:
        driver = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            .stdout.strip()
            .splitlines()[0]
        )
    except (OSError, subprocess.SubprocessError, IndexError):
        driver = "unknown (no nvidia-smi)"
    return {
        "device": f"{props.name} ({props.total_memory / 2**30:.0f} GiB)",
        "driver": driver,
        "cuda": str(torch.version.cuda),
        "torch": torch.__version__,
    }


def rate(forward: Any, x: np.ndarray, seconds: float = 2.0) -> float:
    """Images per second of ``forward(x)`` (synchronized), after a warm-up."""
    for _ in range(3):
        forward(x)
    torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        forward(x)
        n += 1
    torch.cuda.synchronize()
    return n * len(x) / (time.perf_counter() - start)


def embedded_host(precision: str, defense: dict[str, Any]) -> Any:
    from service.model_settings import ModelSettings
    from service.serving.local import LocalHost

    return LocalHost.load(
        ModelSettings(defense=defense), torch.device("cuda"), False, precision=precision
    )


def snd_ratios() -> dict[str, dict[str, float]]:
    x = np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32)
    out = {}
    for precision in PRECISIONS:
        off = rate(embedded_host(precision, {"kind": "none"}).forward, x)
        on = rate(embedded_host(precision, {"kind": "snd", "sigma": 0.01}).forward, x)
        out[precision] = {"off": off, "on": on, "ratio": on / off}
    return out


def resnet50_rates(weights: Path | None) -> dict[str, dict[int, float]]:
    from service.defenses import SmallNoiseDefense
    from service.models import get_spec
    from service.models.normalization import Normalized
    from service.models.registry import load_state

    spec = get_spec("resnet50-imagenet")
    net = spec.build_net()
    if weights is not None:
        load_state(net, weights)
    model = Normalized(net, spec.mean, spec.std).eval().cuda()
    snd = SmallNoiseDefense(0.01)
    out: dict[str, dict[int, float]] = {}
    for precision in PRECISIONS:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

        def forward(x: np.ndarray, dtype: torch.dtype | None = dtype) -> np.ndarray:
            with torch.inference_mode():
                batch = snd(torch.from_numpy(x).cuda(non_blocking=True))
                with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    return torch.softmax(model(batch).float(), 1).cpu().numpy()

        out[precision] = {}
        for batch in RESNET50_BATCHES:
            x = np.random.default_rng(0).random((batch, 3, 224, 224), dtype=np.float32)
            out[precision][batch] = rate(forward, x, seconds=1.5)
    return out


def label_agreement() -> dict[str, float]:
    from service.offline.datasets import mnist_subset

    test = mnist_subset("test")
    fp32 = embedded_host("fp32", {"kind": "none"}).forward(test.images).argmax(1)
    return {
        p: float((embedded_host(p, {"kind": "none"}).forward(test.images).argmax(1) == fp32).mean())
        for p in ("fp16", "bf16")
    }


def served(images: int = 2000) -> dict[str, float]:
    """32 single-image callers over HTTP ÷ the model's own batched rate, and HSJA over HTTP."""
    from attacks_client import HttpOracle, get_attack
    from service.offline.datasets import mnist_subset
    from tests.servers import ServiceProcess

    own = rate(
        embedded_host("fp32", {"kind": "snd", "sigma": 0.01}).forward,
        np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32),
    )
    test = mnist_subset("test")
    with ServiceProcess({"defense": "snd", "sigma": 0.01, "device": "cuda"}) as server:
        callers = asyncio.run(images_per_second(server.url, npy_body(1), 1, images, 32))
        attack, queries, seconds = get_attack("hsja")(), 0, 0.0
        with HttpOracle(server.url) as oracle:
            for i in range(3):
                start = time.perf_counter()
                result = attack(oracle, test.images[i + 1], int(test.labels[i + 1]), 2000, seed=i)
                seconds += time.perf_counter() - start
                queries += result.queries
    return {"own": own, "callers": callers, "ratio": callers / own, "hsja_qps": queries / seconds}


def page(facts: dict[str, str], results: dict[str, Any], command: str, tests: str) -> str:
    """The Markdown of docs/performance-gpu.md from measured figures."""
    snd, r50 = results["snd"], results["resnet50"]
    agree, serve = results["agreement"], results["served"]
    lines = [
        "# Performance on a GPU",
        "",
        f"`{command}` (run by `scripts/gpu-check.sh`) on {facts['device']}, driver "
        f"{facts['driver']}, CUDA {facts['cuda']}, torch {facts['torch']}. One run; the ratios "
        "are what carries over to other machines. CUDA tests (`pytest -m cuda`): "
        f"{tests}.",
        "",
        "## SND on ÷ off (embedded ResNet-20, batch 256, in-process on the device)",
        "",
        "| precision | off (img/s) | on (img/s) | on ÷ off |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {p} | {v['off']:.0f} | {v['on']:.0f} | {v['ratio']:.3f} |" for p, v in snd.items()
    ]
    lines += [
        "",
        "## ResNet-50 behind SND σ = 0.01 (images/s; 3×224×224)",
        "",
        "| precision | " + " | ".join(f"batch {b}" for b in RESNET50_BATCHES) + " |",
        "|---|" + "---|" * len(RESNET50_BATCHES),
    ]
    lines += [
        f"| {p} | " + " | ".join(f"{v[b]:.0f}" for b in RESNET50_BATCHES) + " |"
        for p, v in r50.items()
    ]
    lines += [
        "",
        "## Precision and serving",
        "",
        "| figure | value |",
        "|---|---|",
        f"| fp16 ÷ fp32 top-1 agreement (1,000 embedded test images) | {agree['fp16']:.4f} |",
        f"| bf16 ÷ fp32 top-1 agreement | {agree['bf16']:.4f} |",
        f"| model's own batched rate, SND fp32 (img/s) | {serve['own']:.0f} |",
        f"| 32 callers over HTTP (img/s) | {serve['callers']:.0f} |",
        f"| 32 callers ÷ own batched rate | {serve['ratio']:.3f} |",
        f"| HSJA over HTTP (queries/s, server on CUDA) | {serve['hsja_qps']:.0f} |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu")
    parser.add_argument("--write", type=Path, default=None, help="the Markdown page to write")
    parser.add_argument("--resnet50-weights", type=Path, default=None)
    parser.add_argument("--tests", default="not run", help="the CUDA tests' outcome, for the page")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    facts = device_facts()
    log.info("device: %s", facts)
    results = {
        "snd": snd_ratios(),
        "resnet50": resnet50_rates(args.resnet50_weights),
        "agreement": label_agreement(),
        "served": served(),
    }
    command = "python -m benchmarks.bench_gpu" + (f" --write {args.write}" if args.write else "")
    text = page(facts, results, command, args.tests)
    print(text)
    if args.write:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
