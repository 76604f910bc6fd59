"""``python -m benchmarks.popskip_reference``: our PopSkipJump next to its authors' code, over HTTP.

    git clone https://github.com/cjsg/PopSkipJump /tmp/PopSkipJump
    python -m benchmarks.popskip_reference --reference /tmp/PopSkipJump --images 6 --budget 5000

One local server hosts the embedded ResNet-20 without noise and behind label-only SND. On the
same correctly classified test images (the grid's: seed 0) and with the same budget of real
queries, it runs

* ``authors``: the PopSkipJump authors' ``popskip.PopSkipJump`` (Simon-Gabriel et al., ICML
  2021), unchanged except its model interface: each row the attack asks about is one real answer
  from the gateway (``ModelInterface.decision`` with ``num_queries = k`` sends the batch k times).
  Its defaults (``defaultparams.DefaultParams``) with ``distance = "l2"``, started as its
  experiment mode starts (``img_utils.find_adversarial_images``: a test image of another class,
  set without a query). Its answer at the budget is the last boundary point its info-max
  bisection returned (``bin_search_step``), the point the reference hands over;
* ``ours``: ``popskipjump`` with its defaults, offered the same start (one query checks it);
  ``ours-noise``: the same from HSJA's uniform-noise start (what it does when offered none);
* ``hsja``, ``hsja-t5``, ``hsja-t10``: our HSJA, and the paper's adaptive HSJA that asks every
  query T times and votes (``RepeatOracle``), at the same budget of real queries.

Every final candidate is judged by the defended endpoint under a separate oracle: success at ε
when its L2 to x0 is at most ε and a majority of 10 noisy draws misclassify it (DESIGN section
7). Records go to ``runs/popskip/records.jsonl`` (rerun to resume), the page to
``docs/results/popskipjump.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from attacks_client.attacks import get_attack
from attacks_client.data import START_POOL, ImageSet, load_images, other_class_start
from attacks_client.evaluation.launch import LocalService
from attacks_client.evaluation.records import majority_misclassified
from attacks_client.evaluation.scoring import select_images
from attacks_client.oracles.base import BudgetExhausted, Oracle
from attacks_client.oracles.http import HttpOracle
from attacks_client.oracles.repeat import RepeatOracle
from benchmarks.common import machine

log = logging.getLogger("benchmarks.popskip_reference")

ENDPOINTS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "snd-0.001": {"kind": "snd", "sigma": 0.001},
    "snd-0.01": {"kind": "snd", "sigma": 0.01},
    "snd-0.02": {"kind": "snd", "sigma": 0.02},
    "snd-0.05": {"kind": "snd", "sigma": 0.05},
}
IMPLEMENTATIONS = ("authors", "ours", "ours-noise", "hsja", "hsja-t5", "hsja-t10")
EPSILONS = (1.5, 2.0)
READING = "## Reading"


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


def run_authors(
    job: Job, oracle: Oracle, image: np.ndarray, start: np.ndarray
) -> tuple[np.ndarray | None, str]:
    """The authors' PopSkipJump on ``image``; its last boundary point within the budget."""
    sys.path.insert(0, job.reference)
    import torch
    from defaultparams import DefaultParams  # type: ignore[import-not-found]
    from model_interface import ModelInterface  # type: ignore[import-not-found]
    from popskip import PopSkipJump as AuthorsPopSkipJump  # type: ignore[import-not-found]

    torch.manual_seed(job.seed)
    shape = tuple(image.shape[1:])  # the reference's MNIST images are (28, 28)

    class GatewayInterface(ModelInterface):  # type: ignore[misc]
        """Every row one real answer of the gateway (label-only)."""

        def __init__(self) -> None:
            self.models: list[Any] = []
            self.bounds = (0, 1)
            self.model_calls = 0
            # the bisection (infomax.get_bernoulli_probs) reads the label's probability from
            # get_probs_ and draws y from it with sample_bernoulli (which counts the call); a
            # "deterministic" interface takes argmax of get_probs_: one real answer per row
            self.noise = "deterministic"

        def get_probs_(self, images: Any) -> Any:
            x = images.detach().cpu().numpy().astype(np.float32).reshape(-1, *image.shape)
            answers = torch.tensor(oracle.labels(x), dtype=torch.long)
            return torch.nn.functional.one_hot(answers, 10).float()

        def decision(
            self, batch: Any, label: int, num_queries: int = 1, targeted: bool = False
        ) -> Any:
            rows = batch.repeat(num_queries, *([1] * (batch.ndim - 1)))
            x = rows.detach().cpu().numpy().astype(np.float32).reshape(-1, *image.shape)
            answers = oracle.labels(x)
            self.model_calls += len(x)
            wrong = torch.tensor((answers == label) if targeted else (answers != label))
            return wrong.float().view(num_queries, len(batch)).transpose(0, 1)

    found: list[Any] = []

    class Recorded(AuthorsPopSkipJump):  # type: ignore[misc]
        def bin_search_step(self, *args: Any, **kwargs: Any) -> Any:
            out = super().bin_search_step(*args, **kwargs)
            found.append(out[0].detach().clone())
            return out

    params = DefaultParams()
    params.distance = "l2"
    attack = Recorded(GatewayInterface(), shape, torch.device("cpu"), params)
    x0 = torch.tensor(image.reshape(shape))
    try:
        start_ = torch.tensor(start.reshape(shape))
        attack.attack([x0], [job.label], [start_], [0], iterations=params.num_iterations)
        stop = "converged"
    except BudgetExhausted:
        stop = "budget"
    if not found:
        return None, stop
    return found[-1].numpy().reshape(image.shape).astype(np.float32), stop


