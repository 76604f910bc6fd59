"""The label-only attacks of the embedded grid on the images they all ran on.

``python docs/results/label_only_table.py docs/results/embedded`` reads the grid's committed
records (``records.jsonl.gz``) and h's verdicts (``reference_judgement.jsonl``) and prints, per
endpoint, each label-only attack's success at the primary radius (L2 1.5; RayS at L∞ 0.1) after
the full budget, the same judged by the undefended network h, and the median distance of its
candidates (judged: an image the endpoint does not misclassify counts as ∞; unjudged: the
candidate's distance whatever the verdict). Only the images every listed attack ran on count
(PopSkipJump, RayS and HSJA T = 5 / 10 have the first 10 of the grid's 50).
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import numpy as np

ATTACKS = ["hsja", "hsja (T=5)", "hsja (T=10)", "popskipjump", "rays", "rays (confirm=5)"]
ENDPOINTS = ["none", "snd-0.001", "snd-0.01", "snd-0.02", "snd-0.05", "snd-0.01-enforce"]
L2_EPSILON, LINF_EPSILON = 1.5, 0.1
LINF_TOLERANCE = 1e-6  # attacks_client.evaluation.measures.LINF_TOLERANCE


def load(root: Path) -> tuple[list[dict], dict[tuple[str, str, int], dict]]:
    text = gzip.decompress((root / "records.jsonl.gz").read_bytes()).decode()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    verdicts = {}
    for line in (root / "reference_judgement.jsonl").read_text().splitlines():
        v = json.loads(line)
        verdicts[(v["attack"], v["endpoint"], v["image"])] = v["misclassified"]
    return records, verdicts


def main(root: Path) -> None:
    records, by_h = load(root)
    cells: dict[tuple[str, str], dict[int, dict]] = {}
    for r in records:
        if r["attack"] in ATTACKS and r["endpoint"] in ENDPOINTS:
            cells.setdefault((r["attack"], r["endpoint"]), {})[r["image"]] = r
    shared = set.intersection(*(set(c) for c in cells.values()))
    budget = str(max(r["budget"] for r in records))
    print(f"{len(shared)} images, {budget} queries; cells: endpoint / h (median, unjudged)\n")
    print("| Attack | " + " | ".join(ENDPOINTS) + " |")
    print("|---|" + "---|" * len(ENDPOINTS))
    for attack in ATTACKS:
        row = [attack + (f" (L∞ {LINF_EPSILON})" if attack.startswith("rays") else "")]
        for endpoint in ENDPOINTS:
            runs = cells.get((attack, endpoint))
            if runs is None:
                row.append("–")
                continue
            hits = h_hits = 0
            judged, raw = [], []
            for image in sorted(shared):
                r = runs[image]
                c = r["checkpoints"][budget]
                if r.get("norm") == "linf":
                    d = c.get("linf")
                    d = math.inf if d is None else max(d - LINF_TOLERANCE, 0.0)
                    eps = LINF_EPSILON
                else:
                    d = math.inf if c["l2"] is None else c["l2"]
                    eps = L2_EPSILON
                h = by_h.get((r["attack"], endpoint, image), {}).get(budget)
                hits += bool(c["misclassified"]) and d <= eps
                h_hits += bool(h) and d <= eps
                judged.append(d if c["misclassified"] else math.inf)
                raw.append(d)
            n = len(shared)
            digits = 3 if eps == LINF_EPSILON else 2
            row.append(
                f"{hits}/{n} / {h_hits}/{n} "
                f"({np.median(judged):.{digits}f}, {np.median(raw):.{digits}f})"
            )
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/embedded"))
