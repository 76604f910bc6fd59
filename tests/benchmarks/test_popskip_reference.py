"""The PopSkipJump reference harness: the authors' start rule and the table's verdicts."""

from __future__ import annotations

import numpy as np

from benchmarks.popskip_reference import reference_start, table


def test_the_start_is_the_authors_experiment_mode_start() -> None:
    """img_utils.find_adversarial_images: the pool's first image, unless the attacked image
    has its class; then the last pool image of another class."""
    labels = [3, 3, 5, 7, 3]
    images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)
    assert reference_start(labels, images, 5)[0, 0, 0] == 0
    assert reference_start(labels, images, 3)[0, 0, 0] == 3  # the 7, not the 5


def test_the_table_counts_a_candidate_the_endpoint_does_not_misclassify_as_a_failure() -> None:
    def record(l2: float, adversarial: bool) -> dict[str, object]:
        return {
            "implementation": "ours",
            "endpoint": "snd-0.01",
            "l2": l2,
            "adversarial": adversarial,
            "queries": 100,
            "seconds": 1.0,
        }

    rows = [record(1.0, True), record(1.8, True), record(0.5, False)]
    line = table(rows, ["snd-0.01"]).splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    # ε 1.5: only the first; ε 2.0: two; the median of (1.0, 1.8, ∞) is 1.8
    assert cells[:7] == ["snd-0.01", "ours", "3", "1/3", "2/3", "1.800", "100"]
