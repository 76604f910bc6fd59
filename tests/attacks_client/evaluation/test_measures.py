"""The report's cell measures: success counts under the evaluation protocol
(docs/attacking/protocol.md), and Wilson intervals."""

from __future__ import annotations

import math
from typing import Any

import pytest

from attacks_client.evaluation.measures import (
    median_l2,
    success_counts,
    success_rate,
    wilson_interval,
)


def record(l2: float | None, misclassified: bool) -> dict[str, Any]:
    return {"checkpoints": {"1000": {"l2": l2, "misclassified": misclassified}}}


def test_success_needs_both_the_radius_and_a_misclassification() -> None:
    records = [record(1.0, True), record(2.0, True), record(1.0, False), record(None, False)]
    assert success_counts(records, 1000, 1.5) == (1, 4)
    assert success_counts(records, 1000, 2.0) == (2, 4)
    assert success_rate(records, 1000, 2.0) == 0.5
    assert math.isnan(success_rate([], 1000, 2.0))
    assert median_l2(records, 1000) == 1.5  # no candidate counts as an infinite distance


@pytest.mark.parametrize(
    ("hits", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.2775),  # z² / (n + z²): not a point at 0/n
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (45, 50, 0.7864, 0.9565),
    ],
)
def test_wilson_interval_matches_the_closed_form(
    hits: int, n: int, low: float, high: float
) -> None:
    lo, hi = wilson_interval(hits, n)
    assert (lo, hi) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))
    assert lo <= hits / n <= hi


def test_wilson_interval_narrows_with_more_images() -> None:
    widths = [wilson_interval(n // 5, n)[1] - wilson_interval(n // 5, n)[0] for n in (10, 50, 250)]
    assert widths == sorted(widths, reverse=True)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_a_linf_row_is_judged_by_its_linf_distance() -> None:
    def linf_record(l2: float, linf: float, misclassified: bool) -> dict[str, Any]:
        check = {"l2": l2, "linf": linf, "misclassified": misclassified}
        return {"norm": "linf", "checkpoints": {"1000": check}}

    # on the L∞ sphere (float32 rounding of x0 + ε reads a hair beyond ε) and far in L2
    records = [linf_record(6.4, 0.30000001, True), linf_record(2.1, 0.1, True)]
    assert success_counts(records, 1000, 0.3) == (2, 2)
    assert success_counts(records, 1000, 0.1) == (1, 2)
    assert success_counts(records, 1000, 0.05) == (0, 2)
    assert median_l2(records, 1000) == pytest.approx(0.2, abs=1e-5)  # the records' norm
    # an L2 record is still judged in L2 even when it carries its L∞ distance
    l2_record = {"checkpoints": {"1000": {"l2": 1.4, "linf": 0.5, "misclassified": True}}}
    assert success_counts([l2_record], 1000, 1.5) == (1, 1)
