"""An evaluation grid end to end, next to the model's own batched rate (``docs/performance.md``).

A fixed small grid — HSJA, SimBA-DCT and Square (L2) on 16 images, 2k queries, against no
defense and SND σ = 0.01, one local gateway (two workers, one torch thread each) — is run by
``Evaluation`` as ``evaluate`` runs it, once per client setting: today's (8 runs at once, a
request per query batch) and request sharing (:class:`~attacks_client.oracles.SharedRequests`)
at several run counts. The figure is images answered per second (attack queries, the judge's
draws and the P_mis reference, all of them real queries) over the grid's wall time, ÷ the
traced model's own images/s at batch 32 on two threads in-process (``bench_forward``'s figure),
measured in the same run. Records of the no-defense endpoint are compared between settings
(the noise makes the SND ones differ from run to run by design).

    python -m benchmarks.bench_grid [--write]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attacks_client.data import load_images  # noqa: E402
from attacks_client.evaluation.experiment import Experiment  # noqa: E402
from attacks_client.evaluation.grid import Evaluation, serve_endpoints  # noqa: E402
from attacks_client.evaluation.records import ACCURACY, IMAGES, RECORDS, read_lines  # noqa: E402
from benchmarks.bench_forward import images_per_second  # noqa: E402
from benchmarks.common import machine, write_section  # noqa: E402
from service.model_settings import ModelSettings  # noqa: E402
from service.serving.local import LocalHost  # noqa: E402

HEADING = "## Evaluation grid: client-side request sharing"
COMMAND = "python -m benchmarks.bench_grid --write"
SETTINGS: tuple[tuple[str, int, bool], ...] = (
    ("a request per query batch, 8 runs at once (before)", 8, False),
    ("a request per query batch, 32 runs at once", 32, False),
    ("shared requests, 32 runs at once (the default)", 32, True),
)


def grid(images: int = 16, budget: int = 2000, *, invariant: bool = False) -> Experiment:
    """The benchmark's grid; ``invariant``: the no-defense endpoint alone, on a server that
    runs every image in a forward pass of its own (its answers then never depend on the batch
    they came in), for the fingerprint check."""
    serve: dict[str, Any] = {
        "workers": 2,
        "torch_threads": 1,
        "models": [
            {"name": "none", "zoo": "resnet20-mnist", "defense": {"kind": "none"}},
            {
                "name": "snd-0.01",
                "zoo": "resnet20-mnist",
                "defense": {"kind": "snd", "sigma": 0.01},
            },
        ],
    }
    endpoints: list[dict[str, Any]] = [
        {"name": "none", "model": "none", "reference": True},
        {"name": "snd-0.01", "model": "snd-0.01"},
    ]
    if invariant:
        serve["forward_chunk_images"] = 1
        serve["models"] = serve["models"][:1]
        endpoints = endpoints[:1]
    return Experiment.from_dict(
        {
            "name": "bench-grid",
            "images": images,
            "budget": budget,
            "checkpoints": [budget // 2, budget],
            "epsilons": [1.5],
            "primary_epsilon": 1.5,
            "accuracy_repeats": 1,
            "accuracy_images": 100,
            "sigma_hat_images": 10,
            "sigma_hat_draws": 10,
            "serve": serve,
            "endpoints": endpoints,
            "attacks": [{"name": "hsja"}, {"name": "simba-dct"}, {"name": "square"}],
        }
    )


def model_rate() -> float:
    """The traced model's images/s at batch 32 on two threads, in-process (bench_forward)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    host = LocalHost.load(
        ModelSettings(defense={"kind": "none"}),  # type: ignore[arg-type]
        torch.device("cpu"),
        False,
        graph="trace",
    )
    rate = images_per_second(host, 32, images=3200)
    torch.set_num_threads(threads)
    return rate


def images_sent(records: list[dict[str, Any]]) -> int:
    """Every image the grid's runs sent: the attack's, the judge's and the P_mis reference's."""
    return sum(
        r["queries"] + r.get("judge_queries", 0) + (r["p_mis"]["samples"] if r.get("p_mis") else 0)
        for r in records
    )