def run_job(job: Job, url: str, image: np.ndarray, start: np.ndarray | None) -> dict[str, Any]:
    """One run; the record without verdicts (the parent judges)."""
    begin = time.perf_counter()
    with HttpOracle(url, job.endpoint, output="label", budget=job.budget) as http:
        if job.implementation == "authors":
            assert start is not None, "the pool holds one class only"
            candidate, stop = run_authors(job, http, image, start)
        else:
            name, repeat = {
                "ours": ("popskipjump", 1),
                "ours-noise": ("popskipjump", 1),
                "hsja": ("hsja", 1),
                "hsja-t5": ("hsja", 5),
                "hsja-t10": ("hsja", 10),
            }[job.implementation]
            oracle: Oracle = RepeatOracle(http, repeat) if repeat > 1 else http
            # HSJA and ours-noise: the noise start (ART's, HSJA's)
            offered = start if job.implementation == "ours" else None
            result = get_attack(name)()(
                oracle, image, job.label, job.budget, seed=job.seed, start=offered
            )
            candidate, stop = result.final_candidate, result.stop_reason
        queries = http.queries
    l2 = None if candidate is None else float(np.linalg.norm(candidate - image))
    return {
        "implementation": job.implementation,
        "endpoint": job.endpoint,
        "image": job.image,
        "label": job.label,
        "budget": job.budget,
        "queries": queries,
        "stop_reason": stop,
        "seconds": round(time.perf_counter() - begin, 2),
        "l2": l2,
        "candidate": candidate,
    }


def judge(record: dict[str, Any], judges: dict[str, HttpOracle], draws: int) -> dict[str, Any]:
    candidate = record.pop("candidate")
    record["adversarial"], record["wrong_votes"] = False, 0
    if candidate is not None:
        ((majority, votes),) = majority_misclassified(
            judges[record["endpoint"]], [candidate], record["label"], draws
        )
        record["adversarial"], record["wrong_votes"] = majority, votes
    return record


