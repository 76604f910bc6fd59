"""The parity page: ours next to ART per (attack, endpoint), under one verdict rule.

A cell compares the images where both implementations could start (ART's uniform-noise start
fails on every image of the class such noise falls into; a run that hit the time limit is left
out as well), and says how many were left out and why.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from attacks_client.evaluation.measures import wilson_interval

EPSILONS = (1.5, 2.0)
SUCCESS_MARGIN = 0.10  # ours >= ART - 10 points
L2_RATIO = 1.1  # our median L2 <= 1.1 x ART's

Records = dict[tuple[str, str, str, int], dict[str, Any]]


def _hits(rows: list[dict[str, Any]], epsilon: float, rule: str) -> int:
    return sum(bool(r[rule] and r["l2"] is not None and r["l2"] <= epsilon) for r in rows)


def _median_l2(rows: list[dict[str, Any]], rule: str) -> float:
    """Median L2 of the final candidates, a candidate the rule does not call adversarial (or
    none at all) counting as infinitely far."""
    values = [r["l2"] if r["l2"] is not None and r[rule] else math.inf for r in rows]
    return float(statistics.median(values)) if values else math.nan


def _rate(hits: int, n: int) -> str:
    if n == 0:
        return "–"
    low, high = wilson_interval(hits, n)
    return f"{hits}/{n} [{100 * low:.0f}–{100 * high:.0f}]"


def _l2(value: float) -> str:
    return "∞" if math.isinf(value) else ("–" if math.isnan(value) else f"{value:.3f}")


def compare(
    records: Records, attack: str, endpoint: str, images: list[int], rule: str
) -> dict[str, Any]:
    """The cell of ``attack`` at ``endpoint``: both implementations on the shared images."""
    pairs = []
    left_out: dict[str, int] = defaultdict(int)
    for image in images:
        ours = records.get((attack, "ours", endpoint, image))
        art = records.get((attack, "art", endpoint, image))
        if ours is None or art is None:
            left_out["not run"] += 1
        elif not art["started"]:
            left_out["ART found no start"] += 1
        elif not ours["started"]:
            left_out["ours found no start"] += 1
        elif "time-limit" in (ours["stop_reason"], art["stop_reason"]):
            left_out["time limit"] += 1
        else:
            pairs.append((ours, art))
    cell: dict[str, Any] = {"n": len(pairs), "left_out": dict(left_out)}
    for name, index in (("ours", 0), ("art", 1)):
        rows = [p[index] for p in pairs]
        cell[name] = {
            "hits": {eps: _hits(rows, eps, rule) for eps in EPSILONS},
            "median_l2": _median_l2(rows, rule),
            "queries": statistics.mean(r["queries"] for r in rows) if rows else math.nan,
            "seconds": statistics.mean(r["seconds"] for r in rows) if rows else math.nan,
        }
    n = cell["n"]
    ok_success = all(
        cell["ours"]["hits"][e] >= cell["art"]["hits"][e] - SUCCESS_MARGIN * n for e in EPSILONS
    )
    ours_l2, art_l2 = cell["ours"]["median_l2"], cell["art"]["median_l2"]
    ok_l2 = ours_l2 <= L2_RATIO * art_l2 or (math.isinf(ours_l2) and math.isinf(art_l2))
    cell["meets"] = n > 0 and ok_success and ok_l2
    return cell


def parity_table(
    records: Records, attacks: list[str], endpoints: list[str], images: list[int], rule: str
) -> str:
    head = (
        "| Attack | Endpoint | Images | ε=1.5 ours | ε=1.5 ART | ε=2.0 ours | ε=2.0 ART "
        "| median L2 ours | median L2 ART | queries ours | queries ART | s/image ours "
        "| s/image ART | target met | left out |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for attack in attacks:
        for endpoint in endpoints:
            c = compare(records, attack, endpoint, images, rule)
            ours, art, n = c["ours"], c["art"], c["n"]
            left = ", ".join(f"{v} {k}" for k, v in c["left_out"].items()) or "0"
            lines.append(
                f"| {attack} | {endpoint} | {n} | {_rate(ours['hits'][1.5], n)} | "
                f"{_rate(art['hits'][1.5], n)} | {_rate(ours['hits'][2.0], n)} | "
                f"{_rate(art['hits'][2.0], n)} | {_l2(ours['median_l2'])} | "
                f"{_l2(art['median_l2'])} | {ours['queries']:.0f} | {art['queries']:.0f} | "
                f"{ours['seconds']:.2f} | {art['seconds']:.2f} | "
                f"{'yes' if c['meets'] else '**no**'} | {left} |"
            )
    return "\n".join(lines) + "\n"


def speed_table(records: Records, attacks: list[str], endpoint: str) -> str:
    """Seconds per image: ours over HTTP, ART over HTTP, ART in-process, with queries."""
    lines = [
        "| Attack | ours over HTTP: s/image (queries) | ART over HTTP | ART in-process "
        "| ours HTTP ÷ ART in-process (s per query) |",
        "|---|---|---|---|---|",
    ]
    for attack in attacks:
        cells = []
        per_query = []
        for impl in ("ours", "art", "art-inprocess"):
            rows = [
                r
                for (a, i, e, _), r in records.items()
                if a == attack
                and i == impl
                and e == endpoint
                and r["started"]
                and r["stop_reason"] != "time-limit"
            ]
            if not rows:
                cells.append("–")
                per_query.append(math.nan)
                continue
            seconds = statistics.mean(r["seconds"] for r in rows)
            queries = statistics.mean(r["queries"] for r in rows)
            cells.append(f"{seconds:.2f} ({queries:.0f}; n={len(rows)})")
            per_query.append(seconds / queries if queries else math.nan)
        ratio = per_query[0] / per_query[2] if per_query[2] else math.nan
        lines.append(
            f"| {attack} | {' | '.join(cells)} | {'–' if math.isnan(ratio) else f'{ratio:.2f}'} |"
        )
    return "\n".join(lines) + "\n"
