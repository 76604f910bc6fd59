"""The PopSkipJump reference harness: the table's verdicts."""

from __future__ import annotations

from benchmarks.popskip_reference import table


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
    # ε 1.5: only the first; ε 2.0: two; the median of (1.0, 1.8, ∞) is 1.8, unjudged 1.0
    assert cells[:8] == ["snd-0.01", "ours", "3", "1/3", "2/3", "1.800", "1.000", "100"]
