"""What the authors'-code comparisons share (``popskip_reference``, ``rays_reference``).

One local server hosts the embedded ResNet-20 without noise and behind label-only SND; each run
is one implementation on one image at one endpoint with its own budgeted ``HttpOracle``, in a
spawned worker process; the parent judges each final candidate under a separate oracle (a
majority of noisy draws must misclassify it, docs/attacking/protocol.md) and appends the
record to a JSONL file, so a rerun resumes; the page keeps its hand-written reading.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from attacks_client.data import START_POOL, ImageSet, load_images, other_class_start
from attacks_client.evaluation.launch import LocalService
from attacks_client.evaluation.records import majority_misclassified
from attacks_client.evaluation.scoring import select_images
from attacks_client.oracles.http import HttpOracle
from benchmarks.common import machine

log = logging.getLogger(__name__)

ENDPOINTS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "snd-0.001": {"kind": "snd", "sigma": 0.001},
    "snd-0.01": {"kind": "snd", "sigma": 0.01},
    "snd-0.02": {"kind": "snd", "sigma": 0.02},
    "snd-0.05": {"kind": "snd", "sigma": 0.05},
}
READING = "## Reading"

RunJob = Callable[["Job", str, np.ndarray, "np.ndarray | None"], dict[str, Any]]
"""``run_job(job, url, image, start)``: one run, its record with ``candidate`` (module level:
it runs in a spawned process)."""


@dataclass(frozen=True)
class Job:
    implementation: str
    endpoint: str
    image: int
    label: int
    budget: int
    seed: int
    reference: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.implementation, self.endpoint, self.image)


def judge(record: dict[str, Any], judges: dict[str, HttpOracle], draws: int) -> dict[str, Any]:
    """The record with ``adversarial`` (the majority verdict) and ``wrong_votes``; the
    candidate itself dropped."""
    candidate = record.pop("candidate")
    record["adversarial"], record["wrong_votes"] = False, 0
    if candidate is not None:
        ((majority, votes),) = majority_misclassified(
            judges[record["endpoint"]], [candidate], record["label"], draws
        )
        record["adversarial"], record["wrong_votes"] = majority, votes
    return record


def intro(doc: str) -> str:
    """A module docstring as the page's introduction: its command block fenced."""
    _, command, rest = doc.split("\n\n", 2)
    return (
        "```bash\n"
        + textwrap.dedent(command).strip()
        + "\n```\n\n"
        + rest.split("Records go")[0].strip()
    )


def run_comparison(
    run_job: RunJob,
    *,
    implementations: list[str],
    endpoints: list[str],
    images: int,
    budget: int,
    seed: int,
    reference: str,
    eval_draws: int,
    workers: int,
    out: Path,
    desc: str,
) -> list[dict[str, Any]]:
    """Every (endpoint, image, implementation) run not yet in ``out``; all of this
    comparison's records, judged. Natural starts come from the first ``START_POOL`` images."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done[(r["implementation"], r["endpoint"], r["image"])] = r
    data = load_images("embedded")
    names = sorted(set(endpoints) | {"none"})
    models = [{"name": n, "zoo": "resnet20-mnist", "defense": ENDPOINTS[n]} for n in names]
    with LocalService({"models": models, "workers": 2, "torch_threads": 1}) as service:
        judges = {n: HttpOracle(service.url, n) for n in names}
        pool = select_images(data, max(images, START_POOL), seed, judges["none"])
        first = [s.index for s in pool[:START_POOL]]
        start_pool = ImageSet(data.images[first], data.labels[first])
        jobs = [
            Job(impl, e, s.index, s.label, budget, seed + s.index, reference)
            for e in endpoints
            for s in pool[:images]
            for impl in implementations
        ]
        todo = [j for j in jobs if j.key not in done]
        log.info("%d runs, %d already done", len(jobs), len(jobs) - len(todo))
        context = multiprocessing.get_context("spawn")
        with (
            ProcessPoolExecutor(workers, mp_context=context) as executor,
            out.open("a") as sink,
            tqdm(total=len(todo), desc=desc, unit="run") as bar,
        ):
            futures = {
                executor.submit(
                    run_job,
                    job,
                    service.url,
                    data.images[job.image],
                    other_class_start(start_pool, job.label),
                ): job
                for job in todo
            }
            for future in as_completed(futures):
                record = judge(future.result(), judges, eval_draws)
                done[futures[future].key] = record
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                bar.update(1)
        for oracle in judges.values():
            oracle.close()
    keys = {j.key for j in jobs}
    return [r for k, r in done.items() if k in keys]


def write_page(page: Path, title: str, doc: str, command: str, table: str) -> None:
    """The page: title, the docstring's introduction, the command and machine, the table, and
    the reading kept from the page as it was (written by hand)."""
    page.parent.mkdir(parents=True, exist_ok=True)
    old = page.read_text() if page.exists() else ""
    reading = old[old.index(READING) :] if READING in old else ""
    page.write_text(
        f"# {title}\n\n"
        + intro(doc)
        + f"\n\nCommand: `{command.strip()}`. Machine: {machine()}.\n\n"
        + table
        + "\n"
        + ("\n" + reading if reading else "")
    )
    log.info("wrote %s", page)


def make_record(
    job: Job,
    image: np.ndarray,
    candidate: np.ndarray | None,
    queries: int,
    stop: str,
    begin: float,
) -> dict[str, Any]:
    """One run's record, without verdicts: the candidate and its L2 and L∞ distances."""
    delta = None if candidate is None else candidate - image
    return {
        "implementation": job.implementation,
        "endpoint": job.endpoint,
        "image": job.image,
        "label": job.label,
        "budget": job.budget,
        "queries": queries,
        "stop_reason": stop,
        "seconds": round(time.perf_counter() - begin, 2),
        "l2": None if delta is None else float(np.linalg.norm(delta)),
        "linf": None if delta is None else float(np.abs(delta).max()),
        "candidate": candidate,
    }


