"""Running an attack over a set of images and scoring it (the evaluation protocol,
docs/attacking/protocol.md).

The pieces of the single-attack command (``python -m attacks_client <attack>``):
:func:`select_images` (N correctly classified images, fixed seed), :func:`misclassified` (the
evaluator's majority vote), :func:`score_result` (one JSONL record per attacked image),
:func:`summarize` (the table rows) and :func:`image_seed`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks_client.attacks import AttackResult
from attacks_client.data import ImageSet
from attacks_client.evaluation.measures import judged_linf
from attacks_client.evaluation.records import linf_distance
from attacks_client.oracles import Oracle


@dataclass(frozen=True)
class Sample:
    """One image to attack: its index in the data source, pixels and label."""

    index: int
    image: np.ndarray
    label: int


# -- images and evaluation ----------------------------------------------------------------------


def misclassified(
    evaluator: Oracle,
    candidates: np.ndarray,
    label: int,
    draws: int,
    target: int | None = None,
) -> np.ndarray:
    """Boolean per candidate: adversarial in a strict majority of ``draws`` evaluator draws
    (all draws of all candidates in one batch)."""
    if len(candidates) == 0:
        return np.zeros(0, bool)
    votes = evaluator.labels(np.repeat(candidates, draws, axis=0)).reshape(len(candidates), draws)
    hits = votes == target if target is not None else votes != label
    return np.asarray(hits.sum(1) * 2 > draws)


def select_images(
    data: ImageSet, n: int, seed: int, evaluator: Oracle, draws: int = 1, chunk: int = 32
) -> list[Sample]:
    """The first ``n`` images, in a seeded random order, that the evaluator classifies
    correctly (majority of ``draws``)."""
    order = np.random.default_rng(seed).permutation(len(data))
    chosen: list[Sample] = []
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        votes = evaluator.labels(np.repeat(data.images[idx], draws, axis=0))
        votes = votes.reshape(len(idx), draws)
        correct = (votes == data.labels[idx][:, None]).sum(1) * 2 > draws
        for i, ok in zip(idx, correct, strict=True):
            if ok:
                chosen.append(Sample(int(i), data.images[i], int(data.labels[i])))
                if len(chosen) == n:
                    return chosen
    return chosen


def checkpoints_for(requested: Sequence[int], budget: int) -> list[int]:
    """The requested checkpoints within the budget, plus the budget itself."""
    points = sorted({q for q in requested if q <= budget} | {budget})
    return points


def _finite(value: float, digits: int = 5) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def score_result(
    result: AttackResult,
    sample: Sample,
    evaluator: Oracle,
    checkpoints: Sequence[int],
    epsilons: Sequence[float],
    draws: int,
    *,
    stride: int = 10,
    extra: dict[str, Any] | None = None,
    norm: str = "l2",
) -> dict[str, Any]:
    """The JSONL record of one attacked image, with the evaluator's verdicts. ``success`` is
    judged in ``norm`` (``l2`` or ``linf``) at ``epsilons``; both distances are recorded."""
    if norm not in ("l2", "linf"):
        raise ValueError(f"norm must be 'l2' or 'linf', not {norm!r}")
    candidates = [result.candidate_at(q) for q in checkpoints]
    present = [i for i, c in enumerate(candidates) if c is not None]
    verdict = np.zeros(len(checkpoints), bool)
    if present:
        batch = np.stack([candidates[i] for i in present])  # type: ignore[misc]
        verdict[present] = misclassified(evaluator, batch, sample.label, draws)
    l2 = [result.l2_at(q) for q in checkpoints]
    found = [None if c is None else linf_distance(c, result.x0) for c in candidates]
    linf = [math.inf if d is None else d for d in found]
    judged = [judged_linf(d) for d in linf] if norm == "linf" else l2  # the grid's rule
    query_l2 = result.query_l2
    at_query = [
        _finite(float(query_l2[min(q, len(query_l2)) - 1])) if len(query_l2) else None
        for q in checkpoints
    ]
    record: dict[str, Any] = {
        "attack": result.attack,
        "params": _jsonable(result.params),
        "image_index": sample.index,
        "label": sample.label,
        "budget": result.budget,
        "queries": result.queries,
        "reference_queries": result.reference_queries,
        "stop_reason": result.stop_reason,
        "wall_time": round(result.wall_time, 3),
        "checkpoints": list(checkpoints),
        "l2": [_finite(v) for v in l2],
        "linf": [_finite(v) for v in linf],
        "norm": norm,
        "misclassified": verdict.tolist(),
        "success": {
            f"{eps:g}": [bool(v and d <= eps) for v, d in zip(verdict, judged, strict=True)]
            for eps in epsilons
        },
        "query_l2_at": at_query,
        "updates": [[u.queries, _finite(u.l2)] for u in result.updates],
        "query_l2_stride": stride,
        "query_l2": [round(float(v), 4) for v in query_l2[::stride]],
    }
    if extra:
        record.update(extra)
    return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def summarize(records: Sequence[dict[str, Any]], epsilons: Sequence[float]) -> list[dict[str, Any]]:
    """Per checkpoint: success rate per epsilon, median/mean candidate L2, mean query L2."""
    if not records:
        return []
    rows = []
    for j, q in enumerate(records[0]["checkpoints"]):
        l2 = np.array([math.inf if r["l2"][j] is None else r["l2"][j] for r in records])
        finite = l2[np.isfinite(l2)]
        at_query = [r["query_l2_at"][j] for r in records if r["query_l2_at"][j] is not None]
        rows.append(
            {
                "queries": q,
                "success": {
                    f"{e:g}": float(np.mean([r["success"][f"{e:g}"][j] for r in records]))
                    for e in epsilons
                },
                "median_l2": float(np.median(l2)),
                "mean_l2": float(finite.mean()) if len(finite) else math.inf,
                "found": int(len(finite)),
                "mean_query_l2": float(np.mean(at_query)) if at_query else math.nan,
            }
        )
    return rows


def image_seed(seed: int, index: int) -> int:
    """A per-image attack seed derived from the run seed and the image index."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
