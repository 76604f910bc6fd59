"""The soak's verdicts (``benchmarks.soak``): the accounting check, the targets on the samples,
the Markdown section for ``docs/performance.md`` and the plot."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.soak_traffic import Stats

HEADING = "## Soak"
FULL_RUN_S = 30 * 60
FULL_RUN_REQUESTS = 1_000_000
TEN_MINUTES = 600.0
TOLERANCE = 0.10


def accounting_check(usage: list[dict[str, Any]], stats: Stats) -> dict[str, Any]:
    """``GET /usage`` against what the client saw. A caller's count must equal the images
    answered 200, plus at most the images of its requests of unknown fate (abandoned mid-flight
    or cut by a transport error: the server may have answered them); a caller that only ever
    sent bad input, and any caller the client never was, must count nothing."""
    counted = {row["caller"]: int(row["total"]) for row in usage}
    exact = ambiguous = 0
    outside, bad_nonzero, unknown = [], [], []
    for caller in sorted(stats.callers | stats.bad_callers | set(counted)):
        got = counted.get(caller, 0)
        low = stats.answered[caller]
        high = low + stats.ambiguous[caller]
        if caller in stats.bad_callers:
            if got:
                bad_nonzero.append({"caller": caller, "counted": got})
        elif caller not in stats.callers:
            if got:
                unknown.append({"caller": caller, "counted": got})
        elif not low <= got <= high:
            outside.append({"caller": caller, "counted": got, "answered": low, "unknown": high})
        elif low == high:
            exact += 1
        else:
            ambiguous += 1
    answered = sum(stats.answered.values())
    total = sum(counted.values())
    return {
        "callers": len(stats.callers),
        "exact": exact,
        "within_unknown_fate": ambiguous,
        "outside": outside[:10],
        "bad_only_callers": len(stats.bad_callers),
        "bad_only_counted": bad_nonzero,
        "unknown_callers_counted": unknown,
        "images_counted": total,
        "images_answered_200": answered,
        "images_of_unknown_fate": sum(stats.ambiguous.values()),
        "unknown_fate_counted": total - answered,
        "passed": not (outside or bad_nonzero or unknown),
    }


def _mean(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.fmean(values) if values else None


def _windows(
    samples: list[dict[str, Any]], start_s: float, sample_s: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]] | None:
    """The first and last comparison windows among the samples whose interval began at or after
    ``start_s``: ten minutes each when 20 minutes are left, else a third each."""
    after = [s for s in samples if s["t"] - sample_s >= start_s - 1e-6]
    if len(after) < 2:
        return None
    t0, end = after[0]["t"] - sample_s, after[-1]["t"]
    full = end - t0 >= 2 * TEN_MINUTES
    span = TEN_MINUTES if full else (end - t0) / 3
    first = [s for s in after if s["t"] <= t0 + span + 1e-6] or after[:1]
    last = [s for s in after if s["t"] >= end - span + sample_s - 1e-6] or after[-1:]
    how = (
        "the last ten minutes against the first ten"
        if full
        else "a short run: the last third against the first third"
    )
    window = {"first": [t0, first[-1]["t"]], "last": [last[0]["t"] - sample_s, end], "how": how}
    return first, last, window


def _growth(
    name: str, first: float | None, last: float | None, slack: float = 0.0
) -> dict[str, Any]:
    """Passed when the last window is at most 10% (or ``slack``) above the first one: a drop
    is no leak."""
    if first is None or last is None or first <= 0:
        return {"target": name, "first": first, "last": last, "change": None, "passed": None}
    limit = max(first * (1 + TOLERANCE), first + slack)
    return {
        "target": name,
        "first": round(first, 2),
        "last": round(last, 2),
        "change": round(last / first - 1, 4),
        "passed": last <= limit,
    }


def _pooled_p99(latencies: tuple[np.ndarray, np.ndarray], span: list[float]) -> float | None:
    """p99 (ms) of every answer that arrived within ``span`` (seconds into the run)."""
    times, values = latencies
    inside = values[(times > span[0]) & (times <= span[1])]
    return 1000 * float(np.percentile(inside, 99)) if len(inside) else None


def _per_image_held(
    samples: list[dict[str, Any]], retention_s: float, sample_s: float
) -> dict[int, dict[str, float]]:
    """Per sample (by ``id``): Redis used_memory (KiB) per image answered in the retention
    window that ends at it (the images of the last ``retention_s / sample_s`` samples)."""
    span = max(1, round(retention_s / sample_s))
    held: dict[int, dict[str, float]] = {}
    for i, sample in enumerate(samples):
        if i + 1 < span:
            continue
        images = sum(s["images_s"] * sample_s for s in samples[i + 1 - span : i + 1])
        if images > 0:
            held[id(sample)] = {"kib": sample["redis_used_mib"] * 1024 / images}
    return held


def targets(
    samples: list[dict[str, Any]],
    args: argparse.Namespace,
    summary: dict[str, Any],
    latencies: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each target's first and last window and verdict, and the windows compared. The p99 is
    pooled over each window's answers when ``latencies`` (answer times, seconds) are given,
    else the mean of the samples' p99s."""
    out: list[dict[str, Any]] = []
    windows: dict[str, Any] = {}
    long_enough = (
        summary["duration_s"] >= FULL_RUN_S - 1 or summary["requests"] >= FULL_RUN_REQUESTS
    )
    out.append(
        {
            "target": "length: 30 minutes or 1M requests",
            "first": None,
            "last": None,
            "change": None,
            "passed": long_enough,
            "note": f"{summary['duration_s'] / 60:.1f} min, {summary['requests']} requests",
        }
    )
    found = _windows(samples, args.warmup_s, args.sample_s)
    if found is None:
        out.append({"target": "RSS, fds, p99", "passed": None, "note": "too few samples"})
    else:
        first, last, windows["after_warmup"] = found
        out.append(_growth("server RSS (MiB)", _mean(first, "rss_mib"), _mean(last, "rss_mib")))
        out.append(
            _growth(
                "server open fds",
                _mean(first, "fds"),
                _mean(last, "fds"),
                slack=args.concurrency,  # the connections in flight at the instant sampled
            )
        )
        window = windows["after_warmup"]
        p99 = (
            (_pooled_p99(latencies, window["first"]), _pooled_p99(latencies, window["last"]))
            if latencies is not None
            else (_mean(first, "p99_ms"), _mean(last, "p99_ms"))
        )
        row = _growth("p99 latency (ms)", *p99)
        loads = _mean(first, "load1"), _mean(last, "load1")
        if None not in loads:
            row["note"] = f"load average {loads[0]:.1f} → {loads[1]:.1f}"
        out.append(row)
    # detection state reaches its steady size once the oldest bucket expires: retention + 1/4
    steady_s = max(args.warmup_s, 1.25 * args.retention_s)
    found = _windows(samples, steady_s, args.sample_s)
    if found is None:
        out.append(
            {
                "target": "Redis used_memory (MiB) bounded by the retention",
                "passed": None,
                "note": f"not measured: no samples past 1.25 × retention ({steady_s:.0f} s)",
            }
        )
    else:
        first, last, windows["redis_steady"] = found
        # detection keeps every image of the last `retention` seconds: memory follows the
        # traffic, so what must not grow is the memory per image held
        held = _per_image_held(samples, args.retention_s, args.sample_s)
        row = _growth(
            "Redis used_memory per image in the retention window (KiB) bounded",
            _mean([held[id(s)] for s in first if id(s) in held], "kib"),
            _mean([held[id(s)] for s in last if id(s) in held], "kib"),
        )
        mib = _mean(first, "redis_used_mib"), _mean(last, "redis_used_mib")
        keys = _mean(first, "redis_keys"), _mean(last, "redis_keys")
        row["note"] = (
            f"from {steady_s:.0f} s (1.25 × retention {args.retention_s:.0f} s); used_memory "
            f"{mib[0]:.1f} → {mib[1]:.1f} MiB, keys {keys[0]:.0f} → {keys[1]:.0f}, as the "
            "traffic of the retention window"
        )
        out.append(row)
    accounting = summary["accounting"]
    out.append(
        {
            "target": "counted = images answered 200; nothing for refused or bad input",
            "passed": accounting["passed"],
            "note": (
                f"{accounting['exact']} callers exact, {accounting['within_unknown_fate']} within "
                f"their abandoned requests, {len(accounting['outside'])} outside; "
                f"{len(accounting['bad_only_counted'])} of {accounting['bad_only_callers']} "
                "bad-input-only callers counted"
            ),
        }
    )
    failures = summary["failures"]
    out.append(
        {
            "target": "no 5xx but 503/504 with Retry-After; no broken connection",
            "passed": not failures and not summary["server_log_errors"],
            "note": ", ".join(f"{k}: {v}" for k, v in failures.items())
            or (
                f"503: {summary['statuses'].get('503', 0)}, "
                f"504: {summary['statuses'].get('504', 0)}"
            ),
        }
    )
    return out, windows


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _verdict(passed: bool | None) -> str:
    return {True: "**pass**", False: "**FAIL**", None: "not measured"}[passed]