def success_table(
    records: list[dict[str, Any]],
    endpoints: list[str],
    implementations: Sequence[str],
    epsilons: Sequence[float],
    *,
    distance: Callable[[dict[str, Any]], float],
    names: tuple[str, str],
    digits: int,
    tolerance: float = 0.0,
) -> str:
    """Per endpoint and implementation: success at each radius (within it and the majority
    verdict), the median distance (a failed image counts as ∞) and the same unjudged.
    ``distance(record)`` is the candidate's (∞ when none), as compared with a radius;
    ``names`` the radius's and the distance's column names (``ε``, ``L2``); a distance within
    ``tolerance`` (relative) of a radius counts as within it."""
    radius, norm = names
    head = ["Endpoint", "Attack", "Images"] + [f"{radius}={e}" for e in epsilons]
    head += [f"median {norm}", f"median {norm}, unjudged", "queries (mean)", "s/image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for endpoint in endpoints:
        for impl in implementations:
            rows = [r for r in records if r["endpoint"] == endpoint and r["implementation"] == impl]
            if not rows:
                continue
            raw = [distance(r) for r in rows]
            judged = [d if r["adversarial"] else np.inf for d, r in zip(raw, rows, strict=True)]
            hits = [sum(d <= e * (1 + tolerance) for d in judged) for e in epsilons]
            cells = [endpoint, impl, str(len(rows))] + [f"{h}/{len(rows)}" for h in hits]
            cells += [
                f"{float(np.median(judged)):.{digits}f}",
                f"{float(np.median(raw)):.{digits}f}",
                f"{np.mean([r['queries'] for r in rows]):.0f}",
                f"{np.mean([r['seconds'] for r in rows]):.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parser_for(
    doc: str,
    *,
    reference: str,
    implementations: Sequence[str],
    budget: int,
    endpoints: list[str],
    out: str,
    page: str,
) -> argparse.ArgumentParser:
    """The comparison's command line; ``reference`` names the authors' repository."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help=f"a checkout of {reference}")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--budget", type=int, default=budget)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--endpoints", nargs="+", default=endpoints, choices=list(ENDPOINTS))
    parser.add_argument(
        "--implementations",
        nargs="+",
        default=list(implementations),
        choices=list(implementations),
    )
    parser.add_argument("--eval-draws", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--page", type=Path, default=Path(page))
    return parser


def run_and_write(
    args: argparse.Namespace,
    argv: list[str] | None,
    run_job: RunJob,
    *,
    module: str,
    title: str,
    doc: str,
    table: Callable[[list[dict[str, Any]], list[str]], str],
) -> int:
    """Every run of the comparison, then its page."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    records = run_comparison(
        run_job,
        implementations=args.implementations,
        endpoints=args.endpoints,
        images=args.images,
        budget=args.budget,
        seed=args.seed,
        reference=args.reference,
        eval_draws=args.eval_draws,
        workers=args.workers,
        out=args.out,
        desc=module.rsplit("_", 1)[0].rsplit(".", 1)[-1],
    )
    command = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    write_page(args.page, title, doc, command, table(records, args.endpoints))
    return 0
