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
