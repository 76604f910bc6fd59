"""The parity table's rules: shared images only, left-out reasons, the targets."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.parity.table import compare, parity_table


def row(
    impl: str,
    image: int,
    l2: float | None,
    adversarial: bool,
    *,
    started: bool = True,
    stop: str = "budget",
) -> dict[str, Any]:
    return {
        "attack": "hsja",
        "implementation": impl,
        "endpoint": "snd",
        "image": image,
        "l2": l2,
        "defended": adversarial,
        "h": adversarial,
        "started": started,
        "stop_reason": stop,
        "queries": 100,
        "seconds": 1.0,
    }


def records(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    return {(r["attack"], r["implementation"], r["endpoint"], r["image"]): r for r in rows}


def test_cells_compare_shared_images_and_say_what_was_left_out() -> None:
    rows = [
        row("ours", 0, 1.2, True),
        row("art", 0, 1.4, True),
        row("ours", 1, 1.8, True),
        row("art", 1, 1.9, False),
        row("ours", 2, 1.0, True),
        row("art", 2, None, False, started=False),
        row("ours", 3, 1.0, True),
        row("art", 3, 1.0, True, stop="time-limit"),
    ]
    cell = compare(records(rows), "hsja", "snd", [0, 1, 2, 3, 4], "defended")
    assert cell["n"] == 2
    assert cell["left_out"] == {"ART found no start": 1, "time limit": 1, "not run": 1}
    assert cell["ours"]["hits"] == {1.5: 1, 2.0: 2}
    assert cell["art"]["hits"] == {1.5: 1, 2.0: 1}
    assert cell["ours"]["median_l2"] == 1.5
    assert math.isinf(cell["art"]["median_l2"])  # one of two failed: the median is infinite
    assert cell["meets"]


def test_a_cell_misses_its_target_when_ours_is_weaker() -> None:
    rows = []
    for image in range(10):
        rows.append(row("art", image, 1.0, True))
        rows.append(row("ours", image, 1.0, image < 8))  # 80% against ART's 100%
    cell = compare(records(rows), "hsja", "snd", list(range(10)), "defended")
    assert not cell["meets"]
    table = parity_table(records(rows), ["hsja"], ["snd"], list(range(10)), "defended")
    assert "| hsja | snd | 10 | 8/10" in table and "**no**" in table
    # a larger median L2 (more than 1.1 x ART's) also misses
    rows = [row("art", i, 1.0, True) for i in range(5)] + [
        row("ours", i, 1.2, True) for i in range(5)
    ]
    assert not compare(records(rows), "hsja", "snd", list(range(5)), "defended")["meets"]


def test_square_linf_is_judged_in_its_own_ball_within_float32_rounding() -> None:
    """L∞ ≤ 0.3 (10⁻⁶ relative rounding allowed), whatever the L2; its own table after L2's."""
    rows = [row("ours", 0, 1.0, True), row("art", 0, 1.0, True)]  # an hsja cell
    for image, (ours, art) in enumerate([(0.3000001, 0.31), (0.3, 0.3)]):
        for impl, linf in (("ours", ours), ("art", art)):
            rows.append({**row(impl, image, 6.0, True), "attack": "square-linf", "linf": linf})
    cell = compare(records(rows), "square-linf", "snd", [0, 1], "defended")
    assert cell["ours"]["hits"] == {0.3: 2} and cell["art"]["hits"] == {0.3: 1}
    assert cell["meets"] and math.isclose(cell["ours"]["median_l2"], 0.3, rel_tol=1e-6)  # L∞
    table = parity_table(records(rows), ["hsja", "square-linf"], ["snd"], [0, 1], "defended")
    l2_table, linf_table = table.split("\n\n")
    assert "| hsja | snd | 1 | 1/1" in l2_table and "square-linf" not in l2_table
    assert "| ε∞=0.3 ours | ε∞=0.3 ART | median L∞ ours |" in linf_table
    assert "| square-linf | snd | 2 | 2/2 [34–100] | 1/2 [9–91] |" in linf_table


def test_a_cell_where_art_asked_non_finite_images_says_art_is_broken() -> None:
    rows = []
    for image, count in enumerate([0, 12, 3]):
        rows.append({**row("ours", image, 1.0, True), "nonfinite": 0})
        rows.append({**row("art", image, 1.0, True, started=image > 0), "nonfinite": count})
    table = parity_table(records(rows), ["hsja"], ["snd"], [0, 1, 2], "defended")
    # counted over every run of the cell's images, left-out ones included
    assert "| 0 | **15 in 2/3 runs: ART broken** |" in table
