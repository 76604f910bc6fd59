"""The soak of issue 27: one gateway on Redis, stateful detection in shadow mode, mixed traffic
for ``--minutes`` (or ``--max-requests``), sampled every ``--sample-s``.

    python -m benchmarks.soak --minutes 30 --concurrency 4

Traffic (``benchmarks.soak_traffic``): callers that come and go (a rolling set of API keys, each
session on its own connections), single images and batches of 2-16, scores and labels, npy, raw
and JSON bodies, exact repeats, about a tenth bad input of the hardening kinds, and requests
abandoned mid-flight. Every sample records the server's RSS and open file descriptors (the
process and its children: uvicorn workers), Redis ``used_memory`` and keys, and the latency
percentiles and status counts of the interval. At the end ``GET /usage`` (admin) is compared with
what the client saw, caller by caller. The targets, the pass/fail of each and the Markdown
section for ``docs/performance.md`` are printed and written to ``--out`` (JSON); ``--plot``
draws the samples. Exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.soak_report import accounting_check, markdown, plot, targets  # noqa: E402
from benchmarks.soak_traffic import IMAGE, MAX_BATCH, MAX_BODY, Mix, Stats, Traffic  # noqa: E402
from tests.servers import RedisProcess, ServiceProcess, free_port  # noqa: E402

MODEL = "soak"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it (uvicorn workers, their helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_and_fds(root: int) -> tuple[float, int, int]:
    """Resident memory (MiB) and open file descriptors summed over the tree, and its size."""
    rss_kib, fds, pids = 0, 0, process_tree(root)
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kib += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:  # the process ended meanwhile
            continue
    return rss_kib / 1024, fds, len(pids)


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(1000 * float(np.percentile(values, q)), 2) if values else None


async def take_sample(stats: Stats, t: float, span: float, pid: int, redis: Any) -> dict[str, Any]:
    window = stats.take_window()
    rss, fds, processes = rss_and_fds(pid)
    memory = await redis.info("memory")
    requests = sum(window.statuses.values())
    return {
        "t": round(t, 1),
        "rss_mib": round(rss, 1),
        "fds": fds,
        "processes": processes,
        "redis_used_mib": round(memory["used_memory"] / 2**20, 3),
        "redis_keys": await redis.dbsize(),
        "requests": requests,
        "req_s": round(requests / span, 1),
        "images_s": round(window.images / span, 1),
        "p50_ms": percentile_ms(window.latencies, 50),
        "p99_ms": percentile_ms(window.latencies, 99),
        "load1": round(os.getloadavg()[0], 2),
        "statuses": dict(sorted(window.statuses.items())),
    }


async def drive(args: argparse.Namespace, server: ServiceProcess, redis_url: str) -> dict[str, Any]:
    """Run the traffic and the sampler; return the samples and what the client saw."""
    import redis.asyncio as aioredis

    assert server.proc is not None
    stats = Stats()
    start = time.monotonic()
    deadline = start + 60 * args.minutes

    def done() -> bool:
        return time.monotonic() >= deadline or stats.requests >= args.max_requests

    traffic = Traffic(server.url, args.keys, args.bad_keys, Mix(), stats, done, seed=args.seed)
    runners = [asyncio.create_task(traffic.runner()) for _ in range(args.concurrency)]
    client = aioredis.from_url(redis_url)
    samples: list[dict[str, Any]] = []
    last = start
    try:
        while not done():
            await asyncio.sleep(0.25)
            for task in runners:
                if task.done():
                    task.result()  # a runner that failed stops the soak with its error
            now = time.monotonic()
            if now - last >= args.sample_s:
                samples.append(
                    await take_sample(stats, now - start, now - last, server.proc.pid, client)
                )
                last = now
                print(json.dumps(samples[-1]), flush=True)  # progress
        await asyncio.gather(*runners)
        now = time.monotonic()
        if now - last >= args.sample_s / 2:  # a last, partial interval worth keeping
            samples.append(
                await take_sample(stats, now - start, now - last, server.proc.pid, client)
            )
        duration = time.monotonic() - start
        await asyncio.sleep(2.0)  # abandoned requests the server still works on finish
    finally:
        for task in runners:
            task.cancel()
        await client.aclose()
    times = np.frombuffer(stats.answer_times, dtype=np.float64) - start
    latencies = (times, np.frombuffer(stats.answer_latencies, dtype=np.float64))
    return {"samples": samples, "stats": stats, "duration_s": duration, "latencies": latencies}


def server_settings(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    keys = {**args.keys, **args.bad_keys}
    return {
        "log_level": "warning",
        "models": [
            {
                "name": MODEL,
                "zoo": "resnet20-mnist",
                "defense": {"kind": "snd", "sigma": 0.01},
                "detection": {"action": "shadow"},
            }
        ],
        "redis_url": redis_url,
        "api_keys": {sha256_hex(secret): name for name, secret in keys.items()},
        "admin_token_sha256": sha256_hex(args.admin_token),
        "detection_secret": "soak",
        "detection_retention_s": args.retention_s,
        "detection_flag_window_s": args.retention_s,
        "max_batch": MAX_BATCH,
        "max_body_bytes": MAX_BODY,
        "torch_threads": args.torch_threads,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="traffic duration")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="or stop after")
    parser.add_argument("--sample-s", type=float, default=60.0, help="sampling interval")
    parser.add_argument("--warmup-s", type=float, default=120.0, help="left out of the targets")
    parser.add_argument("--concurrency", type=int, default=4, help="callers at any time")
    parser.add_argument("--callers", type=int, default=64, help="the pool of API keys")
    parser.add_argument("--retention-s", type=float, default=120.0, help="detection retention")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/soak/soak.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/performance-soak.png"))
    args = parser.parse_args(argv)
    args.keys = {f"soak-{i}": secrets.token_hex(8) for i in range(args.callers)}
    args.bad_keys = {f"bad-{i}": secrets.token_hex(8) for i in range(4)}
    args.admin_token = secrets.token_hex(16)
    return args


def every_caller(url: str, admin: dict[str, str]) -> list[dict[str, Any]]:
    """Every caller's ``GET /usage`` row, following the pages' cursor."""
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:
        page = httpx.get(f"{url}/usage", headers=admin, params=params, timeout=60)
        page.raise_for_status()
        rows += page.json()["callers"]
        if page.json()["next"] is None:
            return rows
        params["after"] = page.json()["next"]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    with RedisProcess() as redis:
        settings = server_settings(args, redis.url)
        with ServiceProcess(settings, workers=args.workers, port=free_port()) as server:
            models = httpx.get(f"{server.url}/models", timeout=30).json()["models"]
            shape = next(m["input_shape"] for m in models if m["name"] == MODEL)
            if tuple(shape[-3:]) != IMAGE:
                raise RuntimeError(f"the soak sends {IMAGE} images; the model takes {shape}")
            run = asyncio.run(drive(args, server, redis.url))
            callers = every_caller(server.url, {"Authorization": f"Bearer {args.admin_token}"})
            metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
            log = server.log()
    stats: Stats = run["stats"]
    accounting = accounting_check(callers, stats)
    flags = [
        line
        for line in metrics.splitlines()
        if line.startswith("snd_detections_total{") and not line.endswith(" 0.0")
    ]
    summary: dict[str, Any] = {
        "command": command.strip(),
        "duration_s": round(run["duration_s"], 1),
        "requests": stats.requests,
        "sessions": stats.sessions,
        "statuses": dict(sorted(stats.totals.items())),
        "bad_kinds": dict(sorted(stats.bad_kinds.items())),
        "failures": dict(stats.failures),
        "failure_examples": stats.examples,
        "accounting": accounting,
        "shadow_flags": flags,
        "server_log_errors": [
            line for line in log.splitlines() if "Traceback" in line or "ERROR" in line
        ][:20],
        "settings": {
            k: v for k, v in settings.items() if k not in ("api_keys", "admin_token_sha256")
        },
        "concurrency": args.concurrency,
        "workers": args.workers,
    }
    summary["targets"], summary["windows"] = targets(
        run["samples"], args, summary, run["latencies"]
    )
    summary["passed"] = all(t["passed"] is not False for t in summary["targets"])
    text = markdown(summary, run["samples"], args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "samples": run["samples"]}, indent=1))
    plot(run["samples"], args.plot, args.warmup_s, summary["windows"])
    print(json.dumps({k: summary[k] for k in ("statuses", "failures", "accounting")}, indent=1))
    print(text)
    print(f"samples and summary: {args.out}; plot: {args.plot}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
