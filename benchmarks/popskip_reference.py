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
when its L2 to x0 is at most ε and a majority of 10 noisy draws misclassify it (the evaluation
protocol, docs/attacking/protocol.md). Records go to ``runs/popskip/records.jsonl`` (rerun to
resume), the page to ``docs/results/popskipjump.md``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import numpy as np

from attacks_client.attacks import get_attack
from attacks_client.oracles.base import BudgetExhausted, Oracle
from attacks_client.oracles.http import HttpOracle
from attacks_client.oracles.repeat import RepeatOracle
from benchmarks.reference_runs import (
    Job,
    make_record,
    parser_for,
    run_and_write,
    success_table,
)

log = logging.getLogger("benchmarks.popskip_reference")

IMPLEMENTATIONS = ("authors", "ours", "ours-noise", "hsja", "hsja-t5", "hsja-t10")
EPSILONS = (1.5, 2.0)


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
    return make_record(job, image, candidate, queries, stop, begin)


def table(records: list[dict[str, Any]], endpoints: list[str]) -> str:
    """Success at each ε and the median L2 (a failed image counts as ∞) per endpoint."""
    return success_table(
        records,
        endpoints,
        IMPLEMENTATIONS,
        EPSILONS,
        distance=lambda r: np.inf if r["l2"] is None else r["l2"],
        names=("ε", "L2"),
        digits=3,
        tolerance=1e-6,  # an L2 of exactly ε reads a few ulp over in float32
    )


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(
        __doc__ or "",
        reference="cjsg/PopSkipJump",
        implementations=IMPLEMENTATIONS,
        budget=5000,
        endpoints=["snd-0.01"],
        out="runs/popskip/records.jsonl",
        page="docs/results/popskipjump.md",
    )
    return run_and_write(
        parser.parse_args(argv),
        argv,
        run_job,
        module="benchmarks.popskip_reference",
        title="PopSkipJump: ours next to the authors' code",
        doc=__doc__ or "",
        table=table,
    )


if __name__ == "__main__":
    raise SystemExit(main())
