"""The soak's verdicts on made-up samples and counts (the soak itself runs for 30 minutes:
``python -m benchmarks.soak``), its request kinds, and its /proc sampling."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.soak import process_tree, rss_and_fds
from benchmarks.soak_report import accounting_check, markdown, plot, targets
from benchmarks.soak_traffic import BAD_REQUESTS, IMAGE, MAX_BODY, Stats, good_request


def args(**changes: Any) -> argparse.Namespace:
    values = {
        "warmup_s": 120.0,
        "sample_s": 60.0,
        "retention_s": 120.0,
        "concurrency": 4,
        "callers": 64,
        "plot": Path("docs/performance-soak.png"),
    }
    return argparse.Namespace(**{**values, **changes})


def samples(minutes: int, rss: float = 800.0, rss_growth: float = 0.0) -> list[dict[str, Any]]:
    return [
        {
            "t": 60.0 * m,
            "rss_mib": rss + rss_growth * m,
            "fds": 20 + m % 3,
            "redis_used_mib": 3.0 if m > 2 else 1.0 + m,
            "redis_keys": 500,
            "req_s": 100.0,
            "images_s": 300.0,
            "p50_ms": 20.0,
            "p99_ms": 100.0 + m % 2,
        }
        for m in range(1, minutes + 1)
    ]


def summary(**changes: Any) -> dict[str, Any]:
    stats = Stats()
    stats.callers.add("key:a")
    stats.answered["key:a"] = 5
    values = {
        "command": "python -m benchmarks.soak",
        "duration_s": 1800.0,
        "requests": 5000,
        "sessions": 100,
        "statuses": {"200": 4500, "503": 2},
        "failures": {},
        "server_log_errors": [],
        "accounting": accounting_check([{"caller": "key:a", "total": 5}], stats),
        "concurrency": 4,
        "workers": 1,
    }
    return {**values, **changes}


def verdict(rows: list[dict[str, Any]], prefix: str) -> bool | None:
    (row,) = [row for row in rows if row["target"].startswith(prefix)]
    passed: bool | None = row["passed"]
    return passed


def test_accounting_is_exact_within_abandoned_requests_and_zero_for_bad_input() -> None:
    stats = Stats()
    stats.callers |= {"key:exact", "key:abandoned", "key:over", "key:under"}
    stats.bad_callers |= {"key:bad"}
    stats.answered.update({"key:exact": 10, "key:abandoned": 4, "key:over": 3, "key:under": 7})
    stats.ambiguous.update({"key:abandoned": 16, "key:over": 1})
    usage = [
        {"caller": "key:exact", "total": 10},
        {"caller": "key:abandoned", "total": 12},
        {"caller": "key:over", "total": 5},
        {"caller": "key:under", "total": 6},
        {"caller": "key:bad", "total": 1},
        {"caller": "key:stranger", "total": 2},
    ]
    check = accounting_check(usage, stats)
    assert check["exact"] == 1 and check["within_unknown_fate"] == 1
    assert [row["caller"] for row in check["outside"]] == ["key:over", "key:under"]
    assert check["bad_only_counted"] == [{"caller": "key:bad", "counted": 1}]
    assert check["unknown_callers_counted"] == [{"caller": "key:stranger", "counted": 2}]
    assert check["passed"] is False
    usage = [row for row in usage if row["caller"] in ("key:exact", "key:abandoned")]
    assert accounting_check(usage, stats)["passed"] is False  # key:under's 7 are missing
    stats.answered["key:under"] = 0
    stats.answered["key:over"] = 0
    assert accounting_check(usage, stats)["passed"] is True


def test_a_steady_30_minute_run_passes_and_compares_ten_minute_windows() -> None:
    rows, windows = targets(samples(30), args(), summary())
    assert all(row["passed"] for row in rows), rows
    assert windows["after_warmup"]["first"] == [120.0, 720.0]
    assert windows["after_warmup"]["last"] == [1200.0, 1800.0]
    assert "ten minutes" in windows["after_warmup"]["how"]


def test_growth_short_runs_and_errors_fail_their_targets() -> None:
    rows, _ = targets(samples(30, rss_growth=10.0), args(), summary())
    assert verdict(rows, "server RSS") is False
    rows, windows = targets(
        samples(3), args(warmup_s=30.0), summary(duration_s=180.0, failures={"500": 1})
    )
    assert verdict(rows, "length") is False and verdict(rows, "no 5xx") is False
    assert verdict(rows, "counted") is True
    assert "third" in windows["after_warmup"]["how"]
    rows, _ = targets(samples(1), args(), summary())
    assert verdict(rows, "RSS, fds, p99") is None


def test_redis_memory_is_judged_per_image_the_retention_holds() -> None:
    """Memory that follows the traffic (twice the images, twice the memory) is bounded; memory
    that grows at a steady rate is not."""
    busier = samples(30)
    for sample in busier[20:]:
        sample["images_s"] *= 2
        sample["redis_used_mib"] *= 2
    rows, _ = targets(busier, args(), summary())
    assert verdict(rows, "Redis used_memory") is True
    leaking = samples(30)
    for sample in leaking[20:]:
        sample["redis_used_mib"] *= 2
    rows, _ = targets(leaking, args(), summary())
    assert verdict(rows, "Redis used_memory") is False


def test_markdown_and_plot(tmp_path: Path) -> None:
    data = samples(30)
    result = summary()
    result["targets"], result["windows"] = targets(data, args(), result)
    text = markdown(result, data, args())
    assert text.startswith("## Soak\n") and "![soak samples](performance-soak.png)" in text
    assert "| server RSS (MiB) | 800 | 800 | +0.0% | **pass** |" in text
    assert text.count("\n| 1") >= 10  # the sample rows
    plot(data, tmp_path / "soak.png", 120.0, result["windows"])
    assert (tmp_path / "soak.png").read_bytes()[:4] == b"\x89PNG"


def test_request_kinds_are_well_formed() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((3, *IMAGE), dtype=np.float32)
    for _ in range(20):
        request = good_request(images, "scores", rng)
        assert request["headers"]["Content-Type"] in (
            "application/json",
            "application/x-npy",
            "application/octet-stream",
        )
    assert len(BAD_REQUESTS) >= 12
    assert all(400 <= status < 500 for _, status in BAD_REQUESTS.values())
    oversized, _ = BAD_REQUESTS["body over max_body_bytes"]
    assert len(oversized["content"]) > MAX_BODY


def test_the_process_tree_is_sampled_from_proc() -> None:
    assert process_tree(os.getpid())[0] == os.getpid()
    rss, fds, processes = rss_and_fds(os.getpid())
    assert rss > 10 and fds >= 3 and processes >= 1


def test_p99_is_pooled_over_each_window_when_the_answers_are_kept() -> None:
    times = np.linspace(1.0, 1800.0, 18_000)
    latencies = np.where(times > 1500.0, 0.5, 0.1)  # slower answers in the last five minutes
    rows, _ = targets(samples(30), args(), summary(), (times, latencies))
    (p99,) = [row for row in rows if row["target"].startswith("p99")]
    assert p99["first"] == 100.0 and p99["last"] == 500.0 and p99["passed"] is False
    rows, _ = targets(samples(30), args(), summary(), (times, np.full_like(times, 0.1)))
    assert verdict(rows, "p99") is True
