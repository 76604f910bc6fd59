"""``python -m benchmarks.parity``: ours and ART side by side, over HTTP, one verdict rule.

    python -m benchmarks.parity --images 20 --budget 5000 --workers 2

One local server hosts the endpoints (``none``, ``snd-0.001``, ``snd-0.01``: the embedded
ResNet-20 without and behind SND). For every (attack, endpoint, image) both implementations run
with the same budget, each through its own ``HttpOracle``; the parent judges every final
candidate with a separate identity, once by the attacked endpoint's majority of 10 noisy draws
(docs/attacking/protocol.md) and once by the noise-free h (the ``none`` endpoint). ART also runs
in-process, on the ``none`` model, for the speed comparison. Records go to
``runs/parity/records.jsonl`` (rerun to resume); the page to ``docs/results/parity.md``.

The page shows every attack in the records file. To rerun some attacks and keep the committed
page's other rows, seed the records file with the committed records first, and run with the
committed page's ``--images``, ``--budget``, ``--seed`` and endpoints:

    mkdir -p runs/parity
    zcat docs/results/parity/records.jsonl.gz > runs/parity/records.jsonl
    python -m benchmarks.parity --attacks square-l2 square-linf --images 20 --budget 2000 \\
        --inprocess-images 3 --workers 2
    gzip -c runs/parity/records.jsonl > docs/results/parity/records.jsonl.gz
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from attacks_client.data import load_images
from attacks_client.evaluation.grid import majority_misclassified
from attacks_client.evaluation.launch import LocalService
from attacks_client.evaluation.scoring import select_images
from attacks_client.oracles.http import HttpOracle
from benchmarks.parity.inprocess import run_inprocess
from benchmarks.parity.jobs import ATTACKS, Job, run_job
from benchmarks.parity.page import write_page

log = logging.getLogger("benchmarks.parity")

ENDPOINTS = {
    "none": {"kind": "none"},
    "snd-0.001": {"kind": "snd", "sigma": 0.001},
    "snd-0.01": {"kind": "snd", "sigma": 0.01},
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--budget", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=ENDPOINTS)
    parser.add_argument("--eval-draws", type=int, default=10)
    parser.add_argument(
        "--inprocess-images",
        type=int,
        default=5,
        help="images of the in-process ART speed runs (none endpoint)",
    )
    parser.add_argument("--workers", type=int, default=2, help="runs at once (processes)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=Path("runs/parity"))
    parser.add_argument("--page", type=Path, default=Path("docs/results/parity.md"))
    return parser.parse_args(argv)


def load_records(path: Path) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["attack"], r["implementation"], r["endpoint"], r["image"]): r for r in rows}


def judge(record: dict[str, Any], judges: dict[str, HttpOracle], draws: int) -> dict[str, Any]:
    """Add both verdicts on the final candidate, and drop the candidate itself."""
    candidate = record.pop("candidate")
    record["defended"] = record["h"] = False
    record["wrong_votes"] = 0
    if candidate is not None:
        endpoint = record["endpoint"] if record["implementation"] != "art-inprocess" else "none"
        ((majority, votes),) = majority_misclassified(
            judges[endpoint], [candidate], record["label"], draws
        )
        record["defended"], record["wrong_votes"] = majority, votes
        record["h"] = bool(judges["none"].labels(candidate[None])[0] != record["label"])
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "records.jsonl"
    records = load_records(path)
    data = load_images("embedded")
    models = [
        {"name": name, "zoo": "resnet20-mnist", "defense": defense}
        for name, defense in ENDPOINTS.items()
        if name in args.endpoints or name == "none"
    ]
    settings = {"models": models, "workers": 2, "torch_threads": 1}
    with LocalService(settings) as service:
        judges = {
            name: HttpOracle(service.url, name)
            for name in ENDPOINTS
            if name in args.endpoints or name == "none"
        }
        samples = select_images(data, args.images, args.seed, judges["none"])
        images = [s.index for s in samples]
        labels = {s.index: s.label for s in samples}
        jobs = [
            Job(a, impl, e, i, labels[i], args.budget, args.seed + i, args.time_limit)
            for a in args.attacks
            for e in args.endpoints
            for i in images
            for impl in ("ours", "art")
        ]
        jobs += [
            Job(
                a,
                "art-inprocess",
                "none",
                i,
                labels[i],
                args.budget,
                args.seed + i,
                args.time_limit,
            )
            for a in args.attacks
            for i in images[: args.inprocess_images]
        ]
        todo = [j for j in jobs if j.key not in records]
        log.info("%d runs, %d already done", len(jobs), len(jobs) - len(todo))
        context = multiprocessing.get_context("spawn")
        with (
            ProcessPoolExecutor(args.workers, mp_context=context) as pool,
            path.open("a") as out,
            tqdm(total=len(todo), desc="parity", unit="run") as bar,
        ):
            futures = {}
            for job in todo:
                fn = run_inprocess if job.implementation == "art-inprocess" else run_job
                futures[pool.submit(fn, job, service.url, data.images[job.image])] = job
            for future in as_completed(futures):
                record = judge(future.result(), judges, args.eval_draws)
                records[futures[future].key] = record
                out.write(json.dumps(record) + "\n")
                out.flush()
                bar.update(1)
                bar.set_postfix_str(
                    f"{record['attack']}/{record['implementation']}@{record['endpoint']}"
                )
        for oracle in judges.values():
            oracle.close()
    command = "python -m benchmarks.parity " + " ".join(argv if argv is not None else sys.argv[1:])
    write_page(args.page, records, args, images, command.strip())
    log.info("wrote %s", args.page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