def fingerprint(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What a seeded run on the deterministic endpoint must reproduce exactly."""
    return {
        f"{r['attack']}/{r['image']}": [r["queries"], r["candidate_l2"], r["stop_reason"]]
        for r in records
        if r["endpoint"] == "none"
    }


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds so far of this process (the client, every thread) and of its children (the
    local gateway's processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        children += times.user + times.system
    return own.ru_utime + own.ru_stime, children


def run_setting(
    experiment: Experiment, urls: dict[str, str], seeded: Path, workers: int, share: bool
) -> tuple[float, list[dict[str, Any]], int, tuple[float, float]]:
    """Wall seconds, records, requests and (client, server) CPU seconds of one setting, from
    the seeded images and accuracy."""
    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        out = Path(tmp)
        for name in (IMAGES, ACCURACY):
            shutil.copy(seeded / name, out / name)
        evaluation = Evaluation(experiment, out, urls, share=share)
        client, server = cpu_seconds()
        start = time.perf_counter()
        evaluation.run(workers, progress=False)
        seconds = time.perf_counter() - start
        client_after, server_after = cpu_seconds()
        records = [json.loads(line) for line in read_lines(out / RECORDS)]
    requests = sum(s.requests for s in evaluation.sharing.values())
    return seconds, records, requests, (client_after - client, server_after - server)


def seeded_runs(experiment: Experiment, workers: int, share: bool) -> dict[str, Any]:
    """The fingerprint of ``experiment`` run against its own fresh services."""
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-grid-fp-") as tmp:
        urls = serve_endpoints(experiment, stack)
        Evaluation(experiment, Path(tmp), urls, share=share).run(workers, progress=False)
        records = [json.loads(line) for line in read_lines(Path(tmp) / RECORDS)]
    return fingerprint(records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_grid")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    args = parser.parse_args(argv)
    experiment = grid(args.images, args.budget)
    rate = model_rate()
    rows, prints = [], []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-grid-seed-") as seed:
        urls = serve_endpoints(experiment, stack)
        seeded = Evaluation(experiment, Path(seed), urls)
        data = load_images(experiment.dataset)
        seeded.select_images(data)
        seeded.clean_accuracy(data)
        for label, workers, share in SETTINGS:
            seconds, records, requests, (client, server) = run_setting(
                experiment, urls, Path(seed), workers, share
            )
            sent = images_sent(records)
            per_request = f"{sent / requests:.1f}" if share and requests else "—"
            rows.append(
                f"| {label} | {seconds:.0f} | {sent} | {sent / seconds:.0f} | "
                f"{sent / seconds / rate:.2f} | {per_request} | {1e3 * client / sent:.2f} | "
                f"{1e3 * server / sent:.2f} | {(client + server) / seconds:.2f} |"
            )
            prints.append(fingerprint(records))
            print(rows[-1], flush=True)
    differing = [sum(prints[0].get(k) != v for k, v in p.items()) for p in prints[1:]]
    invariant = grid(4, 500, invariant=True)
    alone = seeded_runs(invariant, 1, False)
    shared = seeded_runs(invariant, 12, True)
    same = alone == shared
    text = "\n".join(
        [
            HEADING,
            "",
            f"`{COMMAND}` (one run; {machine()}). The grid: HSJA, SimBA-DCT and Square on "
            f"{args.images} images × {{none, SND 0.01}} × {args.budget} queries, one local "
            "gateway (2 workers × 1 torch thread), as `evaluate` runs it. Images/s counts every "
            "image the grid sent (attack, judge, P_mis reference); the model's own rate is the "
            f"traced ResNet-20 in-process at batch 32 on 2 threads: **{rate:.0f} images/s**.",
            "",
            "| client | seconds | images sent | images/s | ÷ model's rate | images per request "
            "| client CPU ms/image | gateway CPU ms/image | cores busy |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Seeded runs on the no-defense endpoint (queries, L2 trajectory, stop reason) that "
            f"differ from the first setting's: {', '.join(map(str, differing))} of "
            f"{len(prints[0])} for the other settings, shared or not: the server computes an "
            "image's scores in whatever batch it merged, and the float results move in the 6th "
            "digit with the batch, enough to turn a bisection step at the boundary. Against a "
            "server that gives every image a forward pass of its own "
            "(`forward_chunk_images = 1`; 3 attacks × 4 images × 500 queries), one run at a "
            f"time without sharing and 12 at once with it are identical: **{same}** "
            f"({len(alone)} runs).",
        ]
    )
    print(text)
    if args.write:
        write_section(Path("docs/performance.md"), HEADING, text)


if __name__ == "__main__":
    main()
