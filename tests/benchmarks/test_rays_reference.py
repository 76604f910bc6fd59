"""The RayS reference harness: the table's verdicts in L∞."""

from __future__ import annotations

from benchmarks.rays_reference import table


def test_the_table_judges_linf_with_the_float32_tolerance_and_the_majority_verdict() -> None:
    def record(linf: float | None, adversarial: bool) -> dict[str, object]:
        return {
            "implementation": "authors",
            "endpoint": "none",
            "linf": linf,
            "adversarial": adversarial,
            "queries": 10,
            "seconds": 2.0,
        }

    # 0.1 + 1e-7 is 0.1 in float32 arithmetic: within ε∞ 0.1; 0.25 misjudged by the endpoint
    rows = [record(0.1 + 1e-7, True), record(0.25, False), record(None, False)]
    line = table(rows, ["none"]).splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:6] == ["none", "authors", "3", "1/3", "1/3", "1/3"]
    # median of (0.1, ∞, ∞) is ∞; unjudged (0.1, 0.25, ∞) is 0.25
    assert cells[6:9] == ["inf", "0.2500", "10"]