def markdown(
    summary: dict[str, Any], samples: list[dict[str, Any]], args: argparse.Namespace
) -> str:
    acc = summary["accounting"]
    how = summary["windows"].get("after_warmup", {}).get("how", "–")
    plot_ref = (
        args.plot.name if args.plot.resolve().parent == Path("docs").resolve() else str(args.plot)
    )
    lines = [
        HEADING,
        "",
        f"`{summary['command']}` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()} (shared with other work): {summary['duration_s'] / 60:.1f} "
        f"min, {summary['requests']} requests in {summary['sessions']} caller sessions, "
        f"{summary['concurrency']} at a time from a pool of {args.callers} API keys (each "
        f"session on its own connections), {summary['workers']} uvicorn worker(s), Redis, "
        f"ResNet-20 MNIST behind SND σ = 0.01 with stateful detection in shadow mode "
        f"(retention {args.retention_s:g} s). The mix: single images and batches of 2–16, "
        "scores and labels, npy/raw/JSON bodies, 3% exact repeats, about a tenth bad input of "
        "the hardening kinds, 5% of good requests abandoned after a random delay. Sampled "
        f"every {args.sample_s:g} s; the first {args.warmup_s:g} s are warm-up. Compared: "
        f"{how}; a target passes when the last window is at most 10% above the first (a drop "
        "is no leak; open fds may also rise by the concurrency, the connections in flight).",
        "",
        "| target | first window | last window | change | result | note |",
        "|---|---|---|---|---|---|",
    ]
    for t in summary["targets"]:
        change = "–" if t.get("change") is None else f"{t['change']:+.1%}"
        lines.append(
            f"| {t['target']} | {_cell(t.get('first'))} | {_cell(t.get('last'))} | {change} | "
            f"{_verdict(t['passed'])} | {t.get('note', '')} |"
        )
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items())
    lines += [
        "",
        f"Accounting: {acc['images_counted']} images counted for {acc['images_answered_200']} "
        f"answered 200, and {acc['unknown_fate_counted']} of the "
        f"{acc['images_of_unknown_fate']} images in abandoned requests (answered by the server "
        f"before the client hung up). Requests by outcome: {statuses}.",
        "",
        f"![soak samples]({plot_ref})",
        "",
        "| t (s) | RSS (MiB) | fds | Redis used (MiB) | Redis keys | req/s | images/s | "
        "p50 (ms) | p99 (ms) | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in samples:
        cells = [
            s.get(k)
            for k in (
                "t",
                "rss_mib",
                "fds",
                "redis_used_mib",
                "redis_keys",
                "req_s",
                "images_s",
                "p50_ms",
                "p99_ms",
                "load1",
            )
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(
    samples: list[dict[str, Any]], path: Path, warmup_s: float, windows: dict[str, Any]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t"] / 60 for s in samples]
    panels = [
        ("server RSS (MiB)", ["rss_mib"]),
        ("server open fds", ["fds"]),
        ("Redis used_memory (MiB)", ["redis_used_mib"]),
        ("latency (ms)", ["p50_ms", "p99_ms"]),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 9), sharex=True)
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            points = [(m, s[key]) for m, s in zip(minutes, samples, strict=True) if s[key]]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=key)
        ax.axvspan(0, warmup_s / 60, color="grey", alpha=0.2)
        for part, color in (("first", "tab:green"), ("last", "tab:red")):
            if "after_warmup" in windows:
                a, b = windows["after_warmup"][part]
                ax.axvspan(a / 60, b / 60, color=color, alpha=0.08)
        ax.set_ylabel(title, fontsize=8)
        ax.set_ylim(bottom=0)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    axes[-1].set_xlabel("minutes (grey: warm-up; green / red: compared windows)")
    fig.suptitle("SND gateway soak", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
