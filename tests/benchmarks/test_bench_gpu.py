"""The GPU check on a machine without CUDA (it must say so and succeed), and the page it writes
from measured figures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.bench_gpu import PRECISIONS, RESNET50_BATCHES, main, page
from tests.servers import ROOT

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")


@no_cuda
def test_gpu_check_says_no_cuda_and_exits_0() -> None:
    result = subprocess.run(
        ["bash", "scripts/gpu-check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "no CUDA device", result


@no_cuda
def test_the_benchmark_without_cuda_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "gpu.md"
    assert main(["--write", str(target)]) == 0
    assert capsys.readouterr().out.strip() == "no CUDA device" and not target.exists()


def test_the_page_holds_every_figure() -> None:
    results = {
        "snd": {
            p: {"off": 1000.0 + i, "on": 990.0, "ratio": 0.99} for i, p in enumerate(PRECISIONS)
        },
        "resnet50": {p: {b: 10.0 * b for b in RESNET50_BATCHES} for p in PRECISIONS},
        "agreement": {"fp16": 0.9990, "bf16": 0.9970},
        "served": {"own": 50000.0, "callers": 20000.0, "ratio": 0.4, "hsja_qps": 900.0},
    }
    facts = {
        "device": "NVIDIA H200 (139 GiB)",
        "driver": "560.1",
        "cuda": "12.8",
        "torch": "2.14.1",
    }
    text = page(facts, results, "python -m benchmarks.bench_gpu", "all passed")
    assert "NVIDIA H200 (139 GiB), driver 560.1, CUDA 12.8, torch 2.14.1" in text
    assert "| fp16 | 1001 | 990 | 0.990 |" in text and "| bf16 | 10 | 320 | 2560 |" in text
    assert "| fp16 ÷ fp32 top-1 agreement (1,000 embedded test images) | 0.9990 |" in text
    assert "| 32 callers ÷ own batched rate | 0.400 |" in text and "all passed" in text
