"""``python -m benchmarks.rays_reference``: our RayS next to its authors' code, over HTTP.

    git clone https://github.com/uclaml/RayS /tmp/RayS
    python -m benchmarks.rays_reference --reference /tmp/RayS --images 6 --budget 10000

On the same correctly classified test images (the grid's: seed 0) and with the same budget of
real queries, against the embedded ResNet-20 without noise and behind label-only SND, it runs

* ``authors``: the RayS authors' ``RayS_Single.RayS`` (Chen & Gu, KDD 2020; the class
  ``attack_natural.py`` runs), unchanged except its model and device: ``predict_label`` asks
  the gateway (each call one real answer) and ``Tensor.cuda`` is the identity, so it runs on
  the CPU. ``order = inf`` and ``early_stopping = False``: it shrinks the radius until the
  budget ends, as the grid runs ours. Its answer is ``x_final``, the last point its bisection
  kept (the point the reference hands over), as it stands when the budget runs out;
* ``ours``: ``rays`` with its defaults (``norm = "inf"``, no early stop).

Every final candidate is judged by the defended endpoint under a separate oracle: success at
an L∞ radius ε when its L∞ distance to x0 is at most ε (the grid's float32 tolerance,
``measures.judged_linf``) and a majority of 10 noisy draws misclassify it
(docs/attacking/protocol.md).
Records go to ``runs/rays/records.jsonl`` (rerun to resume), the page to
``docs/results/rays.md``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from typing import Any

import numpy as np

from attacks_client.attacks import get_attack
from attacks_client.evaluation.measures import judged_linf
from attacks_client.oracles.base import BudgetExhausted, Oracle
from attacks_client.oracles.http import HttpOracle
from benchmarks.reference_runs import (
    Job,
    make_record,
    parser_for,
    run_and_write,
    success_table,
)

log = logging.getLogger("benchmarks.rays_reference")

IMPLEMENTATIONS = ("authors", "ours")
EPSILONS = (0.1, 0.2, 0.3)


def run_authors(job: Job, oracle: Oracle, image: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The authors' RayS on ``image``; its ``x_final`` when it stops or the budget ends."""
    sys.path.insert(0, job.reference)
    import torch

    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    from RayS_Single import RayS  # type: ignore[import-not-found]

    class GatewayModel:
        """``GeneralTorchModel``'s ``predict_label``: one real answer per row."""

        def predict_label(self, x: Any) -> Any:
            batch = x.detach().cpu().numpy().astype(np.float32).reshape(-1, *image.shape)
            return torch.tensor(oracle.labels(batch), dtype=torch.long)

    attack = RayS(GatewayModel(), order=np.inf, epsilon=0.3, early_stopping=False)
    x0 = torch.tensor(image[None])
    y = torch.tensor([job.label])
    stop = "budget"
    # it prints every 10 blocks; our oracle ends it at the budget (the reference checks
    # query_limit only between blocks)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(BudgetExhausted):
        attack(x0, y, seed=job.seed, query_limit=job.budget)
    if attack.x_final is None or not np.isfinite(attack.d_t):
        return None, stop
    return attack.x_final.detach().numpy().reshape(image.shape).astype(np.float32), stop


def run_job(job: Job, url: str, image: np.ndarray, start: np.ndarray | None) -> dict[str, Any]:
    """One run; the record without verdicts (the parent judges). RayS takes no start."""
    begin = time.perf_counter()
    with HttpOracle(url, job.endpoint, output="label", budget=job.budget) as http:
        if job.implementation == "authors":
            candidate, stop = run_authors(job, http, image)
        else:
            result = get_attack("rays")()(http, image, job.label, job.budget, seed=job.seed)
            candidate, stop = result.final_candidate, result.stop_reason
        queries = http.queries
    return make_record(job, image, candidate, queries, stop, begin)


def table(records: list[dict[str, Any]], endpoints: list[str]) -> str:
    """Success at each L∞ ε and the median L∞ (a failed image counts as ∞) per endpoint."""
    return success_table(
        records,
        endpoints,
        IMPLEMENTATIONS,
        EPSILONS,
        distance=lambda r: np.inf if r["linf"] is None else judged_linf(r["linf"]),
        names=("ε∞", "L∞"),
        digits=4,
    )


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(
        __doc__ or "",
        reference="uclaml/RayS",
        implementations=IMPLEMENTATIONS,
        budget=10000,
        endpoints=["none", "snd-0.01"],
        out="runs/rays/records.jsonl",
        page="docs/results/rays.md",
    )
    return run_and_write(
        parser.parse_args(argv),
        argv,
        run_job,
        module="benchmarks.rays_reference",
        title="RayS: ours next to the authors' code",
        doc=__doc__ or "",
        table=table,
    )


if __name__ == "__main__":
    raise SystemExit(main())
