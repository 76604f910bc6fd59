"""The parity page: ours next to ART per (attack, endpoint), under one verdict rule.

A cell compares the images where both implementations could start (ART's uniform-noise start
fails on every image of the class such noise falls into; a run that hit the time limit is left
out as well), and says how many were left out and why. Each attack is measured in its ball
(:class:`Ball`: L2 at ε = 1.5 and 2.0, the L∞ Square Attack at ε∞ = 0.3); the non-finite images
each implementation asked about are counted per cell, and a cell with any is marked broken.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from attacks_client.attacks.square import DEFAULT_EPSILON
from attacks_client.evaluation.measures import wilson_interval

SUCCESS_MARGIN = 0.10  # ours >= ART - 10 points
L2_RATIO = 1.1  # our median distance <= 1.1 x ART's
ROUNDING = 1e-6  # a distance within float32 rounding of ε (relative) is within ε

Records = dict[tuple[str, str, str, int], dict[str, Any]]


@dataclass(frozen=True)
class Ball:
    """Where an attack's candidates are measured: the record's distance and the radii."""

    key: str  # "l2" | "linf"
    name: str  # "L2" | "L∞"
    radius: str  # how a column names a radius: "ε" | "ε∞"
    epsilons: tuple[float, ...]


L2 = Ball("l2", "L2", "ε", (1.5, 2.0))
LINF = Ball("linf", "L∞", "ε∞", (DEFAULT_EPSILON["inf"],))
BALLS = {"square-linf": LINF}
EPSILONS = L2.epsilons


def ball_of(attack: str) -> Ball:
    return BALLS.get(attack, L2)


def _hits(rows: list[dict[str, Any]], epsilon: float, rule: str, key: str = "l2") -> int:
    limit = epsilon * (1 + ROUNDING)
    return sum(bool(r[rule] and r.get(key) is not None and r[key] <= limit) for r in rows)


def _median(rows: list[dict[str, Any]], rule: str, key: str = "l2") -> float:
    """Median distance of the final candidates, a candidate the rule does not call adversarial
    (or none at all) counting as infinitely far."""
    values = [r[key] if r.get(key) is not None and r[rule] else math.inf for r in rows]
    return float(statistics.median(values)) if values else math.nan


def nonfinite(
    records: Records, attack: str, impl: str, endpoint: str, images: list[int]
) -> tuple[int, int, int] | None:
    """``(non-finite images, runs with any, runs)`` of one side of a cell, over every run of
    its images (left-out runs too); None where no record counted them (older records)."""
    rows = [records.get((attack, impl, endpoint, image)) for image in images]
    counted = [r["nonfinite"] for r in rows if r is not None and "nonfinite" in r]
    if not counted:
        return None
    return sum(counted), sum(n > 0 for n in counted), len(counted)


def _nonfinite_text(count: tuple[int, int, int] | None, who: str) -> str:
    if count is None:
        return "–"
    images, runs, total = count
    return f"**{images} in {runs}/{total} runs: {who} broken**" if images else "0"


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
    """The cell of ``attack`` at ``endpoint``: both implementations on the shared images,
    measured in the attack's ball."""
    ball = ball_of(attack)
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
    cell: dict[str, Any] = {"n": len(pairs), "left_out": dict(left_out), "ball": ball}
    for name, index in (("ours", 0), ("art", 1)):
        rows = [p[index] for p in pairs]
        cell[name] = {
            "hits": {eps: _hits(rows, eps, rule, ball.key) for eps in ball.epsilons},
            "median_l2": _median(rows, rule, ball.key),  # the ball's distance
            "queries": statistics.mean(r["queries"] for r in rows) if rows else math.nan,
            "seconds": statistics.mean(r["seconds"] for r in rows) if rows else math.nan,
            "nonfinite": nonfinite(records, attack, name, endpoint, images),
        }
    n = cell["n"]
    ok_success = all(
        cell["ours"]["hits"][e] >= cell["art"]["hits"][e] - SUCCESS_MARGIN * n
        for e in ball.epsilons
    )
    ours_l2, art_l2 = cell["ours"]["median_l2"], cell["art"]["median_l2"]
    ok_l2 = ours_l2 <= L2_RATIO * art_l2 or (math.isinf(ours_l2) and math.isinf(art_l2))
    cell["meets"] = n > 0 and ok_success and ok_l2
    return cell


def parity_table(
    records: Records, attacks: list[str], endpoints: list[str], images: list[int], rule: str
) -> str:
    """One table per ball (L2 first), a row per (attack, endpoint)."""
    balls = list(dict.fromkeys([L2] + [ball_of(a) for a in attacks]))
    tables = []
    for ball in balls:
        group = [a for a in attacks if ball_of(a) == ball]
        if group:
            tables.append(_ball_table(records, group, endpoints, images, rule, ball))
    return "\n".join(tables)


def _ball_table(
    records: Records,
    attacks: list[str],
    endpoints: list[str],
    images: list[int],
    rule: str,
    ball: Ball,
) -> str:
    radii = "".join(f" | {ball.radius}={e} ours | {ball.radius}={e} ART" for e in ball.epsilons)
    head = (
        f"| Attack | Endpoint | Images{radii} | median {ball.name} ours | median {ball.name} ART "
        "| queries ours | queries ART | s/image ours | s/image ART | non-finite ours "
        "| non-finite ART | target met | left out |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for attack in attacks:
        for endpoint in endpoints:
            c = compare(records, attack, endpoint, images, rule)
            ours, art, n = c["ours"], c["art"], c["n"]
            if c["left_out"] == {"not run": len(images)}:
                continue  # a cell this run never measured (e.g. an endpoint left out)
            left = ", ".join(f"{v} {k}" for k, v in c["left_out"].items()) or "0"
            rates = "".join(
                f" | {_rate(ours['hits'][e], n)} | {_rate(art['hits'][e], n)}"
                for e in ball.epsilons
            )
            lines.append(
                f"| {attack} | {endpoint} | {n}{rates} | {_l2(ours['median_l2'])} | "
                f"{_l2(art['median_l2'])} | {ours['queries']:.0f} | {art['queries']:.0f} | "
                f"{ours['seconds']:.2f} | {art['seconds']:.2f} | "
                f"{_nonfinite_text(ours['nonfinite'], 'ours')} | "
                f"{_nonfinite_text(art['nonfinite'], 'ART')} | "
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