def table(records: list[dict[str, Any]], endpoints: list[str]) -> str:
    """Success at each ε and the median L2 (a failed image counts as ∞) per endpoint."""
    head = ["Endpoint", "Attack", "Images"] + [f"ε={e}" for e in EPSILONS]
    head += ["median L2", "median L2, unjudged", "queries (mean)", "s/image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for endpoint in endpoints:
        for impl in IMPLEMENTATIONS:
            rows = [r for r in records if r["endpoint"] == endpoint and r["implementation"] == impl]
            if not rows:
                continue
            dist = [r["l2"] if r["adversarial"] else np.inf for r in rows]
            hits = [sum(d <= e * (1 + 1e-6) for d in dist) for e in EPSILONS]
            cells = [endpoint, impl, str(len(rows))] + [f"{h}/{len(rows)}" for h in hits]
            raw = [np.inf if r["l2"] is None else r["l2"] for r in rows]
            cells += [
                f"{float(np.median(dist)):.3f}",
                f"{float(np.median(raw)):.3f}",
                f"{np.mean([r['queries'] for r in rows]):.0f}",
                f"{np.mean([r['seconds'] for r in rows]):.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def intro(doc: str) -> str:
    """The module docstring as the page's introduction: its command block fenced."""
    _, command, rest = doc.split("\n\n", 2)
    return (
        "```bash\n"
        + textwrap.dedent(command).strip()
        + "\n```\n\n"
        + rest.split("Records go")[0].strip()
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="a checkout of cjsg/PopSkipJump")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--budget", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--endpoints", nargs="+", default=["snd-0.01"], choices=list(ENDPOINTS))
    parser.add_argument(
        "--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS
    )
    parser.add_argument("--eval-draws", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/popskip/records.jsonl"))
    parser.add_argument("--page", type=Path, default=Path("docs/results/popskipjump.md"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            done[(r["implementation"], r["endpoint"], r["image"])] = r
    data = load_images("embedded")
    names = sorted(set(args.endpoints) | {"none"})
    models = [{"name": n, "zoo": "resnet20-mnist", "defense": ENDPOINTS[n]} for n in names]
    with LocalService({"models": models, "workers": 2, "torch_threads": 1}) as service:
        judges = {n: HttpOracle(service.url, n) for n in names}
        pool = select_images(data, max(args.images, 10), args.seed, judges["none"])
        samples = pool[: args.images]
        first = [s.index for s in pool[:START_POOL]]
        start_pool = ImageSet(data.images[first], data.labels[first])
        jobs = [
            Job(impl, e, s.index, s.label, args.budget, args.seed + s.index, args.reference)
            for e in args.endpoints
            for s in samples
            for impl in args.implementations
        ]
        todo = [j for j in jobs if j.key not in done]
        log.info("%d runs, %d already done", len(jobs), len(jobs) - len(todo))
        context = multiprocessing.get_context("spawn")
        with (
            ProcessPoolExecutor(args.workers, mp_context=context) as executor,
            args.out.open("a") as out,
            tqdm(total=len(todo), desc="popskip", unit="run") as bar,
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
                record = judge(future.result(), judges, args.eval_draws)
                done[futures[future].key] = record
                out.write(json.dumps(record) + "\n")
                out.flush()
                bar.update(1)
        for oracle in judges.values():
            oracle.close()
    keys = {j.key for j in jobs}
    records = [r for k, r in done.items() if k in keys]
    command = "python -m benchmarks.popskip_reference " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    args.page.parent.mkdir(parents=True, exist_ok=True)
    old = args.page.read_text() if args.page.exists() else ""
    reading = old[old.index(READING) :] if READING in old else ""  # kept: written by hand
    args.page.write_text(
        "# PopSkipJump: ours next to the authors' code\n\n"
        + intro(__doc__ or "")
        + f"\n\nCommand: `{command.strip()}`. Machine: {machine()}.\n\n"
        + table(records, args.endpoints)
        + "\n"
        + ("\n" + reading if reading else "")
    )
    log.info("wrote %s", args.page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
