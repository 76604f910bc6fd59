"""What the report measures on a cell of records (one attack on one endpoint).

``success_rate`` follows the evaluation protocol (docs/attacking/protocol.md): a record
succeeds at ``q`` when its candidate after ``q`` queries lies within ``epsilon`` and the
attacked endpoint misclassified it. The Wilson score interval gives the uncertainty of a rate
over n images (Wilson 1927; it stays inside [0, 1] and is sound at 0/n and n/n, where the
normal approximation collapses to a point).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

LINF_TOLERANCE = 1e-6
"""float32 rounding of x0 ± ε: a candidate on the L∞ sphere reads up to a few 1e-8 beyond it."""


def judged_linf(value: float) -> float:
    """An L∞ distance as it is compared with a radius: less the float32 rounding tolerance."""
    return max(float(value) - LINF_TOLERANCE, 0.0)


def distance(record: dict[str, Any], checkpoint: dict[str, Any]) -> float | None:
    """The candidate's distance in the norm the record is judged in (L2 unless ``linf``)."""
    if record.get("norm") == "linf":
        value = checkpoint.get("linf")
        return None if value is None else judged_linf(value)
    return checkpoint["l2"]


def success_counts(
    records: list[dict[str, Any]],
    q: int,
    epsilon: float,
    misclassified: Callable[[dict[str, Any]], bool | None] | None = None,
) -> tuple[int, int]:
    """(successes, images) at checkpoint ``q`` and radius ``epsilon``. ``misclassified(record)``
    replaces the defended endpoint's stored verdict (e.g. the noise-free reference's); a record
    it answers None for was not judged and is left out."""
    hits = n = 0
    for record in records:
        checkpoint = record["checkpoints"][str(q)]
        verdict = checkpoint["misclassified"] if misclassified is None else misclassified(record)
        if verdict is None:
            continue
        n += 1
        d = distance(record, checkpoint)
        hits += bool(verdict and d is not None and d <= epsilon)
    return hits, n


def success_rate(records: list[dict[str, Any]], q: int, epsilon: float) -> float:
    hits, n = success_counts(records, q, epsilon)
    return hits / n if n else math.nan


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate (95% for ``z = 1.96``)."""
    if n <= 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_query_l2(records: list[dict[str, Any]], q: int) -> float:
    values = [r["checkpoints"][str(q)]["query_l2"] for r in records]
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else math.nan


def median_l2(records: list[dict[str, Any]], q: int) -> float:
    """Median candidate distance at ``q`` in the records' norm (L2, or L∞ for ``linf`` rows);
    an image without a candidate counts as ∞."""
    values = [distance(r, r["checkpoints"][str(q)]) for r in records]
    return float(np.median([math.inf if v is None else v for v in values])) if values else math.nan


def p_mis(records: list[dict[str, Any]]) -> float:
    stats = [r["p_mis"] for r in records if r.get("p_mis")]
    samples = sum(s["samples"] for s in stats)
    return sum(s["mismatches"] for s in stats) / samples if samples else math.nan


def reference_success_counts(
    records: list[dict[str, Any]],
    judgements: dict[tuple[str, str, int], dict[str, bool | None]],
    q: int,
    epsilon: float,
) -> tuple[int, int]:
    """(successes, images judged) when the noise-free reference h, not the defended endpoint,
    decides whether the candidate after ``q`` queries is adversarial."""

    def by_reference(record: dict[str, Any]) -> bool | None:
        verdicts = judgements.get((record["attack"], record["endpoint"], record["image"]))
        return None if verdicts is None else bool(verdicts.get(str(q)))

    return success_counts(records, q, epsilon, by_reference)
